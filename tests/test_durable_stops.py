"""A durable run's last event: `SagaFinished` once its outcome is recorded, `SagaStopped` when it
stops without recording one (docs/concepts.md#rule-9).

Each example draws a saga (as tests/test_durable_properties.py does), a fault plan, now and then
an interrupt of one of its actions, and a stop point: the k-th journal write of one run (a
start, or the recovery of a start killed earlier), which goes wrong in one of five ways:

- ``fenced``: the journal refuses it with `LeaseLostError`, and every later write (the worker
  lost the saga's lease);
- ``failed``: the journal fails before it writes (`JournalError`);
- ``ambiguous``: the journal writes, then fails (the answer to the commit was lost);
- ``taken_over``: another process writes the same first (it creates the saga, appends the same
  entries, or records the same outcome);
- ``crash``: the process dies (`Crash`), before it writes.

Then a recovery without faults finishes the saga. For every run (the killed start, the run
that met the stop point, the recovery), the events must show:

- one `SagaStarted`, first, and exactly one of `SagaFinished` or `SagaStopped`, last; a run that
  emits nothing ran nothing (it found the saga finished);
- `SagaFinished` exactly when the run's own write of the outcome landed in the journal (for an
  ambiguous write: the run read the saga back), with the outcome the journal holds and the run
  returned;
- otherwise `SagaStopped`, with the reason the stop stands for.

And across the runs, the saga ends with one recorded outcome, and at most one `SagaFinished`
was emitted for it: exactly one unless another process recorded it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Literal, TypeVar, get_args

import anyio
import pg_journals
import pytest
from crashing_journal import Crash, CrashingJournal, PassingJournal
from hypothesis import event, given, settings
from hypothesis import strategies as st
from servers import PostgresServer
from test_durable_interrupts import InterruptingEffects
from test_durable_properties import (
    DEFINITION,
    SAGA_ID,
    action_paths,
    definitions_for,
    durable_specs,
    par_specs,
    said,
)

from fsaga import (
    Event,
    SagaFinished,
    SagaStarted,
    SagaStopped,
)
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.events import StopReason
from fsaga.journal import (
    Entry,
    Journal,
    JournalError,
    LeaseLostError,
    MemoryJournal,
    PostgresJournal,
)
from fsaga.journal.records import FinishedStatus, SagaRecord
from fsaga.outcome import Outcome
from fsaga.testing import FaultPlan
from fsaga.testing.strategies import SagaSpec, fault_plans

_T = TypeVar("_T")

Stop = Literal["fenced", "failed", "ambiguous", "taken_over", "crash"]

REASONS: dict[Stop, StopReason] = {
    "fenced": "fenced",
    "failed": "journal_failed",
    "ambiguous": "journal_failed",
    "taken_over": "taken_over",
    "crash": "interrupted",
}
"""The reason a run that met each stop, and recorded no outcome, must give."""


class StoppingJournal(PassingJournal):
    """`journal`, whose write number `at` (``append``, ``finish``, a ``create`` with entries,
    counted from 0) goes wrong as `stop` says (see the module docstring).

    `landed` tells whether the run's own ``finish`` wrote its outcome; `stopped` whether the
    stop point was met.
    """

    def __init__(self, journal: Journal, *, stop: Stop, at: int) -> None:
        super().__init__(journal)
        self.stop = stop
        self.at = at
        self.writes = 0
        self.stopped = False
        self.landed = False

    def _write(self, perform: Callable[[], _T], first: Callable[[], object]) -> _T:
        """Perform a write; at the stop point, go wrong (`first` is what another process writes
        first, for ``taken_over``)."""
        index = self.writes
        self.writes += 1
        if self.stopped and self.stop in ("fenced", "crash"):
            return self._refuse()
        if index != self.at:
            return perform()
        self.stopped = True
        match self.stop:
            case "fenced" | "crash":
                return self._refuse()
            case "failed":
                raise JournalError("the connection broke before the commit")
            case "ambiguous":
                perform()
                raise JournalError("the connection broke during the commit")
            case "taken_over":
                first()
                return perform()

    def _refuse(self) -> _T:  # type: ignore[type-var]
        if self.stop == "crash":
            raise Crash("the process died")
        raise LeaseLostError(SAGA_ID, "worker-a", holder="worker-b", expires_at=None)

    def create(
        self, saga_id: str, name: str, version: int, input: bytes, *, entries: Sequence[Entry] = ()
    ) -> tuple[SagaRecord, bool]:
        create = partial(self.journal.create, saga_id, name, version, input, entries=entries)
        return self._write(create, create) if entries else create()

    def append(self, saga_id: str, entries: Sequence[Entry]) -> None:
        append = partial(self.journal.append, saga_id, entries)
        self._write(append, append)

    def finish(
        self,
        saga_id: str,
        status: FinishedStatus,
        outcome: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> bool:
        def finish() -> bool:
            finished = self.journal.finish(saga_id, status, outcome, entries=entries)
            self.landed = self.landed or finished
            return finished

        other = partial(self.journal.finish, saga_id, status, outcome, entries=entries)
        return self._write(finish, other)


class LandingJournal(CrashingJournal):
    """`CrashingJournal` that also tells whether the run's ``finish`` wrote its outcome."""

    landed = False

    def finish(
        self,
        saga_id: str,
        status: FinishedStatus,
        outcome: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> bool:
        def finish() -> bool:
            finished = self.journal.finish(saga_id, status, outcome, entries=entries)
            self.landed = self.landed or finished
            return finished

        return self._write(finish)


@dataclass(frozen=True)
class Case:
    spec: SagaSpec
    plan: FaultPlan
    interrupt_after: bool
    stop: Stop
    at: int
    # The start dies at this write, before it or (`after`) just after it, and the stop point
    # is met by its recovery; or None.
    crash: int | None
    after: bool
    concurrent: bool

    def effects(self) -> InterruptingEffects:
        return InterruptingEffects(self.plan, interrupt_after=self.interrupt_after)

    def definitions(self, effects: InterruptingEffects, *, start: bool) -> SagaDefinitions:
        """How a start builds the saga (async actions, for `start_async`), or a recovery
        (`resume`, with `SyncInterpreter`, or `AsyncInterpreter` where it must)."""
        return definitions_for(self.spec, effects, asynchronous=self.concurrent and start)


@dataclass
class Run:
    """One run and what its listeners heard."""

    what: str
    events: list[Event] = field(default_factory=list)
    returned: Outcome[object] | None = None
    raised: BaseException | None = None

    @property
    def last(self) -> SagaFinished | SagaStopped | None:
        ends = [event for event in self.events if isinstance(event, SagaFinished | SagaStopped)]
        assert len(ends) <= 1, f"{self.what}: more than one last event: {ends}"
        return ends[0] if ends else None


@st.composite
def cases(draw: st.DrawFn) -> Case:
    concurrent = draw(st.integers(0, 3)) == 0
    spec = draw(par_specs() if concurrent else durable_specs())
    paths = action_paths(spec)
    plan = draw(fault_plans(paths, interrupts=False))
    interrupt = draw(st.none() | st.sampled_from(paths)) if paths else None
    return Case(
        spec,
        FaultPlan(plan.actions, plan.compensations, interrupt),
        interrupt_after=draw(st.booleans()),
        stop=draw(st.sampled_from(get_args(Stop))),
        at=draw(st.integers(0, 63)),
        crash=draw(st.none() | st.integers(0, 63)),
        after=draw(st.booleans()),
        concurrent=concurrent,
    )


def reference_writes(case: Case) -> int:
    """How many journal writes the start of `case` makes when nothing goes wrong (at least 1)."""
    counting = CrashingJournal(MemoryJournal())
    runs = DurableSagas(counting, case.definitions(case.effects(), start=True))
    run(case, runs, "start", Run("reference"))
    return max(counting.writes, 1)


def run(case: Case, runs: DurableSagas, what: str, heard: Run) -> Run:
    """Start the saga (or, for a ``recovery``, resume it), catching what it raises."""
    try:
        if what == "recovery":
            heard.returned = runs.resume(SAGA_ID)
        elif case.concurrent:
            heard.returned = anyio.run(partial(runs.start_async, DEFINITION, None, saga_id=SAGA_ID))
        else:
            heard.returned = runs.start(DEFINITION, None, saga_id=SAGA_ID)
    except (Exception, KeyboardInterrupt, Crash) as error:
        heard.raised = error
    return heard


def check_one_run(
    heard: Run, journal: Journal, definitions: SagaDefinitions, *, landed: bool
) -> None:
    """The events of one run: one start, one last event; `SagaFinished` exactly when `landed`
    (the run's own write of the outcome is in the journal), with that outcome."""
    if not heard.events:
        assert not landed, f"{heard.what}: recorded an outcome without a run"
        return
    starts = [event for event in heard.events if isinstance(event, SagaStarted)]
    assert len(starts) == 1, f"{heard.what}: {heard.events}"
    assert heard.events[0] is starts[0], f"{heard.what}: {heard.events}"
    last = heard.last
    assert last is not None, f"{heard.what}: no last event"
    assert heard.events[-1] is last, f"{heard.what}: {heard.events}"
    if landed:
        assert isinstance(last, SagaFinished), f"{heard.what} recorded its outcome, yet {last}"
        recorded = DurableSagas(journal, definitions).start(DEFINITION, None, saga_id=SAGA_ID)
        assert said(last.outcome) == said(recorded)
        if heard.returned is not None:
            assert last.outcome is heard.returned
    else:
        assert isinstance(last, SagaStopped), f"{heard.what} recorded nothing, yet {last}"
        assert heard.returned is None or heard.raised is None


def check(case: Case, journal: Journal) -> None:
    # The crash among the writes of the start; the stop point among those left (or past them,
    # now and then).
    writes = reference_writes(case)
    if case.crash is not None:
        crash = case.crash % writes
        case = replace(case, crash=crash)
        writes = max(writes - crash, 1)
    case = replace(case, at=case.at % (writes + 1))
    effects = case.effects()
    starting = case.definitions(effects, start=True)
    definitions = case.definitions(effects, start=False)
    runs: list[tuple[Run, bool]] = []

    stopped_run = "start"
    if case.crash is not None:
        dying = LandingJournal(journal, crash_at=case.crash, after=case.after)
        heard = Run("killed start")
        run(case, DurableSagas(dying, starting, listeners=[heard.events.append]), "start", heard)
        runs.append((heard, dying.landed))
        if dying.crashed:
            last = heard.last
            assert last is None or dying.landed or isinstance(last, SagaStopped)
            if isinstance(last, SagaStopped):
                assert last.reason == "interrupted", last
        record = journal.get(SAGA_ID)
        if record is not None and record.status == "running":
            stopped_run = "recovery"

    stopping = StoppingJournal(journal, stop=case.stop, at=case.at)
    heard = Run(stopped_run)
    chosen = starting if stopped_run == "start" else definitions
    run(case, DurableSagas(stopping, chosen, listeners=[heard.events.append]), stopped_run, heard)
    runs.append((heard, stopping.landed))
    event(f"{case.stop} {'met' if stopping.stopped else 'not met'} by the {stopped_run}")
    last = heard.last
    if stopping.stopped and isinstance(last, SagaStopped):
        expected = REASONS[case.stop]
        assert last.reason == expected, (case.stop, last)
        event(f"stopped: {last.reason}")
    if stopping.stopped and case.stop == "ambiguous" and isinstance(last, SagaFinished):
        event("an ambiguous commit of the outcome read back as landed")

    for _ in range(4):  # each interrupt comes once: recover again after one
        record = journal.get(SAGA_ID)
        if record is None or record.status != "running":
            break
        heard = Run("recovery")
        watching = LandingJournal(journal)
        recovery = DurableSagas(watching, definitions, listeners=[heard.events.append])
        run(case, recovery, "recovery", heard)
        runs.append((heard, watching.landed))
        assert not isinstance(heard.raised, LeaseLostError | JournalError), heard.raised

    for heard, landed in runs:
        check_one_run(heard, journal, definitions, landed=landed)
    record = journal.get(SAGA_ID)
    if record is None:
        return  # never created: the start stopped at its first write, before any effect
    assert record.status in get_args(FinishedStatus), f"left {record.status}"
    finished = [heard for heard, _ in runs if isinstance(heard.last, SagaFinished)]
    by_another = (
        case.stop == "taken_over" and stopping.stopped and not any(landed for _, landed in runs)
    )
    assert len(finished) == (0 if by_another else 1), [heard.what for heard in finished]


EXAMPLES = settings(max_examples=300, deadline=None)


@EXAMPLES
@given(case=cases())
def test_exactly_one_of_finished_or_stopped_per_durable_run(case: Case) -> None:
    check(case, MemoryJournal())


@pytest.fixture(scope="module")
def postgres_journal(postgres: PostgresServer) -> Iterator[tuple[PostgresServer, PostgresJournal]]:
    """One journal for the examples of a property, emptied before each."""
    with pg_journals.new_journal(postgres) as journal:
        yield postgres, journal


@settings(max_examples=40, deadline=None)
@given(case=cases())
def test_exactly_one_of_finished_or_stopped_per_durable_run_on_postgres(
    postgres_journal: tuple[PostgresServer, PostgresJournal], case: Case
) -> None:
    server, journal = postgres_journal
    pg_journals.clear(server, journal.schema)
    check(case, journal)
