"""ImageSequenceWriter: numbered image files (00000.png, ...) written by a few threads."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from .base import FrameWriter
from .durable import check_storage

EXTENSIONS = ("png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp")
ALPHA_EXTENSIONS = ("png", "tif", "tiff", "webp")


class ImageSequenceWriter(FrameWriter):
    """Frames as `<path>/<index:05d>.<extension>`, numbered from `start_index`.

    `width`/`height` default to the first batch's size; later batches must match it.
    Frames: [B,C,H,W], C=1 (grey), 3 (RGB) or 4 (RGBA, straight alpha; png/tif/webp only), float in
    [0,1] or uint8. A file appears complete or not at all (written under a hidden name, then renamed). At most `queue_size` batches wait while `threads` batches are being encoded.

    Args:
        path: The folder of the images; created when missing.
        extension: The image type: png, jpg, jpeg, bmp, tif, tiff or webp.
        width: Frame width in pixels; None: the first batch's.
        height: Frame height in pixels; None: the first batch's.
        start_index: The number of the first image.
        threads: Images encoded at once.
        queue_size: Batches that may wait before `add_batch` blocks.

    Raises:
        ValueError: A bad extension or start_index.
    """

    channels = (1, 3, 4)

    def __init__(
        self,
        path: str | Path,
        extension: str = "png",
        *,
        width: int | None = None,
        height: int | None = None,
        start_index: int = 0,
        threads: int = 2,
        queue_size: int = 4,
    ):
        extension = extension.lower().lstrip(".") if isinstance(extension, str) else extension
        if extension not in EXTENSIONS:
            raise ValueError(f"extension must be one of {', '.join(EXTENSIONS)}, got {extension!r}")
        if isinstance(start_index, bool) or not isinstance(start_index, int) or start_index < 0:
            raise ValueError(f"start_index must be a non-negative int, got {start_index!r}")
        self.extension = extension
        self.start_index = start_index
        super().__init__(path, width, height, threads=threads, queue_size=queue_size)

    def _open(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OSError(f"cannot create the image-sequence folder {self.path}: {error}") from error

    def add_batch(self, frames: torch.Tensor, hand_over: bool = False) -> None:
        """Queue a batch [B,C,H,W]; C=4 needs an extension with alpha."""
        if (
            isinstance(frames, torch.Tensor)
            and frames.dim() == 4
            and frames.shape[1] == 4
            and self.extension not in ALPHA_EXTENSIONS
        ):
            raise ValueError(
                f"frames with 4 channels (RGBA) need an extension with alpha ({', '.join(ALPHA_EXTENSIONS)}), "
                f"got {self.extension!r}"
            )
        super().add_batch(frames, hand_over)

    def frame_path(self, index: int) -> Path:
        """The file of the `index`-th added frame."""
        return self.path / f"{self.start_index + index:05d}.{self.extension}"

    def _write(self, first_index: int, frames: np.ndarray) -> None:
        """Each file is written under a hidden name and renamed: a killed process leaves no partial image."""
        for offset, frame in enumerate(frames):
            path = self.frame_path(first_index + offset)
            ok, encoded = cv2.imencode(f".{self.extension}", frame)
            if not ok:
                raise OSError(f"OpenCV could not encode {path}")
            temporary = path.with_name(f".writing-{path.name}")
            try:
                temporary.write_bytes(encoded.tobytes())
                os.replace(temporary, path)
            except OSError as error:
                temporary.unlink(missing_ok=True)
                check_storage(path, error)
                raise OSError(f"OpenCV could not write {path}") from error

    def _finalize(self) -> None:
        """Image files are complete once written: nothing to finish."""
