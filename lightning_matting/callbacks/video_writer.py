"""VideoWriterCallback: writes what any module's predict and validation steps return as video files."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_matting.callbacks.loggers import default_video_codec
from lightning_matting.callbacks.predict_writing import PredictWriting
from lightning_matting.callbacks.settings import (
    check_compare_keys,
    check_count,
    check_output_dir,
    check_writable_names,
)
from lightning_matting.callbacks.step_frames import Select
from lightning_matting.callbacks.stopping import RESUME_HINT, stop_on_sigterm
from lightning_matting.callbacks.validation_videos import Layout, ValidationVideos
from lightning_matting.callbacks.written_outputs import WrittenOutputs
from lightning_matting.metadata import to_fraction
from lightning_matting.protocols import PredictVideoModule
from lightning_matting.validators import check_choice
from lightning_matting.writers.output_format import BitDepth, Codec, Format, OutputFormat


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
        step_outputs = WrittenOutputs(self.outputs, bool(self.output_format.alpha), select)
        self._predict = PredictWriting(
            self.output_dir, step_outputs, self.output_format, overwrite, resume, self.fps
        )
        self._validation = ValidationVideos(
            self.output_dir,
            step_outputs,
            self.output_format,
            codec,
            self.fps,
            self.val_videos,
            self.val_batches,
            self.val_layout,
            self.compare_keys,
            log_sanity_check,
        )

    @property
    def written(self) -> dict[str, dict[str, Path]]:
        """The files of the last predict run: {video: {output: path}}."""
        return self._predict.files.paths if self._predict.files is not None else {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        writes = stage == "predict" or (stage in ("fit", "validate") and self.val_videos > 0)
        if not writes:
            return
        if isinstance(pl_module, PredictVideoModule):
            pl_module.request_outputs(self._predict.step_outputs.taken)
        if trainer.is_global_zero:
            check_output_dir(self.output_dir)  # before any model work
        if stage == "predict":
            self._predict.setup(trainer, pl_module)
        else:
            self._validation.setup(trainer)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.predict_loop.return_predictions:
            warnings.warn(
                "trainer.predict(return_predictions=True) keeps every predicted frame in memory, which a long "
                "video does not fit; the videos are written by VideoWriterCallback: pass return_predictions=False",
                stacklevel=1,
            )
        writers = [callback for callback in trainer.callbacks if isinstance(callback, VideoWriterCallback)]
        thread_outputs = sum(len(writer.outputs) for writer in writers) if writers[0] is self else None
        self._predict.start(trainer, pl_module, thread_outputs)  # the first writer sets torch's threads

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
        self._predict.write(trainer, prediction, batch, dataloader_idx)

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
        stop_on_sigterm(trainer, "predict", RESUME_HINT)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._predict.end()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """After the progress bar: report every process's own files; rank zero joins shared videos, and releases
        the output folder."""
        if stage == "predict":
            self._predict.teardown(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Finalize every open file so that it plays and holds every frame written so far (see
        `PredictWriting.on_exception`); then release the output folder."""
        self._validation.on_exception(exception)
        self._predict.on_exception(trainer, exception)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation.start(trainer)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._validation.add(trainer, outputs, batch, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation.end(trainer)
