"""The tables of a `fsaga.journal.SqliteJournal` file, and how a file of an earlier version is
upgraded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from fsaga.journal.records import ENTRY_KINDS, SAGA_STATUSES

__all__ = ["SAGA_COLUMNS", "SCHEMA", "SCHEMA_VERSION", "UPGRADE_FROM_1"]

SCHEMA_VERSION: Final = 2
"""The schema this fsaga writes, stored in the file's ``PRAGMA user_version``.

A file of an earlier version is upgraded in place when it is opened: version 2 added what a
dead saga says about its last recovery (`SagaRecord.last_recovery_at`,
`SagaRecord.last_recovery_error`) and the ``"rejected"`` entry kind.
"""


def _sql_list(values: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


def _entries_table(name: str) -> str:
    return f"""
    CREATE TABLE {name} (
        saga_id TEXT NOT NULL REFERENCES sagas (saga_id) ON DELETE CASCADE,
        seq INTEGER NOT NULL CHECK (seq >= 1),
        kind TEXT NOT NULL CHECK (kind IN {_sql_list(ENTRY_KINDS)}),
        path TEXT NOT NULL,
        attempt INTEGER NOT NULL CHECK (attempt >= 1),
        payload BLOB,
        PRIMARY KEY (saga_id, seq)
    )
    """


SCHEMA: Final = (
    f"""
    CREATE TABLE sagas (
        saga_id TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        input BLOB NOT NULL,
        status TEXT NOT NULL CHECK (status IN {_sql_list(SAGA_STATUSES)}),
        outcome BLOB,
        recovery_attempts INTEGER NOT NULL DEFAULT 0 CHECK (recovery_attempts >= 0),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_recovery_at REAL,
        last_recovery_error BLOB
    )
    """,
    "CREATE INDEX sagas_by_status ON sagas (status, created_at, saga_id)",
    _entries_table("entries"),
)

# From version 1: two columns for dead sagas, and an entries table whose kinds include
# "rejected" (SQLite cannot change a CHECK constraint in place, so the table is rebuilt).
UPGRADE_FROM_1: Final = (
    "ALTER TABLE sagas ADD COLUMN last_recovery_at REAL",
    "ALTER TABLE sagas ADD COLUMN last_recovery_error BLOB",
    _entries_table("entries_v2"),
    "INSERT INTO entries_v2 (saga_id, seq, kind, path, attempt, payload)"
    " SELECT saga_id, seq, kind, path, attempt, payload FROM entries",
    "DROP TABLE entries",
    "ALTER TABLE entries_v2 RENAME TO entries",
)

SAGA_COLUMNS: Final = (
    "saga_id, name, version, input, status, outcome, recovery_attempts, created_at, updated_at,"
    " last_recovery_at, last_recovery_error"
)
