"""Hard kills lose at most a segment; resume=True continues and ends with the uninterrupted run's files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import read_video
from test_predict import (
    ROOT,
    counter_level,
    levels,
    plate,
    run_cli,
    synthetic_predict_args,
    write_counter_clip,
)
from torch import nn

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.data.sampling import VideoBatchSampler
from lightning_matting.module import MattingModule
from lightning_matting.writers import VideoWriter
from lightning_matting.writers.segments import SegmentedWriter, finalized_segments, join_segments

FRAMES, FPS, SEGMENT_SECONDS, BATCH = 22, 10, 0.4, 2  # 4 frames per segment
SEGMENT = 4


def counter_batch(first: int, count: int) -> torch.Tensor:
    return torch.stack(
        [torch.full((3, 48, 64), counter_level(i), dtype=torch.uint8) for i in range(first, first + count)]
    )


def test_sampler_starts_each_video_at_its_offset():
    sampler = VideoBatchSampler([5, 4, 3], batch_size=2, ranges=[range(3, 5), range(4), range(3, 3)])
    assert list(sampler) == [[3, 4], [5, 6], [7, 8]]
    assert len(sampler) == 3
    with pytest.raises(
        ValueError, match=r"ranges must give one range of frames within \[0, frames\] per video"
    ):
        VideoBatchSampler([5, 4], batch_size=2, ranges=[range(6), range(4)])


def segmented(path: Path, fourcc: str, fps=FPS, start_segment=0) -> SegmentedWriter:
    return SegmentedWriter(
        path,
        lambda file: VideoWriter(file, fps, 64, 48, fourcc=fourcc),
        SEGMENT,
        Fraction(fps),
        fourcc=fourcc,
        start_segment=start_segment,
    )


def test_segments_rotate_and_join_exactly_with_the_fps(tmp_path, ntsc):
    writer = SegmentedWriter(
        tmp_path / "pha.mkv",
        lambda f: VideoWriter(f, ntsc, 64, 48, fourcc="FFV1"),
        SEGMENT,
        ntsc,
        fourcc="FFV1",
    )
    for first in range(0, 10, 3):
        writer.add_batch(counter_batch(first, min(3, 10 - first)))
    writer.close()
    parts = finalized_segments(tmp_path / "pha.mkv.parts", "mkv")
    assert [p.name for p in parts] == ["00000.mkv", "00001.mkv", "00002.mkv"]
    assert [len(read_video(p)[0]) for p in parts] == [4, 4, 2]
    writer.join()
    frames, fps, _, _ = read_video(tmp_path / "pha.mkv")
    assert levels(frames) == [counter_level(i) for i in range(10)]
    assert fps == pytest.approx(float(ntsc), abs=1e-4)
    assert not (tmp_path / "pha.mkv.parts").exists()


def test_mp4v_segments_keep_count_and_order(tmp_path):
    with segmented(tmp_path / "com.mp4", "mp4v") as writer:
        writer.add_batch(counter_batch(0, 11))
    writer.join()
    frames, fps, _, _ = read_video(tmp_path / "com.mp4")
    assert fps == FPS
    assert [round((level - counter_level(0)) / 10) for level in levels(frames)] == list(range(11))


def test_abort_leaves_a_playable_file_and_only_full_segments(tmp_path):
    writer = segmented(tmp_path / "pha.mkv", "FFV1")
    writer.add_batch(counter_batch(0, 6))
    writer.abort()
    assert levels(read_video(tmp_path / "pha.mkv")[0]) == [counter_level(i) for i in range(6)]
    assert sorted(p.name for p in (tmp_path / "pha.mkv.parts").iterdir()) == ["00000.mkv"]
    writer = segmented(tmp_path / "pha.mkv", "FFV1", start_segment=1)  # continue at frame 4
    writer.add_batch(counter_batch(4, 5))
    writer.close()
    writer.join()
    assert levels(read_video(tmp_path / "pha.mkv")[0]) == [counter_level(i) for i in range(9)]


DRIVER = """
import sys, time
from pathlib import Path
import lightning as L
from torch import nn
from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.module import MattingModule

source, background, out, progress = sys.argv[1:5]

class SlowMatte(nn.Module):
    def forward(self, src, bgr):
        time.sleep(0.2)
        with open(progress, "a") as f:
            f.write(str(len(src)) + "\\n")
        return src.mean(1, keepdim=True), src

dm = VideoMattingDataModule(sources=[source], backgrounds=[background], batch_size={batch})
callback = VideoWriterCallback(out, outputs=["pha", "com"], fourcc="FFV1", segment_seconds={seconds})
trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[callback], enable_progress_bar=False)
trainer.predict(MattingModule(SlowMatte()), datamodule=dm, return_predictions=False)
"""


class SlowMatte(nn.Module):
    """The driver's network without the sleep (the same name: the same model for the manifest)."""

    def forward(self, src, bgr):
        return src.mean(1, keepdim=True), src


def run_in_process(source, background, out, model, **kwargs):
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[background], batch_size=BATCH)
    callback = VideoWriterCallback(
        out, outputs=["pha", "com"], fourcc="FFV1", segment_seconds=SEGMENT_SECONDS, **kwargs
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[callback], enable_progress_bar=False)
    trainer.predict(MattingModule(model), datamodule=dm, return_predictions=False)


def start_slow_predict(tmp_path: Path, segments: int) -> tuple[subprocess.Popen, Path, str, Path, Path]:
    """The driver predicting a counter clip in a subprocess, returned once `segments` pha segments are final:
    (process, source, background, out folder, progress file)."""
    source = write_counter_clip(tmp_path / "clip.mkv", FRAMES, fps=FPS)
    background = plate(tmp_path)
    out, progress = tmp_path / "out", tmp_path / "progress.txt"
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER.format(batch=BATCH, seconds=SEGMENT_SECONDS)))
    process = subprocess.Popen(
        [sys.executable, str(driver), str(source), background, str(out), str(progress)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    parts = out / "clip" / "pha.mkv.parts"
    deadline = time.monotonic() + 120
    while len(finalized_segments(parts, "mkv")) < segments:
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no segment was written"
        time.sleep(0.05)
    return process, source, background, out, progress


def test_sigkill_loses_at_most_a_segment_and_resume_matches_an_uninterrupted_run(tmp_path):
    process, source, background, out, progress = start_slow_predict(tmp_path, 3)
    parts = out / "clip" / "pha.mkv.parts"
    predicted = sum(int(n) for n in progress.read_text().split())
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    predicted = max(predicted, sum(int(n) for n in progress.read_text().split()))
    assert predicted < FRAMES, "the run ended before the kill"

    segments = finalized_segments(parts, "mkv")  # what survived: readable, in order, all but a segment
    join_segments(segments, tmp_path / "survived.mkv", Fraction(FPS))
    survived = levels(read_video(tmp_path / "survived.mkv")[0])
    assert survived == [counter_level(i) for i in range(len(survived))]
    assert len(survived) >= predicted - SEGMENT - BATCH  # the segment being filled, the batch in flight

    with pytest.raises(FileExistsError, match=r"exist already .*overwrite=True"):
        run_in_process(source, background, out, SlowMatte())
    with pytest.raises(
        ValueError, match=r"cannot resume clip: model, model.weights changed since the interrupted run"
    ):
        run_in_process(source, background, out, nn.Conv2d(3, 1, 1), resume=True)
    with pytest.raises(
        ValueError, match=r"cannot resume clip: codec changed .*resume=False and overwrite=True"
    ):
        dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[background], batch_size=BATCH)
        callback = VideoWriterCallback(
            out, outputs=["pha", "com"], fourcc="MJPG", extension="mkv", segment_seconds=0.4, resume=True
        )
        L.Trainer(accelerator="cpu", logger=False, callbacks=[callback], enable_progress_bar=False).predict(
            MattingModule(SlowMatte()), datamodule=dm, return_predictions=False
        )

    run_in_process(source, background, out, SlowMatte(), resume=True)
    run_in_process(source, background, tmp_path / "reference", SlowMatte())
    for output in ("pha", "com"):
        resumed, fps, _, _ = read_video(out / "clip" / f"{output}.mkv")
        reference, reference_fps, _, _ = read_video(tmp_path / "reference" / "clip" / f"{output}.mkv")
        assert len(resumed) == FRAMES and fps == reference_fps == FPS
        np.testing.assert_array_equal(resumed, reference)
    assert sorted(p.name for p in (out / "clip").iterdir()) == ["com.mkv", "pha.mkv"]  # no parts, no manifest


def test_cli_resume_flag_without_previous_outputs_runs_from_the_start(tmp_path):
    result = run_cli(
        *synthetic_predict_args(5),
        f"--data.synthetic_dir={tmp_path / 'inputs'}",
        "--trainer.callbacks+=VideoWriterCallback",
        f"--trainer.callbacks.output_dir={tmp_path / 'out'}",
        "--trainer.callbacks.outputs=[pha]",
        "--trainer.callbacks.segment_seconds=0.1",
        "--resume=true",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_video(tmp_path / "out" / "synthetic_000" / "pha.mp4")[0]) == 5
    assert sorted(p.name for p in (tmp_path / "out" / "synthetic_000").iterdir()) == ["pha.mp4"]
