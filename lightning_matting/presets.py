"""The configs shipped inside the package, found by name: `--config rvm` is the packaged `predict_rvm.yaml`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

PRESET_FOLDER = Path(__file__).resolve().parent / "configs"
_PREDICT_PREFIX = "predict_"


def presets() -> dict[str, Path]:
    """Every packaged config by name: the file's stem, and without its `predict_` prefix (`rvm`, `bgmv2`, ...).

    Returns:
        {name: path}, sorted by name.
    """
    found: dict[str, Path] = {}
    for path in sorted(PRESET_FOLDER.glob("*.yaml")):
        found[path.stem] = path
        if path.stem.startswith(_PREDICT_PREFIX):
            found[path.stem[len(_PREDICT_PREFIX) :]] = path
    return dict(sorted(found.items()))


def resolve_config(value: str) -> str:
    """`value` of `--config`: an existing file as given; otherwise a preset's path when `value` names one.

    Args:
        value: A path, or a preset name such as "rvm", "bgmv2", "alpha", "demo" or "predict_rvm.yaml".

    Returns:
        The path to read; a path elsewhere, or inline YAML, as given (the CLI's parser reads or names it).

    Raises:
        ValueError: A bare name (no folder, no YAML) that is neither a file nor a preset, naming the presets.
    """
    if Path(value).exists():
        return value
    name = Path(value).name.removesuffix(".yaml")
    if Path(value).name != value and not value.startswith("configs/"):
        return value  # a path elsewhere that does not exist
    path = presets().get(name)
    if path is not None:
        return str(path)
    if any(character in value for character in ":{}[]\n ") or value.endswith((".yaml", ".yml", ".json")):
        return value  # inline YAML, or a missing file the parser names
    raise ValueError(
        f"--config {value!r} is neither a file nor a packaged preset; the presets: {', '.join(presets())}"
    )


def resolve_config_arguments(arguments: Sequence[str]) -> list[str]:
    """Command-line arguments with the value of every `--config`/`-c` resolved by `resolve_config`."""
    resolved, pending = [], False
    for argument in arguments:
        if pending:
            resolved.append(resolve_config(argument))
            pending = False
        elif argument in ("--config", "-c"):
            resolved.append(argument)
            pending = True
        elif argument.startswith("--config="):
            resolved.append("--config=" + resolve_config(argument.removeprefix("--config=")))
        else:
            resolved.append(argument)
    return resolved
