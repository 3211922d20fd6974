"""Variable frame rate, as phones record: every frame read (counted and sought by timestamp), and PyAV outputs
presented when the source's frames are, audio in sync, through segments, joins and a resume."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.data.readers import VideoReader
from lightning_matting.module import MattingModule
from lightning_matting.writers import AVWriter

av = pytest.importorskip("av")

WIDTH, HEIGHT = 64, 48
# The clip: 60 frames 1/30 s apart, then 30 frames 1/15 s apart (frame 60 at 2.0 s, the end at 4.0 s).
TIMES = tuple(Fraction(i, 30) if i <= 60 else Fraction(2) + Fraction(i - 60, 15) for i in range(90))
AUDIO_RATE = 48000


def distinct_frames(count: int) -> torch.Tensor:
    """uint8 [N,3,H,W], each frame its own grey level and a moving bar."""
    frames = (
        torch.arange(count, dtype=torch.uint8).mul(2).view(-1, 1, 1, 1).expand(-1, 3, HEIGHT, WIDTH).clone()
    )
    for i in range(count):
        frames[i, :, 10:20, (i % (WIDTH - 8)) : (i % (WIDTH - 8)) + 8] = 255
    return frames


def phone_clip(path: Path, pix_fmt: str = "yuv420p") -> Path:
    """H.264 in MP4 at the issue's variable timing, with 4 s of AAC audio (made with PyAV)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=30, options={"crf": "12"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, pix_fmt
        video.codec_context.time_base = video.time_base = Fraction(1, 90000)
        audio = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        for time, frame in zip(TIMES, distinct_frames(len(TIMES)), strict=True):
            picture = av.VideoFrame.from_ndarray(frame.permute(1, 2, 0).numpy(), format="rgb24")
            picture.pts, picture.time_base = int(time * 90000), Fraction(1, 90000)
            out.mux(video.encode(picture))
        out.mux(video.encode(None))
        tone = np.sin(np.arange(4 * AUDIO_RATE) * 2 * np.pi * 440 / AUDIO_RATE).astype(np.float32) * 0.1
        for start in range(0, len(tone), 1024):
            samples = av.AudioFrame.from_ndarray(
                tone[None, start : start + 1024], format="fltp", layout="mono"
            )
            samples.sample_rate, samples.pts = AUDIO_RATE, start
            out.mux(audio.encode(samples))
        out.mux(audio.encode(None))
    return path


def video_times(path: Path) -> tuple[list[Fraction], Fraction]:
    """The video stream's presentation times from its first frame, and its time base."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = sorted(packet.pts for packet in container.demux(stream) if packet.pts is not None)
        return [(value - pts[0]) * stream.time_base for value in pts], stream.time_base


def audio_span(path: Path) -> Fraction:
    """Seconds of audio from the first video frame on (the audio's end minus the video's start)."""
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        start = min(p.pts for p in container.demux(video) if p.pts is not None) * video.time_base
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        end = max((p.pts + p.duration) for p in container.demux(audio) if p.pts is not None) * audio.time_base
    return end - start


def read_all(path: Path) -> list[np.ndarray]:
    reader = VideoReader(path)
    return [reader.read_uint8(i).numpy() for i in range(len(reader))]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return phone_clip(tmp_path_factory.mktemp("vfr") / "phone.mp4")


def test_a_variable_rate_source_gives_every_frame_with_its_time_and_seeks_by_it(clip):
    check_variable_rate_reads(clip)


def test_a_10_bit_variable_rate_source_is_sought_by_time_too(tmp_path):
    clip = phone_clip(tmp_path / "deep.mp4", pix_fmt="yuv420p10le")
    assert VideoReader(clip).bit_depth == 16  # decoded by PyAV, not OpenCV
    check_variable_rate_reads(clip)


def check_variable_rate_reads(clip: Path) -> None:
    reader = VideoReader(clip)
    assert len(reader) == 90 and reader.info.variable_rate
    assert reader.info.frame_times == TIMES
    sequential = read_all(clip)
    for index in (89, 45, 75, 60, 0, 61):  # out of order: each a seek
        assert np.array_equal(reader.read_uint8(index).numpy(), sequential[index]), index


def test_an_avwriter_writes_given_frame_times_and_matroska_reads_back_every_frame(tmp_path):
    frames = distinct_frames(len(TIMES))
    path = tmp_path / "vfr.mkv"  # Matroska: OpenCV counted such a file by time, 76 of 90 frames
    with AVWriter(path, Fraction(90, 4), WIDTH, HEIGHT, codec="ffv1", frame_times=TIMES) as writer:
        writer.add_batch(frames)
    times, time_base = video_times(path)
    assert max(abs(got - want) for got, want in zip(times, TIMES, strict=True)) <= time_base
    decoded = read_all(path)
    assert len(decoded) == 90 and np.array_equal(decoded[-1], frames[-1].numpy())
    reader = VideoReader(path)
    for index in (80, 30, 89, 61):
        assert np.array_equal(reader.read_uint8(index).numpy(), frames[index].numpy()), index


class StopAt(L.Callback):
    """Fails the run (as a crash would) at the batch holding frame `frame`."""

    def __init__(self, frame: int | None):
        self.frame = frame

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.frame in batch.index.tolist():
            raise RuntimeError("stopped on purpose")


def predict(clip: Path, out: Path, stop_at: int | None = None, **writer_settings) -> None:
    writer = VideoWriterCallback(out, outputs=["pha", "com"], **writer_settings)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[writer, StopAt(stop_at)]
    )
    torch.manual_seed(0)  # the same untrained weights, so that a resume is allowed
    module = MattingModule("rvm-mobilenetv3", warmup_frames=4)
    trainer.predict(module, datamodule=VideoMattingDataModule(sources=[str(clip)], batch_size=8))


def assert_presented_as_the_source(path: Path) -> None:
    times, time_base = video_times(path)
    assert len(times) == 90
    assert max(abs(got - want) for got, want in zip(times, TIMES, strict=True)) <= time_base, path.name


@pytest.mark.parametrize(
    "settings",
    [
        {"codec": "h264", "audio": True, "segment_seconds": 0},  # one file, written as predicted
        {"codec": "ffv1", "audio": True, "segment_seconds": 1.0},  # segments joined, after a resume
    ],
    ids=["h264", "ffv1-segmented-resumed"],
)
def test_pyav_outputs_are_presented_when_the_source_frames_are_and_audio_stays_in_sync(
    clip, tmp_path, settings
):
    out = tmp_path / "out"
    if settings["segment_seconds"]:
        with pytest.raises(RuntimeError, match="stopped on purpose"):
            predict(clip, out, stop_at=50, **settings)
        predict(clip, out, resume=True, **settings)
    else:
        predict(clip, out, **settings)
    folder = out / "phone"
    for path in sorted(folder.iterdir()):
        assert_presented_as_the_source(path)
    com = next(folder.glob("com.*"))
    assert abs(audio_span(com) - 4) <= Fraction(1024, AUDIO_RATE)  # the video ends at 4.0 s too


def test_opencv_outputs_of_a_variable_rate_source_warn_once_with_the_drift(clip, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predict(clip, tmp_path / "out", segment_seconds=0, fourcc="mp4v")
    drift = [str(w.message) for w in caught if "variable-rate" in str(w.message)]
    assert drift and set(drift) == {
        "phone is variable-rate and OpenCV writes its videos at a constant 23.077 fps: their frames drift up "
        "to 0.600 s from the source's times; codec='h264' or 'ffv1' (PyAV) keeps each frame's timestamp"
    }


def test_repeated_timestamps_are_named_with_the_frames(tmp_path):
    path = tmp_path / "repeats.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=30)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "bgr0"
        for i, pts in enumerate([0, 1, 2, 2, 4, 6, 8, 10]):
            picture = av.VideoFrame.from_ndarray(
                distinct_frames(8)[i].permute(1, 2, 0).numpy(), format="rgb24"
            )
            picture.pts, picture.time_base = pts, Fraction(1, 30)
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    with pytest.raises(
        ValueError, match=r"repeats.mkv: frames 2 and 3 have the same timestamp \(0.067000 s\)"
    ):
        VideoReader(path)


@pytest.mark.parametrize(
    ("times", "match"),
    [
        (
            [Fraction(1, 30), Fraction(2, 30)],
            r"frame_times must start at 0 and increase .*got 0.0333\d* first",
        ),
        (
            [0, Fraction(1, 15), Fraction(1, 30)],
            r"frame_times must start at 0 and increase .*got frame 2 at 0.0333",
        ),
    ],
)
def test_bad_frame_times_are_named(tmp_path, times, match):
    with pytest.raises(ValueError, match=match):
        AVWriter(tmp_path / "bad.mkv", 30, WIDTH, HEIGHT, codec="ffv1", frame_times=times)
