"""Validation videos: the first videos of each validation written on rank zero and handed to the loggers."""

from __future__ import annotations

import warnings
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import lightning as L
from torch import Tensor

from lightning_matting.callbacks.loggers import Previews, browser_codec, hand_to_loggers, warn_unplayable_once
from lightning_matting.callbacks.step_frames import compare_sources, gives_no_frames, step_runs, tile
from lightning_matting.callbacks.stopping import stop_on_sigterm
from lightning_matting.callbacks.validation_gather import ValidationGather
from lightning_matting.callbacks.video_files import VideoFiles
from lightning_matting.callbacks.written_outputs import WrittenOutputs
from lightning_matting.video_names import folder_name
from lightning_matting.writers.output_format import Codec, OutputFormat

Layout = Literal["outputs", "compare"]


class ValidationVideos:
    """Writes the first `videos` videos (at most `batches` batches) of each validation under
    `<output_dir>/val/<run>/epoch=<E>[-step=<S>]/<video>/` on rank zero, every rank's frames once, in dataset
    order (`validation_gather`); the sanity check only checks the step's frames unless `log_sanity_check`.

    Args:
        output_dir: The folder whose `val/` holds the runs.
        step_outputs: The outputs written and how they are taken from the step.
        output_format: How the files are stored (unsegmented, without audio here).
        codec: The codec the user chose; None: what browsers play where PyAV is installed.
        fps: Frame rate of the videos.
        videos: Videos written per validation (0: none).
        batches: At most this many batches written per validation; None: no limit.
        layout: "outputs": a file per output; "compare": input | outputs | ground truth side by side.
        compare_keys: (input, ground truth) keys of the batch for "compare"; None: the defaults.
        log_sanity_check: Also write the sanity check's validation.
    """

    def __init__(
        self,
        output_dir: Path,
        step_outputs: WrittenOutputs,
        output_format: OutputFormat,
        codec: Codec | None,
        fps: Fraction,
        videos: int,
        batches: int | None,
        layout: Layout,
        compare_keys: tuple[str | int, str | int] | None,
        log_sanity_check: bool,
    ):
        self.output_dir = output_dir
        self.step_outputs = step_outputs
        self.output_format = output_format
        self.codec = codec
        self.fps = fps
        self.videos = videos
        self.batches = batches
        self.layout = layout
        self.compare_keys = compare_keys
        self.log_sanity_check = log_sanity_check
        self.current: _Validation | None = None
        self._gather: ValidationGather | None = None  # a distributed validation's frames to rank zero
        self._run: Path | None = None
        self._said: set[str] = set()  # the warnings of this run, each given once

    def setup(self, trainer: L.Trainer) -> None:
        """A fit or validate run begins: its folder of validation videos (rank zero)."""
        self._run = self._run_folder(trainer) if trainer.is_global_zero else None
        self._said = set()

    def _run_folder(self, trainer: L.Trainer) -> Path:
        """This run's folder of validation videos: the logger's version, else the first free `run_<k>`."""
        root = self.output_dir / "val"
        version = trainer.logger.version if trainer.logger is not None else None
        if version not in (None, ""):  # fast_dev_run's logger has the empty version
            return root / (f"version_{version}" if isinstance(version, int) else str(version))
        k = 0
        while (root / f"run_{k}").exists():
            k += 1
        return root / f"run_{k}"

    def start(self, trainer: L.Trainer) -> None:
        """A validation begins: its folder; the sanity check only checks the step outputs (unless
        `log_sanity_check`), so that what a validation would refuse fails before training."""
        self.current = None
        writes = not trainer.sanity_checking or self.log_sanity_check
        self._gather = (
            ValidationGather.start(trainer, self.videos, self.batches) if self.videos > 0 and writes else None
        )
        if self.videos == 0 or not trainer.is_global_zero or self._run is None:
            return
        if trainer.sanity_checking:
            folder = "sanity_check"
        elif trainer.state.fn == "fit" and trainer.val_check_batch != trainer.num_training_batches:
            folder = f"epoch={trainer.current_epoch}-step={trainer.global_step}"
        else:
            folder = f"epoch={trainer.current_epoch}"
        self.current = _Validation(folder, write=writes)

    def add(self, trainer: L.Trainer, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        """One validation step's frames: written (or checked), up to `batches` batches; then a run that received
        SIGTERM stops."""
        validation = self.current
        if validation is None and self._gather is None:
            return
        if validation is not None:
            if self.batches is not None and validation.batches >= self.batches:
                return
            validation.batches += 1
        videos = self._frames(outputs, batch, batch_idx, dataloader_idx)
        if validation is not None:
            self._write(trainer, validation, videos)
        stop_on_sigterm(trainer, "validation", "continue from the last checkpoint (ckpt_path=)")

    def _frames(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int
    ) -> list[tuple[str, dict[str, Tensor]]]:
        """The frames of one validation step, as written: [(video, {file name: [N,C,H,W]})], in order (distributed:
        every rank's, on rank zero); none (with one warning per run) for a step that returned no frames (None, a
        loss)."""
        names = self.step_outputs.names
        if self.step_outputs.select is None and gives_no_frames(outputs):
            self._say_once(
                "VideoWriterCallback: validation_step returned no frames to write (None, a loss, or a mapping of "
                "only 'loss'), so no validation video is written; return the frames to write, such as "
                f"{{{names[0]!r}: frames, 'loss': loss}} for outputs={list(names)} (frames a "
                "Tensor [B,C,H,W]; or a Tensor, or a tuple of them), or pass val_videos=0"
            )
            return []
        extra = self._compare_sources(batch) if self.layout == "compare" else {}
        runs = step_runs(outputs, batch, self.step_outputs.taken, self.step_outputs.select, extra)
        if self._gather is not None:  # every rank's frames of the batch, to rank zero, in dataset order
            runs = self._gather.runs(runs, batch_idx, dataloader_idx)
        videos = []
        for run in runs:
            frames = self.step_outputs.complete(run.frames)
            if self.layout == "compare":
                order = ["<input>", *names, "<truth>"]
                frames = {"compare": tile({name: frames[name] for name in order if name in frames})}
            else:
                frames = {name: frames[name] for name in names}
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

    def _write(
        self, trainer: L.Trainer, validation: _Validation, videos: list[tuple[str, dict[str, Tensor]]]
    ) -> None:
        """Write (or, in a sanity check, check) the frames of the first `videos` videos."""
        for video, frames in videos:
            if video not in validation.videos and len(validation.videos) >= self.videos:
                continue
            if validation.files is None:  # the first frames: their channels pick the codec
                validation.files = self._files(trainer, validation.folder, frames)
            if not validation.write:
                validation.files.check(video, frames)
            else:
                validation.files.add(video, frames)
                for name, tensor in frames.items():
                    validation.previews.add(f"{video}/{name}", tensor)
            if video not in validation.videos:
                validation.videos.append(video)

    def _files(self, trainer: L.Trainer, folder: str, frames: dict[str, Tensor]) -> VideoFiles:
        """The files of one validation: the chosen format, unsegmented; video without a chosen `codec` as what
        browsers play where PyAV is installed: VP9 (with alpha) for RGBA frames, else H.264."""
        chosen = self.output_format
        output_format = replace(chosen, segment_seconds=0, audio=False)
        if chosen.format == "video":
            codec = self.codec or browser_codec(alpha=any(tensor.shape[1] == 4 for tensor in frames.values()))
            if self.codec is None and codec is not None:
                output_format = OutputFormat(codec=codec, segment_seconds=0, queue_size=chosen.queue_size)
            warn_unplayable_once(trainer, codec)
        return VideoFiles(
            output_format,
            self._run / folder,
            ("compare",) if self.layout == "compare" else self.step_outputs.names,
            fps=self.fps,
            overwrite=True,  # a rerun of the same run's validation (fit resumed from a checkpoint)
        )

    def _say_once(self, message: str) -> None:
        """Warn with `message` once per run (fit, validate)."""
        if message not in self._said:
            self._said.add(message)
            warnings.warn(message, stacklevel=4)

    def end(self, trainer: L.Trainer) -> None:
        """A validation ends: its files closed and handed to the loggers."""
        validation, self.current = self.current, None
        if validation is None or validation.files is None or not validation.write:
            return
        validation.files.close_all()
        for video, paths in validation.files.paths.items():
            for output, path in paths.items():
                preview = validation.previews.frames.get(f"{video}/{output}", [])
                folder = f"val/{validation.folder}/{folder_name(video)}"
                hand_to_loggers(trainer, f"val/{video}/{output}", folder, path, preview, float(self.fps))

    def on_exception(self, exception: BaseException) -> None:
        """Finalize the open files of the validation, so that they play."""
        if self.current is not None and self.current.files is not None:
            self.current.files.close_all(reason=type(exception).__name__)


class _Validation:
    """The files and previews of one validation; `write` False: the frames are only checked (sanity check)."""

    def __init__(self, folder: str, write: bool):
        self.folder = folder
        self.write = write
        self.files: VideoFiles | None = None  # made at the first frames, whose channels pick the codec
        self.videos: list[str] = []  # begun, in order
        self.batches = 0
        self.previews = Previews()
