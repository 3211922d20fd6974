"""MattingVideoDataset, MultiVideoDataset, SyntheticMattingDataset and VideoBatchSampler."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_matting.data import (
    MattingVideoDataset,
    MultiVideoDataset,
    SyntheticMattingDataset,
    SyntheticScene,
    VideoBatchSampler,
    VideoInfo,
    VideoReader,
    align_background,
    collate_frames,
    make_clip,
    parse_colour,
    read_image,
    unique_names,
)
from lightning_matting.data.datasets import resize_frame
from lightning_matting.data.readers import frame_to_float, frame_to_uint8
from lightning_matting.writers import VideoWriter

WIDTH, HEIGHT = 64, 48


def frames_with_values(values: list[int], width: int = WIDTH, height: int = HEIGHT) -> torch.Tensor:
    """uint8 RGB frames [T,3,H,W], frame t filled with values[t] (its identity after decoding)."""
    return (
        torch.tensor(values, dtype=torch.uint8)[:, None, None, None].expand(-1, 3, height, width).contiguous()
    )


def write_video(path: Path, frames: torch.Tensor, fps: float = 25) -> Path:
    _, _, height, width = frames.shape
    with VideoWriter(path, fps, width, height, fourcc="FFV1") as writer:
        writer.add_batch(frames)
    return path


def write_image(path: Path, rgb: tuple[int, int, int], width: int = WIDTH, height: int = HEIGHT) -> Path:
    cv2.imwrite(str(path), np.full((height, width, 3), rgb[::-1], np.uint8))
    return path


def random_frames(count: int, width: int = WIDTH, height: int = HEIGHT) -> torch.Tensor:
    generator = torch.Generator().manual_seed(count)
    return torch.randint(0, 256, (count, 3, height, width), dtype=torch.uint8, generator=generator)


def value(frame: torch.Tensor) -> int:
    """The level of a uint8 frame made by `frames_with_values`."""
    assert frame.dtype == torch.uint8
    return int(frame[0, 0, 0])


@pytest.fixture
def source(tmp_path):
    return write_video(tmp_path / "source.mkv", frames_with_values([10 * t for t in range(8)]))


@pytest.fixture
def plate(tmp_path):
    return write_image(tmp_path / "plate.png", (200, 100, 50))


def test_items_carry_src_plate_index_and_name(source, plate):
    dataset = MattingVideoDataset(source, plate)
    assert len(dataset) == 8
    assert dataset.videos == [VideoInfo("source", Fraction(25), WIDTH, HEIGHT, 8, str(source))]
    item = dataset[3]
    assert set(item) == {"src", "bgr", "index", "video"}
    assert item["src"].shape == item["bgr"].shape == (3, HEIGHT, WIDTH)
    assert item["src"].dtype == item["bgr"].dtype == torch.uint8
    assert value(item["src"]) == 30
    assert item["bgr"][:, 0, 0].tolist() == [200, 100, 50]
    assert (item["index"], item["video"]) == (3, "source")


def test_without_plate_there_is_no_bgr(source):
    item = MattingVideoDataset(source, name="rvm_input")[0]
    assert set(item) == {"src", "index", "video"}
    assert item["video"] == "rvm_input"


def test_plate_video_gives_a_frame_per_source_frame_and_may_be_longer(tmp_path, source):
    plate_video = write_video(tmp_path / "plate.mkv", frames_with_values([5 * t for t in range(10)]))
    dataset = MattingVideoDataset(source, plate_video)
    assert len(dataset) == 8
    assert [value(dataset[t]["bgr"]) for t in range(8)] == [5 * t for t in range(8)]


def test_plate_video_too_short_is_rejected(tmp_path, source):
    plate_video = write_video(tmp_path / "short_plate.mkv", frames_with_values([0, 1, 2]))
    with pytest.raises(
        ValueError, match="background video .*short_plate.mkv has 3 frames but source 'source' has 8"
    ):
        MattingVideoDataset(source, plate_video)


def test_resize_applies_to_source_and_plate(source, tmp_path):
    big_plate = write_image(
        tmp_path / "big_plate.png", (1, 2, 3), width=128, height=96
    )  # same aspect: resized
    dataset = MattingVideoDataset(source, big_plate, resize=(32, 20))
    assert (dataset.info.width, dataset.info.height) == (32, 20)
    item = dataset[0]
    assert item["src"].shape == item["bgr"].shape == (3, 20, 32)
    assert MattingVideoDataset(source, big_plate)[0]["bgr"].shape == (3, HEIGHT, WIDTH)


def test_plate_with_another_aspect_ratio_is_rejected(source, tmp_path):
    square = write_image(tmp_path / "square.png", (0, 0, 0), width=48, height=48)
    with pytest.raises(
        ValueError, match=r"background .*square.png is 48x48 \(aspect 1.000\) but source 'source' is 64x48"
    ):
        MattingVideoDataset(source, square)


@pytest.mark.parametrize(
    ("resize", "error"),
    [
        ((0, 10), ValueError),
        ((10,), TypeError),
        ("64x48", TypeError),
        ((10.5, 10), TypeError),
        ((True, 10), TypeError),
        ((-4, 4), ValueError),
    ],
)
def test_bad_resize_is_rejected(source, resize, error):
    message = rf"^invalid resize \({re.escape(repr(resize))}\): expected \(width, height\), two ints >= 1$"
    with pytest.raises(error, match=message):
        MattingVideoDataset(source, resize=resize)


@pytest.mark.parametrize(
    ("target", "rgb"),
    [
        ((0.0, 1.0, 0.5), (0, 255, 128)),  # 127.5 rounds to nearest even
        ((0.1, 0.2, 0.3), (26, 51, 76)),  # 25.5 -> 26, 51.0, 76.5 -> 76
        ("#FF8000", (255, 128, 0)),
        ([0, 0, 1], (0, 0, 255)),
    ],
)
def test_target_colour_is_the_rounded_uint8_colour(source, target, rgb):
    item = MattingVideoDataset(source, target=target, resize=(16, 12))[0]
    assert item["tgt"].shape == (3, 12, 16) and item["tgt"].dtype == torch.uint8
    assert torch.equal(item["tgt"], torch.tensor(rgb, dtype=torch.uint8)[:, None, None].expand(3, 12, 16))


@pytest.mark.parametrize(
    ("colour", "error"),
    [
        ("#12345", ValueError),
        ("#GG0000", ValueError),
        ("#1234567", ValueError),
        ((1.5, 0, 0), ValueError),
        ((0.5, 0.5), TypeError),
        (("a", 0, 0), TypeError),
    ],
)
def test_bad_colour_is_rejected(source, colour, error):
    message = rf"^invalid colour \({re.escape(repr(colour))}\): expected '#RRGGBB' \(hex\) or three numbers in \[0, 1\]$"
    with pytest.raises(error, match=message):
        MattingVideoDataset(source, target=colour)
    with pytest.raises(error, match=message):
        parse_colour(colour)


def test_target_that_is_neither_colour_nor_file(source):
    with pytest.raises(FileNotFoundError, match="target 'green' is neither a colour"):
        MattingVideoDataset(source, target="green")


def test_target_image_is_stretched_to_the_output_size(source, tmp_path):
    target = write_image(tmp_path / "beach.png", (0, 0, 255), width=50, height=50)
    item = MattingVideoDataset(source, target=target)[0]
    assert item["tgt"].shape == (3, HEIGHT, WIDTH)
    assert item["tgt"][:, 5, 5].tolist() == [0, 0, 255]


def test_shorter_target_video_loops(source, tmp_path):
    target = write_video(tmp_path / "loop.mkv", frames_with_values([100, 110, 120], width=32, height=32))
    dataset = MattingVideoDataset(source, target=target)
    assert [value(dataset[t]["tgt"]) for t in range(8)] == [100, 110, 120, 100, 110, 120, 100, 110]
    assert dataset[0]["tgt"].shape == (3, HEIGHT, WIDTH)


def test_longer_target_video_is_cut(source, tmp_path):
    target = write_video(tmp_path / "long.mkv", frames_with_values(list(range(100, 120))))
    dataset = MattingVideoDataset(source, target=target)
    assert len(dataset) == 8
    assert [value(dataset[t]["tgt"]) for t in range(8)] == list(range(100, 108))


def test_bad_source_and_background_paths(tmp_path, source):
    with pytest.raises(FileNotFoundError, match="video file not found: .*nothing.mp4"):
        MattingVideoDataset(tmp_path / "nothing.mp4")
    with pytest.raises(FileNotFoundError, match="image file not found: .*no_plate.png"):
        MattingVideoDataset(source, tmp_path / "no_plate.png")
    with pytest.raises(ValueError, match="align=True needs a background plate"):
        MattingVideoDataset(source, align=True)


def test_image_folder_source_uses_the_given_fps(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(3):
        write_image(folder / f"{t}.png", (t, t, t))
    dataset = MattingVideoDataset(folder, fps="24000/1001")
    assert dataset.info == VideoInfo("frames", Fraction(24000, 1001), WIDTH, HEIGHT, 3)


def test_unique_names_are_deterministic():
    assert unique_names(["a", "a", "a_2", "b", "a"]) == ["a", "a_2", "a_2_2", "b", "a_3"]


def test_multi_video_dataset_keeps_each_videos_frames_and_metadata(tmp_path):
    first = write_video(tmp_path / "a" / "clip.mkv", frames_with_values([0, 1, 2]), fps=25)
    second = write_video(tmp_path / "b" / "clip.mkv", frames_with_values([50, 51, 52, 53, 54]), fps=50)
    names = unique_names([first.stem, second.stem])
    dataset = MultiVideoDataset(
        [MattingVideoDataset(p, name=n) for p, n in zip([first, second], names, strict=True)]
    )
    assert dataset.videos == [
        VideoInfo("clip", Fraction(25), WIDTH, HEIGHT, 3, str(first)),
        VideoInfo("clip_2", Fraction(50), WIDTH, HEIGHT, 5, str(second)),
    ]
    items = [dataset[i] for i in range(len(dataset))]
    assert [(item["video"], item["index"], value(item["src"])) for item in items] == [
        ("clip", 0, 0), ("clip", 1, 1), ("clip", 2, 2),
        ("clip_2", 0, 50), ("clip_2", 1, 51), ("clip_2", 2, 52), ("clip_2", 3, 53), ("clip_2", 4, 54),
    ]  # fmt: skip


def test_multi_video_dataset_rejects_repeated_names_and_nothing(source):
    with pytest.raises(ValueError, match=r"video names must be unique in a run, repeated: \['source'\]"):
        MultiVideoDataset([MattingVideoDataset(source), MattingVideoDataset(source)])
    with pytest.raises(ValueError, match="needs at least one video"):
        MultiVideoDataset([])


def test_sampler_batches_one_video_at_a_time_in_order():
    sampler = VideoBatchSampler([5, 0, 3, 7], batch_size=2)
    batches = list(sampler)
    assert batches == [[0, 1], [2, 3], [4], [5, 6], [7], [8, 9], [10, 11], [12, 13], [14]]
    assert len(sampler) == len(batches)
    assert list(VideoBatchSampler([3], batch_size=10)) == [[0, 1, 2]]


@pytest.mark.parametrize(
    ("lengths", "batch_size", "error", "message"),
    [
        ([3], 0, ValueError, r"invalid batch_size \(0\): expected an int >= 1"),
        ([3], 2.0, TypeError, r"invalid batch_size \(2\.0\): expected an int >= 1"),
        ([-1], 2, ValueError, r"invalid lengths\[0\] \(frames of video 0\) \(-1\): expected an int >= 0"),
        ([2.5], 2, TypeError, r"invalid lengths\[0\] \(frames of video 0\) \(2\.5\): expected an int >= 0"),
    ],
)
def test_sampler_rejects_bad_arguments(lengths, batch_size, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        VideoBatchSampler(lengths, batch_size)


def test_loader_with_sampler_never_mixes_videos(tmp_path):
    paths = [
        write_video(tmp_path / f"v{k}.mkv", frames_with_values(list(range(n)))) for k, n in enumerate([5, 3])
    ]
    dataset = MultiVideoDataset([MattingVideoDataset(p) for p in paths])
    loader = DataLoader(dataset, batch_sampler=VideoBatchSampler([v.num_frames for v in dataset.videos], 2))
    seen = []
    for batch in loader:
        assert len(set(batch["video"])) == 1
        assert batch["index"].dtype == torch.long
        assert batch["index"].tolist() == list(
            range(batch["index"][0], batch["index"][0] + len(batch["index"]))
        )
        seen += [(batch["video"][0], i) for i in batch["index"].tolist()]
    assert seen == [("v0", i) for i in range(5)] + [("v1", i) for i in range(3)]


def test_synthetic_dataset_renders_the_same_frames_as_make_clip():
    dataset = SyntheticMattingDataset([7, 8], width=48, height=32, num_frames=4, names=["a", "b"])
    assert len(dataset) == 8
    assert [v.name for v in dataset.videos] == ["a", "b"]
    clip = make_clip(48, 32, 4, seed=8)
    item = dataset[6]
    assert (item["video"], item["index"]) == ("b", 2)
    for key in ("src", "fgr", "pha"):
        assert torch.allclose(item[key], getattr(clip, key)[2], atol=1e-6), key
    assert torch.equal(item["bgr"], clip.bgr)
    assert item["pha"].shape == (1, 32, 48)


def test_synthetic_dataset_arguments_are_checked():
    with pytest.raises(ValueError, match="names must be 2 distinct strings"):
        SyntheticMattingDataset([1, 2], names=["x", "x"])
    with pytest.raises(ValueError, match=r"^invalid num_frames \(0\): expected an int >= 1$"):
        SyntheticMattingDataset([1], num_frames=0)
    with pytest.raises(ValueError, match=r"^invalid width \(4\): expected an int >= 16$"):
        SyntheticMattingDataset([1], width=4)


def test_alignment_flag_and_warning_when_the_plate_has_no_features(tmp_path):
    scene = SyntheticScene(96, 64, seed=1, camera_shake=False)
    frames = (scene.render(range(3))["src"] * 255).round().to(torch.uint8)
    source = write_video(tmp_path / "shot.mkv", frames)
    flat = write_image(tmp_path / "flat.png", (128, 128, 128), width=96, height=64)
    dataset = MattingVideoDataset(source, flat, align=True)
    with pytest.warns(RuntimeWarning, match="alignment failed on some frames of video 'shot'"):
        item = dataset[0]
    assert item["aligned"] is False
    assert torch.equal(item["bgr"], torch.full((3, 64, 96), 128, dtype=torch.uint8))


def no_float_frames(reader, index):
    raise AssertionError("a frame at the output size must not go through float")


def test_items_at_the_output_size_are_the_decoded_frames_as_uint8(tmp_path, monkeypatch):
    frames = random_frames(4)
    source = write_video(tmp_path / "noise.mkv", frames)
    plate_video = write_video(tmp_path / "plate.mkv", random_frames(5))
    expected_src = [(frame * 255).round().to(torch.uint8) for frame in VideoReader(source)]
    expected_bgr = [(VideoReader(plate_video)[i] * 255).round().to(torch.uint8) for i in range(4)]
    dataset = MattingVideoDataset(source, plate_video, target="#102030")
    monkeypatch.setattr(VideoReader, "__getitem__", no_float_frames)
    for index in [0, 1, 3, 2]:
        item = dataset[index]
        assert all(item[key].dtype == torch.uint8 for key in ("src", "bgr", "tgt"))
        assert torch.equal(item["src"], frames[index]) and torch.equal(item["src"], expected_src[index])
        assert torch.equal(item["bgr"], expected_bgr[index])


def test_resized_items_are_the_float_resize_rounded_once(tmp_path):
    source = write_video(tmp_path / "noise.mkv", random_frames(2))
    plate = tmp_path / "plate.png"
    cv2.imwrite(str(plate), random_frames(1, 128, 96)[0].permute(1, 2, 0).numpy())
    target_video = write_video(tmp_path / "target.mkv", random_frames(3, 40, 30))
    for size in [(32, 24), (100, 75)]:  # shrink (antialiased) and enlarge
        dataset = MattingVideoDataset(source, plate, target=target_video, resize=size)
        item = dataset[1]
        expected = {
            "src": VideoReader(source)[1],
            "bgr": read_image(plate),
            "tgt": VideoReader(target_video)[1],
        }
        for key, frame in expected.items():
            resized = resize_frame(frame, *size)
            assert item[key].dtype == torch.uint8 and item[key].shape == (3, size[1], size[0])
            assert (item[key].float() - resized * 255).abs().max() <= 0.5 + 1e-3, (key, size)


def test_a_still_plate_and_target_are_one_tensor_for_every_item(source, plate, tmp_path):
    target_image = write_image(tmp_path / "beach.png", (0, 0, 255), width=32, height=24)
    for target in ["#00ff00", target_image]:
        for resize in [None, (32, 24)]:
            dataset = MattingVideoDataset(source, plate, target=target, resize=resize)
            items = [dataset[i] for i in (0, 3, 7)]
            assert all(item["bgr"] is items[0]["bgr"] for item in items)
            assert all(item["tgt"] is items[0]["tgt"] for item in items)
            batch = collate_frames(items)
            assert batch.static == ("bgr", "tgt") and batch.bgr.dtype == torch.uint8
            assert batch.bgr.shape[0] == batch.tgt.shape[0] == 1 and batch.src.shape[0] == 3


def test_aligned_plate_is_the_float_alignment_rounded_once(tmp_path):
    scene = SyntheticScene(192, 128, seed=2, camera_shake=True)
    frames = frame_to_uint8(scene.render([0, 6])["src"])
    source = write_video(tmp_path / "shot.mkv", frames)
    plate = tmp_path / "plate.png"
    cv2.imwrite(str(plate), frame_to_uint8(scene.plate).flip(0).permute(1, 2, 0).numpy())  # RGB -> BGR
    item = MattingVideoDataset(source, plate, align=True)[1]
    warped, aligned = align_background(read_image(plate), frame_to_float(frames[1]))
    assert item["aligned"] is aligned is True
    assert item["bgr"].dtype == torch.uint8
    assert torch.equal(item["bgr"], frame_to_uint8(warped))
