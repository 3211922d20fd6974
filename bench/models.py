"""Model-only frames per second of each BackgroundMattingV2 and RobustVideoMatting variant (batch 1, eval, no_grad).

    python bench/models.py [--iterations 5] [--warmup 2] [--variants mattingrefine-resnet50 ...]

CPU: 512x512, fp32. With CUDA also 1920x1080 and 3840x2160 in fp32 and fp16, refine variants at
the reference's recommended settings (HD: backbone_scale 0.25, 80_000 pixels; 4K: 0.125, 320_000).
Weights are freshly initialised and inputs random, so sampling runs with prevent_oversampling off
(as the reference's speed test) to refine the full sample count. RVM runs frame after frame with its
state carried: CPU 512x288 (downsample_ratio 1); GPU HD at 0.25, 4K at 0.125 (the reference's advice).
Reports the median of the runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import NamedTuple

import torch

from lightning_matting.models import VARIANTS, load_model

# (label, width, height, refine options) per device.
CPU_SIZES = [("512x512", 512, 512, {"backbone_scale": 0.25, "refine_sample_pixels": 80_000})]
GPU_SIZES = [
    ("1920x1080", 1920, 1080, {"backbone_scale": 0.25, "refine_sample_pixels": 80_000}),
    ("3840x2160", 3840, 2160, {"backbone_scale": 0.125, "refine_sample_pixels": 320_000}),
]
RVM_CPU_SIZES = [("512x288", 512, 288, {"downsample_ratio": 1.0})]
RVM_GPU_SIZES = [
    ("1920x1080", 1920, 1080, {"downsample_ratio": 0.25}),
    ("3840x2160", 3840, 2160, {"downsample_ratio": 0.125}),
]


class Case(NamedTuple):
    variant: str
    size: str
    width: int
    height: int
    device: str
    dtype: torch.dtype
    options: dict


def cases(variants: list[str]) -> list[Case]:
    """Every (variant, size, device, dtype) to measure on this machine."""
    plans = [("cpu", torch.float32, CPU_SIZES, RVM_CPU_SIZES)]
    if torch.cuda.is_available():
        plans += [("cuda", dtype, GPU_SIZES, RVM_GPU_SIZES) for dtype in (torch.float32, torch.float16)]
    found = []
    for device, dtype, sizes, rvm_sizes in plans:
        for variant in variants:
            for label, width, height, refine_options in rvm_sizes if variant.startswith("rvm") else sizes:
                options = {}
                if variant.startswith("rvm"):
                    options = refine_options
                elif variant.startswith("mattingrefine"):
                    options = {
                        **refine_options,
                        "refine_mode": "sampling",
                        "refine_prevent_oversampling": False,
                    }
                found.append(Case(variant, label, width, height, device, dtype, options))
    return found


def seconds_per_frame(case: Case, warmup: int, iterations: int) -> float:
    """Median wall time of one forward pass of `case`, in seconds."""
    recurrent = case.variant.startswith("rvm")
    options = {} if recurrent else case.options
    model = load_model(case.variant, **options).to(case.device, case.dtype)
    src = torch.rand(1, 3, case.height, case.width, device=case.device, dtype=case.dtype)
    bgr = torch.rand_like(src)
    state = [None] * 4
    times = []
    with torch.no_grad():
        for i in range(warmup + iterations):
            if case.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            if recurrent:
                _, _, *state = model(src, *state, case.options["downsample_ratio"])
            else:
                model(src, bgr)
            if case.device == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5, help="timed runs per case (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"{'variant':<26} {'size':<10} {'device':<6} {'dtype':<8} {'ms/frame':>9} {'frames/s':>9}")
    for case in cases(args.variants):
        seconds = seconds_per_frame(case, args.warmup, args.iterations)
        dtype = str(case.dtype).removeprefix("torch.")
        row = f"{case.variant:<26} {case.size:<10} {case.device:<6} {dtype:<8}"
        print(f"{row} {seconds * 1000:>9.1f} {1 / seconds:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
