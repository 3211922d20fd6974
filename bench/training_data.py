"""Training speed with the DataLoader against the same model fed batches already in memory, in one run.

    python bench/training_data.py [--steps 4] [--size 512 288] [--batch 8] [--workers 0 2] [--rounds 2]

Data: a VideoMatte240K-layout dataset made here from synthetic clips (fgr/pha as PNG frame folders, two
background images and a background video), read by `VideoMatteDataset` (decode, resize, composite and
augment in the workers, uint8 batches). Model: MattingBase-MobileNetV2, Adam, one optimizer step per batch.
Prints steps/s for the loader and for the same batches held in memory, and their ratio: after one warm-up
pass, the two alternate `--rounds` times and the medians are compared.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from lightning_matting.data import collate_frames, make_clip
from lightning_matting.data.matting_sets import VideoMatteDataset
from lightning_matting.module import MattingModule
from lightning_matting.writers import VideoWriter


def make_dataset(root: Path, size: tuple[int, int], frames: int) -> tuple[Path, Path]:
    width, height = size
    for k in range(2):
        clip = make_clip(width, height, frames, seed=k)
        for layer, tensor in (("fgr", clip.fgr), ("pha", clip.pha)):
            folder = root / "videomatte" / layer / f"clip{k}"
            folder.mkdir(parents=True)
            for i, frame in enumerate(tensor.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()):
                cv2.imwrite(str(folder / f"{i:05d}.png"), frame[..., ::-1] if frame.shape[-1] == 3 else frame)
    backgrounds = root / "backgrounds"
    backgrounds.mkdir()
    for k in range(2):
        cv2.imwrite(str(backgrounds / f"still{k}.jpg"), np.full((height, width, 3), 60 + 90 * k, np.uint8))
    with VideoWriter(backgrounds / "moving.mp4", 30, width, height) as writer:
        writer.add_batch(make_clip(width, height, 30, seed=7).src)
    return root / "videomatte", backgrounds


def train_steps(module: MattingModule, batches, steps: int) -> float:
    """Steps/s over `steps` optimizer steps (after one warm-up step)."""
    optimizer = module.configure_optimizers()
    iterator = iter(batches)
    start = None
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        batch = next(iterator)
        loss = module.training_step(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 288))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=(0, 2))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = tuple(args.size)
    module = MattingModule("mattingbase-mobilenetv2")
    module.log_dict = lambda *a, **k: None  # no trainer: nothing to log to
    print(
        f"MattingBase-MobileNetV2, {size[0]}x{size[1]}, batch {args.batch}, {args.steps} steps, "
        f"torch threads {torch.get_num_threads()}"
    )
    print("| workers | loader steps/s | in memory steps/s | loader / memory |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        root, backgrounds = make_dataset(Path(folder), size, 4 * args.batch)
        dataset = VideoMatteDataset(root, backgrounds, clip_length=1, size=size, augment=True)
        for workers in args.workers:
            collate = partial(collate_frames, share_static=False)  # the datamodule's training batches
            loader = DataLoader(dataset, args.batch, shuffle=True, num_workers=workers, collate_fn=collate)

            def endless(loader=loader):
                while True:
                    yield from loader

            batches = endless()  # one iterator throughout: the workers keep decoding ahead of the model
            held = [next(batches) for _ in range(args.steps + 1)]
            train_steps(module, held, 1)  # warm-up: kernels, allocator
            memory, loaded = [], []
            for _ in range(args.rounds):
                memory.append(train_steps(module, held, args.steps))
                loaded.append(train_steps(module, batches, args.steps))
            memory_rate, loaded_rate = statistics.median(memory), statistics.median(loaded)
            print(f"| {workers} | {loaded_rate:.3f} | {memory_rate:.3f} | {loaded_rate / memory_rate:.2f} |")


if __name__ == "__main__":
    main()
