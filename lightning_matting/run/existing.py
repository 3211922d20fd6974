"""Outputs left in the output folder by a run that has ended: refused, or replaced with `overwrite`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lightning_matting.run.manifest import MANIFEST

_SHOWN = 4  # existing paths named in the refusal


def refuse_existing(paths: Iterable[Path], overwrite: bool) -> list[Path]:
    """The `paths` that exist (to be replaced by the caller); a FileExistsError naming them unless `overwrite`.

    Called with the output folder's lock held: what exists was left by a run that has ended, so replacing it
    is safe.

    Args:
        paths: Output files and folders (chunk folders, manifests) that this run writes.
        overwrite: Replace what exists instead of refusing it.

    Returns:
        Those of `paths` that exist, in order.

    Raises:
        FileExistsError: Some exist and not `overwrite`, naming the first few, and `resume=True` where a manifest
            of an interrupted run is among them.
    """
    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        shown = ", ".join(str(path) for path in existing[:_SHOWN]) + (
            " ..." if len(existing) > _SHOWN else ""
        )
        interrupted = any(path.name == MANIFEST for path in existing)
        raise FileExistsError(
            f"VideoWriterCallback: {len(existing)} output(s) exist already ({shown}), left by a run that has "
            "ended (no other run holds output_dir's lock); choose another output_dir"
            + (", pass resume=True to continue the interrupted run," if interrupted else "")
            + " or pass overwrite=True to replace them"
        )
    return existing
