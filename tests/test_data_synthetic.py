"""Synthetic clips: ground truth that composes exactly, determinism by seed, saving through the writers."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from lightning_matting.data import ImageSequenceReader, VideoReader, make_clip, read_image, save_clip


@pytest.fixture(scope="module")
def clip():
    return make_clip(96, 64, 12, fps=Fraction(30000, 1001), seed=3)


def test_shapes_dtypes_ranges_and_fps(clip):
    assert clip.src.shape == clip.fgr.shape == clip.scene_bgr.shape == (12, 3, 64, 96)
    assert clip.pha.shape == (12, 1, 64, 96)
    assert clip.bgr.shape == (3, 64, 96)
    assert clip.fps == Fraction(30000, 1001)
    for tensor in (clip.src, clip.bgr, clip.pha, clip.fgr, clip.scene_bgr):
        assert tensor.dtype == torch.float32
        assert float(tensor.min()) >= 0 and float(tensor.max()) <= 1


def test_src_is_the_composite_of_its_ground_truth(clip):
    assert torch.equal(clip.src, clip.fgr * clip.pha + clip.scene_bgr * (1 - clip.pha))


def test_alpha_has_solid_core_soft_edges_and_thin_strands():
    pha = make_clip(320, 192, 1, seed=5).pha[0]
    assert (pha > 0.999).float().mean() > 0.05  # the subject
    assert (pha < 0.001).float().mean() > 0.3  # the background
    partial = (pha > 0.02) & (pha < 0.9)
    assert partial.float().mean() > 0.005  # soft edges
    # hair: partial alpha more than 6 px away from the solid core (soft body edges are narrower)
    near_core = torch.nn.functional.max_pool2d((pha > 0.9).float()[None], 13, stride=1, padding=6)[0] > 0
    strands = partial & ~near_core
    assert int(strands.sum()) > 50


def test_subject_moves_and_camera_shakes(clip):
    assert not torch.equal(clip.pha[0], clip.pha[-1])
    assert not torch.allclose(clip.scene_bgr[0], clip.bgr, atol=1e-3)


def test_without_shake_or_lighting_the_background_is_the_plate():
    still = make_clip(64, 48, 5, seed=1, camera_shake=False, lighting_change=False)
    assert torch.equal(still.scene_bgr, still.bgr.expand(5, -1, -1, -1))


def test_same_seed_same_clip_other_seed_other_clip(clip):
    again = make_clip(96, 64, 12, fps=Fraction(30000, 1001), seed=3)
    for key in ("src", "bgr", "pha", "fgr", "scene_bgr"):
        assert torch.equal(getattr(clip, key), getattr(again, key)), key
    assert not torch.equal(make_clip(96, 64, 12, seed=4).bgr, clip.bgr)


def test_global_random_state_is_left_alone():
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    make_clip(48, 32, 3, seed=9)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    assert np.random.get_state()[2] == numpy_state[2]


def test_long_clips_render_in_chunks_like_short_ones():
    long = make_clip(32, 16, 40, seed=2)
    assert torch.allclose(long.src[:5], make_clip(32, 16, 5, seed=2).src, atol=1e-6)


def test_save_clip_writes_video_plate_and_png_sequences(clip, tmp_path):
    files = save_clip(clip, tmp_path / "clip")
    video = VideoReader(files.src)
    assert (len(video), video.info.width, video.info.height) == (12, 96, 64)
    assert float(video.info.fps) == pytest.approx(30000 / 1001, rel=1e-3)  # OpenCV stores 2997/100
    assert (video[5] - clip.src[5]).abs().mean() < 0.03  # mp4v is lossy
    assert torch.equal(read_image(files.bgr), clip.bgr.mul(255).round().div(255))
    pha = ImageSequenceReader(files.pha)
    fgr = ImageSequenceReader(files.fgr)
    assert len(pha) == len(fgr) == 12
    assert torch.equal(pha[7][:1], clip.pha[7].mul(255).round().div(255))
    assert torch.equal(fgr[7], clip.fgr[7].mul(255).round().div(255))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"width": 8}, ValueError, r"^invalid width \(8\): expected an int >= 16$"),
        ({"height": 20.5}, TypeError, r"^invalid height \(20\.5\): expected an int >= 16$"),
        ({"num_frames": 0}, ValueError, r"^invalid num_frames \(0\): expected an int >= 1$"),
        ({"fps": 0}, ValueError, r"^invalid fps \(0\): expected a number > 0"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        make_clip(**{"width": 32, "height": 32, "num_frames": 2, **kwargs})
