"""Procedural matting clips with exact ground truth: a textured background and a moving, soft-edged subject
with thin hair-like strands, optional camera shake and lighting change; deterministic by seed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_matting.data.readers import frame_to_uint8, to_fraction
from lightning_matting.validators import check_int
from lightning_matting.writers import ImageSequenceWriter, VideoWriter

_SUPERSAMPLE = 4  # the subject is drawn at 4x and area-downsampled: anti-aliased edges, sub-pixel strands
_CHUNK_FRAMES = 32  # frames rendered per batch in make_clip, bounding the sampling grid's memory
_MIN_SIZE = 16


@dataclass(frozen=True)
class SyntheticClip:
    """A rendered clip: src, fgr, scene_bgr [T,3,H,W], pha [T,1,H,W], bgr [3,H,W], all float32 in [0,1].

    `bgr` is the clean plate; `scene_bgr` is that background as filmed in each frame (shaken, relit), and
    `src == fgr * pha + scene_bgr * (1 - pha)` holds exactly.
    """

    src: Tensor
    bgr: Tensor
    pha: Tensor
    fgr: Tensor
    scene_bgr: Tensor
    fps: Fraction


@dataclass(frozen=True)
class ClipFiles:
    """Where `save_clip` put a clip: src video, bgr plate image, pha and fgr PNG folders."""

    src: Path
    bgr: Path
    pha: Path
    fgr: Path


class SyntheticScene:
    """A scene fixed by its seed that renders any of its frames on demand (a frame depends only on its index).

    `plate` is the clean background [3,H,W]; `render(indices)` returns src, fgr, scene_bgr [N,3,H,W] and
    pha [N,1,H,W]. Motion is defined in seconds, so a scene looks the same at any fps. Randomness comes only
    from a `numpy.random.Generator` seeded with `seed`.
    """

    def __init__(
        self,
        width: int = 320,
        height: int = 192,
        fps: float | str | Fraction = 30,
        *,
        seed: int = 0,
        camera_shake: bool = True,
        lighting_change: bool = True,
    ) -> None:
        check_int("width", width, minimum=_MIN_SIZE)
        check_int("height", height, minimum=_MIN_SIZE)
        self.width, self.height, self.fps = width, height, to_fraction(fps)
        rng = np.random.default_rng(seed)
        self._shake_margin = math.ceil(0.015 * max(width, height)) + 2 if camera_shake else 0
        self._background = _background_canvas(
            rng, width + 2 * self._shake_margin, height + 2 * self._shake_margin
        )
        m = self._shake_margin
        self.plate = self._background[:, m : m + height, m : m + width].contiguous()
        self._sprite, self._pivot = _subject_sprite(rng, width, height)
        self._motion = _motion(rng, width, height)
        self._shake = _shake(rng, self._shake_margin - 2) if camera_shake else None
        self._lighting = _lighting(rng) if lighting_change else None

    def render(self, indices: Sequence[int]) -> dict[str, Tensor]:
        """Frames `indices` as {"src","fgr","scene_bgr": [N,3,H,W], "pha": [N,1,H,W]} float32 in [0,1]."""
        t = torch.tensor([float(Fraction(i) / self.fps) for i in indices], dtype=torch.float64)
        zero, one = torch.zeros_like(t), torch.ones_like(t)
        if self._shake is None:
            shake_x = shake_y = zero
            scene_bgr = self.plate.expand(len(t), -1, -1, -1)
        else:
            shake_x, shake_y = (_sum_of_sines(t, *axis) for axis in self._shake)
            m = self._shake_margin
            scene_bgr = self._sample(self._background, [[one, zero, m - shake_x], [zero, one, m - shake_y]])
        # The subject turns about its pivot and moves: frame pixel p shows sprite pixel R^-1 (p - pivot - move) + pivot.
        angle = _sum_of_sines(t, *self._motion["angle"])
        cos, sin = torch.cos(angle), torch.sin(angle)
        pivot_x, pivot_y = self._pivot
        x0 = pivot_x + _sum_of_sines(t, *self._motion["x"]) + shake_x
        y0 = pivot_y + _sum_of_sines(t, *self._motion["y"]) + shake_y
        sprite = self._sample(
            self._sprite,
            [[cos, sin, pivot_x - cos * x0 - sin * y0], [-sin, cos, pivot_y + sin * x0 - cos * y0]],
        )
        fgr, pha = sprite[:, :3], sprite[:, 3:]
        if self._lighting is not None:
            gain = 1 + torch.stack([_sum_of_sines(t, *channel) for channel in self._lighting], dim=1).float()
            fgr = (fgr * gain[:, :, None, None]).clamp_(0, 1)
            scene_bgr = (scene_bgr * gain[:, :, None, None]).clamp_(0, 1)
        src = fgr * pha + scene_bgr * (1 - pha)
        return {"src": src, "fgr": fgr, "pha": pha, "scene_bgr": scene_bgr.contiguous()}

    def _sample(self, canvas: Tensor, affine: list[list[Tensor]]) -> Tensor:
        """Bilinear samples of canvas [C,Hc,Wc] at (u, v) = affine @ (x, y, 1) for frame pixels -> [N,C,H,W].

        `affine` is 2x3 of [N] float64 tensors (one matrix per frame), in pixel units.
        """
        channels, canvas_h, canvas_w = canvas.shape
        x = torch.arange(self.width, dtype=torch.float32)[None, None, :]
        y = torch.arange(self.height, dtype=torch.float32)[None, :, None]
        (a, b, c), (d, e, f) = ([v.float()[:, None, None] for v in row] for row in affine)
        # normalised for align_corners=False: pixel centre i of n pixels is at (2i + 1) / n - 1
        u = (a * x + b * y + c).mul_(2 / canvas_w).add_(1 / canvas_w - 1)
        v = (d * x + e * y + f).mul_(2 / canvas_h).add_(1 / canvas_h - 1)
        grid = torch.stack((u, v), dim=-1)
        frames = grid.shape[0]
        grid = grid.reshape(1, frames * self.height, self.width, 2)
        sampled = F.grid_sample(
            canvas[None], grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return sampled.reshape(channels, frames, self.height, self.width).transpose(0, 1)


def make_clip(
    width: int = 320,
    height: int = 192,
    num_frames: int = 60,
    fps: float | str | Fraction = 30,
    *,
    seed: int = 0,
    camera_shake: bool = True,
    lighting_change: bool = True,
) -> SyntheticClip:
    """Render `num_frames` frames of the scene with this seed; the same arguments give the same tensors.

    Args:
        width: Frame width in pixels.
        height: Frame height in pixels.
        num_frames: Frames to render.
        fps: Frame rate (camera shake and lighting change follow time, not frames).
        seed: The scene's seed.
        camera_shake: Move the camera slightly from frame to frame.
        lighting_change: Change the lighting over the clip.

    Returns:
        The clip: src, fgr, scene_bgr [T,3,H,W], pha [T,1,H,W], bgr (the clean plate) [3,H,W], float32 in [0,1].

    Raises:
        TypeError: A size, frame count or fps of the wrong type.
        ValueError: A bad size, frame count or fps.
    """
    check_int("num_frames", num_frames, minimum=1)
    scene = SyntheticScene(
        width, height, fps, seed=seed, camera_shake=camera_shake, lighting_change=lighting_change
    )
    chunks = [
        scene.render(range(start, min(start + _CHUNK_FRAMES, num_frames)))
        for start in range(0, num_frames, _CHUNK_FRAMES)
    ]
    frames = {key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]}
    return SyntheticClip(bgr=scene.plate, fps=scene.fps, **frames)


def save_clip(clip: SyntheticClip, folder: str | Path) -> ClipFiles:
    """Write src.mp4 (mp4v at the clip's fps), bgr.png and the PNG sequences pha/ and fgr/ into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = ClipFiles(folder / "src.mp4", folder / "bgr.png", folder / "pha", folder / "fgr")
    _, _, height, width = clip.src.shape
    with VideoWriter(files.src, clip.fps, width, height) as writer:
        writer.add_batch(clip.src)
    plate = frame_to_uint8(clip.bgr).permute(1, 2, 0).numpy()
    if not cv2.imwrite(str(files.bgr), cv2.cvtColor(plate, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {files.bgr}")
    for path, frames in ((files.pha, clip.pha), (files.fgr, clip.fgr)):
        with ImageSequenceWriter(path, extension="png") as writer:
            writer.add_batch(frames)
    return files


def _value_noise(rng: np.random.Generator, width: int, height: int, cell: float, channels: int) -> np.ndarray:
    """Smooth random field [H,W,C] in about [0,1]: random values on a grid of `cell` pixels, bicubic between."""
    grid_w, grid_h = max(2, math.ceil(width / cell) + 1), max(2, math.ceil(height / cell) + 1)
    grid = rng.random((grid_h, grid_w, channels), dtype=np.float32)
    noise = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return noise.reshape(height, width, channels)


def _background_canvas(rng: np.random.Generator, width: int, height: int) -> Tensor:
    """Textured background [3,H,W]: multi-scale colour noise plus sharp-edged shapes (corners for features)."""
    size = max(width, height)
    image = (
        0.55 * _value_noise(rng, width, height, size / 3, 3)
        + 0.30 * _value_noise(rng, width, height, size / 16, 3)
        + 0.15 * _value_noise(rng, width, height, 3, 3)
    )
    for _ in range(int(rng.integers(12, 24))):
        colour = tuple(float(v) for v in rng.random(3))
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        extent = max(2, int(rng.integers(size // 40 + 1, size // 6 + 2)))
        if rng.random() < 0.6:
            x1, y1 = x0 + int(rng.integers(1, extent)), y0 + int(rng.integers(1, extent))
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, thickness=-1)
        else:
            cv2.circle(image, (x0, y0), extent // 2, colour, thickness=-1)
    return torch.from_numpy(np.clip(image, 0, 1)).permute(2, 0, 1).contiguous()


def _subject_sprite(rng: np.random.Generator, width: int, height: int) -> tuple[Tensor, tuple[float, float]]:
    """Subject at rest in frame coordinates: [4,H,W] (straight fgr RGB, alpha) and its pivot (head centre)."""
    s = _SUPERSAMPLE
    head_x = width * rng.uniform(0.4, 0.6)
    head_y = height * rng.uniform(0.32, 0.42)
    head_rx = height * rng.uniform(0.09, 0.12)
    head_ry = head_rx * rng.uniform(1.15, 1.35)
    body_rx = height * rng.uniform(0.3, 0.4)
    body_ry = height * 0.5

    def scaled(*values: float) -> tuple[int, ...]:
        return tuple(round(v * s) for v in values)

    big = (height * s, width * s)
    head = np.zeros(big, np.uint8)
    cv2.ellipse(head, scaled(head_x, head_y), scaled(head_rx, head_ry), 0, 0, 360, 255, -1, cv2.LINE_AA)
    body = head.copy()
    neck_top, shoulders = head_y + 0.5 * head_ry, head_y + head_ry + 0.06 * height
    cv2.rectangle(
        body, scaled(head_x - 0.45 * head_rx, neck_top), scaled(head_x + 0.45 * head_rx, shoulders), 255, -1
    )
    cv2.ellipse(
        body, scaled(head_x, shoulders + body_ry), scaled(body_rx, body_ry), 0, 0, 360, 255, -1, cv2.LINE_AA
    )
    strands = np.zeros(big, np.uint8)
    for _ in range(int(rng.integers(40, 80))):
        theta = rng.uniform(-0.95 * math.pi, -0.05 * math.pi)
        start = np.array(
            [head_x + 0.85 * head_rx * math.cos(theta), head_y + 0.85 * head_ry * math.sin(theta)]
        )
        direction = theta + rng.uniform(-0.6, 0.6)
        length = head_rx * rng.uniform(0.4, 1.2)
        along = np.array([math.cos(direction), math.sin(direction)])
        across = np.array([-along[1], along[0]])
        control = start + along * length * 0.5 + across * length * rng.uniform(-0.5, 0.5)
        end = start + along * length + np.array([0.0, length * rng.uniform(0.0, 0.3)])
        w = np.linspace(0, 1, 24)[:, None]
        curve = (1 - w) ** 2 * start + 2 * (1 - w) * w * control + w**2 * end
        points = np.round(curve * s).astype(np.int32)
        opacity = int(255 * rng.uniform(0.5, 1.0))
        thickness = int(rng.integers(1, 3))
        cv2.polylines(strands, [points], False, opacity, thickness, cv2.LINE_AA)

    def downsample(mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.float32) / 255, (width, height), interpolation=cv2.INTER_AREA)

    head_a, strand_a = downsample(head), downsample(strands)
    body_a = cv2.GaussianBlur(downsample(body), (0, 0), rng.uniform(0.6, 1.5))
    alpha = strand_a + body_a * (1 - strand_a)

    clothes = rng.uniform(0.1, 0.9, 3).astype(np.float32) * (
        0.7 + 0.3 * _value_noise(rng, width, height, height / 10, 3)
    )
    skin = rng.uniform(0.35, 0.9, 3).astype(np.float32) * (0.9 + 0.1 * _value_noise(rng, width, height, 6, 1))
    hair = rng.uniform(0.05, 0.6, 3).astype(np.float32) * (0.8 + 0.2 * _value_noise(rng, width, height, 2, 1))
    base = skin * head_a[..., None] + clothes * (1 - head_a[..., None])
    premultiplied = hair * strand_a[..., None] + base * (body_a * (1 - strand_a))[..., None]
    covered = alpha[..., None] > 1e-6
    colour = np.where(covered, premultiplied / np.maximum(alpha[..., None], 1e-6), base)
    sprite = np.concatenate([np.clip(colour, 0, 1), np.clip(alpha, 0, 1)[..., None]], axis=2)
    return torch.from_numpy(sprite.astype(np.float32)).permute(2, 0, 1).contiguous(), (head_x, head_y)


def _sines(rng: np.random.Generator, amplitude: float, low_hz: float, high_hz: float, terms: int):
    """Random parameters (amplitudes, frequencies, phases) of a sum of `terms` sines with peak <= amplitude."""
    weights = rng.uniform(0.3, 1.0, terms)
    amplitudes = amplitude * weights / weights.sum()
    return amplitudes, rng.uniform(low_hz, high_hz, terms), rng.uniform(0, 2 * math.pi, terms)


def _sum_of_sines(t: Tensor, amplitudes: np.ndarray, frequencies: np.ndarray, phases: np.ndarray) -> Tensor:
    """sum_k a_k sin(2 pi f_k t + phi_k) for times t [N] in seconds -> [N] float64."""
    a, f, p = (torch.from_numpy(v) for v in (amplitudes, frequencies, phases))
    return (a * torch.sin(2 * math.pi * f * t[:, None] + p)).sum(dim=1)


def _motion(rng: np.random.Generator, width: int, height: int) -> dict[str, tuple]:
    """Subject sway (x), bob (y) in pixels and tilt in radians, slow and smooth."""
    return {
        "x": _sines(rng, 0.12 * width, 0.05, 0.3, 2),
        "y": _sines(rng, 0.03 * height, 0.1, 0.5, 2),
        "angle": _sines(rng, math.radians(5), 0.1, 0.4, 2),
    }


def _shake(rng: np.random.Generator, amplitude: float) -> tuple[tuple, tuple]:
    """Camera shake in x and y: fast, small translations of at most `amplitude` pixels."""
    return _sines(rng, amplitude, 1.0, 5.0, 3), _sines(rng, amplitude, 1.0, 5.0, 3)


def _lighting(rng: np.random.Generator) -> list[tuple]:
    """Per-channel gain change: a shared exposure drift (<= 15%) plus a slight tint (<= 3%) per channel."""
    exposure = _sines(rng, 0.15, 0.1, 0.6, 1)
    channels = []
    for _ in range(3):
        tint = _sines(rng, 0.03, 0.1, 0.6, 1)
        channels.append(tuple(np.concatenate(pair) for pair in zip(exposure, tint, strict=True)))
    return channels
