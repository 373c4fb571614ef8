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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import pairwise
from typing import TypeVar

import anyio
import anyio.lowlevel
import pg_journals
import pytest
from crashing_journal import Crash, CrashingJournal
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from servers import PostgresServer

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
from fsaga.interpreter import AsyncInterpreter, SyncInterpreter
from fsaga.journal import CodecError, Entry, Journal, JsonCodec, MemoryJournal, PostgresJournal
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
CONCURRENT_EXAMPLES = settings(max_examples=300, deadline=None)


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

    Built as async actions (`build(..., asynchronous=True)`), the action at a path of `pauses`
    lets the other tasks run that many times before it acts: concurrent `par` branches then
    finish in another order than they were declared in, the same order on every run.
    """

    plan: FaultPlan
    opaque: frozenset[str] = frozenset()
    pauses: Mapping[str, int] = field(default_factory=dict)
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

    async def act_later(self, spec: StepSpec, seen: object) -> object:
        for _ in range(self.pauses.get(current_context().path, 0)):
            await anyio.lowlevel.checkpoint()
        return self.act(spec, seen)

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


def build(
    spec: SagaSpec, effects: Effects, *, seen: object = None, asynchronous: bool = False
) -> Saga[object]:
    """The saga `spec` describes, acting through `effects` (as `build_saga` acts on a world);
    with `asynchronous`, its actions are async (see `Effects`)."""

    def inner(spec: SagaSpec) -> Saga[object]:
        return build(spec, effects, seen=seen, asynchronous=asynchronous)

    match spec:
        case StepSpec():
            return _build_step(spec, effects, seen, asynchronous=asynchronous)
        case PureSpec(value=value):
            return pure(value)
        case ThenSpec(first=first, second=second):
            return inner(first).then(inner(second))
        case SequenceSpec(items=items):
            return sequence(inner(item) for item in items)
        case BindSpec(source=source, continuation=continuation):
            return inner(source).bind(partial(_continue, continuation, effects, asynchronous))
        case MapSpec(source=source, tag=tag):
            return inner(source).map(partial(_tagged, tag))
        case NamedSpec(name=name, inner=named):
            return inner(named).named(name)
        case ParSpec(branches=branches):
            return par(*(inner(branch) for branch in branches))
        case TimeoutSpec(inner=timed):
            return inner(timed).timeout(SUBTREE_TIMEOUT)


def _continue(
    continuation: ContinuationSpec, effects: Effects, asynchronous: bool, value: object
) -> Saga[object]:
    return build(continuation.choose(value), effects, seen=value, asynchronous=asynchronous)


def _tagged(tag: str, value: object) -> tuple[str, object]:
    return (tag, value)


def _build_step(
    spec: StepSpec, effects: Effects, seen: object, *, asynchronous: bool
) -> Saga[object]:
    def act() -> object:
        return effects.act(spec, seen)

    async def act_later() -> object:
        return await effects.act_later(spec, seen)

    act.__name__ = act_later.__name__ = spec.label
    undoable = spec.compensable or spec.on_unknown
    return step(
        act_later if asynchronous else act,
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
    spec: SagaSpec, effects: Effects, *, opaque_final: bool = False, asynchronous: bool = False
) -> SagaDefinitions:
    """The generated saga as a definition; with `opaque_final`, its final value is opaque; with
    `asynchronous`, its actions are async (see `Effects`)."""
    definitions = SagaDefinitions()

    def built(_input: object) -> Saga[object]:
        saga = build(spec, effects, asynchronous=asynchronous)
        return saga.map(OpaqueValue) if opaque_final else saga

    definitions.saga(DEFINITION)(built)
    return definitions


# -- generated sagas ----------------------------------------------------------------------------


@st.composite
def durable_specs(draw: st.DrawFn, *, max_leaves: int = 6, namespace: str = "") -> SagaSpec:
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

    return settle(draw(saga_specs(max_leaves=max_leaves, namespace=namespace)))


@st.composite
def par_specs(draw: st.DrawFn) -> SagaSpec:
    """`durable_specs` around a `par` of two or three of them, so that branches overlap: the
    `par` alone, or after a step, or before one."""
    branches = tuple(
        draw(durable_specs(max_leaves=3, namespace=f"p{index}"))
        for index in range(draw(st.integers(2, 3)))
    )
    fork = ParSpec(branches)
    around = draw(st.sampled_from(["alone", "after", "before"]))
    if around == "alone":
        return fork
    other = draw(durable_specs(max_leaves=2, namespace="q"))
    return ThenSpec(other, fork) if around == "after" else ThenSpec(fork, other)


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

    def in_flight(self, kind: str) -> set[str]:
        """The keys of the effects whose intent (of `kind`) ends their step's timeline: they
        may have run. Run one at a time, that is the last entry; `par` branches run
        concurrently may leave several."""
        return {key(entry.path) for entry in self.unfinished() if entry.kind == kind}

    def unfinished(self) -> list[Entry]:
        """The intents nothing of their step follows, in a saga left running."""
        if self.status != "running":
            return []
        last = {entry.path: entry for entry in self.entries}
        return [entry for entry in last.values() if entry.kind in _RESULTS]


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


def assert_results_follow_intents(
    entries: Sequence[Entry], cut_off: set[int], *, concurrent: bool = False
) -> None:
    """Each intent in `entries` is followed by its result, but those whose ``seq`` is `cut_off`:
    at once, or, with `concurrent`, by the next entry of its step (concurrent branches
    interleave theirs)."""
    assert [entry.seq for entry in entries] == list(range(1, len(entries) + 1))
    if not concurrent:
        _assert_results_follow(entries, cut_off)
        return
    by_step: dict[str, list[Entry]] = {}
    for entry in entries:
        by_step.setdefault(entry.path, []).append(entry)
    for timeline in by_step.values():
        _assert_results_follow(timeline, cut_off)


def _assert_results_follow(entries: Sequence[Entry], cut_off: set[int]) -> None:
    for intent, following in pairwise([*entries, None]):
        if intent is None or intent.kind not in _RESULTS or intent.seq in cut_off:
            continue
        assert following is not None, f"no result after the last intent {intent}"
        assert following.kind in _RESULTS[intent.kind], (intent, following)
        assert (following.path, following.attempt) == (intent.path, intent.attempt), following


_UNDO_KINDS = ("compensation_intent", "compensated", "compensation_failed")


def assert_undone_in_reverse_completion_order(entries: Sequence[Entry]) -> None:
    """Rules 2 and 5: the undo ran one effect at a time, in the reverse of the order in which
    the journal recorded its steps' last results before it (completed, rejected, or found
    unknown), however many processes shared the run. Concurrent branches record their results
    as they come, so that order is one reverse causal order.

    The undo begins at its first compensation, or at its first run-again of a step whose
    outcome is unknown (its intent says so, or, where an interrupt cut the step off, follows
    its previous, resultless, intent). The steps an interrupt cut off left no result: they
    count as reported together, as the undo began, in any order among themselves. A step whose
    retry after an unknown outcome a deadline kept from starting counts as reported then (its
    not-started record: a ``failed`` entry right after the ``unknown`` one)."""
    last: dict[str, Entry] = {}
    undo = len(entries)
    for index, entry in enumerate(entries):
        before = last.get(entry.path)
        last[entry.path] = entry
        if entry.kind in _UNDO_KINDS or (
            entry.kind == "intent"
            and before is not None
            and (
                entry.payload is not None
                or (before.kind, before.attempt) == ("intent", entry.attempt - 1)
            )
        ):
            undo = index
            break
    reported_at: dict[str, int] = {}
    previous: dict[str, Entry] = {}
    for index, entry in enumerate(entries[:undo]):
        before = previous.get(entry.path)
        previous[entry.path] = entry
        # A not-started record after an unknown outcome: the step is left unknown only now.
        kept_unknown = entry.kind == "failed" and before is not None and before.kind == "unknown"
        if entry.kind in ("completed", "rejected", "unknown") or kept_unknown:
            reported_at[entry.path] = index
        elif entry.kind == "intent":
            reported_at[entry.path] = undo  # cut off, unless its result follows
    first_undone = dict.fromkeys(
        entry.path
        for entry in entries[undo:]
        if entry.kind in ("intent", "compensation_intent") and entry.path in reported_at
    )
    order = [reported_at[path] for path in first_undone]
    timeline = [f"#{entry.seq} {entry.kind} {entry.path} ({entry.attempt})" for entry in entries]
    assert order == sorted(order, reverse=True), (order, timeline)


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
        pauses: with it, the run is `DurableSagas.start_async`, its actions async, each
            letting the other tasks run this many times (by path, see `Effects`) before it
            acts, so that concurrent `par` branches interleave; without it, `start`.
        recover_async: whether the recoveries are `recover_async` (with async actions), or
            `recover` (with the same actions as plain functions).
    """

    spec: SagaSpec
    plan: FaultPlan
    crash: int
    after: bool
    recovery_crash: tuple[int, bool] | None = None
    opaque: frozenset[str] = frozenset()
    opaque_final: bool = False
    pauses: tuple[tuple[str, int], ...] | None = None
    recover_async: bool = False

    @property
    def concurrent(self) -> bool:
        return self.pauses is not None

    def effects(self, *, rejects: bool = False) -> Effects:
        return Effects(self.plan, self.opaque, rejects=rejects, pauses=dict(self.pauses or ()))

    def definitions(self, effects: Effects, *, recovery: bool = False) -> SagaDefinitions:
        asynchronous = self.recover_async if recovery else self.concurrent
        return definitions_for(
            self.spec, effects, opaque_final=self.opaque_final, asynchronous=asynchronous
        )

    def start(self, runs: DurableSagas) -> Outcome[object]:
        if self.concurrent:
            return anyio.run(partial(runs.start_async, DEFINITION, None, saga_id=SAGA_ID))
        return runs.start(DEFINITION, None, saga_id=SAGA_ID)

    def recover(self, runs: DurableSagas) -> dict[str, Outcome[object] | BaseException]:
        return anyio.run(runs.recover_async) if self.recover_async else runs.recover()


def reference_run(
    spec: SagaSpec,
    plan: FaultPlan,
    *,
    opaque: frozenset[str] = frozenset(),
    opaque_final: bool = False,
) -> tuple[Effects, Outcome[object], CrashingJournal]:
    """A durable run without a crash, and its journal (which counts the writes)."""
    return reference_run_of(Case(spec, plan, 0, False, None, opaque, opaque_final))


def reference_run_of(case: Case) -> tuple[Effects, Outcome[object], CrashingJournal]:
    """`case` run durably without a crash, and its journal (which counts the writes)."""
    effects = case.effects()
    journal = CrashingJournal(MemoryJournal())
    outcome = case.start(DurableSagas(journal, case.definitions(effects)))
    return effects, outcome, journal


@st.composite
def cases(draw: st.DrawFn, *, recovery_crashes: bool, concurrent: bool = False) -> Case:
    spec = draw(par_specs() if concurrent and draw(st.integers(0, 3)) else durable_specs())
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
    if not concurrent:
        return Case(spec, plan, crash, after, recovery_crash, opaque, opaque_final)
    pauses = tuple((path, draw(st.integers(0, 3))) for path in paths)
    recover_async = draw(st.booleans())
    return Case(
        spec, plan, crash, after, recovery_crash, opaque, opaque_final, pauses, recover_async
    )


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


# Two branches whose second steps finish before their first ones would have, were the branches
# run one after another; the first branch's second step fails, so the undo runs too.
_INTERLEAVED = Case(
    ParSpec(
        (
            ThenSpec(StepSpec("a", idempotent=True), StepSpec("b", on_unknown=True)),
            ThenSpec(StepSpec("c"), StepSpec("d", idempotent=True)),
        )
    ),
    FaultPlan(actions={"#0/b": 1}),
    crash=3,
    after=True,
    recovery_crash=(1, False),
    pauses=(("#0/a", 3), ("#0/b", 0), ("#1/c", 1), ("#1/d", 2)),
    recover_async=True,
)


@CONCURRENT_EXAMPLES
@example(case=_INTERLEAVED)
@example(case=replace(_INTERLEAVED, recover_async=False))
@given(case=cases(recovery_crashes=True, concurrent=True))
def test_a_concurrent_durable_run_killed_at_any_journal_write_recovers_by_the_rules(
    case: Case,
) -> None:
    """`par` branches run concurrently by `start_async` interleave their entries; the run dies
    at a journal write, and so may its first recovery, by `recover` or `recover_async`."""
    check_recovery(case)


def check_recovery(case: Case, *, journal: Journal | None = None) -> None:
    """Run `case`, killed where it says, recover, and check the rules of a durable run: in
    `journal` (empty), or in a `MemoryJournal`."""
    spec = case.spec

    # Without a crash, a durable run is the plain run, recorded (a result or final value the
    # journal cannot encode fails the run, as if the action or the saga had rejected it).
    plain = case.effects(rejects=True)
    plain_saga = build(spec, plain, asynchronous=case.concurrent)
    if case.opaque_final:
        plain_saga = plain_saga.map(refuse_opaque)
    plain_outcome = (
        anyio.run(partial(AsyncInterpreter().run_saga, plain_saga, saga_id=SAGA_ID))
        if case.concurrent
        else SyncInterpreter().run_saga(plain_saga, saga_id=SAGA_ID)
    )
    reference, durable_outcome, reference_journal = reference_run_of(case)
    unencodable = bool(case.opaque) or case.opaque_final
    assert shape(durable_outcome, errors=not unencodable) == shape(
        plain_outcome, errors=not unencodable
    )
    if not isinstance(durable_outcome, Success):
        assert isinstance(plain_outcome, Failure | PartialFailure)
        assert type(durable_outcome.error) is type(plain_outcome.error)
    assert trace(reference.world) == trace(plain.world)
    reference_entries = reference_journal.entries(SAGA_ID)
    assert_results_follow_intents(reference_entries, set(), concurrent=case.concurrent)
    assert_undone_in_reverse_completion_order(reference_entries)
    if case.concurrent and _interleaved(reference_entries):
        event("branches interleaved in the journal")
    # What it reported is what it recorded (contract rule 11).
    recorded = DurableSagas(reference_journal, case.definitions(reference)).start(
        DEFINITION, None, saga_id=SAGA_ID
    )
    assert said(recorded) == said(durable_outcome)

    # The run dies at one of its journal writes; the first recovery may die too.
    effects = case.effects()
    definitions = case.definitions(effects, recovery=True)
    journal = MemoryJournal() if journal is None else journal
    first = run_until_crash(
        journal,
        effects,
        case.definitions(effects),
        (case.crash % reference_journal.writes, case.after),
        case.start,
    )
    assert first is not None, "the run finished before its crash"
    if first.status is None:
        # It died before the saga was created: nothing to recover, nothing done.
        assert first.world_log == ()
        assert case.recover(DurableSagas(journal, definitions)) == {}
        return
    crashes = [first]
    recovered: dict[str, Outcome[object] | BaseException] = {}
    if case.recovery_crash is not None:
        second = run_until_crash(
            journal,
            effects,
            definitions,
            case.recovery_crash,
            lambda runs: recovered.update(case.recover(runs)),
        )
        if second is not None:
            crashes.append(second)
    recovered.update(case.recover(DurableSagas(journal, definitions)))
    final = Snapshot.take(journal, effects)

    for at_crash in crashes:
        flight = at_crash.entries[-1].kind if at_crash.entries else "nothing"
        event(f"crashed with {flight if at_crash.status == 'running' else 'outcome'} last")
        if len(at_crash.unfinished()) > 1:
            event("crashed with several effects in flight")
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
        for action in at_crash.in_flight("intent"):
            # Run again only when that is safe (contract rule 3), with the same key.
            if action in effects.idempotent:
                assert until.actions[action] - at_crash.actions[action] <= 1, f"{action} ran twice"
            else:
                assert final.actions[action] == at_crash.actions[action], f"{action} ran again"
            unknown.add(action)
        for undo in at_crash.in_flight("compensation_intent"):
            assert until.undos[undo] - at_crash.undos[undo] <= 1, f"{undo} undone twice"
            redundant_allowed.add(undo)
    assert set(effects.redundant_undos) <= redundant_allowed, effects.redundant_undos

    # Every effect's result is recorded, but for those a crash cut off; the undo ran in the
    # reverse of the order the results were recorded in.
    cut_off = {entry.seq for at_crash in crashes for entry in at_crash.unfinished()}
    assert_results_follow_intents(final.entries, cut_off, concurrent=case.concurrent)
    assert_undone_in_reverse_completion_order(final.entries)
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


def _interleaved(entries: Sequence[Entry]) -> bool:
    """Whether an effect's intent is followed by another step's entry before its result."""
    return any(
        intent.kind in _RESULTS and following.path != intent.path
        for intent, following in pairwise(entries)
    )


# -- on PostgreSQL -------------------------------------------------------------------------------

# Fewer examples than over a `MemoryJournal`: what they check of the replay does not depend on the
# journal, and each example makes a hundred round trips to the server. They check that what
# `PostgresJournal` gives back after a crash (and its refusals of the writes a crash cut off)
# are what the rules need, crash point after crash point.
POSTGRES_EXAMPLES = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def postgres_journal(postgres: PostgresServer) -> Iterator[tuple[PostgresServer, PostgresJournal]]:
    """One journal for the examples of a property, emptied before each."""
    with pg_journals.new_journal(postgres) as journal:
        yield postgres, journal


@POSTGRES_EXAMPLES
@given(case=cases(recovery_crashes=True))
def test_a_run_and_its_recovery_killed_at_any_write_of_a_postgres_journal_recover_by_the_rules(
    postgres_journal: tuple[PostgresServer, PostgresJournal], case: Case
) -> None:
    server, journal = postgres_journal
    pg_journals.clear(server, journal.schema)
    check_recovery(case, journal=journal)


@POSTGRES_EXAMPLES
@example(case=_INTERLEAVED)
@given(case=cases(recovery_crashes=True, concurrent=True))
def test_a_concurrent_run_killed_at_any_write_of_a_postgres_journal_recovers_by_the_rules(
    postgres_journal: tuple[PostgresServer, PostgresJournal], case: Case
) -> None:
    server, journal = postgres_journal
    pg_journals.clear(server, journal.schema)
    check_recovery(case, journal=journal)
