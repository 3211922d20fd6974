"""Checks of settings given by users, with one message pattern: `invalid <name> (<value!r>): expected <form>`.

A value of the wrong type raises TypeError, a value of the right type out of its allowed values ValueError.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Sequence
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
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
) -> float:
    """`value` as a float if it is a real number (not a bool, not NaN) within the given bounds.

    Args:
        name: The setting's name, as the user typed it.
        value: The given value.
        minimum: The smallest allowed value (inclusive); None: no such bound.
        maximum: The largest allowed value (inclusive); None: no such bound.
        above: A bound the value must exceed (exclusive, instead of `minimum`); None: no such bound.
        below: A bound the value must stay under (exclusive, instead of `maximum`); None: no such bound.

    Returns:
        `value` as a float (infinity passes where no bound stops it).

    Raises:
        TypeError: Not a real number, or a bool.
        ValueError: NaN, or outside the bounds.
    """
    expected = "a number" + _bounds(minimum, maximum, above, below)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(invalid(name, value, expected))
    if (
        math.isnan(value)
        or (minimum is not None and value < minimum)
        or (above is not None and value <= above)
        or (maximum is not None and value > maximum)
        or (below is not None and value >= below)
    ):
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


def _bounds(minimum: float | None, maximum: float | None, above: float | None, below: float | None) -> str:
    """The bounds of `check_number` in words: " >= 0", " > 0", " in [0, 1)", ... ("" for none)."""
    low = ("[", minimum) if above is None else ("(", above)
    high = ("]", maximum) if below is None else (")", below)
    if low[1] is not None and high[1] is not None:
        return f" in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low[1] is not None:
        return f" {'>=' if above is None else '>'} {low[1]:g}"
    if high[1] is not None:
        return f" {'<=' if below is None else '<'} {high[1]:g}"
    return ""


def check_size(name: str, value: Any) -> tuple[int, int]:
    """`value` as `(width, height)` in pixels if it is a sequence (not a string) of two ints >= 1.

    Raises:
        TypeError: Not a sequence of two ints (bools refused), or a string.
        ValueError: A side below 1.
    """
    expected = "(width, height), two ints >= 1"
    if (
        isinstance(value, str | bytes)
        or not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(side, int) and not isinstance(side, bool) for side in value)
    ):
        raise TypeError(invalid(name, value, expected))
    if min(value) < 1:
        raise ValueError(invalid(name, value, expected))
    return value[0], value[1]


def check_type(name: str, value: Any, kind: type[T]) -> T:
    """`value` if it is a `kind`.

    Raises:
        TypeError: Not a `kind`.
    """
    if not isinstance(value, kind):
        raise TypeError(invalid(name, value, f"a {kind.__name__}"))
    return value
