"""How the `lightning-matting` command reports a failure: one paragraph and an exit status, no traceback."""

from __future__ import annotations

import re
import sys
import traceback
from argparse import ArgumentError
from collections.abc import Callable

from lightning.fabric.utilities.exceptions import MisconfigurationException

DEBUG_FLAG = "--debug"
DEBUG_ENV = "LIGHTNING_MATTING_DEBUG"
BAD_SETTINGS, FAILED_RUN = 2, 1  # exit statuses
HINT = f"(add {DEBUG_FLAG}, or set {DEBUG_ENV}=1, to see the traceback)"

# Exceptions whose message says it all; any other kind is named before its message (a crash).
_SELF_EXPLAINING = (ValueError, TypeError, OSError, ArgumentError, MisconfigurationException)
_PARSER_MODULES = ("jsonargparse", "argparse")
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')


class SettingsError(ValueError):
    """A setting of the config or the command line refused by a class's __init__; its message is `reason`'s."""


def run_reporting_errors(command: Callable[[], None], debug: bool) -> int:
    """Run `command`; report a failure as `error: <reason>` on stderr.

    Args:
        command: The work of the command line.
        debug: Also print the traceback.

    Returns:
        The exit status: 0 done, 2 bad settings (`SettingsError`, a parse error), 1 any other failure.
        A `SystemExit` (help, Ctrl-C and SIGTERM after their finalize) passes through unchanged.
    """
    try:
        command()
    except (KeyboardInterrupt, Exception) as error:
        if debug:
            traceback.print_exception(error)
        print(f"error: {reason(error)}", file=sys.stderr)
        if not debug:
            print(HINT, file=sys.stderr)
        return BAD_SETTINGS if isinstance(error, SettingsError | ArgumentError) else FAILED_RUN
    return 0


def reason(error: BaseException) -> str:
    """The message a person needs from `error`: the first exception of its chain (`raise ... from`) raised
    outside the argument parser (a class's validator: jsonargparse wraps it in the errors of every Union
    alternative it tried), else the parser's innermost, prefixed with the keys the parser names."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C) before the run started"
    chain = [error]
    while (cause := _cause(chain[-1])) is not None and cause not in chain:
        chain.append(cause)
    found = next((e for e in chain if not _raised_by_parser(e)), None)
    if found is not None:
        message = " ".join(str(found).split()) or type(found).__name__
        return message if isinstance(found, _SELF_EXPLAINING) else f"{type(found).__name__}: {message}"
    keys = dict.fromkeys(match.group(1) for e in chain if (match := _PARSER_KEY.match(str(e))))
    message = " ".join(str(chain[-1]).split())
    return f"{'.'.join(keys)}: {message}" if keys else message


def _cause(error: BaseException) -> BaseException | None:
    if error.__cause__ is not None:
        return error.__cause__
    return None if error.__suppress_context__ else error.__context__


def _raised_by_parser(error: BaseException) -> bool:
    """Whether the innermost frame of `error`'s traceback is jsonargparse's or argparse's."""
    frames = list(traceback.walk_tb(error.__traceback__))
    module = frames[-1][0].f_globals.get("__name__", "") if frames else ""
    return module.split(".")[0] in _PARSER_MODULES
