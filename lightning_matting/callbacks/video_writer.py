"""VideoWriterCallback: writes the named outputs of `trainer.predict` as one file per video and output."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from lightning_matting.data.readers import VideoInfo
from lightning_matting.outputs import check_output_names, straight_rgba
from lightning_matting.writers import FrameWriter, ImageSequenceWriter, VideoWriter

# The container each OpenCV fourcc is written in unless `extension` says otherwise.
_VIDEO_EXTENSIONS = {"mp4v": "mp4", "FFV1": "mkv", "MJPG": "avi", "XVID": "avi"}


class VideoWriterCallback(BasePredictionWriter):
    """Writes each predicted output to `<output_dir>/<video>/<output>.<ext>` (or a folder of images).

    Writers open at a video's first batch and close after its last frame, so any number of videos
    run with a bounded number of open files; every batch is handed to `add_batch` (conversion on the
    device, encoding on background threads). On an exception or Ctrl-C every open writer is closed,
    leaving playable files with every frame predicted before it. Existing outputs are refused unless
    `overwrite=True`. Video metadata (fps, size, frame count) comes from the datamodule's (or the
    predict dataset's) `videos`.

    `format="image_sequence"` writes numbered images (`extension` png by default); its `com` is RGBA
    [fgr * (pha > 0), pha] (straight alpha) rather than a composite.

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
    ):
        super().__init__(write_interval="batch")
        if format not in ("video", "image_sequence"):
            raise ValueError(f"format must be 'video' or 'image_sequence', got {format!r}")
        self.output_dir = Path(output_dir)
        self.outputs = check_output_names(outputs)
        self.format = format
        self.fourcc = fourcc
        self.extension = extension or (
            "png" if format == "image_sequence" else _VIDEO_EXTENSIONS.get(fourcc, "mkv")
        )
        self.overwrite = overwrite
        self.queue_size = queue_size
        self.written: dict[str, dict[str, Path]] = {}
        self._videos: dict[str, VideoInfo] = {}
        self._open: dict[str, dict[str, FrameWriter]] = {}
        self._next_index: dict[str, int] = {}

    # ---- the files --------------------------------------------------------------------------------
    def output_path(self, video: str, output: str) -> Path:
        """Where `output` of `video` is written: a file for video, a folder for image sequences."""
        if self.format == "image_sequence":
            return self.output_dir / video / output
        return self.output_dir / video / f"{output}.{self.extension}"

    def _network_outputs(self) -> tuple[str, ...]:
        """What the module must predict: image-sequence com is built here from pha and fgr."""
        if self.format == "image_sequence" and "com" in self.outputs:
            return tuple(dict.fromkeys([name for name in self.outputs if name != "com"] + ["pha", "fgr"]))
        return self.outputs

    def _open_writers(self, info: VideoInfo) -> dict[str, FrameWriter]:
        writers: dict[str, FrameWriter] = {}
        try:
            for output in self.outputs:
                path = self.output_path(info.name, output)
                if self.format == "image_sequence":
                    writers[output] = ImageSequenceWriter(
                        path, self.extension, width=info.width, height=info.height, queue_size=self.queue_size
                    )
                else:
                    writers[output] = VideoWriter(
                        path,
                        info.fps,
                        info.width,
                        info.height,
                        fourcc=self.fourcc,
                        queue_size=self.queue_size,
                    )
        except BaseException:
            _close_all(writers.values(), reason="a writer failed to open")
            raise
        self.written[info.name] = {output: self.output_path(info.name, output) for output in self.outputs}
        return writers

    # ---- hooks ------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "predict" and hasattr(pl_module, "request_outputs"):
            pl_module.request_outputs(self._network_outputs())

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
        self._videos = {info.name: info for info in _find_videos(trainer)}
        self._refuse_existing_outputs()
        self.written, self._open, self._next_index = {}, {}, {}

    def _refuse_existing_outputs(self) -> None:
        existing = [
            path
            for video in self._videos
            for output in self.outputs
            if (path := self.output_path(video, output)).exists()
        ]
        if existing and not self.overwrite:
            shown = ", ".join(str(path) for path in existing[:4]) + (" ..." if len(existing) > 4 else "")
            raise FileExistsError(
                f"VideoWriterCallback: {len(existing)} output(s) exist already ({shown}); choose another "
                "output_dir or pass overwrite=True to replace them"
            )
        for path in existing:
            shutil.rmtree(path) if path.is_dir() else path.unlink()

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
        video = prediction["video"]
        first = int(prediction["index"][0])
        expected = self._next_index.get(video, 0)
        if first != expected:
            raise RuntimeError(
                f"VideoWriterCallback: {video} got frame {first} where frame {expected} comes next; "
                "predict batches must be consecutive frames in order (VideoBatchSampler, no shuffle)"
            )
        if video not in self._open:
            if video not in self._videos:
                raise KeyError(
                    f"VideoWriterCallback: no metadata for video {video!r}; known: {sorted(self._videos)}"
                )
            self._open[video] = self._open_writers(self._videos[video])
        for output, writer in self._open[video].items():
            if output == "com" and self.format == "image_sequence":
                writer.add_batch(straight_rgba(prediction["fgr"], prediction["pha"]))
            else:
                writer.add_batch(prediction[output])
        self._next_index[video] = first + len(prediction["index"])
        if self._next_index[video] >= self._videos[video].num_frames:
            self._close_video(video)

    def _close_video(self, video: str) -> None:
        _close_all(self._open.pop(video).values())

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for video in list(self._open):
            self._close_video(video)
        for video, paths in self.written.items():
            done, total = self._next_index.get(video, 0), self._videos[video].num_frames
            if done < total:
                warnings.warn(f"VideoWriterCallback: {video} has {done} of {total} frames", stacklevel=1)
            for output, path in paths.items():
                rank_zero_info(f"{output}: {path} ({done} frames)")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Finalize every open file so that it plays and holds every frame predicted so far."""
        for video in list(self._open):
            _close_all(self._open.pop(video).values(), reason=f"{type(exception).__name__} during predict")


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


def _find_videos(trainer: L.Trainer) -> list[VideoInfo]:
    """Video metadata from the datamodule's `videos`, else from the predict datasets' `videos`."""
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None and getattr(datamodule, "videos", None):
        return list(datamodule.videos)
    loaders = trainer.predict_dataloaders
    loaders = loaders if isinstance(loaders, Sequence) else [loaders]
    videos = [info for loader in loaders for info in getattr(loader.dataset, "videos", [])]
    if not videos:
        raise ValueError(
            "VideoWriterCallback needs video metadata (name, fps, size, frame count): use "
            "VideoMattingDataModule, or a predict dataset with a `videos` list of VideoInfo"
        )
    return videos
