"""The tables of a `fsaga.journal.SqliteJournal` file, and how a file of an earlier version is
upgraded.

The layout is chosen for what a run's commits write, page by page: every page a commit changes
is one more frame written to the WAL (and synced, with ``synchronous="FULL"``).

- ``entries`` is keyed by the saga's integer key and ``seq``, ``WITHOUT ROWID``: one B-tree with
  no index beside it, and since keys grow with each new saga, running sagas' entries sit at its
  right edge. An append of a result and the next intent writes one page (two before version 3:
  a table and its primary key's index). The primary key also refuses a second entry at a
  ``seq``.
- ``sagas`` is written when a saga is created, finished, claimed, parked, noted or released,
  and by an append only as a heartbeat (`fsaga.journal.records.HEARTBEAT`).
- ``unfinished_sagas`` indexes only the running and dead sagas, which a recovery lists: a saga
  enters it when created and leaves it when finished, so it stays small. (Listing the sagas of
  a finished status reads the whole table.)

A run of 10 steps writes 16 pages over its 11 commits (more when a page fills and splits): 4
to create the saga (its row, its id's index, the unfinished index, its first entry), 1 per
append, 3 to finish it (the row, the unfinished index, the last entry).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from fsaga.journal.records import ENTRY_KINDS, FINISHED_STATUSES, SAGA_STATUSES

__all__ = [
    "SAGA_COLUMNS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "UNFINISHED",
    "UNFINISHED_STATUSES",
    "upgrade",
]

SCHEMA_VERSION: Final = 3
"""The schema this fsaga writes, stored in the file's ``PRAGMA user_version``.

A file of an earlier version is upgraded in place when it is opened: version 2 added what a
dead saga says about its last recovery (`SagaRecord.last_recovery_at`,
`SagaRecord.last_recovery_error`) and the ``"rejected"`` entry kind; version 3 keeps the same
records in the layout described in this module's docstring, which writes fewer pages per
commit.
"""


def _one_of(column: str, values: Sequence[str]) -> str:
    """SQL that `column` holds one of `values`.

    Spelled as ``a = 'x' OR a = 'y' ...``: SQLite builds an ``IN`` list into a temporary table
    each time a statement that checks it runs, which costs a single-row insert as much again
    as the insert itself.
    """
    return "(" + " OR ".join(f"{column} = '{value}'" for value in values) + ")"


UNFINISHED_STATUSES: Final = tuple(
    status for status in SAGA_STATUSES if status not in FINISHED_STATUSES
)
"""The statuses the ``unfinished_sagas`` index holds: ``("running", "dead")``."""

UNFINISHED: Final = _one_of("status", UNFINISHED_STATUSES)
"""The condition of the ``unfinished_sagas`` index: a query that states it, word for word,
can read the index."""


_TABLES: Final = (
    f"""
    CREATE TABLE sagas (
        id INTEGER PRIMARY KEY,
        saga_id TEXT NOT NULL,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        input BLOB NOT NULL,
        status TEXT NOT NULL CHECK {_one_of("status", SAGA_STATUSES)},
        outcome BLOB,
        recovery_attempts INTEGER NOT NULL DEFAULT 0 CHECK (recovery_attempts >= 0),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_recovery_at REAL,
        last_recovery_error BLOB
    )
    """,
    f"""
    CREATE TABLE entries (
        saga INTEGER NOT NULL REFERENCES sagas (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL CHECK (seq >= 1),
        kind TEXT NOT NULL CHECK {_one_of("kind", ENTRY_KINDS)},
        path TEXT NOT NULL,
        attempt INTEGER NOT NULL CHECK (attempt >= 1),
        payload BLOB,
        PRIMARY KEY (saga, seq)
    ) WITHOUT ROWID
    """,
)

# Apart from the tables, so that an upgrade builds them once the rows are in: SQLite sorts the
# keys first and writes each page once, where keeping them up row by row rewrites pages.
_INDEXES: Final = (
    "CREATE UNIQUE INDEX sagas_by_saga_id ON sagas (saga_id)",
    f"CREATE INDEX unfinished_sagas ON sagas (status, created_at, saga_id) WHERE {UNFINISHED}",
)

SCHEMA: Final = _TABLES + _INDEXES
"""The statements that create the tables and indexes of a new file."""

SAGA_COLUMNS: Final = (
    "saga_id, name, version, input, status, outcome, recovery_attempts, created_at, updated_at,"
    " last_recovery_at, last_recovery_error"
)

# Version 1 lacked the two columns of a dead saga's last recovery. (Its entries table also
# refused the "rejected" kind; the rebuild below replaces that table anyway.)
_FROM_1_TO_2: Final = (
    "ALTER TABLE sagas ADD COLUMN last_recovery_at REAL",
    "ALTER TABLE sagas ADD COLUMN last_recovery_error BLOB",
)

# From version 2: the tables are rebuilt, since SQLite cannot change a table's keys in place.
# The old ones are renamed out of the way, the new ones filled in key order (each page written
# once) with every saga keeping its row id as its key, the old ones dropped (so that the
# indexes, built last, reuse their pages).
_FROM_2_TO_3: Final = (
    "ALTER TABLE entries RENAME TO entries_v2",
    "ALTER TABLE sagas RENAME TO sagas_v2",
    *_TABLES,
    f"INSERT INTO sagas (id, {SAGA_COLUMNS})"
    f" SELECT rowid, {SAGA_COLUMNS} FROM sagas_v2 ORDER BY rowid",
    "INSERT INTO entries (saga, seq, kind, path, attempt, payload)"
    " SELECT sagas_v2.rowid, old.seq, old.kind, old.path, old.attempt, old.payload"
    " FROM entries_v2 AS old JOIN sagas_v2 USING (saga_id) ORDER BY sagas_v2.rowid, old.seq",
    "DROP TABLE entries_v2",
    "DROP TABLE sagas_v2",
    *_INDEXES,
)


def upgrade(found: int) -> tuple[str, ...]:
    """The statements that bring a file of schema version `found` (0 for a new, empty file) to
    `SCHEMA_VERSION`, to run in one transaction."""
    if found == 0:
        return SCHEMA
    return (_FROM_1_TO_2 if found < 2 else ()) + (_FROM_2_TO_3 if found < 3 else ())
