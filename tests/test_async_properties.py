"""The rules of a run under the async interpreter, as hypothesis properties.

Generated trees (with `par`, nested sagas, binds, step and sub-tree timeouts, idempotent steps
and unknown-outcome compensations) run under generated fault plans (failing actions and
compensations, actions that hang until a deadline or a cancellation cuts them off, an outside
cancellation landing on a random step) and generated interpreter options (siblings settle or
are cancelled, sequential or concurrent undo, continue or stop after a failed compensation).

Each run executes under asyncio and under trio, both on virtual time (trio's mock clock, and
`VirtualTimeLoop` for asyncio): a hang costs no real time and every run is repeatable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import anyio
import pytest
from hypothesis import event as note
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock
from virtual_time import VirtualTimeLoop

from fsaga import BranchCancelledError, Failure, Outcome, PartialFailure, StepTimeoutError, Success
from fsaga.events import StepCompleted, StepFailed
from fsaga.interpreter import BranchFailurePolicy, CompensationPolicy
from fsaga.testing import AsyncFaultInjectingInterpreter, FaultPlan, check_run
from fsaga.testing.strategies import (
    SagaSpec,
    World,
    build_saga,
    fault_plans,
    saga_specs,
)

_T = TypeVar("_T")

Backend = Literal["asyncio", "trio"]

RUN_TIMEOUT = 1_000.0
"""Every run's deadline: a backstop that ends any hang nothing else would."""


def run_on(backend: Backend, function: Callable[[], Awaitable[_T]]) -> _T:
    """Run `function` under `backend`, on virtual time."""
    if backend == "trio":
        return anyio.run(
            function, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
        )
    return anyio.run(function, backend="asyncio", backend_options={"loop_factory": VirtualTimeLoop})


@dataclass(frozen=True)
class Options:
    on_branch_failure: BranchFailurePolicy
    concurrent_compensation: bool
    on_compensation_failure: CompensationPolicy


OPTIONS = st.builds(
    Options,
    on_branch_failure=st.sampled_from(("settle", "cancel")),
    concurrent_compensation=st.booleans(),
    on_compensation_failure=st.sampled_from(("continue", "stop")),
)


def discover_paths(backend: Backend, spec: SagaSpec) -> list[str]:
    """The action paths of a fault-free run (fault plans aim at them)."""
    interpreter = AsyncFaultInjectingInterpreter(FaultPlan(), timeout=RUN_TIMEOUT)

    async def run() -> Outcome[object]:
        return await build_saga(spec, World()).run(interpreter)

    outcome = run_on(backend, run)
    assert isinstance(outcome, Success), f"a fault-free run failed: {outcome}"
    return list(dict.fromkeys(interpreter.paths("action")))


def still_unknown(interpreter: AsyncFaultInjectingInterpreter) -> set[str]:
    """The idempotency keys of steps whose outcome was left unknown (cut off, never completed
    after)."""
    unknown: set[str] = set()
    for event in interpreter.events:
        key = f"{event.saga_id}/{getattr(event, 'path', '')}"
        if isinstance(event, StepFailed) and event.unknown:
            unknown.add(key)
        elif isinstance(event, StepCompleted):
            unknown.discard(key)
    return unknown


def reported_not_undone(outcome: Outcome[object]) -> set[str]:
    if not isinstance(outcome, PartialFailure):
        return set()
    return {
        *(failure.path for failure in outcome.failed_compensations),
        *outcome.skipped,
        *outcome.unresolved,
    }


def check_async_run(
    spec: SagaSpec,
    plan: FaultPlan,
    options: Options,
    world: World,
    interpreter: AsyncFaultInjectingInterpreter,
    outcome: Outcome[object],
) -> None:
    # The rules every recorded run keeps: one outcome that matches the trace; nothing unstarted
    # compensated; the undo in reverse (causal, when concurrent) order; every completed step
    # compensated or reported; each compensation given its own step's result.
    check_run(interpreter, outcome, concurrent_compensation=options.concurrent_compensation)

    events = interpreter.events
    failed_steps = [event for event in events if isinstance(event, StepFailed)]
    undone = [receipt for change, receipt in world.log if change == "undid"]
    done = {id(receipt) for change, receipt in world.log if change == "did"}

    # The world: nothing undone twice, nothing undone that was never done.
    assert len({id(receipt) for receipt in undone}) == len(undone), f"undone twice: {undone}"
    assert all(id(receipt) in done for receipt in undone), "undid what was never done"

    # The outcome kind matches the plan and the world.
    faultless = not plan.actions and not plan.hangs and plan.interrupt is None
    if faultless:
        assert isinstance(outcome, Success), f"a run without faults ended {outcome}"
    match outcome:
        case Success():
            assert not failed_steps, f"Success, yet steps failed: {failed_steps}"
            assert not undone, f"Success, yet the world was undone: {undone}"
            assert not interpreter.interrupted, "Success, yet the run was cancelled"
        case Failure() | PartialFailure():
            # Nothing completed (or unknown) left in the world unless the outcome says so.
            left = world.left_done(still_unknown(interpreter))
            unreported = {
                key: receipt
                for key, receipt in left.items()
                if key.split("/", 1)[1] not in reported_not_undone(outcome)
            }
            assert not unreported, f"left done in the world, not reported: {unreported}"
            if isinstance(outcome, Failure):
                assert not left, f"Failure, yet the world keeps {left}"
            if isinstance(outcome.error, StepTimeoutError):
                assert plan.hangs or plan.interrupt, "a timeout without a hang in the plan"

    # Outside cancellation: it propagated out of the run (never swallowed), after the undo.
    assert interpreter.interrupted == interpreter.cancelled, (
        f"the plan cancelled the run: {interpreter.cancelled}; the cancellation came out of the "
        f"run: {interpreter.interrupted}"
    )
    if interpreter.cancelled:
        assert plan.interrupt is not None
    if interpreter.interrupted:
        assert not isinstance(outcome, Success), "a cancelled run cannot succeed"

    # An idempotent step run again to settle an unknown outcome gets the same receipt.
    completions: dict[str, object] = {}
    for event in events:
        if isinstance(event, StepCompleted):
            previous = completions.setdefault(event.path, event.result)
            assert previous is event.result, f"{event.path!r} completed twice, differently"


SPECS = saga_specs(max_leaves=7, timeouts=True)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=300, deadline=None)
@given(spec=SPECS, options=OPTIONS, data=st.data())
def test_every_rule_holds_under_faults_timeouts_and_cancellation(
    backend: Backend, spec: SagaSpec, options: Options, data: st.DataObject
) -> None:
    paths = discover_paths(backend, spec)
    plan = data.draw(fault_plans(paths, hangs=True), label="plan")
    world = World()
    interpreter = AsyncFaultInjectingInterpreter(
        plan,
        timeout=RUN_TIMEOUT,
        on_branch_failure=options.on_branch_failure,
        concurrent_compensation=options.concurrent_compensation,
        on_compensation_failure=options.on_compensation_failure,
    )

    async def run() -> Outcome[object]:
        return await build_saga(spec, world).run(interpreter)

    outcome = run_on(backend, run)

    check_async_run(spec, plan, options, world, interpreter, outcome)
    note_what_happened(interpreter, outcome)


def note_what_happened(
    interpreter: AsyncFaultInjectingInterpreter, outcome: Outcome[object]
) -> None:
    """Hypothesis statistics (``--hypothesis-show-statistics``): what the runs exercised."""
    note(f"outcome: {type(outcome).__name__}")
    if not isinstance(outcome, Success):
        note(f"error: {type(outcome.error).__name__}")
    if isinstance(outcome, PartialFailure) and outcome.unresolved:
        note("some outcome left unresolved")
    if interpreter.interrupted:
        note("cancelled from outside")
    if any(effect.kind == "unknown" for effect in interpreter.effects):
        note("an unknown-outcome compensation ran")
    failures = [event for event in interpreter.events if isinstance(event, StepFailed)]
    for failure in failures:
        if isinstance(failure.error, BranchCancelledError):
            note("a sibling branch was cancelled")
        if isinstance(failure.error, StepTimeoutError):
            note(f"timeout: {failure.error.deadline}")
    unknown = {failure.path for failure in failures if failure.unknown}
    if any(
        isinstance(completed, StepCompleted) and completed.path in unknown
        for completed in interpreter.events
    ):
        note("an unknown outcome settled by running the step again")
