"""Training losses for matting models, as the BackgroundMattingV2 and RobustVideoMatting references train them.

Each function returns a dict of named scalar terms and their sum under "loss". Pure torch; no Lightning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_SOBEL_EPS = 1e-6  # inside the gradient magnitude's square root, so it has a gradient where the image is flat
_LAPLACIAN_LEVELS = 5
_COHERENCE_WEIGHT = 5.0  # RVM's temporal coherence terms are scaled by 5


def matting_base_loss(
    pred_pha: Tensor, pred_fgr: Tensor, pred_err: Tensor, true_pha: Tensor, true_fgr: Tensor
) -> dict[str, Tensor]:
    """BGMv2 MattingBase loss: pha, err [B,1,H,W] and fgr [B,3,H,W] in [0,1] -> scalar terms and "loss".

    Terms: "pha_l1", "pha_grad" (L1 between Sobel gradient magnitudes), "fgr_l1" (only where true_pha > 0),
    "err_mse" (pred_err against the detached |pred_pha - true_pha|).
    """
    _check_matte("pred_pha", pred_pha, "pred_fgr", pred_fgr)
    _check_same_shape("pred_pha", pred_pha, "true_pha", true_pha)
    _check_same_shape("pred_fgr", pred_fgr, "true_fgr", true_fgr)
    _check_same_shape("pred_err", pred_err, "pred_pha", pred_pha)
    terms = _alpha_and_foreground_terms(pred_pha, pred_fgr, true_pha, true_fgr, "")
    terms["err_mse"] = F.mse_loss(pred_err, (pred_pha.detach() - true_pha).abs())
    return _with_total(terms)


def matting_refine_loss(
    pha: Tensor,
    fgr: Tensor,
    pha_sm: Tensor,
    fgr_sm: Tensor,
    err_sm: Tensor,
    true_pha: Tensor,
    true_fgr: Tensor,
) -> dict[str, Tensor]:
    """BGMv2 MattingRefine loss: full-resolution pha [B,1,H,W], fgr [B,3,H,W]; coarse pha_sm, err_sm [B,1,h,w],
    fgr_sm [B,3,h,w]; ground truth at [H,W] -> scalar terms and "loss".

    Terms: "pha_l1", "pha_grad", "fgr_l1" at full resolution; "pha_sm_l1", "pha_sm_grad", "fgr_sm_l1" against
    the ground truth resized (bilinear) to [h,w]; "err_mse": err_sm upsampled to [H,W] against
    |upsampled pha_sm - true_pha|. That target is detached, as in the reference's MattingBase training (its
    MattingRefine training lets the error term's gradient reach pha_sm, which pulls the alpha off the truth).
    """
    _check_matte("pha", pha, "fgr", fgr)
    _check_matte("pha_sm", pha_sm, "fgr_sm", fgr_sm)
    _check_same_shape("pha", pha, "true_pha", true_pha)
    _check_same_shape("fgr", fgr, "true_fgr", true_fgr)
    _check_same_shape("err_sm", err_sm, "pha_sm", pha_sm)
    if pha_sm.shape[0] != pha.shape[0]:
        raise ValueError(
            f"pha_sm and pha must have the same batch size, got {tuple(pha_sm.shape)} and {tuple(pha.shape)}"
        )
    size, size_sm = true_pha.shape[-2:], pha_sm.shape[-2:]
    true_pha_sm = _resize(true_pha, size_sm)
    true_fgr_sm = _resize(true_fgr, size_sm)
    terms = _alpha_and_foreground_terms(pha, fgr, true_pha, true_fgr, "")
    terms.update(_alpha_and_foreground_terms(pha_sm, fgr_sm, true_pha_sm, true_fgr_sm, "_sm"))
    true_err = (_resize(pha_sm.detach(), size) - true_pha).abs()
    terms["err_mse"] = F.mse_loss(_resize(err_sm, size), true_err)
    return _with_total(terms)


def rvm_loss(pred_pha: Tensor, pred_fgr: Tensor, true_pha: Tensor, true_fgr: Tensor) -> dict[str, Tensor]:
    """RobustVideoMatting matting loss on clips: pha [B,T,1,H,W], fgr [B,T,3,H,W] in [0,1] -> terms and "loss".

    Terms: "pha_l1"; "pha_laplacian" (L1 between 5-level Laplacian pyramids, level k weighted 2^k, averaged over
    levels; needs H, W >= 64); "pha_coherence" (5 x MSE between frame-to-frame differences); "fgr_l1" and
    "fgr_coherence" on the foreground where true_pha > 0. The coherence terms are 0 for single frames (T = 1).
    """
    _check_matte("pred_pha", pred_pha, "pred_fgr", pred_fgr, form="[B,T,{},H,W]")
    _check_same_shape("pred_pha", pred_pha, "true_pha", true_pha)
    _check_same_shape("pred_fgr", pred_fgr, "true_fgr", true_fgr)
    _check_pyramid_size(pred_pha.shape[-2:])
    true_mask = true_pha > 0
    pred_fgr, true_fgr = pred_fgr * true_mask, true_fgr * true_mask
    terms = {
        "pha_l1": F.l1_loss(pred_pha, true_pha),
        "pha_laplacian": _laplacian_loss(pred_pha.flatten(0, 1), true_pha.flatten(0, 1)),
        "pha_coherence": _coherence(pred_pha, true_pha),
        "fgr_l1": F.l1_loss(pred_fgr, true_fgr),
        "fgr_coherence": _coherence(pred_fgr, true_fgr),
    }
    return _with_total(terms)


def _sobel_magnitude(image: Tensor) -> Tensor:
    """Per-channel Sobel gradient magnitude [B,C,H,W] of `image` [B,C,H,W]: kernels normalised by 1/8,
    replicated border, sqrt(gx^2 + gy^2 + 1e-6)."""
    smooth = image.new_tensor([1.0, 2.0, 1.0])
    slope = image.new_tensor([-1.0, 0.0, 1.0])
    kernels = torch.stack([torch.outer(smooth, slope), torch.outer(slope, smooth)]).unsqueeze(1) / 8
    b, c, h, w = image.shape
    padded = F.pad(image.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    gradients = F.conv2d(padded, kernels).reshape(b, c, 2, h, w)
    return (gradients.square().sum(dim=2) + _SOBEL_EPS).sqrt()


def _alpha_and_foreground_terms(
    pred_pha: Tensor, pred_fgr: Tensor, true_pha: Tensor, true_fgr: Tensor, suffix: str
) -> dict[str, Tensor]:
    """The L1, Sobel-gradient and masked-foreground terms, named pha{suffix}_l1, pha{suffix}_grad, fgr{suffix}_l1."""
    true_mask = true_pha > 0
    return {
        f"pha{suffix}_l1": F.l1_loss(pred_pha, true_pha),
        f"pha{suffix}_grad": F.l1_loss(_sobel_magnitude(pred_pha), _sobel_magnitude(true_pha)),
        f"fgr{suffix}_l1": F.l1_loss(pred_fgr * true_mask, true_fgr * true_mask),
    }


def _resize(image: Tensor, size: torch.Size) -> Tensor:
    """Bilinear resize [B,C,*] -> [B,C,size] (align_corners=False, no antialiasing), as the reference does."""
    return F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False)


def _coherence(pred: Tensor, true: Tensor) -> Tensor:
    """5 x MSE between the time derivatives (frame differences) of [B,T,...] clips; 0 when T = 1."""
    if pred.shape[1] < 2:
        return pred.new_zeros(())
    return F.mse_loss(pred.diff(dim=1), true.diff(dim=1)) * _COHERENCE_WEIGHT


def _laplacian_loss(pred: Tensor, true: Tensor) -> Tensor:
    """Mean over levels k of 2^k x L1 between the Laplacian pyramids of [N,C,H,W] `pred` and `true`."""
    total = pred.new_zeros(())
    for level, (pred_band, true_band) in enumerate(
        zip(_laplacian_pyramid(pred), _laplacian_pyramid(true), strict=True)
    ):
        total = total + 2**level * F.l1_loss(pred_band, true_band)
    return total / _LAPLACIAN_LEVELS


def _laplacian_pyramid(image: Tensor) -> list[Tensor]:
    """Band-pass levels of [N,C,H,W] `image`: each (cropped to even size) minus its blurred 2x down-up copy."""
    kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=image.dtype, device=image.device)
    kernel = (torch.outer(kernel, kernel) / 256)[None, None]
    bands, current = [], image
    for _ in range(_LAPLACIAN_LEVELS):
        current = current[..., : current.shape[-2] // 2 * 2, : current.shape[-1] // 2 * 2]
        down = _gaussian_blur(current, kernel)[..., ::2, ::2]
        up = torch.zeros_like(current)
        up[..., ::2, ::2] = down * 4
        bands.append(current - _gaussian_blur(up, kernel))
        current = down
    return bands


def _gaussian_blur(image: Tensor, kernel: Tensor) -> Tensor:
    """5x5 `kernel` [1,1,5,5] applied per channel to [N,C,H,W] `image` with reflected borders."""
    n, c, h, w = image.shape
    padded = F.pad(image.reshape(n * c, 1, h, w), (2, 2, 2, 2), mode="reflect")
    return F.conv2d(padded, kernel).reshape(n, c, h, w)


def _check_pyramid_size(size: torch.Size) -> None:
    """The Laplacian pyramid blurs every level with a reflected 2-pixel border: every level needs an even side >= 4."""
    for side in size:
        for _ in range(_LAPLACIAN_LEVELS):
            side = side // 2 * 2
            if side < 4:
                raise ValueError(
                    f"rvm_loss needs H and W of at least 64 for its {_LAPLACIAN_LEVELS}-level Laplacian pyramid, "
                    f"got {tuple(size)}"
                )
            side //= 2


def _check_matte(pha_label: str, pha: Tensor, fgr_label: str, fgr: Tensor, form: str = "[B,{},H,W]") -> None:
    """`pha` must be of `form` with 1 channel and `fgr` with 3, the same in every other dimension."""
    rank = form.count(",") + 1
    for label, tensor, channels in ((pha_label, pha, 1), (fgr_label, fgr, 3)):
        if tensor.dim() != rank or tensor.shape[-3] != channels:
            raise ValueError(f"{label} must be {form.format(channels)}, got {tuple(tensor.shape)}")
    if pha.shape[:-3] + pha.shape[-2:] != fgr.shape[:-3] + fgr.shape[-2:]:
        raise ValueError(
            f"{pha_label} and {fgr_label} must match in all but channels, got {tuple(pha.shape)} and {tuple(fgr.shape)}"
        )


def _check_same_shape(first_label: str, first: Tensor, second_label: str, second: Tensor) -> None:
    if first.shape != second.shape:
        raise ValueError(
            f"{first_label} and {second_label} must have the same shape, "
            f"got {tuple(first.shape)} and {tuple(second.shape)}"
        )


def _with_total(terms: dict[str, Tensor]) -> dict[str, Tensor]:
    """`terms` plus "loss", their unweighted sum (the references' total)."""
    return {**terms, "loss": torch.stack(list(terms.values())).sum()}
