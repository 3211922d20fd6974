"""VideoWriterCallback through PyAV: H.264 with exact fps, alpha composites, the source's audio."""

from __future__ import annotations

from fractions import Fraction

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from test_predict import MeanMatte, counter_level, plate, write_counter_clip

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.metadata import VideoInfo
from lightning_matting.module import MattingModule
from lightning_matting.writers import OutputFormat
from lightning_matting.writers.chunks import finished_chunks, parts_folder

av = pytest.importorskip("av", reason="PyAV (the [av] extra) is not installed")
from test_writers_pyav import audio_span, make_audio_source, read_av  # noqa: E402 - needs av


def run(tmp_path, sources, backgrounds, net=None, **callback_kwargs):
    dm = VideoMattingDataModule(sources=[str(s) for s in sources], backgrounds=backgrounds, batch_size=3)
    callback = VideoWriterCallback(tmp_path / "out", **callback_kwargs)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[callback])
    trainer.predict(MattingModule(net or MeanMatte()), datamodule=dm, return_predictions=False)
    return callback


def talking_clip(tmp_path, seconds: float) -> tuple[str, str]:
    """A 25 fps 32x32 H.264 + AAC clip of `seconds`, and a matching plate."""
    source = tmp_path / "talk.mp4"
    make_audio_source(source, seconds=seconds)
    background = tmp_path / "plate32.png"
    cv2.imwrite(str(background), np.zeros((32, 32, 3), np.uint8))
    return str(source), str(background)


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


@pytest.mark.parametrize("segment_seconds", [0, 0.2])
def test_audio_of_the_source_goes_into_com_and_fgr(tmp_path, segment_seconds):
    source, background = talking_clip(tmp_path, seconds=1.0)
    callback = run(
        tmp_path,
        [source],
        [background],
        outputs=["com", "pha"],
        codec="h264",
        audio=True,
        segment_seconds=segment_seconds,
    )
    codec, start, end = audio_span(callback.written["talk"]["com"])
    assert codec == "aac" and start == pytest.approx(0, abs=0.03) and end == pytest.approx(1.0, abs=0.03)
    assert len(read_av(callback.written["talk"]["com"])[0]) == 25
    with av.open(str(callback.written["talk"]["pha"])) as container:
        assert not container.streams.audio
    assert not parts_folder(callback.written["talk"]["com"]).exists()


def test_segmented_audio_output_survives_a_failure_and_resumes_in_sync(tmp_path):
    source, background = talking_clip(tmp_path, seconds=2.0)  # 50 frames
    settings = {"outputs": ["com", "pha"], "codec": "h264", "audio": True, "segment_seconds": 0.2}
    with pytest.raises(RuntimeError, match="boom"):  # batches of 3: 15 frames, 3 segments of 5, then it fails
        run(tmp_path, [source], [background], net=MeanMatte(fail_at_call=6), **settings)
    com = tmp_path / "out" / "talk" / "com.mp4"
    assert len(read_av(com)[0]) == 15 and audio_span(com)[1:] == pytest.approx((0, 0.6), abs=0.03)
    chunks = finished_chunks(parts_folder(com), "mp4")
    assert [frames for frames, _ in chunks] == [range(0, 5), range(5, 10), range(10, 15)]
    with av.open(str(chunks[0][1])) as container:
        assert not container.streams.audio  # video only: the join adds the audio

    callback = run(tmp_path, [source], [background], resume=True, **settings)
    frames, _ = read_av(callback.written["talk"]["com"])
    assert len(frames) == 50 and audio_span(com) == pytest.approx(("aac", 0, 2.0), abs=0.03)
    assert not parts_folder(com).exists()


def test_chunks_of_a_distributed_run_are_joined_with_the_audio(tmp_path):
    source, _ = talking_clip(tmp_path, seconds=1.0)
    output_format = OutputFormat(codec="ffv1", audio=True, segment_seconds=0)
    info = VideoInfo("talk", Fraction(25), 32, 32, 25, source=source)
    path = output_format.path(tmp_path / "out", "talk", "com")
    frames = torch.rand(25, 3, 32, 32)
    for first, last in ((12, 25), (0, 12)):  # two ranks' chunks, written without audio
        with output_format.open(path, info, "com", first_frame=first, chunked=True) as writer:
            writer.add_batch(frames[first:last])
    output_format.join(path, info, "com")
    assert len(read_av(path)[0]) == 25 and audio_span(path)[1:] == pytest.approx((0, 1.0), abs=0.03)
