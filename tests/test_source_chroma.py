"""Sources in 4:2:2 and 4:4:4 (camera and screen-capture H.264) decode like 4:2:0 ones: every frame, the
picture as encoded."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from lightning_matting.data.readers import VideoReader

av = pytest.importorskip("av")


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p", "yuv444p"])
def test_chroma_subsampled_and_full_chroma_sources_read_every_frame(tmp_path, pix_fmt):
    path = tmp_path / f"{pix_fmt}.mp4"
    rng = np.random.default_rng(0)
    frames = [np.repeat(np.repeat(rng.integers(0, 256, (6, 8, 3), np.uint8), 8, 0), 8, 1) for _ in range(5)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"qp": "0"})  # lossless, in the source's chroma
        stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
        for i, image in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=pix_fmt)
            picture.pts, picture.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == pix_fmt
    reader = VideoReader(path)
    assert (len(reader), reader.info.width, reader.info.height) == (5, 64, 48)
    for i, image in enumerate(frames):
        got = reader.read_uint8(i).permute(1, 2, 0).numpy().astype(int)
        # colour conversion and 4:2:0/4:2:2 chroma on 8x8 blocks: within a few levels of the RGB written
        assert np.abs(got - image).mean() < 6, (pix_fmt, i)
