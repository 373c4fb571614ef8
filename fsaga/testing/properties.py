"""Invariants of a run (the contract, docs/concepts.md), checked on its recorded trace.

Each `assert_*` function raises `AssertionError`, saying what went wrong, when a run broke a rule
a user relies on; `check_run` applies them all. They read the trace of any recording
interpreter in `fsaga.testing` (its `events` and `effects`), so they work on a user's own sagas
as well as on generated ones (see `fsaga.testing.strategies` for the hypothesis side).

>>> from fsaga import step
>>> from fsaga.testing import FaultInjectingInterpreter, FaultPlan
>>> saga = step(lambda: 1, lambda _: None, name="a").then(step(lambda: 2, name="b"))
>>> interpreter = FaultInjectingInterpreter(FaultPlan(actions={"b": 1}))
>>> check_run(interpreter, saga.run(interpreter))

PYTEST_DONT_REWRITE: its checks' assertion messages say what is wrong, so pytest, which
loads fsaga as a plugin, leaves them as written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import toolz

from fsaga.events import (
    CompensationCompleted,
    CompensationFailed,
    CompensationStarted,
    Event,
    SagaFinished,
    SagaStarted,
    SagaStopped,
    StepCompleted,
    StepFailed,
    StepStarted,
    branches_independent,
)
from fsaga.outcome import Failure, Outcome, PartialFailure, Success

from .interpreters import RecordedEffect

__all__ = [
    "Trace",
    "assert_causal_compensation_order",
    "assert_compensations_get_their_results",
    "assert_every_completed_step_accounted_for",
    "assert_no_forward_work_during_undo",
    "assert_outcome_matches_trace",
    "assert_reverse_compensation_order",
    "assert_unknown_outcomes_settled",
    "assert_unstarted_steps_never_compensated",
    "check_run",
    "independent_by_path",
]


class Trace(Protocol):
    """What the checks read: the recording interpreters in `fsaga.testing` all provide it."""

    @property
    def events(self) -> Sequence[Event]: ...

    @property
    def effects(self) -> Sequence[RecordedEffect]: ...


def check_run(
    trace: Trace, outcome: Outcome[object], *, concurrent_compensation: bool = False
) -> None:
    """Check every invariant below on the trace of exactly one run and its outcome.

    With `concurrent_compensation` (the run's interpreter undid independent branches side by
    side), the order checked is the reverse causal order instead of the exact reverse order.
    """
    assert_outcome_matches_trace(trace.events, outcome)
    assert_unstarted_steps_never_compensated(trace.events)
    if concurrent_compensation:
        assert_causal_compensation_order(trace.events)
    else:
        assert_reverse_compensation_order(trace.events)
    assert_every_completed_step_accounted_for(trace.events, outcome)
    assert_compensations_get_their_results(trace)
    assert_no_forward_work_during_undo(trace.events)
    assert_unknown_outcomes_settled(trace, outcome)


def _repeated(paths: Iterable[str]) -> list[str]:
    """The paths that occur more than once, in sorted order."""
    counts: dict[str, int] = toolz.frequencies(paths)
    return sorted(path for path, count in counts.items() if count > 1)


def _completed_compensable(events: Sequence[Event]) -> list[str]:
    """Steps with a compensation that completed (an unknown outcome settled by running the step
    again included), in completion order."""
    return list(
        dict.fromkeys(
            event.path for event in events if isinstance(event, StepCompleted) and event.compensable
        )
    )


def _unknown(events: Sequence[Event]) -> set[str]:
    """Steps an attempt of which was cut off mid-flight (timeout, cancellation, interrupt)."""
    return {event.path for event in events if isinstance(event, StepFailed) and event.unknown}


def _undo_log(events: Sequence[Event]) -> list[str]:
    """The order in which steps entered the undo log: at completion, or, for a step whose
    outcome became unknown, when it was cut off (a later run-again does not move it)."""
    log: dict[str, None] = {}
    for event in events:
        if (isinstance(event, StepCompleted) and event.compensable) or (
            isinstance(event, StepFailed) and event.unknown
        ):
            log.setdefault(event.path)
    return list(log)


def _undo_spans(events: Sequence[Event]) -> tuple[dict[str, int], dict[str, int]]:
    """Per step the undo worked on, the index of the event where that began (its compensation's
    first attempt, or, for a step whose outcome was unknown, running it again to settle it, at
    its place in the undo: contract rule 3), and of the last event where it ended (a
    compensation that completed or failed, or a run-again that failed)."""
    left: set[str] = set()
    began: dict[str, int] = {}
    ended: dict[str, int] = {}
    for index, event in enumerate(events):
        if isinstance(event, StepFailed):
            if event.path in began:
                ended[event.path] = index  # running it again failed
            if event.unknown:
                left.add(event.path)
        elif isinstance(event, CompensationStarted) or (
            isinstance(event, StepStarted) and event.path in left
        ):
            began.setdefault(event.path, index)
        elif isinstance(event, CompensationCompleted | CompensationFailed):
            ended[event.path] = index
    return began, ended


def _compensation_order(events: Sequence[Event]) -> list[str]:
    return [
        event.path
        for event in events
        if isinstance(event, CompensationStarted) and event.attempt == 1
    ]


def assert_unstarted_steps_never_compensated(events: Sequence[Event]) -> None:
    """Only a step that completed (or whose outcome is unknown) is ever compensated, and at most
    once."""
    started = set(_completed_compensable(events)) | _unknown(events)
    order = _compensation_order(events)
    strangers = [path for path in order if path not in started]
    assert not strangers, f"compensated steps that never completed: {strangers}"
    twice = _repeated(order)
    assert not twice, f"steps compensated more than once: {twice}"


def assert_reverse_compensation_order(events: Sequence[Event]) -> None:
    """Compensations start in the exact reverse of completion order (a step whose outcome is
    unknown takes its place where it was cut off, and its undo starts there: running it again
    to settle it, if it runs again).

    When a stop policy skipped some, the ones that ran are a prefix of that reverse order.
    """
    began, _ = _undo_spans(events)
    order = sorted(began, key=began.__getitem__)
    ran = set(order)
    unknown = _unknown(events)
    completed = set(_completed_compensable(events))
    # An unknown outcome with nothing to undo it, or left unresolved, runs no compensation.
    expected = [
        path
        for path in reversed(_undo_log(events))
        if path in ran or (path in completed and path not in unknown)
    ]
    assert order == expected[: len(order)], (
        f"compensations ran in the order {order}; reverse completion order is {expected}"
    )


def _independent_by_branch(events: Sequence[Event]) -> Callable[[str, str], bool]:
    branch_of: dict[str, str] = {}
    for event in events:
        if isinstance(event, StepStarted | StepCompleted | StepFailed):
            branch_of.setdefault(event.path, event.branch)

    def independent(first: str, second: str) -> bool:
        return branches_independent(branch_of.get(first, ""), branch_of.get(second, ""))

    return independent


def independent_by_path(first: str, second: str) -> bool:
    """Whether two steps ran on sibling branches of one `par`, told by their paths.

    An unnamed branch is scoped by its position (``#1/...``; ``#1#2/...`` in the second par of a
    scope): two paths are independent when, where they first differ, both name a position of
    the same par. A branch that keeps its own name (a named step or sub-saga) does not show in
    paths; such steps count as dependent, which asks more of the order, never less.
    """
    for left, right in zip(first.split("/"), second.split("/"), strict=False):
        if left == right:
            continue
        par = _branch_of(left)
        return par is not None and par == _branch_of(right)
    return False


def _branch_of(segment: str) -> str | None:
    """The par a position segment belongs to (``#1`` -> ``""``, ``#1#2`` -> ``"#2"``)."""
    if not segment.startswith("#"):
        return None
    _, _, par = segment[1:].partition("#")
    return f"#{par}" if par else ""


def assert_causal_compensation_order(
    events: Sequence[Event],
    *,
    independent: Callable[[str, str], bool] | None = None,
) -> None:
    """Compensations respect the reverse causal order (contract rule 5): a step is compensated
    only after every step that entered the undo log after it, on its own line of control, has
    been compensated; steps of independent branches may be undone in any order, side by side.
    (Running a step again to settle its unknown outcome is part of its undo, and starts it.)

    Which steps are independent is read from the events' `branch` (see
    `fsaga.events.branches_independent`); pass `independent`, a predicate over two paths, to
    decide otherwise (`independent_by_path`, say, for a trace without branches).
    """
    if independent is None:
        independent = _independent_by_branch(events)
    log = _undo_log(events)
    position = {path: index for index, path in enumerate(log)}
    started, finished = _undo_spans(events)
    for earlier, begun in started.items():
        for later in log[position.get(earlier, -1) + 1 :]:
            if independent(earlier, later) or later not in started:
                continue
            end = finished.get(later, len(events))
            assert end < begun, (
                f"{earlier!r} was compensated before {later!r} (which entered the undo log "
                "after it, on its own line) had been"
            )


def assert_every_completed_step_accounted_for(
    events: Sequence[Event], outcome: Outcome[object]
) -> None:
    """After a failure, each completed step with a compensation (one run again to settle its
    unknown outcome included) is compensated, or reported as a failed or skipped compensation;
    nothing completed is left unmentioned, and nothing is reported twice."""
    completed = _completed_compensable(events)
    if isinstance(outcome, Success):
        assert not _compensation_order(events), "a successful run compensated something"
        return
    reported = list(outcome.compensated)
    failed: list[str] = []
    skipped: list[str] = []
    unresolved: list[str] = []
    if isinstance(outcome, PartialFailure):
        failed = [failure.path for failure in outcome.failed_compensations]
        skipped = list(outcome.skipped)
        unresolved = list(outcome.unresolved)
    accounted = reported + failed + skipped + unresolved
    missing = [path for path in completed if path not in accounted]
    assert not missing, f"completed steps neither compensated nor reported: {missing}"
    allowed = set(completed) | _unknown(events)
    extra = [path for path in accounted if path not in allowed]
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


# -- unknown outcomes (contract rule 3) -------------------------------------------------------


def _left_unknown(events: Sequence[Event]) -> dict[str, int]:
    """Per step whose outcome was left unknown (to be settled by the undo), the index of the
    event that said so: its first `StepFailed` with ``unknown``. Forward work never tries such
    a step again, so whatever of it starts later is the undo running it again."""
    left: dict[str, int] = {}
    for index, event in enumerate(events):
        if isinstance(event, StepFailed) and event.unknown:
            left.setdefault(event.path, index)
    return left


def assert_no_forward_work_during_undo(events: Sequence[Event]) -> None:
    """Once the undo has begun, no step's action starts, except to settle an unknown outcome.

    The undo begins with its first compensation, or with its first run-again: an action that
    starts again after its step's outcome was left unknown (contract rule 3). Every forward
    step has started before that (a failed run, or an interrupted one, starts nothing new).

    >>> from fsaga import CompensationStarted, StepStarted
    >>> late = [CompensationStarted("s", "a", 1, 2.0), StepStarted("s", "b", 1, 3.0)]
    >>> assert_no_forward_work_during_undo(late)
    Traceback (most recent call last):
    AssertionError: step 'b' started after the undo had begun (compensating 'a')
    """
    left: set[str] = set()
    undoing: str | None = None
    for event in events:
        if isinstance(event, StepFailed) and event.unknown:
            left.add(event.path)
        elif isinstance(event, CompensationStarted):
            undoing = undoing or f"compensating {event.path!r}"
        elif isinstance(event, StepStarted):
            if event.path in left:
                undoing = undoing or f"running {event.path!r} again"
            else:
                assert undoing is None, (
                    f"step {event.path!r} started after the undo had begun ({undoing})"
                )


def assert_unknown_outcomes_settled(trace: Trace, outcome: Outcome[object]) -> None:
    """Each step whose outcome was left unknown is settled as rule 3 of the contract says, once.

    At its place in the undo, such a step is settled by the first of these that applies:

    - run again (idempotent steps with a compensation), once: if that completes, its
      compensation runs with the new result; if it fails, the next way applies;
    - its ``on_unknown`` compensation (an ``"unknown"`` effect), reported like a compensation;
    - otherwise it is listed in `PartialFailure.unresolved` (if it has a compensation).

    So the trace may show, for such a step: a run-again, then either its compensation (after
    a run-again that completed), or its ``on_unknown`` call, or neither (it is then reported
    unresolved, skipped by a stop policy, or has nothing to undo), and never two of them.
    A trace cannot tell which of the step's options were declared, so this checks the shape,
    not that the first applicable way was taken: `assert_compensation_laws` knows the
    declarations and checks that too.

    Here an interrupt cuts the first attempt of an idempotent step short; the undo runs it
    again and compensates it with the new result:

    >>> from fsaga import step
    >>> from fsaga.testing import RecordingInterpreter
    >>> def interrupt_first(effect):
    ...     if effect.kind == "action" and effect.attempt == 1:
    ...         raise KeyboardInterrupt
    ...     return effect.run()
    >>> recording = RecordingInterpreter(perform=interrupt_first)
    >>> pay = step(lambda: "P-1", lambda payment: None, name="pay", idempotent=True)
    >>> try:
    ...     pay.run(recording)
    ... except KeyboardInterrupt:
    ...     outcome = recording.events[-1].outcome
    >>> outcome
    Failure(error=KeyboardInterrupt(), compensated=('pay',))
    >>> [(effect.kind, effect.attempt, effect.argument) for effect in recording.effects]
    [('action', 1, None), ('action', 2, None), ('compensation', 1, 'P-1')]
    >>> assert_unknown_outcomes_settled(recording, outcome)
    """
    events = trace.events
    left = _left_unknown(events)
    strangers = sorted(
        {effect.path for effect in trace.effects if effect.kind == "unknown"} - set(left)
    )
    assert not strangers, (
        f"on_unknown ran for {strangers}, whose outcome was never unknown (contract rule 3)"
    )
    if not left or isinstance(outcome, Success):
        return  # a success with unknown outcomes is assert_outcome_matches_trace's to report
    reports = _reports(outcome)
    for path, index in left.items():
        _assert_settled(trace, events[index + 1 :], path, reports.get(path, []))


def _reports(outcome: Failure | PartialFailure) -> dict[str, list[str]]:
    """Per path, how the outcome reports it: compensated, failed, skipped, unresolved."""
    reports: dict[str, list[str]] = {}
    listed: list[tuple[str, Iterable[str]]] = [("compensated", outcome.compensated)]
    if isinstance(outcome, PartialFailure):
        listed += [
            ("failed", (failure.path for failure in outcome.failed_compensations)),
            ("skipped", outcome.skipped),
            ("unresolved", outcome.unresolved),
        ]
    for how, paths in listed:
        for path in paths:
            reports.setdefault(path, []).append(how)
    return reports


def _assert_settled(trace: Trace, later: Sequence[Event], path: str, reported: list[str]) -> None:
    """`path`'s outcome was left unknown; `later` are the events after that, `reported` how the
    outcome lists it."""
    rule = f"{path!r}, whose outcome was unknown,"
    mine = [
        event
        for event in later
        if not isinstance(event, SagaStarted | SagaFinished | SagaStopped) and event.path == path
    ]
    ran_again = [event for event in mine if isinstance(event, StepStarted)]
    assert len(ran_again) <= 1, f"{rule} ran again {len(ran_again)} times (contract rule 3)"
    undone = [index for index, event in enumerate(mine) if isinstance(event, CompensationStarted)]
    kinds = {effect.kind for effect in trace.effects if effect.path == path}
    like_a_compensation = reported in (["compensated"], ["failed"])
    completed = False
    if ran_again:
        start = mine.index(ran_again[0])
        ended = next(
            (
                index
                for index, event in enumerate(mine)
                if index > start and isinstance(event, StepCompleted | StepFailed)
            ),
            None,
        )
        assert ended is not None, f"{rule} ran again, and that never ended"
        assert all(index > ended for index in undone), (
            f"{rule} was undone before running it again had ended"
        )
        end = mine[ended]
        completed = isinstance(end, StepCompleted)
        assert not isinstance(end, StepCompleted) or end.compensable, (
            f"{rule} ran again though it has no compensation to take the result"
        )
    if completed:
        assert undone, (
            f"{rule} ran again and completed, but its compensation never ran (contract rule 3)"
        )
        assert "unknown" not in kinds, (
            f"{rule} ran again and was compensated, and was also handed to on_unknown"
        )
        assert like_a_compensation, (
            f"{rule} ran again and was compensated, so it is reported like a compensation "
            f"(compensated or failed), not as {reported}"
        )
        return
    assert "compensation" not in kinds, (
        f"{rule} was compensated without a result: only running it again gives one"
    )
    if undone:  # its on_unknown compensation
        assert like_a_compensation, (
            f"{rule} was handed to on_unknown, so it is reported like a compensation "
            f"(compensated or failed), not as {reported}"
        )
        return
    settled = [how for how in reported if how in ("compensated", "failed")]
    assert not settled, f"{rule} is reported {settled}, yet nothing undid it"
    if ran_again:
        assert reported == ["unresolved"], (
            f"{rule} ran again and that failed: it must then go to on_unknown, or be "
            f"reported unresolved, not {reported} (contract rule 3)"
        )
