"""ImageSequenceWriter: numbered image files (00000.png, ...) written by a few threads."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from lightning_matting.validators import check_choice, check_int

from .base import FrameWriter
from .durable import check_storage
from .exr import exr_encoder
from .frames import samples_for_bits

EXTENSIONS = ("png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "exr")
ALPHA_EXTENSIONS = ("png", "tif", "tiff", "webp", "exr")
# Bits per sample each image type stores (first: the default): 16 unsigned integers, 32 float.
IMAGE_DEPTHS = {"png": (8, 16), "tif": (8, 16, 32), "tiff": (8, 16, 32), "exr": (32,)}


def check_image_depth(extension: str, bit_depth: object) -> int:
    """The bits per sample of `extension` images: `bit_depth`, or the type's default when None."""
    depths = IMAGE_DEPTHS.get(extension, (8,))
    if bit_depth is None:
        return depths[0]
    if bit_depth not in depths:
        raise ValueError(
            f"bit_depth {bit_depth!r} is not stored by {extension} images, which take "
            f"{' or '.join(map(str, depths))}; 16 needs png or tif, 32 (float) tif or exr"
        )
    return bit_depth


class ImageSequenceWriter(FrameWriter):
    """Frames as `<path>/<index:05d>.<extension>`, numbered from `start_index`.

    `width`/`height` default to the first batch's size; later batches must match it.
    Frames: [B,C,H,W], C=1 (grey), 3 (RGB) or 4 (RGBA, straight alpha; png/tif/webp/exr only), float in
    [0,1] or uint8. A file appears complete or not at all (written under a hidden name, then renamed). At most
    `queue_size` batches wait while `threads` batches are being encoded. `bit_depth`: 8 (uint8 files), 16
    (png, tif: uint16, value x 65535 rounded) or 32 (tif, exr: float32, value clamped to [0, 1]); exr is
    written by OpenCV where its build has OpenEXR, else by PyAV.

    Args:
        path: The folder of the images; created when missing.
        extension: The image type: png, jpg, jpeg, bmp, tif, tiff, webp or exr.
        bit_depth: Bits per sample: 8, 16 or 32 (see above); None: 8, or 32 for exr.
        width: Frame width in pixels; None: the first batch's.
        height: Frame height in pixels; None: the first batch's.
        start_index: The number of the first image.
        threads: Images encoded at once.
        queue_size: Batches that may wait before `add_batch` blocks.

    Raises:
        TypeError: A size or start_index of the wrong type.
        ValueError: A bad extension, bit_depth or start_index, or exr with no encoder for it.
    """

    channels = (1, 3, 4)

    def __init__(
        self,
        path: str | Path,
        extension: str = "png",
        *,
        bit_depth: int | None = None,
        width: int | None = None,
        height: int | None = None,
        start_index: int = 0,
        threads: int = 2,
        queue_size: int = 4,
    ):
        extension = extension.lower().lstrip(".") if isinstance(extension, str) else extension
        check_choice("extension", extension, EXTENSIONS)
        check_int("start_index", start_index, minimum=0)
        self.extension = extension
        self.bit_depth = check_image_depth(extension, bit_depth)
        self.samples = samples_for_bits(self.bit_depth)
        self.start_index = start_index
        self._encode = self._opencv_encode
        if extension == "exr":
            self.channel_order, self._encode = exr_encoder()
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
            encoded = self._encode(frame)
            temporary = path.with_name(f".writing-{path.name}")
            try:
                temporary.write_bytes(encoded)
                os.replace(temporary, path)
            except OSError as error:
                temporary.unlink(missing_ok=True)
                check_storage(path, error)
                raise OSError(f"OpenCV could not write {path}") from error

    def _opencv_encode(self, frame: np.ndarray) -> bytes:
        """One frame [H,W,C] (BGR(A), of `samples`) as the bytes of an image file of `extension`."""
        ok, encoded = cv2.imencode(f".{self.extension}", frame)
        if not ok:
            raise OSError(f"OpenCV could not encode a {self.extension} image")
        return encoded.tobytes()

    def _finalize(self) -> None:
        """Image files are complete once written: nothing to finish."""
