"""Precision beyond 8 bits: deep sources read as uint16, outputs at 10, 16 and 32 bits, through predict and resume."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch
from conftest import read_video
from test_predict import MeanMatte, plate
from test_predict_formats import run

from lightning_matting.cli import main
from lightning_matting.data.datasets import MattingVideoDataset
from lightning_matting.data.readers import ImageSequenceReader, VideoReader, decode_image
from lightning_matting.data.sampling import collate_frames
from lightning_matting.full_scale import FULL_SCALE, full_scale
from lightning_matting.writers import AVWriter, ImageSequenceWriter, OutputFormat, exr
from lightning_matting.writers.chunks import finished_chunks, parts_folder
from lightning_matting.writers.frames import to_hwc

av = pytest.importorskip("av", reason="PyAV (the [av] extra) is not installed")

WIDTH, HEIGHT = 128, 16  # 2048 pixels: a ramp over them holds 2048 distinct values


def ramp(channels: int = 1, frames: int = 1) -> torch.Tensor:
    """A smooth 0-1 ramp [frames,C,H,W] over every pixel, the same in each channel."""
    values = torch.linspace(0, 1, WIDTH * HEIGHT).reshape(1, 1, HEIGHT, WIDTH)
    return values.expand(frames, channels, HEIGHT, WIDTH).contiguous()


def levels(values: np.ndarray | torch.Tensor) -> int:
    return len(np.unique(np.asarray(values)))


def exr_pixels(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray()


@pytest.mark.parametrize(
    ("extension", "bit_depth", "tolerance"),
    [("png", 16, 0.5 / 65535), ("tif", 16, 0.5 / 65535), ("tif", 32, 0.5 / 65535)],
)
def test_deep_image_sequences_keep_a_float_ramp(tmp_path, extension, bit_depth, tolerance):
    with ImageSequenceWriter(tmp_path / "pha", extension, bit_depth=bit_depth) as writer:
        writer.add_batch(ramp(frames=2))
    reader = ImageSequenceReader(tmp_path / "pha")
    assert (len(reader), reader.info.width, reader.info.height, reader.bit_depth) == (2, WIDTH, HEIGHT, 16)
    assert reader.read(1).dtype == torch.uint16 and levels(reader.read(1)) == WIDTH * HEIGHT
    assert (reader[1] - ramp(3)[0]).abs().max() <= tolerance + 1e-7  # a float tif is read as uint16


def test_full_scale_is_the_integer_one_is_at_each_depth():
    assert [full_scale(bits) for bits in (8, 10, 12, 16)] == [255, 1023, 4095, 65535]
    assert dict(FULL_SCALE) == {torch.uint8: 255, torch.uint16: 65535}


def test_exr_sequence_holds_the_floats_exactly(tmp_path):
    rgba = torch.cat([torch.rand(1, 3, HEIGHT, WIDTH), ramp()], 1)
    with ImageSequenceWriter(tmp_path / "com", "exr") as writer:  # 32-bit float by default
        writer.add_batch(ramp())
        writer.add_batch(rgba)
    assert writer.bit_depth == 32 and sorted(p.name for p in (tmp_path / "com").iterdir()) == [
        "00000.exr",
        "00001.exr",
    ]
    np.testing.assert_array_equal(exr_pixels(tmp_path / "com" / "00000.exr"), ramp()[0, 0].numpy())
    np.testing.assert_array_equal(
        exr_pixels(tmp_path / "com" / "00001.exr"), rgba[0].permute(1, 2, 0).numpy()
    )


def test_exr_without_an_encoder_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(exr.cv2, "haveImageWriter", lambda name: False)
    monkeypatch.setattr(exr, "has_encoder", lambda av, name: False)
    with pytest.raises(ValueError, match=r"OpenEXR output needs an OpenCV build with OpenEXR .*pip install"):
        ImageSequenceWriter(tmp_path / "com", "exr")


@pytest.mark.parametrize(
    ("name", "codec", "bit_depth", "channels", "tolerance"),
    [
        ("pha.mkv", "ffv1", 16, 1, 0.5 / 65535),
        ("com.mkv", "ffv1", 16, 4, 0.5 / 65535),
        ("com.mov", "prores4444", None, 4, 1 / 1023),  # 10-bit alpha, decoded at 12
        ("pha.mp4", "h264", 10, 3, 0.03),  # lossy (crf 18)
    ],
)
def test_deep_video_keeps_a_float_ramp(tmp_path, name, codec, bit_depth, channels, tolerance):
    frames = ramp(channels, frames=3)
    if channels == 4:  # the ramp in alpha, colour beside it
        frames[:, :3] = torch.rand(3, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    with AVWriter(tmp_path / name, 25, WIDTH, HEIGHT, codec=codec, bit_depth=bit_depth) as writer:
        writer.add_batch(frames)
    reader = VideoReader(tmp_path / name, alpha=channels == 4)
    assert (len(reader), reader.info.width, reader.info.height, reader.bit_depth) == (3, WIDTH, HEIGHT, 16)
    plane = reader.read(2)[-1 if channels == 4 else 0]
    assert plane.dtype == torch.uint16 and levels(plane) > 256
    assert (reader[2][-1 if channels == 4 else 0] - ramp()[0, 0]).abs().max() <= tolerance + 1e-6


def test_ffv1_pha_is_a_gray16_stream(tmp_path):
    with AVWriter(tmp_path / "pha.mkv", 25, WIDTH, HEIGHT, bit_depth=16) as writer:
        writer.add_batch(ramp())
    with av.open(str(tmp_path / "pha.mkv")) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "gray16le"


def test_a_10_bit_source_reads_at_16_bits_closer_to_the_truth_than_its_8_bit_decode(tmp_path):
    truth = torch.cat(
        [torch.linspace(0, 1, 32 * 32).reshape(1, 1, 32, 32) * (0.5 + 0.1 * i) for i in range(6)]
    )
    with AVWriter(
        tmp_path / "deep.mp4", 25, 32, 32, codec="h264", bit_depth=10, options={"crf": 0}
    ) as writer:
        writer.add_batch(truth.expand(6, 3, 32, 32))  # grey: 4:2:0 chroma costs nothing
    reader = VideoReader(tmp_path / "deep.mp4")
    assert reader.bit_depth == 16 and reader.read(0).dtype == torch.uint16
    eight_bit, _, _, _ = read_video(tmp_path / "deep.mp4")  # OpenCV's 8-bit decode
    assert len(reader) == len(eight_bit) == 6
    for i in (5, 1, 3, 0):  # seeks both ways, in a copy sent to a worker too
        assert torch.equal(reader.read(i), pickle.loads(pickle.dumps(reader)).read(i))
        deep_error = (reader[i] - truth[i]).abs().mean()
        eight_bit_error = (torch.from_numpy(eight_bit[i]).permute(2, 0, 1) / 255 - truth[i]).abs().mean()
        assert deep_error < 0.5 / 255 and deep_error < eight_bit_error / 2
        assert levels(reader.read(i)[0]) > 256
    assert torch.equal(reader.read_uint8(0), (reader[0] * 255).round().to(torch.uint8))


def test_16_bit_and_rgba_png_sources(tmp_path):
    deep = (np.arange(HEIGHT * WIDTH * 3, dtype=np.uint16).reshape(HEIGHT, WIDTH, 3) * 10).astype(np.uint16)
    (tmp_path / "seq").mkdir()
    for i in range(2):
        cv2.imwrite(str(tmp_path / "seq" / f"{i}.png"), deep + i)
    reader = ImageSequenceReader(tmp_path / "seq")
    assert reader.bit_depth == 16
    assert torch.equal(reader.read(1), torch.from_numpy((deep + 1)[..., ::-1].copy()).permute(2, 0, 1))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([deep[..., :3], deep[..., :1]]))
    rgba = decode_image(tmp_path / "rgba.png", alpha=True)
    assert rgba.shape == (4, HEIGHT, WIDTH) and torch.equal(rgba[3], rgba[2])  # alpha = the B plane written
    assert decode_image(tmp_path / "rgba.png").shape == (3, HEIGHT, WIDTH)  # dropped unless asked for


def test_deep_source_errors_name_the_file(tmp_path):
    (tmp_path / "mixed").mkdir()
    cv2.imwrite(str(tmp_path / "mixed" / "0.png"), np.zeros((4, 4, 3), np.uint16))
    cv2.imwrite(str(tmp_path / "mixed" / "1.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"1\.png has 8-bit samples but the sequence has 16-bit ones"):
        ImageSequenceReader(tmp_path / "mixed").read(1)
    with pytest.raises(ValueError, match=r"0\.png has no alpha channel \(3 channels\)"):
        ImageSequenceReader(tmp_path / "mixed", alpha=True)
    with AVWriter(tmp_path / "rgb.mkv", 25, 8, 8) as writer:
        writer.add_batch(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"rgb\.mkv has no alpha channel; read it with alpha=False"):
        VideoReader(tmp_path / "rgb.mkv", alpha=True)


def test_dataset_keeps_uint16_and_collate_makes_the_same_floats(tmp_path):
    with ImageSequenceWriter(tmp_path / "src", "png", bit_depth=16) as writer:
        writer.add_batch(ramp(3, frames=2))
    dataset = MattingVideoDataset(tmp_path / "src", plate(tmp_path, (WIDTH, HEIGHT)), resize=(64, 8))
    items = [dataset[0], dataset[1]]
    assert items[0]["src"].dtype == torch.uint16 and items[0]["bgr"].dtype == torch.uint8
    assert levels(items[0]["src"]) > 256  # resized in float, rounded to 16 bits
    batch = collate_frames(items, to_float=True)
    assert batch.src.dtype == torch.float32
    assert torch.equal(batch.src[1], items[1]["src"].float() / 65535)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"bit_depth": 16},
            r"bit_depth 16 needs PyAV video \(codec= ffv1 for 16.*OpenCV video stores 8 bits",
        ),
        (
            {"codec": "h264", "bit_depth": 16},
            r"not stored by codec 'h264', which takes 8 or 10; .* needs codec ffv1",
        ),
        (
            {"codec": "vp9", "bit_depth": 10},
            r"codec 'vp9', which takes 8; bit_depth 10 needs codec h264 or hevc or",
        ),
        (
            {"format": "image_sequence", "extension": "jpg", "bit_depth": 16},
            r"not stored by jpg images, which take 8",
        ),
        ({"format": "image_sequence", "extension": "exr", "bit_depth": 16}, r"exr images, which take 32"),
        ({"bit_depth": 12}, r"invalid bit_depth \(12\): expected one of 8, 10, 16, 32, or None"),
        ({"bit_depth": "16"}, r"invalid bit_depth \('16'\): expected one of 8, 10, 16, 32, or None"),
    ],
)
def test_unsupported_depths_are_refused_naming_what_stores_them(settings, message):
    with pytest.raises(ValueError, match=message):
        OutputFormat(**settings)


def test_default_depths_resolve_per_format():
    assert OutputFormat().bit_depth == 8
    assert OutputFormat(codec="prores4444").bit_depth == 10
    assert OutputFormat(format="image_sequence", extension="exr").bit_depth == 32


def test_conversion_to_16_bit_and_float_samples_on_both_paths():
    frames = torch.tensor([0.0, 0.25, 1.0, 2.0, -1.0, float("nan")]).reshape(1, 1, 1, 6)
    finite = frames.nan_to_num(0.0)
    assert to_hwc(frames, samples="uint16").flatten().tolist() == [0, 16384, 65535, 65535, 0, 0]  # torch path
    assert to_hwc(finite, samples="uint16").flatten().tolist() == [
        0,
        16384,
        65535,
        65535,
        0,
        0,
    ]  # OpenCV path
    assert to_hwc(finite, samples="float32").flatten().tolist() == [0.0, 0.25, 1.0, 1.0, 0.0, 0.0]
    assert to_hwc(
        torch.tensor([[[[0, 1, 255]]]], dtype=torch.uint8), samples="uint16"
    ).flatten().tolist() == [
        0,
        257,
        65535,
    ]


def source_ramp_sequence(tmp_path, frames: int = 6) -> str:
    """A 16-bit PNG sequence whose frame i is the ramp raised by i/65535 (grey, so MeanMatte's pha = it)."""
    with ImageSequenceWriter(tmp_path / "src16", "png", bit_depth=16) as writer:
        for i in range(frames):
            writer.add_batch((ramp(3) * 0.9 + i / 65535).clamp(0, 1))
    return str(tmp_path / "src16")


def test_predict_and_resume_keep_16_bits_in_a_png_sequence(tmp_path):
    source, background = source_ramp_sequence(tmp_path), plate(tmp_path, (WIDTH, HEIGHT))
    settings = {"outputs": ["pha"], "format": "image_sequence", "bit_depth": 16}
    with pytest.raises(RuntimeError, match="boom"):  # batches of 3: the second fails
        run(tmp_path, [source], [background], net=MeanMatte(fail_at_call=2), **settings)
    assert len(list((tmp_path / "out" / "src16" / "pha").iterdir())) == 3
    callback = run(tmp_path, [source], [background], resume=True, **settings)
    written = ImageSequenceReader(callback.written["src16"]["pha"])
    source_reader = ImageSequenceReader(source)
    assert len(written) == 6 and written.bit_depth == 16
    for i in range(6):
        assert torch.equal(written.read(i), source_reader.read(i))  # uint16 in, uint16 out, no 8-bit step


def test_segmented_16_bit_ffv1_pha_is_joined_and_resumed_at_16_bits(tmp_path):
    source, background = source_ramp_sequence(tmp_path), plate(tmp_path, (WIDTH, HEIGHT))
    settings = {"outputs": ["pha"], "codec": "ffv1", "bit_depth": 16, "segment_seconds": 0.1}  # 3 frames
    with pytest.raises(RuntimeError, match="boom"):
        run(tmp_path, [source], [background], net=MeanMatte(fail_at_call=2), **settings)
    pha = tmp_path / "out" / "src16" / "pha.mkv"
    assert [frames for frames, _ in finished_chunks(parts_folder(pha), "mkv")] == [range(0, 3)]
    run(tmp_path, [source], [background], resume=True, **settings)
    with av.open(str(pha)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "gray16le"
    written, source_reader = VideoReader(pha), ImageSequenceReader(source)
    assert len(written) == 6 and not parts_folder(pha).exists()
    for i in range(6):
        assert torch.equal(written.read(i)[0], source_reader.read(i)[0])


def test_cli_takes_bit_depth_and_refuses_an_unknown_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["lightning-matting"])  # pytest's own arguments are not the CLI's
    args = ["predict", "--model.model=mattingbase-mobilenetv2", "--trainer.callbacks+=VideoWriterCallback"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--trainer.callbacks.bit_depth=16", "--print_config"])
    assert exit_info.value.code == 0 and "bit_depth: 16" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--trainer.callbacks.bit_depth=12"])
    assert exit_info.value.code != 0 and "bit_depth" in capsys.readouterr().err
