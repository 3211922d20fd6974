"""RobustVideoMatting for CPU inference: its decoder channels_last, fewer full-size temporaries.

On a CPU (bench/RESULTS.md) the decoder's 3x3 convolutions at the internal
resolution are most of RVM's time, and oneDNN runs them faster on channels_last tensors (its brgemm kernels)
than on NCHW ones (reordered to a blocked layout and back on every call); bilinear x2 upsampling of 32
channels is faster in channels_last. Converting the whole network costs more than it gains: the ConvGRU's
`torch.stack` gives NCHW, so every later concatenation mixes layouts and every convolution copies its input
back. So the decoder alone runs channels_last (`ChannelsLastDecoder`) and avoids what it can:

* a convolution over `cat(upsampled, skip, src)` is run as one convolution per part, summed
  (`_SplitConv`), without the concatenated tensor;
* a block's output `cat(a, gru(b))` is written in place into the convolution's output;
* a single-frame ConvGRU step returns its state without `torch.stack`.

At a downsample ratio below 1 the guided-filter refiner's full-size linear model is applied in place
(`InPlaceRefiner`): each full-size temporary is fresh memory, which the kernel maps page by page.

The results equal the network's up to the order of float additions."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .rvm import (
    BottleneckBlock,
    ConvGRU,
    DeepGuidedFilterRefiner,
    FastGuidedFilterRefiner,
    OutputBlock,
    RecurrentDecoder,
    RobustVideoMatting,
    UpsamplingBlock,
    _upsample_to,
)


def _channels_last(x: Tensor | None) -> Tensor | None:
    """`x` in channels_last memory (itself when it already is), None as it is."""
    return None if x is None else x.contiguous(memory_format=torch.channels_last)


class _SplitConv(nn.Module):
    """A convolution over a channel concatenation, as the sum of one convolution per part.

    Args:
        conv: The convolution (BatchNorm folded into it, stride 1) whose input is the concatenation.
        split: Input channels of each part, in the order of the concatenation.
    """

    def __init__(self, conv: nn.Conv2d, split: list[int]) -> None:
        super().__init__()
        self.padding = conv.padding
        weights = conv.weight.detach().split(split, dim=1)
        for index, weight in enumerate(weights):
            self.register_buffer(f"weight{index}", weight.contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())

    def forward(self, *parts: Tensor) -> Tensor:
        """conv(cat(parts, dim=1)) for channels_last parts; channels_last output."""
        out = F.conv2d(parts[-1], getattr(self, f"weight{len(parts) - 1}"), self.bias, padding=self.padding)
        for index, part in enumerate(parts[:-1]):
            out += F.conv2d(part, getattr(self, f"weight{index}"), padding=self.padding)
        return out


class _ChannelsLastGRU(nn.Module):
    """`ConvGRU` on channels_last tensors; a single step returns its state as the output (no stack)."""

    def __init__(self, gru: ConvGRU) -> None:
        super().__init__()
        self.channels = gru.channels
        self.ih = gru.ih[0].to(memory_format=torch.channels_last)  # followed by a sigmoid
        self.hh = gru.hh[0].to(memory_format=torch.channels_last)  # followed by a tanh

    def forward(self, x: Tensor, h: Tensor | None, time_steps: int) -> tuple[Tensor, Tensor]:
        if h is None:
            h = torch.zeros_like(x[::time_steps], memory_format=torch.channels_last)
        outputs: list[Tensor] = []
        for t in range(time_steps):
            xt = x[t::time_steps]  # frame t of each clip, a view in x's layout (unflatten would lose it)
            r, z = self.ih(torch.cat([xt, h], dim=1)).sigmoid_().split(self.channels, dim=1)
            candidate = self.hh(torch.cat([xt, r * h], dim=1)).tanh_()
            h = (1 - z) * h + z * candidate
            outputs.append(h)
        if time_steps == 1:
            return h, h
        return _channels_last(torch.stack(outputs, dim=1).flatten(0, 1)), h


def _gru_on_second_half(y: Tensor, gru: _ChannelsLastGRU, r: Tensor | None, time_steps: int) -> Tensor:
    """Run `gru` on the second half of y's channels and write its output there: cat(a, gru(b)) in place."""
    half = y.size(1) // 2
    b, r = gru(y[:, half:], r, time_steps)
    y[:, half:] = b
    return r


class _Bottleneck(nn.Module):
    """`BottleneckBlock` on channels_last tensors: a copy of x, its second half replaced by the ConvGRU's output."""

    def __init__(self, block: BottleneckBlock) -> None:
        super().__init__()
        self.gru = _ChannelsLastGRU(block.gru)

    def forward(self, x: Tensor, r: Tensor | None, time_steps: int) -> tuple[Tensor, Tensor]:
        y = x.clone(memory_format=torch.channels_last)
        return y, _gru_on_second_half(y, self.gru, r, time_steps)


class _Upsampling(nn.Module):
    """`UpsamplingBlock` on channels_last tensors; `in_channels`: those of x, the input upsampled."""

    def __init__(self, block: UpsamplingBlock, in_channels: int) -> None:
        super().__init__()
        conv = block.conv[0]
        self.conv = _SplitConv(conv, [in_channels, conv.in_channels - in_channels])
        self.gru = _ChannelsLastGRU(block.gru)

    def forward(
        self, x: Tensor, skip: Tensor, src: Tensor, r: Tensor | None, time_steps: int
    ) -> tuple[Tensor, Tensor]:
        y = self.conv(_upsample_to(x, src), torch.cat([skip, src], dim=1)).relu_()
        return y, _gru_on_second_half(y, self.gru, r, time_steps)


class _Output(nn.Module):
    """`OutputBlock` on channels_last tensors; `in_channels`: those of x, the input upsampled."""

    def __init__(self, block: OutputBlock, in_channels: int) -> None:
        super().__init__()
        first, second = block.conv[0], block.conv[3]
        self.conv1 = _SplitConv(first, [in_channels, first.in_channels - in_channels])
        self.conv2 = second.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor, src: Tensor) -> Tensor:
        return self.conv2(self.conv1(_upsample_to(x, src), src).relu_()).relu_()


class ChannelsLastDecoder(nn.Module):
    """A `RecurrentDecoder` (BatchNorm folded) run channels_last; same call, NCHW (contiguous) outputs.

    Args:
        decoder: The decoder whose layers are used (its convolutions' weights are copied to channels_last).
    """

    def __init__(self, decoder: RecurrentDecoder) -> None:
        super().__init__()
        self.decode4 = _Bottleneck(decoder.decode4)
        self.decode3 = _Upsampling(decoder.decode3, decoder.decode4.channels)
        self.decode2 = _Upsampling(decoder.decode2, decoder.decode3.out_channels)
        self.decode1 = _Upsampling(decoder.decode1, decoder.decode2.out_channels)
        self.decode0 = _Output(decoder.decode0, decoder.decode1.out_channels)

    def forward(
        self,
        s0: Tensor,
        features: list[Tensor],
        r1: Tensor | None,
        r2: Tensor | None,
        r3: Tensor | None,
        r4: Tensor | None,
        time_steps: int,
    ) -> list[Tensor]:
        """As `RecurrentDecoder.forward`: hidden features and the new states r1..r4."""
        s0 = _channels_last(s0)
        f1, f2, f3, f4 = (_channels_last(f) for f in features)
        s1 = F.avg_pool2d(s0, 2, 2, ceil_mode=True, count_include_pad=False)
        s2 = F.avg_pool2d(s1, 2, 2, ceil_mode=True, count_include_pad=False)
        s3 = F.avg_pool2d(s2, 2, 2, ceil_mode=True, count_include_pad=False)
        x4, r4 = self.decode4(f4, _channels_last(r4), time_steps)
        x3, r3 = self.decode3(x4, f3, s3, _channels_last(r3), time_steps)
        x2, r2 = self.decode2(x3, f2, s2, _channels_last(r2), time_steps)
        x1, r1 = self.decode1(x2, f1, s1, _channels_last(r1), time_steps)
        return [x.contiguous() for x in (self.decode0(x1, s0), r1, r2, r3, r4)]


class InPlaceRefiner(nn.Module):
    """A guided-filter refiner whose full-size linear model is applied in place; same call and outputs.

    Args:
        refiner: DeepGuidedFilterRefiner or FastGuidedFilterRefiner (its `linear_model` is used).
    """

    def __init__(self, refiner: DeepGuidedFilterRefiner | FastGuidedFilterRefiner) -> None:
        super().__init__()
        self.refiner = refiner

    def forward(
        self, fine_src: Tensor, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor, base_hid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(fgr residual, pha) at the size of `fine_src`, as the refiner's forward."""
        a, b = self.refiner.linear_model(base_src, base_fgr, base_pha, base_hid)
        size = (fine_src.size(2), fine_src.size(3))
        a = F.interpolate(a, size, mode="bilinear", align_corners=False)
        b = F.interpolate(b, size, mode="bilinear", align_corners=False)
        a[:, :3].mul_(fine_src)  # a * guidance + b, the guidance being (src, mean of src over RGB)
        a[:, 3:].mul_(fine_src.mean(1, keepdim=True))
        fgr_residual, pha = a.add_(b).split([3, 1], dim=1)
        return fgr_residual, pha


def rewrite_for_cpu(net: RobustVideoMatting) -> RobustVideoMatting:
    """Run the encoder and decoder channels_last and the refiner in place, when `net` is on a CPU.

    Args:
        net: An eval-mode RobustVideoMatting with BatchNorm folded (the inference copy being built).

    Returns:
        `net`; unchanged on other devices, where these rewrites were not measured.
    """
    if next(net.parameters()).device.type == "cpu":
        net.backbone.to(memory_format=torch.channels_last)  # its outputs follow its weights' layout
        net.aspp.to(memory_format=torch.channels_last)
        net.decoder = ChannelsLastDecoder(net.decoder)
        net.refiner = InPlaceRefiner(net.refiner)
    return net
