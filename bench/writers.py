"""Writer throughput, side by side in one run: reference-style add_batch vs the encoder limit vs ours.

    python bench/writers.py [--frames 120] [--batch 1] [--sizes 720p 1080p]

(a) reference: mul(255).byte(), cpu, permute, numpy, per-frame cvtColor RGB2BGR, mp4v, caller's thread
(b) encoder limit: cv2 mp4v writing ready BGR uint8 frames in a loop
(c) ours: VideoWriter from float input (conversion on the caller, encoding on a background thread)
(d) com+pha+fgr: our three writers together vs the reference writing the three in turn
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import torch

from lightning_matting.writers import VideoWriter

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


class ReferenceVideoWriter:
    """The BackgroundMattingV2 inference_video.py writer, as users run it today."""

    def __init__(self, path: str, frame_rate: float, width: int, height: int):
        self.out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), frame_rate, (width, height))

    def add_batch(self, frames: torch.Tensor) -> None:
        if frames.size(1) == 1:
            frames = frames.repeat(1, 3, 1, 1)
        frames = frames.mul(255).byte().cpu().permute(0, 2, 3, 1).numpy()
        for frame in frames:
            self.out.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self.out.release()


def clip(frames: int, width: int, height: int, channels: int = 3) -> list[torch.Tensor]:
    """Smooth moving content [1,C,H,W] float in [0,1]: 8 distinct frames, cycled."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    distinct = [
        torch.stack([0.5 + 0.4 * torch.sin(4 * xx + 3 * yy + c + 0.3 * t) for c in range(channels)])[None]
        for t in range(8)
    ]
    return [distinct[i % 8] for i in range(frames)]


def batches(frames: list[torch.Tensor], batch: int) -> list[torch.Tensor]:
    return [torch.cat(frames[i : i + batch]) for i in range(0, len(frames), batch)]


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def write_all(make_writer, inputs: dict[str, list[torch.Tensor]]) -> float:
    """Seconds to write every batch of every output, in turn, with one `make_writer(name)` per output."""

    def run():
        writers = {name: make_writer(name) for name in inputs}
        for i in range(len(next(iter(inputs.values())))):
            for name, writer in writers.items():
                writer.add_batch(inputs[name][i])
        for writer in writers.values():
            writer.close()

    return timed(run)


def reference(folder: Path, width: int, height: int, inputs: dict[str, list[torch.Tensor]]) -> float:
    """Each output written in turn on the caller's thread, as the reference script does."""
    return write_all(
        lambda name: ReferenceVideoWriter(str(folder / f"ref_{name}.mp4"), 30, width, height), inputs
    )


def ours(folder: Path, width: int, height: int, inputs: dict[str, list[torch.Tensor]]) -> float:
    """Our writers: add_batch queues, each output encodes on its own thread."""
    return write_all(lambda name: VideoWriter(folder / f"ours_{name}.mp4", 30, width, height), inputs)


def encoder_limit(folder: Path, width: int, height: int, frames: list[torch.Tensor]) -> float:
    ready = [
        cv2.cvtColor(f[0].mul(255).round().byte().permute(1, 2, 0).numpy(), cv2.COLOR_RGB2BGR) for f in frames
    ]

    def run():
        out = cv2.VideoWriter(str(folder / "raw.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
        for frame in ready:
            out.write(frame)
        out.release()

    return timed(run)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    print(
        f"torch threads {torch.get_num_threads()}, cv2 {cv2.__version__}, {args.frames} frames, batch {args.batch}"
    )
    print(
        "| size | (a) reference | (b) encoder limit | (c) ours | (c)/(a) | (d) ref x3 seq | (d) ours x3 | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size in args.sizes:
            width, height = SIZES[size]
            rgb = clip(args.frames, width, height)
            alpha = clip(args.frames, width, height, channels=1)
            single = {"com": batches(rgb, args.batch)}
            triple = {"com": single["com"], "pha": batches(alpha, args.batch), "fgr": single["com"]}
            n = args.frames
            fps_a = n / reference(folder, width, height, single)
            fps_b = n / encoder_limit(folder, width, height, rgb)
            fps_c = n / ours(folder, width, height, single)
            fps_d_ref = n / reference(folder, width, height, triple)
            fps_d_ours = n / ours(folder, width, height, triple)
            print(
                f"| {size} | {fps_a:.1f} | {fps_b:.1f} | {fps_c:.1f} | {fps_c / fps_a:.2f}x | "
                f"{fps_d_ref:.1f} | {fps_d_ours:.1f} | {fps_d_ours / fps_d_ref:.2f}x |"
            )


if __name__ == "__main__":
    main()
