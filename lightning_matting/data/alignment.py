"""Homographic alignment of a background plate to a source frame: ORB features, Hamming matching, MAGSAC."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from lightning_matting.data.readers import frame_to_uint8

MIN_INLIERS = 12  # fewer robust-fit inliers than this: no trustworthy homography
_RATIO = 0.75  # Lowe's ratio test on the two nearest descriptors
_INLIER_THRESHOLD_PX = 3.0
_MAX_FEATURES = 2000
_FAST_THRESHOLD = 5  # OpenCV's default 20 finds few corners in low-contrast texture


def _gray_uint8(image: Tensor) -> np.ndarray:
    rgb = frame_to_uint8(image.detach().cpu()).permute(1, 2, 0).numpy()
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def estimate_homography(bgr: Tensor, src: Tensor) -> np.ndarray | None:
    """3x3 float64 homography taking plate pixel coordinates to source pixel coordinates, or None.

    `bgr` and `src` are [3,H,W] float in [0,1]. None when either image has too few ORB features, when fewer
    than `MIN_INLIERS` matches survive the ratio test and the robust fit (MAGSAC++, a RANSAC
    variant), or when the estimate is degenerate.
    """
    orb = cv2.ORB_create(nfeatures=_MAX_FEATURES, fastThreshold=_FAST_THRESHOLD)
    bgr_points, bgr_descriptors = orb.detectAndCompute(_gray_uint8(bgr), None)
    src_points, src_descriptors = orb.detectAndCompute(_gray_uint8(src), None)
    if bgr_descriptors is None or src_descriptors is None or len(bgr_points) < 2 or len(src_points) < 2:
        return None
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)  # ORB descriptors are binary strings
    pairs = matcher.knnMatch(bgr_descriptors, src_descriptors, k=2)
    good = [pair[0] for pair in pairs if len(pair) == 2 and pair[0].distance < _RATIO * pair[1].distance]
    if len(good) < MIN_INLIERS:
        return None
    from_points = np.float32([bgr_points[m.queryIdx].pt for m in good])
    to_points = np.float32([src_points[m.trainIdx].pt for m in good])
    homography, inliers = cv2.findHomography(from_points, to_points, cv2.USAC_MAGSAC, _INLIER_THRESHOLD_PX)
    if homography is None or inliers is None or int(inliers.sum()) < MIN_INLIERS:
        return None
    if not np.all(np.isfinite(homography)) or abs(np.linalg.det(homography[:2, :2])) < 1e-3:
        return None
    return homography


def align_background(bgr: Tensor, src: Tensor) -> tuple[Tensor, bool]:
    """The plate warped onto the source frame, and whether alignment succeeded.

    `bgr`, `src`: [3,H,W] float in [0,1] of the same size. On success, pixels the warped plate does not
    cover are copied from `src` (so they read as background); on failure the plate is returned unchanged
    with False, and the caller decides how to report it.
    """
    if bgr.shape != src.shape or bgr.dim() != 3 or bgr.shape[0] != 3:
        raise ValueError(
            f"bgr and src must both be [3,H,W] of the same size, got {tuple(bgr.shape)} and {tuple(src.shape)}"
        )
    homography = estimate_homography(bgr, src)
    if homography is None:
        return bgr, False
    height, width = src.shape[1:]
    plate = bgr.detach().cpu().permute(1, 2, 0).contiguous().numpy()
    warped = cv2.warpPerspective(plate, homography, (width, height), flags=cv2.INTER_LINEAR)
    coverage = cv2.warpPerspective(np.ones((height, width), np.float32), homography, (width, height))
    aligned = torch.from_numpy(warped).permute(2, 0, 1).to(bgr.device, bgr.dtype).clamp_(0, 1)
    uncovered = torch.from_numpy(coverage < 1 - 1e-6).to(bgr.device)
    return torch.where(uncovered, src, aligned), True
