"""Homographic plate alignment: recovers a known warp, falls back cleanly, fallback visible across workers."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_matting.data import MattingVideoDataset, SyntheticScene, align_background, estimate_homography
from lightning_matting.writers import VideoWriter

WIDTH, HEIGHT = 320, 192
KNOWN = np.array([[1.01, 0.03, 4.0], [-0.02, 0.99, -3.0], [2e-5, -1e-5, 1.0]])
POINTS = np.float32(
    [[0, 0], [WIDTH - 1, 0], [0, HEIGHT - 1], [WIDTH - 1, HEIGHT - 1], [WIDTH / 2, HEIGHT / 2]]
)


def warp(image: torch.Tensor, homography: np.ndarray) -> torch.Tensor:
    warped = cv2.warpPerspective(image.permute(1, 2, 0).numpy(), homography, (image.shape[2], image.shape[1]))
    return torch.from_numpy(warped).permute(2, 0, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_a_known_homography_on_a_textured_plate(seed):
    plate = SyntheticScene(WIDTH, HEIGHT, seed=seed).plate
    src = warp(plate, KNOWN)
    homography = estimate_homography(plate, src)
    assert homography is not None
    error = cv2.perspectiveTransform(POINTS[:, None], homography) - cv2.perspectiveTransform(
        POINTS[:, None], KNOWN
    )
    assert np.abs(error).max() < 1.0  # pixels, at the corners

    aligned, ok = align_background(plate, src)
    assert ok
    assert aligned.shape == plate.shape and aligned.dtype == torch.float32
    inner = (slice(None), slice(12, -12), slice(12, -12))
    aligned_error, unaligned_error = ((image - src)[inner].abs().mean() for image in (aligned, plate))
    assert aligned_error < 0.02 and unaligned_error > 4 * aligned_error


def test_uncovered_pixels_come_from_the_source():
    plate = SyntheticScene(WIDTH, HEIGHT, seed=0).plate
    shift = np.array(
        [[1.0, 0, 20], [0, 1.0, 0], [0, 0, 1]]
    )  # camera panned: left 20 columns not in the plate
    src = warp(plate, shift)
    src[:, :, :20] = 0.25
    aligned, ok = align_background(plate, src)
    assert ok
    assert torch.equal(aligned[:, :, :19], src[:, :, :19])


def test_featureless_plate_falls_back_to_the_unaligned_plate():
    flat = torch.full((3, HEIGHT, WIDTH), 0.5)
    src = SyntheticScene(WIDTH, HEIGHT, seed=0).plate
    assert estimate_homography(flat, src) is None
    aligned, ok = align_background(flat, src)
    assert not ok and aligned is flat
    assert align_background(src, flat) == (src, False)


def test_unrelated_images_do_not_align():
    plate, other = (SyntheticScene(WIDTH, HEIGHT, seed=seed).plate for seed in (0, 1))
    assert estimate_homography(plate, other) is None


def test_mismatched_sizes_are_rejected():
    with pytest.raises(ValueError, match=r"bgr and src must both be \[3,H,W\] of the same size"):
        align_background(torch.zeros(3, 10, 10), torch.zeros(3, 10, 12))


def test_fallback_is_reported_in_batches_from_worker_processes(tmp_path):
    frames = (SyntheticScene(96, 64, seed=3, camera_shake=False).render(range(4))["src"] * 255).round()
    source = tmp_path / "shot.mkv"
    with VideoWriter(source, 25, 96, 64, fourcc="FFV1") as writer:
        writer.add_batch(frames.to(torch.uint8))
    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), np.full((64, 96, 3), 128, np.uint8))
    dataset = MattingVideoDataset(source, flat, align=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        batches = list(DataLoader(dataset, batch_size=2, num_workers=1))
    assert [batch["aligned"].tolist() for batch in batches] == [[False, False], [False, False]]
