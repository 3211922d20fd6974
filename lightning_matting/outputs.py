"""Model outputs -> the named output tensors that users write: com, pha, fgr, err, ref (and seg)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch

OUTPUTS = ("com", "pha", "fgr", "err", "ref", "seg")
OutputName = Literal["com", "pha", "fgr", "err", "ref", "seg"]
DEFAULT_TARGET_COLOR = (120 / 255, 255 / 255, 155 / 255)  # the reference's green screen

# What the network must provide for each named output.
_NEEDS = {
    "com": {"pha", "fgr"},
    "pha": {"pha"},
    "fgr": {"fgr"},
    "err": {"err"},
    "ref": {"ref"},
    "seg": {"seg"},
}


def check_output_names(names: Iterable[str], argument: str = "outputs") -> tuple[str, ...]:
    """Validate output names against OUTPUTS; returns them as a tuple without duplicates, in order."""
    if isinstance(names, str):
        names = [names]
    names = tuple(dict.fromkeys(names))
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown or not names:
        raise ValueError(f"{argument} must be a non-empty list of {', '.join(OUTPUTS)}; got {list(names)}")
    return names


def network_outputs_for(names: Iterable[str]) -> set[str]:
    """The raw network outputs (pha, fgr, err, ref, seg) that the named outputs need."""
    return set().union(*(_NEEDS[name] for name in names))


def color_tensor(color: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """An RGB colour in [0,1] as a [1,3,1,1] tensor on `like`'s device and dtype."""
    return torch.tensor(color, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


def composite(fgr: torch.Tensor, pha: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """fgr*pha + target*(1-pha): [B,3,H,W]; target [B,3,H,W] or broadcastable ([1,3,1,1] colour).

    One lerp kernel and one allocation (the arithmetic spelled out costs four of each).
    """
    return torch.lerp(target.to(fgr.dtype).expand_as(fgr), fgr, pha.to(fgr.dtype))


def straight_rgba(fgr: torch.Tensor, pha: torch.Tensor) -> torch.Tensor:
    """[fgr * (pha > 0), pha]: a straight-alpha RGBA [B,4,H,W] for formats that carry alpha."""
    return torch.cat([fgr * (pha > 0), pha], dim=1)


def rgba_com_sources(names: Sequence[str]) -> tuple[str, ...]:
    """The outputs taken from a step to write `names` with an RGBA com: com is built from pha and fgr
    (`with_rgba_com`), so they are taken instead of it; the others as they are, in order."""
    if "com" not in names:
        return tuple(names)
    return tuple(dict.fromkeys([name for name in names if name != "com"] + ["pha", "fgr"]))


def with_rgba_com(frames: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`frames` with "com" the straight-alpha RGBA [B,4,H,W] of its "fgr" [B,3,H,W] and "pha" [B,1,H,W]."""
    return {**frames, "com": straight_rgba(frames["fgr"], frames["pha"])}


def named_outputs(
    raw: dict[str, torch.Tensor],
    names: Iterable[str],
    target: torch.Tensor | None,
    target_color: Sequence[float],
) -> dict[str, torch.Tensor]:
    """The requested outputs from raw network outputs (all [B,C,H,W] at the frame size).

    `com` composites fgr over `target` [B,3,H,W] when given, else over `target_color` (RGB in [0,1]).
    """
    out = {}
    for name in names:
        if name == "com":
            background = target if target is not None else color_tensor(target_color, raw["fgr"])
            out[name] = composite(raw["fgr"], raw["pha"], background.to(raw["fgr"].dtype))
        else:
            out[name] = raw[name]
    return out
