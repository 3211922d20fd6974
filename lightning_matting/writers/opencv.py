"""VideoWriter: cv2.VideoWriter (mp4v by default) with clear errors instead of OpenCV's silent ones."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from lightning_matting.metadata import to_fraction
from lightning_matting.validators import check_choice, invalid

from .base import FrameWriter
from .durable import check_storage


def make_parent(path: Path) -> None:
    """Create the parent folders of `path`, turning OS errors into one naming the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the folder for {path}: {error}") from error


class VideoWriter(FrameWriter):
    """Video file through OpenCV: `VideoWriter(path, frame_rate, width, height, fourcc="mp4v")`.

    Frames: [B,C,H,W], C=3 (RGB) or C=1 (grey: a grey stream with FFV1, whose colour stream is 4-channel
    bgra; three equal channels otherwise), float in [0,1] or uint8; the first batch fixes C.
    OpenCV's encoders crop odd sizes (65x47 is stored as 64x46); `odd_size="pad"` (default) pads by
    repeating the last column/row and warns, `odd_size="error"` refuses. `encoded_size` is what the
    file holds.

    Args:
        path: The video file; missing folders are created.
        frame_rate: Frames per second: a number (29.97 -> 30000/1001), a Fraction or "30000/1001".
        width: Frame width in pixels.
        height: Frame height in pixels.
        fourcc: OpenCV's 4-character codec: mp4v (.mp4), MJPG (.avi), FFV1 (.mkv, lossless).
        odd_size: "pad" or "error" for an odd width or height.
        queue_size: Batches that may wait for the encoder thread before `add_batch` blocks.

    Raises:
        TypeError: A rate or size of the wrong type.
        ValueError: A bad rate, size, fourcc or odd_size, or a writer OpenCV cannot open (naming the path).
    """

    def __init__(
        self,
        path: str | Path,
        frame_rate: float | Fraction,
        width: int,
        height: int,
        *,
        fourcc: str = "mp4v",
        odd_size: Literal["pad", "error"] = "pad",
        queue_size: int = 4,
    ):
        self.frame_rate = to_fraction(frame_rate, "frame_rate")
        if not isinstance(fourcc, str) or len(fourcc) != 4:
            raise ValueError(invalid("fourcc", fourcc, "a 4-character code such as 'mp4v', 'MJPG' or 'FFV1'"))
        check_choice("odd_size", odd_size, ("pad", "error"))
        self.fourcc = fourcc
        self.odd_size = odd_size
        self.grey = False  # a grey FFV1 stream, chosen at the first batch
        super().__init__(path, width, height, queue_size=queue_size)

    def _open(self) -> None:
        pad_w, pad_h = self.width % 2, self.height % 2
        if pad_w or pad_h:
            if self.odd_size == "error":
                raise ValueError(
                    f"width and height must be even for OpenCV video, got {self.width}x{self.height} "
                    f"(OpenCV would crop it); pass odd_size='pad' to pad to "
                    f"{self.width + pad_w}x{self.height + pad_h}"
                )
            warnings.warn(
                f"{self.path}: {self.width}x{self.height} is odd and OpenCV crops odd sizes; frames are "
                f"padded (last column/row repeated) to {self.width + pad_w}x{self.height + pad_h}",
                stacklevel=3,
            )
        self._pad = (pad_w, pad_h)
        self.encoded_size = (self.width + pad_w, self.height + pad_h)
        make_parent(self.path)
        self._writer = self._open_capture(colour=True)
        if not self._writer.isOpened():
            raise OSError(
                f"OpenCV could not open {self.path} for writing with fourcc {self.fourcc!r} "
                f"(check that the folder is writable, that the extension names a container OpenCV knows, "
                f"and that its FFmpeg has this encoder: 'mp4v', 'MJPG' and 'FFV1' work, 'avc1' does not)"
            )

    def _open_capture(self, colour: bool) -> cv2.VideoWriter:
        return cv2.VideoWriter(
            str(self.path),
            cv2.VideoWriter_fourcc(*self.fourcc),
            float(self.frame_rate),
            self.encoded_size,
            colour,
        )

    def add_batch(self, frames: torch.Tensor, hand_over: bool = False) -> None:
        """Queue a batch [B,C,H,W] (see `FrameWriter.add_batch`); a first grey batch makes an FFV1 stream grey."""
        if (
            self.frames_added == 0
            and self.fourcc == "FFV1"
            and isinstance(frames, torch.Tensor)
            and frames.dim() == 4
            and frames.shape[0] > 0
            and frames.shape[1] == 1
            and not self.grey
        ):
            self._writer.release()  # nothing written yet: the file starts again as a grey stream
            self._writer = self._open_capture(colour=False)
            self.grey = True
        elif self.grey and isinstance(frames, torch.Tensor) and frames.dim() == 4 and frames.shape[1] != 1:
            raise ValueError(
                f"frames must have C=1 like the first batch (a grey FFV1 stream), got C={frames.shape[1]}"
            )
        super().add_batch(frames, hand_over)

    def _write(self, first_index: int, frames: np.ndarray) -> None:
        pad_w, pad_h = self._pad
        for frame in frames:
            if frame.shape[2] == 1 and not self.grey:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            if pad_w or pad_h:
                frame = cv2.copyMakeBorder(frame, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
            self._writer.write(frame)
        check_storage(self.path)  # OpenCV drops frames it cannot write without a word

    def _finalize(self) -> None:
        self._writer.release()
        check_storage(self.path)
