"""VideoWriterCallback through PyAV: H.264 with exact fps, alpha composites, the source's audio."""

from __future__ import annotations

from fractions import Fraction

import cv2
import lightning as L
import numpy as np
import pytest
from test_predict import MeanMatte, counter_level, plate, write_counter_clip

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.module import MattingModule

av = pytest.importorskip("av", reason="PyAV (the [av] extra) is not installed")
from test_writers_pyav import audio_span, make_audio_source, read_av  # noqa: E402 - needs av


def run(tmp_path, sources, backgrounds, **callback_kwargs):
    dm = VideoMattingDataModule(sources=[str(s) for s in sources], backgrounds=backgrounds, batch_size=3)
    callback = VideoWriterCallback(tmp_path / "out", **callback_kwargs)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[callback])
    trainer.predict(MattingModule(MeanMatte()), datamodule=dm, return_predictions=False)
    return callback


def test_h264_output_keeps_count_size_and_the_exact_frame_rate(tmp_path):
    ntsc = Fraction(30000, 1001)
    source = write_counter_clip(tmp_path / "clip.mkv", 7, fps=ntsc)
    av_source = tmp_path / "ntsc.mkv"  # OpenCV stores 2997/100; PyAV keeps 30000/1001 for the reader
    frames, _ = read_av(source)
    with av.open(str(av_source), "w") as container:
        stream = container.add_stream("ffv1", rate=ntsc)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "bgr0"
        for i, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = i
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    callback = run(tmp_path, [av_source], [plate(tmp_path)], outputs=["com", "pha"], codec="h264")
    assert callback.written["ntsc"]["pha"].name == "pha.mp4"
    pha, info = read_av(callback.written["ntsc"]["pha"])
    assert (len(pha), info.width, info.height, info.average_rate) == (7, 64, 48, ntsc)
    decoded = [round((float(f.mean()) - counter_level(0)) / 10) for f in pha]
    assert decoded == list(range(7))


def test_alpha_composite_into_ffv1(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 4)
    callback = run(tmp_path, [source], [plate(tmp_path)], outputs=["com"], codec="ffv1", alpha=True)
    rgba, _ = read_av(callback.written["clip"]["com"], format="rgba")
    assert rgba.shape == (4, 48, 64, 4)
    for i, frame in enumerate(rgba):
        assert frame[0, 0].tolist() == [counter_level(i)] * 4  # fgr (straight) and alpha = the counter


def test_audio_of_the_source_goes_into_com_and_fgr(tmp_path):
    source = tmp_path / "talk.mp4"
    make_audio_source(source, seconds=1.0)
    background = tmp_path / "plate32.png"
    cv2.imwrite(str(background), np.zeros((32, 32, 3), np.uint8))
    callback = run(tmp_path, [source], [str(background)], outputs=["com", "pha"], codec="h264", audio=True)
    codec, start, end = audio_span(callback.written["talk"]["com"])
    assert codec == "aac" and start == pytest.approx(0, abs=0.03) and end == pytest.approx(1.0, abs=0.03)
    with av.open(str(callback.written["talk"]["pha"])) as container:
        assert not container.streams.audio


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"codec": "avc1"},
            r"codec must be one of h264, hevc, prores4444, vp9, ffv1 \(PyAV\), or None .* got 'avc1'",
        ),
        ({"alpha": True}, r"alpha video needs codec= one of prores4444, vp9, ffv1"),
        ({"alpha": True, "codec": "h264"}, r"alpha video needs codec= one of .* codec 'h264' carry no alpha"),
        ({"audio": True}, r"audio=True needs PyAV video output: give codec= one of h264"),
    ],
)
def test_format_arguments_are_checked(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        VideoWriterCallback(tmp_path, **kwargs)
