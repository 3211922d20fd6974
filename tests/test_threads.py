"""torch's intra-op threads in predict: the cores other processes leave (this process and its workers
left out of the load), or without a measured load the cores left after DataLoader workers and encoders;
logged, overridable, restored afterwards."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

import lightning_matting.threads
from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule, make_clip
from lightning_matting.module import MattingModule
from lightning_matting.threads import (
    busy_cores,
    intra_op_threads,
    predict_threads,
)
from lightning_matting.writers import VideoWriter

pytestmark = [
    pytest.mark.filterwarnings("ignore:MattingModule.*untrained weights"),
    pytest.mark.filterwarnings("ignore:The 'predict_dataloader' does not have many workers"),
    pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes"),
]


@pytest.mark.parametrize(
    ("cores", "busy", "workers", "encoders", "expected"),
    [
        (2, None, 2, 3, 1),  # no measured load: the cores the workers and encoders leave
        (2, None, 0, 0, 2),
        (16, None, 4, 3, 9),
        (8, None, 0, 2, 6),
        (1, None, 0, 0, 1),
        (2, 0.0, 2, 3, 2),  # idle: every core, beside the workers and encoders
        (2, 0.25, 2, 3, 2),  # a quarter of a core busy does not take it
        (2, 0.3, 2, 3, 1),
        (2, 1.2, 2, 3, 1),
        (2, 2.0, 2, 3, 1),  # at least 1
        (16, 3.5, 4, 3, 12),
    ],
)
def test_threads_are_the_free_cores_and_at_least_one(cores, busy, workers, encoders, expected):
    assert intra_op_threads(cores, busy, workers, encoders) == expected


class Stat:
    """/proc/stat as two successive reads: cpu1's user, nice or system ticks grow by the given amounts."""

    def __init__(self, user: int = 0, nice: int = 0, cpu: int = 1) -> None:
        line = "cpu{} {} {} 20 900 0 0 0 0 0 0"
        self.texts = [
            f"cpu 0 0 0 0 0 0 0 0 0 0\n{line.format(0, 10, 5)}\n{line.format(1, 10, 5)}\nintr 5",
            f"cpu 0 0 0 0 0 0 0 0 0 0\n{line.format(0, 10, 5)}\n{line.format(cpu, 10 + user, 5 + nice)}\nintr 5",
        ]

    def read_text(self) -> str:
        return self.texts.pop(0)


def test_busy_cores_counts_other_processes_at_normal_priority(monkeypatch):
    monkeypatch.setattr(lightning_matting.threads, "PROC_STAT", Stat(user=10_000))
    assert busy_cores({0, 1}, 0.01) == 2.0  # at most the cores watched
    monkeypatch.setattr(lightning_matting.threads, "PROC_STAT", Stat(nice=10_000))
    assert busy_cores({0, 1}, 0.01) == 0.0  # niced work yields: not counted
    monkeypatch.setattr(lightning_matting.threads, "PROC_STAT", Stat(user=10_000))
    assert busy_cores({0}, 0.01) == 0.0  # another core's load
    monkeypatch.setattr(lightning_matting.threads, "PROC_STAT", Stat())
    assert busy_cores({5, 6}, 0.01) is None  # none of the cores listed
    monkeypatch.setattr(
        lightning_matting.threads, "PROC_STAT", lightning_matting.threads.Path("/nonexistent")
    )
    assert busy_cores({0}, 0.01) is None


class RecordThreads(L.Callback):
    """Records torch's intra-op thread count at each predict batch."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_predict_batch_start(self, *args) -> None:
        self.seen.append(torch.get_num_threads())


@pytest.fixture(autouse=True)
def keep_threads():
    """Every test leaves torch's thread count as it found it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("clip") / "clip.mkv"
    with VideoWriter(path, 30, 32, 24, fourcc="FFV1") as writer:
        writer.add_batch(make_clip(32, 24, 4, seed=0).src)
    return str(path)


def predict(module: MattingModule, clip: str, tmp_path, outputs: list[str]) -> list[int]:
    record = RecordThreads()
    writer = VideoWriterCallback(tmp_path / "out", outputs=outputs, fourcc="FFV1", overwrite=True)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[writer, record]
    )
    trainer.predict(
        module, datamodule=VideoMattingDataModule(sources=[clip], batch_size=2), return_predictions=False
    )
    return record.seen


def test_predict_uses_the_free_cores_logs_why_and_restores(clip, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(6)))
    monkeypatch.setattr(lightning_matting.threads, "busy_cores", lambda cpus: 1.5)
    before = torch.get_num_threads()
    with caplog.at_level(logging.INFO):
        seen = predict(MattingModule("rvm-mobilenetv3"), clip, tmp_path, ["pha", "fgr"])
    assert seen == [4, 4]  # 6 cores - 2 taken by other processes
    assert (
        "torch runs 4 intra-op threads (6 cores, 1.5 of them busy with other processes; to override: "
        "MattingModule(threads=N) or OMP_NUM_THREADS)"
    ) in caplog.text
    assert torch.get_num_threads() == before
    monkeypatch.setattr(lightning_matting.threads, "busy_cores", lambda cpus: None)  # no /proc/stat
    with caplog.at_level(logging.INFO):
        assert predict(MattingModule("rvm-mobilenetv3"), clip, tmp_path, ["pha", "fgr"]) == [4, 4]
    assert "torch runs 4 intra-op threads (6 cores - 0 DataLoader workers - 2 encoder threads" in caplog.text


def test_threads_argument_and_omp_num_threads_override(clip, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with caplog.at_level(logging.INFO):
        assert predict(MattingModule("rvm-mobilenetv3", threads=3), clip, tmp_path, ["pha"]) == [3, 3]
    assert "torch runs 3 intra-op threads (threads=3 as set)" in caplog.text
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)  # as torch would have read it at start-up
    with caplog.at_level(logging.INFO):
        assert predict(MattingModule("rvm-mobilenetv3"), clip, tmp_path, ["pha"]) == [1, 1]
    assert "torch runs 1 intra-op thread (OMP_NUM_THREADS=1 as set)" in caplog.text


def test_workers_of_a_plain_dataloader_count(monkeypatch):
    class Trainer:  # what predict_threads reads of a Trainer
        predict_dataloaders = DataLoader(range(4), num_workers=3)

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(lightning_matting.threads, "busy_cores", lambda cpus: None)
    assert predict_threads(Trainer(), None, encoders=3)[0] == 10
    Trainer.predict_dataloaders = {"a": DataLoader(range(4), num_workers=1), "b": Trainer.predict_dataloaders}
    assert predict_threads(Trainer(), None, encoders=3)[0] == 10  # the most workers of any one dataloader


def test_every_writer_callback_counts_and_the_first_sets_the_threads(clip, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(lightning_matting.threads, "busy_cores", lambda cpus: None)
    record = RecordThreads()
    writers = [
        VideoWriterCallback(tmp_path / name, outputs=outputs, fourcc="FFV1")
        for name, outputs in (("a", ["pha", "fgr"]), ("b", ["pha"]))
    ]
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[*writers, record]
    )
    with caplog.at_level(logging.INFO):
        trainer.predict(
            MattingModule("rvm-mobilenetv3"),
            datamodule=VideoMattingDataModule(sources=[clip], batch_size=2),
            return_predictions=False,
        )
    assert record.seen == [5, 5]  # 8 cores - 0 workers - 3 encoders
    assert caplog.text.count("torch runs") == 1


def test_the_module_imports_no_callback():
    code = (
        "import sys, lightning_matting.module; "
        "print(sorted(m for m in sys.modules if m.startswith('lightning_matting.callbacks')))"
    )
    root = Path(__file__).parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert result.stdout.strip() == "[]"


def test_busy_cores_leaves_out_this_process_and_its_workers():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # a child, as a DataLoader worker
    try:
        own = lightning_matting.threads._own_ticks()
        time.sleep(1.0)
        ticks = lightning_matting.threads._own_ticks() - own
        assert ticks >= 0.03 * os.sysconf("SC_CLK_TCK")  # the child's CPU time counts as ours
    finally:
        spinner.kill()
        spinner.wait()
