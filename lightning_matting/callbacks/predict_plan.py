"""What a predict run over a `PredictVideoSource` writes: its videos, the frames to do, this process's frames.

Existing outputs are refused (or replaced with `overwrite`) before any model work; with `resume`, each video
continues in the frames that its finished chunks (or images) do not hold, on any number of processes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lightning_matting.data.sampling import splits_videos
from lightning_matting.metadata import VideoInfo
from lightning_matting.protocols import PredictVideoSource
from lightning_matting.run.existing import refuse_existing
from lightning_matting.run.frame_ranges import FrameRanges
from lightning_matting.run.manifest import RunManifest, fingerprint
from lightning_matting.run.written import clear_unwritten, written_frames
from lightning_matting.writers.chunks import parts_folder
from lightning_matting.writers.output_format import OutputFormat


class Settings(Protocol):
    """The writer settings a plan needs (`PredictWriting` has them)."""

    output_dir: Path
    outputs: tuple[str, ...]
    output_format: OutputFormat
    overwrite: bool
    resume: bool


class PredictPlan:
    """What a `PredictVideoSource` predict run writes: its videos, the frames to do, this process's frames."""

    def __init__(
        self,
        videos: list[VideoInfo],
        todo: dict[str, list[range]],
        ranges: dict[str, list[range]],
        shared: bool,
    ):
        self.videos = videos
        self.todo = todo  # every video: the frames not written yet (all of them unless resumed)
        self.ranges = ranges  # this process's frames of every video
        self.shared = shared  # processes share videos (fewer videos than processes): rank zero joins them

    @classmethod
    def make(
        cls,
        callback: Settings,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        datamodule: PredictVideoSource,
    ) -> PredictPlan:
        """Refuse or clear existing outputs, or (resume) find the frames each video still needs; then tell the
        data and keep the frames this process writes."""
        videos = list(datamodule.videos)
        todo = _prepare(callback, trainer, pl_module, datamodule, videos)
        left = sum(len(frames) for ranges in todo.values() for frames in ranges)
        if 0 < left < trainer.world_size:
            raise ValueError(
                f"VideoWriterCallback: the predict videos leave {left} frame(s) to predict, fewer than the "
                f"{trainer.world_size} ranks (Lightning needs one per rank): run with devices <= {left}"
            )
        ranks = datamodule.plan_predict(todo, trainer.global_rank, trainer.world_size)
        ranges = {info.name: ranks[trainer.global_rank][v] for v, info in enumerate(videos)}
        return cls(
            videos, todo, ranges, trainer.world_size > 1 and splits_videos(len(videos), trainer.world_size)
        )


def _leftovers(callback: Settings, video: str) -> list[Path]:
    paths = list(callback.output_format.paths(callback.output_dir, video, callback.outputs).values())
    return [RunManifest(callback.output_dir, video).path] + [parts_folder(p) for p in paths] + paths


def _remove(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _prepare(
    callback: Settings,
    trainer: L.Trainer,
    pl_module: L.LightningModule,
    datamodule: PredictVideoSource,
    videos: list[VideoInfo],
) -> dict[str, list[range]]:
    """Per video, the frames to write: every frame, or with `resume` and a matching manifest those that no
    finished chunk or image holds. Every rank reads the same files and raises the same errors; then rank zero
    alone refuses-or-clears leftovers, removes what will be written again and writes the manifests."""
    todo: dict[str, list[range]] = {}
    leftovers: list[Path] = []
    resumed: list[tuple[list[Path], FrameRanges, bool]] = []
    manifests: dict[RunManifest, dict[str, str]] = {}
    for info in videos:
        paths = list(callback.output_format.paths(callback.output_dir, info.name, callback.outputs).values())
        inputs = {f"data.{key}": value for key, value in datamodule.predict_inputs(info.name).items()}
        current = fingerprint(
            info, callback.output_format, callback.outputs, pl_module, pl_module.hparams, inputs
        )
        manifest = RunManifest(callback.output_dir, info.name)
        if callback.resume and manifest.exists():
            manifest.check_same_run(current)
            complete = manifest.complete
            done = written_frames(callback.output_format, info, paths, complete)
            resumed.append((paths, done, complete))
            todo[info.name] = list(done.missing(info.num_frames))
        else:
            leftovers += _leftovers(callback, info.name)
            todo[info.name] = [range(info.num_frames)]
        if todo[info.name] or not manifest.exists():
            manifests[manifest] = current
    leftovers = refuse_existing(
        leftovers, callback.overwrite
    )  # on every rank, before any rank removes anything
    trainer.strategy.barrier("VideoWriterCallback: outputs checked")
    if trainer.is_global_zero:
        _remove(leftovers)
        for paths, done, complete in resumed:
            clear_unwritten(callback.output_format, paths, done, complete)
        for manifest, current in manifests.items():
            manifest.create(current)
    trainer.strategy.barrier("VideoWriterCallback: outputs cleared")
    left = {name: sum(map(len, ranges)) for name, ranges in todo.items() if callback.resume}
    if any(left[info.name] < info.num_frames for info in videos if info.name in left):
        rank_zero_info(f"VideoWriterCallback: resuming; frames left to predict per video: {left}")
    return todo
