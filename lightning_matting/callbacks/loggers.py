"""Validation videos handed to the run's loggers, each as it shows video best.

W&B (`log_video`) and MLflow (artifacts) show videos in a browser `<video>` element, which plays H.264 or VP9
but not OpenCV's mp4v: `browser_codec()` picks H.264 (VP9 for RGBA) when PyAV can encode it. TensorBoard gets
an animated GIF image summary (its image dashboard plays it), made with OpenCV, without moviepy. Image
sequences go to MLflow as a folder of images and to TensorBoard as the GIF; W&B, which logs video files, gets
none of them (a warning says so once).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from torch import Tensor

from lightning_matting.data.readers import frame_to_uint8
from lightning_matting.full_scale import FULL_SCALE
from lightning_matting.writers.output_format import Codec

PREVIEW_FRAMES = 64  # frames of a TensorBoard GIF
PREVIEW_WIDTH = 480  # at most this many pixels wide


@functools.cache
def browser_codec(alpha: bool = False) -> str | None:
    """The PyAV codec of validation videos that browsers play: "vp9" for RGBA frames (`alpha`), else "h264";
    None when PyAV lacks its encoder or is missing (OpenCV's mp4v, which browsers do not play)."""
    try:
        from lightning_matting.writers.pyav import available_codecs

        codec = "vp9" if alpha else "h264"
        return codec if codec in available_codecs() else None
    except ImportError:
        return None


def shows_in_browser(logger: object) -> bool:
    """Whether the logger shows video files in a browser (W&B, MLflow)."""
    return isinstance(logger, WandbLogger | MLFlowLogger)


def warn_unplayable_once(trainer: L.Trainer, codec: str | None) -> None:
    """Warn once when a browser-based logger would get files it cannot play (mp4v, hevc, prores4444, ffv1)."""
    browser = [type(logger).__name__ for logger in trainer.loggers if shows_in_browser(logger)]
    if browser and codec is None:
        warn_once(
            f"VideoWriterCallback: {', '.join(browser)} show videos in a browser, which cannot play OpenCV's "
            "mp4v; install PyAV (pip install 'lightning-matting[av]') for H.264 validation videos, or pass "
            "codec='h264' or 'vp9'"
        )
    elif browser and codec not in ("h264", "vp9"):
        warn_once(
            f"VideoWriterCallback: {', '.join(browser)} show videos in a browser, which cannot play codec "
            f"{codec!r}; pass codec='h264' or 'vp9' (or leave codec unset) for validation videos they play"
        )


@functools.cache
def warn_once(message: str) -> None:
    """Warn with `message` once per process."""
    warnings.warn(message, stacklevel=3)


def metrics_step(trainer: L.Trainer) -> int:
    """The step at which Lightning logs this validation's metrics (its logger connector's own counter)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


class Previews:
    """The first PREVIEW_FRAMES frames of each validation file, small, as uint8 RGB [H,W,3] arrays."""

    def __init__(self) -> None:
        self.frames: dict[str, list[np.ndarray]] = {}

    def add(self, key: str, frames: Tensor) -> None:
        """Keep frames [N,C,H,W] (float in [0,1] or uint8) of the file `key` while there is room."""
        kept = self.frames.setdefault(key, [])
        room = PREVIEW_FRAMES - len(kept)
        if room <= 0:
            return
        batch = frames[:room].detach()
        batch = batch.float().div(FULL_SCALE[torch.uint8]) if batch.dtype == torch.uint8 else batch.float()
        batch = batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch[:, :3]
        if batch.shape[-1] > PREVIEW_WIDTH:
            height = max(1, round(batch.shape[-2] * PREVIEW_WIDTH / batch.shape[-1]))
            batch = torch.nn.functional.interpolate(batch, size=(height, PREVIEW_WIDTH), mode="area")
        batch = frame_to_uint8(batch.nan_to_num(0)).permute(0, 2, 3, 1).cpu()
        kept.extend(batch.numpy())


def animated_gif(frames: list[np.ndarray], fps: float) -> bytes:
    """Frames (uint8 RGB [H,W,3]) as an animated GIF that loops, shown at `fps` frames/s."""
    animation = cv2.Animation()
    animation.frames = [cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) for frame in frames]
    animation.durations = [max(10, round(1000 / fps))] * len(frames)
    animation.loop_count = 0
    ok, encoded = cv2.imencodeanimation(".gif", animation)
    if not ok:
        raise RuntimeError("OpenCV could not encode an animated GIF")
    return encoded.tobytes()


def hand_to_loggers(
    trainer: L.Trainer, key: str, artifact_folder: str, path: Path, preview: list[np.ndarray], fps: float
) -> None:
    """Give one finished validation file to every logger that can show it; a missing package only warns.

    Args:
        trainer: The trainer whose loggers get the file.
        key: The name it is logged under ("val/<video>/<output>"), at the step of this validation's metrics.
        artifact_folder: Where MLflow keeps it among the run's artifacts (one folder per validation).
        path: The video file, or the folder of an image sequence.
        preview: Its first frames for TensorBoard (see `Previews`).
        fps: Its frame rate, for the GIF.
    """
    step = metrics_step(trainer)
    for logger in trainer.loggers:
        try:
            if isinstance(logger, WandbLogger) and path.is_dir():
                warn_once(
                    "VideoWriterCallback: WandbLogger logs video files, so validation image sequences stay in "
                    "the output folder only; pass format='video' to see validation videos in W&B"
                )
            elif isinstance(logger, WandbLogger):
                logger.log_video(key, [str(path)], step=step)
            elif isinstance(logger, MLFlowLogger) and path.is_dir():
                logger.experiment.log_artifacts(
                    logger.run_id, str(path), artifact_path=f"{artifact_folder}/{path.name}"
                )
            elif isinstance(logger, MLFlowLogger):
                logger.experiment.log_artifact(logger.run_id, str(path), artifact_path=artifact_folder)
            elif isinstance(logger, TensorBoardLogger) and preview:
                _tensorboard_gif(logger, key, preview, fps, step)
        except ImportError as error:
            warnings.warn(
                f"VideoWriterCallback: {type(logger).__name__} cannot log {path}: {error}", stacklevel=2
            )


def _tensorboard_gif(
    logger: TensorBoardLogger, tag: str, frames: list[np.ndarray], fps: float, step: int
) -> None:
    """An image summary whose encoded image is an animated GIF (what torch's add_video writes, via moviepy)."""
    experiment = logger.experiment
    if type(experiment).__module__.startswith("tensorboardX"):
        from tensorboardX.proto.summary_pb2 import Summary
    else:
        from tensorboard.compat.proto.summary_pb2 import Summary
    height, width = frames[0].shape[:2]
    image = Summary.Image(
        height=height, width=width, colorspace=3, encoded_image_string=animated_gif(frames, fps)
    )
    # SummaryWriter (torch and tensorboardX) has no public call for a prebuilt summary; add_image does this.
    experiment._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


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
