"""How far a recurrent model's alpha strays where a run starts mid-video, by warm-up length:

    python bench/rvm_seams.py [--size 320 192] [--frames 120] [--seam 60] [--warmup 0 4 8 16 32 64]

A distributed rank whose range of a video starts at frame S (and a run resumed at S) restarts the
recurrent state there; MattingModule first predicts `warmup_frames` frames before S without writing them.
This measures, on a synthetic clip, the alpha of that restarted run against the single-process run (state
carried from frame 0), frame by frame from the seam on: mean absolute error in [0,1] units at the seam
frame, over the next 30 frames, and the largest frame MAE after the seam. The network is
RVM-MobileNetV3 with the deterministic reference weights of tests/data/rvm (not trained weights: no
official checkpoint can be downloaded here), downsample_ratio 1, frame after frame as MattingModule does
with batch_size 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch

from lightning_matting.data import SyntheticScene
from lightning_matting.models import RobustVideoMatting

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "rvm"


def reference_model(variant: str = "mobilenetv3") -> RobustVideoMatting:
    """RVM with the deterministic weights behind the golden files (tests/data/rvm/reference_recipe.py)."""
    spec = importlib.util.spec_from_file_location("reference_recipe", DATA / "reference_recipe.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    model = RobustVideoMatting(variant)
    model.load_state_dict(recipe.reference_weights(json.loads((DATA / f"rvm-{variant}.json").read_text())))
    return model.eval()


def alpha_from(model: RobustVideoMatting, src: torch.Tensor, start: int) -> torch.Tensor:
    """Alpha [N-start,1,H,W] of frames start.. with a fresh state at `start`, one frame at a time."""
    state: list = [None] * 4
    out = []
    with torch.no_grad():
        for frame in src[start:]:
            _, pha, *state = model(frame[None], *state, downsample_ratio=1)
            out.append(pha[0])
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, nargs=2, default=(320, 192))
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--seam", type=int, default=60)
    parser.add_argument("--warmup", type=int, nargs="+", default=[0, 4, 8, 16, 32, 60])
    args = parser.parse_args()
    width, height = args.size
    src = SyntheticScene(width, height, fps=30, seed=0).render(range(args.frames))["src"]
    model = reference_model()
    single = alpha_from(model, src, 0)[args.seam :]
    print(f"RVM-MobileNetV3 (reference weights), {width}x{height}, {args.frames} frames, seam at {args.seam}")
    print(
        "| warm-up frames | MAE at the seam | mean MAE, 30 frames from the seam | max frame MAE after the seam |"
    )
    print("|---|---|---|---|")
    for warmup in args.warmup:
        restarted = alpha_from(model, src, max(0, args.seam - warmup))[min(warmup, args.seam) :]
        per_frame = (restarted - single).abs().mean(dim=(1, 2, 3))
        print(f"| {warmup} | {per_frame[0]:.5f} | {per_frame[:30].mean():.5f} | {per_frame.max():.5f} |")


if __name__ == "__main__":
    main()
