"""Video matting (BackgroundMattingV2, RobustVideoMatting) through PyTorch Lightning, written to video.

The public API: the LightningModule, the writer callback, the datamodule, the writers and the models.
"""

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoInfo, VideoMattingDataModule, VideoReader, make_clip
from lightning_matting.metrics import MSE, SAD, ConnectivityError, DtSSD, GradientError
from lightning_matting.models import VARIANTS, load_model
from lightning_matting.module import MattingModule
from lightning_matting.writers import AVWriter, ImageSequenceWriter, VideoWriter

__all__ = [
    "MSE",
    "SAD",
    "VARIANTS",
    "AVWriter",
    "ConnectivityError",
    "DtSSD",
    "GradientError",
    "ImageSequenceWriter",
    "MattingModule",
    "VideoInfo",
    "VideoMattingDataModule",
    "VideoReader",
    "VideoWriter",
    "VideoWriterCallback",
    "load_model",
    "make_clip",
]
