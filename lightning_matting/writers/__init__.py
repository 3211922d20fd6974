"""Writers: tensor batches [B,C,H,W] in, files out (no Lightning import)."""

from .base import FrameWriter
from .images import ImageSequenceWriter
from .opencv import VideoWriter
from .threaded import EncoderError

__all__ = ["EncoderError", "FrameWriter", "ImageSequenceWriter", "VideoWriter"]
