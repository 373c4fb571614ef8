"""Sequential and concurrent compensation agree, under interrupts and cancellations (rule 8).

`AsyncInterpreter(concurrent_compensation=True)` undoes independent `par` branches side by side;
the default undoes one step at a time. The order differs, nothing else may: every compensation
runs shielded, an interruption during one only fails that one, and the same kind of exception
comes out of the run. This property runs each generated saga under each mode, on asyncio and on
trio (both on virtual time), and compares the two runs.

The faults: the plans of `fault_plans` (failing actions and compensations, hangs, a cancellation
from outside landing inside an action), plus interruptions of one kind per example
(``KeyboardInterrupt``, or the event loop's cancellation exception raised from inside the
effect): compensations interrupted in their place (`FaultPlan.interrupt_compensations`), and a
listener that, on one event of one step, raises the interruption or cancels the run from
outside. The sagas are the shipped `saga_specs`, and fan-outs (a spec, a `par` of such specs,
then more), whose undo runs side by side when a later step fails.

Both runs of an example see the same forward run: asyncio's loop is FIFO, and trio's scheduler
(which hypothesis seeds per example) is given the same random state for each. Only the order of
the undo may differ, so which of two interruptions comes first may too: the runs must agree on
the type of what came out, not on who raised it. Each run must also pass `check_run` on its own.
Compensation failures use the default ``"continue"`` policy: with ``"stop"`` the modes
legitimately differ (concurrent undo lets the compensations already running beside a failed one
finish).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import anyio
import anyio.lowlevel
import pytest
import trio._core._run as trio_scheduler  # its random source, to replay one schedule twice
from hypothesis import event as note
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock
from virtual_time import VirtualTimeLoop

from fsaga import Outcome, PartialFailure, SagaFinished, Success
from fsaga.events import (
    CompensationCompleted,
    CompensationFailed,
    CompensationRetrying,
    CompensationStarted,
    Event,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
)
from fsaga.interpreter import BranchFailurePolicy
from fsaga.testing import AsyncFaultInjectingInterpreter, FaultPlan, Interruption, check_run
from fsaga.testing.strategies import (
    ParSpec,
    SagaSpec,
    ThenSpec,
    World,
    build_saga,
    fault_plans,
    saga_specs,
)

_T = TypeVar("_T")

Backend = Literal["asyncio", "trio"]

RUN_TIMEOUT = 1_000.0
"""Every run's deadline: a backstop that ends any hang nothing else would."""

UNDO_EVENTS: tuple[type[Event], ...] = (
    CompensationCompleted,
    CompensationStarted,
    CompensationFailed,
    CompensationRetrying,
)
"""Where the two modes differ, most often seen first."""
STEP_EVENTS: tuple[type[Event], ...] = (StepCompleted, StepStarted, StepFailed, StepRetrying)


def run_on(backend: Backend, function: Callable[[], Awaitable[_T]]) -> _T:
    """Run `function` under `backend`, on virtual time."""
    if backend == "trio":
        return anyio.run(
            function, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
        )
    return anyio.run(function, backend="asyncio", backend_options={"loop_factory": VirtualTimeLoop})


async def a_cancellation() -> BaseException:
    """The event loop's cancellation exception, caught where it was delivered (for a listener
    to raise: it cannot await one itself)."""
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.lowlevel.checkpoint()
        except anyio.get_cancelled_exc_class() as cancelled:
            return cancelled
    raise AssertionError("the cancelled scope delivered no cancellation")


# -- what a run is given --------------------------------------------------------------------------


def branch_specs(namespace: str) -> st.SearchStrategy[SagaSpec]:
    return saga_specs(max_leaves=3, namespace=namespace, timeouts=True)


SPECS = st.one_of(
    saga_specs(max_leaves=6, timeouts=True),
    # Something, a fan-out, then more: when the tail fails, the branches are undone side by
    # side, and the head waits for all of them.
    st.builds(
        lambda head, branches, tail: ThenSpec(ThenSpec(head, ParSpec(branches)), tail),
        saga_specs(max_leaves=2, namespace="h", timeouts=True),
        st.one_of(
            st.tuples(branch_specs("p"), branch_specs("q")),
            st.tuples(branch_specs("p"), branch_specs("q"), branch_specs("r")),
        ),
        saga_specs(max_leaves=2, namespace="t", timeouts=True),
    ),
)


@dataclass(frozen=True)
class Steps:
    """A saga's steps, as a fault-free run finds them."""

    paths: list[str]
    compensable: list[str]
    in_branches: set[str]
    """The steps that run in a `par` branch."""


def discover(backend: Backend, spec: SagaSpec) -> Steps:
    interpreter = AsyncFaultInjectingInterpreter(FaultPlan(), timeout=RUN_TIMEOUT)

    async def run() -> Outcome[object]:
        return await build_saga(spec, World()).run(interpreter)

    outcome = run_on(backend, run)
    assert isinstance(outcome, Success), f"a fault-free run failed: {outcome}"
    events = interpreter.events
    compensable = [
        event.path for event in events if isinstance(event, StepCompleted) and event.compensable
    ]
    return Steps(
        list(dict.fromkeys(interpreter.paths("action"))),
        list(dict.fromkeys(compensable)),
        {event.path for event in events if isinstance(event, StepStarted) and event.branch},
    )


@dataclass(frozen=True)
class ListenerFault:
    """On the first `event` of step `path`, a listener raises the example's interruption
    (``"raise"``) or cancels the run from outside (``"cancel"``)."""

    event: type[Event]
    path: str
    action: Literal["raise", "cancel"]


@dataclass(frozen=True)
class Faults:
    plan: FaultPlan
    listener: ListenerFault | None


@st.composite
def faults(draw: st.DrawFn, steps: Steps, interruption: Interruption) -> Faults:
    paths, compensable = steps.paths, steps.compensable
    base = draw(fault_plans(paths, compensable=compensable, hangs=True), label="base plan")
    actions = dict(base.actions)
    if paths and draw(st.sampled_from((True, True, False))):
        # Mostly, the last step fails for good (no retry policy is that long): all else is
        # undone.
        actions[paths[-1]] = 100
    # Mostly steps of par branches that do not hang: their compensations run side by side.
    undone = [
        path for path in compensable if path in steps.in_branches and path not in base.hangs
    ] or compensable
    how_many = min(len(undone), draw(st.sampled_from((0, 1, 1, 2))))
    interrupted = (
        draw(st.frozensets(st.sampled_from(undone), min_size=how_many, max_size=how_many))
        if how_many
        else frozenset[str]()
    )
    listener = None
    if paths and draw(st.sampled_from((True, True, False))):
        event = draw(st.sampled_from((UNDO_EVENTS if undone else ()) + STEP_EVENTS))
        # Preferably a compensation the plan leaves alone, so that its events happen.
        untouched = [
            path for path in undone if path not in interrupted and path not in base.compensations
        ]
        path = draw(st.sampled_from((untouched or undone) if event in UNDO_EVENTS else paths))
        listener = ListenerFault(event, path, draw(st.sampled_from(("raise", "cancel"))))
    plan = FaultPlan(
        actions,
        base.compensations,
        base.interrupt,
        base.hangs,
        interrupt_compensations=interrupted,
        interrupt_with=interruption,
    )
    return Faults(plan, listener)


# -- what a run did -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What one run did, in the terms both modes must agree on."""

    came_out: str | None
    """The type of what came out of the run (``None``: it returned its outcome)."""
    outcome: str
    error: str
    failed: frozenset[tuple[str, str, int]]
    skipped: frozenset[str]
    unresolved: frozenset[str]
    compensated: frozenset[str]
    ran_to_completion: frozenset[str]
    """The steps a compensation (or unknown-outcome compensation) of which returned."""


@dataclass(frozen=True)
class Run:
    observed: Observed
    raised_by: str | None
    """Who raised what came out: the listener, a compensation, or the cancelled caller."""
    side_by_side: bool
    interrupted_beside_another: bool
    listener_fired: str | None
    """The listener fault that happened, if one did."""


def run_once(
    backend: Backend,
    spec: SagaSpec,
    faults: Faults,
    on_branch_failure: BranchFailurePolicy,
    *,
    concurrent_compensation: bool,
) -> Run:
    async def run() -> Run:
        interruption = (
            KeyboardInterrupt("listener interrupt")
            if faults.plan.interrupt_with == "keyboard_interrupt"
            else await a_cancellation()
        )
        fault = faults.listener
        fired = False

        def listen(event: Event) -> None:
            nonlocal fired
            if fault is None or fired:
                return
            if isinstance(event, fault.event) and getattr(event, "path", None) == fault.path:
                fired = True
                if fault.action == "raise":
                    raise interruption
                outside.cancel()

        interpreter = AsyncFaultInjectingInterpreter(
            faults.plan,
            listeners=[listen],
            timeout=RUN_TIMEOUT,
            on_branch_failure=on_branch_failure,
            concurrent_compensation=concurrent_compensation,
        )
        raised: BaseException | None = None
        with anyio.CancelScope() as outside:
            try:
                await build_saga(spec, World()).run(interpreter)
            except BaseException as error:  # whatever came out of the run is compared
                raised = error
        if raised is None:
            came_out = (
                "a cancellation, absorbed by the interpreter" if interpreter.interrupted else None
            )
            raised_by = None
        else:
            assert not isinstance(raised, BaseExceptionGroup), f"a group came out: {raised!r}"
            notes = getattr(raised, "__notes__", ())
            assert any(line.startswith("fsaga: saga ") for line in notes), (
                f"{raised!r} came out of the run without its note"
            )
            came_out = type(raised).__name__
            raised_by = who_raised(raised, interruption, interpreter)
        return Run(
            observe(interpreter, came_out, concurrent_compensation=concurrent_compensation),
            raised_by,
            *side_by_side(interpreter.events),
            f"{fault.action} on {fault.event.__name__}" if fault is not None and fired else None,
        )

    return run_on(backend, run)


def observe(
    interpreter: AsyncFaultInjectingInterpreter,
    came_out: str | None,
    *,
    concurrent_compensation: bool,
) -> Observed:
    finished = [event for event in interpreter.events if isinstance(event, SagaFinished)]
    assert len(finished) == 1, f"SagaFinished {len(finished)} times"
    outcome = finished[0].outcome
    # Each run on its own keeps every rule a recorded run can be checked for.
    check_run(interpreter, outcome, concurrent_compensation=concurrent_compensation)
    partial = outcome if isinstance(outcome, PartialFailure) else None
    return Observed(
        came_out=came_out,
        outcome=type(outcome).__name__,
        error="" if isinstance(outcome, Success) else type(outcome.error).__name__,
        failed=frozenset(
            (failure.path, type(failure.error).__name__, failure.attempts)
            for failure in (partial.failed_compensations if partial else ())
        ),
        skipped=frozenset(partial.skipped if partial else ()),
        unresolved=frozenset(partial.unresolved if partial else ()),
        compensated=frozenset(() if isinstance(outcome, Success) else outcome.compensated),
        ran_to_completion=frozenset(
            effect.path
            for effect in interpreter.effects
            if effect.kind != "action" and effect.error is None
        ),
    )


def who_raised(
    raised: BaseException, interruption: BaseException, interpreter: AsyncFaultInjectingInterpreter
) -> str:
    if raised is interruption:
        return "the listener"
    if any(effect.error is raised for effect in interpreter.effects if effect.kind != "action"):
        return "a compensation"
    return "the cancelled caller"


def side_by_side(events: list[Event]) -> tuple[bool, bool]:
    """Whether compensations ran side by side, and whether one was interrupted while another
    ran."""
    running: set[str] = set()
    overlapped = interrupted = False
    for event in events:
        if isinstance(event, CompensationStarted):
            overlapped = overlapped or bool(running)
            running.add(event.path)
        elif isinstance(event, CompensationCompleted | CompensationFailed):
            running.discard(event.path)
            if isinstance(event, CompensationFailed) and not isinstance(event.error, Exception):
                interrupted = interrupted or bool(running)
    return overlapped, interrupted


# -- the property ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=200, deadline=None)
@given(
    spec=SPECS,
    interruption=st.sampled_from(("keyboard_interrupt", "cancelled")),
    on_branch_failure=st.sampled_from(("settle", "cancel")),
    data=st.data(),
)
def test_sequential_and_concurrent_undo_agree_under_interrupts_and_cancellations(
    backend: Backend,
    spec: SagaSpec,
    interruption: Interruption,
    on_branch_failure: BranchFailurePolicy,
    data: st.DataObject,
) -> None:
    drawn = data.draw(faults(discover(backend, spec), interruption), label="faults")

    schedule = trio_scheduler._r.getstate()
    sequential = run_once(backend, spec, drawn, on_branch_failure, concurrent_compensation=False)
    trio_scheduler._r.setstate(schedule)
    concurrent = run_once(backend, spec, drawn, on_branch_failure, concurrent_compensation=True)

    assert concurrent.observed == sequential.observed
    note(f"came out: {sequential.observed.came_out}, raised by {sequential.raised_by}")
    note(f"outcome: {sequential.observed.outcome}")
    if concurrent.side_by_side:
        note("compensations ran side by side")
    if concurrent.interrupted_beside_another:
        note("a compensation was interrupted while another ran")
    note(f"listener: {concurrent.listener_fired}")
