"""VideoMattingDataModule: predict over user videos and/or synthetic clips; fit/validate on synthetic clips."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import LightningDataModule
from lightning.pytorch.accelerators import CUDAAccelerator
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from lightning_matting.data.datasets import (
    MattingVideoDataset,
    MultiVideoDataset,
    SyntheticMattingDataset,
    check_resize,
    parse_colour,
    unique_names,
)
from lightning_matting.data.live import CAPTURED_PLATE, LIVE_NAME, LiveFrames
from lightning_matting.data.matting_sets import (
    EvaluationClips,
    ImageMattingDataset,
    SyntheticWindows,
    VideoMatteDataset,
)
from lightning_matting.data.sampling import (
    HOST_KEYS,
    VideoBatchSampler,
    collate_frames,
    frame_ranges,
)
from lightning_matting.data.synthetic import make_clip, save_clip
from lightning_matting.live_sources import check_live_source, is_live_source
from lightning_matting.metadata import VideoInfo, to_fraction
from lightning_matting.protocols import PredictVideoModule

_SPLITS = {"train": 0, "val": 1, "predict": 2}


def split_seeds(seed: int, split: str, count: int) -> list[int]:
    """`count` reproducible 32-bit clip seeds for one split ('train', 'val' or 'predict'), distinct per split."""
    return [int(s) for s in np.random.SeedSequence([seed, _SPLITS[split]]).generate_state(count)]


def _check_train_data(train_data: object, train_root: str | None, backgrounds_root: str | None) -> str:
    """What `fit` trains on, with the roots a real dataset needs."""
    if train_data not in ("synthetic", "videomatte", "images"):
        raise ValueError(f"train_data must be 'synthetic', 'videomatte' or 'images', got {train_data!r}")
    if train_data != "synthetic" and (train_root is None or backgrounds_root is None):
        raise ValueError(
            f"train_data={train_data!r} needs train_root (the dataset folder with fgr/ and pha/) and "
            f"backgrounds_root (a folder of background images or videos); got {train_root!r}, {backgrounds_root!r}"
        )
    return train_data


def _check_mix(mix_synthetic: object, train_data: str, train_clips: int) -> float:
    """The share of synthetic training items: a number in [0, 1), only with real data and clips to draw from."""
    if (
        isinstance(mix_synthetic, bool)
        or not isinstance(mix_synthetic, int | float)
        or not 0 <= mix_synthetic < 1
    ):
        raise ValueError(f"mix_synthetic must be a share in [0, 1) of training items, got {mix_synthetic!r}")
    if mix_synthetic and train_data == "synthetic":
        raise ValueError(
            "mix_synthetic mixes procedural clips into a real train_data ('videomatte' or 'images')"
        )
    if mix_synthetic and train_clips < 1:
        raise ValueError(
            f"mix_synthetic needs train_clips >= 1 procedural clips to draw from, got {train_clips}"
        )
    return float(mix_synthetic)


def _check_high_res(size: object, train_data: str) -> tuple[int, int] | None:
    """A high-resolution pass's (width, height), on real training data only; None: no such pass."""
    if size is None:
        return None
    if train_data == "synthetic":
        raise ValueError(
            "high_res_size needs real training data (train_data 'videomatte' or 'images'): synthetic clips have "
            "one size, synthetic_size"
        )
    return check_resize(size, "high_res_size")


def _check_count(label: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{label} must be an integer >= {minimum}, got {value!r}")
    return value


class VideoMattingDataModule(LightningDataModule):
    """Frames for matting: predict over (source, background) pairs and/or synthetic clips; fit on synthetic.

    After `setup("predict")`, `videos` lists each video's `VideoInfo` (size after resize); predict batches
    are consecutive frames of one video, in order (`VideoBatchSampler`), and under a distributed trainer
    each rank gets its own share (`plan_predict`, which `VideoWriterCallback` calls: it implements
    `PredictVideoSource`). Fit/validate use synthetic clips with ground truth ("pha", "fgr"); validation
    batches are consecutive frames of one clip, so video metrics (dtSSD) apply. Frames travel as uint8.

    Args:
        sources: Video files or image folders to predict; or one live source alone: a URL (udp://, tcp://,
            rtsp://, rtmp://, srt://, http(s)://), '-' (standard input) or /dev/videoN, matted as its frames
            come (`lightning_matting.data.live`; its background a still image, or "capture:N": the median of
            its first N frames, which are not matted; no align, target or synthetic clips beside it).
        backgrounds: One plate per source (an image, a video, an image folder, or null), or None.
        target: The composite's background for every source: '#RRGGBB', (r, g, b) in [0, 1], or an image
            or video path (looped when shorter, cut when longer).
        resize: (width, height) in pixels of every output; None: each source's size.
        align: Warp each plate onto its frame (ORB + MAGSAC++), falling back to the plate as is.
        fps: Frame rate of image-folder sources (videos carry their own): a number or "30000/1001".
        batch_size: Frames per batch.
        num_workers: DataLoader worker processes that decode (0: in the main process).
        synthetic: Synthetic clips to render and predict besides `sources` (0: none).
        synthetic_size: (width, height) in pixels of synthetic clips (predict, fit and validate).
        synthetic_frames: Frames per synthetic clip.
        synthetic_fps: Frame rate of synthetic clips.
        synthetic_dir: Where rendered predict clips are written (src.mp4 + bgr.png); None: a temporary
            folder removed at teardown.
        train_clips: Synthetic training clips.
        val_clips: Synthetic validation clips.
        augment: Augment training frames (shift, zoom, colour jitter, misaligned plate).
        train_data: What `fit` trains on: "synthetic" clips, "videomatte" (fgr/ + pha/ clips, the
            VideoMatte240K layout) or "images" (fgr/ + pha/ images made into moving clips), see
            `lightning_matting.data.matting_sets`.
        train_root: The dataset folder of "videomatte" or "images".
        backgrounds_root: The backgrounds folder (images, videos, folders of frames) composited behind them.
        val_root: Evaluation clips with ground truth (src/ + pha/, optional bgr/ and fgr/) for validation;
            None: synthetic validation clips.
        clip_length: Frames per training item: 1 for BackgroundMattingV2, a time run for RVM.
        train_size: (width, height) in pixels of training items from real datasets.
        high_res_size: RVM: (width, height) in pixels of a second, high-resolution training pass beside the
            first (the reference's stages 3 and 4, 2048x2048): training batches become {"low": ..., "high": ...}
            of the same data, the second at this size (MattingModule's `high_res_downsample_ratio`); None: one
            pass. Real `train_data` only.
        high_res_clip_length: Frames per item of the high-resolution pass (the reference's 6).
        mix_synthetic: With a real `train_data`, the share of training items that are windows of `train_clips`
            procedural clips (`SyntheticWindows`, `synthetic_frames` frames each, at `train_size`), in [0, 1):
            0.2 makes one item in five synthetic; 0: none.
        seed: Seed of the synthetic clips (train, validation and predict clips differ).
        realtime: A live source: keep only the latest frames when the model falls behind (bounded latency,
            the frames left out counted); False: every frame (the stream waits for the model).
        live_timeout: Seconds a live source may take to open, and to deliver each read.
        reconnects: Times a live stream that fails mid-stream is reopened (with backoff) before predict ends.

    Raises:
        ValueError: A setting out of its allowed values, naming it.

    Example (YAML for LightningCLI)::

        data:
          sources: [interview.mp4, frames/]
          backgrounds: [interview_plate.png, null]
          target: "#00ff00"
          batch_size: 8
    """

    def __init__(
        self,
        sources: list[str] | None = None,
        backgrounds: list[str | None] | None = None,
        target: str | tuple[float, float, float] | None = None,
        resize: tuple[int, int] | None = None,
        align: bool = False,
        fps: float | str = 30,
        batch_size: int = 4,
        num_workers: int = 0,
        synthetic: int = 0,
        synthetic_size: tuple[int, int] = (320, 192),
        synthetic_frames: int = 60,
        synthetic_fps: float | str = 30,
        synthetic_dir: str | None = None,
        train_clips: int = 8,
        val_clips: int = 2,
        augment: bool = True,
        seed: int = 0,
        train_data: Literal["synthetic", "videomatte", "images"] = "synthetic",
        train_root: str | None = None,
        backgrounds_root: str | None = None,
        val_root: str | None = None,
        clip_length: int = 1,
        train_size: tuple[int, int] = (512, 288),
        high_res_size: tuple[int, int] | None = None,
        high_res_clip_length: int = 6,
        mix_synthetic: float = 0.0,
        realtime: bool = False,
        live_timeout: float = 5.0,
        reconnects: int = 3,
    ) -> None:
        super().__init__()
        for label, paths in (("sources", sources), ("backgrounds", backgrounds)):
            if isinstance(paths, str | Path):
                raise ValueError(f"{label} must be a list of paths, got the single path {str(paths)!r}")
        self.sources = [str(source) for source in sources or []]
        if backgrounds is not None and len(backgrounds) != len(self.sources):
            raise ValueError(
                f"backgrounds must give one entry (a path or null) per source: {len(self.sources)} sources, "
                f"{len(backgrounds)} backgrounds"
            )
        self.backgrounds = [None if b is None else str(b) for b in backgrounds or [None] * len(self.sources)]
        if (isinstance(target, str) and target.startswith("#")) or isinstance(target, tuple | list):
            parse_colour(target)
        self.target = target
        self.resize = check_resize(resize)
        self.align = align
        self.fps = to_fraction(fps)
        self.batch_size = _check_count("batch_size", batch_size, 1)
        self.num_workers = _check_count("num_workers", num_workers, 0)
        self.synthetic = _check_count("synthetic", synthetic, 0)
        self.synthetic_size = check_resize(synthetic_size, "synthetic_size")
        self.synthetic_frames = _check_count("synthetic_frames", synthetic_frames, 1)
        self.synthetic_fps = to_fraction(synthetic_fps)
        self.synthetic_dir = synthetic_dir
        self.train_clips = _check_count("train_clips", train_clips, 0)
        self.val_clips = _check_count("val_clips", val_clips, 0)
        self.augment = augment
        self.train_data = _check_train_data(train_data, train_root, backgrounds_root)
        self.mix_synthetic = _check_mix(mix_synthetic, train_data, self.train_clips)
        self.train_root = train_root
        self.backgrounds_root = backgrounds_root
        self.val_root = val_root
        self.clip_length = _check_count("clip_length", clip_length, 1)
        self.train_size = check_resize(train_size, "train_size")
        self.high_res_size = _check_high_res(high_res_size, self.train_data)
        self.high_res_clip_length = _check_count("high_res_clip_length", high_res_clip_length, 1)
        self.seed = _check_count("seed", seed, 0)
        self.live = self._check_live()
        self.realtime = realtime
        self.live_timeout = live_timeout
        self.reconnects = _check_count("reconnects", reconnects, 0)
        self.videos: list[VideoInfo] = []
        self._predict_ranges: list[list[range]] | None = None  # this rank's frames per video (plan_predict)
        self._backgrounds: dict[str, str | None] = {}
        self._static: dict[str, tuple[str, Tensor]] = {}  # a static plate/target on the device, per video
        self._temporary_dir: Path | None = None
        self._live: LiveFrames | None = None  # the live source's frames, once set up for predict
        # Distributed predict: a rank may have no frame (fewer frames than ranks); the others still need it.
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def _check_live(self) -> bool:
        """Whether the source is live; a live source is refused beside other sources, plates or synthetic clips."""
        live = [source for source in self.sources if is_live_source(source)]
        for source in live:
            check_live_source(source)
        if live and (len(self.sources) > 1 or self.synthetic or self.align or self.target is not None):
            raise ValueError(
                f"sources: the live source {live[0]!r} is predicted alone, without align, target or synthetic "
                f"clips; got sources {self.sources}, align {self.align}, target {self.target!r}, synthetic "
                f"{self.synthetic}"
            )
        for source, background in zip(self.sources, self.backgrounds, strict=True):
            if background is not None and CAPTURED_PLATE.fullmatch(background) and source not in live:
                raise ValueError(
                    f"backgrounds: {background!r} takes the plate from a live source's first frames; {source!r} "
                    "is a file: give its plate as an image, a video or an image folder"
                )
        return bool(live)

    @property
    def live_video(self) -> VideoInfo | None:
        """The live source's video (`LiveVideoSource`): its name, size and stream frame rate; None: no live source
        set up for predict."""
        return self._live.info if self._live is not None else None

    def setup(self, stage: str) -> None:
        """Open (and for synthetic predict clips, first write) what `stage` needs; errors name the bad input."""
        if stage == "predict" and self.live:
            self.predict_dataset = self._live = LiveFrames(
                self.sources[0],
                self.batch_size,
                self.resize,
                self.realtime,
                self.live_timeout,
                self.reconnects,
                LIVE_NAME,
                self.backgrounds[0],
            )
            self.videos = []  # of unknown length: the writer takes its size from its frames
            self._predict_ranges = None
        elif stage == "predict":
            self._live = None
            self.predict_dataset = self._predict_dataset()
            self.videos = self.predict_dataset.videos
            self._predict_ranges = None
        if stage == "fit":
            self._make_train_datasets()
        if stage in ("fit", "validate"):
            self.val_dataset = (
                EvaluationClips(self.val_root, fps=self.fps)
                if self.val_root is not None
                else self._synthetic_dataset("val", self.val_clips)
            )

    def _train_dataset(self, clip_length: int, size: tuple[int, int]) -> Dataset:
        """The training items: `clip_length` frames at `size` (real data; synthetic clips keep theirs)."""
        if self.train_data == "synthetic":
            return self._synthetic_dataset("train", self.train_clips)
        kind = VideoMatteDataset if self.train_data == "videomatte" else ImageMattingDataset
        real = kind(self.train_root, self.backgrounds_root, clip_length, size, self.augment)
        if not self.mix_synthetic:
            return real
        count = round(len(real) * self.mix_synthetic / (1 - self.mix_synthetic))
        seeds = split_seeds(self.seed, "train", self.train_clips)
        frames = max(self.synthetic_frames, clip_length)
        synthetic = SyntheticWindows(seeds, clip_length, real.size, frames, count, self.augment)
        return ConcatDataset([real, synthetic])

    def plan_predict(
        self, todo_frames: Mapping[str, Sequence[range]], rank: int = 0, world_size: int = 1
    ) -> list[list[list[range]]]:
        """Fix the frames the predict loader gives (`PredictVideoSource`): the frames of each video still to do.

        Args:
            todo_frames: {video name: sorted disjoint ranges of frames to predict} (a resumed run: those not
                written yet); other videos: every frame.
            rank: This process's rank.
            world_size: The number of processes.

        Returns:
            `ranges[rank][video]`, a list of ranges, for every rank (`frame_ranges`); the loader gives this rank's.

        Raises:
            ValueError: A name that is not a predict video, or ranges outside [0, frames] or out of order.
        """
        lengths = {video.name: video.num_frames for video in self.videos}
        unknown = sorted(set(todo_frames) - set(lengths))
        if unknown:
            raise ValueError(
                f"todo_frames must map names of the predict videos ({sorted(lengths)}) to ranges of frames, got "
                f"{unknown}"
            )
        todo = [list(todo_frames.get(video.name, [range(video.num_frames)])) for video in self.videos]
        ranks = frame_ranges([video.num_frames for video in self.videos], world_size, todo)
        self._predict_ranges = ranks[rank]
        return ranks

    def predict_inputs(self, video: str) -> dict[str, object]:
        """What besides the source changes `video`'s pixels: its plate, the target, resize and align."""
        if video not in self._backgrounds:
            raise ValueError(
                f"video must be one of the predict videos {sorted(self._backgrounds)}, got {video!r}"
            )
        return {
            "background": self._backgrounds[video],
            "target": self.target,
            "resize": self.resize,
            "align": self.align,
        }

    def _predict_dataset(self) -> MultiVideoDataset:
        pairs = [
            (source, background, Path(source).stem)
            for source, background in zip(self.sources, self.backgrounds, strict=True)
        ]
        pairs += self._write_synthetic_clips()
        if not pairs:
            raise ValueError(
                "nothing to predict: give sources (video files or image folders) or synthetic > 0"
            )
        names = unique_names([name for _, _, name in pairs])
        self._backgrounds = {name: background for (_, background, _), name in zip(pairs, names, strict=True)}
        return MultiVideoDataset(
            [
                MattingVideoDataset(
                    source,
                    background,
                    target=self.target,
                    resize=self.resize,
                    align=self.align,
                    fps=self.fps,
                    name=name,
                )
                for (source, background, _), name in zip(pairs, names, strict=True)
            ]
        )

    def _write_synthetic_clips(self) -> list[tuple[str, str, str]]:
        if self.synthetic == 0:
            return []
        if self.synthetic_dir is not None:
            folder = Path(self.synthetic_dir)
        else:
            if self._temporary_dir is None:
                self._temporary_dir = Path(tempfile.mkdtemp(prefix="lightning_matting_synthetic_"))
                # removed at teardown, and also when the datamodule is dropped without one (or at exit)
                weakref.finalize(self, shutil.rmtree, self._temporary_dir, ignore_errors=True)
            folder = self._temporary_dir
        width, height = self.synthetic_size
        pairs = []
        for k, clip_seed in enumerate(split_seeds(self.seed, "predict", self.synthetic)):
            name = f"synthetic_{k:03d}"
            clip = make_clip(width, height, self.synthetic_frames, self.synthetic_fps, seed=clip_seed)
            files = save_clip(clip, folder / name)
            pairs.append((str(files.src), str(files.bgr), name))
        return pairs

    def _synthetic_dataset(self, split: str, count: int) -> SyntheticMattingDataset:
        if count == 0:
            raise ValueError(f"{split}_clips must be >= 1 to {'train' if split == 'train' else 'validate'}")
        width, height = self.synthetic_size
        return SyntheticMattingDataset(
            split_seeds(self.seed, split, count),
            width=width,
            height=height,
            num_frames=self.synthetic_frames,
            fps=self.synthetic_fps,
            names=[f"{split}_{k:03d}" for k in range(count)],
            augment=self.augment and split == "train",
        )

    def predict_dataloader(self) -> DataLoader:
        """Batches of consecutive frames of one video at a time, videos in order (see `VideoBatchSampler`);
        under a distributed trainer only this rank's share: whole videos, or a contiguous range of each.
        A range that starts mid-video (a rank's share, a resumed run) is preceded by the trainer's module's
        `predict_warmup_frames` frames (recurrent models), marked "warmup" in their batches. Frames are uint8
        (the module makes them floats on its device), or float32 in [0,1] when the trainer runs on the CPU."""
        trainer = self.trainer
        if self.live:
            if trainer is not None and trainer.world_size > 1:
                raise ValueError(
                    f"a live source ({self.sources[0]!r}) is predicted by one process: run with devices=1"
                )
            return DataLoader(self.predict_dataset, batch_size=None)  # its own batches, as frames come
        module = trainer.lightning_module if trainer is not None else None
        if self._predict_ranges is None:
            self.plan_predict(
                {},
                trainer.global_rank if trainer is not None else 0,
                trainer.world_size if trainer is not None else 1,
            )
        sampler = VideoBatchSampler(
            [video.num_frames for video in self.videos],
            self.batch_size,
            ranges=self._predict_ranges,
            warmup=module.predict_warmup_frames if isinstance(module, PredictVideoModule) else 0,
        )
        written = {video.name: frames for video, frames in zip(self.videos, sampler.written, strict=True)}
        on_cpu = trainer is not None and trainer.strategy.root_device.type == "cpu"
        return DataLoader(
            self.predict_dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            # uint8 frames cross to the device, which makes them floats; for the CPU the workers do, off the
            # model's thread
            collate_fn=partial(collate_frames, written=written, to_float=on_cpu),
            pin_memory=trainer is not None
            and isinstance(trainer.accelerator, CUDAAccelerator),  # async uploads
        )

    def set_training(
        self,
        clip_length: int | None = None,
        train_size: tuple[int, int] | None = None,
        train_data: Literal["synthetic", "videomatte", "images"] | None = None,
        train_root: str | None = None,
        batch_size: int | None = None,
        high_res_size: tuple[int, int] | None = None,
        high_res_clip_length: int | None = None,
    ) -> None:
        """Change what `fit` trains on from the next training dataloader on (a stage of `TrainingStages`).

        Args:
            clip_length: Frames per training item.
            train_size: (width, height) in pixels of real training items.
            train_data: "synthetic", "videomatte" or "images" (see `train_data` of the datamodule).
            train_root: The dataset folder of "videomatte" or "images".
            batch_size: Items per batch (training and validation).
            high_res_size: (width, height) of RVM's high-resolution pass, which starts if it was off.
            high_res_clip_length: Frames per item of the high-resolution pass.
            None keeps a setting as it is.

        Raises:
            ValueError: A setting out of its allowed values, naming it.
        """
        if clip_length is not None:
            self.clip_length = _check_count("clip_length", clip_length, 1)
        if train_size is not None:
            self.train_size = check_resize(train_size, "train_size")
        if train_data is not None:
            self.train_data = _check_train_data(
                train_data, train_root or self.train_root, self.backgrounds_root
            )
        if train_root is not None:
            self.train_root = train_root
        if batch_size is not None:
            self.batch_size = _check_count("batch_size", batch_size, 1)
        if high_res_size is not None:
            self.high_res_size = _check_high_res(high_res_size, self.train_data)
        if high_res_clip_length is not None:
            self.high_res_clip_length = _check_count("high_res_clip_length", high_res_clip_length, 1)
        self.train_dataset = None  # built again, with these settings, by the next train_dataloader

    def _make_train_datasets(self) -> None:
        self.train_dataset = self._train_dataset(self.clip_length, self.train_size)
        self.high_res_dataset = (
            None
            if self.high_res_size is None
            else self._train_dataset(self.high_res_clip_length, self.high_res_size)
        )

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        """Shuffled training items with ground truth (see `train_data`); with `high_res_size`, the loaders of
        both passes as {"low": ..., "high": ...} (Lightning cycles the shorter)."""
        if self.train_dataset is None:
            self._make_train_datasets()
        if self.high_res_dataset is None:
            return self._shuffled(self.train_dataset)
        return {"low": self._shuffled(self.train_dataset), "high": self._shuffled(self.high_res_dataset)}

    def _shuffled(self, dataset: Dataset) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        """Synthetic validation frames with ground truth: consecutive frames of one clip per batch, in order."""
        sampler = VideoBatchSampler([video.num_frames for video in self.val_dataset.videos], self.batch_size)
        return DataLoader(
            self.val_dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_frames,
        )

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move a batch to the device; a static plate/target (see `collate_frames`) crosses once per video, and
        "index" and "warmup" stay on the host (read every batch: reading them on a GPU would synchronize).
        Frames stay uint8 where they are (the module makes them floats on the device)."""
        if not isinstance(batch, dict):
            return move_data_to_device(batch, device)
        host = {key: batch.pop(key) for key in HOST_KEYS if key in batch}
        video = batch.get("video")
        video = video if isinstance(video, str) else video[0] if video else None
        cached = {}
        for key in batch.get("static", ()):
            if (
                key in self._static
                and self._static[key][0] == video
                and self._static[key][1].device == device
            ):
                cached[key] = batch.pop(key)
        batch = move_data_to_device(batch, device)
        for key in batch.get("static", ()):
            if key in cached:
                batch[key] = self._static[key][1]
            elif key in batch:
                self._static[key] = (video, batch[key])
        return batch | host

    def teardown(self, stage: str) -> None:
        """Remove the temporary folder of synthetic predict clips, if one was made."""
        if stage == "predict" and self._temporary_dir is not None:
            shutil.rmtree(self._temporary_dir, ignore_errors=True)
            self._temporary_dir = None
