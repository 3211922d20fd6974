"""Phone footage with a rotation in its display matrix is read upright, its plate is checked upright, and its
outputs are upright."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
from conftest import read_video

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.data.readers import VideoReader
from lightning_matting.module import MattingModule

av = pytest.importorskip("av")

STORED = (64, 48)  # width, height as encoded; shown rotated by 90 degrees: 48x64


def rotated_clip(path: Path, frames: int = 6, pix_fmt: str = "yuv420p") -> Path:
    """H.264 in MP4, stored 64x48 with a white block top-left, its track matrix set to a 90-degree rotation
    (the MP4 `tkhd` matrix, from which FFmpeg makes the display matrix, as a phone held upright writes it)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = *STORED, pix_fmt
        for i in range(frames):
            image = np.full((STORED[1], STORED[0], 3), 40, np.uint8)
            image[:8, :16] = 255
            picture = av.VideoFrame.from_ndarray(image, format="rgb24")
            picture.pts, picture.time_base = i, Fraction(1, 30)
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd")
    # version/flags, times and track id (20 bytes, version 0), reserved 8, layer, group, volume, reserved
    matrix = box + 4 + 4 + 20 + 8 + 8
    assert struct.unpack(">9i", data[matrix : matrix + 36]) == (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv420p10le"])  # OpenCV's path, PyAV's 16-bit path
def test_a_rotated_source_is_read_upright(tmp_path, pix_fmt):
    reader = VideoReader(rotated_clip(tmp_path / "phone.mp4", pix_fmt=pix_fmt))
    assert (reader.info.width, reader.info.height) == (48, 64)
    assert reader.bit_depth == (16 if pix_fmt.endswith("10le") else 8)
    frame = reader.read_uint8(0).numpy()[0]  # red plane [64, 48]
    assert frame[:16, -8:].min() > 200 and frame[-16:, :8].max() < 100  # the block turned to the top right


def test_the_plate_is_checked_and_the_outputs_written_upright(tmp_path):
    source = rotated_clip(tmp_path / "phone.mp4")
    upright, sideways = tmp_path / "upright.png", tmp_path / "sideways.png"
    cv2.imwrite(str(upright), np.full((64, 48, 3), 40, np.uint8))
    cv2.imwrite(str(sideways), np.full((48, 64, 3), 40, np.uint8))
    with pytest.raises(
        ValueError, match=r"background .*sideways.png is 64x48 .* but source 'phone' is 48x64"
    ):
        VideoMattingDataModule(sources=[str(source)], backgrounds=[str(sideways)]).setup("predict")
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[str(upright)], batch_size=3)
    writer = VideoWriterCallback(tmp_path / "out", outputs=["pha"])
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[writer])
    module = MattingModule("mattingbase-mobilenetv2", checkpoint=None)
    with pytest.warns(UserWarning, match="untrained weights"):
        trainer.predict(module, datamodule=dm, return_predictions=False)
    frames, _, width, height = read_video(tmp_path / "out" / "phone" / "pha.mp4")
    assert (len(frames), width, height) == (6, 48, 64)
