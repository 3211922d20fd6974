"""Lightning's set-up lines (seed, devices, tips) and warnings, held until the run starts: a run refused before
it starts shows only its error."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from lightning.pytorch import Callback

_LOGGERS = ("lightning.pytorch", "lightning.fabric")  # the loggers with Lightning's console handlers


class HeldConsole:
    """Keeps the lines of Lightning's console handlers and the warnings shown while holding, in their order."""

    def __init__(self) -> None:
        self._held: list[Callable[[], object]] = []  # each shows one held line
        self._filters: list[tuple[logging.Handler, _Hold]] = []
        self._showwarning = warnings.showwarning
        self._holding = False

    def hold(self) -> None:
        self._holding = True
        for handler in (handler for name in _LOGGERS for handler in logging.getLogger(name).handlers):
            self._filters.append((handler, _Hold(handler, self._held)))
            handler.addFilter(self._filters[-1][1])
        self._showwarning = warnings.showwarning
        warnings.showwarning = lambda *warning: self._held.append(partial(self._showwarning, *warning))

    def release(self, show: bool = True) -> None:
        """Stop holding; `show`: print what was held (else drop it). Does nothing when not holding."""
        if not self._holding:
            return
        self._holding = False
        for handler, hold in self._filters:
            handler.removeFilter(hold)
        self._filters = []
        warnings.showwarning = self._showwarning
        held, self._held = self._held, []
        for show_line in held if show else ():
            show_line()


class _Hold(logging.Filter):
    """Holds every record `handler` would print."""

    def __init__(self, handler: logging.Handler, held: list[Callable[[], object]]) -> None:
        super().__init__()
        self.handler, self.held = handler, held

    def filter(self, record: logging.LogRecord) -> bool:
        self.held.append(partial(self.handler.handle, record))
        return False


@contextmanager
def held_console(hold: bool) -> Iterator[HeldConsole]:
    """Hold Lightning's console lines and warnings (if `hold`) until `release`; dropped on an exception,
    shown on any other exit (a help text, Ctrl-C during set-up, a finished run)."""
    console = HeldConsole()
    if hold:
        console.hold()
    try:
        yield console
    except Exception:
        console.release(show=False)
        raise
    finally:
        console.release()


class ReleaseAtRunStart(Callback):
    """Shows what `console` held once the run starts (after every set-up check of the data and callbacks)."""

    def __init__(self, console: HeldConsole) -> None:
        self.console = console

    def _release(self, *_: Any) -> None:
        self.console.release()

    on_fit_start = on_validation_start = on_test_start = on_predict_start = _release
