"""Distributed predict (strategy="ddp", 2 CPU processes, gloo): every source frame written once, in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
from conftest import read_video
from hypothesis import given
from hypothesis import strategies as st
from test_output_lock import holder
from test_predict import ROOT, MeanMatte, counter_level, levels, plate, write_counter_clip
from torch import nn

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.data.sampling import VideoBatchSampler, frame_ranges
from lightning_matting.module import MattingModule
from lightning_matting.run.lock import FolderInUseError
from lightning_matting.writers.chunks import finished_chunks
from lightning_matting.writers.join import join_segments

FPS, SEGMENT_SECONDS = 10, 0.2  # 2 frames per segment

# Lightning's "ddp" launches this file again for rank 1, so it is a script with a __main__ guard.
DRIVER = """
import json, sys, time
from pathlib import Path
import lightning as L
import torch
from torch import nn
from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.module import MattingModule

config = json.loads(sys.argv[1])


class CounterMatte(nn.Module):
    # pha = mean of src; logs which frames (decoded from the grey level) each rank sees; raises at `fail_at`
    # once `wait_for` exists, so that the other rank has finished its share first.
    def forward(self, src, bgr):
        frames = [round((float(frame.mean()) * 255 - 20) / 10) for frame in src]
        with open(config["log"], "a") as log:
            log.write(json.dumps([torch.distributed.get_rank(), frames]) + "\\n")
        if config["fail_at"] in frames:
            deadline = time.monotonic() + 60
            while not all(Path(p).is_file() for p in config["wait_for"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            raise RuntimeError(f"boom at frame {config['fail_at']}")
        return src.mean(1, keepdim=True), src


if __name__ == "__main__":
    dm = VideoMattingDataModule(sources=config["sources"], backgrounds=config["backgrounds"], batch_size=2)
    callback = VideoWriterCallback(
        config["out"],
        outputs=["pha", "com"],
        fourcc="FFV1",
        segment_seconds=config["segment_seconds"],
        resume=config["resume"],
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=False,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.predict(MattingModule(CounterMatte()), datamodule=dm, return_predictions=False)
"""


def run_ddp(
    tmp_path: Path, sources: list[Path], fail_at: int = -1, wait_for=(), resume: bool = False
) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the driver on 2 processes; the result and {rank: frames seen, in order}."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    log = tmp_path / "frames.jsonl"
    log.unlink(missing_ok=True)
    config = {
        "sources": [str(source) for source in sources],
        "backgrounds": [plate(tmp_path)] * len(sources),
        "out": str(tmp_path / "out"),
        "segment_seconds": SEGMENT_SECONDS,
        "log": str(log),
        "fail_at": fail_at,
        "wait_for": [str(path) for path in wait_for],
        "resume": resume,
    }
    result = subprocess.run(
        [sys.executable, str(driver), json.dumps(config)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    seen: dict[int, list[int]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        rank, frames = json.loads(line)
        seen.setdefault(rank, []).extend(frames)
    return result, seen


def counters(count: int, first: int = 0) -> list[int]:
    return [counter_level(i) for i in range(first, first + count)]


def test_many_videos_whole_videos_per_rank(tmp_path):
    lengths = {"a": 7, "b": 5, "c": 4}
    sources = [write_counter_clip(tmp_path / "in" / f"{name}.mkv", n, fps=FPS) for name, n in lengths.items()]
    result, seen = run_ddp(tmp_path, sources)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(seen) == [0, 1] and sorted(seen[0] + seen[1]) == sorted(
        i for n in (7, 5, 4) for i in range(n)
    )
    assert seen[0] == list(range(7)) and seen[1] == list(range(5)) + list(range(4))  # balanced: 7 vs 5 + 4
    for name, count in lengths.items():
        for output in ("pha", "com"):
            frames, fps, width, height = read_video(tmp_path / "out" / name / f"{output}.mkv")
            assert (len(frames), fps, width, height) == (count, FPS, 64, 48)
        assert levels(read_video(tmp_path / "out" / name / "pha.mkv")[0]) == counters(count)
        assert sorted(p.name for p in (tmp_path / "out" / name).iterdir()) == ["com.mkv", "pha.mkv"]


def test_one_video_contiguous_ranges_joined_by_rank_zero(tmp_path):
    source = write_counter_clip(tmp_path / "in" / "long.mkv", 13, fps=FPS)
    result, seen = run_ddp(tmp_path, [source])
    assert result.returncode == 0, result.stderr[-3000:]
    assert seen == {0: list(range(0, 6)), 1: list(range(6, 13))}  # each rank a contiguous range, none twice
    for output in ("pha", "com"):
        frames, fps, width, height = read_video(tmp_path / "out" / "long" / f"{output}.mkv")
        assert (len(frames), fps, width, height) == (13, FPS, 64, 48)
    assert levels(read_video(tmp_path / "out" / "long" / "pha.mkv")[0]) == counters(
        13
    )  # every frame, in order
    assert sorted(p.name for p in (tmp_path / "out" / "long").iterdir()) == ["com.mkv", "pha.mkv"]


class CounterMatte(nn.Module):
    """The driver's network as seen by the resume fingerprint (same name, no weights), failing at a call."""

    def __init__(self, fail_at_call: int | None = None):
        super().__init__()
        self.calls, self.fail_at_call = 0, fail_at_call

    def forward(self, src, bgr):
        self.calls += 1
        if self.calls == self.fail_at_call:
            raise RuntimeError("boom")
        return src.mean(1, keepdim=True), src


def predict_here(tmp_path: Path, source: Path, net: nn.Module, resume: bool = False) -> None:
    """The driver's run in this process, on one device."""
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)], batch_size=2)
    callback = VideoWriterCallback(
        tmp_path / "out",
        outputs=["pha", "com"],
        fourcc="FFV1",
        segment_seconds=SEGMENT_SECONDS,
        resume=resume,
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[callback], enable_progress_bar=False)
    trainer.predict(MattingModule(net), datamodule=dm, return_predictions=False)


def test_a_run_failed_on_one_rank_keeps_its_chunks_and_resumes_on_one_device(tmp_path):
    source = write_counter_clip(tmp_path / "in" / "long.mkv", 13, fps=FPS)
    video = tmp_path / "out" / "long"
    wait_for = [
        video / f"{output}.mkv.parts" / "00000004-00000006.mkv" for output in ("pha", "com")
    ]  # rank 0 done
    result, seen = run_ddp(tmp_path, [source], fail_at=10, wait_for=wait_for)
    assert result.returncode != 0
    assert "boom at frame 10" in result.stderr
    assert not (video / "pha.mkv").exists()
    chunks = finished_chunks(video / "pha.mkv.parts", "mkv")
    # rank 0: frames 0-5; rank 1 failed at its batch [10, 11]: frames 6-9
    assert [frames for frames, _ in chunks] == [
        range(0, 2),
        range(2, 4),
        range(4, 6),
        range(6, 8),
        range(8, 10),
    ]
    join_segments([file for _, file in chunks], tmp_path / "kept.mkv", Fraction(FPS))
    assert levels(read_video(tmp_path / "kept.mkv")[0]) == counters(10)

    predict_here(tmp_path, source, CounterMatte(), resume=True)  # one device: frames 10-12 only
    assert levels(read_video(video / "pha.mkv")[0]) == counters(13)
    assert len(read_video(video / "com.mkv")[0]) == 13
    assert sorted(p.name for p in video.iterdir()) == ["com.mkv", "pha.mkv"]


def test_a_run_interrupted_on_one_device_resumes_on_two(tmp_path):
    source = write_counter_clip(tmp_path / "in" / "long.mkv", 13, fps=FPS)
    with pytest.raises(RuntimeError, match="boom"):
        predict_here(tmp_path, source, CounterMatte(fail_at_call=3))  # frames 0-3 written
    result, seen = run_ddp(tmp_path, [source], resume=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert seen == {0: list(range(4, 8)), 1: list(range(8, 13))}  # the frames left, split in two
    assert levels(read_video(tmp_path / "out" / "long" / "pha.mkv")[0]) == counters(13)
    assert len(read_video(tmp_path / "out" / "long" / "com.mkv")[0]) == 13
    assert sorted(p.name for p in (tmp_path / "out" / "long").iterdir()) == ["com.mkv", "pha.mkv"]


@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    world_size=st.integers(1, 5),
    data=st.data(),
)
def test_frame_ranges_cover_every_frame_to_do_once(lengths, world_size, data):
    todo = []  # per video: sorted disjoint ranges, as a resumed run leaves them
    for n in lengths:
        cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=6)))
        todo.append([range(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=False) if a < b])
    ranks = frame_ranges(lengths, world_size, todo)
    for video in range(len(lengths)):
        covered = [i for share in ranks for frames in share[video] for i in frames]
        assert covered == [i for frames in todo[video] for i in frames]  # in rank order, nothing twice
    if len(lengths) >= world_size:  # whole videos: each on one rank only
        for video in range(len(lengths)):
            assert sum(1 for share in ranks if share[video]) <= 1
    else:  # shares of near-equal size
        counts = [sum(len(f) for video in share for f in video) for share in ranks]
        assert max(counts) - min(counts) <= len(lengths)


def test_whole_videos_are_balanced_by_frames_and_batches_stay_in_one_video():
    assert frame_ranges([10, 3, 4, 5], 2) == [
        [[range(0, 10)], [], [], []],
        [[], [range(0, 3)], [range(0, 4)], [range(0, 5)]],
    ]
    assert frame_ranges([10], 2, [[range(0, 2), range(6, 10)]]) == [
        [[range(0, 2), range(6, 7)]],
        [[range(7, 10)]],
    ]
    rank1 = VideoBatchSampler([5, 4], batch_size=3, ranges=frame_ranges([5, 4], 3)[1])  # 3 ranks: split
    assert list(rank1) == [[1, 2], [6]] and len(rank1) == 2  # frames 1-2 of 0-4, frame 1 of 0-3
    with pytest.raises(ValueError, match=r"invalid world_size \(0\): expected an int >= 1"):
        frame_ranges([5], 0)


def fake_ddp_trainer(datamodule) -> SimpleNamespace:
    """What VideoWriterCallback.setup reads of a Trainer, as rank 0 of 2 (no process group needed)."""
    strategy = SimpleNamespace(barrier=lambda name=None: None, broadcast=lambda obj, src=0: obj)
    return SimpleNamespace(
        world_size=2, global_rank=0, is_global_zero=True, datamodule=datamodule, strategy=strategy
    )


@pytest.mark.parametrize(
    ("kwargs", "videos", "match"),
    [
        (
            {},
            0,
            r"distributed predict needs a datamodule implementing lightning_matting.PredictVideoSource .* got a DataLoader",
        ),
        ({}, 1, r"leave 1 frame\(s\) to predict, fewer than the 2 ranks .*devices <= 1"),
    ],
)
def test_distributed_settings_it_cannot_honour_are_refused(tmp_path, kwargs, videos, match):
    source = write_counter_clip(tmp_path / "clip.mkv", 1)
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)])
    dm.setup("predict")
    callback = VideoWriterCallback(tmp_path / "out", outputs=["pha"], **kwargs)
    with pytest.raises(ValueError, match=match):
        callback.setup(fake_ddp_trainer(dm if videos else None), MattingModule(MeanMatte()), "predict")


def test_existing_outputs_are_refused_on_every_rank_before_any_is_removed(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 3)
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)])
    dm.setup("predict")
    (tmp_path / "out" / "clip").mkdir(parents=True)
    (tmp_path / "out" / "clip" / "pha.mp4").write_bytes(b"old")
    trainer = fake_ddp_trainer(dm)
    trainer.is_global_zero, trainer.global_rank = False, 1
    with pytest.raises(FileExistsError, match="overwrite=True"):
        VideoWriterCallback(tmp_path / "out", outputs=["pha"]).setup(
            trainer, MattingModule(MeanMatte()), "predict"
        )
    VideoWriterCallback(tmp_path / "out", outputs=["pha"], overwrite=True).setup(
        trainer, MattingModule(MeanMatte()), "predict"
    )
    assert (tmp_path / "out" / "clip" / "pha.mp4").exists()  # rank 1 leaves the removing to rank 0


def test_a_folder_held_by_another_process_is_refused_on_every_rank_without_a_hang(tmp_path):
    source = write_counter_clip(tmp_path / "in" / "clip.mkv", 4, fps=FPS)
    (tmp_path / "out" / "clip").mkdir(parents=True)
    (tmp_path / "out" / "clip" / "pha.mkv").write_bytes(b"the live run's")
    with holder(tmp_path / "out") as process:
        result, seen = run_ddp(tmp_path, [source])  # a rank waiting at a barrier would time out
    assert result.returncode != 0 and seen == {}
    assert (
        f"FolderInUseError: VideoWriterCallback: output_dir {str(tmp_path / 'out')!r} is in use"
        in result.stderr
    )
    assert f"process {process.pid} on host" in result.stderr
    assert (tmp_path / "out" / "clip" / "pha.mkv").read_bytes() == b"the live run's"


def test_rank_zero_s_refusal_is_raised_on_the_other_ranks(tmp_path):
    source = write_counter_clip(tmp_path / "clip.mkv", 3)
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)])
    dm.setup("predict")
    trainer = fake_ddp_trainer(dm)
    trainer.is_global_zero, trainer.global_rank = False, 1
    trainer.strategy.broadcast = lambda obj, src=0: "rank zero's refusal"
    with pytest.raises(FolderInUseError, match="^rank zero's refusal$"):
        VideoWriterCallback(tmp_path / "out", outputs=["pha"]).setup(
            trainer, MattingModule(MeanMatte()), "predict"
        )
