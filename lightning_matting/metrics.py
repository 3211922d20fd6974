"""torchmetrics Metrics for alpha mattes: SAD, MSE, gradient error, connectivity error and dtSSD.

Every metric computes one error per image (dtSSD: per pair of consecutive frames) and reports the mean
of these values over all images seen, on the scale the BackgroundMattingV2 / RobustVideoMatting papers
report:

========================  ==============================================================  ==========
metric                    per image                                                       scale
========================  ==============================================================  ==========
``SAD``                   sum of ``|pred - target|`` over the region                       ``/ 1e3``
``MSE``                   mean of ``(pred - target)**2`` over the region                   ``x 1e3``
``GradientError``         sum of ``(|grad pred| - |grad target|)**2`` over the region      ``/ 1e3``
``ConnectivityError``     sum of ``|phi(pred) - phi(target)|`` over the region             ``/ 1e3``
``DtSSD``                 ``sqrt(mean(((p_t - p_t-1) - (g_t - g_t-1))**2))`` over a frame  ``x 1e2``
========================  ==============================================================  ==========

Definitions follow Rhemann et al. 2009 (alphamatting.com) and the Deep Image Matting evaluation code:
gradients are filtered with first-order Gaussian-derivative kernels (sigma 1.4, kernel of unit L2 norm,
replicated border); connectivity thresholds alpha in steps of 0.1, keeps the largest 4-connected
component of the region where both mattes reach the threshold, and ignores distances below 0.15.
Two deliberate differences from that code: mattes are not min-max rescaled before the gradient (inputs
are already in [0, 1]), and dtSSD averages over frame transitions only (RobustVideoMatting's script
also counts a zero for each clip's first frame).

Inputs are float tensors in [0, 1], any float dtype; values are computed in float64. The region is the
whole image unless ``update`` gets ``mask``, a bool tensor shaped like ``pred`` (True = evaluated); use
:func:`unknown_region` to turn a DIM-style trimap (128 = unknown) into one. States are sums and counts
reduced with ``"sum"``, so they merge across batches, processes and ``merge_state``. Each metric names
its states after itself, so a ``MetricCollection`` never fuses two of them into one compute group.

Example::

    metrics = MetricCollection([SAD(), MSE(), GradientError(), ConnectivityError(), DtSSD()])
    metrics.update(pred_pha, true_pha)  # [T,1,H,W]: consecutive frames of one video
    metrics.compute()  # {"SAD": ..., "MSE": ..., ...}
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

__all__ = ["SAD", "MSE", "GradientError", "ConnectivityError", "DtSSD", "unknown_region"]

_IMAGES = "[B,1,H,W]"
_CLIPS = "clips [B,T,1,H,W] or consecutive frames [T,1,H,W]"
GRADIENT_SIGMA = 1.4
CONNECTIVITY_STEPS = 10  # thresholds k / 10, k = 1..10
CONNECTIVITY_THETA = 0.15


def unknown_region(trimap: Tensor) -> Tensor:
    """Bool mask of a trimap's unknown region: uint8 trimap [B,1,H,W] with values 0, 128, 255 -> trimap == 128."""
    if not isinstance(trimap, Tensor) or trimap.dtype != torch.uint8:
        raise ValueError(
            f"trimap must be a uint8 tensor {_IMAGES} with values 0, 128, 255; got {_describe(trimap)}"
        )
    if trimap.ndim != 4 or trimap.shape[1] != 1:
        raise ValueError(f"trimap must have shape {_IMAGES}; got {tuple(trimap.shape)}")
    if not bool(((trimap == 0) | (trimap == 128) | (trimap == 255)).all()):
        raise ValueError("trimap must hold only the values 0 (background), 128 (unknown), 255 (foreground)")
    return trimap == 128


class _MeanError(Metric):
    """Mean of per-item errors (images or frame transitions), kept as a float64 sum and an int64 count."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        name = type(self).__name__.lower()
        self._sum_name, self._count_name = f"{name}_sum", f"{name}_count"
        self.add_state(self._sum_name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(self._count_name, torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def _accumulate(self, errors: Tensor) -> None:
        setattr(self, self._sum_name, getattr(self, self._sum_name) + errors.sum())
        setattr(self, self._count_name, getattr(self, self._count_name) + errors.numel())

    def compute(self) -> Tensor:
        """Mean error over every item seen (float64 scalar); nan before the first item."""
        return getattr(self, self._sum_name) / getattr(self, self._count_name)


class _ImageError(_MeanError):
    """Per-image error of pred against target over a region, averaged over images."""

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch of mattes.

        Args:
            pred: Predicted alpha, float [B,1,H,W] in [0, 1].
            target: Ground-truth alpha, float [B,1,H,W] in [0, 1].
            mask: The evaluated pixels, bool [B,1,H,W] (a trimap's unknown region); None: every pixel.

        Raises:
            ValueError: A shape, dtype or range other than the above, naming the argument.
        """
        _check_mattes(pred, target, forms=_IMAGES, ranks=(4,))
        if mask is None:
            mask = torch.ones_like(pred, dtype=torch.bool)
        elif not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != pred.shape:
            raise ValueError(
                f"mask must be a bool tensor shaped like pred {tuple(pred.shape)} (True = evaluated pixel); "
                f"got {_describe(mask)} (a trimap: pass unknown_region(trimap))"
            )
        self._accumulate(self._errors(pred.double(), target.double(), mask))

    def _errors(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Per-image errors [B] of float64 pred, target [B,1,H,W] over bool mask [B,1,H,W]."""
        raise NotImplementedError


class SAD(_ImageError):
    """Sum of absolute differences over the region / 1e3, per image, averaged over images.

    One unit is 1000 alpha units, e.g. 1000 pixels that are fully wrong.
    """

    def _errors(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return ((pred - target).abs() * mask).sum((1, 2, 3)) / 1e3


class MSE(_ImageError):
    """Mean squared error over the region x 1e3, per image, averaged over images.

    One unit is a mean squared alpha error of 0.001. Images whose region is empty are left out.
    """

    def _errors(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        pixels = mask.sum((1, 2, 3))
        squared = ((pred - target) ** 2 * mask).sum((1, 2, 3))
        return (squared / pixels)[pixels > 0] * 1e3


class GradientError(_ImageError):
    """Sum over the region of (|grad pred| - |grad target|)^2 / 1e3, per image, averaged over images.

    Gradients are taken on the whole image with Gaussian-derivative filters (sigma 1.4, unit L2 norm);
    one unit is 1000 of that summed squared difference of gradient magnitudes.
    """

    def _errors(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        difference = self._gradient_magnitude(pred) - self._gradient_magnitude(target)
        return (difference**2 * mask).sum((1, 2, 3)) / 1e3

    @staticmethod
    def _gradient_magnitude(matte: Tensor) -> Tensor:
        smooth, derivative = (taps.to(matte) for taps in _gaussian_derivative_taps(GRADIENT_SIGMA))
        half = smooth.numel() // 2
        padded = F.pad(matte, (half, half, half, half), mode="replicate")
        # the 2-D kernels are outer products (unit L2 norm each), so filter vertically and horizontally in turn
        along_x = _filter_horizontally(_filter_vertically(padded, smooth), derivative)
        along_y = _filter_horizontally(_filter_vertically(padded, derivative), smooth)
        return (along_x**2 + along_y**2).sqrt()


class ConnectivityError(_ImageError):
    """Connectivity error over the region / 1e3, per image, averaged over images (step 0.1, theta 0.15).

    One unit is 1000 of summed |phi(pred) - phi(target)|, phi being a pixel's degree of connectivity
    (1 = fully connected) to the largest 4-connected component of the common foreground.
    Connected components are computed with OpenCV on the CPU.
    """

    def _errors(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        errors = [_connectivity_error(p[0], t[0], m[0]) for p, t, m in zip(pred, target, mask, strict=True)]
        return torch.stack(errors) / 1e3 if errors else pred.new_zeros(0)


class DtSSD(_MeanError):
    """Temporal coherence: per frame transition sqrt(mean(((p_t - p_t-1) - (g_t - g_t-1))^2)) x 1e2, averaged.

    One unit is an RMS error of 0.01 alpha per frame in the temporal derivative, over the whole frame.
    Each update is a set of whole clips: transitions between two update calls are not seen, so evaluate a
    long video in chunks that overlap by one frame (each chunk starting with the previous chunk's last
    frame) to count every transition exactly once.
    """

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add clips.

        Args:
            pred: Predicted alpha, float in [0, 1]: clips [B,T,1,H,W] or one clip of consecutive frames [T,1,H,W].
            target: Ground-truth alpha of the same shape.

        Raises:
            ValueError: A shape, dtype or range other than the above, naming the argument.
        """
        _check_mattes(pred, target, forms=_CLIPS, ranks=(4, 5))
        if pred.ndim == 4:
            pred, target = pred[None], target[None]
        pred, target = pred.double(), target.double()
        difference = pred.diff(dim=1) - target.diff(dim=1)
        self._accumulate(difference.pow(2).mean((2, 3, 4)).sqrt() * 1e2)


def _check_mattes(pred: Tensor, target: Tensor, forms: str, ranks: tuple[int, ...]) -> None:
    """Raise ValueError unless pred and target are float tensors of one shape, in `ranks`, channel 1, in [0, 1]."""
    for name, matte in (("pred", pred), ("target", target)):
        if not isinstance(matte, Tensor) or not matte.is_floating_point():
            raise ValueError(
                f"{name} must be a float tensor {forms} with values in [0, 1]; got {_describe(matte)}"
            )
        if matte.ndim not in ranks or matte.shape[-3] != 1 or matte.shape[-1] == 0 or matte.shape[-2] == 0:
            raise ValueError(f"{name} must have shape {forms}, one channel; got {tuple(matte.shape)}")
        if not bool(((matte >= 0) & (matte <= 1)).all()):
            raise ValueError(f"{name} must have values in [0, 1] (no NaN); got values outside that range")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


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
