"""VideoReader / ImageSequenceReader: exact frames and metadata, honest frame counts, clear errors."""

from __future__ import annotations

import pickle
import re
import struct
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lightning_matting.data import (
    ImageSequenceReader,
    VideoInfo,
    VideoReader,
    natural_key,
    open_reader,
    read_image,
    to_fraction,
)
from lightning_matting.data.readers import frame_to_float, frame_to_uint8, read_image_uint8
from lightning_matting.writers import VideoWriter


def random_frames(count: int, width: int = 64, height: int = 48, seed: int = 0) -> torch.Tensor:
    """uint8 RGB frames [T,3,H,W]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, height, width), dtype=torch.uint8, generator=generator)


def write_lossless(path: Path, frames: torch.Tensor, fps: float | Fraction = 25) -> Path:
    """FFV1 through the project's VideoWriter: decodes back bit-exact."""
    _, _, height, width = frames.shape
    with VideoWriter(path, fps, width, height, fourcc="FFV1") as writer:
        writer.add_batch(frames)
    return path


def patch_avi_frame_count(path: Path, count: int) -> None:
    """Rewrite the frame count in an AVI's main header (avih.dwTotalFrames) and stream header (strh.dwLength)."""
    data = bytearray(path.read_bytes())
    avih, strh = data.find(b"avih"), data.find(b"strh")
    struct.pack_into("<I", data, avih + 8 + 16, count)
    struct.pack_into("<I", data, strh + 8 + 32, count)
    path.write_bytes(bytes(data))


def as_uint8(frame: torch.Tensor) -> torch.Tensor:
    return frame.mul(255).round().to(torch.uint8)


class CountingCapture:
    """cv2.VideoCapture wrapper that counts seeks and can hide the header's frame count."""

    seeks = 0
    hide_frame_count = False

    def __init__(self, *args):
        self._capture = _REAL_CAPTURE(*args)

    def set(self, prop, value):
        if prop == cv2.CAP_PROP_POS_FRAMES:
            CountingCapture.seeks += 1
        return self._capture.set(prop, value)

    def get(self, prop):
        if prop == cv2.CAP_PROP_FRAME_COUNT and CountingCapture.hide_frame_count:
            return 0.0
        return self._capture.get(prop)

    def __getattr__(self, name):
        return getattr(self._capture, name)


_REAL_CAPTURE = cv2.VideoCapture


@pytest.fixture
def counting_capture(monkeypatch):
    CountingCapture.seeks = 0
    CountingCapture.hide_frame_count = False
    monkeypatch.setattr(cv2, "VideoCapture", CountingCapture)
    return CountingCapture


def test_video_reads_back_exactly_what_was_written(tmp_path):
    frames = random_frames(12)
    reader = VideoReader(write_lossless(tmp_path / "clip.mkv", frames))
    assert reader.info == VideoInfo("clip", Fraction(25), 64, 48, 12)
    assert len(reader) == 12
    read = list(reader)
    assert len(read) == 12
    assert all(f.dtype == torch.float32 and f.shape == (3, 48, 64) for f in read)
    assert torch.equal(torch.stack([as_uint8(f) for f in read]), frames)
    assert float(read[0].min()) >= 0 and float(read[0].max()) <= 1


def test_video_read_uint8_is_the_decoded_frame_and_the_float_frame_times_255(tmp_path):
    frames = random_frames(6)
    reader = VideoReader(write_lossless(tmp_path / "clip.mkv", frames))
    for index in [0, 1, 5, 2]:  # sequential, a jump ahead, a seek back
        frame = reader.read_uint8(index)
        assert frame.dtype == torch.uint8 and frame.shape == (3, 48, 64) and frame.is_contiguous()
        assert torch.equal(frame, frames[index])
        assert torch.equal(frame.float(), reader[index] * 255)  # exact: k / 255 * 255 == k in float32
    with pytest.raises(IndexError, match="frame 6 out of range for .*clip.mkv with 6 frames"):
        reader.read_uint8(6)


def test_image_sequence_read_uint8_is_the_decoded_image_and_the_float_frame_times_255(tmp_path):
    frames = random_frames(3, width=8, height=6)
    for index, frame in enumerate(frames):  # RGB -> BGR for OpenCV
        cv2.imwrite(str(tmp_path / f"{index}.png"), frame.flip(0).permute(1, 2, 0).numpy())
    reader = ImageSequenceReader(tmp_path)
    for index in range(3):
        assert reader.read_uint8(index).dtype == torch.uint8
        assert torch.equal(reader.read_uint8(index), frames[index])
        assert torch.equal(reader.read_uint8(index).float(), reader[index] * 255)
    assert torch.equal(read_image_uint8(tmp_path / "1.png"), frames[1])
    assert torch.equal(read_image(tmp_path / "1.png"), frame_to_float(frames[1]))
    with pytest.raises(IndexError, match="frame 3 out of range for .* with 3 images"):
        reader.read_uint8(3)


def test_frame_conversions_round_trip_every_level_and_round_to_nearest():
    levels = torch.arange(256, dtype=torch.uint8)
    as_float = frame_to_float(levels)
    assert as_float.dtype == torch.float32 and float(as_float[0]) == 0 and float(as_float[-1]) == 1
    assert torch.equal(frame_to_uint8(as_float), levels)
    values = torch.tensor([-0.5, 0.3 / 255, 0.6 / 255, 254.4 / 255, 2.0])
    assert frame_to_uint8(values).tolist() == [0, 0, 1, 254, 255]
    with pytest.raises(
        ValueError,
        match=r"frame must be a uint8 \(0-255\) or uint16 \(0-65535\) tensor, got dtype torch.float32",
    ):
        frame_to_float(as_float)


def test_ntsc_frame_rate_is_an_exact_fraction(tmp_path):
    av = pytest.importorskip("av")
    frames = random_frames(5)
    path = tmp_path / "ntsc.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=Fraction(30000, 1001))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "bgr0"
        for frame in frames:
            image = av.VideoFrame.from_ndarray(frame.permute(1, 2, 0).numpy(), format="rgb24")
            container.mux(stream.encode(image))
        container.mux(stream.encode())
    reader = VideoReader(path, name="ntsc")
    assert reader.info.fps == Fraction(30000, 1001)
    assert torch.equal(torch.stack([as_uint8(f) for f in reader]), frames)


def test_random_access_matches_sequential_reading(tmp_path):
    reader = VideoReader(write_lossless(tmp_path / "clip.mkv", random_frames(30)))
    sequential = list(reader)
    for index in [29, 0, 5, 4, 17, 29, 3]:
        assert torch.equal(reader[index], sequential[index]), index


def test_sequential_reads_keep_the_position_instead_of_seeking(tmp_path, counting_capture):
    path = write_lossless(tmp_path / "clip.mkv", random_frames(20))
    reader = VideoReader(path)
    counting_capture.seeks = 0
    list(reader)
    assert counting_capture.seeks == 0
    reader[3]
    assert counting_capture.seeks == 1  # backwards: one seek
    reader[10]
    assert counting_capture.seeks == 1  # a little ahead: decodes forward


def test_header_that_overcounts_reads_to_the_last_frame(tmp_path):
    frames = random_frames(20)
    path = write_lossless(tmp_path / "overcount.avi", frames)
    patch_avi_frame_count(path, 30)
    assert _REAL_CAPTURE(str(path)).get(cv2.CAP_PROP_FRAME_COUNT) == 30  # the header really lies
    reader = VideoReader(path)
    assert len(reader) == 20
    assert torch.equal(torch.stack([as_uint8(f) for f in reader]), frames)
    with pytest.raises(IndexError):
        reader[20]


def test_header_that_undercounts_reads_on_to_the_end(tmp_path):
    frames = random_frames(20)
    path = write_lossless(tmp_path / "undercount.avi", frames)
    patch_avi_frame_count(path, 15)
    reader = VideoReader(path)
    assert len(reader) == 20
    assert torch.equal(as_uint8(reader[19]), frames[19])


def test_truncated_file_ends_cleanly_at_its_last_decodable_frame(tmp_path):
    frames = random_frames(40)
    path = write_lossless(tmp_path / "truncated.mkv", frames)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    reader = VideoReader(path)
    assert 5 < len(reader) < 40
    read = list(reader)  # no error at the end
    assert len(read) == len(reader)
    assert torch.equal(as_uint8(read[0]), frames[0])


def test_header_without_count_falls_back_to_counting(tmp_path, counting_capture):
    path = write_lossless(tmp_path / "clip.mkv", random_frames(9))
    counting_capture.hide_frame_count = True
    assert len(VideoReader(path)) == 9


def test_reader_pickles_without_its_decoder(tmp_path):
    frames = random_frames(6)
    reader = VideoReader(write_lossless(tmp_path / "clip.mkv", frames))
    reader[2]
    copy = pickle.loads(pickle.dumps(reader))
    assert copy.info == reader.info
    assert torch.equal(as_uint8(copy[4]), frames[4])
    reader.close()
    assert torch.equal(as_uint8(reader[1]), frames[1])  # reopens after close


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, FileNotFoundError, "video file not found: .*missing.mp4"),
        (b"", ValueError, "video file is empty .*bad.mp4"),
        (b"this is not a video" * 50, ValueError, "cannot decode video file .*bad.mp4"),
    ],
)
def test_bad_video_files_raise_naming_the_path(tmp_path, content, error, message):
    path = tmp_path / ("missing.mp4" if content is None else "bad.mp4")
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=message):
        VideoReader(path)


def test_a_file_without_a_video_stream_is_named_as_such(tmp_path):
    av = pytest.importorskip("av", reason="PyAV tells the streams apart")
    path = tmp_path / "talk.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000, layout="stereo")
        for k in range(5):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((2, 1024), np.float32), format="fltp", layout="stereo"
            )
            frame.sample_rate, frame.pts = 48000, k * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(
        ValueError,
        match=r"cannot decode video file .*talk\.m4a: it has no video stream \(its streams: audio\)",
    ):
        VideoReader(path)


def test_video_reader_rejects_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match="expected a video file, got a folder"):
        VideoReader(tmp_path)


def write_png(path: Path, value: int, width: int = 8, height: int = 6) -> None:
    cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))


def test_image_sequence_is_read_in_natural_order(tmp_path):
    for number in [10, 2, 1, 33, 9]:
        write_png(tmp_path / f"frame{number}.png", number)
    (tmp_path / "notes.txt").write_text("ignored")
    reader = ImageSequenceReader(tmp_path)
    assert reader.info == VideoInfo(tmp_path.name, Fraction(30), 8, 6, 5)
    values = [round(float(frame[0, 0, 0]) * 255) for frame in reader]
    assert values == [1, 2, 9, 10, 33]


def test_image_sequence_fps_and_name(tmp_path):
    write_png(tmp_path / "0.png", 0)
    reader = ImageSequenceReader(tmp_path, fps="30000/1001", name="shot")
    assert (reader.info.fps, reader.info.name) == (Fraction(30000, 1001), "shot")
    assert ImageSequenceReader(tmp_path, fps=24).info.fps == 24


def test_natural_key_orders_numbers_by_value():
    names = ["img10.png", "img2.png", "IMG1.png", "img2b.png", "a.png"]
    assert sorted(names, key=natural_key) == ["a.png", "IMG1.png", "img2.png", "img2b.png", "img10.png"]


def test_image_sequence_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found: .*nowhere"):
        ImageSequenceReader(tmp_path / "nowhere")
    write_png(tmp_path / "one.png", 0)
    with pytest.raises(NotADirectoryError, match="expected a folder of images, got a file: .*one.png"):
        ImageSequenceReader(tmp_path / "one.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="image folder .*empty holds no images"):
        ImageSequenceReader(empty)


def test_image_sequence_frame_of_another_size(tmp_path):  # damaged images: test_truncated_sources.py
    write_png(tmp_path / "0.png", 0)
    write_png(tmp_path / "1.png", 0, width=9)
    reader = ImageSequenceReader(tmp_path)
    with pytest.raises(ValueError, match=r"1.png is 9x6 but the sequence is 8x6"):
        reader[1]


def test_read_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image file not found"):
        read_image(tmp_path / "plate.png")
    (tmp_path / "plate.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot decode image file .*plate.png"):
        read_image_uint8(tmp_path / "plate.png")


def test_open_reader_picks_the_reader_by_path(tmp_path):
    write_png(tmp_path / "0.png", 0)
    assert isinstance(open_reader(tmp_path, fps=12), ImageSequenceReader)
    video = write_lossless(tmp_path.parent / "v.mkv", random_frames(2))
    assert isinstance(open_reader(video), VideoReader)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (30000 / 1001, Fraction(30000, 1001)),
        (24000 / 1001, Fraction(24000, 1001)),
        (29.97, Fraction(30000, 1001)),  # one converter for readers and writers: 29.97 means NTSC
        ("29.97", Fraction(30000, 1001)),
        ("30000/1001", Fraction(30000, 1001)),
        (Fraction(2997, 100), Fraction(2997, 100)),  # a fraction is kept exactly
        (25.0, Fraction(25)),
        (60, Fraction(60)),
        ("25", Fraction(25)),
        (Fraction(90000, 3001), Fraction(90000, 3001)),
        (90000 / 3001, Fraction(90000, 3001)),
    ],
)
def test_to_fraction_recovers_exact_rates(value, expected):
    assert to_fraction(value) == expected
    assert float(to_fraction(value)) == pytest.approx(
        float(Fraction(value) if isinstance(value, str) else value), rel=1e-4
    )


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-25, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("fast", ValueError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_to_fraction_rejects_bad_rates(value, error):
    message = (
        rf"^invalid fps \({re.escape(repr(value))}\): expected a number > 0 or a fraction like '30000/1001'"
    )
    with pytest.raises(error, match=message):
        to_fraction(value)
