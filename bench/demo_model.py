"""The demo model against the untrained reference architecture, on held-out synthetic clips.

    python bench/demo_model.py [--checkpoint lightning_matting/assets/demo_mattingbase_mobilenetv2.pth]
        [--clips 4] [--size 256 144] [--frames 30] [--seed 1000]

Held-out clips use seeds that training (seed 0) never saw. Metrics on lightning_matting.metrics scales:
SAD / 1e3, MSE x 1e3, Grad / 1e3, Conn / 1e3 per frame, dtSSD x 1e2.
"""

from __future__ import annotations

import argparse

import torch
from torchmetrics import MetricCollection

from lightning_matting.data import make_clip, split_seeds
from lightning_matting.metrics import MSE, SAD, ConnectivityError, DtSSD, GradientError
from lightning_matting.module import MattingModule

DEMO = "lightning_matting/assets/demo_mattingbase_mobilenetv2.pth"


def evaluate(module: MattingModule, clips: list) -> dict[str, float]:
    metrics = MetricCollection([SAD(), MSE(), GradientError(), ConnectivityError(), DtSSD()])
    module.eval()
    with torch.no_grad():
        for clip in clips:
            for start in range(0, len(clip.src), 8):
                src = clip.src[start : start + 8]
                pha = module(src, clip.bgr.expand_as(src))["pha"]
                metrics.update(pha, clip.pha[start : start + 8])
    return {name: float(value) for name, value in metrics.compute().items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default=DEMO)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 144))
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    clips = [make_clip(*args.size, args.frames, seed=s) for s in split_seeds(args.seed, "val", args.clips)]
    torch.manual_seed(0)
    rows = {
        "untrained MattingBase-MobileNetV2": evaluate(MattingModule("mattingbase-mobilenetv2"), clips),
        "demo model": evaluate(MattingModule("mattingbase-mobilenetv2", checkpoint=args.checkpoint), clips),
    }
    names = list(next(iter(rows.values())))
    print(
        f"{args.clips} held-out clips x {args.frames} frames at {args.size[0]}x{args.size[1]}, seed {args.seed}"
    )
    print("| model | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label, values in rows.items():
        print(f"| {label} | " + " | ".join(f"{values[name]:.3f}" for name in names) + " |")


if __name__ == "__main__":
    main()
