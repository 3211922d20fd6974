"""The conversions whose faster form the package picks, timed against the form it avoids (median ms).

    python bench/conversions.py [--iterations 20]

(a) float [B,3,H,W] -> uint8 BGR [B,H,W,3] on the CPU: OpenCV per plane (writers/frames.py) vs torch ops
(b) OpenCV BGR uint8 [H,W,3] -> RGB tensor [3,H,W]: the planes reversed (data/readers.py) vs cvtColor +
    permute + contiguous
(c) bilinear x2 upsampling of 32 channels (RVM's decoder): channels_last vs NCHW
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import cv2
import torch
import torch.nn.functional as F

from lightning_matting.data.readers import _planes_to_tensor
from lightning_matting.writers.frames import _ORDERS, _torch_to_hwc, to_hwc


def median_ms(run: Callable[[], object], iterations: int) -> float:
    run()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    iterations = parser.parse_args().iterations
    torch.manual_seed(0)
    frames = torch.rand(4, 3, 720, 1280)
    image = (frames[0].permute(1, 2, 0) * 255).to(torch.uint8).numpy().copy()
    decoder = torch.rand(1, 32, 144, 256)
    rows = [
        (
            "(a) float -> uint8 BGR, 4 x 720p",
            lambda: to_hwc(frames),
            lambda: _torch_to_hwc(frames, _ORDERS["bgr"][3], "uint8"),
        ),
        (
            "(b) BGR -> RGB tensor, 720p",
            lambda: _planes_to_tensor(image),
            lambda: torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).contiguous(),
        ),
        (
            "(c) bilinear x2, 32 x 144x256",
            lambda: F.interpolate(
                decoder.contiguous(memory_format=torch.channels_last),
                scale_factor=2.0,
                mode="bilinear",
                align_corners=False,
            ),
            lambda: F.interpolate(decoder, scale_factor=2.0, mode="bilinear", align_corners=False),
        ),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {iterations} iterations")
    print("| conversion | ours ms | avoided ms | ratio |\n|---|---|---|---|")
    for name, ours, avoided in rows:
        a, b = median_ms(ours, iterations), median_ms(avoided, iterations)
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.1f}x |")


if __name__ == "__main__":
    main()
