"""Durable runs of generated sagas under fault plans, killed at any journal write and recovered.

Each example draws a saga tree (`saga_specs`, whose steps may also be idempotent or have an
unknown-outcome compensation), a fault plan (which actions and compensations fail, for how many
attempts) and a crash point: the k-th journal write (`append` or `finish`) of the run, before or
after it is performed. A journal proxy raises `Crash` there and at every later write, so
nothing after that point reaches the journal, as when the process dies; the second property
kills the first recovery the same way. A last recovery then runs over the same journal and the
same world, and the journal and the world must show the rules of a durable run:

- exactly one outcome is recorded, and starting the id again returns it without running anything;
- no action (or compensation) whose completion the journal held at a crash ran again after it;
  the one in flight at a crash ran at most once more;
- nothing was undone twice, except by the compensation in flight at a crash (compensations must
  be idempotent, and the one that ran just before the crash is run again);
- a failed saga undid everything its steps could undo, or reports it (`World.left_done`);
- without a crash, a durable run does exactly what the plain `SyncInterpreter` run does.

The steps return JSON-shaped values (their receipt's serial), so the journal can store them; a
crash leaves the world as it was at the crash.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import pairwise
from typing import TypeVar

from crashing_journal import Crash, CrashingJournal
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from fsaga import (
    Failure,
    PartialFailure,
    Retry,
    Saga,
    StepCompleted,
    Success,
    current_context,
    par,
    pure,
    sequence,
    step,
)
from fsaga.durable import DurableSagas, RecordedError, SagaDefinitions
from fsaga.errors import ResultRejectedError
from fsaga.interpreter import SyncInterpreter
from fsaga.journal import CodecError, Entry, Journal, JsonCodec, MemoryJournal
from fsaga.journal.records import SagaStatus
from fsaga.outcome import Outcome
from fsaga.testing import FaultPlan, InjectedFault, RecordingInterpreter
from fsaga.testing.strategies import (
    SUBTREE_TIMEOUT,
    BindSpec,
    ContinuationSpec,
    MapSpec,
    NamedSpec,
    ParSpec,
    PureSpec,
    Receipt,
    SagaSpec,
    SequenceSpec,
    StepSpec,
    ThenSpec,
    TimeoutSpec,
    World,
    fault_plans,
    saga_specs,
)

_T = TypeVar("_T")

SAGA_ID = "generated-1"
DEFINITION = "generated"
EXAMPLES = settings(max_examples=100, deadline=None)


# -- what generated steps do --------------------------------------------------------------------


@dataclass
class Effects:
    """The world generated steps act on, the plan that fails them, and what reached the world.

    Counters are per idempotency key: `actions` counts the calls of an action that reached the
    world, `undos` those of its compensation or unknown-outcome compensation.
    `redundant_undos` counts the undos that found their receipt already undone: the world
    ignores them, as a compensation must be idempotent.

    The actions at the `opaque` paths return an `Opaque` result, which the journal's codec
    cannot encode; with `rejects`, they raise what a durable run makes of that instead
    (`ResultRejectedError` with a `CodecError`), for the plain run to compare with.
    """

    plan: FaultPlan
    opaque: frozenset[str] = frozenset()
    rejects: bool = False
    world: World = field(default_factory=World)
    actions: Counter[str] = field(default_factory=Counter)
    undos: Counter[str] = field(default_factory=Counter)
    redundant_undos: Counter[str] = field(default_factory=Counter)
    acted: dict[str, Receipt] = field(default_factory=dict)
    by_serial: dict[int, Receipt] = field(default_factory=dict)
    idempotent: set[str] = field(default_factory=set)

    def act(self, spec: StepSpec, seen: object) -> object:
        context = current_context()
        if context.path in self.opaque:
            serial = self._act(spec, seen)
            if self.rejects:
                raise ResultRejectedError(Opaque(serial), CodecError("an opaque result"))
            return Opaque(serial)
        return self._act(spec, seen)

    def _act(self, spec: StepSpec, seen: object) -> int:
        context = current_context()
        key = context.idempotency_key
        if spec.idempotent:
            self.idempotent.add(key)
        if spec.idempotent and key in self.acted:
            # An idempotent service answers a key it has seen before it can fail.
            self.actions[key] += 1
            return self.acted[key].serial
        if context.attempt <= self.plan.actions.get(context.path, 0):
            raise InjectedFault("action", context.path, context.attempt)
        self.actions[key] += 1
        receipt = self.world.act(
            spec.label,
            seen,
            key=key,
            idempotent=spec.idempotent,
            compensable=spec.compensable,
            voidable=spec.on_unknown,
        )
        self.acted[key] = receipt
        self.by_serial[receipt.serial] = receipt
        return receipt.serial

    def compensate(self, result: object) -> None:
        serial = result.serial if isinstance(result, Opaque) else result
        assert isinstance(serial, int)
        self._undo(self.by_serial[serial])

    def void(self, _context: object) -> None:
        self._undo(self.acted.get(current_context().idempotency_key))

    def _undo(self, receipt: Receipt | None) -> None:
        context = current_context()
        if context.attempt <= self.plan.compensations.get(context.path, 0):
            raise InjectedFault("compensation", context.path, context.attempt)
        key = context.idempotency_key
        self.undos[key] += 1
        if receipt is None:
            return
        if any(change == "undid" and done is receipt for change, done in self.world.log):
            self.redundant_undos[key] += 1
            return
        self.world.undo(receipt)


@dataclass(frozen=True)
class Opaque:
    """A result `JsonCodec` cannot encode."""

    serial: int


@dataclass(frozen=True)
class OpaqueValue:
    """A final value `JsonCodec` cannot encode."""

    value: object


def refuse_opaque(value: object) -> object:
    """What a durable run does with a final value it cannot encode, for a plain run."""
    raise CodecError("an opaque final value")


def build(spec: SagaSpec, effects: Effects, *, seen: object = None) -> Saga[object]:
    """The saga `spec` describes, acting through `effects` (as `build_saga` acts on a world)."""
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
            return build(inner, effects, seen=seen).timeout(SUBTREE_TIMEOUT)


def _continue(continuation: ContinuationSpec, effects: Effects, value: object) -> Saga[object]:
    return build(continuation.choose(value), effects, seen=value)


def _tagged(tag: str, value: object) -> tuple[str, object]:
    return (tag, value)


def _build_step(spec: StepSpec, effects: Effects, seen: object) -> Saga[object]:
    def act() -> object:
        return effects.act(spec, seen)

    act.__name__ = spec.label
    undoable = spec.compensable or spec.on_unknown
    return step(
        act,
        effects.compensate if spec.compensable else None,
        name=spec.label if spec.explicit else None,
        retry=_retry(spec.attempts),
        compensation_retry=_retry(spec.compensation_attempts) if undoable else None,
        idempotent=spec.idempotent,
        on_unknown=effects.void if spec.on_unknown else None,
    )


def _retry(attempts: int) -> Retry | None:
    # No wait between attempts: the durable runner sleeps for real.
    return None if attempts == 1 else Retry(attempts, delay=0.0, jitter=0.0)


def definitions_for(
    spec: SagaSpec, effects: Effects, *, opaque_final: bool = False
) -> SagaDefinitions:
    """The generated saga as a definition; with `opaque_final`, its final value is opaque."""
    definitions = SagaDefinitions()
    if opaque_final:
        definitions.saga(DEFINITION)(lambda _input: build(spec, effects).map(OpaqueValue))
    else:
        definitions.saga(DEFINITION)(lambda _input: build(spec, effects))
    return definitions


# -- generated sagas ----------------------------------------------------------------------------


@st.composite
def durable_specs(draw: st.DrawFn) -> SagaSpec:
    """`saga_specs(max_leaves=6)` whose steps may be idempotent or have an `on_unknown`: how a
    step in flight at a crash is settled (no timeouts: a sync run cannot make an effect hang).
    """

    def settle(spec: SagaSpec) -> SagaSpec:
        match spec:
            case StepSpec():
                return replace(spec, idempotent=draw(st.booleans()), on_unknown=draw(st.booleans()))
            case PureSpec():
                return spec
            case ThenSpec(first=first, second=second):
                return ThenSpec(settle(first), settle(second))
            case SequenceSpec(items=items):
                return SequenceSpec(tuple(settle(item) for item in items))
            case BindSpec(source=source, continuation=continuation):
                return BindSpec(
                    settle(source),
                    ContinuationSpec(settle(continuation.on_even), settle(continuation.on_odd)),
                )
            case MapSpec(source=source, tag=tag):
                return MapSpec(settle(source), tag)
            case NamedSpec(name=name, inner=inner):
                return NamedSpec(name, settle(inner))
            case ParSpec(branches=branches):
                return ParSpec(tuple(settle(branch) for branch in branches))
            case TimeoutSpec(inner=inner):
                return TimeoutSpec(settle(inner))

    return settle(draw(saga_specs(max_leaves=6)))


def action_paths(spec: SagaSpec) -> list[str]:
    """The paths of the actions a fault-free run performs: where a plan may fail."""
    discovery = RecordingInterpreter()
    discovery.run_saga(build(spec, Effects(FaultPlan())), saga_id=SAGA_ID)
    completed = [event.path for event in discovery.events if isinstance(event, StepCompleted)]
    return list(dict.fromkeys(completed))


# -- a journal the process dies in --------------------------------------------------------------


# -- what a crash leaves ------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """The journal and the world at one moment."""

    entries: tuple[Entry, ...]
    status: SagaStatus | None  # None: the saga was never created
    actions: Counter[str]
    undos: Counter[str]
    world_log: tuple[tuple[str, Receipt], ...]

    @staticmethod
    def take(journal: Journal, effects: Effects) -> Snapshot:
        record = journal.get(SAGA_ID)
        return Snapshot(
            () if record is None else tuple(journal.entries(SAGA_ID)),
            None if record is None else record.status,
            effects.actions.copy(),
            effects.undos.copy(),
            tuple(effects.world.log),
        )

    def recorded(self, kind: str) -> set[str]:
        """The keys of the steps with an entry of `kind`."""
        return {key(entry.path) for entry in self.entries if entry.kind == kind}

    def in_flight(self, kind: str) -> str | None:
        """The key of the effect whose intent (of `kind`) ends the journal: it may have run."""
        if self.status == "running" and self.entries and self.entries[-1].kind == kind:
            return key(self.entries[-1].path)
        return None


def key(path: str) -> str:
    return f"{SAGA_ID}/{path}"


def run_until_crash(
    journal: Journal,
    effects: Effects,
    definitions: SagaDefinitions,
    crash: tuple[int, bool],
    run: Callable[[DurableSagas], object],
) -> Snapshot | None:
    """Run `run` over `journal` killed at `crash` (write number, after it?); what the crash
    left, or None if the run finished before that write."""
    crash_at, after = crash
    taken: list[Snapshot] = []
    dying = CrashingJournal(
        journal,
        crash_at=crash_at,
        after=after,
        on_crash=lambda: taken.append(Snapshot.take(journal, effects)),
    )
    try:
        run(DurableSagas(dying, definitions))
    except Crash:
        (at_crash,) = taken
        # The dying process undoes nothing and writes nothing more: it is dead.
        assert Snapshot.take(journal, effects) == at_crash, "the run went on after its crash"
        return at_crash
    assert not dying.crashed
    return None


# -- outcomes -----------------------------------------------------------------------------------


_RESULTS: dict[str, tuple[str, ...]] = {
    "intent": ("completed", "failed", "unknown", "rejected"),
    "compensation_intent": ("compensated", "compensation_failed"),
}


def assert_results_follow_intents(entries: Sequence[Entry], cut_off: set[int]) -> None:
    """Each intent in `entries` is followed by its result, but those whose ``seq`` is `cut_off`."""
    for intent, following in pairwise([*entries, None]):
        if intent is None or intent.kind not in _RESULTS or intent.seq in cut_off:
            continue
        assert following is not None, f"no result after the last intent {intent}"
        assert following.kind in _RESULTS[intent.kind], (intent, following)
        assert (following.path, following.attempt) == (intent.path, intent.attempt), following


def shape(outcome: Outcome[object], *, errors: bool = True) -> tuple[object, ...]:
    """What an outcome says, comparable across runs (the error by type and message)."""
    match outcome:
        case Success(value=value):
            return ("succeeded", value if errors else None)
        case Failure(error=error, compensated=compensated):
            return ("failed", describe(error) if errors else None, compensated)
        case PartialFailure():
            return (
                "partially_failed",
                describe(outcome.error) if errors else None,
                outcome.compensated,
                tuple(failure.path for failure in outcome.failed_compensations),
                outcome.skipped,
                outcome.unresolved,
            )


def describe(error: BaseException) -> tuple[str, str]:
    return (type(error).__name__, str(error))


def said(outcome: Outcome[object]) -> tuple[object, ...]:
    """Everything an outcome says, comparable between the outcome a run reported and the one
    read back from the journal: a value as the codec gives it back, an error by its type's
    name and its message."""
    codec = JsonCodec()
    match outcome:
        case Success(value=value):
            return ("succeeded", codec.decode(codec.encode(value)))
        case Failure(error=error, compensated=compensated):
            return ("failed", message(error), compensated)
        case PartialFailure():
            return (
                "partially_failed",
                message(outcome.error),
                outcome.compensated,
                tuple(
                    (failure.path, message(failure.error), failure.attempts)
                    for failure in outcome.failed_compensations
                ),
                outcome.skipped,
                outcome.unresolved,
            )


def message(error: BaseException) -> tuple[str, str]:
    if isinstance(error, RecordedError):
        return (error.type_name, error.message)
    return (type(error).__name__, str(error))


def reported(outcome: Outcome[object]) -> set[str]:
    """The keys of the steps an outcome reports as not undone."""
    if not isinstance(outcome, PartialFailure):
        return set()
    paths = [
        *outcome.unresolved,
        *outcome.skipped,
        *(failure.path for failure in outcome.failed_compensations),
    ]
    return {key(path) for path in paths}


def trace(world: World) -> list[tuple[str, str, int, object]]:
    return [(change, receipt.label, receipt.serial, receipt.seen) for change, receipt in world.log]


# -- the properties -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A saga, its faults, and where its process dies.

    Attributes:
        spec: the saga.
        plan: which of its actions and compensations fail, and for how many attempts.
        crash: the journal write (``append`` or ``finish``, from 0) the run dies at, modulo
            the writes a run without a crash makes (so that it does die).
        after: whether it dies just after that write, or just before.
        recovery_crash: where the first recovery dies too (write, after), if it does.
        opaque: the actions whose results the journal cannot encode (`Opaque`).
        opaque_final: whether the saga's final value is one the journal cannot encode.
    """

    spec: SagaSpec
    plan: FaultPlan
    crash: int
    after: bool
    recovery_crash: tuple[int, bool] | None = None
    opaque: frozenset[str] = frozenset()
    opaque_final: bool = False


def reference_run(
    spec: SagaSpec,
    plan: FaultPlan,
    *,
    opaque: frozenset[str] = frozenset(),
    opaque_final: bool = False,
) -> tuple[Effects, Outcome[object], CrashingJournal]:
    """A durable run without a crash, and its journal (which counts the writes)."""
    effects = Effects(plan, opaque)
    journal = CrashingJournal(MemoryJournal())
    runs = DurableSagas(journal, definitions_for(spec, effects, opaque_final=opaque_final))
    return effects, runs.start(DEFINITION, None, saga_id=SAGA_ID), journal


@st.composite
def cases(draw: st.DrawFn, *, recovery_crashes: bool) -> Case:
    spec = draw(durable_specs())
    paths = action_paths(spec)
    plan = draw(fault_plans(paths, interrupts=False))
    crash = draw(st.integers(0, 63))
    after = draw(st.booleans())
    recovery_crash = draw(st.tuples(st.integers(0, 8), st.booleans())) if recovery_crashes else None
    # Now and then, results or a final value the journal cannot encode.
    unencodable = draw(st.integers(0, 2)) == 0
    opaque = (
        draw(st.frozensets(st.sampled_from(paths), min_size=1, max_size=2))
        if unencodable and paths and draw(st.booleans())
        else frozenset()
    )
    opaque_final = unencodable and draw(st.booleans())
    return Case(spec, plan, crash, after, recovery_crash, opaque, opaque_final)


@EXAMPLES
@given(case=cases(recovery_crashes=False))
def test_a_durable_run_killed_at_any_journal_write_recovers_by_the_rules(case: Case) -> None:
    check_recovery(case)


# A recovery that dies as it starts to void the step it found in flight: the next recovery must
# not take the void's intent for that step's result, and run the step again (as it once did,
# when the journal did not record that the step was found unknown).
_VOIDED_IN_FLIGHT = Case(
    ThenSpec(StepSpec("a"), StepSpec("a", attempts=2, on_unknown=True)),
    FaultPlan(),
    crash=2,
    after=False,
    recovery_crash=(0, True),
)


@EXAMPLES
@example(case=_VOIDED_IN_FLIGHT)
@given(case=cases(recovery_crashes=True))
def test_a_recovery_killed_at_any_journal_write_recovers_by_the_rules(case: Case) -> None:
    check_recovery(case)


def check_recovery(case: Case) -> None:
    """Run `case`, killed where it says, recover, and check the rules of a durable run."""
    spec, plan = case.spec, case.plan

    # Without a crash, a durable run is the plain run, recorded (a result or final value the
    # journal cannot encode fails the run, as if the action or the saga had rejected it).
    plain = Effects(plan, case.opaque, rejects=True)
    plain_saga = build(spec, plain)
    if case.opaque_final:
        plain_saga = plain_saga.map(refuse_opaque)
    plain_outcome = SyncInterpreter().run_saga(plain_saga, saga_id=SAGA_ID)
    reference, durable_outcome, reference_journal = reference_run(
        spec, plan, opaque=case.opaque, opaque_final=case.opaque_final
    )
    unencodable = bool(case.opaque) or case.opaque_final
    assert shape(durable_outcome, errors=not unencodable) == shape(
        plain_outcome, errors=not unencodable
    )
    if not isinstance(durable_outcome, Success):
        assert isinstance(plain_outcome, Failure | PartialFailure)
        assert type(durable_outcome.error) is type(plain_outcome.error)
    assert trace(reference.world) == trace(plain.world)
    assert_results_follow_intents(reference_journal.entries(SAGA_ID), set())
    # What it reported is what it recorded (contract rule 11).
    recorded = DurableSagas(
        reference_journal, definitions_for(spec, reference, opaque_final=case.opaque_final)
    ).start(DEFINITION, None, saga_id=SAGA_ID)
    assert said(recorded) == said(durable_outcome)

    # The run dies at one of its journal writes; the first recovery may die too.
    effects = Effects(plan, case.opaque)
    definitions = definitions_for(spec, effects, opaque_final=case.opaque_final)
    journal = MemoryJournal()
    first = run_until_crash(
        journal,
        effects,
        definitions,
        (case.crash % reference_journal.writes, case.after),
        lambda runs: runs.start(DEFINITION, None, saga_id=SAGA_ID),
    )
    assert first is not None, "the run finished before its crash"
    if first.status is None:
        # It died before the saga was created: nothing to recover, nothing done.
        assert first.world_log == ()
        assert DurableSagas(journal, definitions).recover() == {}
        return
    crashes = [first]
    recovered: dict[str, Outcome[object] | BaseException] = {}
    if case.recovery_crash is not None:
        second = run_until_crash(
            journal,
            effects,
            definitions,
            case.recovery_crash,
            lambda runs: recovered.update(runs.recover()),
        )
        if second is not None:
            crashes.append(second)
    recovered.update(DurableSagas(journal, definitions).recover())
    final = Snapshot.take(journal, effects)

    for at_crash in crashes:
        flight = at_crash.entries[-1].kind if at_crash.entries else "nothing"
        event(f"crashed with {flight if at_crash.status == 'running' else 'outcome'} last")
    event(f"outcome: {final.status}")
    if case.opaque or case.opaque_final:
        event("with results the journal cannot encode")

    # Exactly one outcome, recorded; starting the id again returns it and runs nothing.
    assert final.status != "running", f"unfinished after recovery: {recovered}"
    assert journal.sagas("running") == []
    outcome = DurableSagas(journal, definitions).start(DEFINITION, None, saga_id=SAGA_ID)
    if isinstance(outcome, PartialFailure) and any(
        "cannot run" in str(failure.error) for failure in outcome.failed_compensations
    ):
        event("a compensation refused: its result was never recorded")
    assert Snapshot.take(journal, effects) == final
    assert shape(outcome, errors=False)[0] == final.status
    if any(entry.kind == "compensation_intent" for entry in final.entries):
        assert not isinstance(outcome, Success), "a saga whose undo began reported Success"
    if SAGA_ID in recovered:
        fresh = recovered[SAGA_ID]
        assert isinstance(fresh, Success | Failure | PartialFailure), f"recovery failed: {fresh!r}"
        assert said(fresh) == said(outcome)  # what the recovery reported is what it recorded
    else:
        assert crashes[-1].status != "running", f"nothing recovered the saga: {recovered}"

    # What completed before a crash never ran again; what was in flight ran at most once more.
    unknown: set[str] = set()
    redundant_allowed: set[str] = set()
    for index, at_crash in enumerate(crashes):
        until = crashes[index + 1] if index + 1 < len(crashes) else final
        for done in at_crash.recorded("completed") | at_crash.recorded("rejected"):
            assert final.actions[done] == at_crash.actions[done], f"{done} ran again"
        for done in at_crash.recorded("compensated"):
            assert final.undos[done] == at_crash.undos[done], f"{done} was undone again"
        action = at_crash.in_flight("intent")
        if action is not None:
            # Run again only when that is safe (contract rule 3), with the same key.
            if action in effects.idempotent:
                assert until.actions[action] - at_crash.actions[action] <= 1, f"{action} ran twice"
            else:
                assert final.actions[action] == at_crash.actions[action], f"{action} ran again"
            unknown.add(action)
        undo = at_crash.in_flight("compensation_intent")
        if undo is not None:
            assert until.undos[undo] - at_crash.undos[undo] <= 1, f"{undo} undone twice"
            redundant_allowed.add(undo)
    assert set(effects.redundant_undos) <= redundant_allowed, effects.redundant_undos

    # Every effect's result is recorded, but for those a crash cut off.
    cut_off = {at_crash.entries[-1].seq for at_crash in crashes if at_crash.entries}
    assert_results_follow_intents(final.entries, cut_off)
    completed = final.recorded("completed")
    assert completed <= set(effects.acted), f"recorded as done, never done: {completed}"

    # A failed saga undid everything its steps could undo, or says what it did not.
    if isinstance(outcome, Success):
        assert not any(change == "undid" for change, _ in effects.world.log)
        started = final.recorded("intent")
        assert started <= set(effects.acted), f"succeeded, never done: {started - completed}"
    else:
        settled = final.recorded("completed") | final.recorded("rejected")
        left = set(effects.world.left_done(unknown - settled))
        assert left <= reported(outcome), (left, outcome)
