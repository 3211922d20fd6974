"""The join: the verified chunks of a video stream-copied (or re-encoded) into its output file, with audio.

The chunks in `<path>.parts/` (see `chunks`, written by `segments.SegmentedWriter`) must tile the video's
frames; each is checked against its record before use and its demux while copying, and the joined file is
demuxed before it takes the output's name. The source's audio is added here, so chunks hold video only.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from lightning_matting.durable import replace_durably
from lightning_matting.metadata import frame_time

from .chunks import count_frames, parts_folder, verified_chunks
from .durable import StorageError, check_storage, storage_error
from .pyav import VARIABLE_RATE_TIME_BASE, AudioCopy, open_audio_source

if TYPE_CHECKING:
    from av.container import OutputContainer
    from av.video.stream import VideoStream

_TAGGED_FORMATS = ("mp4", "mov")  # muxers that store a codec tag per stream
# Matroska statistics tags that describe one segment, not the joined file
_PER_SEGMENT_TAGS = ("DURATION", "NUMBER_OF_FRAMES", "NUMBER_OF_BYTES", "_STATISTICS")


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
