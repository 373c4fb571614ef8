"""How the pictures put durations, names and values into words."""

from __future__ import annotations

import reprlib
from functools import partial

__all__ = ["name_of", "seconds", "short"]

_short_repr = reprlib.Repr()
_short_repr.maxstring = 40
_short_repr.maxother = 60
_short_repr.maxlevel = 2
_short_repr.maxdict = 4
_short_repr.maxlist = 4
_short_repr.maxtuple = 4


def seconds(value: float) -> str:
    """A duration as a picture shows it.

    >>> seconds(2.0), seconds(0.25), seconds(0.0015), seconds(0.0)
    ('2s', '0.25s', '1.5ms', '0s')
    """
    if value >= 1 or value == 0:
        return f"{value:g}s"
    if value >= 0.01 or value < 0:
        return f"{value:.3g}s"
    return f"{value * 1000:.3g}ms"


def name_of(function: object) -> str:
    """A function's name: ``__name__`` through `functools.partial`, ``lambda`` for a lambda,
    the class name for another callable.

    >>> name_of(lambda: 1), name_of(partial(print, 1)), name_of(len)
    ('lambda', 'print', 'len')
    """
    while isinstance(function, partial):
        function = function.func
    name = getattr(function, "__name__", None)
    if not isinstance(name, str):
        name = type(function).__name__
    return "lambda" if name == "<lambda>" else name


def short(value: object) -> str:
    """A value in a few characters; an error in full (its message is what a reader needs)."""
    if isinstance(value, BaseException):
        return repr(value)
    return _short_repr.repr(value)
