"""Memory stays flat on long videos: peak RSS of a CLI predict does not grow with the frame count.

The model is a TorchScript export of a trivial network (pha = mean of src, fgr = src): the test is about what
the pipeline keeps (decoded frames, predictions, writer queues), not the network's arithmetic, which made
this the slowest test of the suite with MobileNetV2.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from lightning_matting.writers import VideoWriter

ROOT = Path(__file__).parents[1]
SIZE = (256, 192)
# VmHWM is this process's own peak: getrusage's ru_maxrss keeps the parent's RSS across fork and exec, so
# it reported the pytest process's size (677 MB late in a run) for every child.
PEAK_RSS = (
    "import re, sys; from pathlib import Path; from lightning_matting.cli import main; main(sys.argv[1:]); "
    "print('PEAK_RSS_KB', re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1))"
)


def make_source(path: Path, frames: int) -> Path:
    g = torch.Generator().manual_seed(0)
    with VideoWriter(path, 30, *SIZE) as writer:
        for _ in range(0, frames, 20):
            writer.add_batch(torch.rand(20, 3, SIZE[1], SIZE[0], generator=g))
    return path


class MeanMatte(nn.Module):
    def forward(self, src: torch.Tensor, bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return src.mean(1, keepdim=True), src


def peak_rss_mb(tmp_path: Path, frames: int, return_predictions: bool) -> float:
    source = make_source(tmp_path / f"src{frames}.mp4", frames)
    model = tmp_path / "mean_matte.pt"
    if not model.exists():
        torch.jit.save(torch.jit.script(MeanMatte()), str(model))
    plate = tmp_path / "plate.png"
    cv2.imwrite(str(plate), np.zeros((SIZE[1], SIZE[0], 3), np.uint8))
    args = [
        "predict",
        "--trainer.accelerator=cpu",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--model.model={model}",
        f"--data.sources=[{source}]",
        f"--data.backgrounds=[{plate}]",
        "--trainer.callbacks+=VideoWriterCallback",
        f"--trainer.callbacks.output_dir={tmp_path / f'out{frames}{return_predictions}'}",
        "--trainer.callbacks.outputs=[com, pha, fgr]",
        # OpenCV's mp4v: its encoder's memory is the same from the first frame on. x264 (the default where PyAV
        # is installed) grows its allocations over the first few hundred frames and then stays flat, which two
        # short runs cannot tell from a leak; test_a_closed_writer_is_freed_at_once covers the writers' part.
        "--trainer.callbacks.fourcc=mp4v",
        f"--return_predictions={str(return_predictions).lower()}",
    ]
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.split("PEAK_RSS_KB")[1].split()[0]) / 1024


def test_peak_memory_does_not_grow_with_video_length(tmp_path):
    short = peak_rss_mb(tmp_path, 40, return_predictions=False)
    long = peak_rss_mb(tmp_path, 200, return_predictions=False)
    assert long - short < 30, f"peak RSS grew from {short:.0f} MB to {long:.0f} MB"
    # The measurement can fail: keeping the predictions (7 channels x 256x192 float32 per frame, 275 MB
    # for 200 frames) raises the peak by about that much.
    kept = peak_rss_mb(tmp_path, 200, return_predictions=True)
    assert kept - long > 150, f"peak RSS {long:.0f} MB -> {kept:.0f} MB with return_predictions"


def test_a_closed_writer_is_freed_at_once(tmp_path):
    """A closed writer (and its encoder's native memory) goes when its last reference does, without waiting for
    Python's cycle collector: a segmented video makes and closes one writer per segment."""
    import gc
    import weakref

    from lightning_matting.writers import AVWriter

    writer = AVWriter(tmp_path / "pha.mp4", 30, 64, 48, codec="h264")
    writer.add_batch(torch.rand(2, 1, 48, 64))
    writer.close()
    alive = weakref.ref(writer)
    gc.disable()
    try:
        del writer
        assert alive() is None
    finally:
        gc.enable()
