"""A source cut at a random byte (an interrupted copy): a clear error before work, or every decodable frame."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_predict import counter_level, levels, write_counter_clip

from lightning_matting.data import VideoReader
from lightning_matting.writers import VideoWriter

FRAMES = 12


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("sources")
    mp4 = folder / "clip.mp4"
    with VideoWriter(mp4, 30, 64, 48) as writer:  # mp4v in MP4: the index (moov) is at the end
        for i in range(FRAMES):
            writer.add_batch(torch.full((1, 3, 48, 64), counter_level(i), dtype=torch.uint8))
    return {"mkv": write_counter_clip(folder / "clip.mkv", FRAMES).read_bytes(), "mp4": mp4.read_bytes()}


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
    frames = [reader.read_uint8(i) for i in range(len(reader))]  # every counted frame decodes
    assert 1 <= len(frames) <= FRAMES
    if container == "mkv":  # lossless: the frames are the source's first ones, in order
        found = levels(torch.stack(frames).permute(0, 2, 3, 1).numpy())
        assert found == [counter_level(i) for i in range(len(frames))]
