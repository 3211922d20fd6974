"""An inference copy of a network: BatchNorm folded into its convolution, the memory format that is faster
(for RVM on a CPU, its own rewrite: models/rvm_inference.py).

The copy computes the same function as the eval-mode network up to float rounding (on the golden inputs
within 1e-5, and 5e-5 where RVM's fast guided filter divides by a variance near 0; tests/test_inference.py)
without the per-layer normalisation. The network it is made from keeps its own layers, so training and
`state_dict()` are untouched. Only our own networks are rewritten: which convolution each BatchNorm follows
is known for them, and unknown for a user's module."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from lightning_matting.models.backbones import Bottleneck, ResNet
from lightning_matting.models.bgmv2 import Decoder, MattingBase, Refiner
from lightning_matting.models.rvm import RobustVideoMatting
from lightning_matting.models.rvm_inference import rewrite_for_cpu

# Modules whose forward applies bn<k> directly to the output of conv<k> (outside an nn.Sequential).
_NAMED_PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    ResNet: (("conv1", "bn1"),),
    Decoder: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    Refiner: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}

# bench/RESULTS.md: channels_last makes BackgroundMattingV2 faster on a CPU (its refiner's patch batches
# above all) and RobustVideoMatting, converted whole, slower
# (its ConvGRU's stack gives NCHW tensors that every later concatenation mixes with channels_last ones);
# RVM gets its own rewrite on a CPU instead (`rewrite_for_cpu`).
_CHANNELS_LAST: dict[type[nn.Module], bool] = {MattingBase: True, RobustVideoMatting: False}


def can_rewrite(net: nn.Module) -> bool:
    """Whether `net` is one of our networks, which `inference_copy` rewrites (others run as they are)."""
    return isinstance(net, tuple(_CHANNELS_LAST))


def fold_batch_norms(net: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that follows a Conv2d into it, in place; the BatchNorm becomes an Identity.

    Args:
        net: One of our networks in eval mode (its running statistics are what is folded).

    Returns:
        `net`, whose convolutions now carry the folded scale and bias.
    """
    for module in net.modules():
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for conv_name, norm_name in zip(names, names[1:], strict=False):
                _fold_pair(module, conv_name, norm_name)
        for conv_name, norm_name in _NAMED_PAIRS.get(type(module), ()):
            _fold_pair(module, conv_name, norm_name)
    return net


def _fold_pair(parent: nn.Module, conv_name: str, norm_name: str) -> None:
    conv, norm = parent._modules[conv_name], parent._modules[norm_name]
    if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
        parent._modules[conv_name] = fuse_conv_bn_eval(conv, norm)
        parent._modules[norm_name] = nn.Identity()


def inference_copy(net: nn.Module) -> nn.Module:
    """A frozen eval-mode copy of one of our networks with BatchNorm folded, in its faster memory format
    (BGMv2: channels_last; RVM on a CPU: `rewrite_for_cpu`, channels_last encoder and decoder).

    Args:
        net: MattingBase, MattingRefine or RobustVideoMatting, on any device and dtype.

    Returns:
        An independent module with the same call and outputs (up to float rounding); its parameters do not
        require gradients and do not follow later changes to `net`.

    Raises:
        TypeError: `net` is not one of our networks (see `can_rewrite`).
    """
    if not can_rewrite(net):
        raise TypeError(
            f"inference_copy rewrites MattingBase, MattingRefine and RobustVideoMatting, got {type(net)}"
        )
    fast = fold_batch_norms(copy.deepcopy(net).eval())
    fast.requires_grad_(False)
    if next(flag for family, flag in _CHANNELS_LAST.items() if isinstance(net, family)):
        return ChannelsLast(fast.to(memory_format=torch.channels_last))
    if isinstance(fast, RobustVideoMatting):
        return rewrite_for_cpu(fast)
    return fast


class ChannelsLast(nn.Module):
    """Runs a channels_last network on channels_last inputs and returns contiguous (NCHW) outputs.

    Args:
        net: A network converted with `.to(memory_format=torch.channels_last)`; its [N,C,H,W] tensor
            arguments are made channels_last, other arguments (None, numbers, [B,T,C,H,W] clips) pass as
            they are.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *inputs: Any) -> tuple[Tensor, ...]:
        outputs = self.net(*(_channels_last(x) for x in inputs))
        return tuple(x.contiguous() for x in outputs)


def _channels_last(x: Any) -> Any:
    return x.contiguous(memory_format=torch.channels_last) if isinstance(x, Tensor) and x.dim() == 4 else x
