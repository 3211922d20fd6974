"""VideoWriterCallback: writes what any module's predict and validation steps return as video files."""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_prefixed_message
from torch import Tensor

from lightning_matting.callbacks.loggers import (
    Previews,
    browser_codec,
    hand_to_loggers,
    warn_once,
    warn_unplayable_once,
)
from lightning_matting.callbacks.predict_plan import PredictPlan
from lightning_matting.callbacks.settings import (
    check_compare_keys,
    check_count,
    check_output_dir,
    check_writable_names,
)
from lightning_matting.callbacks.step_frames import Select, compare_sources, gives_no_frames, step_runs, tile
from lightning_matting.callbacks.validation_gather import ValidationGather
from lightning_matting.callbacks.video_files import VideoFiles
from lightning_matting.metadata import to_fraction
from lightning_matting.outputs import straight_rgba
from lightning_matting.protocols import (
    LiveVideoSource,
    PredictThreadsModule,
    PredictVideoModule,
    PredictVideoSource,
)
from lightning_matting.run.lock import FolderInUseError, FolderLock
from lightning_matting.run.manifest import RunManifest
from lightning_matting.run.written import written_frames
from lightning_matting.threads import log_threads, predict_threads
from lightning_matting.validators import check_choice
from lightning_matting.video_names import folder_name
from lightning_matting.writers.chunks import parts_folder
from lightning_matting.writers.durable import StorageError
from lightning_matting.writers.output_format import BitDepth, Codec, Format, OutputFormat

Layout = Literal["outputs", "compare"]
_console = logging.getLogger("lightning.pytorch")  # Lightning's console messages, shown at INFO
_RESUME_HINT = "rerun the same command with --resume=true (resume=True) to continue"


class VideoWriterCallback(BasePredictionWriter):
    """Writes the frames any LightningModule's steps return as videos: predict, and previews of validation.

    The step may return a Tensor [B,C,H,W] (or [B,T,C,H,W], a time run), a tuple/list of them (named by
    position in `outputs`) or a mapping {name: Tensor}; C = 1 (grey), 3 (RGB) or 4 (RGBA), floats in [0,1] or
    uint8. "video" in the step's output or the batch names each frame's video (else there is one video per
    dataloader, `predict_<k>` or `val_<k>`). Each output of each video goes to
    `<output_dir>/<video>/<output>.<ext>` (or a folder of images; `<video>` the name made one safe folder
    name, see `lightning_matting.video_names.folder_name`), frames in the order they arrive, at the
    data's exact fps where the datamodule gives metadata, else at `fps`; the first frames fix the size.

    A datamodule implementing `lightning_matting.PredictVideoSource` (VideoMattingDataModule) adds: exact fps,
    size and frame count per video, the source's audio, existing outputs refused before any work, `resume`,
    and distributed predict (whole videos per process, or contiguous ranges of a long video joined by rank
    zero). A module implementing `PredictVideoModule` (MattingModule) computes only the requested outputs.
    During predict torch runs on the cores left after DataLoader workers and one encoder thread per written
    output of every writer callback (at least 1; the module's `predict_threads` or OMP_NUM_THREADS override
    it), said in the log and restored after predict (`lightning_matting.threads`).

    Predict writes video in finalized segments of `segment_seconds`, joined when a video is done: a hard kill
    loses at most one segment, and `resume=True` reruns the same command from the first frame not safely
    written (a manifest `<output_dir>/<video>/.matting-run.json` refuses a resume with anything changed).
    On an exception or Ctrl-C every open file is finalized and plays with every frame written. One predict
    run at a time writes an output folder: rank zero holds its OS lock (`<output_dir>/.matting-run.lock`, see
    `lightning_matting.run.lock`) from before existing outputs are checked until the run ends, and a second
    run is refused at once (FolderInUseError, on every rank), naming the holder's host and process.

    Validation (fit, validate), on rank zero: the first `val_videos` videos (and at most `val_batches`
    batches) of each validation go to `<output_dir>/val/<run>/epoch=<E>[-step=<S>]/<video>/` (run: the
    logger's version, else a new `run_<k>`), without `codec` as H.264 (VP9 with alpha for RGBA frames) when
    PyAV is installed, and are handed to the loggers: W&B `log_video`, MLflow artifacts, TensorBoard an
    animated GIF; CSV or none: the files only. The sanity check checks the step's outputs as a validation
    does (without writing, unless `log_sanity_check`); a validation_step that returns None or only a loss
    writes nothing, with one warning per run. Distributed, rank zero writes every rank's frames, each once,
    in dataset order (`validation_gather`).

    Args:
        output_dir: The folder of the outputs.
        outputs: The names to write: keys of the step's output (for MattingModule com, pha, fgr, err, ref,
            seg), or positions of its tuple.
        format: "video" or "image_sequence" (numbered images per output).
        fourcc: OpenCV's codec without `codec`: mp4v (.mp4), MJPG (.avi), FFV1 (.mkv, lossless).
        codec: PyAV preset (extra `[av]`): h264, hevc, prores4444, vp9, ffv1. Neither `codec` nor `fourcc`:
            what browsers play where PyAV is installed, H.264 (.mp4; VP9 .webm with `alpha`), else OpenCV's
            mp4v with one warning.
        codec_options: FFmpeg encoder options over the preset's, such as {"crf": "23"}.
        extension: File extension or image type; None: the format's default.
        alpha: com as RGBA [fgr * (pha > 0), pha], straight alpha; None: for image sequences only. Video
            needs prores4444, vp9 or ffv1.
        audio: com and fgr carry the source's audio (PyAV `codec`, datamodule metadata).
        queue_size: Batches that may wait per writer before the step blocks.
        segment_seconds: Predict video in finalized segments of this many seconds; 0 or None: one file.
        bit_depth: Bits per sample stored: 8; 10 (h264, hevc, prores4444); 16 (ffv1, png, tif); 32 (float:
            tif, exr). None: the format's default (8; 10 for prores4444, 32 for exr). An unsupported
            format/depth pair is refused, naming the formats that store it.
        overwrite: Replace existing outputs; otherwise they are refused.
        resume: Continue an interrupted predict run (needs a `PredictVideoSource` datamodule, one device).
        fps: Frame rate of videos without metadata: a number or a fraction such as "30000/1001".
        select: `select(outputs, batch) -> {name: Tensor}` for step outputs of any other structure.
        val_videos: Validation videos written per validation (0: none).
        val_batches: At most this many validation batches written per validation; None: no limit.
        val_layout: "outputs": a file per output; "compare": one side-by-side video per clip, input |
            outputs | ground truth (alpha as grey).
        compare_keys: (input, ground truth) keys of the batch for "compare": a mapping's keys, a dataclass's
            attributes or a sequence's positions; a key the batch lacks is an error. None: ("src", "pha") for
            a mapping or dataclass batch, (0, 1) for a sequence; a default the batch lacks is left out, with
            one warning per run.
        log_sanity_check: Also write the sanity check's validation.

    Raises:
        ValueError: A setting out of its allowed values, naming it.

    Example:
        >>> from pathlib import Path
        >>> import lightning as L
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> class Brightness(L.LightningModule):  # any module whose predict_step returns the outputs
        ...     def predict_step(self, batch, batch_idx):
        ...         return {"pha": batch[0].mean(1, keepdim=True)}
        >>> frames = DataLoader(TensorDataset(torch.rand(8, 3, 64, 96)), batch_size=4)
        >>> writer = VideoWriterCallback("outputs", outputs=["pha"], fps=25)
        >>> trainer = L.Trainer(logger=False, callbacks=[writer], enable_progress_bar=False)
        >>> trainer.predict(Brightness(), frames, return_predictions=False)
        >>> sorted(str(path) for path in Path("outputs").rglob("*.mp4"))
        ['outputs/predict_0/pha.mp4']
    """

    def __init__(
        self,
        output_dir: str | Path = "outputs",
        outputs: Sequence[str] = ("com", "pha"),
        format: Format = "video",
        fourcc: str | None = None,
        codec: Codec | None = None,
        codec_options: dict[str, str] | None = None,
        extension: str | None = None,
        alpha: bool | None = None,
        audio: bool = False,
        queue_size: int = 4,
        segment_seconds: float | None = 2.0,
        bit_depth: BitDepth | None = None,
        overwrite: bool = False,
        resume: bool = False,
        fps: float | str = 30,
        select: Select | None = None,
        val_videos: int = 1,
        val_batches: int | None = None,
        val_layout: Layout = "outputs",
        compare_keys: tuple[str | int, str | int] | None = None,
        log_sanity_check: bool = False,
    ):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.outputs = check_writable_names(outputs)
        self._chosen_codec = codec
        self.output_format = OutputFormat(
            format,
            fourcc or "mp4v",
            codec or (default_video_codec(bool(alpha)) if format == "video" and fourcc is None else None),
            codec_options,
            extension,
            alpha,
            audio,
            queue_size,
            segment_seconds,
            bit_depth,
        )
        self.overwrite = overwrite
        self.resume = resume
        self.fps = to_fraction(fps)
        self.select = select
        self.val_videos = check_count("val_videos", val_videos)
        self.val_batches = None if val_batches is None else check_count("val_batches", val_batches, 1)
        self.val_layout = check_choice("val_layout", val_layout, ("outputs", "compare"))
        self.compare_keys = check_compare_keys(compare_keys)
        self.log_sanity_check = log_sanity_check
        self._lock = FolderLock(self.output_dir)
        self._plan: PredictPlan | None = None
        self._predict: VideoFiles | None = None
        self._validation: _Validation | None = None
        self._gather: ValidationGather | None = None  # a distributed validation's frames to rank zero
        self._val_run: Path | None = None
        self._said: set[str] = set()  # the warnings of this run, each given once
        self._report: list[str] = []  # "output: path (N frames)" lines of this process, shown at teardown
        self._started, self._frames_written = 0.0, 0
        self._threads_before: int | None = None  # torch's thread count before predict, while this sets it

    @property
    def written(self) -> dict[str, dict[str, Path]]:
        """The files of the last predict run: {video: {output: path}}."""
        return self._predict.paths if self._predict is not None else {}

    def _step_names(self) -> tuple[str, ...]:
        """The names taken from the step: an alpha com is built here from pha and fgr."""
        if self.output_format.alpha and "com" in self.outputs:
            return tuple(dict.fromkeys([name for name in self.outputs if name != "com"] + ["pha", "fgr"]))
        return self.outputs

    def _frames(self, frames: dict[str, Any]) -> dict[str, Any]:
        if self.output_format.alpha and "com" in self.outputs:
            frames["com"] = straight_rgba(frames["fgr"], frames["pha"])
        return frames

    # ---- set-up ------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        writes = stage == "predict" or (stage in ("fit", "validate") and self.val_videos > 0)
        if not writes:
            return
        if isinstance(pl_module, PredictVideoModule):
            pl_module.request_outputs(self._step_names())
        if trainer.is_global_zero:
            check_output_dir(self.output_dir)  # before any model work
        if stage != "predict":
            self._val_run = self._validation_run(trainer) if trainer.is_global_zero else None
            self._said = set()
            return
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
        self._plan = None
        needs = "resume=True" if self.resume else "distributed predict" if trainer.world_size > 1 else None
        if needs:
            raise ValueError(
                f"VideoWriterCallback: {needs} needs a datamodule implementing "
                "lightning_matting.PredictVideoSource (videos, plan_predict, predict_inputs), such as "
                f"VideoMattingDataModule; got {type(datamodule).__name__ if datamodule else 'a DataLoader'}"
            )

    def _hold_output_dir(self, trainer: L.Trainer) -> None:
        """Rank zero takes the output folder's lock; a refusal is raised on every rank (none waits at a barrier)."""
        self._plan, self._predict = None, None  # a refused run's on_exception touches no earlier run's files
        refusal = None
        if trainer.is_global_zero:
            try:
                self._lock.acquire()
            except FolderInUseError as error:
                refusal = str(error)
        refusal = trainer.strategy.broadcast(refusal, src=0)
        if refusal is not None:
            raise FolderInUseError(refusal)

    def _validation_run(self, trainer: L.Trainer) -> Path:
        """This run's folder of validation videos: the logger's version, else the first free `run_<k>`."""
        root = self.output_dir / "val"
        version = trainer.logger.version if trainer.logger is not None else None
        if version not in (None, ""):  # fast_dev_run's logger has the empty version
            return root / (f"version_{version}" if isinstance(version, int) else str(version))
        k = 0
        while (root / f"run_{k}").exists():
            k += 1
        return root / f"run_{k}"

    # ---- predict -----------------------------------------------------------------------------------
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.predict_loop.return_predictions:
            warnings.warn(
                "trainer.predict(return_predictions=True) keeps every predicted frame in memory, which a long "
                "video does not fit; the videos are written by VideoWriterCallback: pass return_predictions=False",
                stacklevel=1,
            )
        plan = self._plan
        datamodule = trainer.datamodule
        live = datamodule.live_video if isinstance(datamodule, LiveVideoSource) else None
        self._predict = VideoFiles(
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
        self._set_threads(trainer, pl_module)

    def _set_threads(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The first writer callback of the trainer sets torch's intra-op threads for the run, and logs why."""
        writers = [callback for callback in trainer.callbacks if isinstance(callback, VideoWriterCallback)]
        if writers[0] is not self:
            return
        requested = pl_module.predict_threads if isinstance(pl_module, PredictThreadsModule) else None
        threads, reason = predict_threads(trainer, requested, sum(len(writer.outputs) for writer in writers))
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(threads)
        log_threads(threads, reason)

    def _restore_threads(self) -> None:
        """Give torch back the thread count it had before predict."""
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        for run in step_runs(prediction, batch, self._step_names(), self.select):
            video = run.video or f"predict_{dataloader_idx}"
            self._predict.add(video, self._frames(run.frames), run.first_index)
            self._frames_written += len(next(iter(run.frames.values())))
            rate = self._frames_written / max(time.perf_counter() - self._started, 1e-9)
            _show_in_progress_bar(trainer, f"{video}, {rate:.1f} frames/s")

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        _stop_on_sigterm(trainer, "predict", _RESUME_HINT)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._predict.close_all()
        for video, paths in self._predict.paths.items():
            written = self._predict.written.get(video, 0)
            if video in self._predict.known:
                expected = sum(map(len, self._predict.frames_to_write(video)))
                if written < expected:
                    warnings.warn(
                        f"VideoWriterCallback: {video} got {written} of the {expected} frames this run writes",
                        stacklevel=1,
                    )
            for output, path in paths.items():
                if self._predict.shared:  # rank zero joins the file at teardown
                    self._report.append(f"{output}: {path} ({written} frames (this process's share))")
                    continue
                on_disk = self._predict.frames_on_disk(path)
                added = "" if written == on_disk else f"; {written} written by this run"
                self._report.append(f"{output}: {path} ({on_disk} frames{added})")
        for info in self._plan.videos if self._plan else ():
            RunManifest(self.output_dir, info.name).remove_if_complete()
        self._restore_threads()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """After the progress bar: report every process's own files; once every rank is done, rank zero joins
        the chunks of videos shared by ranks, and releases the output folder."""
        if stage != "predict":
            return
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

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Finalize every open file so that it plays and holds every frame written so far; a video that got no
        frame leaves no manifest behind (its rerun starts afresh); then release the output folder."""
        self._restore_threads()
        for files in (self._predict, self._validation and self._validation.files):
            if files is not None:
                files.close_all(reason=type(exception).__name__)
        if isinstance(exception, KeyboardInterrupt) and trainer.state.fn == "predict":
            _console.error(_stopped("predict", "Ctrl-C (SIGINT)", _RESUME_HINT))
        failure = _storage_failure(exception)
        if failure is not None and self._predict is not None:
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

    # ---- validation -------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A validation begins: its folder; the sanity check only checks the step outputs (unless
        `log_sanity_check`), so that what a validation would refuse fails before training."""
        self._validation = None
        writes = not trainer.sanity_checking or self.log_sanity_check
        self._gather = (
            ValidationGather.start(trainer, self.val_videos, self.val_batches)
            if self.val_videos > 0 and writes
            else None
        )
        if self.val_videos == 0 or not trainer.is_global_zero or self._val_run is None:
            return
        if trainer.sanity_checking:
            folder = "sanity_check"
        elif trainer.state.fn == "fit" and trainer.val_check_batch != trainer.num_training_batches:
            folder = f"epoch={trainer.current_epoch}-step={trainer.global_step}"
        else:
            folder = f"epoch={trainer.current_epoch}"
        self._validation = _Validation(folder, write=not trainer.sanity_checking or self.log_sanity_check)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        validation = self._validation
        if validation is None and self._gather is None:
            return
        if validation is not None:
            if self.val_batches is not None and validation.batches >= self.val_batches:
                return
            validation.batches += 1
        videos = self._validation_frames(outputs, batch, batch_idx, dataloader_idx)
        if validation is not None:
            self._write_validation(trainer, validation, videos)
        _stop_on_sigterm(trainer, "validation", "continue from the last checkpoint (ckpt_path=)")

    def _validation_frames(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int
    ) -> list[tuple[str, dict[str, Tensor]]]:
        """The frames of one validation step, as written: [(video, {file name: [N,C,H,W]})], in order (distributed:
        every rank's, on rank zero); none (with one warning per run) for a step that returned no frames (None, a
        loss)."""
        if self.select is None and gives_no_frames(outputs):
            self._say_once(
                "VideoWriterCallback: validation_step returned no frames to write (None, a loss, or a mapping of "
                "only 'loss'), so no validation video is written; return the frames to write, such as "
                f"{{{self.outputs[0]!r}: frames, 'loss': loss}} for outputs={list(self.outputs)} (frames a "
                "Tensor [B,C,H,W]; or a Tensor, or a tuple of them), or pass val_videos=0"
            )
            return []
        extra = self._compare_sources(batch) if self.val_layout == "compare" else {}
        runs = step_runs(outputs, batch, self._step_names(), self.select, extra)
        if self._gather is not None:  # every rank's frames of the batch, to rank zero, in dataset order
            runs = self._gather.runs(runs, batch_idx, dataloader_idx)
        videos = []
        for run in runs:
            frames = self._frames(run.frames)
            if self.val_layout == "compare":
                order = ["<input>", *self.outputs, "<truth>"]
                frames = {"compare": tile({name: frames[name] for name in order if name in frames})}
            else:
                frames = {name: frames[name] for name in self.outputs}
            videos.append((run.video or f"val_{dataloader_idx}", frames))
        return videos

    def _compare_sources(self, batch: Any) -> dict[str, str | int]:
        """{"<input>": key, "<truth>": key} of the batch for a compare video (see `compare_sources`); the
        defaults the batch lacks are said once per run."""
        sources, lacking = compare_sources(batch, self.compare_keys)
        if lacking:
            missing = " and ".join(f"no {key!r}" for key in lacking.values())
            held = {"<input>": "no input", "<truth>": "no ground truth"}.get(next(iter(lacking)))
            self._say_once(
                f"VideoWriterCallback: the batch has {missing}, so the compare video holds "
                f"{'the outputs only' if len(lacking) == 2 else held}; give compare_keys=(input key, "
                "ground-truth key) of the batch"
            )
        return sources

    def _write_validation(
        self, trainer: L.Trainer, validation: _Validation, videos: list[tuple[str, dict[str, Tensor]]]
    ) -> None:
        """Write (or, in a sanity check, check) the frames of the first `val_videos` videos."""
        for video, frames in videos:
            if video not in validation.videos and len(validation.videos) >= self.val_videos:
                continue
            if validation.files is None:  # the first frames: their channels pick the codec
                validation.files = self._validation_files(trainer, validation.folder, frames)
            if not validation.write:
                validation.files.check(video, frames)
            else:
                validation.files.add(video, frames)
                for name, tensor in frames.items():
                    validation.previews.add(f"{video}/{name}", tensor)
            if video not in validation.videos:
                validation.videos.append(video)

    def _validation_files(self, trainer: L.Trainer, folder: str, frames: dict[str, Tensor]) -> VideoFiles:
        """The files of one validation: the chosen format, unsegmented; video without a chosen `codec` as what
        browsers play where PyAV is installed: VP9 (with alpha) for RGBA frames, else H.264."""
        chosen = self.output_format
        output_format = replace(chosen, segment_seconds=0, audio=False)
        if chosen.format == "video":
            codec = self._chosen_codec or browser_codec(
                alpha=any(tensor.shape[1] == 4 for tensor in frames.values())
            )
            if self._chosen_codec is None and codec is not None:
                output_format = OutputFormat(codec=codec, segment_seconds=0, queue_size=chosen.queue_size)
            warn_unplayable_once(trainer, codec)
        return VideoFiles(
            output_format,
            self._val_run / folder,
            ("compare",) if self.val_layout == "compare" else self.outputs,
            fps=self.fps,
            overwrite=True,  # a rerun of the same run's validation (fit resumed from a checkpoint)
        )

    def _say_once(self, message: str) -> None:
        """Warn with `message` once per run (fit, validate)."""
        if message not in self._said:
            self._said.add(message)
            warnings.warn(message, stacklevel=3)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        validation, self._validation = self._validation, None
        if validation is None or validation.files is None or not validation.write:
            return
        validation.files.close_all()
        for video, paths in validation.files.paths.items():
            for output, path in paths.items():
                preview = validation.previews.frames.get(f"{video}/{output}", [])
                folder = f"val/{validation.folder}/{folder_name(video)}"
                hand_to_loggers(trainer, f"val/{video}/{output}", folder, path, preview, float(self.fps))


def default_video_codec(alpha: bool) -> Codec | None:
    """The codec of video outputs when neither `codec` nor `fourcc` is given: what browsers play, H.264 (VP9 for
    `alpha`), where PyAV is installed; else None (OpenCV's mp4v), warned once per process."""
    codec = browser_codec(alpha=alpha)
    if codec is None:
        warn_once(
            "VideoWriterCallback: PyAV is not installed, so videos are written as OpenCV's mp4v, which browsers "
            "(and W&B or MLflow) do not play; pip install 'lightning-matting[av]' for H.264, or pass fourcc='mp4v' "
            "to choose mp4v"
        )
    return codec


def _show_in_progress_bar(trainer: L.Trainer, text: str) -> None:
    """The video being written and the frames/s so far, beside Lightning's (tqdm) predict bar."""
    bar = trainer.progress_bar_callback
    if isinstance(bar, TQDMProgressBar) and bar.is_enabled and trainer.is_global_zero:
        bar.predict_progress_bar.set_postfix_str(text, refresh=False)


def _stop_on_sigterm(trainer: L.Trainer, stage: str, how: str) -> None:
    """After a batch, stop a run that received SIGTERM (preemption, `kill`, `docker stop`): Lightning's
    predict loop never looks, and its evaluation loop exits with status 0. Every file is finalized in
    `on_exception`; the exit status is 1 and the message says how to continue."""
    if trainer.received_sigterm:
        raise SIGTERMException(_stopped(stage, "SIGTERM", how))


def _stopped(stage: str, by: str, how: str) -> str:
    """The message of a run stopped by a signal: what is kept, and `how` to continue."""
    return (
        f"VideoWriterCallback: {stage} stopped by {by}; every output written so far is finalized and playable: "
        f"{how}"
    )


def _storage_failure(exception: BaseException | None) -> StorageError | None:
    """The StorageError (full disk, quota, file size limit) behind `exception`, if any."""
    while exception is not None and not isinstance(exception, StorageError):
        exception = exception.__cause__
    return exception


class _Validation:
    """The files and previews of one validation; `write` False: the frames are only checked (sanity check)."""

    def __init__(self, folder: str, write: bool):
        self.folder = folder
        self.write = write
        self.files: VideoFiles | None = None  # made at the first frames, whose channels pick the codec
        self.videos: list[str] = []  # begun, in order
        self.batches = 0
        self.previews = Previews()
