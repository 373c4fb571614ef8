"""`SqliteJournal`: the `Journal` protocol in one SQLite file, with the stdlib `sqlite3`.

Durability, precisely (SQLite's own guarantees, https://sqlite.org/pragma.html#pragma_synchronous):

- every call that returned has committed, and a committed transaction survives a crash of the
  *process* in every mode;
- the journal runs in WAL mode; with ``synchronous="FULL"`` (the default) SQLite syncs the WAL
  at every commit, so a returned call also survives power loss or an OS crash;
- with ``synchronous="NORMAL"`` the WAL is synced only at checkpoints: commits are cheaper, but
  power loss or an OS crash may roll back the last transactions. The file is never corrupted
  either way, and what remains is always a prefix of what was written.

Concurrency: several processes may share one file (WAL lets readers run beside the one writer;
every write is a ``BEGIN IMMEDIATE`` transaction that waits up to `busy_timeout` for the write
lock), and one `SqliteJournal` may be shared by threads: it owns one connection and serialises
its use with a lock. SQLite admits one writer at a time anyway, so per-thread connections would
only let reads of one process overlap, at the cost of connections that outlive their threads.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Literal, TypeAlias

from fsaga._sqlite import check_busy_timeout, rollback, switch_to_wal, transaction, unopenable
from fsaga.journal._schema import SAGA_COLUMNS as _SAGA_COLUMNS
from fsaga.journal._schema import SCHEMA_VERSION as SCHEMA_VERSION
from fsaga.journal._schema import UNFINISHED as _UNFINISHED
from fsaga.journal._schema import UNFINISHED_STATUSES as _UNFINISHED_STATUSES
from fsaga.journal._schema import upgrade as _upgrade
from fsaga.journal.protocol import (
    Journal,
    JournalClosedError,
    JournalCorruptError,
    JournalError,
    JournalVersionError,
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
    HEARTBEAT,
    Entry,
    FinishedStatus,
    SagaRecord,
    SagaStatus,
)

__all__ = ["SCHEMA_VERSION", "SqliteJournal", "Synchronous"]

logger = logging.getLogger(__name__)

_CORRUPTION_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_IN_MEMORY_PATHS: Final = frozenset({"", ":memory:"})

_INSERT_SAGA: Final = (
    f"INSERT INTO sagas ({_SAGA_COLUMNS})"
    " VALUES (?, ?, ?, ?, 'running', NULL, 0, ?, ?, NULL, NULL)"
    " ON CONFLICT (saga_id) DO NOTHING"
)
_ROWS_PER_INSERT: Final = 32
# The last seq is one seek down the entries' primary key, to the end of the saga's range.
_SELECT_WRITE_STATE: Final = (
    "SELECT id, status, updated_at,"
    " (SELECT seq FROM entries WHERE saga = sagas.id ORDER BY seq DESC LIMIT 1)"
    " FROM sagas WHERE saga_id = ?"
)
# The second condition is the unfinished_sagas index's own: stated, it lets SQLite read it.
_SELECT_UNFINISHED: Final = (
    f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE status = ? AND {_UNFINISHED}"
    " ORDER BY created_at, saga_id"
)

Synchronous: TypeAlias = Literal["FULL", "NORMAL"]
"""SQLite's ``synchronous`` setting for the journal: see the module docstring."""


class SqliteJournal(Journal):
    """A `Journal` in an SQLite file, created with its schema when absent.

    Args:
        path: the database file. ``":memory:"`` is refused: an in-memory database cannot run in
            WAL mode and would not outlive the process; use `fsaga.journal.MemoryJournal`.
        synchronous: ``"FULL"`` (a returned write survives power loss) or ``"NORMAL"`` (a
            returned write survives a process crash; power loss may roll back the last ones).
            See the module docstring.
        busy_timeout: how long a write waits for another connection's write lock, in seconds,
            before it fails with `JournalError`.
        clock: gives the timestamps of records (seconds since the epoch).

    Raises:
        ValueError: `path` is ``":memory:"`` or empty, or an option is out of range.
        JournalCorruptError: the file is not an SQLite database, or is damaged.
        JournalVersionError: the file was written by a newer fsaga.
        JournalError: the file cannot be opened, is another application's database, or cannot
            be put in WAL mode (e.g. on a file system without shared memory support).

    Besides the errors of the protocol, any method may raise `JournalCorruptError` when it finds
    damage, and `JournalError` when SQLite fails (a write lock held past `busy_timeout`, an I/O
    error); either way the transaction was rolled back, so retrying the call is safe. (If the disk
    failed during the commit itself, the batch may still turn up after a restart; a retried
    `append` then gets `EntrySequenceError`, and `entries` shows whether the batch landed.)

    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with SqliteJournal(Path(folder) / "journal.db") as journal:
    ...         record, created = journal.create("order-1", "order", 1, b"{}")
    ...         journal.append("order-1", [Entry(1, "intent", "charge", 1)])
    ...     with SqliteJournal(Path(folder) / "journal.db") as reopened:
    ...         [entry.kind for entry in reopened.entries("order-1")]
    ['intent']
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = os.fspath(path)
        if self._path in _IN_MEMORY_PATHS:
            raise ValueError(
                f"SqliteJournal needs a file, got {self._path!r}: an in-memory SQLite database "
                "cannot use WAL and does not outlive the process; use MemoryJournal instead"
            )
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        busy_timeout = check_busy_timeout(busy_timeout, what="busy_timeout")
        self._synchronous = synchronous
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self._connection = self._connect(busy_timeout)
        # Every statement goes through this one cursor, sparing each the making of its own.
        self._cursor = self._connection.cursor()
        logger.debug("opened journal %s (WAL, synchronous=%s)", self._path, synchronous)

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"SqliteJournal({self._path!r}, synchronous={self._synchronous!r}{state})"

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
        _check_saga_fields(saga_id, name, version, input)
        _check_sequence(saga_id, 1, entries)
        with self._transaction(write=True) as db:
            now = float(self._clock())
            inserted = db.execute(_INSERT_SAGA, (saga_id, name, version, input, now, now))
            if inserted.rowcount == 0:
                existing = _select_record(db, saga_id)
                assert existing is not None  # the insert met it, in one transaction
                return existing, False
            key = inserted.lastrowid
            assert key is not None  # an inserted row has one
            _insert_entries(db, key, entries)
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

    def append(self, saga_id: str, entries: Sequence[Entry]) -> None:
        """See `Journal.append`."""
        with self._transaction(write=True) as db:
            key, status, updated_at, last = _write_state(db, saga_id)
            if status != "running":
                raise SagaFinishedError(saga_id, status)
            _check_sequence(saga_id, last + 1, entries)
            if entries:
                _insert_entries(db, key, entries)
                now = float(self._clock())
                if now - updated_at >= HEARTBEAT:
                    db.execute("UPDATE sagas SET updated_at = ? WHERE id = ?", (now, key))

    def entries(self, saga_id: str) -> list[Entry]:
        """See `Journal.entries`."""
        with self._transaction(write=False) as db:
            found = db.execute("SELECT id FROM sagas WHERE saga_id = ?", (saga_id,)).fetchone()
            if found is None:
                raise UnknownSagaError(saga_id)
            rows = db.execute(
                "SELECT seq, kind, path, attempt, payload FROM entries WHERE saga = ? ORDER BY seq",
                found,
            ).fetchall()
        return [Entry(*row) for row in rows]

    def finish(
        self,
        saga_id: str,
        status: FinishedStatus,
        outcome: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> bool:
        """See `Journal.finish`."""
        _check_finished_status(status)
        _check_bytes("outcome", outcome)
        with self._transaction(write=True) as db:
            key, current, _, last = _write_state(db, saga_id)
            if current != "running":
                return False
            _check_sequence(saga_id, last + 1, entries)
            _insert_entries(db, key, entries)
            updated = db.execute(
                "UPDATE sagas SET status = ?, outcome = ?, updated_at = ?"
                " WHERE id = ? AND status = 'running'",
                (status, outcome, float(self._clock()), key),
            )
            return updated.rowcount == 1

    def get(self, saga_id: str) -> SagaRecord | None:
        """See `Journal.get`."""
        with self._transaction(write=False) as db:
            return _select_record(db, saga_id)

    def sagas(self, status: SagaStatus | None = None) -> list[SagaRecord]:
        """See `Journal.sagas`."""
        _check_status(status)
        with self._transaction(write=False) as db:
            if status is None:
                rows = db.execute(
                    f"SELECT {_SAGA_COLUMNS} FROM sagas ORDER BY created_at, saga_id"
                ).fetchall()
            elif status in _UNFINISHED_STATUSES:
                rows = db.execute(_SELECT_UNFINISHED, (status,)).fetchall()
            else:
                rows = db.execute(
                    f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE status = ?"
                    " ORDER BY created_at, saga_id",
                    (status,),
                ).fetchall()
        # The schema's constraints guarantee the columns' types and values.
        return [SagaRecord(*row) for row in rows]

    def claim_for_recovery(
        self, saga_id: str, *, max_attempts: int, stale_before: float | None = None
    ) -> bool:
        """See `Journal.claim_for_recovery`."""
        _check_max_attempts(max_attempts)
        with self._transaction(write=True) as db:
            record = _require_record(db, saga_id)
            if record.finished:
                return False
            if stale_before is not None and record.updated_at >= stale_before:
                return False
            now = float(self._clock())
            if record.recovery_attempts >= max_attempts:
                db.execute(
                    "UPDATE sagas SET status = 'dead', updated_at = ?"
                    " WHERE saga_id = ? AND status = 'running'",
                    (now, saga_id),
                )
                logger.debug("saga %s is dead after %d recoveries", saga_id, max_attempts)
                return False
            claimed = db.execute(
                "UPDATE sagas SET recovery_attempts = recovery_attempts + 1, updated_at = ?,"
                " last_recovery_at = ?, last_recovery_error = NULL"
                " WHERE saga_id = ? AND status = 'running'",
                (now, now, saga_id),
            )
            return claimed.rowcount == 1

    def record_recovery_error(self, saga_id: str, error: bytes) -> bool:
        """See `Journal.record_recovery_error`."""
        _check_bytes("error", error)
        with self._transaction(write=True) as db:
            _require_record(db, saga_id)
            noted = db.execute(
                "UPDATE sagas SET last_recovery_error = ?, updated_at = ?"
                " WHERE saga_id = ? AND status = 'running'",
                (error, float(self._clock()), saga_id),
            )
            return noted.rowcount == 1

    def release(self, saga_id: str) -> SagaRecord:
        """See `Journal.release`."""
        with self._transaction(write=True) as db:
            record = _require_record(db, saga_id)
            if record.status != "dead":
                raise SagaNotDeadError(saga_id, record.status)
            db.execute(
                "UPDATE sagas SET status = 'running', recovery_attempts = 0"
                " WHERE saga_id = ? AND status = 'dead'",
                (saga_id,),
            )
            released = _select_record(db, saga_id)
        assert released is not None  # found dead in the same transaction
        logger.debug("saga %s released for recovery", saga_id)
        return released

    def integrity_check(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check``: ``["ok"]`` for a sound file, else the problems.

        Raises:
            JournalCorruptError: the damage is too severe for SQLite to list.
        """
        with self._lock, self._translated_errors():
            rows = self._open_connection().execute("PRAGMA integrity_check").fetchall()
        return [str(row[0]) for row in rows]

    def pragmas(self) -> dict[str, object]:
        """The settings in effect on the journal's connection, for diagnostics.

        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     with SqliteJournal(Path(folder) / "journal.db", busy_timeout=2) as journal:
        ...         journal.pragmas()
        {'journal_mode': 'wal', 'synchronous': 2, 'busy_timeout': 2000, 'foreign_keys': 1}
        """
        names = ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        with self._lock, self._translated_errors():
            connection = self._open_connection()
            return {name: connection.execute(f"PRAGMA {name}").fetchone()[0] for name in names}

    def close(self) -> None:
        """See `Journal.close`."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._connection.close()
                logger.debug("closed journal %s", self._path)

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        problem = unopenable(self._path)
        if problem is not None:
            raise JournalError(f"cannot open the journal {self._path!r}: {problem}")
        self._check_length()
        with self._translated_errors():
            connection = sqlite3.connect(
                self._path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        try:
            with self._translated_errors():
                connection.execute(f"PRAGMA busy_timeout = {round(busy_timeout * 1000)}")
                found = self._schema_version(connection)
                mode = switch_to_wal(connection, busy_timeout)
                if str(mode).lower() != "wal":
                    raise JournalError(
                        f"journal file {self._path!r} cannot use WAL mode (SQLite kept "
                        f"{mode!r}); the file system may lack shared memory support"
                    )
                connection.execute(f"PRAGMA synchronous = {self._synchronous}")
                connection.execute("PRAGMA foreign_keys = ON")
                if found != SCHEMA_VERSION:
                    self._create_schema(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _schema_version(self, connection: sqlite3.Connection) -> int:
        """The file's schema version, after refusing a newer fsaga's or another program's file."""
        # Both reads in one transaction: another process creating the schema at this moment
        # must not be seen half done (a version of 0 beside its tables).
        own = not connection.in_transaction
        if own:
            connection.execute("BEGIN")
        try:
            found = int(connection.execute("PRAGMA user_version").fetchone()[0])
            others = [
                str(row[0])
                for row in connection.execute(
                    "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
        finally:
            if own:
                rollback(connection)
        if found > SCHEMA_VERSION:
            raise JournalVersionError(self._path, found, SCHEMA_VERSION)
        if found == 0 and others:
            raise JournalError(
                f"{self._path!r} is an SQLite database but not an fsaga journal "
                f"(user_version {found}, objects {others})"
            )
        return found

    def _check_length(self) -> None:
        """Refuse a file shorter than its own header says: SQLite would read the missing pages
        as zeros and answer wrongly without an error (a truncated copy, a torn write)."""
        try:
            with open(self._path, "rb") as file:
                header = file.read(100)
                length = file.seek(0, os.SEEK_END)
        except FileNotFoundError:
            return
        except OSError as error:
            raise JournalError(f"journal {self._path!r}: {error}") from error
        if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
            return  # empty (a new journal) or not SQLite: the connection says which
        with contextlib.suppress(OSError):
            if os.path.getsize(f"{self._path}-wal") > 0:
                return  # a checkpoint may be under way: the write-ahead log holds the rest
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        # The page count in the header is valid when its version number matches the change
        # counter (SQLite 3.7.0 and later write both).
        if header[24:28] == header[92:96] and length < pages * page_size:
            raise JournalCorruptError(
                self._path,
                f"the file holds {length} bytes; its header says {pages} pages of {page_size}",
            )

    def _create_schema(self, connection: sqlite3.Connection) -> None:
        """Create the schema in a new file, or upgrade an earlier version's, in one
        transaction."""
        with transaction(connection, write=True):
            # Another process may have created or upgraded the schema since the first look.
            found = self._schema_version(connection)
            if found == SCHEMA_VERSION:
                return
            # An upgrade drops the old tables. SQLite built to delete securely (as many
            # distributions build it) would write each of their pages, zeroed, to the WAL.
            secure_delete = int(connection.execute("PRAGMA secure_delete").fetchone()[0])
            connection.execute("PRAGMA secure_delete = FAST")
            try:
                for statement in _upgrade(found):
                    connection.execute(statement)
            finally:
                connection.execute(f"PRAGMA secure_delete = {secure_delete}")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if found:
            logger.debug(
                "upgraded journal %s from schema %d to %d", self._path, found, SCHEMA_VERSION
            )

    def _open_connection(self) -> sqlite3.Connection:
        if self._closed:
            raise JournalClosedError(f"the journal {self._path!r} is closed")
        return self._connection

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Cursor]:
        """One transaction of the journal's connection, under its lock: committed when the
        block ends, rolled back when it raises (see `fsaga._sqlite.transaction`), SQLite's
        errors turned into journal errors.

        One generator for all three: every write of a run goes through here, and the three
        context managers nested cost about 2 µs more per transaction, a tenth of a commit's
        cost with ``synchronous="NORMAL"``.
        """
        with self._lock:
            connection = self._open_connection()
            cursor = self._cursor
            try:
                cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield cursor
                    cursor.execute("COMMIT")
                except BaseException:
                    rollback(connection)
                    raise
            except (sqlite3.Error, UnicodeDecodeError) as error:
                translated = self._translated(error)
                if translated is None:
                    raise
                raise translated from error

    @contextlib.contextmanager
    def _translated_errors(self) -> Iterator[None]:
        """Turn SQLite's errors about the file into journal errors naming the file."""
        try:
            yield
        except (sqlite3.Error, UnicodeDecodeError) as error:
            translated = self._translated(error)
            if translated is None:
                raise
            raise translated from error

    def _translated(self, error: sqlite3.Error | UnicodeDecodeError) -> JournalError | None:
        """The journal error that says what `error` means for the file, if any."""
        if isinstance(error, UnicodeDecodeError):
            # SQLite's own message about a damaged schema, in bytes that are not UTF-8.
            return JournalCorruptError(self._path, f"unreadable text in the file: {error}")
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _CORRUPTION_CODES:
            return JournalCorruptError(self._path, str(error))
        if isinstance(error, sqlite3.OperationalError):
            return JournalError(f"journal {self._path!r}: {error}")
        return None


def _write_state(db: sqlite3.Cursor, saga_id: str) -> tuple[int, SagaStatus, float, int]:
    """The saga's key, status, `SagaRecord.updated_at` and last ``seq``, in one read: what a
    write checks before it inserts entries (the compare-and-set on the timeline)."""
    row = db.execute(_SELECT_WRITE_STATE, (saga_id,)).fetchone()
    if row is None:
        raise UnknownSagaError(saga_id)
    key, status, updated_at, last = row
    return key, status, updated_at, last or 0


def _insert_entries(db: sqlite3.Cursor, key: int, entries: Sequence[Entry]) -> None:
    """Insert `entries` of the saga `key` with one statement per batch of up to
    `_ROWS_PER_INSERT`: a run writes one to three entries at a time, and for so few a
    statement apiece (or ``executemany``) costs a good part of what the inserts do."""
    for start in range(0, len(entries), _ROWS_PER_INSERT):
        batch = entries[start : start + _ROWS_PER_INSERT]
        db.execute(
            _insert_sql(len(batch)),
            [
                value
                for entry in batch
                for value in (key, entry.seq, entry.kind, entry.path, entry.attempt, entry.payload)
            ],
        )


@functools.cache
def _insert_sql(rows: int) -> str:
    """The statement that inserts `rows` entries (SQLite keeps it prepared, by its text)."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO entries (saga, seq, kind, path, attempt, payload) VALUES {values}"


def _select_record(db: sqlite3.Cursor, saga_id: str) -> SagaRecord | None:
    row = db.execute(f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE saga_id = ?", (saga_id,)).fetchone()
    return None if row is None else SagaRecord(*row)


def _require_record(db: sqlite3.Cursor, saga_id: str) -> SagaRecord:
    record = _select_record(db, saga_id)
    if record is None:
        raise UnknownSagaError(saga_id)
    return record
