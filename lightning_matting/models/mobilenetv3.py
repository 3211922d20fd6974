"""MobileNetV3-Large feature encoder with torchvision's layout and key names (`features.0..16`)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

# One row per inverted-residual block (features 1..15): kernel, expanded channels, output channels,
# squeeze-excitation, activation ("RE" = ReLU, "HS" = Hardswish), stride, dilation.
# The last stage (blocks 13-15) is dilated instead of strided, so the output stride is 16.
_LARGE_BLOCKS = (
    (3, 16, 16, False, "RE", 1, 1),
    (3, 64, 24, False, "RE", 2, 1),
    (3, 72, 24, False, "RE", 1, 1),
    (5, 72, 40, True, "RE", 2, 1),
    (5, 120, 40, True, "RE", 1, 1),
    (5, 120, 40, True, "RE", 1, 1),
    (3, 240, 80, False, "HS", 2, 1),
    (3, 200, 80, False, "HS", 1, 1),
    (3, 184, 80, False, "HS", 1, 1),
    (3, 184, 80, False, "HS", 1, 1),
    (3, 480, 112, True, "HS", 1, 1),
    (3, 672, 112, True, "HS", 1, 1),
    (5, 672, 160, True, "HS", 2, 2),
    (5, 960, 160, True, "HS", 1, 2),
    (5, 960, 160, True, "HS", 1, 2),
)
_BN_EPS = 1e-3  # torchvision's MobileNetV3 batch-norm epsilon


def _activation(name: str | None) -> nn.Module:
    if name is None:
        return nn.Identity()
    return nn.Hardswish() if name == "HS" else nn.ReLU()


def _make_divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNActivation(nn.Sequential):
    """Conv2d (no bias), BatchNorm2d and an optional activation; keys `0` (conv) and `1` (norm)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        activation: str | None = "RE",
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups=groups, bias=False
        )
        super().__init__(conv, nn.BatchNorm2d(out_channels, eps=_BN_EPS, momentum=0.01))
        if activation is not None:
            self.append(_activation(activation))


class SqueezeExcitation(nn.Module):
    """Channel attention: x * hardsigmoid(fc2(relu(fc1(mean over H, W of x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeezed = _make_divisible(channels // 4)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale


class InvertedResidual(nn.Module):
    """MobileNetV3 block: [1x1 expand], depthwise kxk, [squeeze-excitation], 1x1 project, [+ input]."""

    def __init__(
        self,
        in_channels: int,
        kernel_size: int,
        expanded: int,
        out_channels: int,
        use_se: bool,
        activation: str,
        stride: int,
        dilation: int,
    ) -> None:
        super().__init__()
        stride = 1 if dilation > 1 else stride
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvBNActivation(in_channels, expanded, 1, activation=activation))
        layers.append(
            ConvBNActivation(expanded, expanded, kernel_size, stride, dilation, expanded, activation)
        )
        if use_se:
            layers.append(SqueezeExcitation(expanded))
        layers.append(ConvBNActivation(expanded, out_channels, 1, activation=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class MobileNetV3LargeEncoder(nn.Module):
    """MobileNetV3-Large trunk, output stride 16, no classifier.

    `forward(x)` takes a normalised image batch [N,3,H,W] and returns features
    [f1 (16 ch, 1/2), f2 (24 ch, 1/4), f3 (40 ch, 1/8), f4 (960 ch, 1/16)] (sizes rounded up).
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNActivation(3, 16, 3, stride=2, activation="HS")]
        in_channels = 16
        for kernel, expanded, out_channels, use_se, activation, stride, dilation in _LARGE_BLOCKS:
            layers.append(
                InvertedResidual(
                    in_channels, kernel, expanded, out_channels, use_se, activation, stride, dilation
                )
            )
            in_channels = out_channels
        layers.append(ConvBNActivation(in_channels, 6 * in_channels, 1, activation="HS"))
        self.features = nn.Sequential(*layers)
        # Index in `features` after which each returned feature (1/2, 1/4, 1/8, 1/16) is taken.
        self.feature_indices = [1, 3, 6, 16]

    def forward(self, x: Tensor) -> list[Tensor]:
        features: list[Tensor] = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.feature_indices:
                features.append(x)
        return features
