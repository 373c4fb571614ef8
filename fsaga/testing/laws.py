"""Fault plans, and the compensation laws checked on a user's saga under many of them.

Needs hypothesis, like `fsaga.testing.strategies` (which re-exports everything here).

>>> from hypothesis import find
>>> plan = find(fault_plans(["reserve", "charge"]), lambda plan: "charge" in plan.actions)
>>> plan.actions["charge"] >= 1
True

PYTEST_DONT_REWRITE: its checks' assertion messages say what is wrong, so pytest, which
loads fsaga as a plugin, leaves them as written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final, Literal, final

import anyio
import anyio.lowlevel
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from fsaga._numbers import check_count
from fsaga.events import (
    Event,
    SagaFinished,
)
from fsaga.interpreter.asynchronous import AsyncInterpreter
from fsaga.interpreter.settings import BranchFailurePolicy, CompensationPolicy
from fsaga.outcome import Outcome, Success
from fsaga.saga import Saga
from fsaga.testing._law_checks import (
    Declared,
    Steps,
    assert_cut_short,
    assert_interrupt_handled,
    assert_settled_as_declared,
    assert_skipped_only_by_stop,
    declaring,
    discover,
    discovered,
)
from fsaga.testing.faults import (
    AsyncFaultInjectingInterpreter,
    FaultInjectingInterpreter,
    FaultPlan,
)
from fsaga.testing.properties import Trace, check_run

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
    check_count(max_failures, what="fault_plans: max_failures", minimum=1)
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
    # far enough to have much to compensate; each compensation fails with a chance of ~1/3; an
    # interrupt about one plan in four (what makes outcomes unknown in a sync run, contract
    # rule 3, so it is worth a good share of the examples).
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
    if interrupts and paths and draw(st.integers(0, 2)) == 2:
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

    One fault-free run (with `RecordingInterpreter`) finds the saga's steps, and what each
    declares: a compensation, ``idempotent=True``, an ``on_unknown`` compensation. Then, for
    `max_examples` fault plans drawn by `fault_plans` (under both compensation policies), a
    fresh ``make_saga()`` runs under `FaultInjectingInterpreter`, and `check_run` checks the
    run: compensations in reverse completion order, each with its own step's result; nothing
    unstarted compensated; everything completed compensated or reported; no forward work once
    the undo has begun; each unknown outcome settled at most once. Knowing the declarations,
    it also checks that each step whose outcome is unknown is settled by the first way they
    allow (rule 3 of the contract, docs/concepts.md): run again, if idempotent with a
    compensation, which then receives the new result; else, or if running again fails, its
    ``on_unknown``; else, with a compensation, reported unresolved (unless the stop policy
    skipped it); and that only the stop policy skips compensations. When the plan interrupts,
    the run must re-raise the ``KeyboardInterrupt`` after compensating; the outcome in its
    `SagaFinished` event is checked instead, the interrupted step's outcome must be unknown,
    and no action may start after the interrupt but the one that runs the interrupted step
    again to settle it.

    `make_saga` must build the same steps (the same step at each path) every time, and its
    effects must be safe to run many times (test doubles, an in-memory store). Raises
    `AssertionError` (through hypothesis, with the smallest failing plan) when a rule is
    broken.

    Args:
        make_saga: builds the saga to check, afresh for every run.
        max_examples: how many fault plans to try.

    >>> from fsaga import step
    >>> def make_order() -> Saga[str]:
    ...     reserve = step(lambda: "R-1", lambda reservation: None, name="reserve")
    ...     charge = step(lambda: "C-1", lambda receipt: None, name="charge", idempotent=True)
    ...     return reserve.then(charge).then(step(lambda: "sent", name="notify"))
    >>> assert_compensation_laws(make_order, max_examples=25)
    """
    if not callable(make_saga):
        raise TypeError(f"assert_compensation_laws: make_saga must be callable, got {make_saga!r}")
    _check_max_examples(max_examples, what="assert_compensation_laws")
    steps = discover(make_saga)
    policies: SearchStrategy[CompensationPolicy] = st.sampled_from(("continue", "stop"))

    @settings(max_examples=max_examples, deadline=None)
    @given(plan=fault_plans(steps.actions, compensable=steps.compensable), policy=policies)
    def compensation_laws_hold(plan: FaultPlan, policy: CompensationPolicy) -> None:
        _run_and_check(make_saga, steps, plan, policy)

    compensation_laws_hold()


def _run_and_check(
    make_saga: Callable[[], Saga[object]],
    steps: Steps,
    plan: FaultPlan,
    policy: CompensationPolicy,
) -> None:
    """One run of `assert_compensation_laws`: a fresh saga under `plan`, and every check."""
    interpreter = FaultInjectingInterpreter(plan, on_compensation_failure=policy)
    outcome, interrupted = _run_to_outcome(make_saga(), interpreter)
    _check_run_of_the_laws(
        interpreter, outcome, steps, policy, plan.interrupt if interrupted else None
    )


def _check_run_of_the_laws(
    trace: Trace,
    outcome: Outcome[object],
    steps: Steps,
    policy: CompensationPolicy,
    interrupted: str | None,
) -> None:
    """Every check `assert_compensation_laws` makes on one run: `check_run`, and what knowing
    the saga's steps and the plan adds. `interrupted` is the step the plan's interrupt cut
    short, if it did."""
    check_run(trace, outcome)
    assert_settled_as_declared(trace.events, outcome, steps.declared)
    assert_skipped_only_by_stop(outcome, policy)
    if interrupted is not None:
        assert_interrupt_handled(trace, outcome, interrupted)


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
    compensation, in reverse causal order), as do the checks `assert_compensation_laws` adds:
    every unknown outcome (a step cut off by a deadline, by the cancellation of its branch or
    of the run) settled by the first way its step's declarations allow, and skipped
    compensations only under the stop policy. When a plan's interrupt cancels a run from
    outside, the cancellation must also come out of the run
    (`AsyncFaultInjectingInterpreter.interrupted`), the outcome must not be a success, and the
    step the cancellation cut short must have an unknown outcome.

    Under ``"trio"`` the runs use trio's `MockClock`, so time is virtual: plans also make
    actions hang (`FaultPlan.hangs`), each run has a deadline of 60 (virtual) seconds that ends
    any hang, and neither costs real time. Under ``"asyncio"`` time is real, so plans never
    hang and runs have no deadline. Concurrent compensation is judged by the branches the
    events report (`fsaga.events.StepStarted.branch`).

    `make_saga` is called inside the event loop, must build the same steps (the same step at
    each path) every time, and its effects must be safe to run many times. Raises
    `AssertionError` (through hypothesis, with the smallest failing plan) when a rule is broken.

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
    steps = _discover_async(make_saga, backend)

    @settings(max_examples=max_examples, deadline=None)
    @given(
        plan=fault_plans(steps.actions, compensable=steps.compensable, hangs=virtual),
        options=_ASYNC_OPTIONS,
    )
    def async_compensation_laws_hold(plan: FaultPlan, options: _AsyncOptions) -> None:
        _run_and_check_async(make_saga, steps, plan, options, backend)

    async_compensation_laws_hold()


def _run_and_check_async(
    make_saga: Callable[[], Saga[object]],
    steps: Steps,
    plan: FaultPlan,
    options: _AsyncOptions,
    backend: Literal["asyncio", "trio"],
) -> None:
    """One run of `assert_async_compensation_laws`: a fresh saga under `plan` and `options`,
    and every check."""
    interpreter = AsyncFaultInjectingInterpreter(
        plan,
        timeout=_VIRTUAL_RUN_TIMEOUT if backend == "trio" else None,
        on_branch_failure=options.on_branch_failure,
        concurrent_compensation=options.concurrent_compensation,
        on_compensation_failure=options.on_compensation_failure,
    )
    outcome = _run_async(make_saga, interpreter, backend)
    check_run(interpreter, outcome, concurrent_compensation=options.concurrent_compensation)
    assert_settled_as_declared(interpreter.events, outcome, steps.declared)
    assert_skipped_only_by_stop(outcome, options.on_compensation_failure)
    if _plan_cancelled(interpreter):
        assert interpreter.interrupted, (
            f"the plan cancelled the run at {plan.interrupt!r}, but the cancellation did "
            "not come out of it"
        )
        assert not isinstance(outcome, Success), "a run cancelled from outside succeeded"
        assert plan.interrupt is not None
        assert_cut_short(interpreter.events, plan.interrupt)


def _check_async_law_arguments(make_saga: object, max_examples: object, backend: object) -> None:
    if not callable(make_saga):
        raise TypeError(
            f"assert_async_compensation_laws: make_saga must be callable, got {make_saga!r}"
        )
    if backend not in ("asyncio", "trio"):
        raise ValueError(
            f"assert_async_compensation_laws: backend must be 'asyncio' or 'trio', got {backend!r}"
        )
    _check_max_examples(max_examples, what="assert_async_compensation_laws")


_MOST_EXAMPLES: Final = 2**63 - 1
"""The most examples a law check asks hypothesis for (it scales the count as a float)."""


def _check_max_examples(max_examples: object, *, what: str) -> None:
    count = check_count(max_examples, what=f"{what}: max_examples", minimum=1)
    if count > _MOST_EXAMPLES:
        raise ValueError(f"{what}: max_examples must be at most 2**63 - 1, got {count}")


def _discover_async(
    make_saga: Callable[[], Saga[object]], backend: Literal["asyncio", "trio"]
) -> Steps:
    """The steps of the async saga `make_saga` builds, from a fault-free run on `backend`."""
    events: list[Event] = []
    declared: dict[str, Declared] = {}
    discovery = AsyncInterpreter(
        listeners=[events.append],
        perform=partial(declaring, declared),
        timeout=_VIRTUAL_RUN_TIMEOUT if backend == "trio" else None,
        sleep=_no_wait,
    )
    _run_async(make_saga, discovery, backend)
    return discovered(events, declared)


async def _no_wait(seconds: float) -> None:
    """Record nothing, wait for nothing: a retry's wait in the fault-free run."""
    await anyio.lowlevel.checkpoint()


def _run_async(
    make_saga: Callable[[], Saga[object]],
    interpreter: AsyncInterpreter | AsyncFaultInjectingInterpreter,
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
