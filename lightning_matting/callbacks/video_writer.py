"""VideoWriterCallback: writes the named outputs of predict (and of validation) as one file per video."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lightning_matting.data.readers import VideoInfo
from lightning_matting.outputs import check_output_names, straight_rgba
from lightning_matting.writers import AVWriter, FrameWriter, ImageSequenceWriter, VideoWriter
from lightning_matting.writers.pyav import ALPHA_CODECS, PRESETS

# The container each OpenCV fourcc is written in unless `extension` says otherwise.
_VIDEO_EXTENSIONS = {"mp4v": "mp4", "FFV1": "mkv", "MJPG": "avi", "XVID": "avi"}


class VideoWriterCallback(BasePredictionWriter):
    """Writes each predicted output to `<output_dir>/<video>/<output>.<ext>` (or a folder of images).

    Predict: writers open at a video's first batch and close after its last frame, so any number of
    videos run with a bounded number of open files; every batch is handed to `add_batch` (conversion on
    the device, encoding on background threads). On an exception or Ctrl-C every open writer is closed,
    leaving playable files with every frame predicted before it. Existing outputs are refused unless
    `overwrite=True`. Video metadata (fps, size, frame count) comes from the datamodule's (or the
    dataset's) `videos`.

    Validation (fit and validate): the outputs of the first `val_videos` validation videos go to
    `<output_dir>/val/epoch=<E>/<video>/` (`epoch=<E>-step=<S>` when validation runs within an epoch),
    on rank zero, not during the sanity check unless `log_sanity_check`. Each finished file is handed to
    the logger: WandbLogger.log_video, MLFlowLogger artifacts, TensorBoard its first frame as an image
    (its add_video needs moviepy < 2); CSV or no logger: the files only.

    Formats: OpenCV video with `fourcc` (default mp4v in .mp4; FFV1 in .mkv is lossless); with `codec`
    (h264, hevc, prores4444, vp9, ffv1) PyAV's AVWriter with that preset and `codec_options` (extra
    `[av]`), and with `audio=True` com and fgr carry the source video's audio. `format="image_sequence"`
    writes numbered images (`extension` png by default). `alpha`: com as RGBA [fgr * (pha > 0), pha]
    (straight alpha) instead of a composite; the default for image sequences, and for video it needs
    an alpha codec (prores4444, vp9, ffv1).

    Example:
        >>> writer = VideoWriterCallback("outputs", outputs=["com", "pha"])
        >>> trainer = Trainer(callbacks=[writer])
        >>> trainer.predict(MattingModule(...), datamodule=dm, return_predictions=False)
    """

    def __init__(
        self,
        output_dir: str | Path = "outputs",
        outputs: Sequence[str] = ("com", "pha"),
        format: Literal["video", "image_sequence"] = "video",
        fourcc: str = "mp4v",
        extension: str | None = None,
        overwrite: bool = False,
        queue_size: int = 4,
        val_videos: int = 1,
        log_sanity_check: bool = False,
        codec: str | None = None,
        codec_options: dict[str, str] | None = None,
        alpha: bool | None = None,
        audio: bool = False,
    ):
        super().__init__(write_interval="batch")
        if format not in ("video", "image_sequence"):
            raise ValueError(f"format must be 'video' or 'image_sequence', got {format!r}")
        if codec is not None and codec not in PRESETS:
            raise ValueError(
                f"codec must be one of {', '.join(PRESETS)} (PyAV), or None for OpenCV, got {codec!r}"
            )
        self.alpha = format == "image_sequence" if alpha is None else alpha
        if self.alpha and format == "video" and codec not in ALPHA_CODECS:
            raise ValueError(
                f"alpha video needs codec= one of {', '.join(ALPHA_CODECS)} (OpenCV and codec {codec!r} carry no "
                "alpha), or format='image_sequence'"
            )
        if audio and (codec is None or format != "video"):
            raise ValueError("audio=True needs PyAV video output: give codec= one of " + ", ".join(PRESETS))
        if isinstance(val_videos, bool) or not isinstance(val_videos, int) or val_videos < 0:
            raise ValueError(
                f"val_videos must be an int >= 0 (validation videos written per epoch), got {val_videos!r}"
            )
        self.output_dir = Path(output_dir)
        self.outputs = check_output_names(outputs)
        self.format = format
        self.fourcc = fourcc
        self.codec = codec
        self.codec_options = codec_options
        self.audio = audio
        if extension is None:
            if format == "image_sequence":
                extension = "png"
            elif codec is not None:
                extension = PRESETS[codec].extensions[0]
            else:
                extension = _VIDEO_EXTENSIONS.get(fourcc, "mkv")
        self.extension = extension
        self.overwrite = overwrite
        self.queue_size = queue_size
        self.val_videos = val_videos
        self.log_sanity_check = log_sanity_check
        self._predict: _VideoFiles | None = None
        self._validation: _VideoFiles | None = None

    @property
    def written(self) -> dict[str, dict[str, Path]]:
        """The files of the last predict run: {video: {output: path}}."""
        return self._predict.paths if self._predict is not None else {}

    def output_path(self, root: Path, video: str, output: str) -> Path:
        """Where `output` of `video` goes under `root`: a file for video, a folder for image sequences."""
        if self.format == "image_sequence":
            return root / video / output
        return root / video / f"{output}.{self.extension}"

    def open_writer(self, path: Path, info: VideoInfo, output: str) -> FrameWriter:
        """A writer for one output of one video, in this callback's format."""
        if self.format == "image_sequence":
            return ImageSequenceWriter(
                path, self.extension, width=info.width, height=info.height, queue_size=self.queue_size
            )
        if self.codec is not None:
            audio_from = info.source if self.audio and output in ("com", "fgr") else None
            return AVWriter(
                path,
                info.fps,
                info.width,
                info.height,
                codec=self.codec,
                options=self.codec_options,
                audio_from=audio_from,
                queue_size=self.queue_size,
            )
        return VideoWriter(
            path, info.fps, info.width, info.height, fourcc=self.fourcc, queue_size=self.queue_size
        )

    def _network_outputs(self) -> tuple[str, ...]:
        """What the module must compute: an alpha com is built here from pha and fgr."""
        if self.alpha and "com" in self.outputs:
            return tuple(dict.fromkeys([name for name in self.outputs if name != "com"] + ["pha", "fgr"]))
        return self.outputs

    def _replace_or_refuse(self, paths: list[Path]) -> None:
        existing = [path for path in paths if path.exists()]
        if existing and not self.overwrite:
            shown = ", ".join(str(path) for path in existing[:4]) + (" ..." if len(existing) > 4 else "")
            raise FileExistsError(
                f"VideoWriterCallback: {len(existing)} output(s) exist already ({shown}); choose another "
                "output_dir or pass overwrite=True to replace them"
            )
        for path in existing:
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    # ---- predict ----------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if hasattr(pl_module, "request_outputs") and (stage == "predict" or self.val_videos > 0):
            pl_module.request_outputs(self._network_outputs())
        if stage in ("fit", "validate") and self.val_videos > 0 and trainer.is_global_zero:
            self._replace_or_refuse([self.output_dir / "val"])  # before any training step is spent

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            raise NotImplementedError(
                "VideoWriterCallback does not support distributed predict yet; run with devices=1"
            )
        if trainer.predict_loop.return_predictions:
            warnings.warn(
                "trainer.predict(return_predictions=True) keeps every predicted frame in memory, which a long "
                "video does not fit; the videos are written by VideoWriterCallback: pass return_predictions=False",
                stacklevel=1,
            )
        videos = _find_videos(trainer, "predict")
        self._replace_or_refuse(
            [self.output_path(self.output_dir, v.name, output) for v in videos for output in self.outputs]
        )
        self._predict = _VideoFiles(self, self.output_dir, videos)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self._predict.add(prediction)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._predict.close_all()
        for video, paths in self._predict.paths.items():
            done, total = self._predict.next_index.get(video, 0), self._predict.videos[video].num_frames
            if done < total:
                warnings.warn(f"VideoWriterCallback: {video} has {done} of {total} frames", stacklevel=1)
            for output, path in paths.items():
                rank_zero_info(f"{output}: {path} ({done} frames)")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Finalize every open file so that it plays and holds every frame predicted so far."""
        for files in (self._predict, self._validation):
            if files is not None:
                files.close_all(reason=f"{type(exception).__name__}")

    # ---- validation -------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation = None
        skip = trainer.sanity_checking and not self.log_sanity_check
        if self.val_videos == 0 or skip or not trainer.is_global_zero:
            return
        if trainer.sanity_checking:
            folder = "sanity_check"
        elif trainer.state.fn == "fit" and trainer.val_check_batch != trainer.num_training_batches:
            folder = f"epoch={trainer.current_epoch}-step={trainer.global_step}"
        else:
            folder = f"epoch={trainer.current_epoch}"
        videos = _find_videos(trainer, "validate")[: self.val_videos]
        self._validation = _VideoFiles(self, self.output_dir / "val" / folder, videos, keep_first_frames=True)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if (
            self._validation is not None
            and isinstance(outputs, dict)
            and outputs.get("video") in self._validation.videos
        ):
            self._validation.add(outputs)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation is None:
            return
        self._validation.close_all()
        for video, paths in self._validation.paths.items():
            for output, path in paths.items():
                _hand_to_loggers(
                    trainer, f"val/{video}/{output}", path, self._validation.first_frames[video][output]
                )
        self._validation = None


class _VideoFiles:
    """The writers of one run under `root`: opened at a video's first batch, closed after its last frame."""

    def __init__(
        self, callback: VideoWriterCallback, root: Path, videos: list[VideoInfo], keep_first_frames=False
    ):
        self.callback = callback
        self.root = root
        self.videos = {info.name: info for info in videos}
        self.paths: dict[str, dict[str, Path]] = {}
        self.next_index: dict[str, int] = {}
        self.first_frames: dict[str, dict[str, torch.Tensor]] | None = {} if keep_first_frames else None
        self._open: dict[str, dict[str, FrameWriter]] = {}

    def add(self, prediction: dict[str, Any]) -> None:
        """Hand a batch of predictions {output: [B,C,H,W], "video", "index"} to its video's writers."""
        video, index = prediction["video"], prediction["index"]
        first, expected = int(index[0]), self.next_index.get(video, 0)
        if first != expected:
            raise RuntimeError(
                f"VideoWriterCallback: {video} got frame {first} where frame {expected} comes next; "
                "batches must be consecutive frames in order (VideoBatchSampler, no shuffle)"
            )
        if video not in self._open:
            if video not in self.videos:
                raise KeyError(
                    f"VideoWriterCallback: no metadata for video {video!r}; known: {sorted(self.videos)}"
                )
            self._open[video] = self._open_writers(self.videos[video])
        frames = {output: self._frames(prediction, output) for output in self._open[video]}
        if self.first_frames is not None and first == 0:
            self.first_frames[video] = {
                output: batch[0].detach().float().cpu() for output, batch in frames.items()
            }
        for output, writer in self._open[video].items():
            writer.add_batch(frames[output])
        self.next_index[video] = first + len(index)
        if self.next_index[video] >= self.videos[video].num_frames:
            _close_all(self._open.pop(video).values())

    def _frames(self, prediction: dict[str, Any], output: str) -> torch.Tensor:
        if output == "com" and self.callback.alpha:
            return straight_rgba(prediction["fgr"], prediction["pha"])
        return prediction[output]

    def _open_writers(self, info: VideoInfo) -> dict[str, FrameWriter]:
        paths = {
            output: self.callback.output_path(self.root, info.name, output)
            for output in self.callback.outputs
        }
        writers: dict[str, FrameWriter] = {}
        try:
            for output, path in paths.items():
                writers[output] = self.callback.open_writer(path, info, output)
        except BaseException:
            _close_all(writers.values(), reason="a writer failed to open")
            raise
        self.paths[info.name] = paths
        return writers

    def close_all(self, reason: str | None = None) -> None:
        """Finalize every open writer; `reason` (an exception is propagating) turns close errors into warnings."""
        for video in list(self._open):
            _close_all(self._open.pop(video).values(), reason=reason)


def _close_all(writers: Any, reason: str | None = None) -> None:
    """Close every writer even if some fail; raise the first failure unless closing because of another."""
    first_error = None
    for writer in writers:
        try:
            writer.close()
        except Exception as error:  # noqa: BLE001 - the others must still be closed
            if reason is not None:
                warnings.warn(f"closing {writer.path} after {reason} failed: {error!r}", stacklevel=2)
            first_error = first_error or error
    if first_error is not None and reason is None:
        raise first_error


def _hand_to_loggers(trainer: L.Trainer, key: str, path: Path, first_frame: torch.Tensor) -> None:
    """Give a finished validation file to each logger that can show it; a missing package only warns."""
    for logger in trainer.loggers:
        try:
            if hasattr(logger, "log_video"):  # WandbLogger
                logger.log_video(key, [str(path)], step=trainer.global_step)
            elif isinstance(logger, MLFlowLogger):
                logger.experiment.log_artifact(logger.run_id, str(path), artifact_path=str(Path(key).parent))
            elif isinstance(logger, TensorBoardLogger):
                image = (
                    first_frame.clamp(0, 1).expand(3, -1, -1)
                    if first_frame.shape[0] == 1
                    else first_frame[:3]
                )
                logger.experiment.add_image(key, image, trainer.global_step)
        except ImportError as error:
            warnings.warn(
                f"VideoWriterCallback: {type(logger).__name__} cannot log {path}: {error}", stacklevel=2
            )


def _find_videos(trainer: L.Trainer, stage: str) -> list[VideoInfo]:
    """Video metadata: the datamodule's `videos` (predict), else the stage's datasets' `videos`."""
    datamodule = getattr(trainer, "datamodule", None)
    if stage == "predict" and datamodule is not None and getattr(datamodule, "videos", None):
        return list(datamodule.videos)
    loaders = trainer.predict_dataloaders if stage == "predict" else trainer.val_dataloaders
    loaders = loaders if isinstance(loaders, Sequence) else [loaders]
    videos = [
        info for loader in loaders if loader is not None for info in getattr(loader.dataset, "videos", [])
    ]
    if not videos:
        raise ValueError(
            "VideoWriterCallback needs video metadata (name, fps, size, frame count): use "
            "VideoMattingDataModule, or a dataset with a `videos` list of VideoInfo"
        )
    return videos
