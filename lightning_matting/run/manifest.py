"""RunManifest: the record of a video's unfinished predict run, and the fingerprint a resume must match.

While a video's predict run is unfinished, `<output_dir>/<video>/.matting-run.json` holds a fingerprint of
what changes its pixels (source, plates, target, model weights, output settings) and whether every frame is
written and joined. A resumed run must match the fingerprint; the manifest goes when the video is finished.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_matting.durable import replace_durably
from lightning_matting.metadata import VideoInfo
from lightning_matting.video_names import folder_name
from lightning_matting.writers.output_format import OutputFormat

MANIFEST = ".matting-run.json"


class RunManifest:
    """The manifest of `video`'s predict run under `root`: `<root>/<folder_name(video)>/.matting-run.json`.

    Args:
        root: The output folder of the run.
        video: The video's name.
    """

    def __init__(self, root: str | Path, video: str):
        self.video = video
        self.path = Path(root) / folder_name(video) / MANIFEST

    def exists(self) -> bool:
        """Whether an unfinished (or finished, not yet removed) run left this manifest."""
        return self.path.is_file()

    def read(self) -> dict:
        """The manifest's content; an unreadable one reads as an empty, incomplete run."""
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    @property
    def complete(self) -> bool:
        """Whether every frame of the video is written and joined."""
        return bool(self.read().get("complete"))

    def create(self, fingerprint: Mapping[str, str]) -> None:
        """Start the record of a run with `fingerprint` (see `fingerprint`), not complete."""
        self._write({"fingerprint": dict(fingerprint), "complete": False})

    def check_same_run(self, current: Mapping[str, str]) -> None:
        """Raise a ValueError naming every setting of `current` that differs from the recorded fingerprint."""
        previous = self.read().get("fingerprint", {})
        changed = [
            key for key in sorted(previous.keys() | current.keys()) if previous.get(key) != current.get(key)
        ]
        if changed:
            details = "; ".join(f"{key}: was {previous.get(key)}, now {current.get(key)}" for key in changed)
            raise ValueError(
                f"VideoWriterCallback: cannot resume {self.video}: {', '.join(changed)} changed since the "
                f"interrupted run ({details}); rerun with the same settings, or pass resume=False and "
                "overwrite=True to start again"
            )

    def mark_complete(self) -> None:
        """Record that every frame is written and joined (a manifest-less run: nothing to do)."""
        if self.exists():
            self._write(self.read() | {"complete": True})

    def remove_if_complete(self) -> None:
        """Remove the manifest of a finished video."""
        if self.exists() and self.complete:
            self.path.unlink()

    def discard(self) -> None:
        """Remove the manifest whatever it says (a run that wrote nothing)."""
        self.path.unlink(missing_ok=True)

    def _write(self, content: dict) -> None:
        """Write `content` atomically and durably (a temporary file renamed over the manifest)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".writing-{self.path.name}")
        temporary.write_text(json.dumps(content, indent=1, sort_keys=True))
        replace_durably(temporary, self.path)


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
