"""What `fsaga.journal.PostgresJournal` needs around its statements: connections of its own for
checks and migrations, the checks of its arguments, and what a write found of its saga."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, final

import psycopg
import psycopg.conninfo

from fsaga.journal._postgres_schema import SCHEMA_VERSION, TABLES, quoted
from fsaga.journal.protocol import (
    EntrySequenceError,
    JournalError,
    JournalVersionError,
    LeaseLostError,
    SagaFinishedError,
    _check_sequence,
    _is_non_empty_str,
)
from fsaga.journal.records import Entry, Lease, PendingSaga, SagaStatus

__all__ = [
    "MAX_IDENTIFIER",
    "MIGRATION_LOCK",
    "DuplicateEntry",
    "FinishedMeanwhile",
    "Row",
    "WriteState",
    "batch_columns",
    "channel",
    "check_owner",
    "check_schema_name",
    "check_text",
    "describe_dsn",
    "found_version",
    "location",
    "numbered_in_a_row",
    "own_connection",
    "pending_saga",
    "refuse_version",
]

Row = tuple[Any, ...]

# pg_advisory_xact_lock's first key for a migration (the second is the schema's): two
# processes migrating one schema at once take turns.
MIGRATION_LOCK: Final = 0x66736167  # "fsag"
MAX_IDENTIFIER: Final = 63  # PostgreSQL's NAMEDATALEN - 1, in bytes


class DuplicateEntry(Exception):
    """The entries' primary key refused a batch: another writer wrote one of its seqs."""


class FinishedMeanwhile(Exception):
    """Raised by `PostgresJournal._sequenced` for a finish that lost to another finish."""


@final
class WriteState:
    """What a write found of its saga: status, last seq, lease, the clock's now."""

    __slots__ = ("expires_at", "holder", "last", "now", "status")

    def __init__(
        self,
        status: SagaStatus,
        last: int | None,
        holder: str | None,
        expires_at: float | None,
        now: float,
    ) -> None:
        self.status = status
        self.last = last or 0
        self.holder = holder
        self.expires_at = expires_at
        self.now = now

    def check_running(self, saga_id: str) -> None:
        if self.status != "running":
            raise SagaFinishedError(saga_id, self.status)

    def check_held(self, saga_id: str, owner: str | None) -> None:
        if owner is None:
            return
        if self.holder == owner and self.expires_at is not None and self.expires_at > self.now:
            return
        raise LeaseLostError(saga_id, owner, holder=self.holder, expires_at=self.expires_at)


def numbered_in_a_row(saga_id: str, batch: Sequence[Entry]) -> bool:
    """Whether `batch` (of `Entry` values, or `TypeError`) is not empty and numbered
    ``n, n+1, ...``."""
    items: Sequence[object] = batch
    for item in items:
        if not isinstance(item, Entry):
            raise TypeError(f"entries must be Entry values, got {type(item)}")
    if not batch:
        return False
    try:
        _check_sequence(saga_id, batch[0].seq, batch)
    except EntrySequenceError:
        return False
    return True


def batch_columns(entries: Sequence[Entry]) -> dict[str, list[object]]:
    """`entries` as the columns of ``unnest`` (see `fsaga.journal._postgres_sql`)."""
    for entry in entries:
        check_text("a step path", entry.path)
    return {
        "seqs": [entry.seq for entry in entries],
        "kinds": [entry.kind for entry in entries],
        "paths": [entry.path for entry in entries],
        "attempts": [entry.attempt for entry in entries],
        "payloads": [entry.payload for entry in entries],
    }


def pending_saga(row: Row) -> PendingSaga:
    """A submission, from its `fsaga.journal._postgres_sql.SUBMISSION_COLUMNS`."""
    saga_id, name, input, submitted_at, claims, owner, expires_at = row[:7]
    last_claimed_at, last_error, parked_at = row[7:10]
    lease = None if owner is None else Lease(saga_id, owner, expires_at)
    return PendingSaga(
        saga_id, name, input, submitted_at, claims, lease, last_claimed_at, last_error, parked_at
    )


def check_owner(owner: str) -> None:
    if not _is_non_empty_str(owner):
        raise ValueError(f"owner must be a non-empty str naming the worker, got {owner!r}")
    check_text("owner", owner)


def check_text(what: str, value: str) -> None:
    if "\x00" in value:
        raise ValueError(f"{what} cannot hold a NUL character in PostgreSQL, got {value!r}")


def check_schema_name(schema: str) -> None:
    if not _is_non_empty_str(schema) or "\x00" in schema:
        raise ValueError(f"schema must be a non-empty str without NUL, got {schema!r}")
    if len(schema.encode()) > MAX_IDENTIFIER:
        raise ValueError(
            f"schema must be at most {MAX_IDENTIFIER} bytes long (PostgreSQL's limit), "
            f"got {schema!r}"
        )


def channel(schema: str) -> str:
    channel = f"fsaga_submitted:{schema}"
    if len(channel.encode()) <= MAX_IDENTIFIER:
        return channel
    return f"fsaga_submitted:{hashlib.sha256(schema.encode()).hexdigest()[:40]}"


def location(database: str, schema: str) -> str:
    return f"database {database!r}, schema {schema!r}"


def describe_dsn(dsn: str) -> str:
    """`dsn` without its password, for messages."""
    try:
        fields = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "an unreadable connection string"
    fields.pop("password", None)
    return psycopg.conninfo.make_conninfo(**{key: str(value) for key, value in fields.items()})


@contextmanager
def own_connection(
    dsn: str, timeout: float, *, autocommit: bool = True
) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A connection of its own (for checks and migrations), closed when the block ends."""
    try:
        connection = psycopg.connect(
            dsn, autocommit=autocommit, connect_timeout=max(2, math.ceil(timeout))
        )
    except psycopg.Error as error:
        raise JournalError(
            f"cannot connect to the journal's database ({describe_dsn(dsn)}): {error}"
        ) from error
    with connection:
        yield connection


def found_version(connection: psycopg.Connection[tuple[Any, ...]], schema: str, where: str) -> int:
    """The journal's schema version in `schema` (0: no journal there)."""
    try:
        # The catalog, not information_schema: it lists tables the role may not read, too.
        present = connection.execute(
            "SELECT c.relname FROM pg_catalog.pg_class AS c"
            " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = ANY(%s)",
            (schema, list(TABLES)),
        ).fetchall()
        if ("schema_version",) not in present:
            if present:
                raise JournalError(
                    f"{where} holds tables that are not an fsaga journal's "
                    f"({', '.join(sorted(str(name) for (name,) in present))}): give the "
                    "journal a schema of its own"
                )
            return 0
        row = connection.execute(f"SELECT version FROM {quoted(schema)}.schema_version").fetchone()
    except psycopg.Error as error:
        raise JournalError(f"cannot read the journal's schema in {where}: {error}") from error
    return 0 if row is None else int(row[0])


def refuse_version(found: int, where: str, schema: str) -> None:
    if found > SCHEMA_VERSION:
        raise JournalVersionError(
            where,
            found,
            SCHEMA_VERSION,
            subject=f"the PostgreSQL journal in {where}",
        )
    if found == 0:
        raise JournalError(
            f"no fsaga journal in {where}: create it with `python -m fsaga journal migrate "
            f"--dsn DSN --schema {schema}`, or PostgresJournal.migrate(dsn, schema={schema!r})"
        )
    raise JournalError(
        f"the journal in {where} has schema version {found}, older than this fsaga's "
        f"{SCHEMA_VERSION}: upgrade it with `python -m fsaga journal migrate --dsn DSN "
        f"--schema {schema}`, or PostgresJournal.migrate(dsn, schema={schema!r})"
    )
