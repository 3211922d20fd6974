"""Distributed recurrent predict (RVM, 2 CPU processes, gloo) against the single-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_video
from test_models_rvm import manifest, recipe
from test_predict import ROOT
from test_warmup import loop_alpha, reference_rvm

from lightning_matting.data import make_clip
from lightning_matting.writers import VideoWriter

SIZE, FPS, BATCH = (64, 48), 10, 3

# Lightning's "ddp" launches this file again for rank 1, so it is a script with a __main__ guard.
DRIVER = """
import json, sys
import lightning as L
from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.module import MattingModule

config = json.loads(sys.argv[1])

if __name__ == "__main__":
    dm = VideoMattingDataModule(sources=config["sources"], batch_size=config["batch_size"])
    callback = VideoWriterCallback(config["out"], outputs=["pha"], fourcc="FFV1", segment_seconds=0.4)
    module = MattingModule(
        "rvm-mobilenetv3", checkpoint=config["checkpoint"], downsample_ratio=1, warmup_frames=config["warmup"]
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=config["devices"],
        strategy="ddp" if config["devices"] > 1 else "auto",
        logger=False,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.predict(module, datamodule=dm, return_predictions=False)
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "rvm_mobilenetv3.pth"
    torch.save(recipe.reference_weights(manifest("mobilenetv3")), path)
    return path


def write_clip(path: Path, frames: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, FPS, *SIZE, fourcc="FFV1") as writer:
        writer.add_batch(make_clip(*SIZE, frames, fps=FPS, seed=seed).src)
    return path


def run(
    tmp_path: Path, sources: list[Path], checkpoint: Path, out: str, devices: int, warmup: int = 0
) -> None:
    """The driver on `devices` processes; fails the test with its stderr when it fails."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    config = {
        "sources": [str(source) for source in sources],
        "batch_size": BATCH,
        "out": str(tmp_path / out),
        "checkpoint": str(checkpoint),
        "devices": devices,
        "warmup": warmup,
    }
    result = subprocess.run(
        [sys.executable, str(driver), json.dumps(config)],
        cwd=ROOT,
        # One thread everywhere: Lightning's DDP gives each process cores // ranks threads, and float sums
        # split over another thread count round differently (1 level in 20,000 pixels).
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def alpha(tmp_path: Path, out: str, video: str) -> np.ndarray:
    return read_video(tmp_path / out / video / "pha.mkv")[0][..., 0]


def test_whole_videos_per_rank_equal_the_single_process_run(tmp_path, checkpoint):
    sources = [
        write_clip(tmp_path / "in" / f"{name}.mkv", n, seed) for name, n, seed in (("a", 7, 1), ("b", 5, 2))
    ]
    run(tmp_path, sources, checkpoint, "ddp", devices=2)
    run(tmp_path, sources, checkpoint, "single", devices=1)
    for source in sources:  # each video on one rank, from a fresh state: bit for bit the single-process file
        np.testing.assert_array_equal(
            alpha(tmp_path, "ddp", source.stem), alpha(tmp_path, "single", source.stem)
        )


def test_a_video_split_across_ranks_warms_up_before_the_seam(tmp_path, checkpoint):
    frames, warmup, seam = 24, 8, 12  # rank 1 predicts frames 12-23 after warming up on 4-11
    source = write_clip(tmp_path / "in" / "long.mkv", frames, seed=5)
    run(tmp_path, [source], checkpoint, "ddp", devices=2, warmup=warmup)
    run(tmp_path, [source], checkpoint, "single", devices=1)
    split, single = alpha(tmp_path, "ddp", "long"), alpha(tmp_path, "single", "long")
    assert split.shape == single.shape == (frames, SIZE[1], SIZE[0])
    np.testing.assert_array_equal(split[:seam], single[:seam])  # rank 0: frames 0-11 from frame 0 on

    src = torch.from_numpy(read_video(source)[0]).permute(0, 3, 1, 2).float().div(255)
    model = reference_rvm()
    warmed = loop_alpha(model, src, seam - warmup)[warmup:]  # rank 1: a fresh state at frame 4
    assert np.abs(split[seam:].astype(int) - warmed.astype(int)).max() <= 1  # batch clip vs frame by frame
    cold = loop_alpha(model, src, seam)  # what rank 1 would write without a warm-up
    seam_error = np.abs(split[seam].astype(int) - single[seam].astype(int)).mean() / 255
    cold_error = np.abs(cold[0].astype(int) - single[seam].astype(int)).mean() / 255
    assert seam_error < 0.002 and cold_error > 5 * seam_error  # the warm-up is what closes the seam
