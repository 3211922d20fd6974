"""Encoding throughput of each AVWriter preset next to OpenCV's VideoWriter (mp4v), same input frames.

    python bench/formats.py [--frames 40] [--repeats 2] [--size 720p]

Each row writes the same float [1,C,H,W] frames (C=3, or C=4 for the alpha rows) through a writer, from
construction to close(): conversion on the caller's thread, encoding on the writer's thread. The best of
`--repeats` rounds is shown.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import cv2
import torch
from writers import SIZES, batches, clip  # bench/writers.py: the same input frames as the writer bench

from lightning_matting.writers import VideoWriter
from lightning_matting.writers.pyav import PRESETS, AVWriter

ROWS = [  # (label, codec or None for OpenCV mp4v, input channels)
    ("VideoWriter mp4v", None, 3),
    ("AVWriter h264", "h264", 3),
    ("AVWriter hevc", "hevc", 3),
    ("AVWriter prores4444", "prores4444", 3),
    ("AVWriter prores4444 + alpha", "prores4444", 4),
    ("AVWriter vp9", "vp9", 3),
    ("AVWriter vp9 + alpha", "vp9", 4),
    ("AVWriter ffv1", "ffv1", 3),
    ("AVWriter ffv1 + alpha", "ffv1", 4),
]


def write(path: Path, codec: str | None, frames: list[torch.Tensor], width: int, height: int) -> float:
    """Seconds to write `frames` from opening the writer to closing it."""
    start = time.perf_counter()
    if codec is None:
        writer = VideoWriter(path, 30, width, height)
    else:
        writer = AVWriter(path, 30, width, height, codec=codec)
    with writer:
        for batch in frames:
            writer.add_batch(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many rounds")
    parser.add_argument("--size", default="720p", choices=list(SIZES))
    args = parser.parse_args()
    width, height = SIZES[args.size]
    inputs = {c: batches(clip(args.frames, width, height, channels=c), 1) for c in (3, 4)}
    print(f"PyAV {av.__version__}, cv2 {cv2.__version__}, torch threads {torch.get_num_threads()}, ", end="")
    print(f"{args.frames} frames {width}x{height}, batch 1, float input, best of {args.repeats}\n")
    print("| writer | pix_fmt | frames/s | vs mp4v | kB/frame |")
    print("|---|---|---|---|---|")
    seconds: dict[int, list[float]] = {row: [] for row in range(len(ROWS))}
    sizes: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp) / "warm-up.mp4", None, inputs[3][:8], width, height)  # first-use costs, untimed
        for _ in range(args.repeats):  # rounds over every row, so that a busy moment hits all rows alike
            for row, (_, codec, channels) in enumerate(ROWS):
                extension = "mp4" if codec is None else PRESETS[codec].extensions[0]
                path = Path(tmp) / f"{codec}-{channels}.{extension}"
                seconds[row].append(write(path, codec, inputs[channels], width, height))
                sizes[row] = path.stat().st_size / args.frames / 1e3
    baseline = args.frames / min(seconds[0])
    for row, (label, codec, channels) in enumerate(ROWS):
        fps = args.frames / min(seconds[row])
        pix_fmt = "yuv420p (mpeg4)" if codec is None else PRESETS[codec].pix_fmts[channels]
        print(f"| {label} | {pix_fmt} | {fps:.1f} | {fps / baseline:.2f}x | {sizes[row]:.0f} |")


if __name__ == "__main__":
    main()
