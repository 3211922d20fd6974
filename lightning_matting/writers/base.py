"""The writer contract shared by every backend: validate, convert on device, queue, encode in background."""

from __future__ import annotations

import atexit
import warnings
import weakref
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from lightning_matting.validators import check_int

from .frames import HostFrames, Samples, check_frames, to_host, to_hwc
from .threaded import BackgroundWorkers

_OPEN_WRITERS: weakref.WeakSet[FrameWriter] = weakref.WeakSet()


@atexit.register
def _close_open_writers() -> None:
    """A script that ends without closing its writers still leaves finalized files."""
    for writer in list(_OPEN_WRITERS):
        try:
            writer.close()
        except Exception as error:  # noqa: BLE001 - nothing left to raise to at exit
            warnings.warn(f"closing {writer.path} at exit failed: {error!r}", stacklevel=1)


def check_size(width: object, height: object) -> tuple[int, int]:
    """Validate a frame size: ints (W, H) >= 1 in pixels (TypeError or ValueError naming width or height)."""
    return check_int("width", width, minimum=1), check_int("height", height, minimum=1)


class FrameWriter(ABC):
    """Writes batches [B,C,H,W] (RGB(A), float in [0,1] or uint8, any device) to `path`.

    `add_batch` returns once the batch is converted on its device and queued; encoding runs on
    background threads with a bounded queue. `close()` finalizes (idempotent); the writer is a context
    manager, and an exception inside the `with` block still leaves a finalized file.
    """

    channels: tuple[int, ...] = (1, 3)
    channel_order = "bgr"
    samples: Samples = "uint8"  # what `_write` receives; deeper writers set it before `__init__` runs

    def __init__(
        self,
        path: str | Path,
        width: int | None,
        height: int | None,
        *,
        threads: int = 1,
        queue_size: int = 4,
    ):
        """`width`/`height` None (image sequences only) takes the size of the first batch."""
        self.path = Path(path)
        self.width, self.height = (
            (None, None) if width is None and height is None else check_size(width, height)
        )
        self.frames_added = 0
        self._closed = False
        self._open()
        self._workers = BackgroundWorkers(
            self._write_item,
            name=f"{type(self).__name__}({self.path})",
            threads=threads,
            max_queued=queue_size,
        )
        _OPEN_WRITERS.add(self)

    @abstractmethod
    def _open(self) -> None:
        """Open the output (raising a clear error naming the path) before any frame is accepted."""

    @abstractmethod
    def _write(self, first_index: int, frames: np.ndarray) -> None:
        """Encode frames [B,H,W,C] of `samples` (backend channel order) on a worker thread."""

    @abstractmethod
    def _finalize(self) -> None:
        """Finish the output so that it is complete and playable."""

    def _write_item(self, item: tuple[int, HostFrames | torch.Tensor]) -> None:
        first_index, frames = item
        if isinstance(frames, torch.Tensor):  # a handed-over CPU batch, converted here
            frames = to_hwc(frames, self.channel_order, self.samples)
        self._write(first_index, frames.numpy())

    def add_batch(self, frames: torch.Tensor, hand_over: bool = False) -> None:
        """Queue a batch [B,C,H,W]; raises ValueError for a wrong shape, size or dtype.

        `hand_over`: the caller will not modify `frames` afterwards, so a CPU batch is converted on the
        encoder thread rather than the caller's (a GPU batch is always converted on the GPU, now)."""
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} for {self.path} is closed")
        if self.width is None:
            *_, self.height, self.width = check_frames(frames, None, None, self.channels).shape
        check_frames(frames, self.width, self.height, self.channels)
        if frames.shape[0] == 0:
            return
        if hand_over and frames.device.type == "cpu":
            self._workers.put((self.frames_added, frames.detach()))
        else:
            self._workers.put(
                (self.frames_added, to_host(to_hwc(frames.detach(), self.channel_order, self.samples)))
            )
        self.frames_added += frames.shape[0]

    def close(self) -> None:
        """Encode every queued frame and finalize the file; raise an encoder error not yet raised."""
        if self._closed:
            return
        self._closed = True
        _OPEN_WRITERS.discard(self)
        try:
            self._workers.close()
        finally:
            self._finalize()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as error:  # noqa: BLE001 - keep the original exception, but say what else failed
            warnings.warn(
                f"closing {self.path} after {exc_type.__name__} also failed: {error!r}", stacklevel=2
            )
