"""Run manifests and resume points of predicted videos (Lightning-free).

While a video's predict run is unfinished, `<output_dir>/<video>/.matting-run.json` holds a fingerprint of
what changes its pixels (source, plates, target, model weights, output settings). A resumed run must match it
and continues at the first frame that every output holds safely.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_matting.metadata import VideoInfo
from lightning_matting.run.frame_ranges import FrameRanges
from lightning_matting.writers.chunks import chunk_problem, finished_chunks, record_path, verified_chunks
from lightning_matting.writers.durable import replace_durably
from lightning_matting.writers.output_format import OutputFormat
from lightning_matting.writers.segments import parts_folder

MANIFEST = ".matting-run.json"


def manifest_path(root: Path, video: str) -> Path:
    """The manifest of `video`'s unfinished run under `root`."""
    return root / video / MANIFEST


def write_json(path: Path, content: dict) -> None:
    """Write `content` to `path` atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".writing-{path.name}")
    temporary.write_text(json.dumps(content, indent=1, sort_keys=True))
    replace_durably(temporary, path)


def read_manifest(path: Path) -> dict:
    """A manifest's content; an unreadable one reads as an empty, incomplete run."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def mark_complete(root: Path, video: str) -> None:
    """Record that every frame of `video` is written and joined (a manifest-less run: nothing to do)."""
    path = manifest_path(root, video)
    if path.is_file():
        write_json(path, read_manifest(path) | {"complete": True})


def remove_if_complete(root: Path, video: str) -> None:
    """Remove the manifest of a finished video."""
    path = manifest_path(root, video)
    if path.is_file() and read_manifest(path).get("complete"):
        path.unlink()


def file_identity(path: object) -> str | None:
    """`path` with its size and modification time (a replaced file differs), or None when not a file."""
    if not isinstance(path, str | Path) or not Path(path).is_file():
        return None
    stat = Path(path).stat()
    return f"{Path(path).resolve()} ({stat.st_size} bytes, mtime {stat.st_mtime_ns})"


def weights_hash(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names and raw bytes)."""
    weights = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return weights.hexdigest()


def fingerprint(
    info: VideoInfo,
    output_format: OutputFormat,
    outputs: Sequence[str],
    module: nn.Module,
    hparams: Mapping[str, Any],
    inputs: Mapping[str, Any],
) -> dict[str, str]:
    """What a resumed run must share with the interrupted one, as {name: text}.

    Args:
        info: The video.
        output_format: How its outputs are stored.
        outputs: The output names.
        module: The model (its class and its parts' classes, and its weights).
        hparams: Its hyperparameters (a "checkpoint" among them is identified as a file).
        inputs: Further settings that change the pixels ({"data.target": ...}); paths of files among them
            are identified by path, size and modification time.
    """
    hparams = dict(hparams)
    settings = {
        "video": (info.name, str(info.fps), info.width, info.height, info.num_frames),
        "source": file_identity(info.source) or info.source,
        "model": [type(part).__name__ for part in (module, *module.children())],
        "model.hparams": hparams,
        "model.checkpoint": file_identity(hparams.get("checkpoint")),
        "model.weights": weights_hash(module),
        "outputs": list(outputs),
        "format": (
            output_format.format,
            output_format.resolved_extension,
            output_format.alpha,
            output_format.audio,
            output_format.bit_depth,
        ),
        "codec": (output_format.fourcc, output_format.codec, output_format.codec_options),
    }
    for key, value in inputs.items():
        settings[key] = _identify_files(value)
    return {key: json.dumps(value, sort_keys=True, default=str) for key, value in settings.items()}


def _identify_files(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_identify_files(item) for item in value]
    return file_identity(value) or value


def check_same_run(video: str, previous: Mapping[str, str], current: Mapping[str, str]) -> None:
    """Raise a ValueError naming every setting that changed since the interrupted run."""
    changed = [
        key for key in sorted(previous.keys() | current.keys()) if previous.get(key) != current.get(key)
    ]
    if changed:
        details = "; ".join(f"{key}: was {previous.get(key)}, now {current.get(key)}" for key in changed)
        raise ValueError(
            f"VideoWriterCallback: cannot resume {video}: {', '.join(changed)} changed since the interrupted run "
            f"({details}); rerun with the same settings, or pass resume=False and overwrite=True to start again"
        )


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
