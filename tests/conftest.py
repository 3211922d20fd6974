"""Shared test helpers: deterministic clips and a reader that returns what a file really holds."""

from __future__ import annotations

import importlib.util
import os
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch

# No test reaches the internet: "official" weights resolve from the cache or fail at once; the download tests
# serve files on 127.0.0.1 and unset this themselves.
os.environ["LIGHTNING_MATTING_OFFLINE"] = "1"


# Settings that every video writer (VideoWriter, AVWriter) refuses alike: (kwargs, error, message).
BAD_VIDEO_WRITER_SETTINGS = [
    (
        {"frame_rate": 0},
        ValueError,
        r"^invalid frame_rate \(0\): expected a number > 0 or a fraction like .30000/1001. \(frames/s\)$",
    ),
    ({"frame_rate": float("nan")}, ValueError, r"^invalid frame_rate \(nan\): expected a number > 0"),
    ({"width": 0}, ValueError, r"^invalid width \(0\): expected an int >= 1$"),
    ({"odd_size": "crop"}, ValueError, r"^invalid odd_size \('crop'\): expected one of 'pad', 'error'$"),
]


def read_video(path: str | Path) -> tuple[np.ndarray, float, int, int]:
    """Decode every frame of `path` with cv2: (frames [N,H,W,3] RGB uint8, fps, width, height)."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"cannot open {path}"
    fps = capture.get(cv2.CAP_PROP_FPS)
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8), fps, width, height


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 arrays, in dB."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def smooth_clip(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth moving gradient clip [T,3,H,W] float32 in [0,1] (codec-friendly content)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    phase = torch.rand(3, generator=g) * 6
    clip = [
        torch.stack([0.5 + 0.4 * torch.sin(3 * xx + 2 * yy + phase[c] + 0.2 * t) for c in range(3)])
        for t in range(frames)
    ]
    return torch.stack(clip).clamp(0, 1)


@pytest.fixture
def ntsc() -> Fraction:
    return Fraction(30000, 1001)


def load_recipe(path: Path) -> ModuleType:
    """Import a reference_recipe.py copied into tests/data (the weights and inputs behind the goldens)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
