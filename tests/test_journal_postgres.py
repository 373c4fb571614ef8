"""`PostgresJournal` beyond the shared contract (test_journal.py): its schema and migrations,
connections and locks, owner leases and the fencing of writes, the submission queue, and the
`LeaseKeeper` that renews a lease in the background.

Every test has a schema of its own on the session's throwaway server (tests/servers.py). Leases
are tested on a clock the test sets (the journal's `clock`), so that a lease expires exactly
when the test says, never by waiting.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import anyio
import anyio.to_thread
import pg_journals
import psycopg
import pytest
from servers import PostgresServer

from fsaga import Saga, Success, step
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.journal import (
    Entry,
    JournalClosedError,
    JournalError,
    JournalVersionError,
    JsonCodec,
    Lease,
    LeaseKeeper,
    LeaseLostError,
    PendingSaga,
    PostgresJournal,
    SagaFinishedError,
    UnknownSagaError,
)
from fsaga.journal.postgres import SCHEMA_VERSION

TTL = 30.0


class Clock:
    """The journal's clock, set by the test."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def journal(postgres: PostgresServer, clock: Clock) -> Iterator[PostgresJournal]:
    with pg_journals.new_journal(postgres, clock=clock) as opened:
        yield opened


def intent(seq: int, path: str = "step") -> Entry:
    return Entry(seq, "intent", path, 1)


# -- the schema ----------------------------------------------------------------------------------


def test_migrate_creates_the_tables_once(postgres: PostgresServer) -> None:
    schema = pg_journals.fresh_schema()

    assert PostgresJournal.migrate(postgres.dsn, schema=schema) == 0
    assert PostgresJournal.migrate(postgres.dsn, schema=schema) == SCHEMA_VERSION

    with pg_journals.raw(postgres) as connection:
        tables = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
            " ORDER BY table_name",
            (schema,),
        ).fetchall()
    assert tables == [("entries",), ("sagas",), ("schema_version",), ("submissions",)]
    assert pg_journals.rows(postgres, schema)["schema_version"] == [(SCHEMA_VERSION, True)]


def test_a_schema_without_a_journal_is_refused_with_the_command_that_creates_it(
    postgres: PostgresServer,
) -> None:
    schema = pg_journals.fresh_schema()

    with pytest.raises(JournalError) as raised:
        PostgresJournal(postgres.dsn, schema=schema)

    assert str(raised.value) == (
        f"no fsaga journal in database 'postgres', schema {schema!r}: create it with "
        f"`python -m fsaga journal migrate --dsn DSN --schema {schema}`, or "
        f"PostgresJournal.migrate(dsn, schema={schema!r})"
    )
    with pg_journals.raw(postgres) as connection:
        found = connection.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
    assert found == (0,)


def test_a_journal_migrated_by_a_newer_fsaga_is_refused_naming_its_database(
    postgres: PostgresServer,
) -> None:
    schema = pg_journals.fresh_schema()
    PostgresJournal.migrate(postgres.dsn, schema=schema)
    with pg_journals.raw(postgres) as connection:
        connection.execute(f'UPDATE "{schema}".schema_version SET version = version + 1')
    before = pg_journals.rows(postgres, schema)

    with pytest.raises(JournalVersionError, match="newer fsaga") as opening:
        PostgresJournal(postgres.dsn, schema=schema)
    with pytest.raises(JournalVersionError) as migrating:
        PostgresJournal.migrate(postgres.dsn, schema=schema)

    for raised in (opening.value, migrating.value):
        assert (raised.found, raised.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
        assert str(raised).startswith(
            f"the PostgreSQL journal in database 'postgres', schema {schema!r} has schema "
            f"version {SCHEMA_VERSION + 1}, but this fsaga supports up to version "
            f"{SCHEMA_VERSION}"
        )
    assert pg_journals.rows(postgres, schema) == before


def test_another_applications_tables_are_refused_and_left_alone(postgres: PostgresServer) -> None:
    schema = pg_journals.fresh_schema()
    with pg_journals.raw(postgres) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
        connection.execute(f'CREATE TABLE "{schema}".sagas (id integer)')

    for attempt in (
        lambda: PostgresJournal(postgres.dsn, schema=schema),
        lambda: PostgresJournal.migrate(postgres.dsn, schema=schema),
    ):
        with pytest.raises(JournalError, match=r"holds tables that are not an fsaga journal's"):
            attempt()

    with pg_journals.raw(postgres) as connection:
        tables = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    assert tables == [("sagas",)]


def migrate_at_once(server: PostgresServer, schema: str, contenders: int) -> list[object]:
    """What `migrate` gave each of `contenders` threads released together (or raised)."""
    barrier = threading.Barrier(contenders)
    found: list[object] = []

    def migrate() -> None:
        barrier.wait()
        try:
            found.append(PostgresJournal.migrate(server.dsn, schema=schema))
        except BaseException as error:
            found.append(error)

    threads = [threading.Thread(target=migrate) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


def test_processes_migrating_one_schema_at_once_take_turns(postgres: PostgresServer) -> None:
    """Each contender migrates over a connection of its own, released together: the advisory
    lock lets one create the tables while the others wait, then find them there."""
    for _ in range(5):
        schema = pg_journals.fresh_schema()

        found = migrate_at_once(postgres, schema, 4)

        assert sorted(found, key=repr) == [0, SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION]
        PostgresJournal(postgres.dsn, schema=schema).close()


def test_an_unreachable_database_is_a_clear_error_that_keeps_the_password(
    postgres: PostgresServer,
) -> None:
    dsn = (
        f"host=127.0.0.1 port={postgres.port} user=postgres dbname=no_such_database password=s3cret"
    )

    for attempt in (
        lambda: PostgresJournal(dsn),
        lambda: PostgresJournal.migrate(dsn),
    ):
        with pytest.raises(JournalError) as raised:
            attempt()
        message = str(raised.value)
        assert message.startswith("cannot connect to the journal's database (")
        assert 'database "no_such_database" does not exist' in message
        assert "host=127.0.0.1" in message
        assert "s3cret" not in message


@pytest.mark.parametrize(
    "options",
    [
        {"schema": ""},
        {"schema": "x" * 64},
        {"schema": "nul\x00"},
        {"max_connections": 0},
        {"lock_timeout": 0},
        {"connect_timeout": -1},
    ],
)
def test_bad_options_are_refused(postgres: PostgresServer, options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"schema|max_connections|timeout"):
        PostgresJournal(postgres.dsn, **options)  # type: ignore[arg-type]


def test_repr_names_the_database_and_schema_and_a_closed_journal_says_so(
    journal: PostgresJournal,
) -> None:
    schema = journal.schema
    assert (journal.database, journal.submission_channel) == (
        "postgres",
        f"fsaga_submitted:{schema}",
    )
    assert repr(journal) == f"PostgresJournal(database='postgres', schema={schema!r})"

    journal.close()

    assert repr(journal).endswith(", closed)")
    with pytest.raises(
        JournalClosedError, match=f"the journal in database 'postgres', schema {schema!r} is closed"
    ):
        journal.acquire("order-1", "w", ttl=TTL)


def test_a_long_schema_name_still_gets_a_channel_postgresql_accepts(
    postgres: PostgresServer,
) -> None:
    schema = f"{pg_journals.fresh_schema()}_".ljust(63, "x")

    with pg_journals.new_journal(postgres, schema=schema) as journal:
        assert len(journal.submission_channel.encode()) <= 63
        assert journal.submit("order-1", "order", b"{}") is True


def test_a_schema_whose_name_needs_quoting_works(postgres: PostgresServer) -> None:
    schema = f'Odd "name" {pg_journals.fresh_schema()}'
    PostgresJournal.migrate(postgres.dsn, schema=schema)

    with PostgresJournal(postgres.dsn, schema=schema) as journal:
        journal.create("order-1", "order", 1, b"{}", entries=[intent(1)])
        assert journal.entries("order-1") == [intent(1)]
        assert journal.integrity_check() == ["ok"]


def test_sagas_are_listed_in_the_byte_order_of_their_ids(journal: PostgresJournal) -> None:
    """As `SqliteJournal` lists them, whatever collation the database's locale would use."""
    ids = ["b", "B", "a", "é", "_x", "A-1", "a1", "Z"]
    for saga_id in ids:
        journal.create(saga_id, "order", 1, b"{}")

    assert [record.saga_id for record in journal.sagas()] == sorted(ids)


def test_a_write_waits_for_the_sagas_lock_then_fails_cleanly(postgres: PostgresServer) -> None:
    with (
        pg_journals.new_journal(postgres, lock_timeout=0.05) as journal,
        psycopg.connect(postgres.dsn) as other,
    ):
        journal.create("order-1", "order", 1, b"{}")
        # Another writer holds the saga's row past the lock timeout.
        other.execute(
            f'SELECT 1 FROM "{journal.schema}".sagas WHERE saga_id = %s FOR UPDATE', ("order-1",)
        )

        with pytest.raises(JournalError, match=r"lock_timeout \(0.05 s\)"):
            journal.append("order-1", [intent(1)])

        other.rollback()
        assert journal.entries("order-1") == []
        journal.append("order-1", [intent(1)])
        assert journal.entries("order-1") == [intent(1)]


def wait_until_blocked(server: PostgresServer, schema: str) -> None:
    """Return once a statement on the journal's tables waits for a lock (asked of the server,
    query after query)."""
    deadline = time.monotonic() + 30
    with pg_journals.raw(server) as connection:
        while time.monotonic() < deadline:
            waiting = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE %s",
                (f'%"{schema}".sagas%',),
            ).fetchone()
            if waiting != (0,):
                return
    raise AssertionError("no statement ever waited for the lock")


@pytest.mark.parametrize("finished", [False, True], ids=["rolled-back", "committed"])
def test_an_append_meeting_a_finish_in_progress_waits_for_it(
    postgres: PostgresServer, journal: PostgresJournal, finished: bool
) -> None:
    """The append locks its saga's row: a finish that has not committed yet (another
    connection's, held open here) makes it wait, and it then sees the saga as the finish left
    it, so that no entry lands after an outcome."""
    journal.create("order-1", "order", 1, b"{}", entries=[intent(1)])
    outcome: list[object] = []

    with psycopg.connect(postgres.dsn) as other:
        other.execute(
            f"UPDATE \"{journal.schema}\".sagas SET status = 'succeeded', outcome = '1'"
            " WHERE saga_id = 'order-1'"
        )

        def append() -> None:
            try:
                journal.append("order-1", [Entry(2, "completed", "step", 1)])
                outcome.append("appended")
            except SagaFinishedError as error:
                outcome.append(error)

        appending = threading.Thread(target=append)
        appending.start()
        wait_until_blocked(postgres, journal.schema)
        if finished:
            other.commit()
        else:
            other.rollback()
        appending.join()

    if finished:
        [error] = outcome
        assert isinstance(error, SagaFinishedError)
        assert journal.entries("order-1") == [intent(1)]
    else:
        assert outcome == ["appended"]
        assert len(journal.entries("order-1")) == 2


def test_a_journal_outlives_a_restart_of_its_server(postgres: PostgresServer) -> None:
    """The restart cuts the pool's connections: a call that meets one fails with `JournalError`
    and writes nothing (retrying is safe), and the pool replaces it."""
    with pg_journals.new_journal(postgres, max_connections=2) as journal:
        journal.create("order-1", "order", 1, b"{}", entries=[intent(1)])

        postgres.restart()

        failures: list[JournalError] = []
        for _ in range(3):  # at most one failure per connection of the pool
            try:
                journal.append("order-1", [intent(2)])
                break
            except JournalError as error:
                failures.append(error)
        assert journal.entries("order-1") == [intent(1), intent(2)]
        assert len(failures) <= 2
        assert all("database 'postgres'" in str(error) for error in failures)


def test_integrity_check_names_what_is_broken(
    postgres: PostgresServer, journal: PostgresJournal
) -> None:
    journal.create("order-1", "order", 1, b"{}", entries=[intent(1), intent(2)])
    journal.create("order-2", "order", 1, b"{}")
    assert journal.integrity_check() == ["ok"]
    with pg_journals.raw(postgres) as connection:
        schema = journal.schema
        connection.execute(f'DELETE FROM "{schema}".entries WHERE seq = 1')
        connection.execute(
            f"UPDATE \"{schema}\".sagas SET status = 'failed' WHERE saga_id = 'order-2'"
        )

    assert journal.integrity_check() == [
        "saga 'order-1': its entries are not numbered 1 to 1",
        "saga 'order-2' is failed but has no outcome",
    ]


def test_text_postgresql_cannot_hold_is_refused(journal: PostgresJournal) -> None:
    journal.create("order-1", "order", 1, b"{}")

    with pytest.raises(ValueError, match="NUL"):
        journal.append("order-1", [intent(1, "a\x00b")])
    with pytest.raises(ValueError, match="owner"):
        journal.acquire("order-1", "w\x00", ttl=TTL)
    assert journal.entries("order-1") == []


# -- leases --------------------------------------------------------------------------------------


def test_a_saga_an_owner_starts_has_its_lease(journal: PostgresJournal, clock: Clock) -> None:
    worker = journal.as_owner("worker-a", ttl=TTL)

    record, created = worker.create("order-1", "order", 1, b"{}", entries=[intent(1)])

    assert created
    assert record == journal.get("order-1")
    assert journal.acquire("order-1", "worker-b", ttl=TTL) is None
    assert journal.renew("order-1", "worker-a", ttl=TTL) == Lease(
        "order-1", "worker-a", clock.now + TTL
    )
    assert repr(worker) == f"OwnedJournal({journal!r}, owner='worker-a', ttl=30)"


def test_acquire_takes_a_free_lease_extends_its_own_and_refuses_a_held_one(
    journal: PostgresJournal, clock: Clock
) -> None:
    journal.create("order-1", "order", 1, b"{}")  # no lease, just written
    assert journal.acquire("order-1", "worker-a", ttl=TTL) is None  # it may be running
    clock.now += TTL  # silent for a ttl: nobody runs it

    taken = journal.acquire("order-1", "worker-a", ttl=TTL)
    clock.now += 1
    extended = journal.acquire("order-1", "worker-a", ttl=TTL)

    assert taken == Lease("order-1", "worker-a", clock.now - 1 + TTL)
    assert extended == Lease("order-1", "worker-a", clock.now + TTL)
    assert journal.acquire("order-1", "worker-b", ttl=TTL) is None


def test_acquire_of_a_saga_that_is_not_running_raises(journal: PostgresJournal) -> None:
    journal.create("order-1", "order", 1, b"{}")
    journal.finish("order-1", "succeeded", b"1")

    with pytest.raises(SagaFinishedError):
        journal.acquire("order-1", "worker-a", ttl=TTL)
    with pytest.raises(UnknownSagaError):
        journal.acquire("nope", "worker-a", ttl=TTL)
    with pytest.raises(ValueError, match="ttl"):
        journal.acquire("order-1", "worker-a", ttl=0)
    with pytest.raises(ValueError, match="owner"):
        journal.acquire("order-1", "", ttl=TTL)


def test_a_lease_not_renewed_in_time_expires_and_another_worker_takes_it(
    journal: PostgresJournal, clock: Clock
) -> None:
    journal.as_owner("worker-a", ttl=TTL).create("order-1", "order", 1, b"{}")
    clock.now += TTL - 1
    assert journal.acquire("order-1", "worker-b", ttl=TTL) is None

    clock.now += 1

    assert journal.acquire("order-1", "worker-b", ttl=TTL) == Lease(
        "order-1", "worker-b", clock.now + TTL
    )
    with pytest.raises(LeaseLostError) as raised:
        journal.renew("order-1", "worker-a", ttl=TTL)
    assert (raised.value.holder, raised.value.expires_at) == ("worker-b", clock.now + TTL)


def test_a_worker_whose_lease_was_taken_over_is_fenced_and_writes_nothing(
    postgres: PostgresServer, journal: PostgresJournal, clock: Clock
) -> None:
    first = journal.as_owner("worker-a", ttl=TTL)
    first.create("order-1", "order", 1, b"{}", entries=[intent(1)])
    clock.now += TTL
    assert journal.claim_expired("worker-b", ttl=TTL) == [
        Lease("order-1", "worker-b", clock.now + TTL)
    ]
    before = pg_journals.rows(postgres, journal.schema)

    writes: list[Callable[[], object]] = [
        lambda: first.append("order-1", [Entry(2, "completed", "step", 1, b"1")]),
        lambda: first.append("order-1", []),
        lambda: first.finish(
            "order-1", "succeeded", b"1", entries=[Entry(2, "completed", "step", 1)]
        ),
        lambda: first.finish("order-1", "succeeded", b"1"),
        lambda: first.claim_for_recovery("order-1", max_attempts=3),
        lambda: first.record_recovery_error("order-1", b"x"),
    ]
    for write in writes:
        with pytest.raises(LeaseLostError) as raised:
            write()
        assert (raised.value.saga_id, raised.value.owner, raised.value.holder) == (
            "order-1",
            "worker-a",
            "worker-b",
        )
        assert "worker 'worker-b' holds it now" in str(raised.value)

    assert pg_journals.rows(postgres, journal.schema) == before
    second = journal.as_owner("worker-b", ttl=TTL)
    second.append("order-1", [Entry(2, "completed", "step", 1, b"1")])
    assert second.finish("order-1", "succeeded", b"1") is True


def test_the_fence_checks_the_saga_first_as_every_journal_does(journal: PostgresJournal) -> None:
    """A worker without the lease learns of a finished saga or a misnumbered batch as any
    writer does; of a lost lease only where the write would otherwise go through."""
    worker = journal.as_owner("worker-a", ttl=TTL)
    journal.create("done", "order", 1, b"{}")
    journal.finish("done", "succeeded", b"1")

    with pytest.raises(SagaFinishedError):
        worker.append("done", [intent(1)])
    assert worker.finish("done", "failed", b"2") is False
    assert worker.record_recovery_error("done", b"x") is False
    assert worker.claim_for_recovery("done", max_attempts=1) is False
    with pytest.raises(UnknownSagaError):
        worker.append("nope", [intent(1)])


def test_renew_extends_only_its_owners_live_lease(journal: PostgresJournal, clock: Clock) -> None:
    journal.as_owner("worker-a", ttl=TTL).create("order-1", "order", 1, b"{}")
    clock.now += TTL - 1

    assert journal.renew("order-1", "worker-a", ttl=5) == Lease(
        "order-1", "worker-a", clock.now + 5
    )
    with pytest.raises(LeaseLostError, match="worker 'worker-a' holds it now"):
        journal.renew("order-1", "worker-b", ttl=5)
    clock.now += 5
    with pytest.raises(LeaseLostError, match="it ran out"):
        journal.renew("order-1", "worker-a", ttl=5)
    with pytest.raises(UnknownSagaError):
        journal.renew("nope", "worker-a", ttl=5)


def test_release_lease_frees_the_saga_at_once_and_fences_its_owner(
    journal: PostgresJournal, clock: Clock
) -> None:
    worker = journal.as_owner("worker-a", ttl=TTL)
    worker.create("order-1", "order", 1, b"{}")

    assert journal.release_lease("order-1", "worker-b") is False
    assert journal.release_lease("order-1", "worker-a") is True
    assert journal.release_lease("order-1", "worker-a") is False

    with pytest.raises(LeaseLostError):
        worker.append("order-1", [intent(1)])
    assert journal.claim_expired("worker-b", ttl=TTL) == [
        Lease("order-1", "worker-b", clock.now + TTL)
    ]


def test_claim_expired_takes_only_sagas_nobody_holds_oldest_first(
    journal: PostgresJournal, clock: Clock
) -> None:
    worker = journal.as_owner("worker-a", ttl=TTL)
    for number in range(4):
        clock.now += 1
        worker.create(f"held-{number}", "order", 1, b"{}")
    journal.create("unleased", "order", 1, b"{}")  # a journal not bound to an owner wrote it
    journal.finish("held-2", "failed", b"0")
    assert journal.claim_expired("worker-b", ttl=TTL) == []

    clock.now += TTL - 2  # held-0 and held-1 ran out; held-3 and unleased did not
    first = journal.claim_expired("worker-b", ttl=TTL, limit=1)
    rest = journal.claim_expired("worker-b", ttl=TTL, limit=10)
    clock.now += 2
    later = journal.claim_expired("worker-c", ttl=TTL, limit=10)

    assert [lease.saga_id for lease in first] == ["held-0"]
    assert [lease.saga_id for lease in rest] == ["held-1"]
    assert [lease.saga_id for lease in later] == ["held-3", "unleased"]
    assert {lease.owner for lease in later} == {"worker-c"}
    with pytest.raises(ValueError, match="limit"):
        journal.claim_expired("worker-b", ttl=TTL, limit=0)


def test_claim_expired_skips_a_saga_being_written_rather_than_wait(
    postgres: PostgresServer, journal: PostgresJournal, clock: Clock
) -> None:
    for saga_id in ("order-1", "order-2"):
        journal.as_owner("worker-a", ttl=TTL).create(saga_id, "order", 1, b"{}")
    clock.now += TTL
    with psycopg.connect(postgres.dsn) as other:
        other.execute(
            f'SELECT 1 FROM "{journal.schema}".sagas WHERE saga_id = %s FOR UPDATE', ("order-1",)
        )

        assert [lease.saga_id for lease in journal.claim_expired("worker-b", ttl=TTL, limit=5)] == [
            "order-2"
        ]

        other.rollback()
    assert [lease.saga_id for lease in journal.claim_expired("worker-c", ttl=TTL, limit=5)] == [
        "order-1"
    ]


def test_workers_sweeping_at_once_each_take_other_sagas(
    postgres: PostgresServer, clock: Clock
) -> None:
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(pg_journals.new_journal(postgres, clock=clock))
        journals = [first] + [
            stack.enter_context(PostgresJournal(postgres.dsn, schema=first.schema, clock=clock))
            for _ in range(3)
        ]
        for number in range(12):
            first.as_owner("dead-worker", ttl=TTL).create(f"order-{number}", "order", 1, b"{}")
        clock.now += TTL
        barrier = threading.Barrier(4)
        taken: list[list[str]] = [[] for _ in journals]

        def sweep(index: int) -> None:
            barrier.wait()
            while claimed := journals[index].claim_expired(f"worker-{index}", ttl=TTL, limit=2):
                taken[index] += [lease.saga_id for lease in claimed]

        threads = [threading.Thread(target=sweep, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    every = [saga_id for sagas in taken for saga_id in sagas]
    assert sorted(every) == sorted(f"order-{number}" for number in range(12))


def test_a_journal_not_bound_to_an_owner_leaves_a_leased_saga_to_its_owner(
    journal: PostgresJournal, clock: Clock
) -> None:
    journal.as_owner("worker-a", ttl=TTL).create("order-1", "order", 1, b"{}")

    assert journal.claim_for_recovery("order-1", max_attempts=3) is False
    clock.now += TTL
    assert journal.claim_for_recovery("order-1", max_attempts=3) is True
    # Its claim cleared the lease that ran out: the saga is silent for a ttl before a worker may
    # take it from the run that claimed it.
    assert journal.claim_expired("worker-b", ttl=TTL) == []
    clock.now += TTL
    assert [lease.owner for lease in journal.claim_expired("worker-b", ttl=TTL)] == ["worker-b"]


def test_finishing_or_parking_a_saga_ends_its_lease(journal: PostgresJournal) -> None:
    worker = journal.as_owner("worker-a", ttl=TTL)
    worker.create("finished", "order", 1, b"{}")
    worker.create("parked", "order", 1, b"{}")

    assert worker.finish("finished", "succeeded", b"1") is True
    assert worker.claim_for_recovery("parked", max_attempts=0) is False

    for saga_id in ("finished", "parked"):
        with pytest.raises(SagaFinishedError):
            journal.renew(saga_id, "worker-a", ttl=TTL)
    released = journal.release("parked")
    assert released.status == "running"
    assert journal.integrity_check() == ["ok"]


@dataclass
class Shop:
    """Effects that count their runs; the first run of ``reserve`` stalls its worker."""

    stall: list[Callable[[], None]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)

    def reserve(self) -> str:
        self.ran.append("reserve")
        if self.stall:
            self.stall.pop()()
        return "R-1"

    def charge(self) -> str:
        self.ran.append("charge")
        return "C-1"


def shop_definitions(shop: Shop) -> SagaDefinitions:
    definitions = SagaDefinitions()

    @definitions.saga("order")
    def order(_input: object) -> Saga[str]:
        return step(shop.reserve, name="reserve", idempotent=True).then(
            step(shop.charge, name="charge")
        )

    return definitions


def test_a_durable_run_that_lost_its_lease_stops_and_the_new_owner_finishes_it(
    journal: PostgresJournal, clock: Clock
) -> None:
    shop = Shop()
    taken: list[Lease] = []

    def stall() -> None:
        # Worker A hangs inside reserve past its lease; worker B's sweep takes the saga over.
        clock.now += TTL
        taken.extend(journal.claim_expired("worker-b", ttl=TTL))

    shop.stall.append(stall)
    first = DurableSagas(journal.as_owner("worker-a", ttl=TTL), shop_definitions(shop))

    with pytest.raises(LeaseLostError, match="worker 'worker-b' holds it now"):
        first.start("order", None, saga_id="o-1")

    assert [lease.saga_id for lease in taken] == ["o-1"]
    assert journal.entries("o-1") == [Entry(1, "intent", "reserve", 1)]  # A wrote nothing more
    second = DurableSagas(journal.as_owner("worker-b", ttl=TTL), shop_definitions(shop))
    assert second.recover() == {"o-1": Success("C-1")}
    assert shop.ran == ["reserve", "reserve", "charge"]  # reserve was in flight: run again
    record = journal.get("o-1")
    assert record is not None
    assert (record.status, record.recovery_attempts) == ("succeeded", 1)
    assert first.start("order", None, saga_id="o-1") == Success("C-1")  # recorded
    assert journal.integrity_check() == ["ok"]


# -- the submission queue ------------------------------------------------------------------------


def test_submit_queues_a_saga_once(journal: PostgresJournal, clock: Clock) -> None:
    assert journal.submit("order-1", "order", b'{"sku":"a"}') is True
    clock.now += 1
    assert journal.submit("order-1", "order", b'{"sku":"b"}') is False
    journal.create("order-2", "order", 1, b"{}")
    assert journal.submit("order-2", "order", b"{}") is False

    assert journal.pending() == [PendingSaga("order-1", "order", b'{"sku":"a"}', clock.now - 1)]
    assert journal.get("order-1") is None
    with pytest.raises(ValueError, match="name"):
        journal.submit("order-3", "", b"{}")
    with pytest.raises(TypeError, match="bytes"):
        journal.submit("order-3", "order", "{}")  # type: ignore[arg-type]


def test_claim_pending_hands_each_submission_to_one_worker_oldest_first(
    journal: PostgresJournal, clock: Clock
) -> None:
    for number in range(5):
        clock.now += 1
        journal.submit(f"order-{number}", "order", b"{}")

    first = journal.claim_pending("worker-a", ttl=TTL, limit=2)
    second = journal.claim_pending("worker-b", ttl=TTL, limit=10)

    assert [pending.saga_id for pending in first] == ["order-0", "order-1"]
    assert [pending.saga_id for pending in second] == ["order-2", "order-3", "order-4"]
    assert first[0] == PendingSaga(
        "order-0",
        "order",
        b"{}",
        1_001.0,
        claims=1,
        lease=Lease("order-0", "worker-a", clock.now + TTL),
        last_claimed_at=clock.now,
    )
    assert journal.claim_pending("worker-c", ttl=TTL) == []
    assert [pending.lease for pending in journal.pending()] == [
        *(pending.lease for pending in first),
        *(pending.lease for pending in second),
    ]


def test_a_submission_whose_claimer_stopped_is_claimed_again(
    journal: PostgresJournal, clock: Clock
) -> None:
    journal.submit("order-1", "order", b"{}")
    journal.submit("order-2", "order", b"{}")
    journal.claim_pending("worker-a", ttl=TTL, limit=2)
    assert journal.release_lease("order-2", "worker-a") is True  # gave it back
    clock.now += TTL - 1

    assert [pending.saga_id for pending in journal.claim_pending("worker-b", ttl=TTL, limit=2)] == [
        "order-2"
    ]
    clock.now += 1
    [again] = journal.claim_pending("worker-b", ttl=TTL, limit=2)
    assert (again.saga_id, again.claims) == ("order-1", 2)
    with pytest.raises(LeaseLostError):
        journal.renew("order-1", "worker-a", ttl=TTL)


def test_starting_a_claimed_submission_moves_its_lease_to_the_saga(
    journal: PostgresJournal, clock: Clock
) -> None:
    journal.submit("order-1", "order", b"{}")
    [pending] = journal.claim_pending("worker-a", ttl=TTL)
    assert journal.renew("order-1", "worker-a", ttl=TTL) == pending.lease

    record, created = journal.as_owner("worker-a", ttl=TTL).create(
        "order-1", "order", 1, pending.input, entries=[intent(1)]
    )

    assert created
    assert journal.pending() == []
    assert journal.renew("order-1", "worker-a", ttl=TTL) == Lease(
        "order-1", "worker-a", clock.now + TTL
    )
    assert journal.acquire("order-1", "worker-b", ttl=TTL) is None
    assert record.input == b"{}"


def test_a_submission_started_elsewhere_meanwhile_leaves_the_queue(
    journal: PostgresJournal,
) -> None:
    journal.submit("order-1", "order", b"{}")
    [pending] = journal.claim_pending("worker-a", ttl=TTL)

    journal.create("order-1", "order", 1, b"{}")  # a start that did not go through the queue

    assert journal.pending() == []
    with pytest.raises(LeaseLostError):
        journal.renew("order-1", "worker-a", ttl=TTL)
    assert pending.lease is not None


def test_submit_notifies_the_workers_listening(
    postgres: PostgresServer, journal: PostgresJournal
) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as listener:
        listener.execute(f'LISTEN "{journal.submission_channel}"')

        journal.submit("order-1", "order", b"{}")
        journal.submit("order-1", "order", b"{}")  # not queued again: no notification

        heard = [
            (note.channel, note.payload) for note in listener.notifies(timeout=30, stop_after=1)
        ]
        assert heard == [(journal.submission_channel, "order-1")]
        assert list(listener.notifies(timeout=0.01)) == []


def test_a_submitted_saga_runs_durably_on_the_worker_that_claims_it(
    journal: PostgresJournal,
) -> None:
    codec = JsonCodec()
    shop = Shop()
    journal.submit("o-1", "order", codec.encode({"sku": "book"}))

    [pending] = journal.claim_pending("worker-a", ttl=TTL)
    worker = DurableSagas(journal.as_owner("worker-a", ttl=TTL), shop_definitions(shop))
    with LeaseKeeper(journal, pending.saga_id, "worker-a", ttl=TTL):
        outcome = worker.start(pending.name, codec.decode(pending.input), saga_id=pending.saga_id)

    assert outcome == Success("C-1")
    assert journal.pending() == []
    assert [(entry.kind, entry.path) for entry in journal.entries("o-1")] == [
        ("intent", "reserve"),
        ("completed", "reserve"),
        ("intent", "charge"),
        ("completed", "charge"),
    ]
    assert journal.integrity_check() == ["ok"]


# -- the lease keeper ----------------------------------------------------------------------------


class WatchedLeases:
    """The journal's leases, every renewal counted and announced; the first `fail` renewals
    fail as an unreachable database makes them fail."""

    def __init__(self, journal: PostgresJournal, *, fail: int = 0) -> None:
        self.journal = journal
        self.fail = fail
        self.calls = 0
        self.changed = threading.Condition()

    def acquire(self, saga_id: str, owner: str, *, ttl: float) -> Lease | None:
        return self.journal.acquire(saga_id, owner, ttl=ttl)

    def renew(self, saga_id: str, owner: str, *, ttl: float) -> Lease:
        try:
            if self.fail:
                self.fail -= 1
                raise JournalError("the connection was lost (injected)")
            return self.journal.renew(saga_id, owner, ttl=ttl)
        finally:
            with self.changed:
                self.calls += 1
                self.changed.notify_all()

    def release_lease(self, saga_id: str, owner: str) -> bool:
        return self.journal.release_lease(saga_id, owner)

    def wait_for_calls(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.calls >= count, timeout=30)


def test_a_keeper_renews_in_a_thread_until_the_block_ends_then_releases(
    journal: PostgresJournal, clock: Clock
) -> None:
    journal.as_owner("worker-a", ttl=TTL).create("order-1", "order", 1, b"{}")
    watched = WatchedLeases(journal)

    with LeaseKeeper(watched, "order-1", "worker-a", ttl=TTL, every=0.01) as keeper:
        watched.wait_for_calls(1)
        clock.now += TTL - 1  # the lease would run out in a second, but renewals keep it
        calls = watched.calls
        watched.wait_for_calls(calls + 1)
        assert journal.acquire("order-1", "worker-b", ttl=TTL) is None

    assert keeper.renewals >= 2
    assert keeper.lease == Lease("order-1", "worker-a", clock.now + TTL)
    assert not keeper.lost
    assert repr(keeper).startswith("LeaseKeeper('order-1', owner='worker-a', ")
    assert journal.acquire("order-1", "worker-b", ttl=TTL) is not None  # released at the end


def test_a_keeper_that_finds_its_lease_lost_stops_and_says_so(
    journal: PostgresJournal, clock: Clock
) -> None:
    journal.as_owner("worker-a", ttl=TTL).create("order-1", "order", 1, b"{}")
    lost: list[JournalError] = []

    with LeaseKeeper(
        journal, "order-1", "worker-a", ttl=TTL, every=0.01, on_lost=lost.append
    ) as keeper:
        clock.now += TTL  # the worker stalled: its lease ran out, and another took the saga
        assert journal.acquire("order-1", "worker-b", ttl=TTL) is not None
        assert keeper.wait_lost(timeout=30)

    assert keeper.lost
    assert isinstance(keeper.error, LeaseLostError)
    assert lost == [keeper.error]
    assert journal.renew("order-1", "worker-b", ttl=TTL).owner == "worker-b"  # not released


def test_a_keeper_stops_quietly_once_its_saga_finished(journal: PostgresJournal) -> None:
    worker = journal.as_owner("worker-a", ttl=TTL)
    worker.create("order-1", "order", 1, b"{}")
    watched = WatchedLeases(journal)

    with LeaseKeeper(watched, "order-1", "worker-a", ttl=TTL, every=0.01) as keeper:
        worker.finish("order-1", "succeeded", b"1")
        calls = watched.calls
        watched.wait_for_calls(calls + 1)

    assert not keeper.lost
    assert keeper.error is None


def test_a_keeper_started_before_its_saga_exists_renews_it_once_it_does(
    journal: PostgresJournal,
) -> None:
    """A start creates its saga, with the worker's lease, at its first write: a keeper around
    the whole run may beat first."""
    watched = WatchedLeases(journal)

    with LeaseKeeper(watched, "order-1", "worker-a", ttl=TTL, every=0.01) as keeper:
        watched.wait_for_calls(1)
        journal.as_owner("worker-a", ttl=TTL).create("order-1", "order", 1, b"{}")
        calls = watched.calls
        watched.wait_for_calls(calls + 2)  # the first may have been sent before the create

    assert not keeper.lost
    assert keeper.renewals >= 1


def test_a_keeper_rides_out_a_failed_renewal_while_its_lease_may_still_hold(
    journal: PostgresJournal,
) -> None:
    journal.as_owner("worker-a", ttl=TTL).create("order-1", "order", 1, b"{}")
    watched = WatchedLeases(journal, fail=2)

    with LeaseKeeper(watched, "order-1", "worker-a", ttl=TTL, every=0.01) as keeper:
        watched.wait_for_calls(3)

    assert not keeper.lost
    assert keeper.renewals >= 1


def test_a_keeper_whose_renewals_keep_failing_counts_its_lease_lost(
    journal: PostgresJournal,
) -> None:
    """Renewals that fail for longer than the lease lasts (here: the first one, since `every` is
    nearly the whole ttl) lose it: it may have run out."""
    journal.as_owner("worker-a", ttl=TTL).create("order-1", "order", 1, b"{}")
    watched = WatchedLeases(journal, fail=1)

    with LeaseKeeper(watched, "order-1", "worker-a", ttl=0.02, every=0.019) as keeper:
        assert keeper.wait_lost(timeout=30)

    assert isinstance(keeper.error, JournalError)
    assert "injected" in str(keeper.error)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"ttl": 0}, ValueError),
        ({"ttl": 1.0, "every": 1.0}, ValueError),
        ({"ttl": "1"}, TypeError),
    ],
)
def test_keeper_options_are_checked(
    journal: PostgresJournal, options: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        LeaseKeeper(journal, "order-1", "worker-a", **options)  # type: ignore[arg-type]


def test_a_keeper_keeps_one_block(journal: PostgresJournal) -> None:
    journal.as_owner("worker-a", ttl=TTL).create("order-1", "order", 1, b"{}")
    keeper = LeaseKeeper(journal, "order-1", "worker-a", ttl=TTL)
    with keeper:
        pass

    with pytest.raises(RuntimeError, match="one block"), keeper:
        pass


@pytest.mark.anyio
async def test_an_async_keeper_renews_from_a_task_and_lets_the_blocks_error_through(
    journal: PostgresJournal,
) -> None:
    journal.as_owner("worker-a", ttl=TTL).create("order-1", "order", 1, b"{}")
    watched = WatchedLeases(journal)

    async with LeaseKeeper(watched, "order-1", "worker-a", ttl=TTL, every=0.01) as keeper:
        await anyio.to_thread.run_sync(watched.wait_for_calls, 2)
        assert journal.acquire("order-1", "worker-b", ttl=TTL) is None

    assert keeper.renewals >= 2
    assert journal.acquire("order-1", "worker-b", ttl=TTL) is not None  # released at the end
    with pytest.raises(ValueError, match="the block failed"):
        async with LeaseKeeper(journal, "order-1", "worker-b", ttl=TTL):
            raise ValueError("the block failed")
