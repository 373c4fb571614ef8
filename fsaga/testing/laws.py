"""Fault plans, and the compensation laws checked on a user's saga under many of them.

Needs hypothesis, like `fsaga.testing.strategies` (which re-exports everything here).

>>> from hypothesis import find
>>> plan = find(fault_plans(["reserve", "charge"]), lambda plan: "charge" in plan.actions)
>>> plan.actions["charge"] >= 1
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, final

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from fsaga.events import SagaFinished, StepCompleted
from fsaga.interpreter.engine import BranchFailurePolicy, CompensationPolicy
from fsaga.outcome import Outcome, PartialFailure, Success
from fsaga.saga import Saga
from fsaga.testing.interpreters import (
    AsyncFaultInjectingInterpreter,
    FaultInjectingInterpreter,
    FaultPlan,
    RecordingInterpreter,
)
from fsaga.testing.properties import check_run

__all__ = ["assert_async_compensation_laws", "assert_compensation_laws", "fault_plans"]


# -- fault plans ----------------------------------------------------------------------------------


def fault_plans(
    paths: Sequence[str],
    *,
    compensable: Sequence[str] | None = None,
    interrupts: bool = True,
    max_failures: int = 3,
    hangs: bool = False,
) -> SearchStrategy[FaultPlan]:
    """Fault plans over the steps at `paths`.

    Each plan fails some actions for their first 1 to `max_failures` attempts (a step with
    enough retries survives that), the same for some compensations, and, when `interrupts`,
    may interrupt one action (see `FaultPlan.interrupt`). With `hangs`, some actions also hang
    on their first attempt (for `AsyncFaultInjectingInterpreter`).

    Args:
        paths: the paths of the steps whose actions may fail (see `FaultPlan`).
        compensable: the paths whose compensations may fail; `paths` when omitted.
        interrupts: whether plans may interrupt.
        max_failures: the most failing attempts per effect.
        hangs: whether actions may hang.

    >>> from hypothesis import given
    >>> @given(fault_plans(["reserve", "charge"], compensable=["reserve"]))
    ... def stays_on_the_paths(plan: FaultPlan) -> None:
    ...     assert set(plan.actions) <= {"reserve", "charge"}
    ...     assert set(plan.compensations) <= {"reserve"}
    >>> stays_on_the_paths()
    """
    if max_failures < 1:
        raise ValueError(f"fault_plans: max_failures must be at least 1, got {max_failures}")
    return _fault_plans(
        tuple(dict.fromkeys(paths)),
        tuple(dict.fromkeys(paths if compensable is None else compensable)),
        interrupts=interrupts,
        max_failures=max_failures,
        hangs=hangs,
    )


@st.composite
def _fault_plans(
    draw: st.DrawFn,
    paths: tuple[str, ...],
    compensable: tuple[str, ...],
    *,
    interrupts: bool,
    max_failures: int,
    hangs: bool,
) -> FaultPlan:
    # Mostly one failing action, more often a late one (the later of two picks), so runs get
    # far enough to have much to compensate; each compensation fails with a chance of ~1/3.
    actions: dict[str, int] = {}
    for _ in range(draw(st.sampled_from((0, 1, 1, 1, 2))) if paths else 0):
        index = st.integers(0, len(paths) - 1)
        actions[paths[max(draw(index), draw(index))]] = draw(st.integers(1, max_failures))
    compensations: dict[str, int] = {}
    for path in compensable:
        failures = draw(st.integers(-2 * max_failures, max_failures))
        if failures > 0:
            compensations[path] = failures
    interrupt = None
    if interrupts and paths and draw(st.integers(0, 4)) == 4:
        interrupt = draw(st.sampled_from(paths))
    hanging: dict[str, int] = {}
    if hangs:
        for path in paths:
            if draw(st.integers(0, 3)) == 0:
                hanging[path] = 1
    return FaultPlan(actions, compensations, interrupt, hanging)


# -- the laws, for a user's saga ----------------------------------------------------------------


def assert_compensation_laws(
    make_saga: Callable[[], Saga[object]], *, max_examples: int = 100
) -> None:
    """Check the compensation rules on a saga of yours under many injected faults.

    One fault-free run (with `RecordingInterpreter`) finds the saga's steps. Then, for
    `max_examples` fault plans drawn by `fault_plans` (under both compensation policies), a
    fresh ``make_saga()`` runs under `FaultInjectingInterpreter`, and `check_run` checks the
    run: compensations in reverse completion order, each with its own step's result; nothing
    unstarted compensated; everything completed compensated or reported. When the plan
    interrupts, the run must re-raise the ``KeyboardInterrupt`` after compensating; the
    outcome in its `SagaFinished` event is checked instead, and the interrupted step must be
    left unresolved (if it has a compensation) and never compensated.

    `make_saga` must build the same steps every time, and its effects must be safe to run
    many times (test doubles, an in-memory store). Raises `AssertionError` (through
    hypothesis, with the smallest failing plan) when a rule is broken.

    Args:
        make_saga: builds the saga to check, afresh for every run.
        max_examples: how many fault plans to try.

    >>> from fsaga import step
    >>> def make_order() -> Saga[str]:
    ...     reserve = step(lambda: "R-1", lambda reservation: None, name="reserve")
    ...     charge = step(lambda: "C-1", lambda receipt: None, name="charge")
    ...     return reserve.then(charge).then(step(lambda: "sent", name="notify"))
    >>> assert_compensation_laws(make_order, max_examples=25)
    """
    discovery = RecordingInterpreter()
    make_saga().run(discovery)
    actions = list(dict.fromkeys(discovery.paths("action")))
    compensable = [
        event.path
        for event in discovery.events
        if isinstance(event, StepCompleted) and event.compensable
    ]
    policies: SearchStrategy[CompensationPolicy] = st.sampled_from(("continue", "stop"))

    @settings(max_examples=max_examples, deadline=None)
    @given(plan=fault_plans(actions, compensable=compensable), policy=policies)
    def compensation_laws_hold(plan: FaultPlan, policy: CompensationPolicy) -> None:
        interpreter = FaultInjectingInterpreter(plan, on_compensation_failure=policy)
        outcome, interrupted = _run_to_outcome(make_saga(), interpreter)
        check_run(interpreter, outcome)
        if interrupted and plan.interrupt is not None:
            _assert_interrupt_handled(interpreter, outcome, plan.interrupt, set(compensable))

    compensation_laws_hold()


def _run_to_outcome(
    saga: Saga[object], interpreter: FaultInjectingInterpreter
) -> tuple[Outcome[object], bool]:
    """The run's outcome, and whether the plan's interrupt cut it short (and was re-raised)."""
    if interpreter.plan.interrupt is None:
        return saga.run(interpreter), False
    try:
        return saga.run(interpreter), False
    except KeyboardInterrupt:
        finished = [event for event in interpreter.events if isinstance(event, SagaFinished)]
        assert len(finished) == 1, "an interrupted run must still report SagaFinished once"
        return finished[0].outcome, True


def _assert_interrupt_handled(
    interpreter: FaultInjectingInterpreter,
    outcome: Outcome[object],
    interrupted: str,
    compensable: set[str],
) -> None:
    assert not isinstance(outcome, Success), "an interrupted run cannot succeed"
    unresolved = outcome.unresolved if isinstance(outcome, PartialFailure) else ()
    expected = (interrupted,) if interrupted in compensable else ()
    assert unresolved == expected, (
        f"interrupted at {interrupted!r}: unresolved should be {expected}, is {unresolved}"
    )
    assert interrupted not in outcome.compensated, f"the interrupted {interrupted!r} compensated"
    kinds = [(effect.kind, effect.path) for effect in interpreter.effects]
    cut = kinds.index(("action", interrupted))
    later = [path for kind, path in kinds[cut + 1 :] if kind == "action"]
    assert not later, f"actions started after the interrupt: {later}"


# -- the laws under an async interpreter ----------------------------------------------------------

_VIRTUAL_RUN_TIMEOUT = 60.0
"""Seconds of virtual time each run under trio may take: every hang a plan draws ends by then."""


@final
@dataclass(frozen=True, slots=True)
class _AsyncOptions:
    on_branch_failure: BranchFailurePolicy
    concurrent_compensation: bool
    on_compensation_failure: CompensationPolicy


_ASYNC_OPTIONS: Final = st.builds(
    _AsyncOptions,
    on_branch_failure=st.sampled_from(("settle", "cancel")),
    concurrent_compensation=st.booleans(),
    on_compensation_failure=st.sampled_from(("continue", "stop")),
)


def assert_async_compensation_laws(
    make_saga: Callable[[], Saga[object]],
    *,
    max_examples: int = 100,
    backend: Literal["asyncio", "trio"] = "asyncio",
) -> None:
    """`assert_compensation_laws` for async sagas: check the rules under many faults, on anyio.

    One fault-free run finds the saga's steps. Then, for `max_examples` fault plans drawn by
    `fault_plans` and interpreter options drawn alongside (siblings of a failed branch settle
    or are cancelled; sequential or concurrent compensation; continue or stop after a failed
    compensation), a fresh ``make_saga()`` runs under `AsyncFaultInjectingInterpreter` with
    ``anyio.run(..., backend=backend)``, and `check_run` checks the run (with concurrent
    compensation, in reverse causal order). When a plan's interrupt cancels a run from outside,
    the cancellation must also come out of the run (`AsyncFaultInjectingInterpreter.interrupted`)
    and the outcome must not be a success.

    Under ``"trio"`` the runs use trio's `MockClock`, so time is virtual: plans also make
    actions hang (`FaultPlan.hangs`), each run has a deadline of 60 (virtual) seconds that ends
    any hang, and neither costs real time. Under ``"asyncio"`` time is real, so plans never
    hang and runs have no deadline. Concurrent compensation is judged by the branches the
    events report (`fsaga.events.StepStarted.branch`).

    `make_saga` is called inside the event loop, must build the same steps every time, and its
    effects must be safe to run many times. Raises `AssertionError` (through hypothesis, with
    the smallest failing plan) when a rule is broken.

    Args:
        make_saga: builds the saga to check, afresh for every run.
        max_examples: how many fault plans to try (at least 1).
        backend: ``"asyncio"`` or ``"trio"`` (trio must be installed: ``fsaga[trio]``).

    Raises:
        ValueError: an unknown `backend`, or `max_examples` below 1.
        TypeError: `make_saga` is not callable, or `max_examples` is not an int.

    >>> from fsaga import par, step
    >>> async def reserve() -> str:
    ...     return "R-1"
    >>> async def release(reservation: str) -> None:
    ...     pass
    >>> def make_order() -> Saga[str]:
    ...     stock = step(reserve, release, name="reserve")
    ...     charge = step(lambda: "C-1", lambda receipt: None, name="charge")
    ...     return par(stock, charge).then(step(lambda: "sent", name="notify"))
    >>> assert_async_compensation_laws(make_order, max_examples=25)
    """
    _check_async_law_arguments(make_saga, max_examples, backend)
    virtual = backend == "trio"
    timeout = _VIRTUAL_RUN_TIMEOUT if virtual else None
    discovery = AsyncFaultInjectingInterpreter(FaultPlan(), timeout=timeout)
    _run_async(make_saga, discovery, backend)
    actions = list(dict.fromkeys(discovery.paths("action")))
    compensable = [
        event.path
        for event in discovery.events
        if isinstance(event, StepCompleted) and event.compensable
    ]

    @settings(max_examples=max_examples, deadline=None)
    @given(
        plan=fault_plans(actions, compensable=compensable, hangs=virtual),
        options=_ASYNC_OPTIONS,
    )
    def async_compensation_laws_hold(plan: FaultPlan, options: _AsyncOptions) -> None:
        interpreter = AsyncFaultInjectingInterpreter(
            plan,
            timeout=timeout,
            on_branch_failure=options.on_branch_failure,
            concurrent_compensation=options.concurrent_compensation,
            on_compensation_failure=options.on_compensation_failure,
        )
        outcome = _run_async(make_saga, interpreter, backend)
        check_run(interpreter, outcome, concurrent_compensation=options.concurrent_compensation)
        if _plan_cancelled(interpreter):
            assert interpreter.interrupted, (
                f"the plan cancelled the run at {plan.interrupt!r}, but the cancellation did "
                "not come out of it"
            )
            assert not isinstance(outcome, Success), "a run cancelled from outside succeeded"

    async_compensation_laws_hold()


def _check_async_law_arguments(make_saga: object, max_examples: object, backend: object) -> None:
    if not callable(make_saga):
        raise TypeError(
            f"assert_async_compensation_laws: make_saga must be callable, got {make_saga!r}"
        )
    if backend not in ("asyncio", "trio"):
        raise ValueError(
            f"assert_async_compensation_laws: backend must be 'asyncio' or 'trio', got {backend!r}"
        )
    if not isinstance(max_examples, int) or isinstance(max_examples, bool):
        raise TypeError(
            f"assert_async_compensation_laws: max_examples must be an int, got {max_examples!r}"
        )
    if max_examples < 1:
        raise ValueError(
            f"assert_async_compensation_laws: max_examples must be at least 1, got {max_examples}"
        )


def _run_async(
    make_saga: Callable[[], Saga[object]],
    interpreter: AsyncFaultInjectingInterpreter,
    backend: Literal["asyncio", "trio"],
) -> Outcome[object]:
    """Build the saga and run it to its outcome on `backend` (trio on virtual time)."""

    async def run() -> Outcome[object]:
        return await make_saga().run(interpreter)

    if backend == "asyncio":
        return anyio.run(run, backend="asyncio")
    try:
        from trio.testing import MockClock  # imported here: trio is optional
    except ImportError as error:
        raise ImportError(
            "assert_async_compensation_laws(backend='trio') needs trio: pip install 'fsaga[trio]'"
        ) from error
    return anyio.run(
        run, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
    )


def _plan_cancelled(interpreter: AsyncFaultInjectingInterpreter) -> bool:
    """Whether the plan's interrupt cancelled the last run from outside."""
    return interpreter.cancelled
