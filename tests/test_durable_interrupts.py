"""Durable runs an interrupt cut short, then killed at any later journal write and recovered.

An interrupt (`KeyboardInterrupt`) changes what a run decides: it stops forward work at once
and retries nothing, whatever the steps' retry policies say; the effect it cut short leaves no
result in the journal. A recovery replays the journal with the same definition, but knows
nothing of the interrupt: it must still make the decisions the interrupted run made (contract
rule 12), or it diverges from the journal, or worse, runs forward a saga that was being undone
and records a `Success`.

Each example draws a saga (as `tests/test_durable_properties.py` does), a fault plan, and an
interrupt: of an action (before or after its effect reached the world), of a compensation,
or of a retry (raised by a listener as the retry is announced). The run is killed at one of its
journal writes, then recovered, and:

- the recovery reaches an outcome (no `NonDeterminismError`), which is the one recorded;
- once the journal shows the undo began, the saga never reports `Success`;
- what completed before the crash never ran again.

The second property does the same with `start_async`, whose `par` branches run concurrently:
the interrupt cuts off every effect in flight at once, none of which leaves a result, and the
undo may begin by running one of them again to learn its result; a recovery (by `recover` or
`recover_async`) must still find where each was cut off, and undo in the recorded order.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import partial

import anyio
from crashing_journal import Crash, CrashingJournal
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_durable_properties import (
    DEFINITION,
    SAGA_ID,
    Effects,
    Snapshot,
    action_paths,
    assert_undone_in_reverse_completion_order,
    definitions_for,
    durable_specs,
    par_specs,
    said,
)

from fsaga import (
    CompensationRetrying,
    Event,
    Failure,
    PartialFailure,
    Retry,
    Saga,
    StepRetrying,
    Success,
    current_context,
    step,
)
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.journal import Entry, MemoryJournal
from fsaga.testing import FaultPlan
from fsaga.testing.strategies import SagaSpec, StepSpec, fault_plans


@dataclass
class InterruptingEffects(Effects):
    """`Effects` that also interrupt, once per path: the plan's `interrupt` action (before
    its effect, or after it with `interrupt_after`) and its `interrupt_compensations`."""

    interrupt_after: bool = False
    interrupted: set[str] = field(default_factory=set)

    def act(self, spec: StepSpec, seen: object) -> object:
        path = current_context().path
        if path != self.plan.interrupt or path in self.interrupted:
            return super().act(spec, seen)
        self.interrupted.add(path)
        if self.interrupt_after:
            super().act(spec, seen)
        raise KeyboardInterrupt(f"at {path}")

    def compensate(self, result: object) -> None:
        self._interrupt_undo()
        super().compensate(result)

    def void(self, context: object) -> None:
        self._interrupt_undo()
        super().void(context)

    def _interrupt_undo(self) -> None:
        path = current_context().path
        if path in self.plan.interrupt_compensations and f"undo {path}" not in self.interrupted:
            self.interrupted.add(f"undo {path}")
            raise KeyboardInterrupt(f"at the undo of {path}")


@dataclass
class RetryInterrupter:
    """A listener that interrupts the first retry it hears of, as it is announced: the retry
    never happens, though the step's policy asked for it."""

    armed: bool
    fired: bool = False

    def __call__(self, event: Event) -> None:
        if self.armed and not self.fired and isinstance(event, StepRetrying | CompensationRetrying):
            self.fired = True
            raise KeyboardInterrupt(f"while {event.path} waits to retry")


@dataclass(frozen=True)
class Case:
    """`pauses`: with it, the run is `start_async`, its actions async and pausing (by path, see
    `Effects`), and `recover_async` says which recovery runs."""

    spec: SagaSpec
    plan: FaultPlan
    interrupt_after: bool
    interrupt_retry: bool
    crash: int
    after: bool
    pauses: tuple[tuple[str, int], ...] | None = None
    recover_async: bool = False

    def effects(self) -> InterruptingEffects:
        return InterruptingEffects(
            self.plan, pauses=dict(self.pauses or ()), interrupt_after=self.interrupt_after
        )

    def start(self, runs: DurableSagas) -> None:
        with contextlib.suppress(KeyboardInterrupt):
            if self.pauses is None:
                runs.start(DEFINITION, None, saga_id=SAGA_ID)
            else:
                anyio.run(partial(runs.start_async, DEFINITION, None, saga_id=SAGA_ID))

    def recover(self, runs: DurableSagas) -> dict[str, object]:
        if self.recover_async:
            return dict(anyio.run(runs.recover_async))
        return dict(runs.recover())


@st.composite
def cases(draw: st.DrawFn, *, concurrent: bool = False) -> Case:
    spec = draw(par_specs() if concurrent else durable_specs())
    paths = action_paths(spec)
    plan = draw(fault_plans(paths, interrupts=False))
    # Every example interrupts something: an action, and often compensations too.
    interrupt = draw(st.sampled_from(paths)) if paths else None
    undone = draw(st.frozensets(st.sampled_from(paths), max_size=2)) if paths else frozenset()
    plan = FaultPlan(plan.actions, plan.compensations, interrupt, interrupt_compensations=undone)
    return Case(
        spec,
        plan,
        interrupt_after=draw(st.booleans()),
        interrupt_retry=draw(st.booleans()),
        crash=draw(st.integers(0, 63)),
        after=draw(st.booleans()),
        pauses=tuple((path, draw(st.integers(0, 3))) for path in paths) if concurrent else None,
        recover_async=concurrent and draw(st.booleans()),
    )


def undo_began(entries: tuple[Entry, ...]) -> bool:
    return any(entry.kind == "compensation_intent" for entry in entries)


@settings(max_examples=200, deadline=None)
@given(case=cases())
def test_an_interrupted_durable_run_killed_later_recovers_as_it_decided(case: Case) -> None:
    check_interrupted(case)


@settings(max_examples=200, deadline=None)
@given(case=cases(concurrent=True))
def test_an_interrupted_concurrent_durable_run_killed_later_recovers_as_it_decided(
    case: Case,
) -> None:
    check_interrupted(case)


def check_interrupted(case: Case) -> None:
    concurrent = case.pauses is not None
    # How many journal writes the interrupted run makes, to die at one of them.
    counting = CrashingJournal(MemoryJournal())
    reference = case.effects()
    case.start(
        DurableSagas(
            counting,
            definitions_for(case.spec, reference, asynchronous=concurrent),
            listeners=[RetryInterrupter(case.interrupt_retry)],
        )
    )
    if not counting.writes:
        return  # interrupted before its first write: nothing recorded

    effects = case.effects()
    definitions = definitions_for(case.spec, effects, asynchronous=case.recover_async)
    journal = MemoryJournal()
    taken: list[Snapshot] = []
    dying = CrashingJournal(
        journal,
        crash_at=case.crash % counting.writes,
        after=case.after,
        on_crash=lambda: taken.append(Snapshot.take(journal, effects)),
    )
    started = definitions_for(case.spec, effects, asynchronous=concurrent)
    with contextlib.suppress(Crash):
        case.start(DurableSagas(dying, started, listeners=[RetryInterrupter(case.interrupt_retry)]))
    at_crash = taken[0] if taken else None
    event(f"interrupts: {sorted(effects.interrupted)}" if effects.interrupted else "no interrupt")

    # The interrupts not met before the crash may come during a recovery: recover again then,
    # as an operator would (each interrupts once).
    recovered: dict[str, object] = {}
    for _ in range(4):
        try:
            recovered = case.recover(DurableSagas(journal, definitions))
            break
        except KeyboardInterrupt:
            event("a recovery was interrupted")
    final = Snapshot.take(journal, effects)

    if final.status is None:
        assert recovered == {}, "recovered a saga never created"
        return  # it died before its first write: nothing to recover
    assert final.status != "running", f"unfinished after recovery: {recovered}"
    outcome = DurableSagas(journal, definitions).start(DEFINITION, None, saga_id=SAGA_ID)
    if SAGA_ID in recovered:
        fresh = recovered[SAGA_ID]
        assert isinstance(fresh, Success | Failure | PartialFailure), f"recovery failed: {fresh!r}"
        assert said(fresh) == said(outcome)  # what it reported is what it recorded
    if undo_began(final.entries):
        assert not isinstance(outcome, Success), "a saga whose undo began reported Success"
    assert_undone_in_reverse_completion_order(final.entries)
    if at_crash is not None:
        for done in at_crash.recorded("completed") | at_crash.recorded("rejected"):
            assert final.actions[done] == at_crash.actions[done], f"{done} ran again"
        for done in at_crash.recorded("compensated"):
            assert final.undos[done] == at_crash.undos[done], f"{done} was undone again"


# -- the instances --------------------------------------------------------------------------------


def fail() -> str:
    raise RuntimeError("declined")


def definitions(build: object) -> SagaDefinitions:
    made = SagaDefinitions()
    made.saga(DEFINITION)(build)  # type: ignore[arg-type]
    return made


def journal_of(*entries: tuple[str, str, int] | tuple[str, str, int, bytes]) -> MemoryJournal:
    journal = MemoryJournal()
    journal.create(
        SAGA_ID,
        DEFINITION,
        1,
        b"null",
        entries=[Entry(seq, *entry) for seq, entry in enumerate(entries, start=1)],
    )
    return journal


DECLINED = b'["builtins:RuntimeError","RuntimeError","declined"]'


def test_a_step_an_interrupt_cut_short_and_the_undo_ran_again_is_not_run_forward_again() -> None:
    """The recovery took the interrupted idempotent step, which the undo had run again to learn
    its result, for one to retry forward: it ran the saga forward, left the rest of the
    journal unread, and recorded a `Success` for a saga that had been compensated."""
    ran: list[str] = []

    def pay() -> str:
        ran.append("pay")
        return "paid"

    def saga(_: object) -> Saga[object]:
        return step(lambda: "z", lambda _: None, name="z").then(
            step(pay, lambda _: None, name="a", idempotent=True)
        )

    journal = journal_of(
        ("intent", "z", 1),
        ("completed", "z", 1, b'"z"'),
        ("intent", "a", 1),  # cut short by the interrupt: no result
        ("intent", "a", 2),  # the undo runs it again, to learn its result
        ("completed", "a", 2, b'"paid"'),
        ("compensation_intent", "a", 1),
        ("compensated", "a", 1),
        ("compensation_intent", "z", 1),  # the process died here
    )

    recovered = DurableSagas(journal, definitions(saga)).recover()

    outcome = recovered[SAGA_ID]
    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("a", "z")
    assert str(outcome.error) == "UnknownOutcomeError: step 'a' was cut short by an interrupt"
    assert ran == []


def test_an_interrupted_compensation_is_not_retried_by_its_policy_on_replay() -> None:
    """The interrupted run gave up on the compensation; the replay retried it by its policy,
    asked for an attempt the journal does not hold, and diverged on every recovery."""

    def saga(_: object) -> Saga[object]:
        return (
            step(lambda: "z", lambda _: None, name="z")
            .then(step(lambda: "a", lambda _: None, name="a", compensation_retry=Retry(3, delay=0)))
            .then(step(fail, name="b"))
        )

    journal = journal_of(
        ("intent", "z", 1),
        ("completed", "z", 1, b'"z"'),
        ("intent", "a", 1),
        ("completed", "a", 1, b'"a"'),
        ("intent", "b", 1),
        ("failed", "b", 1, DECLINED),
        ("compensation_intent", "a", 1),  # cut off by an interrupt: given up, not retried
        ("compensation_intent", "z", 1),  # the process died here
    )

    outcome = DurableSagas(journal, definitions(saga)).recover()[SAGA_ID]

    assert isinstance(outcome, PartialFailure)
    assert outcome.compensated == ("z",)
    [failure] = outcome.failed_compensations
    assert (failure.path, failure.attempts) == ("a", 1)
    assert str(failure.error) == "Interrupted: the compensation of 'a' was cut off"


def test_a_failure_whose_retry_an_interrupt_prevented_is_not_retried_on_replay() -> None:
    def saga(_: object) -> Saga[object]:
        return step(lambda: "z", lambda _: None, name="z").then(
            step(fail, name="b", retry=Retry(3, delay=0))
        )

    journal = journal_of(
        ("intent", "z", 1),
        ("completed", "z", 1, b'"z"'),
        ("intent", "b", 1),
        ("failed", "b", 1, DECLINED),  # an interrupt came while it waited to retry
        ("compensation_intent", "z", 1),  # the process died here
    )

    outcome = DurableSagas(journal, definitions(saga)).recover()[SAGA_ID]

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("z",)
    assert str(outcome.error) == "RuntimeError: declined"


def test_a_replay_that_ends_before_the_journal_does_records_nothing() -> None:
    """Had the rebuilt saga finished before asking for everything the journal holds, it would
    have decided otherwise than the run that wrote it: its outcome is not the saga's."""
    journal = journal_of(
        ("intent", "z", 1),
        ("completed", "z", 1, b'"z"'),
        ("intent", "y", 1),
    )
    before = journal.entries(SAGA_ID), journal.get(SAGA_ID)

    def shorter(_: object) -> Saga[object]:
        return step(lambda: "z", lambda _: None, name="z")

    [refusal] = DurableSagas(journal, definitions(shorter)).recover().values()

    assert type(refusal).__name__ == "NonDeterminismError"
    assert str(refusal) == (
        f"saga {SAGA_ID!r}: the replay finished, but the journal recorded more: intent of 'y' "
        "(attempt 1) at #3"
    )
    assert (journal.entries(SAGA_ID), journal.get(SAGA_ID)) == before
