"""AVWriter (PyAV): every preset round-trips count, size, exact fps and pixels; alpha; audio; clear errors."""

from __future__ import annotations

import errno
import gc
import os
import sys
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import BAD_VIDEO_WRITER_SETTINGS, psnr, smooth_clip

av = pytest.importorskip("av", reason="AVWriter needs PyAV (pip install 'lightning-matting[av]')")

from lightning_matting.writers import pyav as pyav_module  # noqa: E402
from lightning_matting.writers.durable import StorageError  # noqa: E402
from lightning_matting.writers.pyav import AVWriter, Preset, available_codecs  # noqa: E402

LOSSY = {"h264": "mp4", "hevc": "mp4", "prores4444": "mov", "vp9": "webm"}
ALPHA = {"prores4444": "mov", "vp9": "webm", "ffv1": "mkv"}


def expected_uint8(frames: torch.Tensor) -> np.ndarray:
    """The documented conversion (float32 arithmetic, round half to even): [B,C,H,W] -> uint8 [B,H,W,C]."""
    return (
        np.rint(np.clip(frames.float().numpy(), 0, 1) * np.float32(255))
        .astype(np.uint8)
        .transpose(0, 2, 3, 1)
    )


@dataclass
class VideoInfo:
    width: int
    height: int
    average_rate: Fraction
    codec: str
    pix_fmt: str


def read_av(path, format: str = "rgb24") -> tuple[np.ndarray, VideoInfo]:
    """Decode every frame with PyAV (VP9 with libvpx-vp9, which keeps alpha): (frames [N,H,W,C], info)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        info = VideoInfo(stream.width, stream.height, stream.average_rate, context.name, context.pix_fmt)
        if context.name == "vp9":
            decoder = av.CodecContext.create("libvpx-vp9", "r")
            decoded = [frame for packet in container.demux(stream) for frame in decoder.decode(packet)]
        else:
            decoded = list(container.decode(stream))
        frames = [frame.to_ndarray(format=format) for frame in decoded]
    frames = np.stack(frames) if frames else np.zeros((0, info.height, info.width), np.uint8)
    return frames.reshape(*frames.shape[:3], -1), info


def write(path, frames: torch.Tensor, fps=30, **kwargs) -> AVWriter:
    height, width = frames.shape[-2:]
    with AVWriter(path, fps, width, height, **kwargs) as writer:
        for start in range(0, len(frames), 4):
            writer.add_batch(frames[start : start + 4])
    return writer


def rgba_clip(frames: int, height: int, width: int) -> torch.Tensor:
    """Smooth RGB with a smooth, moving alpha (straight) [T,4,H,W] float in [0,1]."""
    rgb = smooth_clip(frames, height, width)
    xx = torch.linspace(0, 1, width).view(1, 1, 1, width)
    alpha = (0.5 + 0.5 * torch.cos(6 * xx + torch.arange(frames).view(-1, 1, 1, 1) * 0.3)).expand(
        -1, 1, height, -1
    )
    return torch.cat([rgb, alpha], dim=1)


def make_audio_source(path, seconds: float, fps: int = 25, rate: int = 48000) -> None:
    """A small H.264 + AAC (440 Hz sine, stereo) file with audio of `seconds`."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="stereo")
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(round(seconds * rate)) / rate)).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = samples[start : start + 1024]
            frame = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            container.mux(audio.encode(frame))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))


def audio_span(path) -> tuple[str, float, float]:
    """(codec, start, end) of the first audio stream's packets, in seconds from the first video frame."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        zero = (video.start_time or 0) * video.time_base  # Matroska shifts every stream past negative times
        stream = container.streams.audio[0]
        packets = [p for p in container.demux(stream) if p.size > 0]
        start = min(p.pts for p in packets) * stream.time_base - zero
        end = max(p.pts + p.duration for p in packets) * stream.time_base - zero
        return stream.codec_context.name, float(start), float(end)


@pytest.mark.parametrize("codec", list(LOSSY))
def test_lossy_presets_round_trip_count_size_exact_fps_and_pixels(tmp_path, codec, ntsc):
    clip = smooth_clip(10, 48, 64)
    path = tmp_path / f"v.{LOSSY[codec]}"
    write(path, clip, fps=ntsc, codec=codec)
    frames, info = read_av(path)
    assert (len(frames), info.width, info.height) == (10, 64, 48)
    assert info.average_rate == Fraction(30000, 1001)
    assert min(psnr(f, e) for f, e in zip(frames, expected_uint8(clip), strict=True)) >= 30


def test_ffv1_is_lossless_for_colour_and_grey(tmp_path, ntsc):
    clip = torch.rand(6, 3, 24, 40, generator=torch.Generator().manual_seed(1))
    write(tmp_path / "c.mkv", clip, fps=ntsc)
    frames, info = read_av(tmp_path / "c.mkv")
    assert info.average_rate == Fraction(30000, 1001) and info.codec == "ffv1"
    np.testing.assert_array_equal(frames, expected_uint8(clip))

    grey = torch.rand(5, 1, 24, 40, generator=torch.Generator().manual_seed(2))
    write(tmp_path / "pha.mkv", grey)
    frames, info = read_av(tmp_path / "pha.mkv", format="gray")
    assert info.pix_fmt == "gray"
    np.testing.assert_array_equal(frames, expected_uint8(grey))


def test_grey_into_yuv_codec_is_expanded(tmp_path):
    grey = smooth_clip(4, 32, 48)[:, :1]
    write(tmp_path / "pha.mp4", grey)
    frames, _ = read_av(tmp_path / "pha.mp4")
    assert psnr(frames, np.repeat(expected_uint8(grey), 3, axis=-1)) >= 35


@pytest.mark.parametrize(
    ("fps", "expected"), [(25, 25), (24.0, 24), (Fraction(24000, 1001), Fraction(24000, 1001)), (60, 60)]
)
@pytest.mark.parametrize("extension", ["mp4", "mkv", "webm", "mov"])
def test_frame_rate_reads_back_exactly(tmp_path, fps, expected, extension):
    write(tmp_path / f"v.{extension}", smooth_clip(2, 16, 16), fps=fps)
    _, info = read_av(tmp_path / f"v.{extension}")
    assert info.average_rate == expected


@pytest.mark.parametrize("codec", list(ALPHA))
def test_alpha_survives(tmp_path, codec):
    clip = rgba_clip(6, 32, 48)
    path = tmp_path / f"com.{ALPHA[codec]}"
    write(path, clip, codec=codec)
    frames, _ = read_av(path, format="rgba")
    expected = expected_uint8(clip)
    assert frames.shape == expected.shape
    if codec == "ffv1":
        np.testing.assert_array_equal(frames, expected)
    elif codec == "prores4444":  # 10-bit 4:4:4, alpha stored losslessly at 10 bits
        assert np.abs(frames[..., 3].astype(int) - expected[..., 3]).max() <= 1
        assert psnr(frames[..., :3], expected[..., :3]) >= 35
    else:
        assert psnr(frames[..., 3], expected[..., 3]) >= 30
        assert psnr(frames[..., :3], expected[..., :3]) >= 30


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_rgba_into_codec_without_alpha_is_refused(tmp_path, codec):
    with AVWriter(tmp_path / "v.mp4", 30, 16, 16, codec=codec) as writer:
        with pytest.raises(
            ValueError,
            match=rf"4 channels \(RGBA\) need a codec with alpha \(prores4444, vp9, ffv1\); "
            rf"codec '{codec}' has none",
        ):
            writer.add_batch(torch.zeros(1, 4, 16, 16))
        writer.add_batch(torch.zeros(1, 3, 16, 16))
    assert len(read_av(tmp_path / "v.mp4")[0]) == 1


def test_first_batch_fixes_the_channel_count(tmp_path):
    with AVWriter(tmp_path / "pha.mkv", 30, 16, 16) as writer:
        writer.add_batch(torch.zeros(0, 3, 16, 16))  # an empty batch fixes nothing
        writer.add_batch(torch.zeros(2, 1, 16, 16))
        with pytest.raises(
            ValueError, match=r"must have C=1 like the first batch \(the stream is gray\), got C=3"
        ):
            writer.add_batch(torch.zeros(1, 3, 16, 16))
    assert len(read_av(tmp_path / "pha.mkv", format="gray")[0]) == 2


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_odd_size_is_padded_for_h264_and_hevc_with_a_warning(tmp_path, codec):
    clip = smooth_clip(3, 47, 65)
    with pytest.warns(
        UserWarning, match=rf"65x47 is odd and {codec} needs even sizes; .* padded .* to 66x48"
    ):
        writer = write(tmp_path / "v.mp4", clip, codec=codec)
    frames, info = read_av(tmp_path / "v.mp4")
    assert (len(frames), info.width, info.height) == (3, 66, 48) == (3, *writer.encoded_size)
    assert psnr(frames[:, :47, :65], expected_uint8(clip)) >= 30


def test_odd_size_refused_on_request_and_kept_where_the_codec_takes_it(tmp_path):
    with pytest.raises(ValueError, match=r"must be even for h264 \(4:2:0\), got 65x47; pass odd_size='pad'"):
        AVWriter(tmp_path / "v.mp4", 30, 65, 47, odd_size="error")
    clip = torch.rand(2, 4, 47, 65, generator=torch.Generator().manual_seed(3))
    write(tmp_path / "v.mkv", clip)
    frames, info = read_av(tmp_path / "v.mkv", format="rgba")
    assert (info.width, info.height) == (65, 47)
    np.testing.assert_array_equal(frames, expected_uint8(clip))


@pytest.mark.parametrize(
    ("extension", "codec", "audio_codec"), [("mp4", "h264", "aac"), ("webm", "vp9", "opus")]
)
def test_audio_is_copied_and_cut_at_the_last_frame(tmp_path, extension, codec, audio_codec):
    make_audio_source(tmp_path / "src.mp4", seconds=3.0)
    path = tmp_path / f"com.{extension}"
    write(path, smooth_clip(30, 32, 32), fps=25, audio_from=tmp_path / "src.mp4")  # 1.2 s of video
    name, start, end = audio_span(path)
    assert name == audio_codec  # AAC is copied into .mp4; .webm cannot hold AAC, so it becomes Opus
    assert start == pytest.approx(0, abs=0.025) and end == pytest.approx(1.2, abs=0.025)
    assert len(read_av(path)[0]) == 30


def test_audio_is_cut_at_the_frames_written_when_the_block_fails(tmp_path):
    make_audio_source(tmp_path / "src.mp4", seconds=3.0)
    with pytest.raises(KeyboardInterrupt):
        with AVWriter(
            tmp_path / "com.mkv", 25, 32, 32, codec="ffv1", audio_from=tmp_path / "src.mp4"
        ) as writer:
            for frame in smooth_clip(10, 32, 32):
                writer.add_batch(frame[None])
            raise KeyboardInterrupt
    assert audio_span(tmp_path / "com.mkv")[1:] == pytest.approx((0, 0.4), abs=0.025)
    assert len(read_av(tmp_path / "com.mkv")[0]) == 10


def test_source_without_audio_warns_and_writes_silent_video(tmp_path):
    write(tmp_path / "silent.mp4", smooth_clip(2, 16, 16))
    with pytest.warns(
        UserWarning, match=r"audio_from .*silent\.mp4 has no audio stream: .*v\.mp4 is written without audio"
    ):
        write(tmp_path / "v.mp4", smooth_clip(2, 16, 16), audio_from=tmp_path / "silent.mp4")
    with av.open(str(tmp_path / "v.mp4")) as container:
        assert len(container.streams.audio) == 0 and container.streams.video[0].frames == 2


def test_exception_inside_with_block_leaves_playable_file(tmp_path):
    clip = smooth_clip(7, 32, 48)
    with pytest.raises(KeyboardInterrupt):
        with AVWriter(tmp_path / "v.mp4", 30, 48, 32) as writer:
            for frame in clip:
                writer.add_batch(frame[None])
            raise KeyboardInterrupt
    frames, _ = read_av(tmp_path / "v.mp4")
    assert len(frames) == 7 and psnr(frames, expected_uint8(clip)) >= 30


def test_close_is_idempotent_and_an_empty_file_is_valid(tmp_path):
    writer = AVWriter(tmp_path / "v.mp4", 30, 16, 16)
    writer.close()
    writer.close()
    with av.open(str(tmp_path / "v.mp4")) as container:  # header and trailer, no frame
        assert [packet for packet in container.demux() if packet.size] == []
    with pytest.raises(RuntimeError, match="is closed"):
        writer.add_batch(torch.zeros(1, 3, 16, 16))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_reaches_the_caller_naming_the_file(tmp_path):
    (tmp_path / "v.mkv").symlink_to("/dev/full")  # every write fails: no space left on device
    noise = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with pytest.raises(
        StorageError, match=r"writing .*v\.mkv failed: its disk is full \(.* free\)"
    ) as caught:
        with AVWriter(tmp_path / "v.mkv", 30, 64, 64) as writer:
            for _ in range(20):
                writer.add_batch(noise)
    assert caught.value.errno == errno.ENOSPC
    writer.close()  # the error is raised once; closing again is quiet


def test_missing_encoder_names_it_and_the_codecs_available(tmp_path, monkeypatch):
    monkeypatch.setitem(pyav_module.PRESETS, "h266", Preset("libvvenc-missing", ("mp4",), {3: "yuv420p"}))
    available = ", ".join(available_codecs())
    assert "h264" in available and "h266" not in available
    with pytest.raises(
        ValueError,
        match=rf"codec 'h266' needs the FFmpeg encoder 'libvvenc-missing', which this PyAV build lacks; "
        rf"codecs available here: {available}",
    ):
        AVWriter(tmp_path / "v.mp4", 30, 16, 16, codec="h266")
    assert not (tmp_path / "v.mp4").exists()


def test_without_pyav_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match=r"AVWriter needs PyAV: pip install 'lightning-matting\[av\]'"):
        AVWriter(tmp_path / "v.mp4", 30, 16, 16)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        *BAD_VIDEO_WRITER_SETTINGS,
        (
            {"codec": "av1"},
            ValueError,
            r"^invalid codec \('av1'\): expected one of 'h264', 'hevc', 'prores4444', 'vp9', 'ffv1'$",
        ),
        ({"codec": "vp9"}, ValueError, r"codec 'vp9' is written to .webm or .mkv files, got 'v.mp4'"),
        (
            {"path": "v.avi"},
            ValueError,
            r"cannot choose a codec for .*v\.avi \(extension '.avi'\): use one of .mp4, .mov, .webm, .mkv",
        ),
        (
            {"options": ["crf", 18]},
            TypeError,
            r"^invalid options \(\['crf', 18\]\): expected a dict of FFmpeg encoder options such as \{'crf': 18\}$",
        ),
        (
            {"options": {"crf": "abc"}},
            ValueError,
            r"the libx264 encoder refused options .*'crf': 'abc'.* at 16x16",
        ),
        (
            {"options": {"bogus": 1}},
            ValueError,
            r"options \['bogus'\] are not options of the libx264 encoder",
        ),
        ({"audio_from": "missing.mp4"}, FileNotFoundError, r"audio_from .*missing\.mp4 is not a file"),
        ({"audio_from": "notes.txt"}, ValueError, r"audio_from .*notes\.txt cannot be read by PyAV"),
    ],
)
def test_bad_arguments_are_refused_before_writing(tmp_path, kwargs, error, message):
    (tmp_path / "notes.txt").write_text("not a video")
    args = {"path": "v.mp4", "frame_rate": 30, "width": 16, "height": 16} | kwargs
    args["path"] = tmp_path / args["path"]
    if "audio_from" in args:
        args["audio_from"] = tmp_path / args["audio_from"]
    with pytest.raises(error, match=message):
        AVWriter(**args)
    assert not args["path"].exists()


def test_encoder_options_apply_over_the_preset(tmp_path):
    clip = smooth_clip(30, 64, 64)
    sizes = {}
    for name, options in {"default": None, "crf40": {"crf": 40}, "bitrate": {"b": "2M"}}.items():
        writer = write(tmp_path / f"{name}.mp4", clip, options=options)
        sizes[name] = (tmp_path / f"{name}.mp4").stat().st_size
    assert writer.options == {"preset": "veryfast", "b": "2M"}  # a bitrate replaces the preset's crf
    assert sizes["crf40"] < sizes["default"] < sizes["bitrate"] / 4


def test_unwritable_path_is_refused(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError, match=r"cannot create the folder for .*file/v\.mp4"):
        AVWriter(tmp_path / "file" / "v.mp4", 30, 16, 16)
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(OSError, match=r"PyAV could not open .*folder\.mp4 for writing \(h264\)"):
        AVWriter(tmp_path / "folder.mp4", 30, 16, 16)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (torch.zeros(3, 16, 16), r"4-D tensor \[B,C,H,W\], got shape \(3, 16, 16\)"),
        (torch.zeros(1, 2, 16, 16), r"must have 1 or 3 or 4 channels \[B,C,H,W\], got C=2"),
        (
            torch.zeros(1, 3, 16, 16, dtype=torch.int32),
            r"float in \[0, 1\] or uint8 .* got dtype torch.int32",
        ),
        (torch.zeros(1, 3, 16, 18), r"must be 16x16 \(W x H\) as the writer was opened, got 18x16"),
    ],
)
def test_bad_frames_are_refused_with_the_expected_form(tmp_path, frames, message):
    with AVWriter(tmp_path / "v.mkv", 30, 16, 16) as writer:
        with pytest.raises(ValueError, match=message):
            writer.add_batch(frames)
        writer.add_batch(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    assert len(read_av(tmp_path / "v.mkv")[0]) == 1


def test_hevc_mp4_of_one_or_two_frames_is_written_every_time(tmp_path):
    # x265 leaves the decoding time of a stream of under 3 frames unset (garbage that differs run to run and
    # that the MP4 muxer often refuses); freeing the previous encoder first made this fail within 40 runs
    lengths = [1 + run % 2 for run in range(40)]
    gc.freeze()  # each collection below then scans only what the runs made, not the whole test session
    try:
        for run, frames in enumerate(lengths):
            with AVWriter(tmp_path / f"{run}.mp4", 30, 64, 64, codec="hevc") as writer:
                writer.add_batch(torch.rand(frames, 3, 64, 64, generator=torch.Generator().manual_seed(run)))
            gc.collect()
    finally:
        gc.unfreeze()
    for run, frames in enumerate(lengths):
        with av.open(str(tmp_path / f"{run}.mp4")) as container:
            packets = [packet for packet in container.demux(video=0) if packet.size]
        assert (
            [packet.dts for packet in packets]
            == [packet.pts for packet in packets]
            == [index * 512 for index in range(frames)]
        )
