"""SegmentedWriter: a video written as finalized chunk files, each named by its frames, joined on success.

A process killed mid-run (SIGKILL, OOM killer, preemption) never runs `release()`, and an unfinished MP4,
MKV or AVI from OpenCV holds no playable frame. Written in segments of `segment_frames` frames, such a kill
loses at most the segment being written: every earlier segment is a finalized file (written under a hidden
name, renamed when complete) named by the frames it holds, `<path>.parts/<first:08d>-<stop:08d>.<ext>`. Any
number of writers (a resumed run, the ranks of a distributed run) can add chunks for other frames; a rerun
continues in the frames no chunk holds, and the join checks that the chunks tile the video.

A chunk is finished only when verified: its file's demuxed frames equal those given to it (a full disk or a
size limit that lost frames removes it and raises a StorageError), and its record (frames, bytes, SHA-256,
see `chunks`) is written beside it. The join (`join`) uses verified chunks only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import torch

from lightning_matting.durable import replace_durably
from lightning_matting.validators import check_int

from .base import FrameWriter
from .chunks import chunk_path, parts_folder, verify_new_chunk, write_record
from .join import check_audio_source, join_parts
from .threaded import BackgroundWorkers

SegmentFactory = Callable[[Path], FrameWriter]


def segment_frames_for(fps: Fraction, seconds: float) -> int:
    """Frames per segment for `seconds` of video at `fps`: ceil(fps * seconds), at least 1 (a float's decimal
    value: 0.2 s at 10 fps is 2 frames, not 3 as the binary 0.2000...01 would give)."""
    return max(1, math.ceil(Fraction(fps) * Fraction(str(seconds))))


class SegmentedWriter:
    """Writes frames from `first_frame` on of `path` (the writer contract: `add_batch([B,C,H,W])`, `close()`)
    as finalized chunks in `<path>.parts/`.

    `open_segment(file)` makes the backend writer of one chunk (VideoWriter, AVWriter, ...). A chunk holds
    `segment_frames` frames (0: every frame until `close`) and is finalized on a background thread while the
    next one fills. `close()` (or `abort()`, after a failure) finalizes the chunk being filled too; `join()`
    then stream-copies the chunks of the whole video into `path` (`join_parts`, at `frame_rate`; `fourcc`
    re-encodes without PyAV; the audio of `audio_from` is added there, so chunks hold video only) and removes
    the parts folder.

    Example::

        writer = SegmentedWriter("pha.mkv", lambda f: VideoWriter(f, 30, 64, 48, fourcc="FFV1"), 60, 30)
        writer.add_batch(frames)
        writer.close()
        writer.join(len(frames))
    """

    def __init__(
        self,
        path: str | Path,
        open_segment: SegmentFactory,
        segment_frames: int,
        frame_rate: Fraction,
        *,
        fourcc: str | None = None,
        first_frame: int = 0,
        audio_from: Path | None = None,
    ):
        check_int("segment_frames", segment_frames, minimum=0)
        check_int("first_frame", first_frame, minimum=0)
        self.path = Path(path)
        self.parts = parts_folder(self.path)
        self.extension = self.path.suffix.lstrip(".")
        self.segment_frames = segment_frames
        self.frame_rate = frame_rate
        self.fourcc = fourcc
        self.audio_from = audio_from
        if audio_from is not None:  # its errors and warning surface here, before any frame
            self.audio_from = check_audio_source(audio_from, self.path)
        self.first_frame = first_frame
        self.next_frame = first_frame  # the frame the next add_batch begins with
        self._open_segment = open_segment
        self._segment: FrameWriter | None = None
        self._segment_first = first_frame
        self._closed = False
        self._opened_one = False
        self.parts.mkdir(parents=True, exist_ok=True)
        # one chunk finalizes while the next fills: each waiting chunk holds its encoder queue of batches
        self._finalizer = BackgroundWorkers(
            self._finalize, name=f"SegmentedWriter({self.path})", max_queued=1
        )
        self._open_next()  # the backend's errors (codec, size, folder) surface here, before any frame

    @property
    def frames_added(self) -> int:
        """Frames added to this writer (from `first_frame` on)."""
        return self.next_frame - self.first_frame

    def _open_next(self) -> None:
        self._segment_first = self.next_frame
        with warnings.catch_warnings():
            if self._opened_one:
                warnings.simplefilter("ignore")  # the first chunk already warned (odd size, ...)
            self._segment = self._open_segment(
                self.parts / f".writing-{self.next_frame:08d}.{self.extension}"
            )
        self._opened_one = True

    def _finalize(self, item: tuple[FrameWriter, int]) -> None:
        writer, first = item
        self._finish_chunk(writer, range(first, first + writer.frames_added))

    def _finish_chunk(self, writer: FrameWriter, frames: range) -> None:
        """Close a chunk's writer, check that its file holds every frame given, rename it to its finished
        name and record it (see `chunks`); a chunk that fails is removed, never counting as finished."""
        try:
            writer.close()
            record = verify_new_chunk(writer.path, writer.frames_added)
        except BaseException:
            writer.path.unlink(missing_ok=True)  # its space is given back
            raise
        chunk = chunk_path(self.parts, frames, self.extension)
        replace_durably(writer.path, chunk)
        write_record(chunk, record)

    def _hand_to_finalizer(self) -> None:
        segment, self._segment = self._segment, None
        if segment.frames_added > 0:
            self._finalizer.put((segment, self._segment_first))
        else:
            segment.close()
            segment.path.unlink(missing_ok=True)

    def add_batch(self, frames: torch.Tensor, hand_over: bool = False) -> None:
        """Queue a batch [B,C,H,W] (see the backend's contract, also for `hand_over`), cut at chunk boundaries."""
        if self._closed:
            raise RuntimeError(f"SegmentedWriter for {self.path} is closed")
        self._finalizer.raise_error()
        start = 0
        while start < len(frames):
            if self._segment is None:
                self._open_next()
            filled = self.next_frame - self._segment_first
            room = self.segment_frames - filled if self.segment_frames else len(frames) - start
            chunk = frames[start : start + room]
            self._segment.add_batch(chunk, hand_over)
            start += len(chunk)
            self.next_frame += len(chunk)
            if self.segment_frames and self.next_frame - self._segment_first == self.segment_frames:
                self._hand_to_finalizer()
        if len(frames) == 0:
            self._segment.add_batch(frames)  # validated like any batch

    def close(self) -> None:
        """Finalize the chunk being filled (an empty one is dropped); raise a finalizing error."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._segment is not None:
                self._hand_to_finalizer()
        finally:
            self._finalizer.close()

    def abort(self) -> None:
        """Interrupted: finalize what was added, as `close`, but a chunk that cannot be finalized is dropped
        quietly after the first error (the frames of every finished chunk stay for a resume)."""
        if self._closed:
            return
        self._closed = True
        partial, self._segment = self._segment, None
        try:
            self._finalizer.close()
        finally:
            if partial is not None and partial.frames_added > 0:
                frames = range(self._segment_first, self._segment_first + partial.frames_added)
                self._finish_chunk(partial, frames)
            elif partial is not None:
                try:
                    partial.close()
                finally:
                    partial.path.unlink(missing_ok=True)

    def join(self, num_frames: int | None = None) -> Path:
        """Join the chunks into `path` and remove the parts folder (after `close`); see `join_parts`."""
        return join_parts(self.path, self.frame_rate, self.fourcc, self.audio_from, num_frames)

    def __enter__(self) -> SegmentedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
