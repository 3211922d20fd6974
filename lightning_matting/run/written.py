"""What a resumed predict run keeps: the frames every output of a video holds safely, and the removal of the
rest (chunks that do not match their records, partial files, an unfinished join)."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

from lightning_matting.metadata import VideoInfo
from lightning_matting.run.frame_ranges import FrameRanges
from lightning_matting.writers.chunks import (
    chunk_problem,
    finished_chunks,
    parts_folder,
    record_path,
    verified_chunks,
)
from lightning_matting.writers.output_format import OutputFormat


def _image_frames(folder: Path, extension: str) -> FrameRanges:
    """The frames an image-sequence folder holds (files `<index:05d>.<extension>`)."""
    files = folder.glob(f"*.{extension}") if folder.is_dir() else ()
    return FrameRanges.of_indices(int(file.stem) for file in files if file.stem.isdigit() and file.is_file())


def written_frames(
    output_format: OutputFormat, info: VideoInfo, paths: Sequence[Path], complete: bool
) -> FrameRanges:
    """The frames of `info`'s video that every output holds safely (reads only).

    Args:
        output_format: How the outputs are stored.
        info: The video.
        paths: Its output paths.
        complete: The manifest says every frame was written and joined.

    Returns:
        Every frame for a finished video; otherwise the frames held by verified chunks (video: those matching
        their records, see `lightning_matting.writers.chunks`) or image files in every output. A chunk that
        reaches outside those frames does not count (its frames will be written again, and chunks must not
        overlap), nor does an unsegmented file (finalized only at the end).
    """
    every = FrameRanges([range(info.num_frames)])
    if complete and all(path.exists() for path in paths):
        return every
    extension = output_format.resolved_extension
    done = every
    if output_format.format == "image_sequence":
        for path in paths:
            done = done.intersect(_image_frames(path, extension))
        return done
    chunks = []
    for path in paths:
        verified, rejected = verified_chunks(parts_folder(path), extension)
        chunks += [frames for frames, _ in verified]
        done = done.intersect(frames for frames, _ in verified)
        # no frame of a rejected chunk counts, so every chunk inside `done` is a verified one
        done = done.intersect(FrameRanges(frames for frames, _, _ in rejected).missing(info.num_frames))
    while True:  # drop the frames of chunks that reach outside `done`, until none does
        outside = [frames for frames in chunks if not done.contains(frames)]
        if not outside:
            return done
        done = done.intersect(FrameRanges(outside).missing(info.num_frames))
        chunks = [frames for frames in chunks if frames not in outside]


def clear_unwritten(
    output_format: OutputFormat, paths: Sequence[Path], done: FrameRanges, complete: bool
) -> None:
    """Remove what a resumed run will write again: files outside `done`, partial files, an unfinished join,
    and chunks that do not match their records (each named in a warning with why).

    Args:
        output_format: How the outputs are stored.
        paths: The video's output paths.
        done: The frames kept (`written_frames`: the chunks inside them are verified).
        complete: The video is finished: only its leftover parts folders go.
    """
    extension = output_format.resolved_extension
    for path in paths:
        if complete:
            shutil.rmtree(parts_folder(path), ignore_errors=True)
            continue
        if output_format.format == "image_sequence":
            for file in path.iterdir() if path.is_dir() else ():
                if not (
                    file.stem.isdigit()
                    and file.suffix == f".{extension}"
                    and done.contains(range(int(file.stem), int(file.stem) + 1))
                ):
                    file.unlink()
            continue
        path.unlink(missing_ok=True)  # an interrupted run's preview, or a join that did not finish
        kept = set()
        for frames, file in finished_chunks(parts_folder(path), extension):
            if done.contains(frames):  # verified by `written_frames`
                kept |= {file, record_path(file)}
            elif (problem := chunk_problem(file, frames)) is not None:
                warnings.warn(
                    f"{file} does not count as written: {problem}; its frames {frames.start} to "
                    f"{frames.stop - 1} are predicted again",
                    stacklevel=2,
                )
        for file in parts_folder(path).iterdir() if parts_folder(path).is_dir() else ():
            if file not in kept:
                shutil.rmtree(file) if file.is_dir() else file.unlink()
