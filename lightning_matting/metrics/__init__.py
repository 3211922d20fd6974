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
:func:`unknown_region` to turn a DIM-style trimap (128 = unknown) into one. Each metric is also a
function of one batch in :mod:`lightning_matting.metrics.functional` (``sad``, ``mse``,
``gradient_error``, ``connectivity_error``, ``dtssd``).

Example:
    >>> import torch
    >>> from torchmetrics import MetricCollection
    >>> metrics = MetricCollection([SAD(), MSE(), GradientError(), ConnectivityError(), DtSSD()])
    >>> true_pha = torch.zeros(4, 1, 8, 8)  # [T,1,H,W]: consecutive frames of one video
    >>> metrics.update(true_pha + 0.1, true_pha)
    >>> {name: round(float(value), 4) for name, value in metrics.compute().items()}
    {'SAD': 0.0064, 'MSE': 10.0, 'GradientError': 0.0, 'ConnectivityError': 0.0, 'DtSSD': 0.0}
"""

from lightning_matting.metrics import functional
from lightning_matting.metrics.classes import MSE, SAD, ConnectivityError, DtSSD, GradientError
from lightning_matting.metrics.inputs import unknown_region

__all__ = ["SAD", "MSE", "GradientError", "ConnectivityError", "DtSSD", "unknown_region", "functional"]
