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
from lightning_matting.writers.chunks import finished_chunks, parts_folder
from lightning_matting.writers.join import join_parts, join_segments
from lightning_matting.writers.segments import SegmentedWriter

FRAMES, FPS, SEGMENT_SECONDS, BATCH = 22, 10, 0.4, 2  # 4 frames per segment
SEGMENT = 4


def counter_batch(first: int, count: int) -> torch.Tensor:
    return torch.stack(
        [torch.full((3, 48, 64), counter_level(i), dtype=torch.uint8) for i in range(first, first + count)]
    )


def test_sampler_gives_each_video_its_ranges():
    sampler = VideoBatchSampler([5, 4, 3], batch_size=2, ranges=[[range(3, 5)], [range(4)], []])
    assert list(sampler) == [[3, 4], [5, 6], [7, 8]]
    assert len(sampler) == 3
    gaps = VideoBatchSampler([9], batch_size=2, ranges=[[range(1, 4), range(6, 9)]])
    assert list(gaps) == [[1, 2], [3], [6, 7], [8]]  # each range in batches of its own
    for bad in ([[range(6)], [range(4)]], [[range(4, 6), range(0, 2)], []], [range(5), range(4)]):
        with pytest.raises(
            ValueError, match=r"ranges must give, per video, sorted disjoint ranges of frames"
        ):
            VideoBatchSampler([5, 4], batch_size=2, ranges=bad)


def segmented(path: Path, fourcc: str, fps=FPS, first_frame=0) -> SegmentedWriter:
    return SegmentedWriter(
        path,
        lambda file: VideoWriter(file, fps, 64, 48, fourcc=fourcc),
        SEGMENT,
        Fraction(fps),
        fourcc=fourcc,
        first_frame=first_frame,
    )


def chunk_names(path: Path) -> list[str]:
    return [file.name for _, file in finished_chunks(parts_folder(path), path.suffix[1:])]


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
    assert chunk_names(tmp_path / "pha.mkv") == [
        "00000000-00000004.mkv",
        "00000004-00000008.mkv",
        "00000008-00000010.mkv",
    ]
    assert [len(read_video(f)[0]) for _, f in finished_chunks(tmp_path / "pha.mkv.parts", "mkv")] == [4, 4, 2]
    writer.join(10)
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


def test_abort_keeps_every_frame_added_as_chunks_and_a_resume_fills_the_rest(tmp_path):
    writer = segmented(tmp_path / "pha.mkv", "FFV1")
    writer.add_batch(counter_batch(0, 6))
    writer.abort()  # the short chunk is finalized too: nothing added is lost
    assert chunk_names(tmp_path / "pha.mkv") == ["00000000-00000004.mkv", "00000004-00000006.mkv"]
    assert not list((tmp_path / "pha.mkv.parts").glob(".writing-*"))
    writer = segmented(tmp_path / "pha.mkv", "FFV1", first_frame=6)
    writer.add_batch(counter_batch(6, 3))
    writer.close()
    writer.join(9)
    assert levels(read_video(tmp_path / "pha.mkv")[0]) == [counter_level(i) for i in range(9)]


def test_join_names_the_frames_no_chunk_holds_or_two_chunks_hold(tmp_path):
    for first, count in ((0, 4), (6, 2)):
        with segmented(tmp_path / "pha.mkv", "FFV1", first_frame=first) as writer:
            writer.add_batch(counter_batch(first, count))
    with pytest.raises(
        ValueError, match=r"cannot join .*pha\.mkv: frames 4 to 5 are missing in .*pha\.mkv\.parts"
    ):
        join_parts(tmp_path / "pha.mkv", Fraction(FPS), "FFV1", num_frames=8)
    with segmented(tmp_path / "pha.mkv", "FFV1", first_frame=3) as writer:
        writer.add_batch(counter_batch(3, 3))
    with pytest.raises(ValueError, match=r"frames 3 to 3 are held twice"):
        join_parts(tmp_path / "pha.mkv", Fraction(FPS), "FFV1", num_frames=8)
    (tmp_path / "pha.mkv.parts" / "00000003-00000006.mkv").unlink()
    with segmented(tmp_path / "pha.mkv", "FFV1", first_frame=4) as writer:
        writer.add_batch(counter_batch(4, 2))
    with pytest.raises(
        ValueError, match=r"its 9 frames need chunks up to frame 8, the chunks in .* end at frame 7"
    ):
        join_parts(tmp_path / "pha.mkv", Fraction(FPS), "FFV1", num_frames=9)
    join_parts(tmp_path / "pha.mkv", Fraction(FPS), "FFV1", num_frames=8)
    assert levels(read_video(tmp_path / "pha.mkv")[0]) == [counter_level(i) for i in range(8)]


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
    while len(finished_chunks(parts, "mkv")) < segments:
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

    segments = [file for _, file in finished_chunks(parts, "mkv")]  # what survived: readable, in order
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
        f"--data.synthetic.dir={tmp_path / 'inputs'}",
        "--trainer.callbacks+=VideoWriterCallback",
        f"--trainer.callbacks.output_dir={tmp_path / 'out'}",
        "--trainer.callbacks.outputs=[pha]",
        "--trainer.callbacks.segment_seconds=0.1",
        "--resume=true",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_video(tmp_path / "out" / "synthetic_000" / "pha.mp4")[0]) == 5
    assert sorted(p.name for p in (tmp_path / "out" / "synthetic_000").iterdir()) == ["pha.mp4"]
