"""Run manifests and resume points of predicted videos (Lightning-free).

While a video's predict run is unfinished, `<output_dir>/<video>/.matting-run.json` holds a fingerprint of
what changes its pixels (source, plates, target, model weights, output settings). A resumed run must match it
and continues at the first frame that every output holds safely.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_matting.metadata import VideoInfo
from lightning_matting.writers.durable import replace_durably
from lightning_matting.writers.output_format import OutputFormat
from lightning_matting.writers.segments import finalized_segments, parts_folder

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
        ),
        "codec": (output_format.fourcc, output_format.codec, output_format.codec_options),
        "segment_frames": output_format.segment_frames(info),
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


def contiguous_images(folder: Path, extension: str) -> int:
    """How many images 00000, 00001, ... exist in `folder` before the first missing one."""
    count = 0
    while (folder / f"{count:05d}.{extension}").is_file():
        count += 1
    return count


def resume_point(output_format: OutputFormat, info: VideoInfo, paths: Sequence[Path], complete: bool) -> int:
    """The first frame of `info`'s video not safely written in every output; later partial files are removed.

    Args:
        output_format: How the outputs are stored.
        info: The video.
        paths: Its output paths.
        complete: The manifest says every frame was written and joined.

    Returns:
        A frame index in [0, num_frames]: num_frames when the video is done.
    """
    if complete and all(path.exists() for path in paths):
        for path in paths:
            shutil.rmtree(parts_folder(path), ignore_errors=True)
        return info.num_frames
    segment = output_format.segment_frames(info)
    extension = output_format.resolved_extension
    done = []
    for path in paths:
        if output_format.format == "image_sequence":
            done.append(contiguous_images(path, extension))
        elif segment:
            done.append(
                min(len(finalized_segments(parts_folder(path), extension)) * segment, info.num_frames)
            )
        else:
            done.append(0)  # an unsegmented file is finalized only at the end
    start = min(done)
    for path in paths:
        if output_format.format == "video":
            path.unlink(missing_ok=True)  # a join that did not finish
        if segment and parts_folder(path).is_dir():
            for file in parts_folder(path).iterdir():
                if not file.name[0].isdigit() or int(file.name.split(".")[0]) * segment >= start:
                    file.unlink()
    if segment and start < info.num_frames:
        start -= start % segment  # a short last segment exists only at the very end
    return start
