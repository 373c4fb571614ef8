"""What `assert_compensation_laws` and `assert_async_compensation_laws` check beyond
`check_run`, knowing the saga's steps: what each step declares (found by a fault-free run),
whether each unknown outcome was settled by the first way those declarations allow (contract
rule 3), whether only the stop policy skipped compensations (contract rule 4), and where a
plan's interrupt cut a run short (contract rule 8).

PYTEST_DONT_REWRITE: its checks' assertion messages say what is wrong, so pytest, which
loads fsaga as a plugin, leaves them as written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import final

from fsaga.context import _running_effect
from fsaga.events import (
    CompensationStarted,
    Event,
    SagaFinished,
    SagaStarted,
    SagaStopped,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from fsaga.interpreter._call import Call
from fsaga.interpreter.protocol import Effect
from fsaga.interpreter.settings import CompensationPolicy
from fsaga.outcome import Outcome, PartialFailure, Success
from fsaga.saga import Saga
from fsaga.testing.interpreters import RecordingInterpreter
from fsaga.testing.properties import Trace, _left_unknown, _reports

__all__ = [
    "Declared",
    "Steps",
    "assert_cut_short",
    "assert_interrupt_handled",
    "assert_settled_as",
    "assert_settled_as_declared",
    "assert_skipped_only_by_stop",
    "concerns",
    "declaring",
    "discover",
    "discovered",
]


# -- what a fault-free run finds --------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class Declared:
    """What a step declares that settles an unknown outcome (contract rule 3)."""

    idempotent: bool
    compensation: bool
    on_unknown: bool

    def __str__(self) -> str:
        options = [
            "idempotent" if self.idempotent else "not idempotent",
            "with a compensation" if self.compensation else "without compensation",
            "with on_unknown" if self.on_unknown else "without on_unknown",
        ]
        return ", ".join(options)


@final
@dataclass(frozen=True, slots=True)
class Steps:
    """What a fault-free run finds of a saga's steps."""

    actions: tuple[str, ...]
    """The paths of the actions, in the order they started."""
    compensable: tuple[str, ...]
    """The paths of the steps with a compensation, in completion order."""
    declared: Mapping[str, Declared]
    """Per path, what its step declares."""


def declaring(declared: dict[str, Declared], effect: Effect) -> object:
    """Perform `effect`, and note what its step declares (a trace does not show it, so it is
    read from the running effect's context, where the interpreter keeps the step)."""
    if effect.kind == "action":
        _, call, _, _ = _running_effect.get()
        assert isinstance(call, Call)  # a perform hook runs every effect as a call of its own
        node = call.node
        declared.setdefault(
            effect.path,
            Declared(node.idempotent, node.compensate is not None, node.on_unknown is not None),
        )
    return effect.run()


def discover(make_saga: Callable[[], Saga[object]]) -> Steps:
    """The steps of the saga `make_saga` builds, from a fault-free run."""
    declared: dict[str, Declared] = {}
    discovery = RecordingInterpreter(perform=partial(declaring, declared))
    make_saga().run(discovery)
    return discovered(discovery.events, declared)


def discovered(events: Sequence[Event], declared: Mapping[str, Declared]) -> Steps:
    """The steps a fault-free run's `events` show, with the `declared` options noted."""
    return Steps(
        tuple(declared),
        tuple(
            event.path for event in events if isinstance(event, StepCompleted) and event.compensable
        ),
        dict(declared),
    )


# -- the checks the laws add to check_run -------------------------------------------------------


def assert_settled_as_declared(
    events: Sequence[Event], outcome: Outcome[object], declared: Mapping[str, Declared]
) -> None:
    """Each step whose outcome was left unknown is settled by the first way its declarations
    allow (contract rule 3): run again if idempotent with a compensation (which then gets the
    new result); else, or if that fails, its on_unknown; else, with a compensation, reported
    unresolved; else nothing. (The stop policy may skip any of it, after a compensation that
    failed.)

    `check_run` has checked each settlement's shape (once, in order, reported as what it was);
    knowing the declarations, this checks that it is the right one."""
    if isinstance(outcome, Success):
        return
    reports = _reports(outcome)
    for path, index in _left_unknown(events).items():
        declaration = declared.get(path)
        if declaration is None:
            continue  # a step the fault-free run never reached: its declarations are unknown
        later = [event for event in events[index + 1 :] if concerns(event, path)]
        assert_settled_as(
            f"{path!r} ({declaration}), whose outcome was unknown,",
            declaration,
            later,
            reports.get(path, []),
        )


def assert_settled_as(
    step: str, declared: Declared, later: Sequence[Event], reported: Sequence[str]
) -> None:
    """`step` (described for messages) declares `declared`; `later` are its events after its
    outcome was left unknown, `reported` how the outcome lists it."""
    ran_again = any(isinstance(event, StepStarted) for event in later)
    if "skipped" in reported:
        assert declared.compensation or declared.on_unknown, (
            f"{step} has nothing to undo, yet is reported skipped"
        )
        assert not ran_again, f"{step} ran again, yet is reported skipped"
        return
    if declared.idempotent and declared.compensation:
        assert ran_again, f"{step} was not run again to settle it (contract rule 3)"
        if any(isinstance(event, StepCompleted) for event in later):
            return  # then compensated with the new result, as check_run has checked
    else:
        assert not ran_again, (
            f"{step} ran again: only an idempotent step with a compensation may (contract rule 3)"
        )
    undone = any(isinstance(event, CompensationStarted) for event in later)
    if declared.on_unknown:
        assert undone, f"{step} was not handed to its on_unknown (contract rule 3)"
    elif declared.compensation:
        assert list(reported) == ["unresolved"], (
            f"{step} must be reported unresolved, not {list(reported)} (contract rule 3)"
        )
    else:
        assert not undone, f"{step} has nothing to undo, yet something undid it"
        assert not reported, f"{step} has nothing to undo, yet is reported {list(reported)}"


def concerns(event: Event, path: str) -> bool:
    """Whether `event` is about the step at `path`."""
    return not isinstance(event, SagaStarted | SagaFinished | SagaStopped) and event.path == path


def assert_skipped_only_by_stop(outcome: Outcome[object], policy: CompensationPolicy) -> None:
    """Compensations are skipped only under the stop policy, after one failed (contract rule
    4)."""
    if not isinstance(outcome, PartialFailure) or not outcome.skipped:
        return
    assert policy == "stop", (
        f"skipped {list(outcome.skipped)} under the {policy!r} policy, which runs every "
        "compensation"
    )
    assert outcome.failed_compensations, (
        f"skipped {list(outcome.skipped)}, though no compensation failed"
    )


def assert_interrupt_handled(trace: Trace, outcome: Outcome[object], interrupted: str) -> None:
    """The plan interrupted the first attempt of `interrupted`'s action: its outcome is
    unknown (contract rule 3), and forward work stopped there (contract rule 8). Running the
    interrupted step again, to settle its outcome, is the undo's work, not forward work."""
    assert not isinstance(outcome, Success), "an interrupted run cannot succeed"
    effects = trace.effects
    cut = next(
        index
        for index, effect in enumerate(effects)
        if effect.kind == "action" and effect.path == interrupted
    )
    assert isinstance(effects[cut].error, KeyboardInterrupt), (
        f"the first action of {interrupted!r} should have been interrupted, it ended with "
        f"{effects[cut].error!r}"
    )
    assert_cut_short(trace.events, interrupted)
    later = [
        effect.path
        for effect in effects[cut + 1 :]
        if effect.kind == "action" and effect.path != interrupted
    ]
    assert not later, f"actions started after the interrupt at {interrupted!r}: {later}"


def assert_cut_short(events: Sequence[Event], interrupted: str) -> None:
    """The first attempt of `interrupted` was cut short mid-flight: its outcome is unknown."""
    # What that attempt's start led to: failing with an unknown outcome, nothing else.
    then = [event for event in events if concerns(event, interrupted)][1:2]
    unknown = [event for event in then if isinstance(event, StepFailed) and event.unknown]
    assert unknown, (
        f"cut short mid-flight, {interrupted!r} must fail with an unknown outcome, not "
        f"{then} (contract rule 3)"
    )
