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


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """`value` as a float if it is an int or a float (not a bool) within the bounds (None: unbounded).

    Args:
        name: The setting's name in the message.
        value: The value given.
        low: The lower bound; `low_open`: excluded.
        high: The upper bound; `high_open`: excluded.

    Raises:
        TypeError: Not an int or a float, or a bool.
        ValueError: Outside the bounds (or NaN).
    """
    if low is not None and high is not None:
        expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        expected = f"a number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        expected = f"a number {'<' if high_open else '<='} {high:g}"
    else:
        expected = "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(invalid(name, value, expected))
    above = low is None or (value > low if low_open else value >= low)
    below = high is None or (value < high if high_open else value <= high)
    if not (above and below) or value != value:  # value != value: NaN
        raise ValueError(invalid(name, value, expected))
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """`value` if it is a bool.

    Raises:
        TypeError: Not a bool.
    """
    if not isinstance(value, bool):
        raise TypeError(invalid(name, value, "true or false"))
    return value


def check_size(name: str, value: Any) -> tuple[int, int]:
    """`value` as (width, height) if it is a pair of ints >= 1 (pixels).

    Raises:
        TypeError: Not a list or tuple of two ints.
        ValueError: A side below 1.
    """
    expected = "(width, height): two ints >= 1"
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(invalid(name, value, expected))
    if min(value) < 1:
        raise ValueError(invalid(name, value, expected))
    return int(value[0]), int(value[1])


def check_type(name: str, value: Any, kind: type[T]) -> T:
    """`value` if it is a `kind`.

    Raises:
        TypeError: Not a `kind`.
    """
    if not isinstance(value, kind):
        raise TypeError(invalid(name, value, f"a {kind.__name__}"))
    return value
