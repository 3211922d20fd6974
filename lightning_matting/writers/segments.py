"""SegmentedWriter: a video written as finalized chunk files, each named by its frames, joined on success.

A process killed mid-run (SIGKILL, OOM killer, preemption) never runs `release()`, and an unfinished MP4,
MKV or AVI from OpenCV holds no playable frame. Written in segments of `segment_frames` frames, such a kill
loses at most the segment being written: every earlier segment is a finalized file (written under a hidden
name, renamed when complete) named by the frames it holds, `<path>.parts/<first:08d>-<stop:08d>.<ext>`. Any
number of writers (a resumed run, the ranks of a distributed run) can add chunks for other frames; a rerun
continues in the frames no chunk holds, and the join checks that the chunks tile the video.

A chunk is finished only when verified: its file's demuxed frames equal those given to it (a full disk or a
size limit that lost frames removes it and raises a StorageError), and its record (frames, bytes, SHA-256,
see `chunks`) is written beside it. The join uses verified chunks only, checks each one's demux while
copying, and demuxes the joined file before it takes the output's name.
"""

from __future__ import annotations

import math
import shutil
import warnings
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import torch

from lightning_matting.metadata import frame_time

from .base import FrameWriter
from .chunks import (  # finished_chunks: the chunks by name, for callers of this module
    chunk_path,
    count_frames,
    finished_chunks,  # noqa: F401
    verified_chunks,
    verify_new_chunk,
    write_record,
)
from .durable import StorageError, check_storage, replace_durably, storage_error
from .pyav import VARIABLE_RATE_TIME_BASE, AudioCopy, open_audio_source
from .threaded import BackgroundWorkers

if TYPE_CHECKING:
    from av.container import OutputContainer
    from av.video.stream import VideoStream

SegmentFactory = Callable[[Path], FrameWriter]
_TAGGED_FORMATS = ("mp4", "mov")  # muxers that store a codec tag per stream
# Matroska statistics tags that describe one segment, not the joined file
_PER_SEGMENT_TAGS = ("DURATION", "NUMBER_OF_FRAMES", "NUMBER_OF_BYTES", "_STATISTICS")


def parts_folder(path: str | Path) -> Path:
    """The folder of the chunks of the output file `path`: `<path>.parts/`."""
    path = Path(path)
    return path.with_name(path.name + ".parts")


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
        for name, value in (("segment_frames", segment_frames), ("first_frame", first_frame)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
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


def _tiling_chunks(path: Path, num_frames: int | None) -> list[tuple[range, Path]]:
    """The verified chunks of `path` that tile frames [0, num_frames) (None: the verified chunks from 0 up to
    the first gap), as (frames, file)."""
    extension = path.suffix.lstrip(".")
    verified, rejected = verified_chunks(parts_folder(path), extension)
    if num_frames is not None and rejected:
        shown = "; ".join(f"{file.name}: {problem}" for _, file, problem in rejected)
        raise ValueError(
            f"cannot join {path}: chunks in {parts_folder(path)} do not count as written ({shown}); rerun with "
            "resume=True to write their frames again"
        )
    tiling, stop = [], 0
    for frames, file in verified:
        if frames.start != stop:
            if num_frames is None:
                break
            problem = "are missing" if frames.start > stop else "are held twice"
            raise ValueError(
                f"cannot join {path}: frames {min(stop, frames.start)} to {max(stop, frames.start) - 1} {problem} "
                f"in {parts_folder(path)} (chunks: {[f.name for _, f in verified]})"
            )
        tiling.append((frames, file))
        stop = frames.stop
    if num_frames is not None and stop != num_frames:
        raise ValueError(
            f"cannot join {path}: its {num_frames} frames need chunks up to frame {num_frames - 1}, the chunks in "
            f"{parts_folder(path)} end at frame {stop - 1}"
        )
    return tiling


def join_parts(
    path: str | Path,
    frame_rate: Fraction,
    fourcc: str | None = None,
    audio_from: Path | None = None,
    num_frames: int | None = None,
    frame_times: Sequence[Fraction] | None = None,
) -> Path:
    """Join the finished chunks of `<path>.parts/` into `path` (see `join_segments`) and remove the folder.

    Args:
        path: The output file.
        frame_rate: Its exact frame rate.
        fourcc: The OpenCV fourcc the chunks were written with (a re-encoding join without PyAV).
        audio_from: A file whose audio is copied beside the video.
        num_frames: The video's frame count: the chunks must tile [0, num_frames). None: frames from 0 on, up to
            the first gap.
        frame_times: A variable-rate video's frame times in seconds (`VideoInfo.frame_times`), given to the
            joined frames (PyAV); None: constant `frame_rate`.

    Returns:
        `path`, which holds every frame of the chunks (checked by a demux before it replaces `path`).

    Raises:
        ValueError: A chunk that does not match its record, a frame no chunk holds or one held twice,
            naming them; a joined file whose frame count differs from the chunks'.
    """
    path = Path(path)
    chunks = _tiling_chunks(path, num_frames)
    files, counts = [file for _, file in chunks], [len(frames) for frames, _ in chunks]
    join_segments(files, path, frame_rate, fourcc, audio_from, frame_times, counts)
    shutil.rmtree(parts_folder(path))
    return path


def preview_parts(
    path: str | Path,
    frame_rate: Fraction,
    fourcc: str | None = None,
    audio_from: Path | None = None,
    frame_times: Sequence[Fraction] | None = None,
) -> None:
    """Join the chunks from frame 0 up to the first gap into `path`, keeping them (an interrupted run's
    playable file; nothing when frame 0 is not written)."""
    path = Path(path)
    chunks = _tiling_chunks(path, None)
    if chunks:
        counts = [len(frames) for frames, _ in chunks]
        join_segments([file for _, file in chunks], path, frame_rate, fourcc, audio_from, frame_times, counts)


def join_segments(
    segments: list[Path],
    output: Path,
    frame_rate: Fraction,
    fourcc: str | None = None,
    audio_from: Path | None = None,
    frame_times: Sequence[Fraction] | None = None,
    frame_counts: Sequence[int] | None = None,
) -> None:
    """Concatenate video segments (same codec and settings) into `output`, atomically (temp + rename).

    `frame_counts` (the frames each segment holds by its record) are checked against each segment's demux
    while copying, and their sum against the joined file's before it replaces `output`: a mismatch raises a
    ValueError naming the file and both counts, and `output` is left as it was.

    With PyAV, packets are copied (no re-encoding) with continuous timestamps at `frame_rate` (frame i of the
    joined video at `frame_times[i]` seconds when given: a variable-rate source's), and the first audio stream of `audio_from` is copied beside them up to the last frame (see `AudioCopy`). Without PyAV,
    OpenCV decodes and re-encodes with `fourcc`: exact for lossless FFV1, a generation loss otherwise (warns).
    """
    if not segments:
        raise ValueError(f"no finalized segment to join into {output}")
    temporary = output.with_name(f".joining-{output.name}")
    try:
        import av  # noqa: F401 - the optional [av] extra
    except ImportError:
        have_av = False
        if audio_from is not None:
            raise ValueError(f"joining {output.name} with the audio of {audio_from} needs PyAV") from None
    else:
        have_av = True
    try:
        if have_av:
            copied = _stream_copy(segments, temporary, frame_rate, audio_from, frame_times)
        else:
            copied = _reencode(segments, temporary, frame_rate, fourcc)
        check_storage(temporary)
        if frame_counts is not None:
            _check_counts(output, segments, copied, frame_counts)
            _check_counts(output, [temporary], [count_frames(temporary)], [sum(frame_counts)])
    except BaseException as error:
        failure = None  # a full disk or the size limit, named (measured before the file goes)
        if isinstance(error, OSError) and not isinstance(error, StorageError):
            failure = storage_error(temporary, error)
        temporary.unlink(missing_ok=True)
        if failure is not None:
            raise failure from error
        raise
    replace_durably(temporary, output)


def _check_counts(output: Path, files: Sequence[Path], found: Sequence[int], expected: Sequence[int]) -> None:
    """Raise a ValueError for the first file joined into `output` whose frames `found` differ from those
    `expected`."""
    for file, got, wanted in zip(files, found, expected, strict=True):
        if got != wanted:
            raise ValueError(
                f"joining {output.name} failed: {file} holds {got} frames where {wanted} were expected (a "
                "damaged segment, or a full disk); its chunks are kept: rerun with resume=True"
            )


def _stream_copy(
    segments: list[Path],
    output: Path,
    frame_rate: Fraction,
    audio_from: Path | None,
    frame_times: Sequence[Fraction] | None,
) -> list[int]:
    """Copy the packets of each segment, timestamps renumbered: pts at the time of frame (frame offset +
    index), dts in order; the audio of `audio_from` follows segment by segment. Returns the frames copied
    from each segment."""
    import av

    audio_source = None if audio_from is None else open_audio_source(audio_from, output)
    audio = None
    try:
        with av.open(str(output), "w") as out:
            stream = None
            offset = 0  # frames of the segments already copied
            copied = []  # frames of each segment
            lead = 0  # frames decoded before they are shown (B-frames): dts runs `lead` frames behind pts
            last_dts = None
            for segment in segments:
                with av.open(str(segment)) as source:
                    video = source.streams.video[0]
                    ticks = 1 / (frame_rate * video.time_base)  # time-base ticks per frame
                    order = [round(p.pts / ticks) for p in source.demux(video) if p.pts is not None]
                copied.append(len(order))
                if not order:
                    continue
                first = min(order)
                # The encoder's delay is the same in every segment (a short last one may show less of it).
                lead = max(lead, *(j - (index - first) for j, index in enumerate(order)))
                with av.open(str(segment)) as source:
                    video = source.streams.video[0]
                    if stream is None:
                        stream = _joined_video_stream(out, video, frame_rate)
                        time_base = video.time_base if frame_times is None else VARIABLE_RATE_TIME_BASE
                        stream.time_base = time_base
                        if audio_source is not None:
                            audio = AudioCopy(audio_source, out)
                    packets = (p for p in source.demux(video) if p.pts is not None)
                    for j, packet in enumerate(packets):
                        shown = offset + round(packet.pts / ticks) - first
                        packet.pts = round(frame_time(shown, frame_rate, frame_times) / time_base)
                        dts = round(frame_time(offset + j - lead, frame_rate, frame_times) / time_base)
                        packet.dts = last_dts = dts if last_dts is None else max(dts, last_dts + 1)
                        packet.time_base = time_base
                        packet.stream = stream
                        out.mux(packet)
                offset += len(order)
                if audio is not None:
                    audio.copy_until(frame_time(offset, frame_rate, frame_times))
            if audio is not None:
                audio.finish(frame_time(offset, frame_rate, frame_times))
    finally:
        if audio_source is not None:
            audio_source.close()
    return copied


def _joined_video_stream(out: OutputContainer, video: VideoStream, frame_rate: Fraction) -> VideoStream:
    """The joined file's video stream, made from a segment's `video`, plus what the template leaves out: stream
    tags, the MP4/MOV codec tag (hvc1 for Apple players, ap4h for ProRes 4444), and Matroska's AlphaMode
    (without it browsers show VP9 alpha as opaque black).
    """
    stream = out.add_stream_from_template(video)
    if out.format.name in _TAGGED_FORMATS:
        stream.codec_tag = (
            video.codec_tag
        )  # the template leaves FFmpeg's default (hev1 for hvc1, apch for ap4h)
    stream.time_base = video.time_base
    stream.codec_context.framerate = frame_rate
    for key, value in video.metadata.items():
        if not key.upper().startswith(_PER_SEGMENT_TAGS) and key != "alpha_mode":
            stream.metadata[key] = value
    if video.metadata.get("alpha_mode") == "1" and stream.codec_context.pix_fmt == "yuv420p":
        # VP9 alpha travels beside the yuv420p picture; the Matroska muxer writes its AlphaMode flag for an
        # alpha pixel format only
        stream.codec_context.pix_fmt = "yuva420p"
    return stream


def check_audio_source(audio_from: Path, output: Path) -> Path | None:
    """`audio_from` if it has an audio stream for `output`, None (warned) if not; errors as `open_audio_source`."""
    source = open_audio_source(audio_from, output)
    if source is None:
        return None
    source.close()
    return audio_from


def _reencode(segments: list[Path], output: Path, frame_rate: Fraction, fourcc: str | None) -> list[int]:
    """Decode each segment with OpenCV and encode its frames into `output`; returns the frames of each."""
    if fourcc is None:
        raise ValueError(f"joining {output.name} without PyAV needs the segments' OpenCV fourcc")
    if fourcc != "FFV1":
        warnings.warn(
            f"PyAV is not installed: the segments of {output.name} are joined by decoding and re-encoding "
            f"with {fourcc!r}, a generation loss (pip install 'lightning-matting[av]' copies them instead)",
            stacklevel=3,
        )
    writer, copied = None, []
    try:
        for segment in segments:
            capture = cv2.VideoCapture(str(segment))
            copied.append(0)
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                copied[-1] += 1
                if writer is None:
                    size = (frame.shape[1], frame.shape[0])
                    writer = cv2.VideoWriter(
                        str(output), cv2.VideoWriter_fourcc(*fourcc), float(frame_rate), size
                    )
                writer.write(frame)
            capture.release()
    finally:
        if writer is not None:
            writer.release()
    return copied
