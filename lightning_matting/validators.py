"""Checks of settings given by users, with one message pattern: `invalid <name> (<value!r>): expected <form>`.

A value of the wrong type raises TypeError, a value of the right type out of its allowed values ValueError.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar

T = TypeVar("T")


def invalid(name: str, value: Any, expected: str) -> str:
    """The message for a bad `value` of the setting `name`: `invalid <name> (<value!r>): expected <form>`."""
    return f"invalid {name} ({value!r}): expected {expected}"


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """`value` if it is an int (not a bool) >= `minimum` (None: any int).

    Raises:
        TypeError: Not an int, or a bool.
        ValueError: Below `minimum`.
    """
    expected = "an int" if minimum is None else f"an int >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(invalid(name, value, expected))
    if minimum is not None and value < minimum:
        raise ValueError(invalid(name, value, expected))
    return value


def check_choice(name: str, value: T, choices: Collection[T]) -> T:
    """`value` if it is one of `choices`.

    Raises:
        ValueError: Not one of `choices`.
    """
    if value not in choices:
        raise ValueError(invalid(name, value, f"one of {', '.join(map(repr, choices))}"))
    return value
