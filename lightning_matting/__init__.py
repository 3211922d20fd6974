"""Video matting (BackgroundMattingV2, RobustVideoMatting) through PyTorch Lightning, written to video.

The public API: the LightningModule, the writer callback, the datamodule, the writers and the models.
Names are imported on first use, so `import lightning_matting.writers` (or `.metadata`) stays free of
Lightning and torchmetrics.
"""

from __future__ import annotations

import os

# OpenCV reads this before its first EXR image; its builds with OpenEXR refuse EXR without it.
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("lightning-matting")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

_WHERE = {
    "MSE": "lightning_matting.metrics",
    "SAD": "lightning_matting.metrics",
    "ConnectivityError": "lightning_matting.metrics",
    "DtSSD": "lightning_matting.metrics",
    "GradientError": "lightning_matting.metrics",
    "VARIANTS": "lightning_matting.models",
    "load_model": "lightning_matting.models",
    "AVWriter": "lightning_matting.writers",
    "ImageSequenceWriter": "lightning_matting.writers",
    "VideoWriter": "lightning_matting.writers",
    "OutputFormat": "lightning_matting.writers",
    "VideoInfo": "lightning_matting.metadata",
    "to_fraction": "lightning_matting.metadata",
    "VideoReader": "lightning_matting.data.readers",
    "make_clip": "lightning_matting.data.synthetic",
    "MattingBatch": "lightning_matting.data.batch",
    "VideoMattingDataModule": "lightning_matting.data.datamodule",
    "LiveSettings": "lightning_matting.data.settings",
    "SyntheticSettings": "lightning_matting.data.settings",
    "TrainingDataSettings": "lightning_matting.data.settings",
    "HighResSettings": "lightning_matting.data.settings",
    "MattingModule": "lightning_matting.module",
    "RefineSettings": "lightning_matting.settings",
    "TrainingSettings": "lightning_matting.settings",
    "matte": "lightning_matting.matte_command",
    "VideoWriterCallback": "lightning_matting.callbacks.video_writer",
    "TrainingStages": "lightning_matting.callbacks.training_stages",
    "Stage": "lightning_matting.callbacks.training_stages",
    "PredictVideoSource": "lightning_matting.protocols",
    "PredictVideoModule": "lightning_matting.protocols",
    "PredictThreadsModule": "lightning_matting.protocols",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'lightning_matting' has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
