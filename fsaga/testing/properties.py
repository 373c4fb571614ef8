"""Invariants of a run (DESIGN section 3), checked on its recorded trace.

Each `assert_*` function raises `AssertionError`, saying what went wrong, when a run broke a rule
a user relies on; `check_run` applies them all. They read the trace of any recording
interpreter in `fsaga.testing` (its `events` and `effects`), so they work on a user's own sagas
as well as on generated ones (see `fsaga.testing.strategies` for the hypothesis side).

>>> from fsaga import step
>>> from fsaga.testing import FaultInjectingInterpreter, FaultPlan
>>> saga = step(lambda: 1, lambda _: None, name="a").then(step(lambda: 2, name="b"))
>>> interpreter = FaultInjectingInterpreter(FaultPlan(actions={"b": 1}))
>>> check_run(interpreter, saga.run(interpreter))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import toolz

from fsaga.events import (
    CompensationCompleted,
    CompensationFailed,
    CompensationStarted,
    Event,
    SagaFinished,
    SagaStarted,
    StepCompleted,
    StepFailed,
)
from fsaga.outcome import Failure, Outcome, PartialFailure, Success

from .interpreters import RecordedEffect

__all__ = [
    "Trace",
    "assert_compensations_get_their_results",
    "assert_every_completed_step_accounted_for",
    "assert_outcome_matches_trace",
    "assert_reverse_compensation_order",
    "assert_unstarted_steps_never_compensated",
    "check_run",
]


class Trace(Protocol):
    """What the checks read: the recording interpreters in `fsaga.testing` all provide it."""

    @property
    def events(self) -> Sequence[Event]: ...

    @property
    def effects(self) -> Sequence[RecordedEffect]: ...


def check_run(trace: Trace, outcome: Outcome[object]) -> None:
    """Check every invariant below on the trace of exactly one run and its outcome."""
    assert_outcome_matches_trace(trace.events, outcome)
    assert_unstarted_steps_never_compensated(trace.events)
    assert_reverse_compensation_order(trace.events)
    assert_every_completed_step_accounted_for(trace.events, outcome)
    assert_compensations_get_their_results(trace)


def _repeated(paths: Iterable[str]) -> list[str]:
    """The paths that occur more than once, in sorted order."""
    counts: dict[str, int] = toolz.frequencies(paths)
    return sorted(path for path, count in counts.items() if count > 1)


def _completed_compensable(events: Sequence[Event]) -> list[str]:
    return [
        event.path for event in events if isinstance(event, StepCompleted) and event.compensable
    ]


def _compensation_order(events: Sequence[Event]) -> list[str]:
    return [
        event.path
        for event in events
        if isinstance(event, CompensationStarted) and event.attempt == 1
    ]


def assert_unstarted_steps_never_compensated(events: Sequence[Event]) -> None:
    """Only a step that completed is ever compensated, and at most once."""
    completed = set(_completed_compensable(events))
    order = _compensation_order(events)
    strangers = [path for path in order if path not in completed]
    assert not strangers, f"compensated steps that never completed: {strangers}"
    twice = _repeated(order)
    assert not twice, f"steps compensated more than once: {twice}"


def assert_reverse_compensation_order(events: Sequence[Event]) -> None:
    """Compensations start in the exact reverse of completion order.

    When a stop policy skipped some, the ones that ran are a prefix of that reverse order.
    """
    expected = list(reversed(_completed_compensable(events)))
    order = _compensation_order(events)
    assert order == expected[: len(order)], (
        f"compensations ran in the order {order}; reverse completion order is {expected}"
    )


def assert_every_completed_step_accounted_for(
    events: Sequence[Event], outcome: Outcome[object]
) -> None:
    """After a failure, each completed step with a compensation is compensated, or reported as
    a failed or skipped compensation; nothing completed is left unmentioned."""
    completed = _completed_compensable(events)
    if isinstance(outcome, Success):
        assert not _compensation_order(events), "a successful run compensated something"
        return
    reported = list(outcome.compensated)
    failed: list[str] = []
    skipped: list[str] = []
    if isinstance(outcome, PartialFailure):
        failed = [failure.path for failure in outcome.failed_compensations]
        skipped = list(outcome.skipped)
    accounted = reported + failed + skipped
    missing = [path for path in completed if path not in accounted]
    assert not missing, f"completed steps neither compensated nor reported: {missing}"
    extra = [path for path in accounted if path not in completed]
    assert not extra, f"outcome reports steps that never completed: {extra}"
    twice = _repeated(accounted)
    assert not twice, f"steps reported more than once: {twice}"


def assert_outcome_matches_trace(events: Sequence[Event], outcome: Outcome[object]) -> None:
    """One start, one finish carrying this outcome, and an outcome kind the trace implies."""
    starts = [event for event in events if isinstance(event, SagaStarted)]
    finishes = [event for event in events if isinstance(event, SagaFinished)]
    assert len(starts) == 1, f"expected one SagaStarted, got {len(starts)}"
    assert len(finishes) == 1, f"expected one SagaFinished, got {len(finishes)}"
    assert finishes[0].outcome is outcome, "SagaFinished carries another outcome than returned"
    assert events[-1] is finishes[0], "events follow SagaFinished"
    step_failures = [event for event in events if isinstance(event, StepFailed)]
    succeeded = [event.path for event in events if isinstance(event, CompensationCompleted)]
    failed = [event.path for event in events if isinstance(event, CompensationFailed)]
    match outcome:
        case Success():
            assert not step_failures, f"Success, yet steps failed: {step_failures}"
        case Failure(compensated=compensated):
            assert not failed, f"Failure, yet compensations failed: {failed}"
            assert list(compensated) == succeeded, (
                f"Failure.compensated is {list(compensated)}; the trace compensated {succeeded}"
            )
        case PartialFailure(
            compensated=compensated,
            failed_compensations=failures,
            skipped=skipped,
            unresolved=unresolved,
        ):
            assert failures or skipped or unresolved, "PartialFailure that reports nothing"
            assert list(compensated) == succeeded, (
                f"PartialFailure.compensated is {list(compensated)}; the trace compensated "
                f"{succeeded}"
            )
            assert [failure.path for failure in failures] == failed, (
                f"failed_compensations {failures} do not match the trace {failed}"
            )
            unknown = {event.path for event in step_failures if event.unknown}
            strangers = [path for path in unresolved if path not in unknown]
            assert not strangers, f"unresolved steps that were not cut short: {strangers}"


def assert_compensations_get_their_results(trace: Trace) -> None:
    """Every compensation receives the very object its own step's action produced."""
    results: dict[str, object] = {}
    for event in trace.events:
        if isinstance(event, StepCompleted):
            results[event.path] = event.result
    for effect in trace.effects:
        if effect.kind != "compensation":
            continue
        assert effect.path in results, f"compensation of {effect.path!r}, which never completed"
        assert effect.argument is results[effect.path], (
            f"compensation of {effect.path!r} received {effect.argument!r}, "
            f"its step returned {results[effect.path]!r}"
        )
