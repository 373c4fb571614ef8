"""The submission queue's parking of poison submissions (`fsaga.journal._postgres_queue`),
version 2 of the PostgreSQL schema that holds it, and the claims of expired sagas that a worker
can replay (`PostgresJournal.claim_expired(definitions=...)`).

Every test has a schema of its own on the session's throwaway server (tests/servers.py); leases
run out on a clock the test sets.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pg_journals
import psycopg
import pytest
from servers import PostgresServer

from fsaga.journal import (
    JournalError,
    JsonCodec,
    Lease,
    PendingSaga,
    PostgresJournal,
    SubmissionNotParkedError,
    UnknownSubmissionError,
)
from fsaga.journal._postgres_schema import upgrade
from fsaga.journal.postgres import SCHEMA_VERSION

TTL = 30.0
ERROR = JsonCodec().encode(["builtins:LookupError", "LookupError", "no definition 'ordr'"])


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


def fail_claims(journal: PostgresJournal, clock: Clock, saga_id: str, times: int) -> None:
    """`times` claims of `saga_id` whose starts fail (each worker records why), a lease apart."""
    for number in range(times):
        [claimed] = journal.claim_pending(f"worker-{number}", ttl=TTL, max_claims=times)
        assert claimed.saga_id == saga_id
        assert journal.record_start_error(saga_id, f"worker-{number}", ERROR)
        clock.now += TTL


# -- the schema, version 2 -------------------------------------------------------------------------


def version_1(server: PostgresServer) -> str:
    """A new schema holding a journal of version 1, as the first fsaga with workers made it."""
    schema = pg_journals.fresh_schema()
    with psycopg.connect(server.dsn) as connection, connection.transaction():
        for statement in upgrade(0, schema, to=1):
            connection.execute(statement)
    return schema


def test_a_journal_of_version_1_is_refused_until_migrated_then_keeps_its_rows(
    postgres: PostgresServer,
) -> None:
    schema = version_1(postgres)
    with pg_journals.raw(postgres) as connection:
        connection.execute(
            f'INSERT INTO "{schema}".submissions (saga_id, name, input, submitted_at, claims,'
            " lease_owner, lease_expires_at) VALUES ('order-1', 'order', '\\x7b7d', 5, 2, 'w', 9)"
        )
    with pytest.raises(JournalError, match="older than this fsaga's 2: upgrade it with"):
        PostgresJournal(postgres.dsn, schema=schema)

    assert PostgresJournal.migrate(postgres.dsn, schema=schema) == 1
    assert PostgresJournal.migrate(postgres.dsn, schema=schema) == SCHEMA_VERSION == 2

    with PostgresJournal(postgres.dsn, schema=schema, clock=lambda: 1.0) as journal:
        assert journal.submission("order-1") == PendingSaga(
            "order-1", "order", b"{}", 5.0, claims=2, lease=Lease("order-1", "w", 9.0)
        )
        assert journal.integrity_check() == ["ok"]
    assert pg_journals.rows(postgres, schema)["schema_version"] == [(2, True)]


def test_processes_migrating_a_journal_of_version_1_at_once_take_turns(
    postgres: PostgresServer,
) -> None:
    schema = version_1(postgres)
    barrier = threading.Barrier(4)
    found: list[object] = []

    def migrate() -> None:
        barrier.wait()
        found.append(PostgresJournal.migrate(postgres.dsn, schema=schema))

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(found, key=repr) == [1, 2, 2, 2]


def test_the_upgrade_steps_lead_to_this_version(postgres: PostgresServer) -> None:
    fresh = pg_journals.fresh_schema()
    PostgresJournal.migrate(postgres.dsn, schema=fresh)
    stepwise = version_1(postgres)
    PostgresJournal.migrate(postgres.dsn, schema=stepwise)

    def columns(schema: str) -> list[tuple[object, ...]]:
        with pg_journals.raw(postgres) as connection:
            return connection.execute(
                "SELECT table_name, column_name, data_type, is_nullable"
                " FROM information_schema.columns WHERE table_schema = %s"
                " ORDER BY table_name, column_name",
                (schema,),
            ).fetchall()

    assert columns(fresh) == columns(stepwise)
    assert upgrade(SCHEMA_VERSION, fresh) == ()


# -- parking ---------------------------------------------------------------------------------------


def test_a_submission_claimed_max_claims_times_without_starting_is_parked(
    journal: PostgresJournal, clock: Clock
) -> None:
    journal.submit("poison", "ordr", b"{}")
    clock.now += 1
    journal.submit("order-1", "order", b"{}")
    fail_claims(journal, clock, "poison", 3)

    # The next claim parks the poison and, in its place, claims the next one.
    [claimed] = journal.claim_pending("worker-z", ttl=TTL, max_claims=3)

    assert claimed.saga_id == "order-1"
    [parked] = journal.parked_submissions()
    assert parked == PendingSaga(
        "poison",
        "ordr",
        b"{}",
        1_000.0,
        claims=3,
        last_claimed_at=1_001.0 + 2 * TTL,
        last_error=ERROR,
        parked_at=clock.now,
    )
    assert parked.parked
    assert journal.submission("poison") == parked
    assert [pending.saga_id for pending in journal.pending()] == ["order-1"]
    clock.now += 10 * TTL
    assert journal.claim_pending("worker-y", ttl=TTL, limit=5, max_claims=3) == [
        journal.submission("order-1")
    ]  # parked: never claimed again (order-1's lease ran out: claimed again)
    assert journal.submit("poison", "ordr", b"{}") is False  # still submitted


def test_without_max_claims_a_submission_is_never_parked(
    journal: PostgresJournal, clock: Clock
) -> None:
    journal.submit("poison", "ordr", b"{}")
    claims = []
    for _ in range(10):
        claims += journal.claim_pending("worker-a", ttl=TTL)
        clock.now += TTL
    assert [claimed.claims for claimed in claims] == list(range(1, 11))
    assert journal.parked_submissions() == []


def test_a_claim_forgets_the_error_of_the_claim_before_it(
    journal: PostgresJournal, clock: Clock
) -> None:
    journal.submit("order-1", "order", b"{}")
    fail_claims(journal, clock, "order-1", 1)
    assert journal.submission("order-1").last_error == ERROR  # type: ignore[union-attr]

    [claimed] = journal.claim_pending("worker-b", ttl=TTL)

    assert (claimed.claims, claimed.last_error, claimed.last_claimed_at) == (2, None, clock.now)


def test_only_the_worker_holding_a_submission_records_why_it_did_not_start(
    journal: PostgresJournal, clock: Clock
) -> None:
    journal.submit("order-1", "order", b"{}")
    assert journal.record_start_error("order-1", "worker-a", ERROR) is False  # unclaimed
    journal.claim_pending("worker-a", ttl=TTL)

    assert journal.record_start_error("order-1", "worker-b", ERROR) is False
    clock.now += TTL
    assert journal.record_start_error("order-1", "worker-a", ERROR) is False  # ran out
    assert journal.submission("order-1").last_error is None  # type: ignore[union-attr]
    assert journal.record_start_error("order-2", "worker-a", ERROR) is False  # no such
    with pytest.raises(TypeError, match="bytes"):
        journal.record_start_error("order-1", "worker-a", "why")  # type: ignore[arg-type]


def test_release_queues_a_parked_submission_again_and_notifies_the_workers(
    journal: PostgresJournal, clock: Clock
) -> None:
    journal.submit("poison", "ordr", b"{}")
    fail_claims(journal, clock, "poison", 1)
    assert journal.claim_pending("worker-z", ttl=TTL, max_claims=1) == []

    with journal.listen() as listener:
        released = journal.release_submission("poison")
        assert listener.wait(30.0)

    assert (released.parked_at, released.claims, released.last_error) == (None, 0, ERROR)
    assert journal.parked_submissions() == []
    [claimed] = journal.claim_pending("worker-a", ttl=TTL, max_claims=1)
    assert (claimed.saga_id, claimed.claims) == ("poison", 1)


def test_release_refuses_a_submission_that_is_not_parked_or_not_there(
    postgres: PostgresServer, journal: PostgresJournal
) -> None:
    journal.submit("order-1", "order", b"{}")
    before = pg_journals.rows(postgres, journal.schema)

    with pytest.raises(SubmissionNotParkedError, match="'order-1' is queued, not parked"):
        journal.release_submission("order-1")
    with pytest.raises(UnknownSubmissionError, match="no submission 'order-9'"):
        journal.release_submission("order-9")

    assert pg_journals.rows(postgres, journal.schema) == before
    assert journal.submission("order-9") is None
    with pytest.raises(ValueError, match="max_claims"):
        journal.claim_pending("worker-a", ttl=TTL, max_claims=0)


# -- claims of what a worker can replay ------------------------------------------------------------


def test_claim_expired_with_definitions_takes_only_sagas_of_those_names_and_versions(
    journal: PostgresJournal, clock: Clock
) -> None:
    for saga_id, name, version in [
        ("a", "order", 1),
        ("b", "order", 2),
        ("c", "refund", 1),
        ("d", "order", 1),
    ]:
        clock.now += 1
        journal.as_owner("dead", ttl=TTL).create(saga_id, name, version, b"{}")
    clock.now += TTL

    taken = journal.claim_expired("worker-a", ttl=TTL, limit=10, definitions={"order": 1})
    others = journal.claim_expired("worker-b", ttl=TTL, limit=10, definitions={})

    assert [lease.saga_id for lease in taken] == ["a", "d"]
    assert others == []
    assert [lease.saga_id for lease in journal.claim_expired("worker-c", ttl=TTL, limit=10)] == [
        "b",
        "c",
    ]
