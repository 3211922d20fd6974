"""Lightning callbacks: VideoWriterCallback writes predictions as video files; TrainingStages runs a training
schedule in stages."""

from .training_stages import Stage, TrainingStages
from .video_writer import VideoWriterCallback

__all__ = ["Stage", "TrainingStages", "VideoWriterCallback"]
