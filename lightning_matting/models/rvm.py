"""RobustVideoMatting: recurrent human matting, checkpoint-compatible with the official release.

Frames are processed as one flat batch [B*T, C, H, W] everywhere except in the ConvGRUs, which
step through time; so a clip fed whole gives the same result as its frames fed one by one with
the state carried.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_matting.validators import check_choice

from .backbones import ResNet
from .mobilenetv3 import MobileNetV3LargeEncoder

VARIANTS = ("mobilenetv3", "resnet50")
REFINERS = ("deep_guided_filter", "fast_guided_filter")

# variant: (backbone feature channels f1..f4, LR-ASPP output channels, decoder channels)
_VARIANT_CHANNELS = {
    "mobilenetv3": ((16, 24, 40, 960), 128, (80, 40, 32, 16)),
    "resnet50": ((64, 256, 512, 2048), 256, (128, 64, 32, 16)),
}


def auto_downsample_ratio(height: int, width: int) -> float:
    """The reference's automatic ratio, min(512 / max(height, width), 1)."""
    return min(512 / max(height, width), 1.0)


def _imagenet_normalize(x: Tensor) -> Tensor:
    """(x - mean) / std per RGB channel with ImageNet statistics (no buffers, so no state-dict keys)."""
    mean = torch.tensor([0.485, 0.456, 0.406], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    return [conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def _upsample_to(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear x2 upsampling of `x`, cropped to the height and width of `like`."""
    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return x[:, :, : like.size(2), : like.size(3)]


class LRASPP(nn.Module):
    """Lite R-ASPP: (1x1 conv, BN, ReLU)(x) * sigmoid(1x1 conv(global mean of x))."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.aspp1 = nn.Sequential(*_conv_bn_relu(in_channels, out_channels, 1))
        self.aspp2 = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.aspp1(x) * self.aspp2(x)


class ConvGRU(nn.Module):
    """Convolutional GRU over `time_steps` consecutive frames.

    `forward(x, h, time_steps)`: x [B*T, C, h, w] (frames of a clip adjacent), h [B, C, h, w] or None
    (zeros); returns the output for every frame [B*T, C, h, w] and the last state [B, C, h, w].
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.ih = nn.Sequential(nn.Conv2d(2 * channels, 2 * channels, 3, padding=1), nn.Sigmoid())
        self.hh = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, padding=1), nn.Tanh())

    def forward(self, x: Tensor, h: Tensor | None, time_steps: int) -> tuple[Tensor, Tensor]:
        frames = x.unflatten(0, (-1, time_steps))
        if h is None:
            h = torch.zeros_like(frames[:, 0])
        outputs: list[Tensor] = []
        for t in range(time_steps):
            xt = frames[:, t]
            r, z = self.ih(torch.cat([xt, h], dim=1)).split(self.channels, dim=1)
            candidate = self.hh(torch.cat([xt, r * h], dim=1))
            h = (1 - z) * h + z * candidate
            outputs.append(h)
        return torch.stack(outputs, dim=1).flatten(0, 1), h


class BottleneckBlock(nn.Module):
    """At 1/16: a ConvGRU on the second half of the channels, the first half passed through."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.gru = ConvGRU(channels // 2)

    def forward(self, x: Tensor, r: Tensor | None, time_steps: int) -> tuple[Tensor, Tensor]:
        a, b = x.split(self.channels // 2, dim=1)
        b, r = self.gru(b, r, time_steps)
        return torch.cat([a, b], dim=1), r


class UpsamplingBlock(nn.Module):
    """Upsample x2, concatenate skip feature and pooled source, conv-BN-ReLU, ConvGRU on half."""

    def __init__(self, in_channels: int, skip_channels: int, src_channels: int, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv = nn.Sequential(*_conv_bn_relu(in_channels + skip_channels + src_channels, out_channels, 3))
        self.gru = ConvGRU(out_channels // 2)

    def forward(
        self, x: Tensor, skip: Tensor, src: Tensor, r: Tensor | None, time_steps: int
    ) -> tuple[Tensor, Tensor]:
        x = self.conv(torch.cat([_upsample_to(x, src), skip, src], dim=1))
        a, b = x.split(self.out_channels // 2, dim=1)
        b, r = self.gru(b, r, time_steps)
        return torch.cat([a, b], dim=1), r


class OutputBlock(nn.Module):
    """Upsample x2 to the source's size, concatenate the source, two (3x3 conv, BN, ReLU)."""

    def __init__(self, in_channels: int, src_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            *_conv_bn_relu(in_channels + src_channels, out_channels, 3),
            *_conv_bn_relu(out_channels, out_channels, 3),
        )

    def forward(self, x: Tensor, src: Tensor) -> Tensor:
        return self.conv(torch.cat([_upsample_to(x, src), src], dim=1))


class RecurrentDecoder(nn.Module):
    """ConvGRU decoder from 1/16 to full size; returns hidden features and the new states r1..r4."""

    def __init__(self, feature_channels: tuple[int, ...], decoder_channels: tuple[int, ...]) -> None:
        super().__init__()
        self.decode4 = BottleneckBlock(feature_channels[3])
        self.decode3 = UpsamplingBlock(feature_channels[3], feature_channels[2], 3, decoder_channels[0])
        self.decode2 = UpsamplingBlock(decoder_channels[0], feature_channels[1], 3, decoder_channels[1])
        self.decode1 = UpsamplingBlock(decoder_channels[1], feature_channels[0], 3, decoder_channels[2])
        self.decode0 = OutputBlock(decoder_channels[2], 3, decoder_channels[3])

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
        s1 = F.avg_pool2d(s0, 2, 2, ceil_mode=True, count_include_pad=False)
        s2 = F.avg_pool2d(s1, 2, 2, ceil_mode=True, count_include_pad=False)
        s3 = F.avg_pool2d(s2, 2, 2, ceil_mode=True, count_include_pad=False)
        x4, r4 = self.decode4(features[3], r4, time_steps)
        x3, r3 = self.decode3(x4, features[2], s3, r3, time_steps)
        x2, r2 = self.decode2(x3, features[1], s2, r2, time_steps)
        x1, r1 = self.decode1(x2, features[0], s1, r1, time_steps)
        return [self.decode0(x1, s0), r1, r2, r3, r4]


class Projection(nn.Module):
    """1x1 convolution head."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def _guidance(src: Tensor) -> Tensor:
    """Guided-filter guidance: the RGB source plus its channel mean, [N, 4, H, W]."""
    return torch.cat([src, src.mean(1, keepdim=True)], dim=1)


def _apply_linear_model(a: Tensor, b: Tensor, fine_src: Tensor) -> tuple[Tensor, Tensor]:
    """Upsample the local linear model (a, b) to the full size and apply it: (fgr residual, pha)."""
    size = (fine_src.size(2), fine_src.size(3))
    a = F.interpolate(a, size, mode="bilinear", align_corners=False)
    b = F.interpolate(b, size, mode="bilinear", align_corners=False)
    fgr, pha = (a * _guidance(fine_src) + b).split([3, 1], dim=1)
    return fgr, pha


class DeepGuidedFilterRefiner(nn.Module):
    """Learned guided filter: lifts the low-resolution fgr residual and alpha to full resolution.

    `forward(fine_src, base_src, base_fgr, base_pha, base_hid)` takes [N,3,H,W], [N,3,h,w],
    [N,3,h,w], [N,1,h,w] and [N,16,h,w]; returns the fgr residual [N,3,H,W] and alpha [N,1,H,W].
    """

    def __init__(self, hidden_channels: int = 16) -> None:
        super().__init__()
        self.box_filter = nn.Conv2d(4, 4, kernel_size=3, padding=1, bias=False, groups=4)
        nn.init.constant_(self.box_filter.weight, 1 / 9)
        self.conv = nn.Sequential(
            *_conv_bn_relu(4 * 2 + hidden_channels, hidden_channels, 1),
            *_conv_bn_relu(hidden_channels, hidden_channels, 1),
            nn.Conv2d(hidden_channels, 4, kernel_size=1),
        )

    def forward(
        self, fine_src: Tensor, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor, base_hid: Tensor
    ) -> tuple[Tensor, Tensor]:
        return _apply_linear_model(*self.linear_model(base_src, base_fgr, base_pha, base_hid), fine_src)

    def linear_model(
        self, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor, base_hid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The local linear model (a, b) [N,4,h,w] at the low resolution: (fgr residual, pha) = a * guidance + b."""
        base_x = _guidance(base_src)
        base_y = torch.cat([base_fgr, base_pha], dim=1)
        mean_x = self.box_filter(base_x)
        mean_y = self.box_filter(base_y)
        cov_xy = self.box_filter(base_x * base_y) - mean_x * mean_y
        var_x = self.box_filter(base_x * base_x) - mean_x * mean_x
        a = self.conv(torch.cat([cov_xy, var_x, base_hid], dim=1))
        return a, mean_y - a * mean_x


def _box_mean(x: Tensor, radius: int) -> Tensor:
    """Mean over a (2r+1)^2 window by separable convolutions, zero padded (borders divided by the full window)."""
    size = 2 * radius + 1
    channels = x.size(1)
    kernel_x = torch.full((channels, 1, 1, size), 1 / size, device=x.device, dtype=x.dtype)
    kernel_y = torch.full((channels, 1, size, 1), 1 / size, device=x.device, dtype=x.dtype)
    x = F.conv2d(x, kernel_x, padding=(0, radius), groups=channels)
    return F.conv2d(x, kernel_y, padding=(radius, 0), groups=channels)


class FastGuidedFilterRefiner(nn.Module):
    """Classic guided filter (radius 1, eps 1e-5), no parameters; same call as DeepGuidedFilterRefiner."""

    def __init__(self, radius: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        self.radius = radius
        self.eps = eps

    def forward(
        self, fine_src: Tensor, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor, base_hid: Tensor
    ) -> tuple[Tensor, Tensor]:
        return _apply_linear_model(*self.linear_model(base_src, base_fgr, base_pha, base_hid), fine_src)

    def linear_model(
        self, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor, base_hid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The local linear model (a, b) [N,4,h,w] at the low resolution (`base_hid` unused)."""
        base_x = _guidance(base_src)
        base_y = torch.cat([base_fgr, base_pha], dim=1)
        mean_x = _box_mean(base_x, self.radius)
        mean_y = _box_mean(base_y, self.radius)
        cov_xy = _box_mean(base_x * base_y, self.radius) - mean_x * mean_y
        var_x = _box_mean(base_x * base_x, self.radius) - mean_x * mean_x
        a = cov_xy / (var_x + self.eps)
        return a, mean_y - a * mean_x


class RobustVideoMatting(nn.Module):
    """RobustVideoMatting network (Lin et al. 2021); state-dict keys match the official checkpoints.

    Example::

        model = RobustVideoMatting("mobilenetv3").eval()
        model.load_state_dict(torch.load("rvm_mobilenetv3.pth"))
        rec = [None] * 4  # zeros: the start of a video
        for frame in frames:  # [B, 3, H, W] RGB in [0, 1]
            fgr, pha, *rec = model(frame, *rec, downsample_ratio=0.25)
    """

    def __init__(self, variant: str = "mobilenetv3", refiner: str = "deep_guided_filter") -> None:
        super().__init__()
        check_choice("variant", variant, VARIANTS)
        check_choice("refiner", refiner, REFINERS)
        feature_channels, aspp_channels, decoder_channels = _VARIANT_CHANNELS[variant]
        # The reference normalises with the ImageNet mean and std for MobileNetV3 only; its
        # ResNet-50 encoder takes the [0, 1] source as it is.
        self.normalize_input = variant == "mobilenetv3"
        if variant == "mobilenetv3":
            self.backbone = MobileNetV3LargeEncoder()
        else:
            self.backbone = ResNet(50)
        self.aspp = LRASPP(feature_channels[3], aspp_channels)
        self.decoder = RecurrentDecoder((*feature_channels[:3], aspp_channels), decoder_channels)
        # channels of r1..r4: each ConvGRU runs on half of its block's channels
        self.state_channels = [c // 2 for c in (*decoder_channels[2::-1], aspp_channels)]
        self.project_mat = Projection(decoder_channels[3], 4)
        self.project_seg = Projection(decoder_channels[3], 1)
        if refiner == "deep_guided_filter":
            self.refiner = DeepGuidedFilterRefiner()
        else:
            self.refiner = FastGuidedFilterRefiner()

    def forward(
        self,
        src: Tensor,
        r1: Tensor | None = None,
        r2: Tensor | None = None,
        r3: Tensor | None = None,
        r4: Tensor | None = None,
        downsample_ratio: float | None = 1.0,
        segmentation_pass: bool = False,
    ) -> list[Tensor]:
        """Matte `src` [B,3,H,W] or [B,T,3,H,W] (RGB in [0,1]) given the previous states r1..r4.

        Returns [fgr, pha, r1, r2, r3, r4] (fgr and pha shaped like src with 3 and 1 channels,
        clamped to [0,1]) or, with `segmentation_pass`, [seg (logit), r1, r2, r3, r4]. States are
        [B,C,h,w] at 1/2..1/16 of the downsampled size; None means zeros (a video's first frame).
        `downsample_ratio` in (0, 1] sets the internal resolution; None picks min(512 / max(H, W), 1).
        """
        if src.dim() not in (4, 5) or src.size(-3) != 3:
            raise ValueError(f"src must be [B,3,H,W] or [B,T,3,H,W] (RGB), got shape {list(src.shape)}")
        height, width = src.size(-2), src.size(-1)
        if downsample_ratio is None:
            ratio = auto_downsample_ratio(height, width)
        else:
            ratio = downsample_ratio
        if not 0 < ratio <= 1:
            # Written out rather than `validators.invalid`, which TorchScript cannot compile.
            raise ValueError(f"invalid downsample_ratio ({ratio}): expected a number in (0, 1], or None")
        if int(height * ratio) < 1 or int(width * ratio) < 1:
            raise ValueError(f"downsample_ratio {ratio} shrinks a {height}x{width} src below one pixel")
        self._check_states([r1, r2, r3, r4], src.size(0), int(height * ratio), int(width * ratio))
        time_steps = src.size(1) if src.dim() == 5 else 1
        frames = src.flatten(0, 1) if src.dim() == 5 else src
        if ratio != 1:
            frames_sm = F.interpolate(
                frames, scale_factor=ratio, mode="bilinear", align_corners=False, recompute_scale_factor=False
            )
        else:
            frames_sm = frames
        features = self.backbone(_imagenet_normalize(frames_sm) if self.normalize_input else frames_sm)
        features[3] = self.aspp(features[3])
        hid, r1, r2, r3, r4 = self.decoder(frames_sm, features, r1, r2, r3, r4, time_steps)
        if segmentation_pass:
            return [self._unflatten(self.project_seg(hid), src), r1, r2, r3, r4]
        fgr_residual, pha = self.project_mat(hid).split([3, 1], dim=1)
        if ratio != 1:
            fgr_residual, pha = self.refiner(frames, frames_sm, fgr_residual, pha, hid)
        fgr = (fgr_residual + frames).clamp(0.0, 1.0)
        pha = pha.clamp(0.0, 1.0)
        return [self._unflatten(fgr, src), self._unflatten(pha, src), r1, r2, r3, r4]

    def _check_states(self, states: list[Tensor | None], batch: int, height: int, width: int) -> None:
        """Each given state must be [B, C, h, w] at 1/2, 1/4, 1/8, 1/16 of the downsampled size (rounded up)."""
        for index, state in enumerate(states):
            height, width = (height + 1) // 2, (width + 1) // 2
            expected = [batch, self.state_channels[index], height, width]
            if state is not None and list(state.shape) != expected:
                raise ValueError(
                    f"r{index + 1} must be {expected} for this src and downsample_ratio (or None to start "
                    f"a new video), got {list(state.shape)}"
                )

    @staticmethod
    def _unflatten(x: Tensor, src: Tensor) -> Tensor:
        """[B*T, C, H, W] back to [B, T, C, H, W] when `src` is a clip."""
        return x.unflatten(0, (src.size(0), src.size(1))) if src.dim() == 5 else x


def rvm_mobilenetv3(refiner: str = "deep_guided_filter") -> RobustVideoMatting:
    """Builder for the registry name `rvm-mobilenetv3` (official `rvm_mobilenetv3.pth`)."""
    return RobustVideoMatting("mobilenetv3", refiner=refiner)


def rvm_resnet50(refiner: str = "deep_guided_filter") -> RobustVideoMatting:
    """Builder for the registry name `rvm-resnet50` (official `rvm_resnet50.pth`)."""
    return RobustVideoMatting("resnet50", refiner=refiner)
