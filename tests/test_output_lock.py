"""One run per output folder: a second run is refused while another process holds the folder's lock."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import read_video
from test_predict import ROOT, MeanMatte, plate, predict, write_counter_clip

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.module import MattingModule
from lightning_matting.run.lock import LOCK_FILE, FolderInUseError, FolderLock

FRAMES = 4

# Another process holding the folder's lock: it creates `ready` once it holds it, then waits to be killed.
HOLDER = """
import sys, time
from pathlib import Path
from lightning_matting.run.lock import FolderLock

lock = FolderLock(Path(sys.argv[1]))
lock.acquire()
Path(sys.argv[2]).touch()
time.sleep(120)
"""


@contextmanager
def holder(folder: Path) -> Iterator[subprocess.Popen]:
    """A second Python process holding `folder`'s lock for as long as the block runs (killed after it)."""
    ready = folder.parent / "holder-ready"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(ready)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert process.poll() is None and time.monotonic() < deadline, "the holder did not take the lock"
            time.sleep(0.01)
        yield process
    finally:
        process.kill()
        process.wait()
        ready.unlink(missing_ok=True)


def run(tmp_path: Path, **kwargs) -> VideoWriterCallback:
    """A predict of a clip of FRAMES frames (written once) to `tmp_path / "out"`."""
    source = tmp_path / "in" / "clip.mkv"
    if not source.is_file():
        write_counter_clip(source, FRAMES)
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)], batch_size=2)
    callback = VideoWriterCallback(tmp_path / "out", outputs=["pha"], fourcc="FFV1", **kwargs)
    predict(MattingModule(MeanMatte()), dm, callback)
    return callback


def contents(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_a_folder_held_by_another_process_is_refused_to_every_run_and_left_as_it_is(tmp_path):
    run(tmp_path)
    out = tmp_path / "out"
    (out / "clip" / ".matting-run.json").write_text("{}")  # as a live run's unfinished video has
    with holder(out) as process:
        before = contents(out)
        for kwargs in ({}, {"resume": True}, {"overwrite": True}):
            with pytest.raises(FolderInUseError) as refusal:
                run(tmp_path, **kwargs)
            message = str(refusal.value)
            assert f"output_dir {str(out)!r} is in use by another run" in message
            assert f"process {process.pid} on host {socket.gethostname()} (since 20" in message
            assert message.endswith("wait for that run to finish, or choose another output_dir")
            assert "overwrite=" not in message
            assert contents(out) == before  # nothing the holder wrote is touched


def test_a_lock_left_by_a_killed_run_is_taken_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    with holder(out) as process:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert (out / LOCK_FILE).is_file()  # the file stays; its lock went with the process
    callback = run(tmp_path)
    assert read_video(callback.written["clip"]["pha"])[0].shape[0] == FRAMES
    assert not (out / LOCK_FILE).exists()


def test_the_lock_is_released_after_a_failed_run_whose_rerun_is_advised_to_resume(tmp_path):
    source = write_counter_clip(tmp_path / "in" / "clip.mkv", FRAMES)
    dm = VideoMattingDataModule(sources=[str(source)], backgrounds=[plate(tmp_path)], batch_size=1)
    callback = VideoWriterCallback(tmp_path / "out", outputs=["pha"], fourcc="FFV1", segment_seconds=1 / 30)
    with pytest.raises(RuntimeError, match="boom"):
        predict(MattingModule(MeanMatte(fail_at_call=3)), dm, callback)
    assert not (tmp_path / "out" / LOCK_FILE).exists()
    with pytest.raises(FileExistsError) as refusal:
        run(tmp_path)
    assert "left by a run that has ended (no other run holds output_dir's lock)" in str(refusal.value)
    assert str(refusal.value).endswith(
        "choose another output_dir, pass resume=True to continue the interrupted run, or pass overwrite=True "
        "to replace them"
    )
    assert read_video(run(tmp_path, resume=True).written["clip"]["pha"])[0].shape[0] == FRAMES


def test_the_lock_file_names_its_holder_and_excludes_a_second_lock_in_the_same_process(tmp_path):
    first, second = FolderLock(tmp_path / "out"), FolderLock(tmp_path / "out")
    first.acquire()
    assert f'"pid": {os.getpid()}' in (tmp_path / "out" / LOCK_FILE).read_text()
    with pytest.raises(FolderInUseError, match=f"process {os.getpid()} on host"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()
    assert list((tmp_path / "out").iterdir()) == []
