"""The tables of a `fsaga.journal.PostgresJournal`, in a schema of their own, and how they are
created and upgraded (`fsaga.journal.PostgresJournal.migrate`).

The layout is chosen for the commit floor, the cost of a single-row insert and its commit:

- ``entries`` is keyed by ``(saga_id, seq)``, and that primary key is the append's
  compare-and-set: an append is one statement that inserts the batch (if the saga is running,
  its lease is held, and the batch starts right after the last ``seq``), and of two writers that
  read the same timeline, the second one's insert meets the first one's key and fails, however
  their statements interleave. The commit writes the entries' heap page and index page, and
  the lock the statement takes on its saga's row (so that no finish, claim or lease change
  interleaves with it), nothing else.
- ``sagas`` is written when a saga is created, finished, claimed, parked, noted or released,
  when a lease is taken, renewed or released, and by an append only as a heartbeat
  (`fsaga.journal.records.HEARTBEAT`). None of its indexed columns changes then, except the
  status, so those updates stay on the row's page (``fillfactor`` leaves room for them).
- ``unfinished_sagas`` indexes only running and dead sagas: recoveries list them, and claims of
  expired leases search them.
- ``submissions`` is the queue of sagas submitted for any worker to start, oldest first; a
  saga leaves it when it is started. A submission whose starts keep failing is parked
  (``parked_at``): no worker claims it until it is released.
- ``schema_version`` holds the schema's version, one row.

Versions: 1 made the tables; 2 added to ``submissions`` what parks a submission whose starts keep
failing: when it was last claimed, the error its last start recorded, and when it was parked.

Saga ids are compared byte by byte (``COLLATE "C"``), so that sagas are listed in the same order
as by `fsaga.journal.SqliteJournal`, whatever the database's locale. Times are seconds since the
epoch (``double precision``): exactly what `fsaga.journal.SagaRecord` holds (``to_timestamp``
turns them into timestamps in a query).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from fsaga.journal.records import ENTRY_KINDS, FINISHED_STATUSES, SAGA_STATUSES

__all__ = ["SCHEMA_VERSION", "TABLES", "UNFINISHED_STATUSES", "quoted", "upgrade"]

SCHEMA_VERSION: Final = 2
"""The version of the tables this fsaga writes, kept in the schema's ``schema_version`` table."""

TABLES: Final = ("sagas", "entries", "submissions", "schema_version")
"""The journal's tables: a schema holding any of them without ``schema_version`` is not a
journal's."""

UNFINISHED_STATUSES: Final = tuple(
    status for status in SAGA_STATUSES if status not in FINISHED_STATUSES
)


def quoted(identifier: str) -> str:
    """`identifier` as a quoted SQL identifier.

    >>> quoted('my"jobs')
    '"my""jobs"'
    """
    return '"' + identifier.replace('"', '""') + '"'


def _one_of(values: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


def _create(schema: str) -> tuple[str, ...]:
    """Version 1 of the tables."""
    s = quoted(schema)
    return (
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""
        CREATE TABLE {s}.sagas (
            saga_id text COLLATE "C" PRIMARY KEY CHECK (saga_id <> ''),
            name text NOT NULL CHECK (name <> ''),
            version bigint NOT NULL,
            input bytea NOT NULL,
            status text NOT NULL CHECK (status IN {_one_of(SAGA_STATUSES)}),
            outcome bytea,
            recovery_attempts integer NOT NULL DEFAULT 0 CHECK (recovery_attempts >= 0),
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            last_recovery_at double precision,
            last_recovery_error bytea,
            lease_owner text,
            lease_expires_at double precision,
            CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
        ) WITH (fillfactor = 80)
        """,
        f"""
        CREATE TABLE {s}.entries (
            saga_id text COLLATE "C" NOT NULL REFERENCES {s}.sagas (saga_id) ON DELETE CASCADE,
            seq bigint NOT NULL CHECK (seq >= 1),
            kind text NOT NULL CHECK (kind IN {_one_of(ENTRY_KINDS)}),
            path text NOT NULL,
            attempt bigint NOT NULL CHECK (attempt >= 1),
            payload bytea,
            PRIMARY KEY (saga_id, seq)
        )
        """,
        f"""
        CREATE TABLE {s}.submissions (
            saga_id text COLLATE "C" PRIMARY KEY CHECK (saga_id <> ''),
            name text NOT NULL CHECK (name <> ''),
            input bytea NOT NULL,
            submitted_at double precision NOT NULL,
            claims integer NOT NULL DEFAULT 0 CHECK (claims >= 0),
            lease_owner text,
            lease_expires_at double precision,
            CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
        )
        """,
        f"CREATE INDEX unfinished_sagas ON {s}.sagas (status, created_at, saga_id)"
        f" WHERE status IN {_one_of(UNFINISHED_STATUSES)}",
        f"CREATE INDEX submissions_in_order ON {s}.submissions (submitted_at, saga_id)",
        f"""
        CREATE TABLE {s}.schema_version (
            version integer NOT NULL,
            only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row)
        )
        """,
        f"INSERT INTO {s}.schema_version (version) VALUES (1)",
    )


def _park_submissions(schema: str) -> tuple[str, ...]:
    """From version 1 to 2: what parks a submission whose starts keep failing."""
    s = quoted(schema)
    return (
        f"""
        ALTER TABLE {s}.submissions
            ADD COLUMN last_claimed_at double precision,
            ADD COLUMN last_error bytea,
            ADD COLUMN parked_at double precision,
            ADD CONSTRAINT parked_without_lease CHECK (parked_at IS NULL OR lease_owner IS NULL)
        """,
        f"UPDATE {s}.schema_version SET version = 2",
    )


_STEPS: Final = (_create, _park_submissions)
"""`_STEPS[n]` brings the tables from version n to n + 1."""


def upgrade(found: int, schema: str, *, to: int = SCHEMA_VERSION) -> tuple[str, ...]:
    """The statements that bring the journal in `schema` from version `found` (0: none yet) to
    version `to` (this fsaga's), to run in one transaction."""
    return tuple(statement for step in _STEPS[found:to] for statement in step(schema))
