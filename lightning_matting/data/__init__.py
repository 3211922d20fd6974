"""Data: readers, datasets, batch sampling, synthetic clips and the LightningDataModule (user files to batches).

The datamodule (and with it Lightning) is imported on first use of its name.
"""

from typing import Any

from .alignment import align_background, estimate_homography
from .batch import LiveFrameInfo, MattingBatch
from .datasets import (
    MattingVideoDataset,
    MultiVideoDataset,
    SyntheticMattingDataset,
    parse_colour,
    unique_names,
)
from .readers import (
    ImageSequenceReader,
    VideoInfo,
    VideoReader,
    natural_key,
    open_reader,
    read_image,
    to_fraction,
)
from .sampling import VideoBatchSampler, collate_frames
from .settings import HighResSettings, LiveSettings, SyntheticSettings, TrainingDataSettings
from .synthetic import ClipFiles, SyntheticClip, SyntheticScene, make_clip, save_clip

__all__ = [
    "ClipFiles",
    "HighResSettings",
    "ImageSequenceReader",
    "LiveFrameInfo",
    "LiveSettings",
    "MattingBatch",
    "MattingVideoDataset",
    "MultiVideoDataset",
    "SyntheticClip",
    "SyntheticMattingDataset",
    "SyntheticScene",
    "SyntheticSettings",
    "TrainingDataSettings",
    "VideoBatchSampler",
    "VideoInfo",
    "VideoMattingDataModule",
    "VideoReader",
    "align_background",
    "collate_frames",
    "estimate_homography",
    "make_clip",
    "natural_key",
    "open_reader",
    "parse_colour",
    "read_image",
    "save_clip",
    "split_seeds",
    "to_fraction",
    "unique_names",
]


def __getattr__(name: str) -> Any:
    if name in ("VideoMattingDataModule", "split_seeds"):
        from . import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'lightning_matting.data' has no attribute {name!r}")
