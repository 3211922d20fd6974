"""A joined file carries its segments' codec tag, alpha flag and pixel format, as an unsegmented file does."""

from __future__ import annotations

from fractions import Fraction

import av
import pytest
import torch

from lightning_matting.writers import AVWriter
from lightning_matting.writers.pyav import available_codecs
from lightning_matting.writers.segments import SegmentedWriter

CASES = [
    pytest.param("hevc", "mp4", 3, id="hevc"),
    pytest.param("prores4444", "mov", 4, id="prores4444"),
    pytest.param("vp9", "webm", 4, id="vp9"),
    pytest.param("ffv1", "mkv", 4, id="ffv1"),
]


def stream_facts(path) -> tuple[str, str | None, str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_tag, stream.metadata.get("alpha_mode"), stream.codec_context.pix_fmt


@pytest.mark.parametrize(("codec", "extension", "channels"), CASES)
def test_joined_file_keeps_tag_alpha_flag_and_pixel_format(tmp_path, codec, extension, channels):
    if codec not in available_codecs():
        pytest.skip(f"this PyAV build has no {codec} encoder")
    frames = torch.rand(6, channels, 64, 64, generator=torch.Generator().manual_seed(0))
    whole = tmp_path / f"whole.{extension}"
    with AVWriter(whole, 10, 64, 64, codec=codec) as writer:
        writer.add_batch(frames)
    joined = tmp_path / f"joined.{extension}"
    segmented = SegmentedWriter(joined, lambda path: AVWriter(path, 10, 64, 64, codec=codec), 2, Fraction(10))
    segmented.add_batch(frames)
    segmented.close()
    segmented.join()
    assert stream_facts(joined) == stream_facts(whole)
    if codec in ("hevc", "prores4444"):
        assert stream_facts(joined)[0] == {"hevc": "hvc1", "prores4444": "ap4h"}[codec]
    if codec == "vp9":
        assert stream_facts(joined)[1] == "1"
