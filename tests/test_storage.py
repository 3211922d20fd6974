"""A full disk or a file size limit mid-run: a clear error naming the output, finished segments kept, a resume.

The limit is real: the run goes in a subprocess under `RLIMIT_FSIZE` with SIGXFSZ ignored, so every write past
the limit fails with EFBIG as it would on a full disk (OpenCV drops such writes without a word).
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import read_video
from test_predict import ROOT, MeanMatte, plate, predict

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.module import MattingModule
from lightning_matting.writers import VideoWriter, durable
from lightning_matting.writers.chunks import count_frames, parts_folder, verified_chunks

FPS, FRAMES = 10, 30  # segments of 1 s: 10 frames
DRIVER = """
import sys
sys.path.insert(0, "tests")
import lightning as L
from test_predict import MeanMatte
from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.module import MattingModule

source, background, out = sys.argv[1:4]
dm = VideoMattingDataModule(sources=[source], backgrounds=[background], batch_size=2, num_workers=0)
callback = VideoWriterCallback(out, outputs=["fgr"], fourcc="FFV1", segment_seconds=1)
trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[callback], enable_progress_bar=False)
trainer.predict(MattingModule(MeanMatte()), datamodule=dm, return_predictions=False)
"""


def noise_clip(path, flat_frames: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A lossless clip of `size` (W, H; 64x48: `flat_frames` grey frames, a few hundred bytes each in FFV1,
    then noise, about 10 KB each); returns its frames [N,H,W,3] RGB uint8."""
    width, height = size
    frames = torch.randint(
        0, 256, (FRAMES, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    frames[:flat_frames] = 128
    with VideoWriter(path, FPS, width, height, fourcc="FFV1") as writer:
        writer.add_batch(frames)
    return frames.permute(0, 2, 3, 1).numpy()


def predict_under_file_size_limit(tmp_path, background: str, limit: int) -> subprocess.CompletedProcess:
    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER))
    return subprocess.run(
        [sys.executable, str(driver), str(tmp_path / "clip.mkv"), background, str(tmp_path / "out")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=limited,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("flat_frames", "limit", "failing", "kept"),
    [
        # the second segment (10 noise frames) outgrows the limit: the first is kept
        (10, 60_000, r"fgr\.mkv\.parts/\.writing-00000010\.mkv", [range(0, 10)]),
        # every segment fits, their join does not
        (0, 150_000, r"\.joining-fgr\.mkv", [range(0, 10), range(10, 20), range(20, 30)]),
    ],
)
def test_file_size_limit_stops_the_run_naming_the_output_and_keeps_finished_segments(
    tmp_path, flat_frames, limit, failing, kept
):
    source = noise_clip(tmp_path / "clip.mkv", flat_frames)
    background = plate(tmp_path)
    result = predict_under_file_size_limit(tmp_path, background, limit)
    assert result.returncode != 0
    assert re.search(
        rf"StorageError: \[Errno 27\] writing .*{failing} failed: it reached the file size limit of {limit} bytes",
        result.stderr,
    )
    assert "rerun with --resume=true" in result.stderr
    parts = parts_folder(tmp_path / "out" / "clip" / "fgr.mkv")
    chunks, rejected = verified_chunks(parts, "mkv")
    assert all(frames in [frames for frames, _ in chunks] for frames in kept) and not rejected
    assert all(count_frames(file) == len(frames) for frames, file in chunks)  # none short
    assert not list(parts.glob(".writing-*"))  # the failed chunk's file is gone
    assert not (tmp_path / "out" / "clip" / ".joining-fgr.mkv").exists()

    # space given back (no limit here): the resume continues after the kept segments, lossless
    dm = VideoMattingDataModule(sources=[str(tmp_path / "clip.mkv")], backgrounds=[background], batch_size=2)
    callback = VideoWriterCallback(
        tmp_path / "out", outputs=["fgr"], fourcc="FFV1", segment_seconds=1, resume=True
    )
    predict(MattingModule(MeanMatte()), dm, callback)
    frames, fps, _, _ = read_video(tmp_path / "out" / "clip" / "fgr.mkv")
    assert fps == FPS
    np.testing.assert_array_equal(frames, source)
    assert not parts.exists()


def test_a_disk_with_less_free_space_than_the_threshold_counts_as_full(tmp_path, monkeypatch):
    # OpenCV reports no failed write: a disk under the threshold (here: any disk) is taken as full
    monkeypatch.setattr(durable, "FULL_DISK_BYTES", 1 << 62)
    writer = VideoWriter(tmp_path / "pha.mkv", FPS, 64, 48, fourcc="FFV1")
    writer.add_batch(torch.zeros(1, 1, 48, 64))
    with pytest.raises(
        durable.StorageError, match=r"writing .*pha\.mkv failed: its disk is full \(.* free\)"
    ):
        writer.close()
