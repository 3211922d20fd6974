"""Encoders with torchvision parameter names, returning features at strides 2, 4, 8 and 16.

Both encoders keep output stride 16 by dilating their last stage, as BackgroundMattingV2 and
RobustVideoMatting do, and carry no classifier. Their state-dict keys equal torchvision's
(`conv1`, `bn1`, `layer1`..`layer4` for ResNet; `features.N...` for MobileNetV2), so official
checkpoints load without renaming.
"""

from __future__ import annotations

from torch import Tensor, nn

from lightning_matting.validators import check_choice

RESNET_LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class Bottleneck(nn.Module):
    """torchvision's ResNet V1.5 bottleneck (stride on the 3x3 conv); output channels `planes * 4`."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet-50/101 trunk, layer4 dilated (torchvision's replace_stride_with_dilation=[False, False, True]).

    `ResNet(depth=50, in_channels=3)`; `forward(x [B, in_channels, H, W])` returns the list
    `[f1, f2, f3, f4]`: f1 after conv1-bn1-relu (64 ch, 1/2), f2 after maxpool+layer1 (256 ch, 1/4),
    f3 after layer2 (512 ch, 1/8), f4 after layer3+layer4 (2048 ch, 1/16). No input normalization.
    """

    def __init__(self, depth: int = 50, in_channels: int = 3) -> None:
        super().__init__()
        check_choice("depth", depth, sorted(RESNET_LAYERS))
        blocks = RESNET_LAYERS[depth]
        self.feature_channels = (64, 256, 512, 2048)
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _resnet_layer(64, 64, blocks[0], stride=1)
        self.layer2 = _resnet_layer(256, 128, blocks[1], stride=2)
        self.layer3 = _resnet_layer(512, 256, blocks[2], stride=2)
        self.layer4 = _resnet_layer(1024, 512, blocks[3], stride=1, dilation=2)

    def forward(self, x: Tensor) -> list[Tensor]:
        f1 = self.relu(self.bn1(self.conv1(x)))
        f2 = self.layer1(self.maxpool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer4(self.layer3(f3))
        return [f1, f2, f3, f4]


def _resnet_layer(inplanes: int, planes: int, blocks: int, stride: int, dilation: int = 1) -> nn.Sequential:
    """A stage of bottlenecks; with dilation the first block keeps dilation 1 (as torchvision)."""
    layers = [Bottleneck(inplanes, planes, stride)]
    layers += [
        Bottleneck(planes * Bottleneck.expansion, planes, dilation=dilation) for _ in range(blocks - 1)
    ]
    return nn.Sequential(*layers)


def _conv_bn_relu6(
    inp: int, oup: int, kernel_size: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """torchvision's MobileNetV2 block: expand 1x1, depthwise 3x3, linear 1x1; residual when shapes keep."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(inp, hidden, kernel_size=1))
        depthwise = _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden)
        depthwise[0].dilation, depthwise[0].padding = (dilation, dilation), (dilation, dilation)
        layers += [depthwise, nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


# (expand ratio, output channels, repeats, stride of the first block) per stage, as torchvision.
_MOBILENETV2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
)


class MobileNetV2(nn.Module):
    """MobileNetV2 features 0-17 as BackgroundMattingV2 modifies them, for output stride 16.

    Changes to torchvision's: `in_channels` input, the last 1x1 conv (features.18) removed, the
    stride of features.14 set to 1 and the depthwise convs of features.15-17 dilated by 2.
    `forward(x [B, in_channels, H, W])` returns `[f1, f2, f3, f4]` with 16, 24, 32, 320 channels
    at strides 2, 4, 8, 16.
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.feature_channels = (16, 24, 32, 320)
        blocks: list[nn.Module] = [_conv_bn_relu6(in_channels, 32, stride=2)]
        inp = 32
        for expand_ratio, oup, repeats, first_stride in _MOBILENETV2_STAGES:
            for i in range(repeats):
                stride, dilation = (first_stride if i == 0 else 1), 1
                if len(blocks) == 14:  # the 1/32 stage keeps 1/16: no stride, later blocks dilated
                    stride = 1
                elif len(blocks) > 14:
                    dilation = 2
                blocks.append(InvertedResidual(inp, oup, stride, expand_ratio, dilation))
                inp = oup
        blocks.append(InvertedResidual(inp, 320, 1, 6, dilation=2))
        self.features = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        features: list[Tensor] = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i == 1 or i == 3 or i == 6 or i == 17:
                features.append(x)
        return features
