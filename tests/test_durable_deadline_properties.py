"""Durable runs of generated sagas with deadlines, killed at a journal write and recovered.

The model is tests/test_durable_properties.py, on async runs with deadlines: each example draws
a saga tree with step timeouts and sub-tree deadlines (`saga_specs(timeouts=True)`, whose steps
may also be idempotent or have an unknown-outcome compensation, and retry with waits between
attempts), a fault plan whose actions may fail or hang (take effect, then never return, until a
deadline cuts them off), and a crash point: a journal write of the run, before or after it; and
maybe one of its first recovery too. The run and its recoveries go on virtual time
(`VirtualTimeLoop`, under asyncio, whose order of tasks is the same on every run), so a deadline
passes at the same moment in every run of an example.

What must hold, besides the rules every durable run keeps (one recorded outcome, the one reported;
no completed step run again; an action a crash cut off run again only if idempotent; nothing
that took effect left undone unless the outcome names it):

- without a crash, the durable run does what the plain `AsyncInterpreter` run does: recording
  what the deadlines decided changes nothing;
- wherever the crashes left no action in flight (the journal held how every action that had
  started ended), the recovery ends exactly as the run left alone did, with the same outcome
  and the same world: what the deadlines decided was replayed, not decided again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import anyio
from crashing_journal import CrashingJournal
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_durable_properties import (
    DEFINITION,
    SAGA_ID,
    Effects,
    Snapshot,
    assert_results_follow_intents,
    assert_undone_in_reverse_completion_order,
    reported,
    run_until_crash,
    said,
    shape,
    trace,
)
from virtual_time import run_on_virtual_time

from fsaga import (
    Failure,
    PartialFailure,
    Saga,
    StepCompleted,
    Success,
    current_context,
    par,
    pure,
    sequence,
    step,
)
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.interpreter import AsyncInterpreter
from fsaga.journal import MemoryJournal
from fsaga.outcome import Outcome
from fsaga.policy import Retry
from fsaga.testing import FaultPlan, RecordingInterpreter
from fsaga.testing.strategies import (
    STEP_TIMEOUT,
    BindSpec,
    ContinuationSpec,
    MapSpec,
    NamedSpec,
    ParSpec,
    PureSpec,
    SagaSpec,
    SequenceSpec,
    StepSpec,
    ThenSpec,
    TimeoutSpec,
    fault_plans,
    saga_specs,
)

EXAMPLES = settings(max_examples=1000, deadline=None)


def on_virtual_time(function: Callable[[], object]) -> object:
    return run_on_virtual_time("asyncio", function)  # type: ignore[arg-type]


# -- what generated steps do ----------------------------------------------------------------------


SUBTREE_DEADLINE = 8.0
RETRY_WAIT = 3.0
"""Seconds a `TimeoutSpec` sub-tree may take, and a step waits before its second attempt (the
wait doubles after): short and long enough, beside `STEP_TIMEOUT`, that sub-tree deadlines
often cut attempts off and keep retries from starting."""


def build(spec: SagaSpec, effects: Effects, *, seen: object = None) -> Saga[object]:
    """The saga `spec` describes, acting through `effects`, with its deadlines: each step with
    `StepSpec.timeout` has `STEP_TIMEOUT` per attempt, each `TimeoutSpec` `SUBTREE_DEADLINE`,
    and retries wait `RETRY_WAIT` seconds, doubling."""
    match spec:
        case StepSpec():
            return _build_step(spec, effects, seen)
        case PureSpec(value=value):
            return pure(value)
        case ThenSpec(first=first, second=second):
            return build(first, effects, seen=seen).then(build(second, effects, seen=seen))
        case SequenceSpec(items=items):
            return sequence(build(item, effects, seen=seen) for item in items)
        case BindSpec(source=source, continuation=continuation):
            return build(source, effects, seen=seen).bind(partial(_continue, continuation, effects))
        case MapSpec(source=source, tag=tag):
            return build(source, effects, seen=seen).map(partial(_tagged, tag))
        case NamedSpec(name=name, inner=inner):
            return build(inner, effects, seen=seen).named(name)
        case ParSpec(branches=branches):
            return par(*(build(branch, effects, seen=seen) for branch in branches))
        case TimeoutSpec(inner=inner):
            return build(inner, effects, seen=seen).timeout(SUBTREE_DEADLINE)


def _continue(continuation: ContinuationSpec, effects: Effects, value: object) -> Saga[object]:
    return build(continuation.choose(value), effects, seen=value)


def _tagged(tag: str, value: object) -> tuple[str, object]:
    return (tag, value)


def _build_step(spec: StepSpec, effects: Effects, seen: object) -> Saga[object]:
    async def act() -> object:
        result = effects.act(spec, seen)  # takes effect (or fails, as the plan says)
        context = current_context()
        if context.attempt <= effects.plan.hangs.get(context.path, 0):
            await anyio.sleep_forever()  # and never answers: only a deadline ends it
        return result

    act.__name__ = spec.label
    undoable = spec.compensable or spec.on_unknown
    return step(
        act,
        effects.compensate if spec.compensable else None,
        name=spec.label if spec.explicit else None,
        retry=_retry(spec.attempts),
        compensation_retry=_retry(spec.compensation_attempts) if undoable else None,
        timeout=STEP_TIMEOUT if spec.timeout else None,
        idempotent=spec.idempotent,
        on_unknown=effects.void if spec.on_unknown else None,
    )


def _retry(attempts: int) -> Retry | None:
    if attempts == 1:
        return None
    return Retry(attempts, delay=RETRY_WAIT, backoff=2.0, max_delay=1e6, jitter=0.0)


def definitions_for(spec: SagaSpec, effects: Effects) -> SagaDefinitions:
    definitions = SagaDefinitions()
    definitions.saga(DEFINITION)(lambda _input: build(spec, effects))
    return definitions


# -- generated cases ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A saga with deadlines, its faults, and where its process dies (as in
    tests/test_durable_properties.py: `crash` counts the writes of the run, modulo the writes a
    run without a crash makes)."""

    spec: SagaSpec
    plan: FaultPlan
    crash: int
    after: bool
    recovery_crash: tuple[int, bool] | None

    def definitions(self, effects: Effects) -> SagaDefinitions:
        return definitions_for(self.spec, effects)


def action_paths(spec: SagaSpec) -> list[str]:
    """The paths of the actions a fault-free run performs: where a plan may fail or hang."""
    discovery = RecordingInterpreter()
    effects = Effects(FaultPlan())

    async def run() -> Outcome[object]:
        return await AsyncInterpreter(listeners=[discovery.events.append]).run_saga(
            build(spec, effects), saga_id=SAGA_ID
        )

    on_virtual_time(run)
    completed = [event.path for event in discovery.events if isinstance(event, StepCompleted)]
    return list(dict.fromkeys(completed))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    # A deadline around the whole saga: every action that hangs is cut off in the end.
    spec = TimeoutSpec(draw(saga_specs(max_leaves=5, timeouts=True)))
    plan = draw(fault_plans(action_paths(spec), interrupts=False, hangs=True))
    crash = draw(st.integers(0, 63))
    after = draw(st.booleans())
    recovery_crash = draw(st.none() | st.tuples(st.integers(0, 8), st.booleans()))
    return Case(spec, plan, crash, after, recovery_crash)


def start(runs: DurableSagas) -> object:
    return on_virtual_time(partial(runs.start_async, DEFINITION, None, saga_id=SAGA_ID))


def recover(runs: DurableSagas) -> dict[str, Outcome[object] | BaseException]:
    recovered = on_virtual_time(runs.recover_async)
    assert isinstance(recovered, dict)
    return recovered


# -- the property -------------------------------------------------------------------------------


@EXAMPLES
@given(case=cases())
def test_a_run_with_deadlines_killed_at_a_journal_write_recovers_as_it_would_have_ended(
    case: Case,
) -> None:
    spec = case.spec

    # Without a crash, the durable run is the plain run, recorded.
    plain = Effects(case.plan)
    plain_outcome = on_virtual_time(
        partial(AsyncInterpreter().run_saga, build(spec, plain), saga_id=SAGA_ID)
    )
    assert isinstance(plain_outcome, Success | Failure | PartialFailure)
    reference = Effects(case.plan)
    reference_journal = CrashingJournal(MemoryJournal())
    durable_outcome = start(DurableSagas(reference_journal, case.definitions(reference)))
    assert isinstance(durable_outcome, Success | Failure | PartialFailure)
    assert shape(durable_outcome) == shape(plain_outcome)
    assert trace(reference.world) == trace(plain.world)
    reference_entries = reference_journal.entries(SAGA_ID)
    assert_results_follow_intents(reference_entries, set(), concurrent=True)
    assert_undone_in_reverse_completion_order(reference_entries)
    cut_offs = [entry for entry in reference_entries if entry.kind == "unknown"]
    if any(b"StepTimeoutError" in (entry.payload or b"") for entry in cut_offs):
        event("an attempt a deadline cut off")
    if any(b"could not start" in (entry.payload or b"") for entry in reference_entries):
        event("a retry a deadline kept from starting")

    # The run dies at one of its journal writes; the first recovery may die too.
    effects = Effects(case.plan)
    definitions = case.definitions(effects)
    journal = MemoryJournal()
    first = run_until_crash(
        journal,
        effects,
        definitions,
        (case.crash % reference_journal.writes, case.after),
        start,
    )
    assert first is not None, "the run finished before its crash"
    if first.status is None:
        assert first.world_log == ()
        assert recover(DurableSagas(journal, definitions)) == {}
        return
    crashes = [first]
    recovered: dict[str, Outcome[object] | BaseException] = {}
    if case.recovery_crash is not None:
        second = run_until_crash(
            journal,
            effects,
            definitions,
            case.recovery_crash,
            lambda runs: recovered.update(recover(runs)),
        )
        if second is not None:
            crashes.append(second)
    recovered.update(recover(DurableSagas(journal, definitions)))
    final = Snapshot.take(journal, effects)

    # Exactly one outcome, recorded; starting the id again returns it and runs nothing.
    assert final.status != "running", f"unfinished after recovery: {recovered}"
    outcome = start(DurableSagas(journal, definitions))
    assert isinstance(outcome, Success | Failure | PartialFailure)
    assert Snapshot.take(journal, effects) == final
    assert shape(outcome, errors=False)[0] == final.status
    if SAGA_ID in recovered:
        fresh = recovered[SAGA_ID]
        assert isinstance(fresh, Success | Failure | PartialFailure), f"recovery failed: {fresh!r}"
        assert said(fresh) == said(outcome)

    # What completed before a crash never ran again; what a crash cut off ran again only if
    # that is safe (contract rule 3).
    unknown: set[str] = set()
    for index, at_crash in enumerate(crashes):
        until = crashes[index + 1] if index + 1 < len(crashes) else final
        for done in at_crash.recorded("completed"):
            assert final.actions[done] == at_crash.actions[done], f"{done} ran again"
        for done in at_crash.recorded("compensated"):
            assert final.undos[done] == at_crash.undos[done], f"{done} was undone again"
        for action in at_crash.in_flight("intent"):
            if action not in effects.idempotent:
                assert final.actions[action] == at_crash.actions[action], f"{action} ran again"
            else:
                assert until.actions[action] - at_crash.actions[action] <= 1, f"{action} twice"
            unknown.add(action)
    cut_off = {entry.seq for at_crash in crashes for entry in at_crash.unfinished()}
    assert_results_follow_intents(final.entries, cut_off, concurrent=True)
    assert_undone_in_reverse_completion_order(final.entries)

    # A failed saga undid everything its steps could undo, or says what it did not.
    if isinstance(outcome, Success):
        assert not any(change == "undid" for change, _ in effects.world.log)
    else:
        unknown |= final.recorded("unknown")
        settled = final.recorded("completed") | final.recorded("rejected")
        left = set(effects.world.left_done(unknown - settled))
        assert left <= reported(outcome), (left, outcome)

    # Where no crash cut an action off, the recovery ended as the run left alone did.
    if not any(at_crash.in_flight("intent") for at_crash in crashes):
        event("recovered with no action in flight")
        assert said(outcome) == said(durable_outcome)
        assert trace(effects.world) == trace(reference.world)
    else:
        event("recovered with an action in flight")
