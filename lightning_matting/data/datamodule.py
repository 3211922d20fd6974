"""VideoMattingDataModule: predict over user videos and/or synthetic clips; fit/validate on synthetic clips."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import replace
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

from lightning_matting.data.batch import MattingBatch
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
    VideoBatchSampler,
    collate_frames,
    frame_ranges,
)
from lightning_matting.data.settings import (
    HighResSettings,
    LiveSettings,
    SyntheticSettings,
    TrainingDataSettings,
)
from lightning_matting.data.synthetic import make_clip, save_clip
from lightning_matting.live_sources import check_live_source, is_live_source
from lightning_matting.metadata import VideoInfo, to_fraction
from lightning_matting.protocols import PredictVideoModule
from lightning_matting.validators import check_int, check_type

_SPLITS = {"train": 0, "val": 1, "predict": 2}


def split_seeds(seed: int, split: str, count: int) -> list[int]:
    """`count` reproducible 32-bit clip seeds for one split ('train', 'val' or 'predict'), distinct per split."""
    return [int(s) for s in np.random.SeedSequence([seed, _SPLITS[split]]).generate_state(count)]


def _check_high_res(high_res: HighResSettings, train: TrainingDataSettings) -> HighResSettings:
    """`high_res`, whose pass needs real training data: synthetic clips have one size."""
    if high_res.size is not None and train.data == "synthetic":
        raise ValueError(
            "data.high_res.size needs real training data (data.train.data 'videomatte' or 'images'): synthetic "
            "clips have one size, data.synthetic.size"
        )
    return high_res


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
        live: How a live source is read (`LiveSettings`: realtime, timeout, reconnects).
        synthetic: Procedural clips (`SyntheticSettings`: predict clips, size, frames, fps, dir, seed).
        train: What `fit` trains and validates on (`TrainingDataSettings`: data, roots, clips, clip length,
            size, augment, mix_synthetic).
        high_res: RVM's high-resolution training pass (`HighResSettings`: size, clip_length).

    Raises:
        ValueError: A setting out of its allowed values, naming it; `high_res.size` with synthetic training
            data; a live source beside other sources, align, target or synthetic clips.
        TypeError: A group that is not its settings class.

    Example (YAML for LightningCLI)::

        data:
          sources: [interview.mp4, frames/]
          backgrounds: [interview_plate.png, null]
          target: "#00ff00"
          batch_size: 8
          train: {clip_length: 15}   # a group: --data.train.clip_length=15
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
        live: LiveSettings = LiveSettings(),
        synthetic: SyntheticSettings = SyntheticSettings(),
        train: TrainingDataSettings = TrainingDataSettings(),
        high_res: HighResSettings = HighResSettings(),
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
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.live = check_type("data.live", live, LiveSettings)
        self.synthetic = check_type("data.synthetic", synthetic, SyntheticSettings)
        self.train = check_type("data.train", train, TrainingDataSettings)
        self.high_res = _check_high_res(check_type("data.high_res", high_res, HighResSettings), train)
        self.is_live = self._check_live()
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
        clips = self.synthetic.clips
        if live and (len(self.sources) > 1 or clips or self.align or self.target is not None):
            raise ValueError(
                f"sources: the live source {live[0]!r} is predicted alone, without align, target or synthetic "
                f"clips; got sources {self.sources}, align {self.align}, target {self.target!r}, "
                f"synthetic.clips {clips}"
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
        if stage == "predict" and self.is_live:
            self.predict_dataset = self._live = LiveFrames(
                self.sources[0],
                self.batch_size,
                self.resize,
                self.live.realtime,
                self.live.timeout,
                self.live.reconnects,
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
                EvaluationClips(self.train.val_root, fps=self.fps)
                if self.train.val_root is not None
                else self._synthetic_dataset("val", self.train.val_clips)
            )

    def _train_dataset(self, clip_length: int, size: tuple[int, int]) -> Dataset:
        """The training items: `clip_length` frames at `size` (real data; synthetic clips keep theirs)."""
        train = self.train
        if train.data == "synthetic":
            return self._synthetic_dataset("train", train.clips)
        kind = VideoMatteDataset if train.data == "videomatte" else ImageMattingDataset
        real = kind(train.root, train.backgrounds_root, clip_length, size, train.augment)
        if not train.mix_synthetic:
            return real
        count = round(len(real) * train.mix_synthetic / (1 - train.mix_synthetic))
        seeds = split_seeds(self.synthetic.seed, "train", train.clips)
        frames = max(self.synthetic.frames, clip_length)
        synthetic = SyntheticWindows(seeds, clip_length, real.size, frames, count, train.augment)
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
                "nothing to predict: give sources (video files or image folders) or synthetic.clips > 0"
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
        settings = self.synthetic
        if settings.clips == 0:
            return []
        if settings.dir is not None:
            folder = Path(settings.dir)
        else:
            if self._temporary_dir is None:
                self._temporary_dir = Path(tempfile.mkdtemp(prefix="lightning_matting_synthetic_"))
                # removed at teardown, and also when the datamodule is dropped without one (or at exit)
                weakref.finalize(self, shutil.rmtree, self._temporary_dir, ignore_errors=True)
            folder = self._temporary_dir
        width, height = settings.size
        pairs = []
        for k, clip_seed in enumerate(split_seeds(settings.seed, "predict", settings.clips)):
            name = f"synthetic_{k:03d}"
            clip = make_clip(width, height, settings.frames, to_fraction(settings.fps), seed=clip_seed)
            files = save_clip(clip, folder / name)
            pairs.append((str(files.src), str(files.bgr), name))
        return pairs

    def _synthetic_dataset(self, split: str, count: int) -> SyntheticMattingDataset:
        if count == 0:
            field = "clips" if split == "train" else "val_clips"
            raise ValueError(
                f"data.train.{field} must be >= 1 to {'train' if split == 'train' else 'validate'} on "
                "synthetic clips"
            )
        width, height = self.synthetic.size
        return SyntheticMattingDataset(
            split_seeds(self.synthetic.seed, split, count),
            width=width,
            height=height,
            num_frames=self.synthetic.frames,
            fps=to_fraction(self.synthetic.fps),
            names=[f"{split}_{k:03d}" for k in range(count)],
            augment=self.train.augment and split == "train",
        )

    def predict_dataloader(self) -> DataLoader:
        """Batches of consecutive frames of one video at a time, videos in order (see `VideoBatchSampler`);
        under a distributed trainer only this rank's share: whole videos, or a contiguous range of each.
        A range that starts mid-video (a rank's share, a resumed run) is preceded by the trainer's module's
        `predict_warmup_frames` frames (recurrent models), marked in their batches' `warmup`. Frames are uint8
        (the module makes them floats on its device), or float32 in [0,1] when the trainer runs on the CPU."""
        trainer = self.trainer
        if self.is_live:
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
            train_data: "synthetic", "videomatte" or "images" (see the datamodule's `train.data`).
            train_root: The dataset folder of "videomatte" or "images".
            batch_size: Items per batch (training and validation).
            high_res_size: (width, height) of RVM's high-resolution pass, which starts if it was off.
            high_res_clip_length: Frames per item of the high-resolution pass.
            None keeps a setting as it is.

        Raises:
            ValueError: A setting out of its allowed values, naming it.
        """
        train = {"clip_length": clip_length, "size": train_size, "data": train_data, "root": train_root}
        self.train = replace(self.train, **{key: value for key, value in train.items() if value is not None})
        high_res = {"size": high_res_size, "clip_length": high_res_clip_length}
        high_res = replace(
            self.high_res, **{key: value for key, value in high_res.items() if value is not None}
        )
        self.high_res = _check_high_res(high_res, self.train)
        if batch_size is not None:
            self.batch_size = check_int("batch_size", batch_size, 1)
        self.train_dataset = None  # built again, with these settings, by the next train_dataloader

    def _make_train_datasets(self) -> None:
        self.train_dataset = self._train_dataset(self.train.clip_length, self.train.size)
        self.high_res_dataset = (
            None
            if self.high_res.size is None
            else self._train_dataset(self.high_res.clip_length, self.high_res.size)
        )

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        """Shuffled training items with ground truth (see `train.data`); with `high_res.size`, the loaders of
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
            collate_fn=partial(collate_frames, share_static=False),
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
        """Move a batch to the device (`MattingBatch.to`): a static plate/target crosses once per video, the
        bookkeeping stays on the host, frames keep their dtype (the module makes them floats on the device)."""
        if isinstance(batch, MattingBatch):
            return batch.to(device, kept=self._static)
        return move_data_to_device(batch, device)

    def teardown(self, stage: str) -> None:
        """Remove the temporary folder of synthetic predict clips, if one was made."""
        if stage == "predict" and self._temporary_dir is not None:
            shutil.rmtree(self._temporary_dir, ignore_errors=True)
            self._temporary_dir = None
