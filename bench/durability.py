"""The cost of fsync'ed segments and manifests, side by side in one run.

    python bench/durability.py [--frames 300] [--size 640 360] [--segment-seconds 1] [--rounds 3]

Writes the same segmented FFV1 and mp4v video (30 fps) with segments synced to the disk (the default:
each finalized segment's content, then its folder entry, as `replace_durably` does) and with the syncs
made no-ops, alternating, and prints frames/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from lightning_matting.writers import VideoWriter, durable
from lightning_matting.writers.segments import SegmentedWriter


def write(folder: Path, fourcc: str, frames: torch.Tensor, segment_frames: int) -> float:
    width, height = frames.shape[-1], frames.shape[-2]
    extension = "mkv" if fourcc == "FFV1" else "mp4"
    start = time.perf_counter()
    writer = SegmentedWriter(
        folder / f"out.{extension}",
        lambda path: VideoWriter(path, 30, width, height, fourcc=fourcc),
        segment_frames,
        30,
        fourcc=fourcc,
    )
    for first in range(0, len(frames), 4):
        writer.add_batch(frames[first : first + 4])
    writer.close()
    writer.join()
    return len(frames) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, nargs=2, default=(640, 360))
    parser.add_argument("--segment-seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    width, height = args.size
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(args.frames, 3, height, width, generator=g).mul(255).to(torch.uint8)
    segment_frames = round(30 * args.segment_seconds)
    print(
        f"{args.frames} frames {width}x{height}, segments of {segment_frames} frames, median of {args.rounds}"
    )
    print("| codec | synced fps | not synced fps | synced / not synced |")
    print("|---|---|---|---|")
    for fourcc in ("FFV1", "mp4v"):
        rates = {"synced": [], "not synced": []}
        for _ in range(args.rounds):
            for label in rates:
                with tempfile.TemporaryDirectory() as folder:
                    if label == "synced":
                        rates[label].append(write(Path(folder), fourcc, frames, segment_frames))
                    else:
                        with mock.patch.object(durable.os, "fsync", lambda descriptor: None):
                            rates[label].append(write(Path(folder), fourcc, frames, segment_frames))
        synced, unsynced = (statistics.median(rates[label]) for label in ("synced", "not synced"))
        print(f"| {fourcc} | {synced:.1f} | {unsynced:.1f} | {synced / unsynced:.3f} |")


if __name__ == "__main__":
    main()
