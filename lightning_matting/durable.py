"""Finished files that survive a power cut: synced, with the folder entry that names them (no cv2, no torch,
so that any module can use it)."""

from __future__ import annotations

import os
from pathlib import Path


def sync_file(path: str | Path) -> None:
    """fsync the file's content to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_folder(path: str | Path) -> None:
    """fsync a folder, so that files created or renamed in it are on the disk under their names."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_durably(source: str | Path, target: str | Path) -> None:
    """Rename a finished file over `target` so that after a power cut `target` holds either the old or the
    new content, whole: the content is synced before the rename, the folder after it."""
    sync_file(source)
    os.replace(source, target)
    sync_folder(Path(target).parent)
