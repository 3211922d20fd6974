"""SegmentedWriter: a video written as finalized segment files, joined into one file on success.

A process killed mid-run (SIGKILL, OOM killer, preemption) never runs `release()`, and an unfinished MP4,
MKV or AVI from OpenCV holds no playable frame. Written in segments of `segment_frames` frames, such a kill
loses at most the segment being written: every earlier segment is a finalized file (written under a hidden
name, renamed when complete), and a rerun can continue after the last one.
"""

from __future__ import annotations

import math
import shutil
import warnings
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import torch

from .base import FrameWriter
from .durable import StorageError, check_storage, replace_durably, storage_error
from .pyav import AudioCopy, open_audio_source
from .threaded import BackgroundWorkers

if TYPE_CHECKING:
    from av.container import OutputContainer
    from av.video.stream import VideoStream

SegmentFactory = Callable[[Path], FrameWriter]
# Matroska statistics tags that describe one segment, not the joined file
_PER_SEGMENT_TAGS = ("DURATION", "NUMBER_OF_FRAMES", "NUMBER_OF_BYTES", "_STATISTICS")


def parts_folder(path: str | Path) -> Path:
    """The folder of the segments of the output file `path`: `<path>.parts/`."""
    path = Path(path)
    return path.with_name(path.name + ".parts")


def segment_path(parts: Path, index: int, extension: str) -> Path:
    """The file of the `index`-th finalized segment: `<parts>/<index:05d>.<extension>`."""
    return parts / f"{index:05d}.{extension}"


def finalized_segments(parts: Path, extension: str) -> list[Path]:
    """The finalized segments in `parts`, 00000 onwards up to the first gap (later ones cannot be used)."""
    segments = []
    while (path := segment_path(parts, len(segments), extension)).is_file():
        segments.append(path)
    return segments


def piece_path(path: str | Path, first_frame: int) -> Path:
    """The file for the frames from `first_frame` on of `path` that one rank writes in a distributed run:
    `<path>.parts/from-<first_frame:08d>.<ext>` (name order is frame order)."""
    path = Path(path)
    return parts_folder(path) / f"from-{first_frame:08d}{path.suffix}"


def segment_frames_for(fps: Fraction, seconds: float) -> int:
    """Frames per segment for `seconds` of video at `fps`: ceil(fps * seconds), at least 1 (a float's decimal
    value: 0.2 s at 10 fps is 2 frames, not 3 as the binary 0.2000...01 would give)."""
    return max(1, math.ceil(Fraction(fps) * Fraction(str(seconds))))


class SegmentedWriter:
    """Writes `path` (the writer contract: `add_batch([B,C,H,W])`, `close()`) as segments, then joins them.

    `open_segment(file)` makes the backend writer of one segment (VideoWriter, AVWriter, ...). Frames go to
    `<path>.parts/<k:05d>.<ext>`, `segment_frames` per file; a full segment is finalized on a background
    thread while the next one is filled. `close()` finalizes the last segment; `join()` then stream-copies
    the segments into `path` (`join_segments`, at `frame_rate`; `fourcc` re-encodes without PyAV; the audio of
    `audio_from` is added there, so segments hold video only) and removes the parts folder; `abort()` instead leaves a playable `path` and the full segments. `start_segment` > 0 continues
    a previous run after its first `start_segment` finalized segments (frame `start_segment * segment_frames`).

    Example::

        writer = SegmentedWriter("pha.mkv", lambda f: VideoWriter(f, 30, 64, 48, fourcc="FFV1"), 60, 30)
        writer.add_batch(frames)
        writer.close()
        writer.join()
    """

    def __init__(
        self,
        path: str | Path,
        open_segment: SegmentFactory,
        segment_frames: int,
        frame_rate: Fraction,
        *,
        fourcc: str | None = None,
        start_segment: int = 0,
        audio_from: Path | None = None,
    ):
        for name, value, minimum in (
            ("segment_frames", segment_frames, 1),
            ("start_segment", start_segment, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
        self.path = Path(path)
        self.parts = parts_folder(self.path)
        self.extension = self.path.suffix.lstrip(".")
        self.segment_frames = segment_frames
        self.frame_rate = frame_rate
        self.fourcc = fourcc
        self.audio_from = audio_from
        if audio_from is not None:  # its errors and warning surface here, before any frame
            self.audio_from = check_audio_source(audio_from, self.path)
        self.frames_added = start_segment * segment_frames
        self._open_segment = open_segment
        self._segment: FrameWriter | None = None
        self._segment_index = start_segment
        self._closed = False
        self._opened_one = False
        self.parts.mkdir(parents=True, exist_ok=True)
        # one segment finalizes while the next fills: each waiting segment holds its encoder queue of batches
        self._finalizer = BackgroundWorkers(
            self._finalize, name=f"SegmentedWriter({self.path})", max_queued=1
        )
        self._open_next()  # the backend's errors (codec, size, folder) surface here, before any frame

    def _writing_path(self, index: int) -> Path:
        return self.parts / f".writing-{index:05d}.{self.extension}"

    def _open_next(self) -> None:
        with warnings.catch_warnings():
            if self._opened_one:
                warnings.simplefilter("ignore")  # the first segment already warned (odd size, ...)
            self._segment = self._open_segment(self._writing_path(self._segment_index))
        self._opened_one = True

    def _finalize(self, item: tuple[FrameWriter, int]) -> None:
        writer, index = item
        try:
            writer.close()
        except BaseException:
            writer.path.unlink(missing_ok=True)  # never counts as finished; its space is given back
            raise
        replace_durably(writer.path, segment_path(self.parts, index, self.extension))

    def add_batch(self, frames: torch.Tensor, hand_over: bool = False) -> None:
        """Queue a batch [B,C,H,W] (see the backend's contract, also for `hand_over`), cut at segment boundaries."""
        if self._closed:
            raise RuntimeError(f"SegmentedWriter for {self.path} is closed")
        self._finalizer.raise_error()
        start = 0
        while start < len(frames):
            if self._segment is None:
                self._open_next()
            room = self.segment_frames - self.frames_added % self.segment_frames
            chunk = frames[start : start + room]
            self._segment.add_batch(chunk, hand_over)
            start += len(chunk)
            self.frames_added += len(chunk)
            if self.frames_added % self.segment_frames == 0:
                self._finalizer.put((self._segment, self._segment_index))
                self._segment, self._segment_index = None, self._segment_index + 1
        if len(frames) == 0:
            self._segment.add_batch(frames)  # validated like any batch

    def close(self) -> None:
        """Finalize the segment being filled (an empty one is dropped); raise a finalizing error."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._segment is not None:
                segment, self._segment = self._segment, None
                if segment.frames_added > 0:
                    self._finalizer.put((segment, self._segment_index))
                else:
                    segment.close()
                    segment.path.unlink(missing_ok=True)
        finally:
            self._finalizer.close()

    def join(self) -> Path:
        """Join the finalized segments into `path` and remove the parts folder (after `close`)."""
        return join_parts(self.path, self.frame_rate, self.fourcc, self.audio_from)

    def abort(self) -> None:
        """Interrupted: `path` gets every frame added (the short last segment too) for viewing, while the
        parts folder keeps only full segments, where a resumed run continues."""
        if self._closed:
            return
        self._closed = True
        partial, self._segment = self._segment, None
        try:
            self._finalizer.close()
        finally:
            if partial is not None:
                try:
                    partial.close()
                except BaseException:
                    partial.path.unlink(missing_ok=True)
                    raise
        segments = finalized_segments(self.parts, self.extension)
        if partial is not None and partial.frames_added > 0:
            segments.append(partial.path)
        if segments:
            join_segments(segments, self.path, self.frame_rate, self.fourcc, self.audio_from)
        if partial is not None:
            partial.path.unlink(missing_ok=True)

    def __enter__(self) -> SegmentedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def join_parts(
    path: str | Path, frame_rate: Fraction, fourcc: str | None = None, audio_from: Path | None = None
) -> Path:
    """Join the finalized segments of `<path>.parts/` into `path` (see `join_segments`), remove the folder."""
    path = Path(path)
    segments = finalized_segments(parts_folder(path), path.suffix.lstrip("."))
    join_segments(segments, path, frame_rate, fourcc, audio_from)
    shutil.rmtree(parts_folder(path))
    return path


def join_pieces(
    path: str | Path,
    first_frames: list[int],
    frame_rate: Fraction,
    fourcc: str | None = None,
    audio_from: Path | None = None,
) -> Path:
    """Join the pieces of `path` starting at `first_frames` (`piece_path`; each a file, or finalized segments in
    its own parts folder), in frame order, into `path` (see `join_segments`), and remove `<path>.parts/`."""
    path = Path(path)
    extension = path.suffix.lstrip(".")
    segments = []
    for first in sorted(first_frames):
        piece = piece_path(path, first)
        if parts_folder(piece).is_dir():
            segments += finalized_segments(parts_folder(piece), extension)
        elif piece.is_file():
            segments.append(piece)
        else:
            raise FileNotFoundError(f"the piece of {path.name} from frame {first} is missing: {piece}")
    join_segments(segments, path, frame_rate, fourcc, audio_from)
    shutil.rmtree(parts_folder(path))
    return path


def join_segments(
    segments: list[Path],
    output: Path,
    frame_rate: Fraction,
    fourcc: str | None = None,
    audio_from: Path | None = None,
) -> None:
    """Concatenate video segments (same codec and settings) into `output`, atomically (temp + rename).

    With PyAV, packets are copied (no re-encoding) with continuous timestamps at `frame_rate`, and the first
    audio stream of `audio_from` is copied beside them up to the last frame (see `AudioCopy`). Without PyAV,
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
            _stream_copy(segments, temporary, frame_rate, audio_from)
        else:
            _reencode(segments, temporary, frame_rate, fourcc)
        check_storage(temporary)
    except BaseException as error:
        failure = None  # a full disk or the size limit, named (measured before the file goes)
        if isinstance(error, OSError) and not isinstance(error, StorageError):
            failure = storage_error(temporary, error)
        temporary.unlink(missing_ok=True)
        if failure is not None:
            raise failure from error
        raise
    replace_durably(temporary, output)


def _stream_copy(segments: list[Path], output: Path, frame_rate: Fraction, audio_from: Path | None) -> None:
    """Copy the packets of each segment, timestamps renumbered: pts frame offset + index, dts in order; the
    audio of `audio_from` follows segment by segment."""
    import av

    audio_source = None if audio_from is None else open_audio_source(audio_from, output)
    audio = None
    try:
        with av.open(str(output), "w") as out:
            stream = None
            offset = 0  # frames of the segments already copied
            lead = 0  # frames decoded before they are shown (B-frames): dts runs `lead` frames behind pts
            last_dts = None
            for segment in segments:
                with av.open(str(segment)) as source:
                    video = source.streams.video[0]
                    ticks = 1 / (frame_rate * video.time_base)  # time-base ticks per frame
                    order = [round(p.pts / ticks) for p in source.demux(video) if p.pts is not None]
                if not order:
                    continue
                first = min(order)
                # The encoder's delay is the same in every segment (a short last one may show less of it).
                lead = max(lead, *(j - (index - first) for j, index in enumerate(order)))
                with av.open(str(segment)) as source:
                    video = source.streams.video[0]
                    if stream is None:
                        stream = _joined_video_stream(out, video, frame_rate)
                        if audio_source is not None:
                            audio = AudioCopy(audio_source, out)
                    packets = (p for p in source.demux(video) if p.pts is not None)
                    for j, packet in enumerate(packets):
                        packet.pts = round((offset + round(packet.pts / ticks) - first) * ticks)
                        dts = round((offset + j - lead) * ticks)
                        packet.dts = last_dts = dts if last_dts is None else max(dts, last_dts + 1)
                        packet.stream = stream
                        out.mux(packet)
                offset += len(order)
                if audio is not None:
                    audio.copy_until(offset / frame_rate)
            if audio is not None:
                audio.finish(offset / frame_rate)
    finally:
        if audio_source is not None:
            audio_source.close()


def _joined_video_stream(out: OutputContainer, video: VideoStream, frame_rate: Fraction) -> VideoStream:
    """The joined file's video stream, made from a segment's `video`, plus what the template leaves out: stream
    tags, and Matroska's AlphaMode (without it browsers show VP9 alpha as opaque black). The MP4/MOV codec tag
    (hvc1, ap4h) is not restored yet: setting it on a template stream corrupts PyAV 18's heap (seen with HEVC).
    """
    stream = out.add_stream_from_template(video)
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


def _reencode(segments: list[Path], output: Path, frame_rate: Fraction, fourcc: str | None) -> None:
    if fourcc is None:
        raise ValueError(f"joining {output.name} without PyAV needs the segments' OpenCV fourcc")
    if fourcc != "FFV1":
        warnings.warn(
            f"PyAV is not installed: the segments of {output.name} are joined by decoding and re-encoding "
            f"with {fourcc!r}, a generation loss (pip install 'lightning-matting[av]' copies them instead)",
            stacklevel=3,
        )
    writer = None
    try:
        for segment in segments:
            capture = cv2.VideoCapture(str(segment))
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
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
