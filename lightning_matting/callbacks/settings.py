"""Named validators of VideoWriterCallback's settings: each raises a ValueError (a TypeError for a wrong type)
naming the setting."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from lightning_matting.validators import check_int


def check_writable_names(outputs: object) -> tuple[str, ...]:
    """The outputs a writer writes, any module's: a non-empty list of names usable as file names, without
    duplicates, in order (MattingModule's own names: `lightning_matting.outputs.check_output_names`)."""
    names = [outputs] if isinstance(outputs, str) else outputs
    if (
        not isinstance(names, Sequence)
        or not names
        or not all(isinstance(name, str) and name and "/" not in name and name[0] != "." for name in names)
    ):
        raise ValueError(
            f"outputs must be a non-empty list of names (keys of the step's output, such as com, pha, fgr), "
            f"got {outputs!r}"
        )
    return tuple(dict.fromkeys(names))


def check_count(name: str, value: object, minimum: int = 0) -> int:
    """A count of `name`: an int >= `minimum` (see `lightning_matting.validators.check_int`)."""
    return check_int(name, value, minimum)


def check_compare_keys(keys: object) -> tuple[str | int, str | int] | None:
    """(input, ground truth) keys of the batch, or None for the defaults."""
    if keys is None:
        return None
    if (
        not isinstance(keys, Sequence)
        or len(keys) != 2
        or not all(isinstance(key, str | int) for key in keys)
    ):
        raise ValueError(
            f"compare_keys must be (input key, ground-truth key) of the batch, names or positions, got {keys!r}"
        )
    return tuple(keys)


def check_output_dir(output_dir: Path) -> None:
    """The output folder exists or can be made, and takes files; else an error naming output_dir."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise ValueError(
            f"VideoWriterCallback: output_dir {str(output_dir)!r} cannot hold the outputs ({error.strerror or error}); "
            "give a writable folder"
        ) from error
