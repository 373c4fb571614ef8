"""Checks for the numbers users pass in: durations and counts, over their whole range.

Every public option that takes seconds or a count goes through one of these, so a bad number
(a bool, a string, ``nan``, ``inf``, a negative, an int too large to become a float) is refused
with a `TypeError` or `ValueError` naming the option when the value is built, never found later
as an `OverflowError` in the middle of a run.
"""

from __future__ import annotations

import math

__all__ = ["check_count", "check_number", "check_seconds"]


def check_number(value: object, *, what: str) -> float:
    """`value` as a finite float.

    Raises:
        TypeError: `value` is not an int or a float (a bool is not a number).
        ValueError: `value` is ``nan``, infinite, or an int too large to be a float.

    >>> check_number(3, what="backoff")
    3.0
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{what} must be finite, got an int too large to be a float") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number


def check_seconds(value: object, *, what: str, allow_zero: bool = False) -> float:
    """`value` as a float number of seconds: positive (or zero, with `allow_zero`) and finite.

    Args:
        value: what the user passed.
        what: the option, as the error message names it (``"step 'charge': timeout"``).
        allow_zero: whether ``0`` is a valid value.

    Raises:
        TypeError: `value` is not an int or a float (a bool is not a number of seconds).
        ValueError: `value` is negative, zero (unless allowed), ``nan``, infinite, or an int too
            large to be a float.

    >>> check_seconds(2, what="timeout")
    2.0
    >>> check_seconds(10**400, what="delay")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: delay must be a positive, finite number of seconds, got an int too large ...
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    wanted = "non-negative" if allow_zero else "positive"
    try:
        seconds = float(value)
    except OverflowError:
        raise ValueError(
            f"{what} must be a {wanted}, finite number of seconds, got an int too large to be "
            "a float"
        ) from None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{what} must be a {wanted}, finite number of seconds, got {value!r}")
    return seconds


def check_count(value: object, *, what: str, minimum: int) -> int:
    """`value` as an int of at least `minimum`.

    Raises:
        TypeError: `value` is not an int (a bool is not a count).
        ValueError: `value` is below `minimum`.

    >>> check_count(3, what="attempts", minimum=1)
    3
    >>> check_count(True, what="attempts", minimum=1)
    Traceback (most recent call last):
    ...
    TypeError: attempts must be an int, got True
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value}")
    return value
