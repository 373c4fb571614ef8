"""Text renderings of a run: its events as a timeline, its outcome as a short report.

Both functions are pure: they read values and return a string; they print nothing.

>>> from fsaga import step
>>> from fsaga.testing import RecordingInterpreter
>>> recording = RecordingInterpreter(clock=iter([10.0, 10.25, 10.5, 11.0]).__next__)
>>> outcome = step(lambda: 3, name="count").run(recording, saga_id="s-1")
>>> print(render_timeline(recording.events))
  0.000s  saga s-1 started
  0.250s    count: started
  0.500s    count: completed in 0.250s -> 3
  1.000s  saga s-1 finished: Success
>>> print(describe_outcome(outcome))
Success: 3
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable

from fsaga.events import (
    CompensationCompleted,
    CompensationFailed,
    CompensationRetrying,
    CompensationStarted,
    Event,
    SagaFinished,
    SagaStarted,
    SagaStopped,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
)
from fsaga.outcome import Failure, Outcome, PartialFailure, Success
from fsaga.stores.protocol import Deleted, Versioned
from fsaga.stores.steps import change_from_receipt

__all__ = ["describe_event", "describe_outcome", "render_timeline"]

_INDENT = "  "

_short_repr = reprlib.Repr()
_short_repr.maxstring = 40
_short_repr.maxother = 100
_short_repr.maxlevel = 3
_short_repr.maxdict = 6


def _show(value: object) -> str:
    """A repr short enough for one line of a timeline; an error's in full, since its message
    is what a reader needs; a store write's receipt as what it wrote over what was there."""
    if isinstance(value, BaseException):
        return repr(value)
    if isinstance(value, dict):
        change = change_from_receipt(value)
        if change is not None:
            return f"{_state(change.after)} (was {_state(change.before)})"
    return _short_repr.repr(value)


def _state(state: Versioned[object] | Deleted | None) -> str:
    if isinstance(state, Deleted):
        return f"no value (deleted @ version {state.version})"
    if state is None:
        return "no value"
    return f"{_short_repr.repr(state.value)} @ version {state.version}"


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def _depth(event: Event) -> int:
    """Saga events sit at depth 0; a step at path ``a/b/c`` at depth 3."""
    if isinstance(event, SagaStarted | SagaFinished | SagaStopped):
        return 0
    return event.path.count("/") + 1


def _attempt(attempt: int) -> str:
    return "" if attempt == 1 else f" (attempt {attempt})"


def describe_event(event: Event) -> str:
    """One event in a few words, without its time.

    >>> from fsaga import StepFailed
    >>> describe_event(StepFailed("s-1", "payment/charge", 2, 5.0, 4.5, ValueError("declined")))
    "payment/charge: failed on attempt 2: ValueError('declined')"
    """
    match event:
        case SagaStarted(saga_id=saga_id):
            return f"saga {saga_id} started"
        case SagaFinished(saga_id=saga_id, outcome=outcome):
            return f"saga {saga_id} finished: {type(outcome).__name__}"
        case SagaStopped(saga_id=saga_id, reason=reason, error=error):
            why = "" if error is None else f": {_show(error)}"
            return f"saga {saga_id} stopped without an outcome ({reason}){why}"
        case StepStarted(path=path, attempt=attempt):
            return f"{path}: started{_attempt(attempt)}"
        case StepCompleted(path=path, at=at, started_at=started_at, result=result):
            return f"{path}: completed in {_seconds(at - started_at)} -> {_show(result)}"
        case StepRetrying(path=path, attempt=attempt, error=error, delay=delay):
            return (
                f"{path}: attempt {attempt} failed: {_show(error)}; retrying in {_seconds(delay)}"
            )
        case StepFailed(path=path, attempt=attempt, error=error, unknown=unknown):
            where = f" on attempt {attempt}" if attempt > 1 else ""
            if unknown:
                return f"{path}: cut short{where}, outcome unknown: {_show(error)}"
            return f"{path}: failed{where}: {_show(error)}"
        case CompensationStarted(path=path, attempt=attempt):
            return f"{path}: compensating{_attempt(attempt)}"
        case CompensationCompleted(path=path):
            return f"{path}: compensated"
        case CompensationRetrying(path=path, attempt=attempt, error=error, delay=delay):
            return (
                f"{path}: compensation attempt {attempt} failed: {_show(error)}; "
                f"retrying in {_seconds(delay)}"
            )
        case CompensationFailed(path=path, attempt=attempt, error=error):
            return f"{path}: compensation failed after {attempt} attempt(s): {_show(error)}"


def render_timeline(events: Iterable[Event]) -> str:
    """The events of a run as a text timeline, one line per event.

    Each line starts with the time since the first event, then the event indented by its path's
    depth (saga events flush left, ``inventory/reserve`` two levels in). An empty list renders
    as an empty string.

    >>> from fsaga import SagaStarted, StepStarted
    >>> print(render_timeline([SagaStarted("s-1", 100.0), StepStarted("s-1", "a/b", 1, 100.5)]))
      0.000s  saga s-1 started
      0.500s      a/b: started
    """
    lines: list[str] = []
    origin: float | None = None
    for event in events:
        if origin is None:
            origin = event.at
        elapsed = f"{event.at - origin:7.3f}s"
        lines.append(f"{elapsed}  {_INDENT * _depth(event)}{describe_event(event)}")
    return "\n".join(lines)


def describe_outcome(outcome: Outcome[object]) -> str:
    """An outcome in a few lines: its kind and error, then what was undone and what was not.

    >>> from fsaga import CompensationFailure, PartialFailure
    >>> print(describe_outcome(PartialFailure(
    ...     ValueError("declined"),
    ...     compensated=("orders/create",),
    ...     failed_compensations=(CompensationFailure("stock", OSError("down"), 3),),
    ... )))
    PartialFailure: ValueError('declined')
      compensated:          orders/create
      failed compensations: stock: OSError('down') after 3 attempt(s)
      skipped:              none
      unresolved:           none
    """
    match outcome:
        case Success(value=value):
            return f"Success: {_show(value)}"
        case Failure(error=error, compensated=compensated):
            return f"Failure: {_show(error)}\n  compensated: {_list(compensated)}"
        case PartialFailure(
            error=error,
            compensated=compensated,
            failed_compensations=failures,
            skipped=skipped,
            unresolved=unresolved,
        ):
            failed = _list(
                f"{failure.path}: {_show(failure.error)} after {failure.attempts} attempt(s)"
                for failure in failures
            )
            return "\n".join(
                [
                    f"PartialFailure: {_show(error)}",
                    f"  compensated:          {_list(compensated)}",
                    f"  failed compensations: {failed}",
                    f"  skipped:              {_list(skipped)}",
                    f"  unresolved:           {_list(unresolved)}",
                ]
            )


def _list(items: Iterable[str]) -> str:
    return ", ".join(items) or "none"
