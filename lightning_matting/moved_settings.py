"""Settings that moved into groups (`model.refine`, `model.training`, `data.live`, `data.synthetic`,
`data.train`, `data.high_res`): an old key in a config or on the command line is refused naming its new place."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

MOVED: Mapping[str, str] = {
    "model.backbone_scale": "model.refine.backbone_scale",
    "model.refine_mode": "model.refine.mode",
    "model.refine_sample_pixels": "model.refine.sample_pixels",
    "model.refine_threshold": "model.refine.threshold",
    "model.refine_kernel_size": "model.refine.kernel_size",
    "model.refine_prevent_oversampling": "model.refine.prevent_oversampling",
    "model.bgmv2_stage": "model.training.stage",
    "model.learning_rate": "model.training.learning_rate",
    "model.backbone_learning_rate": "model.training.backbone_learning_rate",
    "model.refiner_learning_rate": "model.training.refiner_learning_rate",
    "model.high_res_downsample_ratio": "model.training.high_res_downsample_ratio",
    "data.realtime": "data.live.realtime",
    "data.live_timeout": "data.live.timeout",
    "data.reconnects": "data.live.reconnects",
    "data.synthetic_size": "data.synthetic.size",
    "data.synthetic_frames": "data.synthetic.frames",
    "data.synthetic_fps": "data.synthetic.fps",
    "data.synthetic_dir": "data.synthetic.dir",
    "data.seed": "data.synthetic.seed",
    "data.train_data": "data.train.data",
    "data.train_root": "data.train.root",
    "data.backgrounds_root": "data.train.backgrounds_root",
    "data.val_root": "data.train.val_root",
    "data.train_clips": "data.train.clips",
    "data.val_clips": "data.train.val_clips",
    "data.clip_length": "data.train.clip_length",
    "data.train_size": "data.train.size",
    "data.augment": "data.train.augment",
    "data.mix_synthetic": "data.train.mix_synthetic",
    "data.high_res_size": "data.high_res.size",
    "data.high_res_clip_length": "data.high_res.clip_length",
}
# `data.synthetic` is now a group; a count there is the old setting, now data.synthetic.clips.
_SYNTHETIC, _SYNTHETIC_COUNT = "data.synthetic", "data.synthetic.clips"
_CONFIG_FLAGS = ("-c", "--config")
_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def check_moved_settings(args: Sequence[str] | Mapping[str, Any]) -> None:
    """Refuse settings at their old flat keys, naming their new places.

    Args:
        args: A command line (its `--key=value` options and the YAML files of `-c`/`--config`), or a
            config such as `matte` builds ({"subcommand": ..., <subcommand>: {...}}).

    Raises:
        ValueError: One paragraph, `model.refine_mode moved: it is now model.refine.mode` for each old key.
    """
    settings = _config_settings(args) if isinstance(args, Mapping) else _command_line_settings(args)
    moved = dict.fromkeys(f"{key} moved: it is now {new}" for key, new in _moved(settings))
    if moved:
        raise ValueError("; ".join(moved))


def _moved(settings: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, str]]:
    for key, value in settings:
        if key in MOVED:
            yield key, MOVED[key]
        elif key == _SYNTHETIC and isinstance(value, int) and not isinstance(value, bool):
            yield key, _SYNTHETIC_COUNT


def _config_settings(config: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of a config, inside its subcommand's part if it has one."""
    for name, value in config.items():
        if name in _SUBCOMMANDS and isinstance(value, Mapping):
            yield from _flatten(value)
        elif name != "subcommand":
            yield from _flatten({name: value})


def _flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in config.items():
        key = f"{prefix}{name}"
        yield key, value
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{key}.")


def _command_line_settings(args: Sequence[str]) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of `--key=value` and `--key value` options, and of the YAML files of -c/--config."""
    for position, arg in enumerate(args):
        following = args[position + 1] if position + 1 < len(args) else None
        if arg in _CONFIG_FLAGS or arg.startswith("--config="):
            path = arg.partition("=")[2] if arg.startswith("--config=") else following
            if path is not None and Path(path).is_file():
                config = yaml.safe_load(Path(path).read_text())
                if isinstance(config, Mapping):
                    yield from _config_settings(config)
        elif arg.startswith("--"):
            key, equals, value = arg[2:].partition("=")
            text = value if equals else following
            yield key.rstrip("+"), _yaml_value(text)


def _yaml_value(text: str | None) -> Any:
    try:
        return yaml.safe_load(text) if text is not None else None
    except yaml.YAMLError:
        return text
