"""Writers round trip: what we write reads back with the same frame count, size, fps and pixels."""

from __future__ import annotations

import shutil
import threading
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch
from conftest import BAD_VIDEO_WRITER_SETTINGS, psnr, read_video, smooth_clip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_matting.writers import EncoderError, ImageSequenceWriter, VideoWriter, base


def expected_uint8(frames: torch.Tensor) -> np.ndarray:
    """The documented conversion, computed independently: [B,C,H,W] -> RGB uint8 [B,H,W,C]."""
    x = frames.detach().cpu()
    if x.dtype != torch.uint8:
        x = np.nan_to_num(x.double().numpy(), nan=0.0)
        x = np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)
    else:
        x = x.numpy()
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def write(path, frames, fps=30, **kwargs):
    height, width = frames.shape[-2:]
    with VideoWriter(path, fps, width, height, **kwargs) as writer:
        for start in range(0, len(frames), 4):
            writer.add_batch(frames[start : start + 4])


def test_mp4v_round_trip_keeps_count_size_fps_and_pixels(tmp_path, ntsc):
    clip = smooth_clip(12, 96, 128)
    write(tmp_path / "a" / "com.mp4", clip, fps=ntsc)
    frames, fps, width, height = read_video(tmp_path / "a" / "com.mp4")
    assert (len(frames), width, height) == (12, 128, 96)
    assert fps == pytest.approx(float(ntsc), abs=1e-4)  # cv2's MP4 muxer stores 2997/100, not 30000/1001
    assert min(psnr(f, e) for f, e in zip(frames, expected_uint8(clip), strict=True)) >= 30


@pytest.mark.parametrize("fps", [25, 24.0, Fraction(24000, 1001), 29.97, 60])
def test_frame_rate_as_written(tmp_path, fps):
    write(tmp_path / "v.mp4", smooth_clip(2, 32, 32), fps=fps)
    _, read_fps, _, _ = read_video(tmp_path / "v.mp4")
    assert read_fps == pytest.approx(float(fps), abs=1e-4)


def test_ffv1_is_lossless_for_colour_and_grey(tmp_path):
    clip = torch.rand(5, 3, 24, 40, generator=torch.Generator().manual_seed(1))
    write(tmp_path / "c.mkv", clip, fourcc="FFV1")
    frames, _, _, _ = read_video(tmp_path / "c.mkv")
    np.testing.assert_array_equal(frames, expected_uint8(clip))

    alpha = torch.rand(5, 1, 24, 40, generator=torch.Generator().manual_seed(2))
    write(tmp_path / "pha.mkv", alpha, fourcc="FFV1")
    frames, _, _, _ = read_video(tmp_path / "pha.mkv")
    np.testing.assert_array_equal(frames, np.repeat(expected_uint8(alpha), 3, axis=-1))
    odd = torch.rand(3, 1, 23, 39, generator=torch.Generator().manual_seed(3))  # padded to 40x24
    with pytest.warns(UserWarning, match="odd"):
        write(tmp_path / "odd.mkv", odd, fourcc="FFV1")
    np.testing.assert_array_equal(
        read_video(tmp_path / "odd.mkv")[0][:, :23, :39, 0], expected_uint8(odd)[..., 0]
    )


def test_ffv1_stores_grey_outputs_as_a_grey_stream_and_colour_as_bgra(tmp_path):
    av = pytest.importorskip("av", reason="PyAV reads the stream's pixel format")
    write(tmp_path / "pha.mkv", torch.rand(4, 1, 24, 40), fourcc="FFV1")
    write(tmp_path / "fgr.mkv", torch.rand(4, 3, 24, 40), fourcc="FFV1")
    with av.open(str(tmp_path / "pha.mkv")) as grey, av.open(str(tmp_path / "fgr.mkv")) as colour:
        assert grey.streams.video[0].codec_context.pix_fmt == "gray"  # a quarter of bgra's samples
        assert colour.streams.video[0].codec_context.pix_fmt == "bgra"  # OpenCV's only colour FFV1 format
    writer = VideoWriter(tmp_path / "mixed.mkv", 10, 40, 24, fourcc="FFV1")
    writer.add_batch(torch.rand(1, 1, 24, 40))
    with pytest.raises(
        ValueError, match=r"frames must have C=1 like the first batch \(a grey FFV1 stream\), got C=3"
    ):
        writer.add_batch(torch.rand(1, 3, 24, 40))
    writer.close()


def test_rounds_to_nearest_clamps_and_zeroes_nan(tmp_path):
    values = torch.tensor([0.999, 0.6 / 255, 0.4 / 255, 1.7, -0.3, float("nan"), float("inf"), 128.4 / 255])
    frames = values.view(1, 1, 1, -1).expand(1, 1, 2, -1).contiguous()
    with ImageSequenceWriter(tmp_path / "seq") as writer:
        writer.add_batch(frames)
    row = cv2.imread(str(tmp_path / "seq" / "00000.png"), cv2.IMREAD_UNCHANGED)[0]
    assert row.tolist() == [255, 1, 0, 255, 0, 0, 255, 128]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.bfloat16, torch.float64])
def test_accepts_uint8_and_every_float_dtype(tmp_path, dtype):
    clip = torch.rand(3, 3, 16, 24, generator=torch.Generator().manual_seed(3))
    clip = (clip * 255).round().to(torch.uint8) if dtype == torch.uint8 else clip.to(dtype)
    write(tmp_path / "v.mkv", clip, fourcc="FFV1")
    frames, _, _, _ = read_video(tmp_path / "v.mkv")
    np.testing.assert_array_equal(frames, expected_uint8(clip))


def test_non_contiguous_input(tmp_path):
    base = torch.rand(3, 24, 16, 3, generator=torch.Generator().manual_seed(4))
    clip = base.permute(0, 3, 2, 1)  # [B,C,H,W] view with odd strides, 16x24 -> H=16, W=24
    assert not clip.is_contiguous()
    write(tmp_path / "v.mkv", clip, fourcc="FFV1")
    frames, _, width, height = read_video(tmp_path / "v.mkv")
    assert (width, height) == (24, 16)
    np.testing.assert_array_equal(frames, expected_uint8(clip))


def test_caller_may_reuse_its_tensor_after_add_batch(tmp_path):
    buffer = torch.zeros(1, 3, 16, 16)
    with VideoWriter(tmp_path / "v.mkv", 30, 16, 16, fourcc="FFV1") as writer:
        for value in (0.2, 0.6, 1.0):
            buffer.fill_(value)
            writer.add_batch(buffer)
    frames, _, _, _ = read_video(tmp_path / "v.mkv")
    assert frames[:, 0, 0, 0].tolist() == [51, 153, 255]


def test_a_handed_over_batch_is_converted_on_the_encoder_thread_to_the_same_pixels(tmp_path, monkeypatch):
    clip = torch.rand(5, 3, 16, 24, generator=torch.Generator().manual_seed(5))
    clip[1, 0, 0, 0] = float("nan")
    converted_on = []
    original = base.to_hwc
    monkeypatch.setattr(
        base, "to_hwc", lambda *a: converted_on.append(threading.current_thread().name) or original(*a)
    )
    with VideoWriter(tmp_path / "v.mkv", 30, 24, 16, fourcc="FFV1") as writer:
        writer.add_batch(clip[:2], hand_over=True)
        writer.add_batch(clip[2:])
    frames, _, _, _ = read_video(tmp_path / "v.mkv")
    np.testing.assert_array_equal(frames, expected_uint8(clip))
    main = threading.current_thread().name
    assert sorted(name == main for name in converted_on) == [False, True]  # handed over: on the encoder's


def test_exception_inside_with_block_leaves_playable_file(tmp_path):
    clip = smooth_clip(7, 32, 48)
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "v.mp4", 30, 48, 32) as writer:
            for frame in clip:
                writer.add_batch(frame[None])
            raise KeyboardInterrupt
    frames, _, _, _ = read_video(tmp_path / "v.mp4")
    assert len(frames) == 7


def test_close_is_idempotent_and_add_after_close_raises(tmp_path):
    writer = VideoWriter(tmp_path / "v.mp4", 30, 16, 16)
    writer.add_batch(torch.zeros(2, 3, 16, 16))
    writer.close()
    writer.close()
    assert writer.frames_added == 2
    with pytest.raises(RuntimeError, match="is closed"):
        writer.add_batch(torch.zeros(1, 3, 16, 16))


def test_empty_batch_is_a_no_op(tmp_path):
    with VideoWriter(tmp_path / "v.mp4", 30, 16, 16) as writer:
        writer.add_batch(torch.zeros(0, 3, 16, 16))
        writer.add_batch(torch.zeros(1, 3, 16, 16))
    assert len(read_video(tmp_path / "v.mp4")[0]) == 1


def test_odd_size_is_padded_with_a_warning(tmp_path):
    clip = smooth_clip(3, 47, 65)
    with pytest.warns(UserWarning, match=r"65x47 is odd .* padded .* to 66x48"):
        writer = VideoWriter(tmp_path / "v.mp4", 30, 65, 47)
    with writer:
        writer.add_batch(clip)
    frames, _, width, height = read_video(tmp_path / "v.mp4")
    assert (len(frames), width, height) == (3, 66, 48) == (3, *writer.encoded_size)
    assert psnr(frames[0][:47, :65], expected_uint8(clip)[0]) >= 30


def test_odd_size_refused_on_request(tmp_path):
    with pytest.raises(ValueError, match=r"must be even .* got 65x47 .* odd_size='pad'"):
        VideoWriter(tmp_path / "v.mp4", 30, 65, 47, odd_size="error")


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((1, 3, 16, 16)), r"must be a torch.Tensor \[B,C,H,W\], got ndarray"),
        (torch.zeros(3, 16, 16), r"4-D tensor \[B,C,H,W\], got shape \(3, 16, 16\)"),
        (torch.zeros(1, 2, 16, 16), r"must have 1 or 3 channels \[B,C,H,W\], got C=2"),
        (torch.zeros(1, 4, 16, 16), r"must have 1 or 3 channels \[B,C,H,W\], got C=4"),
        (
            torch.zeros(1, 3, 16, 16, dtype=torch.int32),
            r"float in \[0, 1\] or uint8 .* got dtype torch.int32",
        ),
        (torch.zeros(1, 3, 16, 18), r"must be 16x16 \(W x H\) as the writer was opened, got 18x16"),
        (torch.zeros(1, 3, 18, 16), r"must be 16x16 \(W x H\) as the writer was opened, got 16x18"),
    ],
)
def test_bad_frames_are_refused_with_the_expected_form(tmp_path, frames, message):
    with VideoWriter(tmp_path / "v.mp4", 30, 16, 16) as writer:
        with pytest.raises(ValueError, match=message):
            writer.add_batch(frames)
        writer.add_batch(torch.zeros(1, 3, 16, 16))
    assert len(read_video(tmp_path / "v.mp4")[0]) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        *BAD_VIDEO_WRITER_SETTINGS,
        ({"frame_rate": "thirty"}, ValueError, r"^invalid frame_rate \('thirty'\): expected a number > 0"),
        ({"height": 12.5}, TypeError, r"^invalid height \(12\.5\): expected an int >= 1$"),
        (
            {"fourcc": "mp4"},
            ValueError,
            r"^invalid fourcc \('mp4'\): expected a 4-character code such as 'mp4v', 'MJPG' or 'FFV1'$",
        ),
        ({"fourcc": "zzzz"}, OSError, r"could not open .*v\.mp4 for writing with fourcc 'zzzz'"),
        ({"path": "v.unknownext"}, OSError, r"could not open .*v\.unknownext for writing with fourcc 'mp4v'"),
    ],
)
def test_bad_arguments_are_refused_before_writing(tmp_path, kwargs, error, message):
    args = {"path": "v.mp4", "frame_rate": 30, "width": 16, "height": 16} | kwargs
    args["path"] = tmp_path / args["path"]
    with pytest.raises(error, match=message):
        VideoWriter(**args)


def test_unwritable_path_is_refused(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError, match=r"cannot create the folder for .*file/v\.mp4"):
        VideoWriter(tmp_path / "file" / "v.mp4", 30, 16, 16)
    with pytest.raises(OSError, match=r"cannot create the image-sequence folder .*file/seq"):
        ImageSequenceWriter(tmp_path / "file" / "seq")


def test_missing_parent_folders_are_created(tmp_path):
    with VideoWriter(tmp_path / "a" / "b" / "v.mp4", 30, 16, 16) as writer:
        writer.add_batch(torch.zeros(1, 3, 16, 16))
    assert (tmp_path / "a" / "b" / "v.mp4").stat().st_size > 0


def test_image_sequence_numbers_files_and_keeps_rgba(tmp_path):
    rgba = torch.rand(5, 4, 12, 20, generator=torch.Generator().manual_seed(5))
    with ImageSequenceWriter(tmp_path / "com", "png", start_index=3) as writer:
        writer.add_batch(rgba[:2])
        writer.add_batch(rgba[2:])
    names = sorted(p.name for p in (tmp_path / "com").iterdir())
    assert names == [f"{i:05d}.png" for i in range(3, 8)]
    expected = expected_uint8(rgba)
    for i, name in enumerate(names):
        bgra = cv2.imread(str(tmp_path / "com" / name), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA), expected[i])


def test_image_sequence_jpg_and_grey(tmp_path):
    grey = torch.rand(2, 1, 12, 20, generator=torch.Generator().manual_seed(6))
    with ImageSequenceWriter(tmp_path / "pha", "jpg") as writer:
        writer.add_batch(grey)
        with pytest.raises(
            ValueError, match=r"4 channels \(RGBA\) need an extension with alpha .* got 'jpg'"
        ):
            writer.add_batch(torch.zeros(1, 4, 12, 20))
        with pytest.raises(ValueError, match=r"must be 20x12 \(W x H\) as the writer was opened, got 12x20"):
            writer.add_batch(torch.zeros(1, 1, 20, 12))
    assert sorted(p.name for p in (tmp_path / "pha").iterdir()) == ["00000.jpg", "00001.jpg"]
    image = cv2.imread(str(tmp_path / "pha" / "00000.jpg"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (12, 20) and psnr(image, expected_uint8(grey)[0, ..., 0]) > 30


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"extension": "gif"},
            ValueError,
            r"^invalid extension \('gif'\): expected one of 'png', 'jpg', .*'exr'$",
        ),
        ({"start_index": -1}, ValueError, r"^invalid start_index \(-1\): expected an int >= 0$"),
        ({"width": 10}, TypeError, r"^invalid height \(None\): expected an int >= 1$"),
    ],
)
def test_image_sequence_bad_arguments(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        ImageSequenceWriter(tmp_path / "seq", **kwargs)


def test_encoder_error_reaches_the_caller(tmp_path):
    writer = ImageSequenceWriter(tmp_path / "seq", threads=1)
    writer.add_batch(torch.zeros(1, 3, 8, 8))
    writer.close()
    writer = ImageSequenceWriter(tmp_path / "seq", threads=1, start_index=1)
    shutil.rmtree(tmp_path / "seq")  # every later imwrite fails on the worker thread
    with pytest.raises(EncoderError, match=r"encoding failed: OSError\('OpenCV could not write .*00001\.png"):
        for _ in range(20):
            writer.add_batch(torch.zeros(1, 3, 8, 8))
        writer.close()
    writer.close()  # the error is raised once; closing again is quiet


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.integers(1, 3),
    channels=st.sampled_from([1, 3, 4]),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    dtype=st.sampled_from([torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64]),
    scale=st.floats(0.1, 4.0),
    offset=st.floats(-1.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_png_round_trip_matches_documented_conversion(
    tmp_path, batch, channels, height, width, dtype, scale, offset, seed
):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        frames = torch.randint(0, 256, (batch, channels, height, width), generator=g, dtype=torch.uint8)
    else:
        frames = (torch.rand(batch, channels, height, width, generator=g) * scale + offset).to(dtype)
    folder = tmp_path / f"seq{seed}-{batch}-{channels}-{height}-{width}"
    with ImageSequenceWriter(folder) as writer:
        writer.add_batch(frames)
    expected = expected_uint8(frames)
    for i in range(batch):
        image = cv2.imread(str(folder / f"{i:05d}.png"), cv2.IMREAD_UNCHANGED)
        image = image.reshape(height, width, -1)
        if channels >= 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if channels == 4 else cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(image.reshape(height, width, channels), expected[i])


@pytest.mark.parametrize(
    ("given", "exact"),
    [
        (29.97, Fraction(30000, 1001)),
        (23.976, Fraction(24000, 1001)),
        (59.94, Fraction(60000, 1001)),
        (30.0, Fraction(30)),
        (25, Fraction(25)),
        (12.5, Fraction(25, 2)),
        (Fraction(30000, 1001), Fraction(30000, 1001)),
    ],
)
def test_frame_rate_is_kept_as_an_exact_fraction(tmp_path, given, exact):
    with VideoWriter(tmp_path / "v.mp4", given, 16, 16) as writer:
        assert writer.frame_rate == exact
