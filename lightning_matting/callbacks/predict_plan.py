"""What a predict run over a `PredictVideoSource` writes: its videos, where each starts, this process's frames.

Existing outputs are refused (or replaced with `overwrite`) before any model work; with `resume`, each video
continues where its manifest and finished segments say.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lightning_matting.callbacks import resume
from lightning_matting.metadata import VideoInfo
from lightning_matting.protocols import PredictVideoSource
from lightning_matting.writers.output_format import OutputFormat
from lightning_matting.writers.segments import parts_folder


class Settings(Protocol):
    """The writer settings a plan needs (VideoWriterCallback has them)."""

    output_dir: Path
    outputs: tuple[str, ...]
    output_format: OutputFormat
    overwrite: bool
    resume: bool


class PredictPlan:
    """What a `PredictVideoSource` predict run writes: its videos, where each starts, this process's frames."""

    def __init__(
        self,
        videos: list[VideoInfo],
        starts: dict[str, int],
        ranges: dict[str, range],
        piece_starts: dict[str, list[int]],
    ):
        self.videos = videos
        self.starts = starts
        self.ranges = ranges
        self.piece_starts = piece_starts  # videos shared by ranks: each piece's first frame

    @classmethod
    def make(
        cls,
        callback: Settings,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        datamodule: PredictVideoSource,
    ) -> PredictPlan:
        """Refuse or clear existing outputs, or (resume) find where each video continues; then tell the data
        and keep the frames this process writes."""
        videos = list(datamodule.videos)
        if trainer.world_size > 1:
            starts = _prepare_distributed(callback, trainer, videos)
        else:
            starts = _prepare_single(callback, pl_module, datamodule, videos)
        resumed = {name: start for name, start in starts.items() if start}
        ranks = datamodule.plan_predict(resumed, trainer.global_rank, trainer.world_size)
        ranges = {info.name: ranks[trainer.global_rank][v] for v, info in enumerate(videos)}
        pieces = {}
        if len(videos) < trainer.world_size:
            pieces = {
                info.name: [share[v].start for share in ranks if len(share[v])]
                for v, info in enumerate(videos)
            }
        return cls(videos, starts, ranges, pieces)


def _leftovers(callback: Settings, video: str) -> list[Path]:
    paths = list(callback.output_format.paths(callback.output_dir, video, callback.outputs).values())
    return [resume.manifest_path(callback.output_dir, video)] + [parts_folder(p) for p in paths] + paths


def _refuse_existing(callback: Settings, paths: list[Path]) -> list[Path]:
    """The `paths` that exist (to be replaced); a FileExistsError naming them unless `overwrite`."""
    existing = [path for path in paths if path.exists()]
    if existing and not callback.overwrite:
        shown = ", ".join(str(path) for path in existing[:4]) + (" ..." if len(existing) > 4 else "")
        raise FileExistsError(
            f"VideoWriterCallback: {len(existing)} output(s) exist already ({shown}); choose another "
            "output_dir or pass overwrite=True to replace them"
        )
    return existing


def _remove(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _prepare_distributed(callback: Settings, trainer: L.Trainer, videos: list[VideoInfo]) -> dict[str, int]:
    """Every rank checks for existing outputs, then rank zero clears them; every video starts at frame 0."""
    if callback.resume:
        raise ValueError(
            f"VideoWriterCallback(resume=True) works on one device only, not with world_size "
            f"{trainer.world_size}: rerun with resume=False and overwrite=True (or resume with devices=1)"
        )
    total = sum(info.num_frames for info in videos)
    if total < trainer.world_size:
        raise ValueError(
            f"VideoWriterCallback: the predict videos hold {total} frame(s) in all, fewer than the "
            f"{trainer.world_size} ranks (Lightning needs one per rank): run with devices <= {max(total, 1)}"
        )
    leftovers = [path for info in videos for path in _leftovers(callback, info.name)]
    _refuse_existing(callback, leftovers)  # on every rank, before any rank removes anything
    trainer.strategy.barrier("VideoWriterCallback: outputs checked")
    if trainer.is_global_zero:
        _remove(leftovers)
    trainer.strategy.barrier("VideoWriterCallback: outputs cleared")
    return {info.name: 0 for info in videos}


def _prepare_single(
    callback: Settings,
    pl_module: L.LightningModule,
    datamodule: PredictVideoSource,
    videos: list[VideoInfo],
) -> dict[str, int]:
    """Per video: resume where a matching manifest says, else refuse or clear leftovers; write its manifest."""
    starts = {}
    for info in videos:
        paths = list(callback.output_format.paths(callback.output_dir, info.name, callback.outputs).values())
        inputs = {f"data.{key}": value for key, value in datamodule.predict_inputs(info.name).items()}
        fingerprint = resume.fingerprint(
            info, callback.output_format, callback.outputs, pl_module, pl_module.hparams, inputs
        )
        manifest = resume.manifest_path(callback.output_dir, info.name)
        if callback.resume and manifest.is_file():
            previous = resume.read_manifest(manifest)
            resume.check_same_run(info.name, previous.get("fingerprint", {}), fingerprint)
            starts[info.name] = resume.resume_point(
                callback.output_format, info, paths, bool(previous.get("complete"))
            )
        else:
            _remove(_refuse_existing(callback, _leftovers(callback, info.name)))
            starts[info.name] = 0
        if starts[info.name] < info.num_frames or not manifest.is_file():
            resume.write_json(manifest, {"fingerprint": fingerprint, "complete": False})
    resumed = {name: start for name, start in starts.items() if start}
    if resumed:
        rank_zero_info(f"VideoWriterCallback: resuming at frames {resumed}")
    return starts
