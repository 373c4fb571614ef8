"""The journal contract (fsaga.journal.protocol), run against every implementation.

Each contract test runs on `MemoryJournal`, on `SqliteJournal` (a file in tmp_path) and on
`PostgresJournal` (a schema of its own on the session's PostgreSQL server); model-based
properties check that random operation sequences leave the durable journals in the same
observable state as the memory one. Several journals (threads, processes) sharing one store, a
file or a schema, are tested on both durable journals. SQLite-only behaviour (pragmas, files)
is in test_journal_sqlite.py, PostgreSQL-only behaviour (schemas, leases, the submission queue)
in test_journal_postgres.py, the codec in test_journal_codec.py.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pg_journals
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from journal_stores import BACKENDS, JournalStore, journal_store
from servers import PostgresServer

from fsaga.journal import (
    ENTRY_KINDS,
    FINISHED_STATUSES,
    Entry,
    EntryKind,
    EntrySequenceError,
    FinishedStatus,
    Journal,
    JournalClosedError,
    MemoryJournal,
    PostgresJournal,
    SagaFinishedError,
    SagaNotDeadError,
    SagaRecord,
    SqliteJournal,
    UnknownSagaError,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Clock:
    """A clock the test sets by hand, and can break to make a write fail midway."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now
        self.broken = False

    def __call__(self) -> float:
        if self.broken:
            raise OSError("clock failed")
        return self.now


def open_journal(
    kind: str, folder: Path, clock: Callable[[], float], request: pytest.FixtureRequest
) -> Journal:
    if kind == "memory":
        return MemoryJournal(clock=clock)
    if kind == "sqlite":
        return SqliteJournal(folder / "journal.db", clock=clock)
    return pg_journals.new_journal(request.getfixturevalue("postgres"), clock=clock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def journal(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Journal]:
    with open_journal(request.param, tmp_path, clock, request) as opened:
        yield opened


def intents(first: int, count: int, path: str = "step") -> list[Entry]:
    return [Entry(seq, "intent", f"{path}{seq}", 1) for seq in range(first, first + count)]


# -- create --------------------------------------------------------------------------------------


def test_create_records_a_running_saga(journal: Journal, clock: Clock) -> None:
    record, created = journal.create("order-1", "order", 3, b'{"sku":"book"}')

    assert created is True
    assert record == SagaRecord(
        saga_id="order-1",
        name="order",
        version=3,
        input=b'{"sku":"book"}',
        status="running",
        outcome=None,
        recovery_attempts=0,
        created_at=clock.now,
        updated_at=clock.now,
    )
    assert journal.get("order-1") == record
    assert journal.entries("order-1") == []
    assert not record.finished


def test_creating_an_id_twice_keeps_the_first_saga(journal: Journal, clock: Clock) -> None:
    first, _ = journal.create("order-1", "order", 1, b"1")
    journal.finish("order-1", "succeeded", b'"done"')
    finished = journal.get("order-1")
    clock.now += 5

    again, created = journal.create("order-1", "refund", 2, b"2", entries=intents(1, 1))

    assert created is False
    assert again == finished
    assert again is not None
    assert (again.name, again.version, again.input) == (first.name, first.version, first.input)
    assert journal.entries("order-1") == []


def test_create_writes_first_entries_in_the_same_commit(journal: Journal) -> None:
    journal.create("order-1", "order", 1, b"{}", entries=intents(1, 2))

    assert journal.entries("order-1") == intents(1, 2)


def test_create_with_misnumbered_entries_writes_nothing(journal: Journal) -> None:
    with pytest.raises(EntrySequenceError):
        journal.create("order-1", "order", 1, b"{}", entries=intents(2, 1))

    assert journal.get("order-1") is None


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (("", "order", 1, b""), ValueError),
        (("id", "", 1, b""), ValueError),
        (("id", "order", "1", b""), TypeError),
        (("id", "order", True, b""), TypeError),
        (("id", "order", 1, "{}"), TypeError),
    ],
)
def test_create_rejects_malformed_fields(
    journal: Journal, arguments: tuple[object, ...], error: type[Exception]
) -> None:
    with pytest.raises(error):
        journal.create(*arguments)  # type: ignore[arg-type]

    assert journal.sagas() == []


# -- append and entries ----------------------------------------------------------------------------


def test_append_extends_the_timeline_in_order(journal: Journal, clock: Clock) -> None:
    journal.create("order-1", "order", 1, b"{}")
    clock.now += 1
    journal.append("order-1", [Entry(1, "intent", "charge", 1)])
    journal.append(
        "order-1",
        [Entry(2, "completed", "charge", 1, b'"C-1"'), Entry(3, "intent", "ship", 1)],
    )

    assert journal.entries("order-1") == [
        Entry(1, "intent", "charge", 1),
        Entry(2, "completed", "charge", 1, b'"C-1"'),
        Entry(3, "intent", "ship", 1),
    ]
    record = journal.get("order-1")
    assert record is not None
    assert record.updated_at == clock.now > record.created_at


def test_a_long_batch_is_appended_whole_and_in_order(journal: Journal) -> None:
    """Longer than `SqliteJournal` puts in one statement: it takes several, in one commit."""
    journal.create("order-1", "order", 1, b"{}", entries=intents(1, 1))

    journal.append("order-1", intents(2, 100))
    journal.finish("order-1", "succeeded", b"1", entries=intents(102, 70))

    assert journal.entries("order-1") == intents(1, 171)


@pytest.mark.parametrize(
    "seqs",
    [[1], [3], [2, 2], [2, 4], [3, 2], [2, 3, 5]],
    ids=["old", "gap", "repeat", "hole", "backwards", "late-hole"],
)
def test_a_misnumbered_batch_writes_nothing(journal: Journal, seqs: list[int]) -> None:
    journal.create("order-1", "order", 1, b"{}", entries=intents(1, 1))
    before = journal.get("order-1")

    with pytest.raises(EntrySequenceError) as raised:
        journal.append("order-1", [Entry(seq, "intent", "s", 1) for seq in seqs])

    assert isinstance(raised.value, ValueError)
    assert (raised.value.expected, raised.value.got) == (2, tuple(seqs))
    assert "another writer" in str(raised.value)
    assert journal.entries("order-1") == intents(1, 1)
    assert journal.get("order-1") == before


def test_an_empty_batch_writes_nothing(journal: Journal, clock: Clock) -> None:
    record, _ = journal.create("order-1", "order", 1, b"{}")
    clock.now += 1

    journal.append("order-1", [])

    assert journal.get("order-1") == record


def test_append_to_an_unknown_saga_is_refused(journal: Journal) -> None:
    with pytest.raises(UnknownSagaError) as raised:
        journal.append("nope", intents(1, 1))

    assert isinstance(raised.value, LookupError)
    assert raised.value.saga_id == "nope"
    with pytest.raises(UnknownSagaError):
        journal.entries("nope")


@pytest.mark.parametrize("dead", [False, True], ids=["finished", "dead"])
def test_append_to_a_saga_that_is_not_running_is_refused(journal: Journal, dead: bool) -> None:
    journal.create("order-1", "order", 1, b"{}")
    if dead:
        journal.claim_for_recovery("order-1", max_attempts=0)
    else:
        journal.finish("order-1", "failed", b'"declined"')

    with pytest.raises(SagaFinishedError, match="not running"):
        journal.append("order-1", intents(1, 1))

    assert journal.entries("order-1") == []


def test_a_write_that_fails_midway_writes_nothing(journal: Journal, clock: Clock) -> None:
    journal.create("order-1", "order", 1, b"{}")
    before = journal.get("order-1")

    clock.broken = True  # the journals read the clock inside their write transaction
    with pytest.raises(OSError, match="clock failed"):
        journal.append("order-1", intents(1, 2))
    with pytest.raises(OSError, match="clock failed"):
        journal.finish("order-1", "succeeded", b"1", entries=intents(1, 1))
    with pytest.raises(OSError, match="clock failed"):
        journal.claim_for_recovery("order-1", max_attempts=1)
    clock.broken = False

    assert journal.get("order-1") == before
    assert journal.entries("order-1") == []


# -- finish --------------------------------------------------------------------------------------


def test_finish_writes_the_outcome_exactly_once(journal: Journal, clock: Clock) -> None:
    journal.create("order-1", "order", 1, b"{}")
    clock.now += 1

    assert journal.finish("order-1", "succeeded", b'"first"') is True
    clock.now += 1
    assert journal.finish("order-1", "failed", b'"second"') is False
    assert journal.finish("order-1", "succeeded", b'"third"', entries=intents(1, 1)) is False

    record = journal.get("order-1")
    assert record is not None
    assert (record.status, record.outcome) == ("succeeded", b'"first"')
    assert record.updated_at == clock.now - 1
    assert record.finished
    assert journal.entries("order-1") == []


def test_finish_appends_last_entries_with_the_outcome(journal: Journal) -> None:
    journal.create("order-1", "order", 1, b"{}", entries=intents(1, 1))
    last = [Entry(2, "completed", "step1", 1, b"7")]

    assert journal.finish("order-1", "partially_failed", b"{}", entries=last) is True
    assert journal.entries("order-1") == [*intents(1, 1), *last]


def test_finish_with_misnumbered_entries_writes_nothing(journal: Journal) -> None:
    journal.create("order-1", "order", 1, b"{}")

    with pytest.raises(EntrySequenceError):
        journal.finish("order-1", "succeeded", b"1", entries=intents(2, 1))

    record = journal.get("order-1")
    assert record is not None
    assert (record.status, record.outcome) == ("running", None)


def test_finish_refuses_a_status_that_is_not_an_ending(journal: Journal) -> None:
    journal.create("order-1", "order", 1, b"{}")

    for status in ("running", "dead", "done"):
        with pytest.raises(ValueError, match="finishes with one of"):
            journal.finish("order-1", status, b"1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        journal.finish("order-1", "succeeded", "1")  # type: ignore[arg-type]
    with pytest.raises(UnknownSagaError):
        journal.finish("nope", "succeeded", b"1")


def test_concurrent_finishes_let_exactly_one_win(journal: Journal) -> None:
    journal.create("order-1", "order", 1, b"{}")
    contenders = 8
    barrier = threading.Barrier(contenders)
    won: list[bool] = [False] * contenders

    def finish(index: int) -> None:
        barrier.wait()
        won[index] = journal.finish("order-1", "succeeded", str(index).encode())

    threads = [threading.Thread(target=finish, args=(index,)) for index in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert won.count(True) == 1
    record = journal.get("order-1")
    assert record is not None
    assert record.outcome == str(won.index(True)).encode()


# -- get and sagas -------------------------------------------------------------------------------


def test_get_an_unknown_saga_is_none(journal: Journal) -> None:
    assert journal.get("nope") is None


def test_sagas_are_listed_by_creation_time_then_id(journal: Journal, clock: Clock) -> None:
    for saga_id, created_at in [("b", 2.0), ("c", 1.0), ("a", 2.0), ("d", 3.0)]:
        clock.now = created_at
        journal.create(saga_id, "order", 1, b"{}")
    journal.finish("a", "failed", b"0")
    journal.finish("d", "failed", b"0")
    journal.claim_for_recovery("b", max_attempts=0)

    assert [record.saga_id for record in journal.sagas()] == ["c", "a", "b", "d"]
    assert [record.saga_id for record in journal.sagas("failed")] == ["a", "d"]
    assert [record.saga_id for record in journal.sagas("running")] == ["c"]
    assert [record.saga_id for record in journal.sagas("dead")] == ["b"]
    assert journal.sagas("succeeded") == []
    with pytest.raises(ValueError, match="status must be one of"):
        journal.sagas("done")  # type: ignore[arg-type]


# -- claim_for_recovery --------------------------------------------------------------------------


def test_claims_count_recoveries_then_dead_letter(journal: Journal, clock: Clock) -> None:
    journal.create("order-1", "order", 1, b"{}")

    claims = [journal.claim_for_recovery("order-1", max_attempts=2) for _ in range(2)]
    clock.now += 1
    last = journal.claim_for_recovery("order-1", max_attempts=2)

    assert claims == [True, True]
    assert last is False
    record = journal.get("order-1")
    assert record is not None
    assert (record.status, record.recovery_attempts, record.outcome) == ("dead", 2, None)
    assert record.updated_at == clock.now
    assert journal.sagas("dead") == [record]
    assert journal.claim_for_recovery("order-1", max_attempts=10) is False
    assert journal.finish("order-1", "succeeded", b"1") is False


def test_a_finished_saga_is_not_claimed(journal: Journal) -> None:
    journal.create("order-1", "order", 1, b"{}")
    journal.finish("order-1", "succeeded", b"1")

    assert journal.claim_for_recovery("order-1", max_attempts=3) is False
    record = journal.get("order-1")
    assert record is not None
    assert (record.status, record.recovery_attempts) == ("succeeded", 0)


def test_a_claim_only_takes_a_stale_saga(journal: Journal, clock: Clock) -> None:
    journal.create("order-1", "order", 1, b"{}")  # updated at 1000
    clock.now = 1_010.0

    assert journal.claim_for_recovery("order-1", max_attempts=5, stale_before=1_000.0) is False
    assert journal.claim_for_recovery("order-1", max_attempts=5, stale_before=1_005.0) is True
    # The claim wrote to the saga at 1010: a second recoverer with the same view backs off.
    assert journal.claim_for_recovery("order-1", max_attempts=5, stale_before=1_005.0) is False
    record = journal.get("order-1")
    assert record is not None
    assert record.recovery_attempts == 1


def test_claim_rejects_bad_arguments(journal: Journal) -> None:
    journal.create("order-1", "order", 1, b"{}")

    with pytest.raises(ValueError, match="max_attempts"):
        journal.claim_for_recovery("order-1", max_attempts=-1)
    with pytest.raises(UnknownSagaError):
        journal.claim_for_recovery("nope", max_attempts=1)


def test_a_claim_notes_when_and_clears_the_last_recovery_error(
    journal: Journal, clock: Clock
) -> None:
    journal.create("order-1", "order", 1, b"{}")
    clock.now = 1_010.0
    assert journal.claim_for_recovery("order-1", max_attempts=5)
    clock.now = 1_020.0
    assert journal.record_recovery_error("order-1", b'["JournalError","disk full"]')

    noted = journal.get("order-1")
    clock.now = 1_030.0
    assert journal.claim_for_recovery("order-1", max_attempts=5)
    claimed = journal.get("order-1")

    assert noted is not None
    assert (noted.last_recovery_at, noted.last_recovery_error) == (
        1_010.0,
        b'["JournalError","disk full"]',
    )
    assert noted.updated_at == 1_020.0
    assert claimed is not None
    assert (claimed.last_recovery_at, claimed.last_recovery_error) == (1_030.0, None)


def test_a_recovery_error_is_only_noted_on_a_running_saga(journal: Journal) -> None:
    journal.create("order-1", "order", 1, b"{}")
    journal.finish("order-1", "succeeded", b"1")

    assert journal.record_recovery_error("order-1", b"x") is False
    record = journal.get("order-1")
    assert record is not None
    assert record.last_recovery_error is None
    with pytest.raises(UnknownSagaError):
        journal.record_recovery_error("nope", b"x")


# -- release -------------------------------------------------------------------------------------


def test_release_takes_a_dead_saga_back_to_running_with_its_count_reset(
    journal: Journal, clock: Clock
) -> None:
    journal.create("order-1", "order", 1, b"{}")
    assert journal.claim_for_recovery("order-1", max_attempts=1)
    clock.now += 5
    assert journal.claim_for_recovery("order-1", max_attempts=1) is False  # parked
    dead = journal.get("order-1")
    clock.now += 5

    released = journal.release("order-1")

    assert dead is not None
    assert dead.status == "dead"
    assert released == journal.get("order-1")
    assert (released.status, released.recovery_attempts) == ("running", 0)
    # Left as it was: the saga counts as abandoned at once, and says when it was last tried.
    assert released.updated_at == dead.updated_at
    assert released.last_recovery_at == dead.last_recovery_at
    assert journal.claim_for_recovery("order-1", max_attempts=1, stale_before=clock.now)


@pytest.mark.parametrize("finished", [False, True], ids=["running", "succeeded"])
def test_release_refuses_a_saga_that_is_not_dead_and_writes_nothing(
    journal: Journal, finished: bool
) -> None:
    journal.create("order-1", "order", 1, b"{}")
    if finished:
        journal.finish("order-1", "succeeded", b"1")
    before = journal.get("order-1")

    with pytest.raises(SagaNotDeadError, match=r"'order-1' is .*, not dead") as raised:
        journal.release("order-1")

    assert raised.value.status == ("succeeded" if finished else "running")
    assert journal.get("order-1") == before
    with pytest.raises(UnknownSagaError):
        journal.release("nope")


# -- closing -------------------------------------------------------------------------------------


def test_a_closed_journal_refuses_every_call(journal: Journal) -> None:
    journal.create("order-1", "order", 1, b"{}")
    journal.close()
    journal.close()

    calls: list[Callable[[], object]] = [
        lambda: journal.create("order-2", "order", 1, b"{}"),
        lambda: journal.append("order-1", intents(1, 1)),
        lambda: journal.entries("order-1"),
        lambda: journal.finish("order-1", "succeeded", b"1"),
        lambda: journal.get("order-1"),
        lambda: journal.sagas(),
        lambda: journal.claim_for_recovery("order-1", max_attempts=1),
        lambda: journal.record_recovery_error("order-1", b"x"),
        lambda: journal.release("order-1"),
    ]
    for call in calls:
        with pytest.raises(JournalClosedError, match="closed"):
            call()


# -- records ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"seq": 0}, ValueError),
        ({"attempt": 0}, ValueError),
        ({"kind": "started"}, ValueError),
        ({"payload": "text"}, TypeError),
    ],
)
def test_entries_are_validated_when_built(
    fields: dict[str, object], error: type[Exception]
) -> None:
    arguments: dict[str, object] = {"seq": 1, "kind": "intent", "path": "s", "attempt": 1}
    with pytest.raises(error):
        Entry(**{**arguments, **fields})  # type: ignore[arg-type]


# -- model-based: both journals agree ------------------------------------------------------------

SAGA_IDS = ["a", "b", "c"]
Drawn = tuple[EntryKind, str, int, bytes | None]


@dataclass(frozen=True)
class Create:
    saga_id: str
    name: str
    version: int
    offset: int
    drawn: list[Drawn]


@dataclass(frozen=True)
class Append:
    saga_id: str
    offset: int
    drawn: list[Drawn]


@dataclass(frozen=True)
class Finish:
    saga_id: str
    status: FinishedStatus
    offset: int
    drawn: list[Drawn]


@dataclass(frozen=True)
class Claim:
    saga_id: str
    max_attempts: int
    stale: bool


@dataclass(frozen=True)
class NoteError:
    saga_id: str
    error: bytes


@dataclass(frozen=True)
class Release:
    saga_id: str


@dataclass(frozen=True)
class Tick:
    pass


Operation = Create | Append | Finish | Claim | NoteError | Release | Tick

# "a" and "b" are created before each run's drawn operations; "c" only when drawn.
saga_ids = st.sampled_from(["a", "a", "b", "b", "c"])
# Mostly the right next seq, sometimes one off either way, to provoke sequence conflicts.
offsets = st.sampled_from([0, 0, 0, -1, 1])
drawn_entry = st.tuples(
    st.sampled_from(ENTRY_KINDS),
    st.sampled_from(["charge", "ship"]),
    st.integers(1, 3),
    st.none() | st.binary(max_size=3),
)
operations = st.lists(
    st.one_of(
        st.builds(Append, saga_ids, offsets, st.lists(drawn_entry, min_size=1, max_size=3)),
        st.builds(Claim, saga_ids, st.integers(0, 2), st.booleans()),
        st.builds(NoteError, saga_ids, st.binary(max_size=3)),
        st.builds(Release, saga_ids),
        st.builds(Tick),
        st.builds(
            Finish,
            saga_ids,
            st.sampled_from(FINISHED_STATUSES),
            offsets,
            st.lists(drawn_entry, max_size=2),
        ),
        st.builds(
            Create,
            saga_ids,
            st.sampled_from(["n", "m"]),
            st.integers(1, 2),
            offsets,
            st.lists(drawn_entry, max_size=2),
        ),
    ),
    max_size=25,
)


def numbered(model: Journal, operation: Create | Append | Finish) -> list[Entry]:
    """The drawn entries, numbered from where the model says the saga's timeline goes on."""
    first = 1
    if not isinstance(operation, Create) and model.get(operation.saga_id) is not None:
        first = len(model.entries(operation.saga_id)) + 1
    return [
        Entry(max(first + operation.offset + index, 1), kind, path, attempt, payload)
        for index, (kind, path, attempt, payload) in enumerate(operation.drawn)
    ]


def apply(journal: Journal, now: float, operation: Operation, entries: list[Entry]) -> object:
    """What the operation returned, or the name of the protocol error it raised."""
    try:
        match operation:
            case Create(saga_id, name, version, _, _):
                return journal.create(saga_id, name, version, b"in", entries=entries)
            case Append(saga_id, _, _):
                journal.append(saga_id, entries)
                return None
            case Finish(saga_id, status, _, _):
                return journal.finish(saga_id, status, status.encode(), entries=entries)
            case Claim(saga_id, max_attempts, stale):
                return journal.claim_for_recovery(
                    saga_id, max_attempts=max_attempts, stale_before=now if stale else None
                )
            case NoteError(saga_id, error):
                return journal.record_recovery_error(saga_id, error)
            case Release(saga_id):
                return journal.release(saga_id)
            case Tick():
                return None
    except (UnknownSagaError, SagaFinishedError, EntrySequenceError, SagaNotDeadError) as error:
        return type(error).__name__


def observable_state(journal: Journal) -> object:
    records = journal.sagas()
    return (
        records,
        [journal.get(saga_id) for saga_id in SAGA_IDS],
        [journal.entries(record.saga_id) for record in records],
    )


def behave_alike(steps: list[Operation], durable: Journal, clock: Clock) -> None:
    """Apply `steps` to a memory journal and to `durable` (on `clock`): the same answers, and
    the same observable state after each."""
    with MemoryJournal(clock=clock) as memory:
        for operation in [Create("a", "n", 1, 0, []), Create("b", "n", 1, 0, []), *steps]:
            if isinstance(operation, Tick):
                clock.now += 1
                continue
            entries = (
                numbered(memory, operation)
                if isinstance(operation, Create | Append | Finish)
                else []
            )
            expected = apply(memory, clock.now, operation, entries)

            assert apply(durable, clock.now, operation, entries) == expected
            assert observable_state(durable) == observable_state(memory)


@settings(max_examples=50, deadline=None)
@given(operations)
def test_memory_and_sqlite_journals_behave_alike(steps: list[Operation]) -> None:
    clock = Clock()
    with (
        tempfile.TemporaryDirectory() as folder,
        SqliteJournal(Path(folder) / "journal.db", synchronous="NORMAL", clock=clock) as sqlite,
    ):
        behave_alike(steps, sqlite, clock)


@dataclass(frozen=True)
class SharedJournal:
    """One PostgreSQL journal for every example of a property, on a clock the examples set
    back; `reset` clears it before each."""

    server: PostgresServer
    journal: PostgresJournal
    clock: Clock

    def reset(self) -> None:
        pg_journals.clear(self.server, self.journal.schema)
        self.clock.now = Clock().now


@pytest.fixture(scope="module")
def shared_postgres_journal(postgres: PostgresServer) -> Iterator[SharedJournal]:
    clock = Clock()
    with pg_journals.new_journal(postgres, clock=clock) as journal:
        yield SharedJournal(postgres, journal, clock)


@settings(max_examples=50, deadline=None)
@given(operations)
def test_memory_and_postgres_journals_behave_alike(
    shared_postgres_journal: SharedJournal, steps: list[Operation]
) -> None:
    shared_postgres_journal.reset()
    behave_alike(steps, shared_postgres_journal.journal, shared_postgres_journal.clock)


# -- several journals on one store: threads and processes ----------------------------------------


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JournalStore:
    """Where several journals meet: one SQLite file, or one PostgreSQL schema."""
    return journal_store(request.param, request, tmp_path)


def test_two_journals_on_one_store_see_each_others_writes(store: JournalStore) -> None:
    with store.open() as first, store.open() as second:
        first.create("order-1", "order", 1, b"{}")
        second.append("order-1", [Entry(1, "intent", "charge", 1)])

        assert first.entries("order-1") == [Entry(1, "intent", "charge", 1)]
        # Both read the timeline at seq 1; only the first to write seq 2 gets it.
        first.append("order-1", [Entry(2, "completed", "charge", 1, b"1")])
        with pytest.raises(EntrySequenceError):
            second.append("order-1", [Entry(2, "failed", "charge", 1, b'"x"')])
        assert second.entries("order-1")[-1].kind == "completed"


def race(contenders: int, attempt: Callable[[int], bool]) -> list[bool]:
    """Run `attempt(index)` in `contenders` threads released together; what each returned."""
    barrier = threading.Barrier(contenders)
    results = [False] * contenders

    def run(index: int) -> None:
        barrier.wait()
        results[index] = attempt(index)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def finisher(journals: list[Journal], saga_id: str) -> Callable[[int], bool]:
    """Contender `index` finishes the saga through its own journal, with its index as outcome."""
    return lambda index: journals[index].finish(saga_id, "succeeded", b"%d" % index)


def test_racing_journals_on_one_store_finish_a_saga_once(store: JournalStore) -> None:
    with contextlib.ExitStack() as stack:
        journals = [stack.enter_context(store.open()) for _ in range(4)]
        for round_ in range(5):
            saga_id = f"order-{round_}"
            journals[0].create(saga_id, "order", 1, b"{}")

            won = race(4, finisher(journals, saga_id))

            assert won.count(True) == 1
            record = journals[0].get(saga_id)
            assert record is not None
            assert record.outcome == b"%d" % won.index(True)


def test_racing_journals_on_one_store_create_a_saga_once(store: JournalStore) -> None:
    with contextlib.ExitStack() as stack:
        journals = [stack.enter_context(store.open()) for _ in range(4)]

        created = race(4, lambda index: journals[index].create("order-1", "order", index, b"{}")[1])

        assert created.count(True) == 1
        record = journals[0].get("order-1")
        assert record is not None
        assert record.version == created.index(True)


def test_racing_journals_on_one_store_append_each_seq_once(store: JournalStore) -> None:
    """The compare-and-set on the timeline: of writers that all read it at the same length,
    exactly one extends it; the others get `EntrySequenceError` and write nothing."""
    with contextlib.ExitStack() as stack:
        journals = [stack.enter_context(store.open()) for _ in range(4)]
        journals[0].create("order-1", "order", 1, b"{}")
        for seq in range(1, 6):

            def append(index: int, seq: int = seq) -> bool:
                try:
                    journals[index].append("order-1", [Entry(seq, "intent", f"w{index}", 1)])
                except EntrySequenceError:
                    return False
                return True

            won = race(4, append)

            assert won.count(True) == 1
            assert journals[0].entries("order-1")[-1] == Entry(
                seq, "intent", f"w{won.index(True)}", 1
            )
        assert [entry.seq for entry in journals[0].entries("order-1")] == [1, 2, 3, 4, 5]


OPEN_JOURNAL = """
import sys
from fsaga.journal import Entry, PostgresJournal, SqliteJournal


def open_journal(spec):
    kind, _, where = spec.partition(":")
    if kind == "sqlite":
        return SqliteJournal(where)
    schema, _, dsn = where.partition(":")
    return PostgresJournal(dsn, schema=schema)
"""

SUBPROCESS_WRITER = (
    OPEN_JOURNAL
    + """
with open_journal(sys.argv[1]) as journal:
    journal.append("order-1", [Entry(2, "completed", "charge", 1, b'"C-1"')])
    print(journal.finish("order-1", "succeeded", b'"done"'))
    journal.create("order-2", "order", 1, b"{}", entries=[Entry(1, "intent", "charge", 1)])
"""
)

SUBPROCESS_FINISHER = (
    OPEN_JOURNAL
    + """
with open_journal(sys.argv[1]) as journal:
    print(journal.finish("order-1", "succeeded", sys.argv[2].encode()))
"""
)


def python(script: str, *arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *arguments],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_another_process_writes_while_this_one_holds_the_store(store: JournalStore) -> None:
    with store.open() as journal:
        journal.create("order-1", "order", 1, b"{}", entries=[Entry(1, "intent", "charge", 1)])

        stdout, stderr = python(SUBPROCESS_WRITER, store.spec).communicate(timeout=60)

        assert (stdout, stderr) == ("True\n", "")
        assert [entry.kind for entry in journal.entries("order-1")] == ["intent", "completed"]
        assert [record.saga_id for record in journal.sagas("running")] == ["order-2"]
        assert journal.finish("order-1", "failed", b'"late"') is False
        assert journal.integrity_check() == ["ok"]


def test_processes_racing_to_finish_a_saga_let_one_win(store: JournalStore) -> None:
    with store.open() as journal:
        journal.create("order-1", "order", 1, b"{}")
        processes = [python(SUBPROCESS_FINISHER, store.spec, f"P{index}") for index in range(3)]
        answers = [process.communicate(timeout=60) for process in processes]

        assert sorted(stdout for stdout, _ in answers) == ["False\n", "False\n", "True\n"]
        assert all(stderr == "" for _, stderr in answers)
        record = journal.get("order-1")
        assert record is not None
        winner = [stdout for stdout, _ in answers].index("True\n")
        assert record.outcome == f"P{winner}".encode()
