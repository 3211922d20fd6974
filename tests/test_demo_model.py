"""The shipped demo model loads strictly and mattes held-out synthetic clips far better than untrained weights."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_matting.data import make_clip, split_seeds
from lightning_matting.metrics import MSE
from lightning_matting.module import MattingModule

DEMO = Path(__file__).parents[1] / "lightning_matting" / "assets" / "demo_mattingbase_mobilenetv2.pth"


def alpha_mse(module: MattingModule, clip) -> float:
    metric = MSE()
    module.eval()
    with torch.no_grad():
        metric.update(module(clip.src, clip.bgr.expand_as(clip.src))["pha"], clip.pha)
    return float(metric.compute())


def test_demo_checkpoint_beats_the_untrained_baseline_on_a_held_out_clip():
    clip = make_clip(256, 144, 6, seed=split_seeds(4321, "val", 1)[0])  # seeds training never saw
    torch.manual_seed(0)
    untrained = alpha_mse(MattingModule("mattingbase-mobilenetv2"), clip)
    demo = alpha_mse(MattingModule("mattingbase-mobilenetv2", checkpoint=str(DEMO)), clip)
    assert demo < 15 < 50 < untrained, f"MSE x1e3: demo {demo:.2f}, untrained {untrained:.2f}"
