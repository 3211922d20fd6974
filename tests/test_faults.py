"""What clusters, users and disks do to runs: SIGTERM, a changed plate on resume, a run that fails early."""

from __future__ import annotations

import signal

import cv2
import numpy as np
import pytest
from conftest import read_video
from test_predict import MeanMatte, counter_level, levels, plate, predict, write_counter_clip
from test_resume import BATCH, FRAMES, SlowMatte, run_in_process, start_slow_predict

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.module import MattingModule


def test_sigterm_stops_predict_at_a_batch_finalizes_and_resumes(tmp_path):
    process, source, background, out, progress = start_slow_predict(tmp_path, 1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)  # stops at the next batch, long before the run's end
    predicted = sum(int(n) for n in progress.read_text().split())
    assert process.returncode == 1 and predicted < FRAMES
    assert "predict stopped by SIGTERM" in stderr.decode() and "--resume=true" in stderr.decode()
    kept = levels(read_video(out / "clip" / "pha.mkv")[0])  # finalized: every frame written, playable
    assert kept == [counter_level(i) for i in range(len(kept))] and len(kept) >= predicted - BATCH
    assert (out / "clip" / ".matting-run.json").is_file()

    run_in_process(source, background, out, SlowMatte(), resume=True)
    assert levels(read_video(out / "clip" / "pha.mkv")[0]) == [counter_level(i) for i in range(FRAMES)]


def test_resume_with_another_plate_is_refused_naming_it(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 6)
    first, second = plate(tmp_path), str(tmp_path / "other.png")
    cv2.imwrite(second, np.full((48, 64, 3), 255, np.uint8))
    manifest = tmp_path / "out" / "clip" / ".matting-run.json"
    with pytest.raises(RuntimeError, match="boom"):
        predict(
            MattingModule(MeanMatte(fail_at_call=2)),
            VideoMattingDataModule(sources=[str(source)], backgrounds=[first], batch_size=2),
            VideoWriterCallback(tmp_path / "out", outputs=["pha"], fourcc="FFV1", segment_seconds=0.1),
        )
    assert manifest.is_file()
    with pytest.raises(ValueError, match=r"cannot resume clip: data.background changed .*other.png"):
        predict(
            MattingModule(MeanMatte()),
            VideoMattingDataModule(sources=[str(source)], backgrounds=[second], batch_size=2),
            VideoWriterCallback(
                tmp_path / "out", outputs=["pha"], fourcc="FFV1", segment_seconds=0.1, resume=True
            ),
        )


def test_a_run_that_fails_before_its_first_frame_leaves_nothing_behind(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 4)
    callback = lambda: VideoWriterCallback(tmp_path / "out", outputs=["pha"])  # noqa: E731
    with pytest.raises(ValueError, match="needs a background plate"):
        predict(
            MattingModule("mattingbase-mobilenetv2"),
            VideoMattingDataModule(sources=[str(source)]),
            callback(),
        )
    assert list((tmp_path / "out").rglob("*")) in ([], [tmp_path / "out" / "clip"])
    predict(
        MattingModule("mattingbase-mobilenetv2"),
        VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)]),
        callback(),
    )
    assert len(read_video(tmp_path / "out" / "clip" / "pha.mp4")[0]) == 4
