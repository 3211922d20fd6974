"""The check that tells a full disk, a quota or a file size limit from a written file (finished files that
survive a power cut: `lightning_matting.durable`)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

# A disk with less than this free counts as full: FFmpeg drops what it cannot write without telling OpenCV.
FULL_DISK_BYTES = 1 << 20


class StorageError(OSError):
    """An output lost bytes to a full disk, a quota or the process's file size limit (`ulimit -f`)."""


def _size_text(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size} bytes"


def _file_size_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on Unix: no such limit
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if limit == resource.RLIM_INFINITY else limit


def storage_error(path: str | Path, cause: OSError | None = None) -> StorageError | None:
    """Why `path` (a file being written, or just written) may have lost bytes, or None if nothing says so.

    Args:
        path: The file.
        cause: The error a write raised, if any: ENOSPC, EDQUOT or EFBIG make a StorageError; others None.

    Returns:
        A StorageError naming `path`, the free space on its disk and the file size limit that it reached,
        when `cause` is a storage error, `path` is as large as the file size limit, or the disk has under
        FULL_DISK_BYTES free; None otherwise.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    free = shutil.disk_usage(folder).free if folder.exists() else None
    free_text = "unknown" if free is None else _size_text(free)
    limit = _file_size_limit()
    size = path.stat().st_size if path.is_file() else 0
    if (cause is not None and cause.errno == errno.EFBIG) or (limit is not None and size >= limit):
        return StorageError(
            errno.EFBIG,
            f"writing {path} failed: it reached the file size limit of {limit or size} bytes "
            f"(ulimit -f; {free_text} free on its disk)",
        )
    if cause is not None and cause.errno == errno.EDQUOT:
        return StorageError(
            errno.EDQUOT, f"writing {path} failed: the disk quota is exceeded ({free_text} free)"
        )
    if (cause is not None and cause.errno == errno.ENOSPC) or (free is not None and free < FULL_DISK_BYTES):
        return StorageError(errno.ENOSPC, f"writing {path} failed: its disk is full ({free_text} free)")
    return None


def check_storage(path: str | Path, cause: OSError | None = None) -> None:
    """Raise `storage_error(path, cause)` if there is one (see there)."""
    error = storage_error(path, cause)
    if error is not None:
        raise error from cause
