"""Background encoding: a bounded queue drained by worker threads, errors handed back to the caller."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from lightning_matting.validators import check_int

from .durable import StorageError

_STOP = object()


class EncoderError(RuntimeError):
    """An encoder thread failed; raised in the caller on the next `put` or on `close`."""


class BackgroundWorkers:
    """Run `work(item)` for every queued item on `threads` daemon threads.

    `put` blocks while `max_queued` items wait (back-pressure keeps memory flat). With one thread,
    items are processed in order. The first error in a worker is re-raised, as `EncoderError` (a
    `StorageError` as itself), by the next `put` or by `close`; items queued after it are dropped.
    """

    def __init__(self, work: Callable[[Any], None], name: str, threads: int = 1, max_queued: int = 4):
        check_int("threads", threads, minimum=1)
        check_int("max_queued", max_queued, minimum=1)
        self._work: Callable[[Any], None] | None = work
        self._name = name
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self._error: BaseException | None = None
        self._error_raised = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue
            try:
                self._work(item)
            except BaseException as error:  # noqa: BLE001 - handed to the caller, never lost
                self._error = error

    def raise_error(self) -> None:
        """Raise the first worker error once (later calls stay silent)."""
        if self._error is not None and not self._error_raised:
            self._error_raised = True
            if isinstance(self._error, StorageError):  # names the file and the space: clear as it is
                raise self._error
            raise EncoderError(f"{self._name}: encoding failed: {self._error!r}") from self._error

    def put(self, item: Any) -> None:
        """Queue an item, waiting while the queue is full; raise a pending worker error first."""
        self.raise_error()
        self._queue.put(item)

    def close(self) -> None:
        """Finish every queued item, stop the threads, and raise a worker error not yet raised."""
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join()
        self._work = (
            None  # its owner (a writer, whose encoder holds native memory) is freed without a GC pass
        )
        self.raise_error()
