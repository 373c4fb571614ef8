"""What an effect's return value means: a plain value, or a `returns` container to unwrap."""

from __future__ import annotations

import sys
from inspect import isawaitable
from types import GeneratorType
from typing import Final

from fsaga.errors import ReturnedFailure

__all__ = ["PLAIN_TYPES", "learn_plain_type", "unwrap_result"]


PLAIN_TYPES: Final[set[type]] = {int, float, str, bytes, bool, tuple, list, dict, frozenset, set}
"""Result types known to be neither `returns` containers nor awaitables (a fast path).

It grows as results of new types are seen, but only by types whose every instance is plain:
whether a result is awaited or unwrapped never depends on which results came before."""

_PLAIN_TYPES_LIMIT: Final = 4096


def learn_plain_type(result: object) -> None:
    """Remember that results of this type need no unwrapping, up to a bounded number of types.

    `result` must be neither a `returns` container nor awaitable. Its type is remembered only
    if that holds for every instance of it: not for generators, since a plain generator is not
    awaitable but one made by a ``@types.coroutine`` function, of the same type, is.
    """
    kind = type(result)
    if kind is not GeneratorType and len(PLAIN_TYPES) < _PLAIN_TYPES_LIMIT:
        PLAIN_TYPES.add(kind)


def unwrap_result(path: str, result: object) -> tuple[object, BaseException | None]:
    """A step's result as (value, None), or (None, error) when it is a `returns` failure."""
    # No `returns` container exists until `returns.result` is imported (`returns.io` imports it
    # too), so a run that never meets one never loads `returns`.
    if "returns.result" in sys.modules:
        return _unwrap_container(path, result)
    if not isawaitable(result):
        learn_plain_type(result)
    return result, None


def _unwrap_container(path: str, result: object) -> tuple[object, BaseException | None]:
    from returns.io import IOResult
    from returns.pipeline import is_successful
    from returns.result import Result
    from returns.unsafe import unsafe_perform_io

    if not isinstance(result, Result | IOResult):
        if not isawaitable(result):
            learn_plain_type(result)
        return result, None
    if is_successful(result):
        inner = result.unwrap()
        return (unsafe_perform_io(inner) if isinstance(result, IOResult) else inner), None
    failure = result.failure()
    value = unsafe_perform_io(failure) if isinstance(result, IOResult) else failure
    return None, value if isinstance(value, BaseException) else ReturnedFailure(path, value)
