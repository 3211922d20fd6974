"""The grouped settings of VideoMattingDataModule: `data.live`, `data.synthetic`, `data.train`, `data.high_res`.

Each group is a frozen dataclass that checks its fields when made; LightningCLI shows each as nested YAML
(`data: {train: {clip_length: 15}}`, or `--data.train.clip_length=15`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lightning_matting.metadata import to_fraction
from lightning_matting.validators import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_size,
    invalid,
)

TrainData = Literal["synthetic", "videomatte", "images"]
TRAIN_DATA = ("synthetic", "videomatte", "images")


@dataclass(frozen=True)
class LiveSettings:
    """How a live source (a URL, '-' or /dev/videoN in `data.sources`) is read.

    Args:
        realtime: Keep only the latest frames when the model falls behind (bounded latency, the frames left
            out counted); False: every frame (the stream waits for the model).
        timeout: Seconds (> 0) a live source may take to open, and to deliver each read.
        reconnects: Times (>= 0) a stream that fails mid-stream is reopened (with backoff) before predict ends.

    Raises:
        TypeError: A field of the wrong type, naming it (`data.live.<field>`).
        ValueError: A field out of its range, naming it.
    """

    realtime: bool = False
    timeout: float = 5.0
    reconnects: int = 3

    def __post_init__(self) -> None:
        check_bool("data.live.realtime", self.realtime)
        check_number("data.live.timeout", self.timeout, above=0)
        check_int("data.live.reconnects", self.reconnects, 0)


@dataclass(frozen=True)
class SyntheticSettings:
    """Procedural clips with ground truth: predict clips besides `data.sources`, and the training and
    validation clips of `data.train` (their counts there).

    Args:
        clips: Synthetic clips (>= 0) to render and predict besides `sources` (0: none).
        size: (width, height) in pixels of synthetic clips (predict, fit and validate).
        frames: Frames (>= 1) per synthetic clip.
        fps: Frame rate of synthetic clips: a number or "30000/1001".
        dir: Where rendered predict clips are written (src.mp4 + bgr.png per clip); None: a temporary folder
            removed at teardown.
        seed: Seed (>= 0) of the synthetic clips; training, validation and predict clips differ.

    Raises:
        TypeError: A field of the wrong type, naming it (`data.synthetic.<field>`).
        ValueError: A field out of its range, naming it.
    """

    clips: int = 0
    size: tuple[int, int] = (320, 192)
    frames: int = 60
    fps: float | str = 30
    dir: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("data.synthetic.clips", self.clips, 0)
        object.__setattr__(self, "size", check_size("data.synthetic.size", self.size))
        check_int("data.synthetic.frames", self.frames, 1)
        to_fraction(self.fps, "data.synthetic.fps")
        if self.dir is not None and not isinstance(self.dir, str):
            raise TypeError(invalid("data.synthetic.dir", self.dir, "a folder path or null"))
        check_int("data.synthetic.seed", self.seed, 0)


@dataclass(frozen=True)
class TrainingDataSettings:
    """What `fit` trains and validates on.

    Args:
        data: "synthetic" clips (`data.synthetic` size and frames), "videomatte" (fgr/ + pha/ clips, the
            VideoMatte240K layout) or "images" (fgr/ + pha/ images made into moving clips), see
            `lightning_matting.data.matting_sets`.
        root: The dataset folder of "videomatte" or "images" (needed by them).
        backgrounds_root: The backgrounds folder (images, videos, folders of frames) composited behind them
            (needed by them).
        val_root: Evaluation clips with ground truth (src/ + pha/, optional bgr/ and fgr/) for validation;
            None: synthetic validation clips.
        clips: Synthetic training clips (>= 0): the training data of "synthetic", the pool of `mix_synthetic`.
        val_clips: Synthetic validation clips (>= 0), when there is no `val_root`.
        clip_length: Frames (>= 1) per training item: 1 for BackgroundMattingV2, a time run for RVM.
        size: (width, height) in pixels of training items from real datasets.
        augment: Augment training frames (shift, zoom, colour jitter, misaligned plate).
        mix_synthetic: With a real `data`, the share in [0, 1) of training items that are windows of `clips`
            procedural clips (`SyntheticWindows`, `data.synthetic.frames` frames each, at `size`): 0.2 makes
            one item in five synthetic; 0: none.

    Raises:
        TypeError: A field of the wrong type, naming it (`data.train.<field>`).
        ValueError: A field out of its range, a real `data` without its roots, or `mix_synthetic` without
            real data or clips, naming the fields.
    """

    data: TrainData = "synthetic"
    root: str | None = None
    backgrounds_root: str | None = None
    val_root: str | None = None
    clips: int = 8
    val_clips: int = 2
    clip_length: int = 1
    size: tuple[int, int] = (512, 288)
    augment: bool = True
    mix_synthetic: float = 0.0

    def __post_init__(self) -> None:
        check_choice("data.train.data", self.data, TRAIN_DATA)
        for field in ("root", "backgrounds_root", "val_root"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, str):
                raise TypeError(invalid(f"data.train.{field}", value, "a folder path or null"))
        if self.data != "synthetic" and (self.root is None or self.backgrounds_root is None):
            raise ValueError(
                f"data.train.data={self.data!r} needs data.train.root (the dataset folder with fgr/ and pha/) and "
                "data.train.backgrounds_root (a folder of background images or videos); got "
                f"{self.root!r}, {self.backgrounds_root!r}"
            )
        check_int("data.train.clips", self.clips, 0)
        check_int("data.train.val_clips", self.val_clips, 0)
        check_int("data.train.clip_length", self.clip_length, 1)
        object.__setattr__(self, "size", check_size("data.train.size", self.size))
        check_bool("data.train.augment", self.augment)
        check_number("data.train.mix_synthetic", self.mix_synthetic, minimum=0, below=1)
        if self.mix_synthetic and self.data == "synthetic":
            raise ValueError(
                "data.train.mix_synthetic mixes procedural clips into real training data: data.train.data "
                "'videomatte' or 'images'"
            )
        if self.mix_synthetic and self.clips < 1:
            raise ValueError(
                f"data.train.mix_synthetic needs data.train.clips >= 1 procedural clips to draw from, got {self.clips}"
            )


@dataclass(frozen=True)
class HighResSettings:
    """RVM's second, high-resolution training pass beside the first (the reference's stages 3 and 4).

    With a `size`, training batches become {"low": ..., "high": ...} of the same data, the second at this
    size (MattingModule's `model.training.high_res_downsample_ratio`). Real `data.train.data` only.

    Args:
        size: (width, height) in pixels of the pass (the reference's 2048x2048); None: no such pass.
        clip_length: Frames (>= 1) per item of the pass (the reference's 6).

    Raises:
        TypeError: A field of the wrong type, naming it (`data.high_res.<field>`).
        ValueError: A field out of its range, naming it.
    """

    size: tuple[int, int] | None = None
    clip_length: int = 6

    def __post_init__(self) -> None:
        if self.size is not None:
            object.__setattr__(self, "size", check_size("data.high_res.size", self.size))
        check_int("data.high_res.clip_length", self.clip_length, 1)
