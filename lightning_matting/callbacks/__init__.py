"""Lightning callbacks: VideoWriterCallback writes predictions as video files; LiveStreamCallback streams them
live; TrainingStages runs a training schedule in stages."""

from .live_stream import LiveStreamCallback
from .training_stages import Stage, TrainingStages
from .video_writer import VideoWriterCallback

__all__ = ["LiveStreamCallback", "Stage", "TrainingStages", "VideoWriterCallback"]
