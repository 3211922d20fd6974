"""Encoding throughput of each output format next to OpenCV's VideoWriter (mp4v), and the 10-bit read path.

    python bench/formats.py [--frames 40] [--repeats 2] [--size 1080p]

Each writer row writes the same float [1,C,H,W] frames (C=3, C=4 for the alpha rows, C=1 for the pha rows)
through a writer, from construction to close(): conversion on the caller's thread (to uint8, or to uint16
/ float32 for the deeper rows), encoding on the writer's thread. The read rows time `VideoReader.read` over
every frame of an 8-bit H.264 clip (OpenCV, uint8) and of a 10-bit one (PyAV at 16 bits, uint16), both
written from the same frames. The best of `--repeats` rounds is shown.
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

from lightning_matting.data.readers import VideoReader
from lightning_matting.writers import ImageSequenceWriter, VideoWriter
from lightning_matting.writers.pyav import PRESETS, AVWriter

ROWS = [  # (label, codec: None for OpenCV mp4v, "image:<extension>" for a sequence, input channels, bit depth)
    ("VideoWriter mp4v", None, 3, None),
    ("AVWriter h264", "h264", 3, None),
    ("AVWriter h264 10-bit", "h264", 3, 10),
    ("AVWriter hevc", "hevc", 3, None),
    ("AVWriter hevc 10-bit", "hevc", 3, 10),
    ("AVWriter prores4444", "prores4444", 3, None),
    ("AVWriter prores4444 + alpha", "prores4444", 4, None),
    ("AVWriter vp9", "vp9", 3, None),
    ("AVWriter vp9 + alpha", "vp9", 4, None),
    ("AVWriter ffv1", "ffv1", 3, None),
    ("AVWriter ffv1 + alpha", "ffv1", 4, None),
    ("AVWriter ffv1 pha", "ffv1", 1, None),
    ("AVWriter ffv1 pha 16-bit", "ffv1", 1, 16),
    ("AVWriter ffv1 + alpha 16-bit", "ffv1", 4, 16),
    ("ImageSequenceWriter png pha", "image:png", 1, None),
    ("ImageSequenceWriter png pha 16-bit", "image:png", 1, 16),
    ("ImageSequenceWriter png RGBA 16-bit", "image:png", 4, 16),
    ("ImageSequenceWriter tif pha 16-bit", "image:tif", 1, 16),
    ("ImageSequenceWriter tif pha float", "image:tif", 1, 32),
    ("ImageSequenceWriter exr pha float", "image:exr", 1, None),
    ("ImageSequenceWriter exr RGBA float", "image:exr", 4, None),
]


def open_writer(path: Path, codec: str | None, width: int, height: int, bit_depth: int | None):
    if codec is None:
        return VideoWriter(path, 30, width, height)
    if codec.startswith("image:"):
        return ImageSequenceWriter(path, codec[6:], bit_depth=bit_depth, width=width, height=height)
    return AVWriter(path, 30, width, height, codec=codec, bit_depth=bit_depth)


def write(
    path: Path, codec: str | None, frames: list[torch.Tensor], size: tuple[int, int], bit_depth
) -> float:
    """Seconds to write `frames` from opening the writer to closing it."""
    start = time.perf_counter()
    with open_writer(path, codec, *size, bit_depth) as writer:
        for batch in frames:
            writer.add_batch(batch)
    return time.perf_counter() - start


def bytes_written(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size


def read(path: Path) -> tuple[float, int]:
    """Seconds to read every frame of `path` through VideoReader (opening excluded), and its bit depth."""
    reader = VideoReader(path)
    start = time.perf_counter()
    for i in range(len(reader)):
        reader.read(i)
    return time.perf_counter() - start, reader.bit_depth


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many rounds")
    parser.add_argument("--size", default="1080p", choices=list(SIZES))
    args = parser.parse_args()
    size = SIZES[args.size]
    inputs = {c: batches(clip(args.frames, *size, channels=c), 1) for c in (1, 3, 4)}
    print(f"PyAV {av.__version__}, cv2 {cv2.__version__}, torch threads {torch.get_num_threads()}, ", end="")
    print(f"{args.frames} frames {size[0]}x{size[1]}, batch 1, float input, best of {args.repeats}\n")
    seconds: dict[int, list[float]] = {row: [] for row in range(len(ROWS))}
    sizes: dict[int, float] = {}
    reads: dict[int, list[float]] = {8: [], 10: []}
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp) / "warm-up.mp4", None, inputs[3][:8], size, None)  # first-use costs, untimed
        for depth in reads:  # the read sources: the same frames at 8 and 10 bits
            write(Path(tmp) / f"read{depth}.mp4", "h264", inputs[3], size, depth)
        for _ in range(args.repeats):  # rounds over every row, so that a busy moment hits all rows alike
            for row, (_, codec, channels, depth) in enumerate(ROWS):
                extension = "mp4" if codec is None else "" if codec.startswith("image:") else None
                extension = PRESETS[codec].extensions[0] if extension is None else extension
                path = Path(tmp) / f"{row}.{extension}" if extension else Path(tmp) / f"{row}"
                seconds[row].append(write(path, codec, inputs[channels], size, depth))
                sizes[row] = bytes_written(path) / args.frames / 1e3
            for depth in reads:
                reads[depth].append(read(Path(tmp) / f"read{depth}.mp4")[0])
        read_depths = {depth: read(Path(tmp) / f"read{depth}.mp4")[1] for depth in reads}
    print("| writer | stored as | frames/s | vs mp4v | kB/frame |")
    print("|---|---|---|---|---|")
    baseline = args.frames / min(seconds[0])
    for row, (label, codec, channels, depth) in enumerate(ROWS):
        fps = args.frames / min(seconds[row])
        if codec is None:
            stored = "yuv420p (mpeg4)"
        elif codec.startswith("image:"):
            stored = f"{codec[6:]}, {depth or 32 if codec == 'image:exr' else depth or 8} bits"
        else:
            preset = PRESETS[codec]
            stored = preset.pix_fmts[depth or preset.depths[0]][channels]
        print(f"| {label} | {stored} | {fps:.1f} | {fps / baseline:.2f}x | {sizes[row]:.0f} |")
    print("\n| read (VideoReader.read, H.264) | decoded as | frames/s |")
    print("|---|---|---|")
    for depth, times in reads.items():
        dtype = "uint8 (OpenCV)" if read_depths[depth] == 8 else "uint16 (PyAV, rgb48le)"
        print(f"| {depth}-bit source | {dtype} | {args.frames / min(times):.1f} |")


if __name__ == "__main__":
    main()
