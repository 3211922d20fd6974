"""Predict writing: a predict run's outputs written as resumable files, held by one run at a time."""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.rank_zero import rank_prefixed_message

from lightning_matting.callbacks.predict_plan import PredictPlan
from lightning_matting.callbacks.step_frames import step_runs
from lightning_matting.callbacks.stopping import RESUME_HINT, stopped
from lightning_matting.callbacks.video_files import VideoFiles
from lightning_matting.callbacks.written_outputs import WrittenOutputs
from lightning_matting.protocols import LiveVideoSource, PredictThreadsModule, PredictVideoSource
from lightning_matting.run.lock import FolderInUseError, FolderLock
from lightning_matting.run.manifest import RunManifest
from lightning_matting.run.written import written_frames
from lightning_matting.threads import log_threads, predict_threads
from lightning_matting.writers.chunks import parts_folder
from lightning_matting.writers.durable import StorageError
from lightning_matting.writers.output_format import OutputFormat

_console = logging.getLogger("lightning.pytorch")  # Lightning's console messages, shown at INFO


class PredictWriting:
    """Writes a predict run's frames: `<output_dir>/<video>/<output>.<ext>`, resumable, distributed, reported.

    With a `PredictVideoSource` datamodule the run is planned first (`PredictPlan`: existing outputs refused
    or cleared, `resume`, this process's share); rank zero holds the output folder's lock from set-up to
    teardown, joins the videos ranks share, and on an exception every open file is finalized.

    Args:
        output_dir: The folder of the outputs.
        step_outputs: The outputs written and how they are taken from the step.
        output_format: How the files are stored.
        overwrite: Replace existing outputs.
        resume: Continue an interrupted run.
        fps: Frame rate of videos without metadata.
    """

    def __init__(
        self,
        output_dir: Path,
        step_outputs: WrittenOutputs,
        output_format: OutputFormat,
        overwrite: bool,
        resume: bool,
        fps: Fraction,
    ):
        self.output_dir = output_dir
        self.step_outputs = step_outputs
        self.outputs = (
            step_outputs.names
        )  # with output_dir, output_format, overwrite, resume: what a plan needs
        self.output_format = output_format
        self.overwrite = overwrite
        self.resume = resume
        self.fps = fps
        self.files: VideoFiles | None = None
        self._lock = FolderLock(output_dir)
        self._plan: PredictPlan | None = None
        self._report: list[str] = []  # "output: path (N frames)" lines of this process, shown at teardown
        self._started, self._frames_written = 0.0, 0
        self._threads_before: int | None = None  # torch's thread count before predict, while this sets it

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Hold the output folder, then plan the run over a `PredictVideoSource` (refused without one for
        `resume` or distributed predict)."""
        self._hold_output_dir(trainer)  # before anything in it is refused, cleared or removed
        datamodule = trainer.datamodule
        if isinstance(datamodule, PredictVideoSource):
            self._plan = PredictPlan.make(self, trainer, pl_module, datamodule)
            if trainer.is_global_zero:  # here: a run with every frame written predicts no batch
                files = VideoFiles(self.output_format, self.output_dir, self.outputs)
                for info in self._plan.videos:  # written before, not joined (killed while joining, disk full)
                    if not self._plan.todo[info.name]:
                        files.finish(info)
            return
        needs = "resume=True" if self.resume else "distributed predict" if trainer.world_size > 1 else None
        if needs:
            raise ValueError(
                f"VideoWriterCallback: {needs} needs a datamodule implementing "
                "lightning_matting.PredictVideoSource (videos, plan_predict, predict_inputs), such as "
                f"VideoMattingDataModule; got {type(datamodule).__name__ if datamodule else 'a DataLoader'}"
            )

    def _hold_output_dir(self, trainer: L.Trainer) -> None:
        """Rank zero takes the output folder's lock; a refusal is raised on every rank (none waits at a barrier)."""
        self._plan, self.files = None, None  # a refused run's on_exception touches no earlier run's files
        refusal = None
        if trainer.is_global_zero:
            try:
                self._lock.acquire()
            except FolderInUseError as error:
                refusal = str(error)
        refusal = trainer.strategy.broadcast(refusal, src=0)
        if refusal is not None:
            raise FolderInUseError(refusal)

    def start(self, trainer: L.Trainer, pl_module: L.LightningModule, thread_outputs: int | None) -> None:
        """Open the run's files; with `thread_outputs` (the outputs of every writer callback: this one sets the
        threads), give torch the cores left (`lightning_matting.threads`) until the run ends."""
        plan = self._plan
        datamodule = trainer.datamodule
        live = datamodule.live_video if isinstance(datamodule, LiveVideoSource) else None
        self.files = VideoFiles(
            self.output_format,
            self.output_dir,
            self.outputs,
            fps=live.fps if live is not None else self.fps,
            videos={info.name: info for info in plan.videos} if plan else None,
            ranges=plan.ranges if plan else None,
            segmented=True,
            shared=bool(plan and plan.shared),
            overwrite=self.overwrite,
        )
        self._report = []
        self._started, self._frames_written = time.perf_counter(), 0
        if thread_outputs is not None:
            requested = pl_module.predict_threads if isinstance(pl_module, PredictThreadsModule) else None
            threads, reason = predict_threads(trainer, requested, thread_outputs)
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(threads)
            log_threads(threads, reason)

    def restore_threads(self) -> None:
        """Give torch back the thread count it had before predict."""
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def write(self, trainer: L.Trainer, prediction: Any, batch: Any, dataloader_idx: int) -> None:
        """Write one step's frames; the video and frames/s so far show beside the progress bar."""
        for run in step_runs(prediction, batch, self.step_outputs.taken, self.step_outputs.select):
            video = run.video or f"predict_{dataloader_idx}"
            self.files.add(video, self.step_outputs.complete(run.frames), run.first_index)
            self._frames_written += len(next(iter(run.frames.values())))
            rate = self._frames_written / max(time.perf_counter() - self._started, 1e-9)
            _show_in_progress_bar(trainer, f"{video}, {rate:.1f} frames/s")

    def end(self) -> None:
        """Close every file, warn of a video short of its frames, note each file for the report."""
        self.files.close_all()
        for video, paths in self.files.paths.items():
            written = self.files.written.get(video, 0)
            if video in self.files.known:
                expected = sum(map(len, self.files.frames_to_write(video)))
                if written < expected:
                    warnings.warn(
                        f"VideoWriterCallback: {video} got {written} of the {expected} frames this run writes",
                        stacklevel=1,
                    )
            for output, path in paths.items():
                if self.files.shared:  # rank zero joins the file at teardown
                    self._report.append(f"{output}: {path} ({written} frames (this process's share))")
                    continue
                on_disk = self.files.frames_on_disk(path)
                added = "" if written == on_disk else f"; {written} written by this run"
                self._report.append(f"{output}: {path} ({on_disk} frames{added})")
        for info in self._plan.videos if self._plan else ():
            RunManifest(self.output_dir, info.name).remove_if_complete()
        self.restore_threads()

    def teardown(self, trainer: L.Trainer) -> None:
        """Report every process's own files; once every rank is done, rank zero joins the chunks of videos
        shared by ranks; then release the output folder."""
        for line in self._report:  # every rank its own files, after the bar has closed
            _console.info(
                rank_prefixed_message(line, trainer.global_rank) if trainer.world_size > 1 else line
            )
        self._report = []
        if self._plan is None or not self._plan.shared:
            self._lock.release()
            return
        trainer.strategy.barrier("VideoWriterCallback: every share written")
        if not trainer.is_global_zero:
            return
        files = VideoFiles(self.output_format, self.output_dir, self.outputs)
        for info in self._plan.videos:
            files.finish(info)
            RunManifest(self.output_dir, info.name).remove_if_complete()
            for output, path in files.paths[info.name].items():
                on_disk = files.frames_on_disk(path)
                rank_zero_info(f"{output}: {path} ({on_disk} frames from {trainer.world_size} ranks)")
        self._lock.release()

    def on_exception(self, trainer: L.Trainer, exception: BaseException) -> None:
        """Finalize every open file so that it plays and holds every frame written so far; a video that got no
        frame leaves no manifest behind (its rerun starts afresh); then release the output folder."""
        self.restore_threads()
        if self.files is not None:
            self.files.close_all(reason=type(exception).__name__)
        if isinstance(exception, KeyboardInterrupt) and trainer.state.fn == "predict":
            _console.error(stopped("predict", "Ctrl-C (SIGINT)", RESUME_HINT))
        failure = _storage_failure(exception)
        if failure is not None and self.files is not None:
            _console.error(
                f"VideoWriterCallback: {failure}. Every finished segment is kept: free space "
                "(or raise the file size limit) and rerun with --resume=true (resume=True) to continue after them"
            )
        for info in self._plan.videos if self._plan and trainer.is_global_zero else ():
            paths = list(self.output_format.paths(self.output_dir, info.name, self.outputs).values())
            if not written_frames(self.output_format, info, paths, complete=False) and not any(
                path.exists() for path in paths
            ):  # nothing of it was written: the rerun starts afresh, as if this run never began
                RunManifest(self.output_dir, info.name).discard()
                for path in paths:
                    shutil.rmtree(parts_folder(path), ignore_errors=True)
        self._lock.release()


def _show_in_progress_bar(trainer: L.Trainer, text: str) -> None:
    """The video being written and the frames/s so far, in Lightning's predict bar: after a tqdm bar, in a
    Rich bar's description (Lightning draws a Rich bar where `rich` is installed)."""
    bar = trainer.progress_bar_callback
    if not trainer.is_global_zero or bar is None or not bar.is_enabled:
        return
    if isinstance(bar, TQDMProgressBar):
        bar.predict_progress_bar.set_postfix_str(text, refresh=False)
    elif (
        isinstance(bar, RichProgressBar)
        and bar.progress is not None
        and bar.predict_progress_bar_id is not None
    ):
        bar.progress.update(bar.predict_progress_bar_id, description=f"{bar.predict_description} {text}")


def _storage_failure(exception: BaseException | None) -> StorageError | None:
    """The StorageError (full disk, quota, file size limit) behind `exception`, if any."""
    while exception is not None and not isinstance(exception, StorageError):
        exception = exception.__cause__
    return exception
