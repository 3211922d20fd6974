"""The inputs of the matte metrics: checks of mattes and masks, and a trimap's unknown region as a mask."""

from __future__ import annotations

import torch
from torch import Tensor

IMAGES = "[B,1,H,W]"
CLIPS = "clips [B,T,1,H,W] or consecutive frames [T,1,H,W]"


def unknown_region(trimap: Tensor) -> Tensor:
    """Bool mask of a trimap's unknown region: uint8 trimap [B,1,H,W] with values 0, 128, 255 -> trimap == 128.

    Example:
        >>> trimap = torch.tensor([[[[0, 128], [255, 128]]]], dtype=torch.uint8)
        >>> unknown_region(trimap)
        tensor([[[[False,  True],
                  [False,  True]]]])
    """
    if not isinstance(trimap, Tensor) or trimap.dtype != torch.uint8:
        raise ValueError(
            f"trimap must be a uint8 tensor {IMAGES} with values 0, 128, 255; got {describe(trimap)}"
        )
    if trimap.ndim != 4 or trimap.shape[1] != 1:
        raise ValueError(f"trimap must have shape {IMAGES}; got {tuple(trimap.shape)}")
    if not bool(((trimap == 0) | (trimap == 128) | (trimap == 255)).all()):
        raise ValueError("trimap must hold only the values 0 (background), 128 (unknown), 255 (foreground)")
    return trimap == 128


def check_mattes(pred: Tensor, target: Tensor, forms: str, ranks: tuple[int, ...]) -> None:
    """Raise ValueError unless pred and target are float tensors of one shape, in `ranks`, channel 1, in [0, 1]."""
    for name, matte in (("pred", pred), ("target", target)):
        if not isinstance(matte, Tensor) or not matte.is_floating_point():
            raise ValueError(
                f"{name} must be a float tensor {forms} with values in [0, 1]; got {describe(matte)}"
            )
        if matte.ndim not in ranks or matte.shape[-3] != 1 or matte.shape[-1] == 0 or matte.shape[-2] == 0:
            raise ValueError(f"{name} must have shape {forms}, one channel; got {tuple(matte.shape)}")
        if not bool(((matte >= 0) & (matte <= 1)).all()):
            raise ValueError(f"{name} must have values in [0, 1] (no NaN); got values outside that range")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def image_region(pred: Tensor, mask: Tensor | None) -> Tensor:
    """The evaluated pixels of images `pred` [B,1,H,W]: `mask` checked (bool, shaped like pred), or all of them."""
    if mask is None:
        return torch.ones_like(pred, dtype=torch.bool)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != pred.shape:
        raise ValueError(
            f"mask must be a bool tensor shaped like pred {tuple(pred.shape)} (True = evaluated pixel); "
            f"got {describe(mask)} (a trimap: pass unknown_region(trimap))"
        )
    return mask


def describe(value: object) -> str:
    """A value's type for an error message: a tensor's dtype and shape, else its type's name."""
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
