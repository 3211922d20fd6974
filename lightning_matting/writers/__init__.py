"""Writers: tensor batches [B,C,H,W] in, files out (no Lightning import)."""

from .base import FrameWriter
from .images import ImageSequenceWriter
from .live_sink import LiveSink
from .opencv import VideoWriter
from .output_format import OutputFormat
from .pyav import AVWriter
from .threaded import EncoderError

__all__ = [
    "AVWriter",
    "EncoderError",
    "FrameWriter",
    "ImageSequenceWriter",
    "LiveSink",
    "OutputFormat",
    "VideoWriter",
]
