"""A source cut short or damaged (an interrupted copy): a clear error before work, or every decodable frame;
damage found only mid-run stops the run resumable, naming the frame and the file."""

from __future__ import annotations

import re
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from conftest import read_video
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_predict import MeanMatte, counter_level, levels, plate, predict, write_counter_clip

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import ImageSequenceReader, VideoMattingDataModule, VideoReader
from lightning_matting.module import MattingModule
from lightning_matting.writers import VideoWriter

FRAMES = 12


def write_faststart_mp4(path: Path, frames: int) -> Path:
    """An H.264 MP4 with its index (moov) before the frames' data, as streaming sites and phones write it."""
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("h264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("sources")
    mp4 = folder / "clip.mp4"
    with VideoWriter(mp4, 30, 64, 48) as writer:  # mp4v in MP4: the index (moov) is at the end
        for i in range(FRAMES):
            writer.add_batch(torch.full((1, 3, 48, 64), counter_level(i), dtype=torch.uint8))
    return {
        "mkv": write_counter_clip(folder / "clip.mkv", FRAMES).read_bytes(),
        "mp4": mp4.read_bytes(),
        "faststart.mp4": write_faststart_mp4(folder / "faststart.mp4", FRAMES).read_bytes(),
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_source_cut_anywhere_gives_a_clear_error_or_only_decodable_frames(tmp_path, sources, data):
    container = data.draw(st.sampled_from(sorted(sources)))
    content = sources[container]
    cut = data.draw(st.integers(0, len(content) - 1))
    path = tmp_path / f"cut.{container}"
    path.write_bytes(content[:cut])
    try:
        reader = VideoReader(path)
    except ValueError as error:  # before any work: names the file
        assert str(path) in str(error)
        return
    assert container != "faststart.mp4"  # its index tells what is missing: refused at every cut
    frames = [reader.read_uint8(i) for i in range(len(reader))]  # every counted frame decodes
    assert 1 <= len(frames) <= FRAMES
    if container == "mkv":  # lossless: the frames are the source's first ones, in order
        found = levels(torch.stack(frames).permute(0, 2, 3, 1).numpy())
        assert found == [counter_level(i) for i in range(len(frames))]


def test_an_mp4_with_its_index_at_the_front_cut_in_half_is_refused_before_work(tmp_path):
    content = write_faststart_mp4(tmp_path / "full.mp4", 30).read_bytes()
    assert content.find(b"moov") < content.find(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(content[: len(content) // 2])
    dm = VideoMattingDataModule(sources=[str(cut)], backgrounds=[plate(tmp_path)])
    callback = VideoWriterCallback(tmp_path / "out", outputs=["pha"])
    with pytest.raises(ValueError) as refusal:
        predict(MattingModule(MeanMatte()), dm, callback)
    message = str(refusal.value)
    found = re.fullmatch(
        rf"video file {re.escape(str(cut))} is cut short: its index claims 30 frames up to byte {len(content)}, "
        rf"but the file ends at byte {len(content) // 2}: the data of only (\d+) of them is there; copy the file "
        r"again \(or remux what it holds: ffmpeg -i <file> -c copy <new file>\)",
        message,
    )
    assert found and 0 < int(found[1]) < 30, message
    assert not (tmp_path / "out").exists()


def write_level_png(path: Path, level: int) -> Path:
    cv2.imwrite(str(path), np.full((48, 64, 3), level, np.uint8))
    return path


def webp_cut_short(path: Path) -> None:
    content = cv2.imencode(".webp", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()
    path.write_bytes(content[: len(content) // 2])


@pytest.mark.parametrize(
    ("name", "damage", "problem"),
    [
        ("00002.png", lambda path: path.write_bytes(b""), r"is empty \(0 bytes\)"),
        (
            "00002.png",
            lambda path: path.write_text("<html>404</html>"),
            "is not an image: its first bytes are no PNG, JPEG, BMP, TIFF or WebP signature",
        ),
        (
            "00002.png",
            lambda path: path.write_bytes(write_level_png(path, 90).read_bytes()[:60]),
            r"is cut short: its PNG data ends without the end chunk \(IEND\)",
        ),
        ("00002.webp", webp_cut_short, r"is cut short: its WebP header gives \d+ bytes, the file has \d+"),
    ],
)
def test_an_image_folder_with_a_damaged_file_is_refused_when_opened(tmp_path, name, damage, problem):
    for i in (0, 1, 3):
        write_level_png(tmp_path / f"{i:05d}.png", counter_level(i))
    damage(tmp_path / name)
    with pytest.raises(ValueError) as refusal:
        ImageSequenceReader(tmp_path)
    assert re.fullmatch(
        rf"image folder {re.escape(str(tmp_path))}: frame 2, {re.escape(str(tmp_path / name))}, {problem}; "
        "replace that file",
        str(refusal.value),
    ), refusal.value


def test_an_image_that_fails_to_decode_mid_run_stops_it_resumable_naming_the_frame_and_the_file(tmp_path):
    source = tmp_path / "shot"
    source.mkdir()
    for i in range(6):
        write_level_png(source / f"{i:05d}.png", counter_level(i))
    good = (source / "00004.png").read_bytes()
    damaged = bytearray(good)
    damaged[damaged.find(b"IDAT") + 6] ^= 0xFF  # its pixel data, past the checks of the file's ends
    (source / "00004.png").write_bytes(bytes(damaged))

    def run(resume: bool) -> VideoWriterCallback:
        dm = VideoMattingDataModule(
            sources=[str(source)], backgrounds=[plate(tmp_path)], batch_size=2, fps=30
        )
        callback = VideoWriterCallback(
            tmp_path / "out", outputs=["pha"], fourcc="FFV1", segment_seconds=2 / 30, resume=resume
        )
        predict(MattingModule(MeanMatte()), dm, callback)
        return callback

    with pytest.raises(ValueError) as failure:
        run(resume=False)
    assert str(failure.value).startswith(
        f"image folder {source}, frame 4: cannot decode image file {source / '00004.png'}"
    )
    assert levels(read_video(tmp_path / "out" / "shot" / "pha.mkv")[0]) == [
        counter_level(i) for i in range(4)
    ]
    (source / "00004.png").write_bytes(good)
    callback = run(resume=True)
    assert levels(read_video(callback.written["shot"]["pha"])[0]) == [counter_level(i) for i in range(6)]
