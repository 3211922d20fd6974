"""End-to-end predict throughput, side by side in one run (frames/s):

    python bench/predict.py [--frames 300] [--size 1280 720] [--model-ms 20] [--real-size 640 360]

On a synthetic clip (decoded by the datamodule in DataLoader workers), writing com + pha + fgr:
(1) model only: trainer.predict with no callback;
(2) reference style: the reference inference_video.py loop: frames decoded on the main thread (its
    DataLoader has no workers), the model, then the reference add_batch for each output in turn;
(2b) the same loop given our 2 DataLoader workers (a stronger baseline than the reference itself);
(3) encode limit: our three writers fed ready tensors, no model;
(4) ours: trainer.predict with VideoWriterCallback, torch's threads as predict chooses them (the cores other
    processes leave: lightning_matting/threads.py);
(4b) the same with the earlier thread rule: cores - workers - encoders (at least 1).
The model is a GPU stand-in that sleeps `--model-ms` per frame (the CPU stays free, as with a GPU),
then the real MattingBase-MobileNetV2 on CPU at `--real-size`, which (1) and (4) run as MattingModule does in
eval (`--inference fast`, the default: the inference copy; `eager`: the network itself) with the intra-op
threads predict chooses (the writer callback in (4); the same rule, with no encoder, given to (1)), while
(2) and (2b) call the eager network with torch's default. The first lines name the CPU and the load
average, which the last line repeats: on a shared machine compare the columns of one row.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch import nn
from writers import ReferenceVideoWriter

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.cpu import cpu_info
from lightning_matting.data import SyntheticScene, VideoMattingDataModule
from lightning_matting.module import MattingModule
from lightning_matting.outputs import DEFAULT_TARGET_COLOR, composite
from lightning_matting.threads import busy_cores, intra_op_threads
from lightning_matting.writers import ImageSequenceWriter, VideoWriter

OUTPUTS = ("com", "pha", "fgr")


class SleepingMatte(nn.Module):
    """A GPU stand-in: costs `seconds_per_frame` of wall time but no CPU; pha = green channel, fgr = src."""

    def __init__(self, seconds_per_frame: float):
        super().__init__()
        self.seconds_per_frame = seconds_per_frame

    def forward(self, src, bgr):
        time.sleep(self.seconds_per_frame * len(src))
        return src[:, 1:2], src


def datamodule(clip_dir: Path, batch_size: int, num_workers: int = 2) -> VideoMattingDataModule:
    return VideoMattingDataModule(
        sources=[str(clip_dir / "src.mp4")],
        backgrounds=[str(clip_dir / "bgr.png")],
        batch_size=batch_size,
        num_workers=num_workers,
    )


def trainer(callbacks) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, callbacks=callbacks, enable_progress_bar=False)


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def model_only(net: nn.Module, clip_dir: Path, batch_size: int, inference: str) -> float:
    """No writer callback, so no thread choice: the callback's rule, with no encoder, is set here."""
    module = MattingModule(net, outputs=list(OUTPUTS), inference=inference)
    dm = datamodule(clip_dir, batch_size)
    before = torch.get_num_threads()
    cpus = os.sched_getaffinity(0)
    torch.set_num_threads(intra_op_threads(len(cpus), busy_cores(cpus), dm.num_workers, encoders=0))
    try:
        return timed(lambda: trainer([]).predict(module, datamodule=dm, return_predictions=False))
    finally:
        torch.set_num_threads(before)


def ours(net: nn.Module, clip_dir: Path, batch_size: int, out: Path, inference: str) -> float:
    callback = VideoWriterCallback(out / "ours", outputs=list(OUTPUTS), overwrite=True)
    module = MattingModule(net, inference=inference)
    dm = datamodule(clip_dir, batch_size)
    return timed(lambda: trainer([callback]).predict(module, datamodule=dm, return_predictions=False))


def ours_earlier_rule(net: nn.Module, clip_dir: Path, batch_size: int, out: Path, inference: str) -> float:
    """(4) with the earlier rule: torch gets cores - workers - encoders threads (at least 1)."""
    callback = VideoWriterCallback(out / "ours_earlier", outputs=list(OUTPUTS), overwrite=True)
    dm = datamodule(clip_dir, batch_size)
    threads = intra_op_threads(len(os.sched_getaffinity(0)), None, dm.num_workers, len(OUTPUTS))
    module = MattingModule(net, inference=inference, threads=threads)
    return timed(lambda: trainer([callback]).predict(module, datamodule=dm, return_predictions=False))


def reference_loop(
    net: nn.Module, clip_dir: Path, batch_size: int, out: Path, size: tuple[int, int], num_workers: int
) -> float:
    """The reference inference_video.py shape: model, then each writer's add_batch in turn, one thread."""
    dm = datamodule(clip_dir, batch_size, num_workers)
    dm.setup("predict")

    def run():
        writers = {name: ReferenceVideoWriter(str(out / f"ref_{name}.mp4"), 30, *size) for name in OUTPUTS}
        green = torch.tensor(DEFAULT_TARGET_COLOR).view(1, 3, 1, 1)
        with torch.no_grad():
            for batch in dm.predict_dataloader():
                # uint8 frames as decoded; the reference's ToTensor makes floats on the main thread
                src, bgr = batch.src.float().div(255), batch.bgr.float().div(255)
                pha, fgr = net(src, bgr.expand_as(src))[:2]
                outputs = {"com": composite(fgr, pha, green), "pha": pha, "fgr": fgr}
                for name in OUTPUTS:
                    writers[name].add_batch(outputs[name])
        for writer in writers.values():
            writer.close()

    return timed(run)


def encode_limit(clip_src: torch.Tensor, batch_size: int, out: Path) -> float:
    height, width = clip_src.shape[-2:]
    batches = [clip_src[i : i + batch_size] for i in range(0, len(clip_src), batch_size)]

    def run():
        writers = {name: VideoWriter(out / f"limit_{name}.mp4", 30, width, height) for name in OUTPUTS}
        for batch in batches:
            writers["com"].add_batch(batch)
            writers["pha"].add_batch(batch[:, 1:2])
            writers["fgr"].add_batch(batch)
        for writer in writers.values():
            writer.close()

    return timed(run)


def write_clip(folder: Path, frames: int, size: tuple[int, int]) -> torch.Tensor:
    """Render a synthetic clip 30 frames at a time into src.mp4 + bgr.png; returns its first 8 frames."""
    scene = SyntheticScene(*size, fps=30, seed=0)
    first = scene.render(range(8))["src"]
    with VideoWriter(folder / "src.mp4", 30, *size) as writer:
        for start in range(0, frames, 30):
            writer.add_batch(scene.render(range(start, min(start + 30, frames)))["src"])
    with ImageSequenceWriter(folder / "plate", width=size[0], height=size[1]) as plate:
        plate.add_batch(scene.plate[None])
    (folder / "plate" / "00000.png").rename(folder / "bgr.png")
    return first


def measure(
    label: str,
    net: nn.Module,
    frames: int,
    size: tuple[int, int],
    batch_size: int,
    tmp: Path,
    inference: str = "fast",
) -> None:
    clip_dir = tmp / f"clip_{size[0]}x{size[1]}_{frames}"
    first = write_clip(clip_dir, frames, size)
    with torch.no_grad():  # warm-up: first-call allocations are not part of any path's figure
        net(torch.rand(batch_size, 3, size[1], size[0]), torch.rand(batch_size, 3, size[1], size[0]))
    src = first.repeat(frames // len(first) + 1, 1, 1, 1)[:frames]  # the clip's own content, in memory
    fps = {
        "model only": frames / model_only(net, clip_dir, batch_size, inference),
        "reference style": frames / reference_loop(net, clip_dir, batch_size, tmp, size, num_workers=0),
        "reference + workers": frames / reference_loop(net, clip_dir, batch_size, tmp, size, num_workers=2),
        "encode limit": frames / encode_limit(src, batch_size, tmp),
        "ours": frames / ours(net, clip_dir, batch_size, tmp, inference),
        "ours, earlier rule": frames / ours_earlier_rule(net, clip_dir, batch_size, tmp, inference),
    }
    bound = min(fps["model only"], fps["encode limit"])
    print(
        f"| {label} | {size[0]}x{size[1]} | {frames} | "
        + " | ".join(f"{value:.1f}" for value in fps.values())
        + f" | {fps['ours'] / bound:.2f} | {fps['ours'] / fps['reference style']:.2f}"
        + f" | {fps['ours'] / fps['reference + workers']:.2f}"
        + f" | {fps['ours, earlier rule'] / fps['reference style']:.2f} | {fps['ours'] / fps['ours, earlier rule']:.2f} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, nargs=2, default=(1280, 720))
    parser.add_argument("--model-ms", type=float, default=20.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--real-size", type=int, nargs=2, default=(640, 360))
    parser.add_argument("--real-frames", type=int, default=48)
    parser.add_argument(
        "--inference", choices=["fast", "eager"], default="fast", help="MattingModule's inference"
    )
    args = parser.parse_args()
    print(f"CPU: {cpu_info().describe()}; load average {load_average()}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, outputs com+pha+fgr"
    )
    print(
        "| model | size | frames | (1) model only | (2) reference style | (2b) reference + workers "
        "| (3) encode limit | (4) ours | (4b) ours, earlier rule "
        "| ours / min(1,3) | ours / reference | ours / (2b) | (4b) / reference | (4) / (4b) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sleeper = SleepingMatte(args.model_ms / 1000)
        measure(
            f"sleeping {args.model_ms:g} ms/frame",
            sleeper,
            args.frames,
            tuple(args.size),
            args.batch_size,
            tmp,
        )
        real = MattingModule("mattingbase-mobilenetv2").net.eval()
        measure(
            f"MattingBase-MobileNetV2 (CPU, {args.inference})",
            real,
            args.real_frames,
            tuple(args.real_size),
            args.batch_size,
            tmp,
            args.inference,
        )
    print(f"load average after: {load_average()}")


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
