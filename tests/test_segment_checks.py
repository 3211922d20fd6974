"""A segment counts as written only when its content is verified: damaged, short or unrecorded segments are
written again by a resume, a join never makes a short file, a full disk loses nothing, and reports say what
the files hold."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch
from conftest import read_video
from test_predict import MeanMatte, counter_level, levels, plate, predict
from test_resume import FRAMES, SlowMatte, run_in_process, start_slow_predict
from test_storage import FPS, noise_clip

from lightning_matting.callbacks import VideoWriterCallback
from lightning_matting.data import VideoMattingDataModule
from lightning_matting.module import MattingModule
from lightning_matting.writers import VideoWriter, join
from lightning_matting.writers.chunks import count_frames, parts_folder, record_path, verified_chunks
from lightning_matting.writers.durable import StorageError
from lightning_matting.writers.join import join_parts
from lightning_matting.writers.segments import SegmentedWriter

OUTPUTS = ("pha", "fgr")


class DroppingWriter(VideoWriter):
    """OpenCV's silent drop: the frames after the first `keep` never reach the file."""

    def __init__(self, *args, keep: int, **kwargs):
        self.keep = keep
        super().__init__(*args, **kwargs)

    def _write(self, first_index, frames):
        super()._write(first_index, frames[: max(0, self.keep - first_index)])


def dropping(path: Path, keep: int, segment_frames: int = 4) -> SegmentedWriter:
    return SegmentedWriter(
        path,
        lambda file: DroppingWriter(file, FPS, 64, 48, fourcc="FFV1", keep=keep),
        segment_frames,
        Fraction(FPS),
        fourcc="FFV1",
    )


def test_a_segment_that_lost_frames_is_removed_never_finished(tmp_path):
    writer = dropping(tmp_path / "pha.mkv", keep=3)
    writer.add_batch(torch.zeros(4, 1, 48, 64))
    with pytest.raises(
        StorageError,
        match=r"writing .*pha\.mkv\.parts/\.writing-00000000\.mkv failed: the encoder or the disk lost frames; "
        r"it holds 3 of the 4 frames written to it",
    ):
        writer.close()
    assert list((tmp_path / "pha.mkv.parts").iterdir()) == []

    writer = dropping(tmp_path / "fgr.mkv", keep=1)  # the partial segment of an interrupted run
    writer.add_batch(torch.zeros(2, 1, 48, 64))
    with pytest.raises(StorageError, match=r"\.writing-00000000\.mkv failed: .*it holds 1 of the 2 frames"):
        writer.abort()
    assert list((tmp_path / "fgr.mkv.parts").iterdir()) == []


def counter_chunks(path: Path, count: int) -> None:
    with SegmentedWriter(
        path, lambda file: VideoWriter(file, FPS, 64, 48, fourcc="FFV1"), 4, Fraction(FPS), fourcc="FFV1"
    ) as writer:
        writer.add_batch(
            torch.stack([torch.full((3, 48, 64), counter_level(i), dtype=torch.uint8) for i in range(count)])
        )


def test_the_join_refuses_a_damaged_chunk_and_a_short_joined_file(tmp_path, monkeypatch):
    path = tmp_path / "pha.mkv"
    counter_chunks(path, 8)
    chunk = parts_folder(path) / "00000004-00000008.mkv"
    assert [frames for frames, _ in verified_chunks(parts_folder(path), "mkv")[0]] == [range(4), range(4, 8)]
    content = chunk.read_bytes()
    chunk.write_bytes(content[: len(content) // 2])
    with pytest.raises(
        ValueError,
        match=r"cannot join .*pha\.mkv: chunks in .*pha\.mkv\.parts do not count as written "
        rf"\(00000004-00000008\.mkv: it holds {len(content) // 2} bytes, its record {len(content)}\); rerun "
        r"with resume=True",
    ):
        join_parts(path, Fraction(FPS), "FFV1", num_frames=8)
    chunk.write_bytes(content)

    real = join.count_frames
    monkeypatch.setattr(join, "count_frames", lambda file: real(file) - 1)  # a muxer that lost a frame
    with pytest.raises(
        ValueError,
        match=r"joining pha\.mkv failed: .*\.joining-pha\.mkv holds 7 frames where 8 were expected",
    ):
        join_parts(path, Fraction(FPS), "FFV1", num_frames=8)
    assert not path.exists() and not (tmp_path / ".joining-pha.mkv").exists()
    monkeypatch.undo()
    join_parts(path, Fraction(FPS), "FFV1", num_frames=8)
    assert levels(read_video(path)[0]) == [counter_level(i) for i in range(8)]


def decoded_md5s(path: Path) -> list[str]:
    """The MD5 of each decoded frame of `path` (PyAV, RGB)."""
    with av.open(str(path)) as container:
        return [
            hashlib.md5(frame.to_ndarray(format="rgb24").tobytes()).hexdigest()
            for frame in container.decode(video=0)
        ]


def noise_predict(tmp_path: Path, out: Path, size=(64, 48), **kwargs) -> None:
    """Predict the noise clip `tmp_path/clip.mkv` into `out` (pha and fgr, FFV1, 1-second segments)."""
    dm = VideoMattingDataModule(
        sources=[str(tmp_path / "clip.mkv")], backgrounds=[plate(tmp_path, size)], batch_size=2
    )
    model = kwargs.pop("model", MeanMatte())
    callback = VideoWriterCallback(out, outputs=list(OUTPUTS), fourcc="FFV1", segment_seconds=1, **kwargs)
    predict(MattingModule(model), dm, callback)


def assert_same_as_an_uninterrupted_run(tmp_path: Path, out: Path, size=(64, 48)) -> None:
    noise_predict(tmp_path, tmp_path / "reference", size)
    for output in OUTPUTS:
        resumed = decoded_md5s(out / "clip" / f"{output}.mkv")
        assert len(resumed) == 30
        assert resumed == decoded_md5s(tmp_path / "reference" / "clip" / f"{output}.mkv")
    assert sorted(p.name for p in (out / "clip").iterdir()) == ["fgr.mkv", "pha.mkv"]


def test_damaged_segments_are_written_again_and_the_report_counts_the_file(tmp_path, caplog):
    noise_clip(tmp_path / "clip.mkv", 0)  # 30 frames, 10 per segment
    with pytest.raises(RuntimeError, match="boom"):  # at frames 24-25: chunks 0-10, 10-20, 20-24 kept
        noise_predict(tmp_path, tmp_path / "out", model=MeanMatte(fail_at_call=13))
    fgr, pha = (parts_folder(tmp_path / "out" / "clip" / f"{name}.mkv") for name in ("fgr", "pha"))
    first = (fgr / "00000000-00000010.mkv").read_bytes()
    (fgr / "00000000-00000010.mkv").write_bytes(first[: len(first) // 2])  # cut to 50%
    (fgr / "00000010-00000020.mkv").write_bytes(first)  # another segment's content
    (pha / "00000010-00000020.mkv").write_bytes(b"")  # cut to 0 bytes
    flipped = bytearray((pha / "00000000-00000010.mkv").read_bytes())
    flipped[len(flipped) // 2] ^= 1  # the same size, another content
    (pha / "00000000-00000010.mkv").write_bytes(bytes(flipped))
    record_path(pha / "00000020-00000024.mkv").unlink()  # never verified

    logger = logging.getLogger("lightning.pytorch")
    logger.addHandler(caplog.handler)
    try:
        with pytest.warns(UserWarning) as warned:
            noise_predict(tmp_path, tmp_path / "out", resume=True)
    finally:
        logger.removeHandler(caplog.handler)
    messages = sorted(str(w.message) for w in warned if "does not count as written" in str(w.message))
    expected = [
        rf"fgr\.mkv\.parts/00000000-00000010\.mkv does not count as written: it holds {len(first) // 2} bytes, "
        rf"its record {len(first)}; its frames 0 to 9 are predicted again",
        r"fgr\.mkv\.parts/00000010-00000020\.mkv does not count as written: it holds \d+ bytes, its record \d+; "
        r"its frames 10 to 19",
        r"pha\.mkv\.parts/00000000-00000010\.mkv does not count as written: its content differs from its "
        r"record \(SHA-256\); its frames 0 to 9",
        r"pha\.mkv\.parts/00000010-00000020\.mkv does not count as written: it holds 0 bytes",
        r"pha\.mkv\.parts/00000020-00000024\.mkv does not count as written: it has no record",
    ]
    assert len(messages) == len(expected)
    for message, pattern in zip(messages, expected, strict=True):
        assert re.search(pattern, message), (pattern, message)
    shown = caplog.messages
    for output in OUTPUTS:  # every frame is predicted again: no frame is safely in both outputs
        line = f"{output}: {tmp_path / 'out' / 'clip' / f'{output}.mkv'} (30 frames)"
        assert line in shown, shown
    assert_same_as_an_uninterrupted_run(tmp_path, tmp_path / "out")


@pytest.mark.filterwarnings("ignore:(closing|joining) .* after StorageError failed")  # the run's own warnings
def test_a_full_disk_loses_nothing_and_a_resume_elsewhere_completes_the_file(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        (disk / "filler").write_bytes(bytes(1 << 20))  # 2 MB left: the second second of video fills it
        noise_clip(tmp_path / "clip.mkv", 0, size=(160, 120))
        with pytest.raises(StorageError, match=r"writing .*disk/out/clip/.* failed: its disk is full"):
            noise_predict(tmp_path, disk / "out", size=(160, 120))
        kept = {}
        for output in OUTPUTS:
            verified, rejected = verified_chunks(parts_folder(disk / "out" / "clip" / f"{output}.mkv"), "mkv")
            assert rejected == []
            assert all(count_frames(file) == len(frames) for frames, file in verified)  # never short
            kept[output] = [frames for frames, _ in verified]
        assert any(kept.values()) and kept["fgr"] != [range(0, 10), range(10, 20), range(20, 30)]
        shutil.copytree(disk / "out", tmp_path / "out")  # a bigger disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    noise_predict(tmp_path, tmp_path / "out", size=(160, 120), resume=True)
    assert_same_as_an_uninterrupted_run(tmp_path, tmp_path / "out", size=(160, 120))


def test_ctrl_c_finalizes_prints_the_resume_hint_and_the_resume_reports_what_it_added(tmp_path, caplog):
    process, source, background, out, progress = start_slow_predict(tmp_path, 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert (
        "VideoWriterCallback: predict stopped by Ctrl-C (SIGINT); every output written so far is finalized and "
        "playable: rerun the same command with --resume=true (resume=True) to continue"
    ) in stderr.decode()
    kept = sum(len(frames) for frames, _ in verified_chunks(parts_folder(out / "clip" / "pha.mkv"), "mkv")[0])
    assert 0 < kept < FRAMES

    logger = logging.getLogger("lightning.pytorch")
    logger.addHandler(caplog.handler)
    try:
        run_in_process(source, background, out, SlowMatte(), resume=True)
    finally:
        logger.removeHandler(caplog.handler)
    assert levels(read_video(out / "clip" / "pha.mkv")[0]) == [counter_level(i) for i in range(FRAMES)]
    line = f"pha: {out / 'clip' / 'pha.mkv'} ({FRAMES} frames; {FRAMES - kept} written by this run)"
    shown = caplog.messages
    assert line in shown, shown


@pytest.mark.parametrize("pyav", [True, False])
def test_segments_are_counted_and_checked_with_or_without_pyav(tmp_path, monkeypatch, pyav):
    if not pyav:
        monkeypatch.setitem(sys.modules, "av", None)  # OpenCV counts, and re-encodes the FFV1 join
    path = tmp_path / "pha.mkv"
    counter_chunks(path, 6)
    assert [count_frames(file) for _, file in verified_chunks(parts_folder(path), "mkv")[0]] == [4, 2]
    join_parts(path, Fraction(FPS), "FFV1", num_frames=6)
    assert count_frames(path) == 6
    assert levels(read_video(path)[0]) == [counter_level(i) for i in range(6)]
    writer = dropping(tmp_path / "fgr.mkv", keep=2)
    writer.add_batch(torch.zeros(4, 1, 48, 64))
    with pytest.raises(StorageError, match=r"it holds 2 of the 4 frames written to it"):
        writer.close()
    (tmp_path / "empty.mkv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.mkv is not a readable video"):
        count_frames(tmp_path / "empty.mkv")
