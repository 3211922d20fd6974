"""OpenEXR images (float32): OpenCV's codec where its build has one, else FFmpeg's exr encoder (PyAV).

`lightning_matting` sets `OPENCV_IO_ENABLE_OPENEXR=1` when it is imported (OpenCV builds with OpenEXR refuse
EXR without it); the opencv-python-headless 5 wheels have no OpenEXR at all, so there PyAV writes the files.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import cv2
import numpy as np

from .pyav import has_encoder

ExrEncoder = Callable[[np.ndarray], bytes]
# PyAV's planar float formats by channel count; from_ndarray takes [H,W,C] in RGB(A) order.
_PYAV_FORMATS = {1: "grayf32le", 3: "gbrpf32le", 4: "gbrapf32le"}


def exr_encoder() -> tuple[str, ExrEncoder]:
    """The channel order ("bgr" or "rgb") and the function that encodes one float32 frame [H,W,C] as EXR bytes.

    Raises:
        ValueError: Neither OpenCV nor PyAV can write EXR here, naming both fixes.
    """
    if cv2.haveImageWriter(".exr"):
        return "bgr", _opencv_exr
    try:
        import av
    except ImportError:
        av = None
    if av is not None and has_encoder(av, "exr"):
        return "rgb", _pyav_exr
    raise ValueError(
        "OpenEXR output needs an OpenCV build with OpenEXR (opencv-python-headless 5 has none; "
        "OPENCV_IO_ENABLE_OPENEXR=1 is set by lightning_matting) or PyAV with FFmpeg's exr encoder: "
        "pip install 'lightning-matting[av]'"
    )


def _opencv_exr(frame: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".exr", frame)
    if not ok:
        raise OSError("OpenCV could not encode an EXR image")
    return encoded.tobytes()


def _pyav_exr(frame: np.ndarray) -> bytes:
    """One float32 frame [H,W,C] (C = 1, 3 RGB or 4 RGBA) as a zip-compressed (lossless) EXR file."""
    import av

    height, width, channels = frame.shape
    context = av.CodecContext.create("exr", "w")
    context.width, context.height = width, height
    context.pix_fmt = _PYAV_FORMATS[channels]
    context.time_base = Fraction(1, 1)
    context.options = {"compression": "zip16"}
    context.open()
    image = av.VideoFrame.from_ndarray(
        np.ascontiguousarray(frame[..., 0] if channels == 1 else frame), format=context.pix_fmt
    )
    return b"".join(bytes(packet) for packet in [*context.encode(image), *context.encode(None)])
