"""The matte metrics as torchmetrics `Metric`s: each keeps its functional update's two sums as its states.

States are a float64 sum of per-item errors and an int64 item count, both reduced with "sum", so they
merge across batches, processes and `merge_state`. Each metric's sum has its own name (as torchmetrics'
own metrics do), so a `MetricCollection` never puts two of them in one compute group.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_matting.metrics.functional import (
    _connectivity_error_compute,
    _connectivity_error_update,
    _dtssd_compute,
    _dtssd_update,
    _gradient_error_compute,
    _gradient_error_update,
    _mse_compute,
    _mse_update,
    _sad_compute,
    _sad_update,
)

__all__ = ["SAD", "MSE", "GradientError", "ConnectivityError", "DtSSD"]


class _MatteError(Metric):
    """A mean error, lower is better, at least 0; not differentiable."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0
    total: Tensor


class SAD(_MatteError):
    """Sum of absolute differences over the region / 1e3, per image, averaged over the images seen
    (`functional.sad`; its arguments are `update`'s)."""

    sum_abs_error: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sum_abs_error", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add images pred, target (float [B,1,H,W] in [0, 1]) over mask (bool [B,1,H,W]; None: all pixels)."""
        sum_abs_error, total = _sad_update(pred, target, mask)
        self.sum_abs_error = (
            self.sum_abs_error + sum_abs_error
        )  # not in place: a state made under inference_mode stays updatable
        self.total = self.total + total  # not in place: a state made under inference_mode stays updatable

    def compute(self) -> Tensor:
        """Mean over every image seen, float64 scalar; nan before the first image."""
        return _sad_compute(self.sum_abs_error, self.total)


class MSE(_MatteError):
    """Mean squared error over the region x 1e3, per image, averaged over the images seen whose region is
    not empty (`functional.mse`; its arguments are `update`'s)."""

    sum_squared_error: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sum_squared_error", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add images pred, target (float [B,1,H,W] in [0, 1]) over mask (bool [B,1,H,W]; None: all pixels)."""
        sum_squared_error, total = _mse_update(pred, target, mask)
        self.sum_squared_error = (
            self.sum_squared_error + sum_squared_error
        )  # not in place: a state made under inference_mode stays updatable
        self.total = self.total + total  # not in place: a state made under inference_mode stays updatable

    def compute(self) -> Tensor:
        """Mean over every image seen with a non-empty region, float64 scalar; nan before the first."""
        return _mse_compute(self.sum_squared_error, self.total)


class GradientError(_MatteError):
    """Sum over the region of (|grad pred| - |grad target|)^2 / 1e3, per image, averaged over the images
    seen (`functional.gradient_error`; its arguments are `update`'s)."""

    sum_gradient_error: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sum_gradient_error", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add images pred, target (float [B,1,H,W] in [0, 1]) over mask (bool [B,1,H,W]; None: all pixels)."""
        sum_gradient_error, total = _gradient_error_update(pred, target, mask)
        self.sum_gradient_error = (
            self.sum_gradient_error + sum_gradient_error
        )  # not in place: a state made under inference_mode stays updatable
        self.total = self.total + total  # not in place: a state made under inference_mode stays updatable

    def compute(self) -> Tensor:
        """Mean over every image seen, float64 scalar; nan before the first image."""
        return _gradient_error_compute(self.sum_gradient_error, self.total)


class ConnectivityError(_MatteError):
    """Connectivity error over the region / 1e3, per image, averaged over the images seen (step 0.1, theta
    0.15; `functional.connectivity_error`; its arguments are `update`'s)."""

    sum_connectivity_error: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sum_connectivity_error", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Add images pred, target (float [B,1,H,W] in [0, 1]) over mask (bool [B,1,H,W]; None: all pixels)."""
        sum_connectivity_error, total = _connectivity_error_update(pred, target, mask)
        self.sum_connectivity_error = (
            self.sum_connectivity_error + sum_connectivity_error
        )  # not in place: a state made under inference_mode stays updatable
        self.total = self.total + total  # not in place: a state made under inference_mode stays updatable

    def compute(self) -> Tensor:
        """Mean over every image seen, float64 scalar; nan before the first image."""
        return _connectivity_error_compute(self.sum_connectivity_error, self.total)


class DtSSD(_MatteError):
    """Temporal coherence: the RMS error of the temporal derivative x 1e2 per frame transition, averaged over
    the transitions seen (`functional.dtssd`; its arguments are `update`'s).

    Each update is a set of whole clips: transitions between two update calls are not seen, so evaluate a
    long video in chunks that overlap by one frame (each chunk starting with the previous chunk's last
    frame) to count every transition exactly once.
    """

    sum_dtssd: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sum_dtssd", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add clips pred, target: float in [0, 1], clips [B,T,1,H,W] or consecutive frames [T,1,H,W]."""
        sum_dtssd, total = _dtssd_update(pred, target)
        self.sum_dtssd = (
            self.sum_dtssd + sum_dtssd
        )  # not in place: a state made under inference_mode stays updatable
        self.total = self.total + total  # not in place: a state made under inference_mode stays updatable

    def compute(self) -> Tensor:
        """Mean over every frame transition seen, float64 scalar; nan before the first transition."""
        return _dtssd_compute(self.sum_dtssd, self.total)
