"""What a run returns: `Success`, `Failure` or `PartialFailure`, a closed union.

- `Success(value)`: every step completed; nothing was compensated.
- `Failure(error, compensated)`: a step failed and every completed step was undone; the world is as
  it was before the run (as far as the compensations can make it so).
- `PartialFailure(...)`: a step failed and the undo is incomplete; the report says exactly what is
  left inconsistent: which compensations failed (with their errors and attempts), which were
  skipped, and which steps have an unknown outcome nobody resolved.

`returns` exports `Success` and `Failure` too; where both meet, write ``import fsaga`` and
``fsaga.Success``, or alias one side.

>>> from fsaga import Failure, Success, pure
>>> from fsaga.interpreter import SyncInterpreter
>>> outcome = pure(41).map(lambda n: n + 1).run(SyncInterpreter())
>>> match outcome:
...     case Success(value):
...         print("done:", value)
...     case Failure(error) | PartialFailure(error):
...         print("failed:", error)
done: 42
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Never, NoReturn, TypeAlias, TypeVar, final

if TYPE_CHECKING:
    # Imported where used at run time: only code that asks for a `returns` result loads it.
    from returns import result as _result

__all__ = [
    "CompensationFailure",
    "Failure",
    "Outcome",
    "PartialFailure",
    "SagaFailed",
    "Success",
]

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)
_R = TypeVar("_R")


@final
@dataclass(frozen=True, slots=True)
class CompensationFailure:
    """A compensation that still failed after all its attempts."""

    path: str
    error: BaseException
    attempts: int


@final
@dataclass(frozen=True, slots=True)
class Success(Generic[_T_co]):
    """Every step completed; `value` is the saga's result."""

    value: _T_co

    def when(
        self,
        *,
        success: Callable[[_T_co], _R],
        failure: Callable[[Failure], _R],
        partial_failure: Callable[[PartialFailure], _R],
    ) -> _R:
        """Apply the function that matches this outcome.

        >>> Success(2).when(success=lambda n: n * 10, failure=str, partial_failure=str)
        20
        """
        return success(self.value)

    def unwrap(self) -> _T_co:
        """The value (a failed outcome raises `SagaFailed` instead)."""
        return self.value

    def to_result(self) -> _result.Result[_T_co, Failure | PartialFailure]:
        """This outcome as a `returns` result, for pipelines built on `returns`.

        >>> Success(3).to_result()
        <Success: 3>
        """
        from returns import result as _result

        return _result.Success(self.value)


@final
@dataclass(frozen=True, slots=True)
class Failure:
    """A step failed; every completed step was compensated, in reverse order.

    Attributes:
        error: why the saga failed (the failing step's last error).
        compensated: the paths of the compensated steps, in the order they were undone.
    """

    error: BaseException
    compensated: tuple[str, ...] = ()

    def when(
        self,
        *,
        success: Callable[[Never], _R],
        failure: Callable[[Failure], _R],
        partial_failure: Callable[[PartialFailure], _R],
    ) -> _R:
        """Apply the function that matches this outcome."""
        return failure(self)

    def unwrap(self) -> NoReturn:
        """Raise `SagaFailed`, chained to `error`."""
        raise SagaFailed(self) from self.error

    def to_result(self) -> _result.Result[Never, Failure | PartialFailure]:
        """This outcome as a `returns` failure carrying the outcome itself."""
        from returns import result as _result

        return _result.Failure(self)


@final
@dataclass(frozen=True, slots=True)
class PartialFailure:
    """A step failed and the undo is incomplete: the report names what is left inconsistent.

    Attributes:
        error: why the saga failed (the failing step's last error).
        compensated: paths of the compensations that succeeded, in the order they ran.
        failed_compensations: each compensation that failed after all its attempts.
        skipped: paths whose compensation never ran because a stop policy ended the undo.
        unresolved: paths of steps whose outcome is unknown (interrupted mid-flight) and that
            nothing resolved: they may or may not have taken effect.
    """

    error: BaseException
    compensated: tuple[str, ...] = ()
    failed_compensations: tuple[CompensationFailure, ...] = ()
    skipped: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = ()

    def when(
        self,
        *,
        success: Callable[[Never], _R],
        failure: Callable[[Failure], _R],
        partial_failure: Callable[[PartialFailure], _R],
    ) -> _R:
        """Apply the function that matches this outcome."""
        return partial_failure(self)

    def unwrap(self) -> NoReturn:
        """Raise `SagaFailed`, chained to `error`."""
        raise SagaFailed(self) from self.error

    def to_result(self) -> _result.Result[Never, Failure | PartialFailure]:
        """This outcome as a `returns` failure carrying the outcome itself."""
        from returns import result as _result

        return _result.Failure(self)


Outcome: TypeAlias = Success[_T] | Failure | PartialFailure
"""The closed union a run returns; `match` over it is checked for exhaustiveness by mypy."""


class SagaFailed(Exception):
    """Raised by `unwrap()` on a failed outcome; `outcome` holds the whole report."""

    def __init__(self, outcome: Failure | PartialFailure) -> None:
        super().__init__(describe_failure(outcome))
        self.outcome = outcome


def describe_failure(outcome: Failure | PartialFailure) -> str:
    """One line saying why the saga failed and how far the undo got."""
    reason = f"saga failed: {outcome.error!r}"
    undone = ", ".join(outcome.compensated) or "nothing"
    if isinstance(outcome, Failure):
        return f"{reason}; compensated: {undone}"
    parts = [f"{reason}; compensated: {undone}"]
    if outcome.failed_compensations:
        failed = ", ".join(
            f"{failure.path} ({failure.error!r} after {failure.attempts} attempt(s))"
            for failure in outcome.failed_compensations
        )
        parts.append(f"compensation failed: {failed}")
    if outcome.skipped:
        parts.append(f"skipped: {', '.join(outcome.skipped)}")
    if outcome.unresolved:
        parts.append(f"unknown outcome, unresolved: {', '.join(outcome.unresolved)}")
    return "; ".join(parts)
