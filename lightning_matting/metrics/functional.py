"""The matte metrics as functions: each metric's `_<metric>_update` (the sums a batch adds), its
`_<metric>_compute` (the value from those sums) and the public form computing both for one batch.

An update returns two sums, float64 and int: the per-item errors (images; dtSSD: frame transitions) in
alpha units, and the number of items. A compute turns them into the mean on the papers' scale. The
`lightning_matting.metrics` classes keep these sums as their states.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_matting.metrics.inputs import CLIPS, IMAGES, check_mattes, image_region

__all__ = ["sad", "mse", "gradient_error", "connectivity_error", "dtssd"]

GRADIENT_SIGMA = 1.4
CONNECTIVITY_STEPS = 10  # thresholds k / 10, k = 1..10
CONNECTIVITY_THETA = 0.15


def sad(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Sum of absolute differences over the region / 1e3, per image, averaged over the images.

    One unit is 1000 alpha units, e.g. 1000 pixels that are fully wrong.

    Args:
        pred: Predicted alpha, float [B,1,H,W] in [0, 1], any float dtype.
        target: Ground-truth alpha, float [B,1,H,W] in [0, 1].
        mask: The evaluated pixels, bool [B,1,H,W] (`unknown_region(trimap)`); None: every pixel.

    Returns:
        The mean over the images, float64 scalar; nan for no image.

    Raises:
        ValueError: A shape, dtype or range other than the above, naming the argument.

    Example:
        >>> pred, target = torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
        >>> pred[0, 0, 0, :2] = 0.5  # image 0: 1.0 alpha unit off, image 1: none
        >>> sad(pred, target)
        tensor(0.0005, dtype=torch.float64)
    """
    return _sad_compute(*_sad_update(pred, target, mask))


def mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error over the region x 1e3, per image, averaged over the images.

    One unit is a mean squared alpha error of 0.001. Images whose region is empty are left out.

    Args:
        pred, target, mask: As for `sad`.

    Returns:
        The mean over the images with a non-empty region, float64 scalar; nan for none.

    Raises:
        ValueError: A shape, dtype or range other than `sad`'s, naming the argument.

    Example:
        >>> pred, target = torch.full((1, 1, 4, 4), 0.1), torch.zeros(1, 1, 4, 4)
        >>> mse(pred, target)  # 0.01 x 1e3
        tensor(10.0000, dtype=torch.float64)
    """
    return _mse_compute(*_mse_update(pred, target, mask))


def gradient_error(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Sum over the region of (|grad pred| - |grad target|)^2 / 1e3, per image, averaged over the images.

    Gradients are taken on the whole image (replicated border) with first-order Gaussian-derivative
    filters, sigma 1.4, each kernel of unit L2 norm; one unit is 1000 of that summed squared difference
    of gradient magnitudes.

    Args:
        pred, target, mask: As for `sad`.

    Returns:
        The mean over the images, float64 scalar; nan for no image.

    Raises:
        ValueError: A shape, dtype or range other than `sad`'s, naming the argument.

    Example:
        >>> target = torch.zeros(1, 1, 16, 16)
        >>> target[..., 4:12, 4:12] = 1
        >>> gradient_error(target, target)
        tensor(0., dtype=torch.float64)
        >>> bool(gradient_error(target.flip(-1).roll(1, -1), target) > 0)  # the square moved by a pixel
        True
    """
    return _gradient_error_compute(*_gradient_error_update(pred, target, mask))


def connectivity_error(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Connectivity error over the region / 1e3, per image, averaged over the images (step 0.1, theta 0.15).

    One unit is 1000 of summed |phi(pred) - phi(target)|, phi being a pixel's degree of connectivity
    (1 = fully connected) to the largest 4-connected component of the region where both mattes reach a
    threshold; distances below theta are ignored. Connected components are computed with OpenCV on the CPU.

    Args:
        pred, target, mask: As for `sad`.

    Returns:
        The mean over the images, float64 scalar; nan for no image.

    Raises:
        ValueError: A shape, dtype or range other than `sad`'s, naming the argument.

    Example:
        >>> target = torch.ones(1, 1, 4, 4)
        >>> holed = target.clone()
        >>> holed[0, 0, 1, 2] = 0  # one pixel cut off at every threshold: |phi| = 1
        >>> connectivity_error(holed, target)
        tensor(0.0010, dtype=torch.float64)
    """
    return _connectivity_error_compute(*_connectivity_error_update(pred, target, mask))


def dtssd(pred: Tensor, target: Tensor) -> Tensor:
    """Temporal coherence: per frame transition sqrt(mean(((p_t - p_t-1) - (g_t - g_t-1))^2)) x 1e2, averaged.

    One unit is an RMS error of 0.01 alpha per frame in the temporal derivative, over the whole frame.
    Only transitions within a clip count: a long video evaluated in chunks that overlap by one frame
    (each chunk starting with the previous chunk's last frame) counts every transition once.

    Args:
        pred: Predicted alpha, float in [0, 1]: clips [B,T,1,H,W] or one clip of consecutive frames [T,1,H,W].
        target: Ground-truth alpha of the same shape.

    Returns:
        The mean over the frame transitions, float64 scalar; nan for none (clips of one frame).

    Raises:
        ValueError: A shape, dtype or range other than the above, naming the argument.

    Example:
        >>> target = torch.zeros(3, 1, 2, 2)  # three frames
        >>> flicker = torch.tensor([0.0, 0.1, 0.0]).reshape(3, 1, 1, 1).expand(3, 1, 2, 2)
        >>> dtssd(flicker, target)  # |derivative error| 0.1 everywhere, x 1e2
        tensor(10.0000, dtype=torch.float64)
    """
    return _dtssd_compute(*_dtssd_update(pred, target))


def _sad_update(pred: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, int]:
    """Sum over images of the absolute differences over the region (alpha units) and the image count."""
    pred, target, mask = _checked_images(pred, target, mask)
    per_image = ((pred - target).abs() * mask).sum((1, 2, 3))
    return per_image.sum(), per_image.numel()


def _sad_compute(sum_abs_error: Tensor, total: Tensor | int) -> Tensor:
    """Mean SAD per image / 1e3."""
    return sum_abs_error / total / 1e3


def _mse_update(pred: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, int]:
    """Sum over images with a non-empty region of their mean squared error there, and their count."""
    pred, target, mask = _checked_images(pred, target, mask)
    pixels = mask.sum((1, 2, 3))
    per_image = ((pred - target) ** 2 * mask).sum((1, 2, 3)) / pixels
    evaluated = per_image[pixels > 0]
    return evaluated.sum(), evaluated.numel()


def _mse_compute(sum_squared_error: Tensor, total: Tensor | int) -> Tensor:
    """Mean MSE per image x 1e3."""
    return sum_squared_error / total * 1e3


def _gradient_error_update(pred: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, int]:
    """Sum over images of the squared gradient-magnitude differences over the region, and the image count."""
    pred, target, mask = _checked_images(pred, target, mask)
    difference = _gradient_magnitude(pred) - _gradient_magnitude(target)
    per_image = (difference**2 * mask).sum((1, 2, 3))
    return per_image.sum(), per_image.numel()


def _gradient_error_compute(sum_gradient_error: Tensor, total: Tensor | int) -> Tensor:
    """Mean gradient error per image / 1e3."""
    return sum_gradient_error / total / 1e3


def _connectivity_error_update(pred: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, int]:
    """Sum over images of |phi(pred) - phi(target)| over the region, and the image count."""
    pred, target, mask = _checked_images(pred, target, mask)
    per_image = [_connectivity_error(p[0], t[0], m[0]) for p, t, m in zip(pred, target, mask, strict=True)]
    return sum(per_image, pred.new_zeros(())), len(per_image)


def _connectivity_error_compute(sum_connectivity_error: Tensor, total: Tensor | int) -> Tensor:
    """Mean connectivity error per image / 1e3."""
    return sum_connectivity_error / total / 1e3


def _dtssd_update(pred: Tensor, target: Tensor) -> tuple[Tensor, int]:
    """Sum over the frame transitions of clips of the RMS temporal-derivative error, and their count."""
    check_mattes(pred, target, forms=CLIPS, ranks=(4, 5))
    if pred.ndim == 4:
        pred, target = pred[None], target[None]
    difference = pred.double().diff(dim=1) - target.double().diff(dim=1)
    per_transition = difference.pow(2).mean((2, 3, 4)).sqrt()
    return per_transition.sum(), per_transition.numel()


def _dtssd_compute(sum_dtssd: Tensor, total: Tensor | int) -> Tensor:
    """Mean dtSSD per frame transition x 1e2."""
    return sum_dtssd / total * 1e2


def _checked_images(pred: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """pred and target [B,1,H,W] checked and in float64, with the checked region (bool [B,1,H,W])."""
    check_mattes(pred, target, forms=IMAGES, ranks=(4,))
    return pred.double(), target.double(), image_region(pred, mask)


def _gradient_magnitude(matte: Tensor) -> Tensor:
    """|grad matte| of float64 [B,1,H,W] with Gaussian-derivative filters (sigma 1.4), replicated border."""
    smooth, derivative = (taps.to(matte) for taps in _gaussian_derivative_taps(GRADIENT_SIGMA))
    half = smooth.numel() // 2
    padded = F.pad(matte, (half, half, half, half), mode="replicate")
    # the 2-D kernels are outer products (unit L2 norm each), so filter vertically and horizontally in turn
    along_x = _filter_horizontally(_filter_vertically(padded, smooth), derivative)
    along_y = _filter_horizontally(_filter_vertically(padded, derivative), smooth)
    return (along_x**2 + along_y**2).sqrt()


def _gaussian_derivative_taps(sigma: float) -> tuple[Tensor, Tensor]:
    """1-D Gaussian and Gaussian-derivative taps [K], float64, each of unit L2 norm; DIM's gaussgradient kernel
    along x is their outer product (Gaussian down the rows, derivative across the columns)."""
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * 1e-2)))  # 9 taps at 1.4
    offsets = torch.arange(-half, half + 1, dtype=torch.float64)
    gauss = torch.exp(-(offsets**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    derivative = -offsets * gauss / sigma**2
    return gauss / gauss.norm(), derivative / derivative.norm()


def _filter_vertically(image: Tensor, taps: Tensor) -> Tensor:
    """Correlate [B,1,H,W] with `taps` [K] down each column (valid region: H shrinks by K - 1)."""
    return F.conv2d(image, taps.view(1, 1, -1, 1))


def _filter_horizontally(image: Tensor, taps: Tensor) -> Tensor:
    """Correlate [B,1,H,W] with `taps` [K] along each row (valid region: W shrinks by K - 1)."""
    return F.conv2d(image, taps.view(1, 1, 1, -1))


def _connectivity_error(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Sum over bool mask [H,W] of |phi(pred) - phi(target)| for float64 mattes [H,W] (unscaled, float64 scalar)."""
    levels = (
        torch.arange(1, CONNECTIVITY_STEPS + 1, dtype=torch.float64, device=pred.device) / CONNECTIVITY_STEPS
    )
    common = (pred >= levels[:, None, None]) & (target >= levels[:, None, None])
    in_largest = np.zeros(common.shape, dtype=bool)
    for index, binary in enumerate(common.to(torch.uint8).cpu().numpy()):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=4)
        if count > 1:
            in_largest[index] = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    outside = torch.from_numpy(~in_largest).to(pred.device)
    # A pixel's level is the threshold just below the first one whose largest component misses it (1 if none does).
    first_outside = outside.to(torch.uint8).argmax(0)
    level = torch.where(
        outside.any(0), first_outside.to(torch.float64) / CONNECTIVITY_STEPS, torch.ones_like(pred)
    )
    pred_distance, target_distance = pred - level, target - level
    pred_phi = 1 - pred_distance * (pred_distance >= CONNECTIVITY_THETA)
    target_phi = 1 - target_distance * (target_distance >= CONNECTIVITY_THETA)
    return ((pred_phi - target_phi).abs() * mask).sum()
