"""The finished chunks of a segmented video: their folder, names, records, and the one check of both.

The chunks of an output `<path>` live in `<path>.parts/`; a chunk `<parts>/<first:08d>-<stop:08d>.<ext>`
holds frames [first, stop). It counts as written only when its RECORD, the sidecar `<chunk>.json` ({"frames", "bytes", "sha256"}), matches it. The writer makes the
record after the chunk's file is finalized and its demuxed frame count equals the frames given to it, and
writes it (atomically, synced) after renaming the chunk to its finished name: a kill between the two leaves a
chunk without a record, whose frames a resume writes again. One record per chunk, written by the one writer
that made the chunk, so the writer threads of a run and the processes of a distributed run (each its own
frames, hence its own chunk names) never write the same file; nothing is shared that could race.

`verified_chunks` is the check that the join, the resume and the preview of an interrupted run all use: a
chunk is verified when its record exists, names its frames, and matches its size and SHA-256. A chunk cut
short, emptied, overwritten by another's content or never recorded is not.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2

from lightning_matting.durable import replace_durably

from .durable import StorageError, storage_error

_CHUNK_NAME = re.compile(r"(\d{8})-(\d{8})\.(.+)")
RECORD_SUFFIX = ".json"


def parts_folder(path: str | Path) -> Path:
    """The folder of the chunks of the output file `path`: `<path>.parts/`."""
    path = Path(path)
    return path.with_name(path.name + ".parts")


def chunk_path(parts: Path, frames: range, extension: str) -> Path:
    """The finalized chunk holding `frames`: `<parts>/<first:08d>-<stop:08d>.<extension>`."""
    return parts / f"{frames.start:08d}-{frames.stop:08d}.{extension}"


def record_path(chunk: Path) -> Path:
    """The record of `chunk`: `<chunk>.json`."""
    return chunk.with_name(chunk.name + RECORD_SUFFIX)


def finished_chunks(parts: Path, extension: str) -> list[tuple[range, Path]]:
    """The chunks in `parts` by their names, as (frames, file) in frame order, verified or not (an absent
    folder holds none)."""
    chunks = []
    for file in parts.iterdir() if parts.is_dir() else ():
        match = _CHUNK_NAME.fullmatch(file.name)
        if match and match[3] == extension and int(match[1]) < int(match[2]):
            chunks.append((range(int(match[1]), int(match[2])), file))
    return sorted(chunks, key=lambda chunk: (chunk[0].start, chunk[0].stop))


@dataclass(frozen=True)
class ChunkRecord:
    """What a verified chunk holds: `frames` video frames in `bytes` bytes whose SHA-256 is `sha256` (hex)."""

    frames: int
    bytes: int
    sha256: str


def count_frames(path: Path) -> int:
    """The video frames `path` holds: its first video stream's whole packets (PyAV), else OpenCV's decode.

    Raises:
        ValueError: `path` is not a readable video, naming it and the reason.
    """
    try:
        import av
    except ImportError:  # the [av] extra is optional: OpenCV decodes
        capture = cv2.VideoCapture(str(path))
        try:
            if not capture.isOpened():
                raise ValueError(f"{path} is not a readable video (OpenCV cannot open it)") from None
            count = 0
            while capture.grab():
                count += 1
            return count
        finally:
            capture.release()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} is not a readable video: it has no video stream")
            video = container.streams.video[0]
            return sum(1 for p in container.demux(video) if p.pts is not None and not p.is_corrupt)
    except (av.FFmpegError, OSError) as error:
        raise ValueError(f"{path} is not a readable video: {error}") from error


def _digest(path: Path) -> tuple[int, str]:
    """(size in bytes, SHA-256 hex) of `path`'s content."""
    with open(path, "rb") as file:
        return path.stat().st_size, hashlib.file_digest(file, "sha256").hexdigest()


def verify_new_chunk(path: Path, frames_added: int) -> ChunkRecord:
    """The record of a just-finalized chunk file, after checking that it holds the `frames_added` frames given.

    Raises:
        StorageError: It holds fewer (or more) frames, or none readable: the full disk or file size limit
            that explains it (see `storage_error`), else EIO; naming `path` and the frames expected and found.
    """
    try:
        count = count_frames(path)
        found = str(count)
    except ValueError as error:
        count, found = None, f"none readable ({error})"
    if count == frames_added:
        size, sha256 = _digest(path)
        return ChunkRecord(frames_added, size, sha256)
    cause = storage_error(path)
    why = (
        cause.strerror if cause is not None else f"writing {path} failed: the encoder or the disk lost frames"
    )
    raise StorageError(
        cause.errno if cause is not None else errno.EIO,
        f"{why}; it holds {found} of the {frames_added} frames written to it",
    )


def write_record(chunk: Path, record: ChunkRecord) -> None:
    """Write `chunk`'s record atomically and durably (a temporary file renamed over `<chunk>.json`)."""
    temporary = chunk.with_name(f".writing-{chunk.name}{RECORD_SUFFIX}")
    temporary.write_text(json.dumps(asdict(record), sort_keys=True))
    replace_durably(temporary, record_path(chunk))


def chunk_problem(chunk: Path, frames: range) -> str | None:
    """Why `chunk`, named for `frames`, does not count as written, or None when it matches its record."""
    try:
        record = ChunkRecord(**json.loads(record_path(chunk).read_text()))
    except FileNotFoundError:
        return "it has no record (it was not verified when written)"
    except (OSError, ValueError, TypeError) as error:
        return f"its record {record_path(chunk).name} is unreadable ({error})"
    if record.frames != len(frames):
        return f"its record counts {record.frames} frames, its name {len(frames)}"
    size, sha256 = _digest(chunk)
    if size != record.bytes:
        return f"it holds {size} bytes, its record {record.bytes}"
    if sha256 != record.sha256:
        return "its content differs from its record (SHA-256)"
    return None


def verified_chunks(
    parts: Path, extension: str
) -> tuple[list[tuple[range, Path]], list[tuple[range, Path, str]]]:
    """The chunks in `parts` that match their records, and those that do not, with why.

    Returns:
        (verified, rejected): verified as (frames, file) in frame order; rejected as (frames, file, reason).
    """
    verified, rejected = [], []
    for frames, chunk in finished_chunks(parts, extension):
        problem = chunk_problem(chunk, frames)
        if problem is None:
            verified.append((frames, chunk))
        else:
            rejected.append((frames, chunk, problem))
    return verified, rejected
