"""One small adapter per model family, so the module never sees a family's own call or tuple.

Every adapter maps `(net, src, bgr or None, state, wanted)` to `({name: tensor}, state)`: `net` is the
network to run (the training network, its inference copy, or a compiled one: the adapter keeps none, so a
network replaced later is the one that runs), src and bgr are [B,3,H,W] in [0,1] (B consecutive frames of
one video for recurrent models), `wanted` names the raw outputs needed (pha, fgr, err, ref, seg), and every
returned tensor is [B,C,H,W] at the input size. `state` is None for stateless models and the recurrent
state otherwise (None starts a video). A bgr of batch size 1 is one plate for the whole batch.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._dynamo.eval_frame import OptimizedModule

from lightning_matting.losses import matting_base_loss, matting_refine_loss, rvm_loss
from lightning_matting.models.bgmv2 import MattingBase, MattingRefine
from lightning_matting.models.rvm import RobustVideoMatting

RawOutputs = dict[str, Tensor]


class Adapter:
    """Base: `provides` lists the raw outputs a family can give; `needs_background`, `recurrent`."""

    provides: frozenset[str] = frozenset({"pha", "fgr"})
    needs_background = True
    recurrent = False

    def __call__(
        self, net: nn.Module, src: Tensor, bgr: Tensor | None, state: Any, wanted: set[str]
    ) -> tuple[RawOutputs, Any]:
        raise NotImplementedError

    def training_losses(
        self,
        net: nn.Module,
        src: Tensor,
        bgr: Tensor | None,
        true_pha: Tensor,
        true_fgr: Tensor,
        *,
        base_only: bool = False,
        downsample_ratio: float | None = None,
    ) -> RawOutputs:
        """The family's losses; a network of unknown family (TorchScript, a user's module) has none.

        Args:
            net: The network to train.
            src: Source frames [B,3,H,W] or clips [B,T,3,H,W] in [0,1].
            bgr: Background plates like src (BGMv2), or None.
            true_pha: Ground-truth alpha [B,1,H,W] or [B,T,1,H,W] in [0,1].
            true_fgr: Ground-truth foreground like src.
            base_only: BGMv2 MattingRefine: train its base network alone, at the input size.
            downsample_ratio: RVM: the scale its encoder runs at; None: the adapter's own.

        Returns:
            {term: scalar} with their sum under "loss".

        Raises:
            TypeError: Always, here: only our BGMv2 and RVM networks train through MattingModule.
        """
        raise TypeError(
            f"MattingModule trains our BackgroundMattingV2 and RobustVideoMatting networks, whose losses it "
            f"knows; {type(net).__name__} has none here: train it yourself or load it as a variant"
        )


def _pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad the bottom/right of [B,C,H,W] so that H and W divide by `multiple`."""
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


def _full_size(x: Tensor, height: int, width: int, padded: tuple[int, int], mode: str) -> Tensor:
    """Resize a low-resolution map to the padded input size, then crop the padding away."""
    if x.shape[-2:] != padded:
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        x = F.interpolate(x, size=padded, mode=mode, **kwargs)
    return x[..., :height, :width]


class BGMv2Adapter(Adapter):
    """MattingBase / MattingRefine, or any module or TorchScript model called as `net(src, bgr)`.

    The net returns the reference tuple: (pha, fgr, err, hid) for a base model, (pha, fgr, pha_sm,
    fgr_sm, err_sm, ref_sm) for a refine model, or (pha, fgr). Inputs are padded (edge replicated) to
    a multiple of 4 and outputs cropped back, so any frame size works; err is upsampled bilinearly
    and ref nearest.
    """

    def __init__(self, family: Literal["base", "refine", "other"]):
        self.family = family
        self.provides = frozenset({"pha", "fgr", "err"} if family == "base" else {"pha", "fgr", "err", "ref"})

    @classmethod
    def for_net(cls, net: nn.Module) -> BGMv2Adapter:
        if isinstance(net, MattingRefine):
            return cls("refine")
        if isinstance(net, MattingBase):
            return cls("base")
        # A black box: what it provides shows in its tuple's length at the first call.
        return cls("other")

    def __call__(
        self, net: nn.Module, src: Tensor, bgr: Tensor | None, state: Any, wanted: set[str]
    ) -> tuple[RawOutputs, Any]:
        height, width = src.shape[-2:]
        bgr = bgr.expand_as(src) if bgr.shape[0] == 1 else bgr  # one static plate for the batch
        src_p, bgr_p = _pad_to_multiple(src, 4), _pad_to_multiple(bgr, 4)
        padded = tuple(src_p.shape[-2:])
        result = net(src_p, bgr_p)
        if len(result) == 6:
            pha, fgr, _, _, err, ref = result
            available = {"pha": pha, "fgr": fgr, "err": err, "ref": ref}
        elif len(result) == 4:
            pha, fgr, err, _ = result
            available = {"pha": pha, "fgr": fgr, "err": err}
        elif len(result) == 2:
            available = {"pha": result[0], "fgr": result[1]}
        else:
            raise ValueError(
                f"the model returned {len(result)} outputs; expected the BackgroundMattingV2 tuple "
                "(pha, fgr, err, hid), (pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm) or (pha, fgr)"
            )
        missing = wanted - set(available)
        if missing:
            raise ValueError(f"the model does not produce {sorted(missing)}; it gives {sorted(available)}")
        return {
            name: _full_size(
                available[name], height, width, padded, "nearest" if name == "ref" else "bilinear"
            )
            for name in wanted
        }, None

    def training_losses(
        self,
        net: nn.Module,
        src: Tensor,
        bgr: Tensor | None,
        true_pha: Tensor,
        true_fgr: Tensor,
        *,
        base_only: bool = False,
        downsample_ratio: float | None = None,
    ) -> RawOutputs:
        """BackgroundMattingV2's losses: MattingBase's (also a MattingRefine's base network with
        `base_only`), or MattingRefine's with its coarse outputs; clips [B,T,C,H,W] count as B*T frames."""
        if src.dim() == 5:
            src, bgr, true_pha, true_fgr = (x.flatten(0, 1) for x in (src, bgr, true_pha, true_fgr))
        if self.family == "refine" and base_only:
            pha, fgr, err, _ = net.base_forward(src, bgr)
            return matting_base_loss(pha, fgr, err, true_pha, true_fgr)
        if self.family == "refine":
            pha, fgr, pha_sm, fgr_sm, err_sm, _ = net(src, bgr)
            return matting_refine_loss(pha, fgr, pha_sm, fgr_sm, err_sm, true_pha, true_fgr)
        if self.family == "base":
            pha, fgr, err, _ = net(src, bgr)
            return matting_base_loss(pha, fgr, err, true_pha, true_fgr)
        return super().training_losses(net, src, bgr, true_pha, true_fgr)


class RVMAdapter(Adapter):
    """RobustVideoMatting (ours or an official TorchScript export): recurrent, no background plate.

    A batch of B consecutive frames runs as one clip [1,B,3,H,W]; the state is the tuple r1..r4.
    `seg` (the segmentation pass, a logit) is returned as a probability in [0,1].
    """

    provides = frozenset({"pha", "fgr", "seg"})
    needs_background = False
    recurrent = True

    def __init__(self, downsample_ratio: float | None, trainable: bool):
        self.downsample_ratio = downsample_ratio
        self.trainable = trainable

    def _ratio(self, src: Tensor) -> float:
        if self.downsample_ratio is not None:
            return self.downsample_ratio
        return min(512 / max(src.shape[-2:]), 1.0)

    def __call__(
        self, net: nn.Module, src: Tensor, bgr: Tensor | None, state: Any, wanted: set[str]
    ) -> tuple[RawOutputs, Any]:
        clip = src.unsqueeze(0)
        rec = list(state) if state is not None else [None] * 4
        ratio = self._ratio(src)
        out: RawOutputs = {}
        new_state = None
        if wanted & {"pha", "fgr"}:
            fgr, pha, *new_state = net(clip, *rec, ratio)
            out["fgr"], out["pha"] = fgr[0], pha[0]
        if "seg" in wanted:
            seg, *seg_state = net(clip, *rec, ratio, True)
            out["seg"] = seg[0].sigmoid()
            new_state = new_state or seg_state
        return {name: out[name] for name in wanted}, tuple(new_state)

    def training_losses(
        self,
        net: nn.Module,
        src: Tensor,
        bgr: Tensor | None,
        true_pha: Tensor,
        true_fgr: Tensor,
        *,
        base_only: bool = False,
        downsample_ratio: float | None = None,
    ) -> RawOutputs:
        """RobustVideoMatting's matting loss from a fresh state: on clips [B,T,C,H,W], or on a batch of
        consecutive frames [B,C,H,W] as one clip [1,B,C,H,W]; at `downsample_ratio` when given."""
        if not self.trainable:
            return super().training_losses(net, src, bgr, true_pha, true_fgr)
        if src.dim() == 4:
            src, true_pha, true_fgr = src.unsqueeze(0), true_pha.unsqueeze(0), true_fgr.unsqueeze(0)
        ratio = self._ratio(src) if downsample_ratio is None else downsample_ratio
        fgr, pha, *_ = net(src, downsample_ratio=ratio)
        return rvm_loss(pha, fgr, true_pha, true_fgr)


def parameter_groups(net: nn.Module) -> dict[str, list[nn.Parameter]]:
    """`net`'s parameters as {"backbone", "refiner", "rest"} for our BGMv2 and RVM networks (the references'
    groups, ASPP and decoder together); any other network's all under "rest"."""
    parts = {"backbone": [], "refiner": []}
    if isinstance(net, MattingBase | RobustVideoMatting):
        parts["backbone"] = list(net.backbone.parameters())
        if isinstance(net, MattingRefine | RobustVideoMatting):
            parts["refiner"] = list(net.refiner.parameters())
    grouped = {id(p) for params in parts.values() for p in params}
    return {**parts, "rest": [p for p in net.parameters() if id(p) not in grouped]}


def _script_argument_names(net: torch.jit.ScriptModule) -> list[str]:
    return [argument.name for argument in net.forward.schema.arguments][1:]  # drop self


def make_adapter(net: nn.Module, downsample_ratio: float | None = None) -> Adapter:
    """The adapter for `net`: RVM (ours, or TorchScript whose forward takes r1..r4), else BGMv2-style.

    A network compiled with `torch.compile` counts as the network it compiles.
    """
    if isinstance(net, OptimizedModule):
        net = net._orig_mod
    if isinstance(net, RobustVideoMatting):
        return RVMAdapter(downsample_ratio, trainable=True)
    if isinstance(net, torch.jit.ScriptModule) and "r1" in _script_argument_names(net):
        return RVMAdapter(downsample_ratio, trainable=False)
    return BGMv2Adapter.for_net(net)
