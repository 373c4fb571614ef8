"""Recovery's bookkeeping: what counts towards parking a saga as dead, the way out of "dead",
and sagas another process takes over mid-recovery.

A recovery refused before it touches anything (a changed definition, say) used to be counted:
the claim came before the replay, so a few refused recoveries parked the saga for good, with
a step in flight and earlier steps never compensated, and recovering it with the right
definition then did nothing. Now the replay writes nothing and the claim comes with the run's
first write or effect; a parked saga says why, and can be released.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

import pytest
from crashing_journal import Crash, CrashingJournal
from durable_worker import EvidenceJournal

from fsaga import Failure, Saga, Success, current_context, step
from fsaga.durable import (
    DurableSagas,
    NonDeterminismError,
    RecordedError,
    SagaDefinitions,
    SagaParkedError,
)
from fsaga.journal import (
    Entry,
    JournalError,
    JsonCodec,
    MemoryJournal,
    SagaNotDeadError,
    UnknownSagaError,
)

CODEC = JsonCodec()
IN_FLIGHT = [
    Entry(1, "intent", "first", 1),
    Entry(2, "completed", "first", 1, CODEC.encode("first-1")),
    Entry(3, "intent", "second", 1),
]


class Relay:
    """Two idempotent steps that count their runs; `inside_first` runs inside the first
    action's first run (to let another process act meanwhile)."""

    def __init__(self) -> None:
        self.ran: Counter[str] = Counter()
        self.undone: list[str] = []
        self.inside_first: list[object] = []

    def act(self, name: str) -> str:
        self.ran[name] += 1
        if name == "first" and self.ran[name] == 1:
            for hook in self.inside_first:
                assert callable(hook)
                hook()
        return f"{name}-{current_context().attempt}"

    def saga(self, _input: object) -> Saga[str]:
        def undoable(name: str) -> Saga[str]:
            return step(
                lambda: self.act(name),
                lambda _: self.undone.append(name),
                name=name,
                idempotent=True,
            )

        return undoable("first").then(undoable("second"))


def definitions_for(relay: Relay) -> SagaDefinitions:
    definitions = SagaDefinitions()
    definitions.saga("relay")(relay.saga)
    return definitions


def unfinished(entries: list[Entry]) -> MemoryJournal:
    journal = MemoryJournal()
    journal.create("r-1", "relay", 1, CODEC.encode(None), entries=entries)
    return journal


def changed_definitions() -> SagaDefinitions:
    changed = SagaDefinitions()
    changed.saga("relay")(lambda _: step(lambda: "x", name="audit"))
    return changed


# -- refused recoveries are not counted ---------------------------------------------------------


def test_a_refused_recovery_is_never_counted_so_the_right_definition_still_recovers_it() -> None:
    journal = unfinished(IN_FLIGHT)
    before = journal.get("r-1")
    refusing = DurableSagas(journal, changed_definitions(), max_recovery_attempts=2)

    results = [refusing.recover()["r-1"] for _ in range(5)]

    assert all(isinstance(result, NonDeterminismError) for result in results)
    assert journal.get("r-1") == before  # not claimed, not parked: nothing written
    assert journal.entries("r-1") == IN_FLIGHT
    relay = Relay()
    outcome = DurableSagas(journal, definitions_for(relay), max_recovery_attempts=2).recover()
    assert outcome == {"r-1": Success("second-2")}
    assert relay.ran == Counter({"second": 1})


# -- parking, and the way out -------------------------------------------------------------------


def recover_and_die(journal: MemoryJournal, relay: Relay) -> None:
    """A recovery whose process dies at its first journal write (after its claim)."""
    dying = CrashingJournal(journal, crash_at=0)
    with pytest.raises(Crash):
        DurableSagas(dying, definitions_for(relay), max_recovery_attempts=2).recover()


def test_recover_parks_a_saga_whose_recoveries_keep_stopping_and_says_so() -> None:
    journal = unfinished(IN_FLIGHT)
    relay = Relay()
    runs = DurableSagas(journal, definitions_for(relay), max_recovery_attempts=2)
    recover_and_die(journal, relay)
    recover_and_die(journal, relay)

    parked = runs.recover()

    assert list(parked) == ["r-1"]
    assert isinstance(parked["r-1"], SagaParkedError)
    assert "'r-1' is parked as dead" in str(parked["r-1"])
    assert "release" in str(parked["r-1"])
    assert runs.recover() == {}  # parked sagas are left alone
    with pytest.raises(SagaParkedError):
        runs.start("relay", None, saga_id="r-1")
    assert relay.ran == Counter()


def test_parked_says_why_and_release_gives_the_saga_back_to_recover() -> None:
    clock = iter(float(second) for second in range(100, 200))
    journal = MemoryJournal(clock=lambda: next(clock))
    journal.create("r-1", "relay", 1, CODEC.encode(None), entries=IN_FLIGHT)
    relay = Relay()
    runs = DurableSagas(journal, definitions_for(relay), max_recovery_attempts=2)
    recover_and_die(journal, relay)
    recover_and_die(journal, relay)
    runs.recover()

    (parked,) = runs.parked()

    record = journal.get("r-1")
    assert record is not None
    assert (parked.saga_id, parked.name, parked.version) == ("r-1", "relay", 1)
    assert parked.recovery_attempts == 2
    assert parked.parked_at == record.updated_at
    assert parked.last_recovery_at == record.last_recovery_at
    assert parked.last_recovery_at is not None
    assert parked.last_recovery_at < parked.parked_at
    assert parked.last_recovery_error is None  # its process died: it recorded nothing
    assert parked.last_entry == IN_FLIGHT[-1]
    assert parked.in_flight == IN_FLIGHT[-1]

    runs.release("r-1")

    assert runs.parked() == []
    released = journal.get("r-1")
    assert released is not None
    assert (released.status, released.recovery_attempts) == ("running", 0)
    assert runs.recover() == {"r-1": Success("second-2")}
    assert relay.ran == Counter({"second": 1})


def test_release_refuses_a_saga_that_is_not_parked() -> None:
    journal = unfinished(IN_FLIGHT)
    runs = DurableSagas(journal, definitions_for(Relay()))

    with pytest.raises(SagaNotDeadError, match="'r-1' is running, not dead"):
        runs.release("r-1")
    with pytest.raises(UnknownSagaError):
        runs.release("nobody")


def test_the_error_that_ended_a_recovery_is_recorded_and_shown_once_parked(
    tmp_path: Path,
) -> None:
    """A recovery whose journal write failed (it had claimed the saga) records its error; a
    saga parked after it says that is why."""
    journal = unfinished(IN_FLIGHT)
    relay = Relay()
    failing = EvidenceJournal(journal, tmp_path / "evidence", fail_once=("intent", "second"))
    first = DurableSagas(failing, definitions_for(relay), max_recovery_attempts=1)

    error = first.recover()["r-1"]
    parking = DurableSagas(journal, definitions_for(relay), max_recovery_attempts=1).recover()

    assert isinstance(error, JournalError)
    assert isinstance(parking["r-1"], SagaParkedError)
    (parked,) = first.parked()
    assert isinstance(parked.last_recovery_error, RecordedError)
    assert isinstance(parked.last_recovery_error, JournalError)
    assert parked.last_recovery_error.message == str(error)
    assert relay.ran == Counter()  # the failed write came before the effect


# -- sagas taken over mid-recovery --------------------------------------------------------------


def test_a_saga_another_recovery_finished_meanwhile_returns_its_recorded_outcome() -> None:
    """While this recovery is inside the first step, another one finishes the saga: this one's
    next write finds it finished, and it returns the recorded outcome (it used to report the
    journal's internal numbering error)."""
    journal = unfinished([])
    relay, other = Relay(), Relay()
    relay.inside_first.append(lambda: DurableSagas(journal, definitions_for(other)).recover())

    outcomes = DurableSagas(journal, definitions_for(relay)).recover()

    assert outcomes == {"r-1": Success("second-1")}
    assert relay.ran == Counter({"first": 1})
    assert other.ran == Counter({"first": 1, "second": 1})  # the in-flight step, run again
    record = journal.get("r-1")
    assert record is not None
    assert record.status == "succeeded"


def test_a_saga_another_recovery_took_over_is_left_out_of_the_result() -> None:
    """The other recovery extends the timeline, then its process dies: this one's next write
    conflicts, and it leaves the saga out as running elsewhere (it used to report the journal's
    internal numbering error); a later recovery finishes it from what the other recorded."""
    journal = unfinished([])
    relay, other = Relay(), Relay()

    def take_over_and_die() -> None:
        dying = CrashingJournal(journal, crash_at=1)
        with contextlib.suppress(Crash):
            DurableSagas(dying, definitions_for(other)).recover()

    relay.inside_first.append(take_over_and_die)

    outcomes = DurableSagas(journal, definitions_for(relay)).recover()

    assert outcomes == {}
    assert [entry.kind for entry in journal.entries("r-1")] == ["intent", "unknown", "intent"]
    # The other's retry of first was in flight: a third run learns its result, to undo it.
    last = Relay()
    finished = DurableSagas(journal, definitions_for(last)).recover()["r-1"]
    assert isinstance(finished, Failure)
    assert finished.compensated == ("first",)
    assert (last.ran, last.undone) == (Counter({"first": 1}), ["first"])


def test_a_recovery_that_finds_the_saga_finished_returns_the_recorded_outcome() -> None:
    relay = Relay()
    journal = MemoryJournal()
    runs = DurableSagas(journal, definitions_for(relay))
    first = runs.start("relay", None, saga_id="r-1")

    assert isinstance(first, Success)
    assert runs.start("relay", None, saga_id="r-1") == first
