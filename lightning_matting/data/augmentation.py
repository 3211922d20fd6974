"""Augmentation of synthetic matting samples that keeps the compositing identity exact. Pure torch."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_matting.validators import check_number

_LAYERS = {"src": 3, "bgr": 3, "pha": 1, "fgr": 3}
_SCENE = "scene_bgr"
_HIDDEN_ALPHA = 0.98  # above this alpha the background cannot be recovered from src; the plate stands in
_LUMA = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def augment_sample(
    sample: Mapping[str, Any],
    generator: torch.Generator,
    *,
    shift: float = 0.1,
    scale: float = 0.1,
    color_jitter: tuple[float, float, float, float] = (0.15, 0.15, 0.15, 0.05),
    bgr_misalignment: tuple[float, float] = (0.01, 1.0),
    shadow: float = 0.0,
    noise: float = 0.0,
    vary: bool = False,
) -> dict[str, Any]:
    """Randomly move, recolour and misalign a training sample; every random draw comes from `generator`.

    `sample`: "src", "bgr" (the clean plate), "fgr" [3,H,W] and "pha" [1,H,W] (or clips [T,C,H,W]), float in
    [0,1], optionally "scene_bgr" (the background actually behind the subject, else recovered from src where
    alpha < 0.98, the plate elsewhere); other keys are passed through. Returns the same keys plus "scene_bgr",
    same shapes and dtype, values in [0,1], with `src == fgr * pha + scene_bgr * (1 - pha)`:

    - every layer moves by one affine: a translation of up to `shift` of the width/height and a zoom by a
      factor in [1 - scale, 1 + scale] (reflected borders);
    - `color_jitter` = (brightness, contrast, saturation, hue) as torchvision's ColorJitter: factors in
      [1 - x, 1 + x], hue shift in [-hue, hue] turns; one draw for the foreground, another for the background
      (scene and plate alike); src is re-composited from them, never jittered itself;
    - the plate "bgr" is further shifted by up to `bgr_misalignment[0]` of the width/height and rotated by up
      to `bgr_misalignment[1]` degrees relative to "scene_bgr", as a plate shot from a slightly moved camera;
    - with probability `shadow`, the subject casts a shadow on the background behind it but not on the plate
      (BackgroundMattingV2's shadow augmentation): its alpha, moved by up to a fifth of the frame, scaled by
      0.5 to 1.5 and box-blurred over 4-8% of the width, darkens "scene_bgr" by up to 30%;
    - `noise`: Gaussian sensor noise of a standard deviation up to `noise`, drawn independently for
      "scene_bgr" and for the plate (so src and plate differ by noise where the background shows).

    A clip's frames all get the same parameters; with `vary`, the move, zoom and colour jitter go smoothly
    (an ease-in-out curve) from one random draw at the first frame to another at the last, as a camera and
    light that drift over the clip (the plate misalignment stays one draw: the plate was shot once).
    """
    layers = _check_sample(sample)
    check_number("shift", shift, minimum=0, below=1)
    check_number("scale", scale, minimum=0, below=1)
    _check_color_jitter(color_jitter)
    _check_misalignment(bgr_misalignment)
    check_number("shadow", shadow, minimum=0, maximum=1)
    check_number("noise", noise, minimum=0, below=1)
    draws = [2 * u - 1 for u in torch.rand(14, generator=generator, device=generator.device).tolist()]
    clip = layers["pha"].dim() == 4
    count = layers["pha"].shape[0] if clip else 1
    if vary and count > 1:
        last = [2 * u - 1 for u in torch.rand(14, generator=generator, device=generator.device).tolist()]
        last[3:6] = draws[3:6]  # the plate's misalignment
        ease = [0.5 - 0.5 * math.cos(math.pi * t / (count - 1)) for t in range(count)]
        frame_draws = [[a + (b - a) * w for a, b in zip(draws, last, strict=True)] for w in ease]
    else:
        frame_draws = [draws] * count
    src, plate, pha, fgr = (
        layers[key] if clip else layers[key][None] for key in ("src", "bgr", "pha", "fgr")
    )
    scene = sample.get(_SCENE)
    if scene is None:
        scene = _recover_background(src, plate, pha, fgr)
    elif not clip:
        scene = scene[None]
    height, width = pha.shape[-2:]

    motion = torch.stack(
        [_affine(width, height, d[0] * shift, d[1] * shift, 1 + scale * d[2], 0.0) for d in frame_draws]
    )
    misalign_shift, misalign_degrees = bgr_misalignment
    misalign = _affine(
        width, height, draws[3] * misalign_shift, draws[4] * misalign_shift, 1.0, draws[5] * misalign_degrees
    )
    moved = _warp(torch.cat([fgr, pha, scene], dim=1), motion)
    plate = _warp(plate, motion @ misalign)
    fgr, pha, scene = moved[:, :3], moved[:, 3:4].clamp(0, 1), moved[:, 4:]

    fgr_pivot, scene_pivot = _mean_luma(fgr, pha), _mean_luma(scene, None)
    fgr_jitter = [_jitter_transform(fgr.dtype, color_jitter, d[6:10], fgr_pivot) for d in frame_draws]
    background_jitter = [
        _jitter_transform(scene.dtype, color_jitter, d[10:14], scene_pivot) for d in frame_draws
    ]
    fgr = _apply_color(fgr, fgr_jitter)
    scene, plate = (_apply_color(layer, background_jitter) for layer in (scene, plate))
    if shadow and float(torch.rand((), generator=generator, device=generator.device)) < shadow:
        scene = _cast_shadow(scene, pha, generator)
    if noise:
        scene, plate = (_add_noise(layer, noise, generator) for layer in (scene, plate))
    src = (fgr * pha + scene * (1 - pha)).clamp(0, 1)

    out = {"src": src, "bgr": plate, "pha": pha, "fgr": fgr, _SCENE: scene}
    return {**sample, **{key: value if clip else value[0] for key, value in out.items()}}


def _cast_shadow(scene: Tensor, pha: Tensor, generator: torch.Generator) -> Tensor:
    """`scene` [N,3,H,W] darkened by a shadow of the subject: `pha` [N,1,H,W] moved, zoomed and box-blurred."""
    dx, dy, zoom, blur, strength = torch.rand(5, generator=generator, device=generator.device).tolist()
    height, width = pha.shape[-2:]
    moved = _warp(pha, _affine(width, height, 0.4 * dx - 0.2, 0.4 * dy - 0.2, 0.5 + zoom, 0.0)[None])
    size = 2 * round(width * (0.02 + 0.02 * blur)) + 1  # odd, 4-8% of the width
    soft = F.avg_pool2d(moved.clamp(0, 1), size, stride=1, padding=size // 2, count_include_pad=False)
    return scene * (1 - 0.3 * strength * soft)


def _add_noise(layer: Tensor, noise: float, generator: torch.Generator) -> Tensor:
    """`layer` plus Gaussian noise of a random standard deviation in [0, noise], clamped to [0,1]."""
    std = noise * float(torch.rand((), generator=generator, device=generator.device))
    grain = torch.randn(layer.shape, generator=generator, device=generator.device, dtype=layer.dtype)
    return (layer + std * grain.to(layer.device)).clamp(0, 1)


def _recover_background(src: Tensor, plate: Tensor, pha: Tensor, fgr: Tensor) -> Tensor:
    """The background behind the subject, (src - fgr * pha) / (1 - pha) where it shows, the plate where hidden."""
    visible = pha < _HIDDEN_ALPHA
    recovered = (src - fgr * pha) / (1 - pha).clamp_min(1 - _HIDDEN_ALPHA)
    return torch.where(visible, recovered, plate).clamp(0, 1)


def _affine(width: int, height: int, dx: float, dy: float, zoom: float, degrees: float) -> Tensor:
    """3x3 map from output to input normalised coordinates that moves content by (dx, dy) of the image size,
    zooms it by `zoom` and rotates it by `degrees` about the centre (in pixel space, so without shear)."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    aspect = height / width
    rotate_scale = torch.tensor(
        [[cos, sin * aspect, 0.0], [-sin / aspect, cos, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    translate = torch.tensor([[1.0, 0.0, -2 * dx], [0.0, 1.0, -2 * dy], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return rotate_scale @ translate


def _warp(images: Tensor, affine: Tensor) -> Tensor:
    """Bilinear resampling of [N,C,H,W] `images` (reflected borders) where output pixel p of frame n shows input
    point `affine[n]` @ p ([N,3,3], or [1,3,3] for every frame), both in normalised coordinates; the caller
    clamps."""
    _, _, height, width = images.shape
    xs = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, dtype=images.dtype, device=images.device)
    ys = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, dtype=images.dtype, device=images.device)
    grids = []
    for matrix in affine:
        (a, b, c), (d, e, f) = matrix[:2].tolist()
        grids.append(torch.stack([a * xs + (b * ys + c)[:, None], d * xs + (e * ys + f)[:, None]], dim=-1))
    grid = torch.stack(grids).expand(len(images), -1, -1, -1)  # one affine: every frame alike
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _jitter_transform(
    dtype: torch.dtype, strengths: tuple[float, ...], draws: list[float], mean_luma: float
) -> tuple[Tensor, float]:
    """Brightness, contrast, saturation then hue, fused into one colour map x -> M x + offset: (M [3,3], offset).

    Contrast pivots on `mean_luma` (the layer's over all frames of a clip, alpha-weighted for a foreground);
    `draws` are 4 uniforms in [-1, 1].
    """
    brightness, contrast, saturation = (1 + s * d for s, d in zip(strengths[:3], draws[:3], strict=True))
    hue = strengths[3] * draws[3]
    luma = torch.tensor(_LUMA, dtype=torch.float64)
    desaturate = torch.outer(torch.ones(3, dtype=torch.float64), luma)
    saturate = saturation * torch.eye(3, dtype=torch.float64) + (1 - saturation) * desaturate
    to_yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
    turn = 2 * math.pi * hue
    rotate_chroma = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, math.cos(turn), -math.sin(turn)], [0.0, math.sin(turn), math.cos(turn)]],
        dtype=torch.float64,
    )
    matrix = torch.linalg.inv(to_yiq) @ rotate_chroma @ to_yiq @ saturate * (contrast * brightness)
    # saturation and the hue rotation keep grey levels, so the contrast pivot passes through them unchanged
    offset = (1 - contrast) * brightness * mean_luma
    return matrix.to(dtype), offset


def _mean_luma(layer: Tensor, weight: Tensor | None) -> float:
    """Mean luma of [N,3,H,W] `layer`, weighted by [N,1,H,W] `weight` when given (0.5 if the weights are all 0)."""
    luma = torch.einsum("c,nchw->nhw", layer.new_tensor(_LUMA), layer)
    if weight is None:
        return float(luma.mean())
    total = float(weight.sum())
    return float((luma * weight[:, 0]).sum()) / total if total > 0 else 0.5


def _apply_color(layer: Tensor, maps: list[tuple[Tensor, float]]) -> Tensor:
    """Frame n of [N,3,H,W] `layer` through colour map `maps[n]` (matrix [3,3] @ each pixel + offset), clamped
    to [0,1]."""
    matrices = torch.stack([matrix for matrix, _ in maps]).to(layer.device)
    offsets = layer.new_tensor([offset for _, offset in maps]).view(-1, 1, 1, 1)
    return (torch.einsum("nij,njhw->nihw", matrices, layer) + offsets).clamp(0, 1)


def _check_sample(sample: Mapping[str, Any]) -> dict[str, Tensor]:
    """The sample's layers, checked: float tensors [C,H,W] (or [T,C,H,W]) with the expected channels, one size."""
    missing = [key for key in _LAYERS if key not in sample]
    if missing:
        raise ValueError(
            f"sample must have keys {sorted(_LAYERS)} (and optionally '{_SCENE}'), missing {missing}"
        )
    expected = {**_LAYERS, _SCENE: 3} if _SCENE in sample else _LAYERS
    layers = {key: sample[key] for key in expected}
    reference = layers["pha"]
    for key, channels in expected.items():
        tensor = layers[key]
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point() or tensor.dim() not in (3, 4):
            raise ValueError(f"sample['{key}'] must be a float tensor [{channels},H,W] or [T,{channels},H,W]")
        if tensor.shape[-3] != channels or _without_channels(tensor) != _without_channels(reference):
            raise ValueError(
                f"sample['{key}'] must be [{channels},H,W] or [T,{channels},H,W] with the same T, H, W as "
                f"sample['pha'] {tuple(reference.shape)}, got {tuple(tensor.shape)}"
            )
    return layers


def _without_channels(tensor: Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape[:-3] + tensor.shape[-2:])


def _check_color_jitter(color_jitter: tuple[float, float, float, float]) -> None:
    if (
        len(color_jitter) != 4
        or not all(0 <= x <= 1 for x in color_jitter[:3])
        or not 0 <= color_jitter[3] <= 0.5
    ):
        raise ValueError(
            "color_jitter must be (brightness, contrast, saturation, hue) with the first three in [0, 1] and hue "
            f"in [0, 0.5], got {color_jitter!r}"
        )


def _check_misalignment(bgr_misalignment: tuple[float, float]) -> None:
    if len(bgr_misalignment) != 2 or not 0 <= bgr_misalignment[0] < 1 or not 0 <= bgr_misalignment[1] <= 180:
        raise ValueError(
            f"bgr_misalignment must be (shift in [0, 1), degrees in [0, 180]), got {bgr_misalignment!r}"
        )
