"""One run per output folder: an exclusive OS lock on `<folder>/.matting-run.lock` (Lightning-free).

The lock is `fcntl.flock` on the lock file: the kernel releases it when its process ends in any way (SIGKILL,
a crash, a lost node), so a lock file left behind by a dead run is no obstacle; the next run takes it. While
held, the file names the holder: its host, process id and start time, for the refusal of a second run.

Where flock does not reach across machines (NFS mounted with `nolock` or an old NFS server, some FUSE and
SMB mounts, which lock only locally), the lock still excludes two runs on one machine, but not runs on two
hosts writing one folder over such a mount. Windows has no flock: there the lock does nothing.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path
from typing import TextIO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = ".matting-run.lock"


class FolderInUseError(RuntimeError):
    """Another live process holds the output folder's lock."""


class FolderLock:
    """The exclusive lock of one output folder, taken at once or refused (never waited for).

    Args:
        folder: The output folder (made if missing).
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._file: TextIO | None = None

    @property
    def held(self) -> bool:
        """This object holds the lock."""
        return self._file is not None

    def acquire(self) -> None:
        """Take the lock and write this process's host, PID and start time into the lock file.

        Raises:
            FolderInUseError: Another process holds it; the message names the folder, the holder and what to do.
        """
        if self.held or fcntl is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            file = open(self.path, "a+")  # noqa: SIM115 - held open while the lock is held
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                raise FolderInUseError(self._refusal()) from None
            if _same_file(file, self.path):  # not a file a releasing holder unlinked meanwhile
                break
            file.close()
        file.truncate(0)
        file.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": _now()}))
        file.flush()
        self._file = file

    def release(self) -> None:
        """Remove the lock file and release the lock (nothing when not held)."""
        if self._file is None:
            return
        self.path.unlink(missing_ok=True)  # while still held: no other run has it open as the lock
        self._file.close()
        self._file = None

    def _refusal(self) -> str:
        try:
            holder = json.loads(self.path.read_text())
            who = f"process {holder['pid']} on host {holder['host']} (since {holder['since']})"
        except (OSError, ValueError, KeyError, TypeError):  # taken this instant, not written yet
            who = "another process"
        return (
            f"VideoWriterCallback: output_dir {str(self.folder)!r} is in use by another run: {who} holds its "
            f"lock {self.path}. Two runs on one folder would overwrite each other's files, so this run "
            "changed nothing there: wait for that run to finish, or choose another output_dir"
        )


def _same_file(file: TextIO, path: Path) -> bool:
    try:
        opened, named = os.fstat(file.fileno()), path.stat()
        return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)
    except FileNotFoundError:
        return False


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
