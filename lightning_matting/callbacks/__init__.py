"""Lightning callbacks: VideoWriterCallback writes predictions as video files."""

from .video_writer import VideoWriterCallback

__all__ = ["VideoWriterCallback"]
