"""Steps whose effects are Temporal activities: ``activity(reserve, sku, 3)``.

An `Activity` is a module-level function with the arguments it is called with. It is a plain
callable (a `functools.partial`), so a saga made of them runs under every fsaga interpreter as
it is: `SyncInterpreter` in a unit test calls ``reserve(sku, 3)``. On Temporal, the workflow
fsaga runs (`fsaga.temporal.worker`) sees the same value and schedules an activity execution
of ``reserve`` with those arguments instead, on a worker that registered the function.

As a compensation, an activity gets the action's result after its own arguments:
``activity(release)`` undoes a step by calling ``release(reservation)``; as an ``on_unknown``
compensation, the step's `fsaga.StepContext`.

>>> from fsaga import step
>>> from fsaga.interpreter import SyncInterpreter
>>> def reserve(sku: str, count: int) -> str:
...     return f"R-{sku}-{count}"
>>> def release(reservation: str) -> None:
...     print("released", reservation)
>>> saga = step(activity(reserve, "book", 2), activity(release))
>>> saga.run(SyncInterpreter())
Success(value='R-book-2')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from types import FunctionType
from typing import TypeVar, final

from fsaga._signatures import function_name

__all__ = ["Activity", "activity", "activity_functions"]

_R = TypeVar("_R")


@final
class Activity(partial[_R]):
    """A step's effect that runs as a Temporal activity: a module-level function and the
    positional arguments it is called with (those a step adds come after them).

    Make one with `activity`. Anywhere else it is the plain call it stands for.
    """

    __slots__ = ()

    @property
    def activity_name(self) -> str:
        """The activity type Temporal schedules: the function's name."""
        return str(self.func.__name__)


def activity(function: Callable[..., _R], /, *args: object) -> Activity[_R]:
    """A step's action, compensation or ``on_unknown`` that runs as a Temporal activity: a call
    of `function` with `args`, then whatever the step passes (nothing for an action, the
    action's result for a compensation, the `fsaga.StepContext` for ``on_unknown``).

    `function` must be a module-level ``def`` or ``async def`` (a worker registers it by name:
    ``fsaga.temporal.worker(..., activities=[function])``), and its arguments and result must
    be values the client's Temporal data converter encodes (JSON by default: dataclasses
    included). Its parameters' and return annotations tell the converter what to decode.

    Raises:
        TypeError: `function` is a lambda, a nested function, or not a function at all.

    >>> def charge(order: str, cents: int) -> str:
    ...     return f"P-{order}"
    >>> charge_it = activity(charge, "o-1", 450)
    >>> charge_it(), charge_it.activity_name
    ('P-o-1', 'charge')
    >>> activity(lambda: 1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: activity() needs a module-level function ..., got a lambda; define it with def ...
    """
    _check_function(function, what="activity()")
    return Activity(function, *args)


def activity_functions(functions: Iterable[Callable[..., object]]) -> Mapping[str, FunctionType]:
    """The functions a worker runs as activities, by activity name; refuses what `activity`
    refuses, and two functions of one name."""
    by_name: dict[str, FunctionType] = {}
    for function in functions:
        checked = _check_function(function, what="fsaga.temporal.worker(activities=...)")
        name = checked.__name__
        known = by_name.get(name)
        if known is not None and known is not checked:
            raise ValueError(
                f"fsaga.temporal.worker(activities=...): {known.__module__}.{name} and "
                f"{checked.__module__}.{name} share the activity name {name!r}; rename one"
            )
        by_name[name] = checked
    return by_name


def _check_function(function: object, *, what: str) -> FunctionType:
    if isinstance(function, Activity):
        raise TypeError(
            f"{what} needs the function itself, got activity({function_name(function)}, ...)"
        )
    if type(function) is not FunctionType:
        raise TypeError(
            f"{what} needs a module-level function that a Temporal worker can register by "
            f"name, got {_describe(function)}; define it with def at the top of a module"
        )
    checked: FunctionType = function
    if checked.__name__ == "<lambda>":
        raise TypeError(
            f"{what} needs a module-level function that a Temporal worker can register by "
            "name, got a lambda; define it with def at the top of a module"
        )
    if "<locals>" in checked.__qualname__ or "." in checked.__qualname__:
        raise TypeError(
            f"{what} needs a module-level function that a Temporal worker can register by "
            f"name, got {checked.__qualname__}, defined inside another; move it to the top of "
            "its module"
        )
    return checked


def _describe(function: object) -> str:
    if isinstance(function, partial):
        name = function_name(function)
        return f"functools.partial({name}, ...) (pass {name} and its arguments to activity())"
    if callable(function):
        return f"{function_name(function)} ({type(function).__name__})"
    return repr(function)
