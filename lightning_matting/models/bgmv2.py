"""BackgroundMattingV2 networks (Lin et al. 2021), state-dict compatible with the official checkpoints.

`MattingBase` predicts alpha, foreground, error and a hidden encoding at the input resolution;
`MattingRefine` runs it on a downsampled copy and refines selected 4x4 patches at full resolution.
Both are TorchScript-scriptable (`torch.jit.script(model)`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_matting.models.backbones import MobileNetV2, ResNet
from lightning_matting.validators import check_choice, check_int, check_number, invalid

BACKBONES = ("resnet50", "resnet101", "mobilenetv2")
REFINE_MODES = ("full", "sampling", "thresholding")
BASE_OUTPUT_CHANNELS = 1 + 3 + 1 + 32  # pha, fgr residual, err, hidden


class ASPP(nn.Module):
    """DeepLabV3 atrous spatial pyramid pooling (torchvision's layout): [B, C, h, w] -> [B, 256, h, w]."""

    def __init__(self, in_channels: int, rates: tuple[int, ...] = (3, 6, 9), out_channels: int = 256) -> None:
        super().__init__()
        branches: list[nn.Module] = [_conv_bn_relu(in_channels, out_channels, 1)]
        branches += [_conv_bn_relu(in_channels, out_channels, 3, dilation=rate) for rate in rates]
        branches.append(_ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(0.5),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class _ASPPPooling(nn.Sequential):
    """Image-level branch: global average, 1x1 conv-bn-relu, broadcast back to the input size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class Decoder(nn.Module):
    """Upsample-concat-conv over 4 levels, from the 1/16 ASPP output to the input resolution.

    `channels`: 5 widths (ASPP output, three hidden, output); `feature_channels`: widths of the
    1/8, 1/4, 1/2 features and of the input. Output: [B, channels[4], H, W], no activation.
    """

    def __init__(self, channels: tuple[int, ...], feature_channels: tuple[int, ...]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(feature_channels[0] + channels[0], channels[1], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[1])
        self.conv2 = nn.Conv2d(feature_channels[1] + channels[1], channels[2], 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels[2])
        self.conv3 = nn.Conv2d(feature_channels[2] + channels[2], channels[3], 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels[3])
        self.conv4 = nn.Conv2d(feature_channels[3] + channels[3], channels[4], 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x4: Tensor, x3: Tensor, x2: Tensor, x1: Tensor, x0: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(_upsample_concat(x4, x3))))
        x = self.relu(self.bn2(self.conv2(_upsample_concat(x, x2))))
        x = self.relu(self.bn3(self.conv3(_upsample_concat(x, x1))))
        return self.conv4(_upsample_concat(x, x0))


def _upsample_concat(x: Tensor, skip: Tensor) -> Tensor:
    x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
    return torch.cat([x, skip], dim=1)


def check_inputs(src: Tensor, bgr: Tensor, multiple_of: int = 1) -> None:
    """Raise ValueError unless src and bgr are both [B, 3, H, W] with H and W divisible by `multiple_of`."""
    if src.dim() != 4 or src.size(1) != 3:
        raise ValueError(f"src must be a [B, 3, H, W] RGB tensor in [0, 1], got shape {list(src.shape)}")
    if bgr.shape != src.shape:
        raise ValueError(
            f"bgr must have the same [B, 3, H, W] shape as src {list(src.shape)}, got {list(bgr.shape)}"
        )
    if src.size(2) % multiple_of != 0 or src.size(3) % multiple_of != 0:
        raise ValueError(
            f"src and bgr height and width must be divisible by {multiple_of}, got {src.size(2)}x{src.size(3)}"
        )


class MattingBase(nn.Module):
    """Coarse matting network: (src, bgr) [B, 3, H, W] in [0, 1] -> (pha, fgr, err, hid) at [H, W].

    pha, err [B, 1, H, W] and fgr [B, 3, H, W] are clamped to [0, 1]; hid [B, 32, H, W] is >= 0.
    `backbone`: "resnet50", "resnet101" or "mobilenetv2".
    """

    def __init__(self, backbone: str = "resnet50") -> None:
        super().__init__()
        if backbone == "mobilenetv2":
            self.backbone: nn.Module = MobileNetV2(in_channels=6)
        elif backbone in ("resnet50", "resnet101"):
            self.backbone = ResNet(depth=int(backbone[len("resnet") :]), in_channels=6)
        else:
            raise ValueError(invalid("backbone", backbone, f"one of {', '.join(map(repr, BACKBONES))}"))
        c1, c2, c3, c4 = self.backbone.feature_channels
        self.aspp = ASPP(c4, (3, 6, 9))
        self.decoder = Decoder((256, 128, 64, 48, BASE_OUTPUT_CHANNELS), (c3, c2, c1, 6))

    def forward(self, src: Tensor, bgr: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        check_inputs(src, bgr)
        return self.base_outputs(src, self.coarse(src, bgr))

    def base_outputs(self, src: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(pha, fgr, err, hid) [B,C,H,W] from src [B,3,H,W] and the coarse output x [B,37,H,W]."""
        pha = x[:, 0:1].clamp(0.0, 1.0)
        fgr = (x[:, 1:4] + src).clamp(0.0, 1.0)
        err = x[:, 4:5].clamp(0.0, 1.0)
        hid = x[:, 5:].relu()
        return pha, fgr, err, hid

    def coarse(self, src: Tensor, bgr: Tensor) -> Tensor:
        """The raw 37-channel decoder output [B, 37, H, W] for src and bgr: the backbone, ASPP, decoder."""
        x = torch.cat([src, bgr], dim=1)
        f1, f2, f3, f4 = self.backbone(x)
        return self.decoder(self.aspp(f4), f3, f2, f1, x)


class MattingRefine(MattingBase):
    """MattingBase at `backbone_scale` of the input, refined at full resolution by `Refiner`.

    Input: src, bgr [B, 3, H, W] in [0, 1], H and W divisible by 4. Output:
    (pha [B,1,H,W], fgr [B,3,H,W], pha_sm [B,1,h,w], fgr_sm [B,3,h,w], err_sm [B,1,h,w],
    ref_sm [B,1,H/4,W/4]) with h, w = floor(H * backbone_scale), floor(W * backbone_scale);
    ref_sm is 1 where a 4x4 patch was refined. Options as the reference's MattingRefine.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        backbone_scale: float = 0.25,
        refine_mode: str = "sampling",
        refine_sample_pixels: int = 80_000,
        refine_threshold: float = 0.1,
        refine_kernel_size: int = 3,
        refine_prevent_oversampling: bool = True,
    ) -> None:
        check_number("backbone_scale", backbone_scale, above=0, maximum=0.5)
        super().__init__(backbone)
        self.backbone_scale = float(backbone_scale)
        self.refiner = Refiner(
            refine_mode,
            refine_sample_pixels,
            refine_threshold,
            refine_kernel_size,
            refine_prevent_oversampling,
        )

    def base_forward(self, src: Tensor, bgr: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The base network alone at the input size, as MattingBase: (pha, fgr, err, hid) [B,C,H,W]."""
        return MattingBase.forward(self, src, bgr)

    def forward(self, src: Tensor, bgr: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        check_inputs(src, bgr, multiple_of=4)
        src_sm, bgr_sm = self.downsampled(src, bgr)
        return self.refined(src, bgr, src_sm, self.coarse(src_sm, bgr_sm))

    def downsampled(self, src: Tensor, bgr: Tensor) -> tuple[Tensor, Tensor]:
        """src and bgr [B,3,H,W] at `backbone_scale` ([B,3,h,w]), where the base network runs."""
        size = (int(src.size(2) * self.backbone_scale), int(src.size(3) * self.backbone_scale))
        src_sm = F.interpolate(src, size=size, mode="bilinear", align_corners=False)
        bgr_sm = F.interpolate(bgr, size=size, mode="bilinear", align_corners=False)
        return src_sm, bgr_sm

    def refined(
        self, src: Tensor, bgr: Tensor, src_sm: Tensor, x: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The outputs of `forward` from src, bgr [B,3,H,W], src_sm [B,3,h,w] (`downsampled`) and the base
        network's coarse output x [B,37,h,w] on them: the refiner's part."""
        pha_sm = x[:, 0:1].clamp(0.0, 1.0)
        fgr_sm = x[:, 1:4]
        err_sm = x[:, 4:5].clamp(0.0, 1.0)
        hid_sm = x[:, 5:].relu()
        pha, fgr, ref_sm = self.refiner(src, bgr, pha_sm, fgr_sm, err_sm, hid_sm)
        pha = pha.clamp(0.0, 1.0)
        fgr = (fgr + src).clamp(0.0, 1.0)
        fgr_sm = (fgr_sm + src_sm).clamp(0.0, 1.0)
        return pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm


def check_refine_options(mode: str, sample_pixels: int, threshold: float, kernel_size: int) -> None:
    """Raise TypeError or ValueError naming the first refine option of the wrong type or out of its range."""
    check_choice("refine_mode", mode, REFINE_MODES)
    check_int("refine_sample_pixels", sample_pixels, minimum=1)
    check_number("refine_threshold", threshold, minimum=0, maximum=1)
    check_choice("refine_kernel_size", kernel_size, (1, 3))


class Refiner(nn.Module):
    """Refines the coarse result at full resolution, everywhere ("full") or on selected 4x4 patches.

    "sampling" refines the `sample_pixels // 16` patches of highest error (only those with error > 0
    when `prevent_oversampling`); "thresholding" those with error > `threshold`. The attributes
    `mode`, `sample_pixels`, `threshold` and `prevent_oversampling` may be changed after construction.
    forward(src, bgr [B,3,H,W], pha, fgr, err [B,1|3|1,h,w], hid [B,32,h,w]) ->
    (pha [B,1,H,W], fgr residual [B,3,H,W], ref [B,1,H/4,W/4]).
    """

    def __init__(
        self,
        mode: str = "sampling",
        sample_pixels: int = 80_000,
        threshold: float = 0.1,
        kernel_size: int = 3,
        prevent_oversampling: bool = True,
    ) -> None:
        super().__init__()
        check_refine_options(mode, sample_pixels, threshold, kernel_size)
        self.mode = mode
        self.sample_pixels = sample_pixels
        self.threshold = float(threshold)
        self.kernel_size = kernel_size
        self.prevent_oversampling = bool(prevent_oversampling)
        channels = (32, 24, 16, 12, 4)
        self.conv1 = nn.Conv2d(channels[0] + 6 + 4, channels[1], kernel_size, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[1])
        self.conv2 = nn.Conv2d(channels[1], channels[2], kernel_size, bias=False)
        self.bn2 = nn.BatchNorm2d(channels[2])
        self.conv3 = nn.Conv2d(channels[2] + 6, channels[3], kernel_size, bias=False)
        self.bn3 = nn.BatchNorm2d(channels[3])
        self.conv4 = nn.Conv2d(channels[3], channels[4], kernel_size)
        self.relu = nn.ReLU(inplace=True)

    def forward(
        self, src: Tensor, bgr: Tensor, pha: Tensor, fgr: Tensor, err: Tensor, hid: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        full_h, full_w = src.size(2), src.size(3)
        half = (full_h // 2, full_w // 2)
        quarter = (full_h // 4, full_w // 4)
        src_bgr = torch.cat([src, bgr], dim=1)
        coarse = torch.cat([hid, pha, fgr], dim=1)

        if self.mode == "full":
            x = F.interpolate(coarse, size=half, mode="bilinear", align_corners=False)
            y = F.interpolate(src_bgr, size=half, mode="bilinear", align_corners=False)
            if self.kernel_size == 3:
                x, y = F.pad(x, (3, 3, 3, 3)), F.pad(y, (3, 3, 3, 3))
            x = self._half_resolution_stage(torch.cat([x, y], dim=1))
            if self.kernel_size == 3:
                x = F.interpolate(x, size=(full_h + 4, full_w + 4), mode="nearest")
                y = F.pad(src_bgr, (2, 2, 2, 2))
            else:
                x = F.interpolate(x, size=(full_h, full_w), mode="nearest")
                y = src_bgr
            x = self._full_resolution_stage(torch.cat([x, y], dim=1))
            ref = torch.ones((src.size(0), 1, quarter[0], quarter[1]), device=src.device, dtype=src.dtype)
            return x[:, :1], x[:, 1:], ref

        err = F.interpolate(err, size=quarter, mode="bilinear", align_corners=False)
        if self.mode == "sampling" and not self.training:
            ref, (idx_b, idx_y, idx_x), keep = self._sampled_patches(err)
        else:
            ref = self._select_refinement_regions(err)
            idx = torch.nonzero(ref.squeeze(1))  # a host sync: the count depends on the data
            idx_b, idx_y, idx_x, keep = idx[:, 0], idx[:, 1], idx[:, 2], None
        out = F.interpolate(
            torch.cat([pha, fgr], dim=1), size=(full_h, full_w), mode="bilinear", align_corners=False
        )
        if idx_b.size(0) > 0:
            padding = 3 if self.kernel_size == 3 else 0
            x = F.interpolate(coarse, size=half, mode="bilinear", align_corners=False)
            x = _crop_patches(x, idx_b, idx_y, idx_x, 2, padding)
            y = F.interpolate(src_bgr, size=half, mode="bilinear", align_corners=False)
            y = _crop_patches(y, idx_b, idx_y, idx_x, 2, padding)
            x = self._half_resolution_stage(torch.cat([x, y], dim=1))
            x = F.interpolate(x, size=(8, 8) if self.kernel_size == 3 else (4, 4), mode="nearest")
            y = _crop_patches(src_bgr, idx_b, idx_y, idx_x, 4, 2 if self.kernel_size == 3 else 0)
            x = self._full_resolution_stage(torch.cat([x, y], dim=1))
            if keep is not None:  # patches sampled but not selected keep the upsampled coarse result
                x = torch.where(keep.view(-1, 1, 1, 1), x, _crop_patches(out, idx_b, idx_y, idx_x, 4, 0))
            out = _replace_patches(out, x, idx_b, idx_y, idx_x)
        return out[:, :1], out[:, 1:], ref

    def _half_resolution_stage(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))

    def _full_resolution_stage(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn3(self.conv3(x)))
        return self.conv4(x)

    def _sampled_patches(self, err: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor], Tensor]:
        """ "sampling" without a host sync (eval): the top `sample_pixels // 16` patches of each frame's error
        [B,1,h,w], all refined, of which those with error 0 are kept coarse under `prevent_oversampling`, so
        the result is the selection's. Returns the ref map [B,1,h,w], the patches' (b, y, x) [P] and which
        of them are selected (bool [P])."""
        b, _, h, w = err.shape
        flat = err.view(b, -1)
        count = min(self.sample_pixels // 16, h * w)
        scores, idx = flat.topk(count, dim=1, sorted=False)
        keep = scores.gt(0) if self.prevent_oversampling else torch.ones_like(scores, dtype=torch.bool)
        ref = torch.zeros_like(flat).scatter_(1, idx, keep.to(flat.dtype)).view(b, 1, h, w)
        idx_b = torch.arange(b, device=err.device).repeat_interleave(count)
        idx = idx.reshape(-1)
        return ref, (idx_b, idx // w, idx % w), keep.reshape(-1)

    def _select_refinement_regions(self, err: Tensor) -> Tensor:
        """[B, 1, h, w] error -> [B, 1, h, w] map, 1 where the 4x4 patch is refined, else 0."""
        if self.mode == "thresholding":
            return err.gt(self.threshold).to(err.dtype)
        b, _, h, w = err.shape
        flat = err.view(b, -1)
        count = min(self.sample_pixels // 16, h * w)
        idx = flat.topk(count, dim=1, sorted=False).indices
        ref = torch.zeros_like(flat).scatter_(1, idx, 1.0)
        if self.prevent_oversampling:
            ref = ref * flat.gt(0).to(flat.dtype)
        return ref.view(b, 1, h, w)


def _crop_patches(x: Tensor, idx_b: Tensor, idx_y: Tensor, idx_x: Tensor, size: int, padding: int) -> Tensor:
    """[B, C, H, W] -> [P, C, size + 2 * padding, same]: the patches on a `size` grid at (b, y, x), zero-padded."""
    if padding != 0:
        x = F.pad(x, (padding, padding, padding, padding))
    window = size + 2 * padding
    return x.permute(0, 2, 3, 1).unfold(1, window, size).unfold(2, window, size)[idx_b, idx_y, idx_x]


def _replace_patches(x: Tensor, patches: Tensor, idx_b: Tensor, idx_y: Tensor, idx_x: Tensor) -> Tensor:
    """Write [P, C, h, w] patches into [B, C, H, W] `x` (in place) at grid cells (b, y, x); returns x."""
    b, c, height, width = x.shape
    ph, pw = patches.size(2), patches.size(3)
    grid = x.view(b, c, height // ph, ph, width // pw, pw).permute(0, 2, 4, 1, 3, 5)
    grid[idx_b, idx_y, idx_x] = patches
    return x
