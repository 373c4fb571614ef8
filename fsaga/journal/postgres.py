"""`PostgresJournal`: the `Journal` protocol in PostgreSQL, shared by workers on many machines
(psycopg 3 and psycopg_pool: ``pip install 'fsaga[postgres]'``).

It keeps every rule of the protocol exactly as `fsaga.journal.SqliteJournal` does, and adds
what several workers need (docs/concepts.md#rule-11: one driver per saga at a time):

- **owner leases** (`fsaga.journal.Leases`): a worker holds a saga through a lease (owner,
  expiry) taken and renewed by conditional updates on the database's clock, kept alive in the
  background by `fsaga.journal.LeaseKeeper`; `claim_expired` hands the sagas whose lease ran
  out to a worker, skipping rather than waiting for rows other workers hold;
- **fencing**: `PostgresJournal.as_owner` gives the journal as a worker sees it, an
  `OwnedJournal` whose writes go through only while the worker holds the saga's lease, and
  otherwise raise `fsaga.journal.LeaseLostError`, writing nothing. `fsaga.durable.DurableSagas`
  takes it as its journal: nothing else changes for the run;
- **a submission queue**: `submit` records a saga for any worker to start, `claim_pending`
  hands pending sagas to a worker, and parks those whose starts keep failing
  (`parked_submissions`, `release_submission`; see `fsaga.journal._postgres_queue`).

The tables live in a schema of their own (``fsaga`` by default), created and upgraded by
`PostgresJournal.migrate` (or ``python -m fsaga journal migrate --dsn DSN``), never implicitly.

Durability: every call that returned has committed (each write is one statement, one commit,
in autocommit mode), so it survives whatever the server's configuration promises (with the
defaults, ``fsync`` and ``synchronous_commit`` on, a crash of the server or its machine). If
the connection is lost during the commit itself, the write may or may not have landed: a
retried `PostgresJournal.append` then gets `EntrySequenceError`, and `PostgresJournal.entries`
shows whether the batch is there. Besides the errors of the protocol, any method may raise
`JournalError` when the database fails (unreachable, a lock held past `lock_timeout`); the
statement was rolled back, so retrying is safe.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.conninfo
import psycopg.errors
import psycopg_pool

from fsaga._numbers import check_count, check_seconds
from fsaga.journal._postgres_listen import SubmissionListener as SubmissionListener
from fsaga.journal._postgres_owned import OwnedJournal as OwnedJournal
from fsaga.journal._postgres_queue import SubmissionQueue
from fsaga.journal._postgres_schema import SCHEMA_VERSION as SCHEMA_VERSION
from fsaga.journal._postgres_schema import upgrade as _upgrade
from fsaga.journal._postgres_sql import Statements, statements
from fsaga.journal._postgres_support import (
    MIGRATION_LOCK,
    DuplicateEntry,
    FinishedMeanwhile,
    Row,
    WriteState,
    batch_columns,
    channel,
    check_owner,
    check_schema_name,
    found_version,
    location,
    numbered_in_a_row,
    own_connection,
    refuse_version,
)
from fsaga.journal.protocol import (
    EntrySequenceError,
    Journal,
    JournalClosedError,
    JournalError,
    LeaseLostError,
    SagaFinishedError,
    SagaNotDeadError,
    UnknownSagaError,
    _check_bytes,
    _check_finished_status,
    _check_max_attempts,
    _check_saga_fields,
    _check_sequence,
    _check_status,
)
from fsaga.journal.records import (
    FINISHED_STATUSES,
    HEARTBEAT,
    Entry,
    FinishedStatus,
    Lease,
    SagaRecord,
    SagaStatus,
)

__all__ = ["SCHEMA_VERSION", "OwnedJournal", "PostgresJournal", "SubmissionListener"]

logger = logging.getLogger(__name__)

_Params = Mapping[str, object]


class PostgresJournal(SubmissionQueue, Journal):
    """A `Journal` in a PostgreSQL schema, for workers on many machines; see the module
    docstring.

    Connections come from a pool (psycopg_pool) shared by the threads using the journal; each
    call borrows one for one statement.

    Args:
        dsn: the database to connect to, as a libpq connection string or URI
            (``"host=db.internal dbname=orders user=fsaga"``,
            ``"postgresql://fsaga@db.internal/orders"``); libpq's environment variables
            (``PGPASSWORD``...) and password file apply.
        schema: the schema holding the journal's tables (`migrate` creates them).
        clock: gives the timestamps of records and the "now" of leases (seconds since the
            epoch). By default the database server's clock, ``now()``, so that workers whose
            clocks disagree still agree on when a lease runs out; pass one for deterministic
            tests.
        max_connections: the most connections the journal holds at once (each thread using it
            borrows one per call, and so does a `fsaga.journal.LeaseKeeper`).
        lock_timeout: how long a write waits for another write's lock on the same saga, in
            seconds, before it fails with `JournalError`.
        connect_timeout: how long a call waits for a connection, in seconds, before it fails
            with `JournalError` (the database is unreachable, or every connection is busy).

    Raises:
        ValueError: an option is out of range.
        JournalVersionError: the schema was migrated by a newer fsaga.
        JournalError: the database cannot be reached, or `schema` holds no journal (run
            `migrate`), or holds another application's tables.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "fsaga",
        clock: Callable[[], float] | None = None,
        max_connections: int = 8,
        lock_timeout: float = 5.0,
        connect_timeout: float = 10.0,
    ) -> None:
        check_schema_name(schema)
        check_count(max_connections, what="max_connections", minimum=1)
        self._lock_timeout = check_seconds(lock_timeout, what="lock_timeout")
        connect_timeout = check_seconds(connect_timeout, what="connect_timeout")
        self._schema = schema
        self._clock = clock
        self._closed = False
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._sql: Statements = statements(schema)
        with own_connection(dsn, connect_timeout) as connection:
            self._database = connection.info.dbname
            found = found_version(connection, schema, self._where)
        if found != SCHEMA_VERSION:
            refuse_version(found, self._where, schema)
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = (
            psycopg_pool.ConnectionPool(
                dsn,
                min_size=1,
                max_size=max_connections,
                kwargs={"autocommit": True},
                configure=self._configure,
                timeout=connect_timeout,
                name=f"fsaga-journal-{schema}",
                open=True,
            )
        )
        logger.debug("opened journal in %s", self._where)

    @classmethod
    def migrate(cls, dsn: str, *, schema: str = "fsaga", connect_timeout: float = 10.0) -> int:
        """Create the journal's tables in `schema` (and the schema), or bring them up to this
        fsaga's `SCHEMA_VERSION`; do nothing if they are there already.

        One transaction, under an advisory lock on the schema's name: processes migrating the
        same schema at once take turns, and all but the first find nothing to do.

        Returns:
            The schema version found (0 when there was no journal).

        Raises:
            JournalVersionError: a newer fsaga migrated the schema (nothing is changed).
            JournalError: the database cannot be reached, the role may not create the schema
                or its tables, or `schema` holds another application's tables.
        """
        check_schema_name(schema)
        connect_timeout = check_seconds(connect_timeout, what="connect_timeout")
        with own_connection(dsn, connect_timeout, autocommit=False) as connection:
            where = location(connection.info.dbname, schema)
            try:
                with connection.transaction():
                    connection.execute(
                        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                        (MIGRATION_LOCK, schema),
                    )
                    found = found_version(connection, schema, where)
                    if found > SCHEMA_VERSION:
                        refuse_version(found, where, schema)
                    for statement in _upgrade(found, schema):
                        connection.execute(statement)
            except psycopg.Error as error:
                raise JournalError(f"cannot migrate the journal in {where}: {error}") from error
        if found < SCHEMA_VERSION:
            logger.info("migrated the journal in %s from %d to %d", where, found, SCHEMA_VERSION)
        return found

    @property
    def schema(self) -> str:
        """The schema holding the journal's tables."""
        return self._schema

    @property
    def database(self) -> str:
        """The name of the database holding the schema."""
        return self._database

    @property
    def submission_channel(self) -> str:
        """The channel `submit` notifies (``LISTEN`` on it, quoted as an identifier, to hear of
        new submissions at once); the payload is the saga id.

        ``fsaga_submitted:`` and the schema's name, or a digest of the name where that would be
        longer than a channel name may be.
        """
        return channel(self._schema)

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"PostgresJournal(database={self._database!r}, schema={self._schema!r}{state})"

    # -- the Journal protocol ----------------------------------------------------------------

    def create(
        self,
        saga_id: str,
        name: str,
        version: int,
        input: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> tuple[SagaRecord, bool]:
        """See `Journal.create`."""
        return self._create(saga_id, name, version, input, entries, owner=None, ttl=None)

    def append(self, saga_id: str, entries: Sequence[Entry]) -> None:
        """See `Journal.append`."""
        self._append(saga_id, entries, owner=None)

    def entries(self, saga_id: str) -> list[Entry]:
        """See `Journal.entries`."""
        rows = self._rows(self._sql.entries, {"saga_id": saga_id})
        if not rows:
            raise UnknownSagaError(saga_id)
        return [Entry(*row) for row in rows if row[0] is not None]

    def finish(
        self,
        saga_id: str,
        status: FinishedStatus,
        outcome: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> bool:
        """See `Journal.finish`."""
        return self._finish(saga_id, status, outcome, entries, owner=None)

    def get(self, saga_id: str) -> SagaRecord | None:
        """See `Journal.get`."""
        rows = self._rows(self._sql.get, {"saga_id": saga_id})
        return SagaRecord(*rows[0]) if rows else None

    def sagas(self, status: SagaStatus | None = None) -> list[SagaRecord]:
        """See `Journal.sagas`."""
        _check_status(status)
        if status is None:
            rows = self._rows(self._sql.sagas_all, {})
        elif status in FINISHED_STATUSES:
            rows = self._rows(self._sql.sagas_finished, {"status": status})
        else:
            rows = self._rows(self._sql.sagas_unfinished, {"status": status})
        return [SagaRecord(*row) for row in rows]

    def claim_for_recovery(
        self, saga_id: str, *, max_attempts: int, stale_before: float | None = None
    ) -> bool:
        """See `Journal.claim_for_recovery`.

        A saga whose lease another worker holds is not claimed (``False``), and a claim clears
        a lease that ran out: a journal not bound to an owner takes part in no lease (see
        `as_owner`).
        """
        return self._claim_for_recovery(saga_id, max_attempts, stale_before, owner=None)

    def record_recovery_error(self, saga_id: str, error: bytes) -> bool:
        """See `Journal.record_recovery_error`."""
        return self._record_recovery_error(saga_id, error, owner=None)

    def release(self, saga_id: str) -> SagaRecord:
        """See `Journal.release`."""
        rows = self._rows(self._sql.release, {"saga_id": saga_id})
        if not rows:
            record = self.get(saga_id)
            if record is None:
                raise UnknownSagaError(saga_id)
            raise SagaNotDeadError(saga_id, record.status)
        logger.debug("saga %s released for recovery", saga_id)
        return SagaRecord(*rows[0])

    def close(self) -> None:
        """See `Journal.close`: closes the connection pool."""
        if self._closed:
            return
        self._closed = True
        self._pool.close()

    # -- owners and leases -------------------------------------------------------------------

    def as_owner(self, owner: str, *, ttl: float) -> OwnedJournal:
        """This journal as worker `owner` writes to it: see `OwnedJournal`.

        Args:
            owner: the worker (unique among the workers sharing the journal).
            ttl: the lease a saga this view creates starts with, in seconds (renew it with a
                `fsaga.journal.LeaseKeeper`).
        """
        return OwnedJournal(self, owner, ttl=ttl)

    def acquire(self, saga_id: str, owner: str, *, ttl: float) -> Lease | None:
        """See `fsaga.journal.Leases.acquire`.

        The lease is free when it ran out (or was released), or when the saga never had one
        (it was created or claimed by a journal not bound to an owner) and nothing was written
        to it for `ttl` seconds.
        """
        check_owner(owner)
        ttl = check_seconds(ttl, what="ttl")
        rows = self._rows(
            self._sql.acquire,
            {"saga_id": saga_id, "owner": owner, "ttl": ttl, "now": self._now()},
        )
        if not rows:
            raise UnknownSagaError(saga_id)
        status, _, _, _, _, expires_at = rows[0]
        if status != "running":
            raise SagaFinishedError(saga_id, status)
        return None if expires_at is None else Lease(saga_id, owner, expires_at)

    def renew(self, saga_id: str, owner: str, *, ttl: float) -> Lease:
        """See `fsaga.journal.Leases.renew`: the lease of a running saga, or of a pending saga
        `owner` claimed (`claim_pending`) and has not started yet."""
        check_owner(owner)
        ttl = check_seconds(ttl, what="ttl")
        parameters = {"saga_id": saga_id, "owner": owner, "ttl": ttl}
        # Tried twice: a start moving the pending saga's lease to the saga may commit between
        # the two updates of one statement, which then both miss it.
        for _ in range(2):
            rows = self._rows(self._sql.renew, {**parameters, "now": self._now()})
            if rows:
                return Lease(saga_id, owner, rows[0][0])
        found = self._rows(self._sql.lease_state, {"saga_id": saga_id, "now": self._now()})
        if not found:
            raise UnknownSagaError(saga_id)
        _, status, holder, expires_at, _ = found[0]
        if status is not None and status != "running":
            raise SagaFinishedError(saga_id, status)
        raise LeaseLostError(saga_id, owner, holder=holder, expires_at=expires_at)

    def release_lease(self, saga_id: str, owner: str) -> bool:
        """See `fsaga.journal.Leases.release_lease`: the released lease runs out now, so
        another worker may take the saga (or the pending saga) over at once."""
        check_owner(owner)
        rows = self._rows(
            self._sql.release_lease, {"saga_id": saga_id, "owner": owner, "now": self._now()}
        )
        return bool(rows[0][0])

    def claim_expired(
        self,
        owner: str,
        *,
        ttl: float,
        limit: int = 1,
        definitions: Mapping[str, int] | None = None,
    ) -> list[Lease]:
        """Take the lease, for `ttl` seconds, of up to `limit` running sagas nobody holds: the
        lease ran out (its worker died, hung, or released it), or the saga never had one and
        nothing was written to it for `ttl` seconds. Oldest sagas first.

        With `definitions` (name to version, as `fsaga.durable.SagaDefinitions.versions`
        gives them), only sagas started under one of those: a worker leaves the sagas it
        cannot replay (a definition it lacks, or has in another version) to the workers that
        can.

        One statement: sagas another worker is claiming or writing to at that moment are
        skipped, not waited for (``FOR UPDATE SKIP LOCKED``), so workers sweeping at once each
        get different sagas. The worker then recovers each one (replays it and finishes it)
        through `as_owner`, renewing the lease meanwhile.

        Returns:
            The leases taken, oldest saga first.
        """
        check_owner(owner)
        ttl = check_seconds(ttl, what="ttl")
        limit = check_count(limit, what="limit", minimum=1)
        names, versions = (None, None) if definitions is None else _columns(definitions)
        rows = self._rows(
            self._sql.claim_expired,
            {
                "owner": owner,
                "ttl": ttl,
                "limit": limit,
                "names": names,
                "versions": versions,
                "now": self._now(),
            },
        )
        rows.sort(key=lambda row: (row[2], row[0]))
        return [Lease(saga_id, owner, expires_at) for saga_id, expires_at, _ in rows]

    def integrity_check(self) -> list[str]:
        """``["ok"]`` when the journal's records keep its invariants (every timeline numbered
        from 1 without gaps, an outcome exactly on finished sagas, leases only on running
        ones), else one line per problem."""
        return [str(row[0]) for row in self._rows(self._sql.integrity, {})] or ["ok"]

    # -- shared by the journal and its owned views -------------------------------------------

    def _create(
        self,
        saga_id: str,
        name: str,
        version: int,
        input: bytes,
        entries: Sequence[Entry],
        *,
        owner: str | None,
        ttl: float | None,
    ) -> tuple[SagaRecord, bool]:
        _check_saga_fields(saga_id, name, version, input)
        _check_sequence(saga_id, 1, entries)
        [(created, now)] = self._rows(
            self._sql.create,
            {
                "saga_id": saga_id,
                "name": name,
                "version": version,
                "input": input,
                "owner": owner,
                "ttl": ttl,
                "now": self._now(),
                **batch_columns(entries),
            },
        )
        if not created:
            existing = self.get(saga_id)
            if existing is None:  # created and gone again: only by hand
                raise JournalError(f"saga {saga_id!r} was deleted from {self._where} meanwhile")
            return existing, False
        record = SagaRecord(
            saga_id=saga_id,
            name=name,
            version=version,
            input=input,
            status="running",
            outcome=None,
            recovery_attempts=0,
            created_at=now,
            updated_at=now,
        )
        return record, True

    def _append(self, saga_id: str, entries: Sequence[Entry], *, owner: str | None) -> None:
        batch = list(entries)
        if not numbered_in_a_row(saga_id, batch):
            # Refused whatever the timeline holds; which error says so depends on the saga.
            state = self._write_state(saga_id)
            state.check_running(saga_id)
            state.check_held(saga_id, owner)
            _check_sequence(saga_id, state.last + 1, batch)
            return
        parameters = {"saga_id": saga_id, "owner": owner, "heartbeat": HEARTBEAT}
        with self._sequenced(saga_id, batch, owner, finishing=False):
            rows = self._rows(
                self._sql.append,
                {**parameters, "now": self._now(), "first": batch[0].seq, **batch_columns(batch)},
            )
        if not rows:
            raise UnknownSagaError(saga_id)
        state = WriteState(*rows[0][:5])
        state.check_running(saga_id)
        state.check_held(saga_id, owner)
        if rows[0][5] != len(batch):
            raise EntrySequenceError(saga_id, state.last + 1, [entry.seq for entry in batch])

    def _finish(
        self,
        saga_id: str,
        status: FinishedStatus,
        outcome: bytes,
        entries: Sequence[Entry],
        *,
        owner: str | None,
    ) -> bool:
        _check_finished_status(status)
        _check_bytes("outcome", outcome)
        batch = list(entries)
        if batch and not numbered_in_a_row(saga_id, batch):
            state = self._write_state(saga_id)
            if state.status != "running":
                return False
            state.check_held(saga_id, owner)
            _check_sequence(saga_id, state.last + 1, batch)
        parameters = {"saga_id": saga_id, "owner": owner, "status": status, "outcome": outcome}
        try:
            with self._sequenced(saga_id, batch, owner, finishing=True):
                rows = self._rows(
                    self._sql.finish,
                    {
                        **parameters,
                        "now": self._now(),
                        "first": batch[0].seq if batch else None,
                        **batch_columns(batch),
                    },
                )
        except FinishedMeanwhile:
            return False  # another writer finished it first, with entries of its own
        if not rows:
            raise UnknownSagaError(saga_id)
        state = WriteState(*rows[0][:5])
        if state.status != "running":
            return False
        state.check_held(saga_id, owner)
        if rows[0][5] != 1:
            raise EntrySequenceError(saga_id, state.last + 1, [entry.seq for entry in batch])
        return True

    def _claim_for_recovery(
        self, saga_id: str, max_attempts: int, stale_before: float | None, *, owner: str | None
    ) -> bool:
        _check_max_attempts(max_attempts)
        rows = self._rows(
            self._sql.claim_for_recovery,
            {
                "saga_id": saga_id,
                "owner": owner,
                "max_attempts": max_attempts,
                "stale_before": stale_before,
                "now": self._now(),
            },
        )
        if not rows:
            raise UnknownSagaError(saga_id)
        verdict = rows[0][0]
        if verdict == "lost":
            assert owner is not None  # only an owner's claim needs a lease
            WriteState(*rows[0][1:6]).check_held(saga_id, owner)
        if verdict == "dead":
            logger.debug("saga %s is dead after %d recoveries", saga_id, max_attempts)
        return bool(verdict == "claimed")

    def _record_recovery_error(self, saga_id: str, error: bytes, *, owner: str | None) -> bool:
        _check_bytes("error", error)
        rows = self._rows(
            self._sql.record_recovery_error,
            {"saga_id": saga_id, "owner": owner, "error": error, "now": self._now()},
        )
        if not rows:
            raise UnknownSagaError(saga_id)
        state = WriteState(*rows[0])
        if state.status != "running":
            return False
        state.check_held(saga_id, owner)
        return True

    @contextmanager
    def _sequenced(
        self, saga_id: str, batch: Sequence[Entry], owner: str | None, *, finishing: bool
    ) -> Iterator[None]:
        """Turn the entries' primary key refusing a batch (another writer got in first, after
        this statement read the timeline) into the error the saga's state now calls for."""
        try:
            yield
        except DuplicateEntry as duplicate:
            state = self._write_state(saga_id)
            if state.status != "running":
                if finishing:
                    raise FinishedMeanwhile from duplicate
                raise SagaFinishedError(saga_id, state.status) from duplicate
            state.check_held(saga_id, owner)
            raise EntrySequenceError(
                saga_id, state.last + 1, [entry.seq for entry in batch]
            ) from duplicate

    def _write_state(self, saga_id: str) -> WriteState:
        rows = self._rows(self._sql.write_state, {"saga_id": saga_id, "now": self._now()})
        if not rows:
            raise UnknownSagaError(saga_id)
        return WriteState(*rows[0])

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return location(self._database, self._schema)

    def _now(self) -> float | None:
        return None if self._clock is None else float(self._clock())

    def _configure(self, connection: psycopg.Connection[tuple[Any, ...]]) -> None:
        connection.execute(
            "SELECT set_config('lock_timeout', %s, false)",
            (f"{math.ceil(self._lock_timeout * 1000)}ms",),
        )

    def _rows(self, statement: str, parameters: _Params) -> list[Row]:
        """Run one statement on a connection of the pool (its own transaction); its rows."""
        if self._closed:
            raise JournalClosedError(f"the journal in {self._where} is closed")
        try:
            with self._pool.connection() as connection:
                return connection.execute(statement, parameters).fetchall()
        except psycopg.errors.UniqueViolation as error:
            if error.diag.table_name == "entries":
                raise DuplicateEntry(str(error)) from error
            raise JournalError(f"journal in {self._where}: {error}") from error
        except psycopg.errors.LockNotAvailable as error:
            raise JournalError(
                f"journal in {self._where}: another write held the saga's lock for longer than "
                f"lock_timeout ({self._lock_timeout:g} s): {error}"
            ) from error
        except psycopg.errors.UndefinedTable as error:
            raise JournalError(
                f"the journal's tables are missing from {self._where}: {error}"
            ) from error
        except psycopg.Error as error:
            raise JournalError(f"journal in {self._where}: {error}") from error
        except psycopg_pool.PoolClosed as error:
            raise JournalClosedError(f"the journal in {self._where} is closed") from error
        except psycopg_pool.PoolTimeout as error:
            raise JournalError(
                f"journal in {self._where}: no connection to the database within "
                f"connect_timeout: {error}"
            ) from error


def _columns(definitions: Mapping[str, int]) -> tuple[list[str], list[int]]:
    """`definitions` as the two columns ``unnest`` takes (see `PostgresJournal.claim_expired`)."""
    names = sorted(definitions)
    return names, [definitions[name] for name in names]
