"""`SqliteStore`: the `Store` protocol as a real SQLite table, with the stdlib `sqlite3`.

Each store is one table named after it, with one row per key::

    CREATE TABLE orders (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL)

Values are stored as the bytes of a `fsaga.journal.Codec` (`JsonCodec` by default, so any
SQLite tool reads them). Beside the stores' tables, one database holds two of fsaga's own:
``fsaga_stores`` (each store's key type and version counter) and ``fsaga_store_writes`` (the
`Change` recorded under each write id, so a write asked for again is not applied twice). Several
stores can share a file, and the file can hold other tables of your application.

Every write is one ``BEGIN IMMEDIATE`` transaction: the write-id check, the condition, the write,
the version counter and the record of the change commit together or not at all. Files run in
WAL mode with ``synchronous=FULL`` by default, as `fsaga.journal.SqliteJournal` does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Final, Generic, Literal, TypeAlias, TypeVar, cast, final, overload

from fsaga._sqlite import check_busy_timeout, switch_to_wal, transaction, unopenable
from fsaga.journal.codec import Codec, CodecError, JsonCodec
from fsaga.stores.errors import (
    MissingKeyError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
)
from fsaga.stores.protocol import (
    Change,
    Deleted,
    Expected,
    Versioned,
    check_expected,
    check_store_name,
    check_undo,
    check_undo_arguments,
    replayed_change,
)

__all__ = ["SqliteStore", "Synchronous"]

logger = logging.getLogger(__name__)

_K = TypeVar("_K", str, int)
_V = TypeVar("_V")

Synchronous: TypeAlias = Literal["FULL", "NORMAL"]
"""SQLite's ``synchronous`` setting: ``"FULL"`` syncs every commit (a returned write survives
power loss), ``"NORMAL"`` only at checkpoints (a returned write survives a process crash)."""

_SCHEMA_VERSION: Final = 1
_META: Final = (
    """
    CREATE TABLE IF NOT EXISTS fsaga_stores (
        name TEXT PRIMARY KEY NOT NULL,
        key_type TEXT NOT NULL CHECK (key_type IN ('str', 'int')),
        last_version INTEGER NOT NULL CHECK (last_version >= 0),
        schema_version INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS fsaga_store_deletions (
        store TEXT NOT NULL,
        key NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (store, key)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS fsaga_store_writes (
        store TEXT NOT NULL,
        write_id TEXT NOT NULL,
        key NOT NULL,
        applied INTEGER NOT NULL CHECK (applied IN (0, 1)),
        before_value BLOB,
        before_version INTEGER,
        after_value BLOB,
        after_version INTEGER,
        undone INTEGER NOT NULL CHECK (undone IN (0, 1)),
        PRIMARY KEY (store, write_id)
    ) WITHOUT ROWID
    """,
)
_KEY_COLUMN_TYPES: Final = {"str": "TEXT", "int": "INTEGER"}
_UNAVAILABLE_CODES: Final = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)
_INT64: Final = range(-(2**63), 2**63)

# One row of fsaga_store_writes, as selected by `_recorded`.
_WriteRow: TypeAlias = tuple[object, int, bytes | None, int | None, bytes | None, int | None, int]


@final
class SqliteStore(Generic[_K, _V]):
    """A `Store` kept in a table of an SQLite file, created on first use.

    Thread-safe: one connection, its use serialised by a lock. Several processes may use the
    same file; each write waits up to `busy_timeout` for SQLite's write lock.

    Annotate the value type where you open the store (mypy cannot infer it from a codec)::

        orders: SqliteStore[str, dict[str, object]] = SqliteStore("shop.db", "orders")

    Args:
        path: the database file, or ``":memory:"`` for a private in-memory database.
        name: the store's name and its table's (letters, digits and ``_``).
        key_type: ``str`` (the default) or ``int``: the type of every key.
        codec: turns values into bytes and back; a value it cannot encode fails the write
            (`fsaga.journal.CodecError`, a `TypeError`) before anything is written.
        synchronous: ``"FULL"`` or ``"NORMAL"``, see `Synchronous`.
        busy_timeout: seconds a write waits for another connection's write lock before it fails
            with `StoreUnavailableError`.

    Raises:
        TypeError, ValueError: a bad name, key type or option.
        StoreError: the file is not a database, the table exists but is not this store's (it
            is another table of the application, or the store was created with another key
            type), or it was created by a newer fsaga.
        StoreUnavailableError: the file cannot be opened or is locked.

    >>> stock: SqliteStore[str, int] = SqliteStore(":memory:", "stock")
    >>> change = stock.put("sku-1", 10)
    >>> stock.get("sku-1")
    Versioned(value=10, version=1)
    >>> stock.close()
    """

    __slots__ = (
        "_closed",
        "_codec",
        "_connection",
        "_key_type",
        "_lock",
        "_name",
        "_path",
        "_table",
        "_upsert",
    )

    @overload
    def __init__(
        self: SqliteStore[str, _V],
        path: str | os.PathLike[str],
        name: str,
        *,
        key_type: type[str] = ...,
        codec: Codec = ...,
        synchronous: Synchronous = ...,
        busy_timeout: float = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: SqliteStore[int, _V],
        path: str | os.PathLike[str],
        name: str,
        *,
        key_type: type[int],
        codec: Codec = ...,
        synchronous: Synchronous = ...,
        busy_timeout: float = ...,
    ) -> None: ...
    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str,
        *,
        key_type: type[str] | type[int] = str,
        codec: Codec = JsonCodec(),  # noqa: B008 (an immutable value)
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 5.0,
    ) -> None:
        self._name = check_store_name(name)
        self._table = f'"{name}"'
        self._upsert = (
            f"INSERT INTO {self._table} (key, value, version) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version"
        )
        if key_type is not str and key_type is not int:
            raise TypeError(f"store {name!r}: key_type must be str or int, got {key_type!r}")
        self._key_type = key_type
        if not (
            callable(getattr(codec, "encode", None)) and callable(getattr(codec, "decode", None))
        ):
            raise TypeError(f"store {name!r}: codec must have encode and decode, got {codec!r}")
        self._codec = codec
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(
                f"store {name!r}: synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}"
            )
        seconds = check_busy_timeout(busy_timeout, what=f"store {name!r}: busy_timeout")
        self._path = os.fspath(path)
        problem = unopenable(self._path)
        if problem is not None:
            # Not a StoreUnavailableError: no retry can fix a path.
            raise StoreError(name, f"store {name!r}: cannot open {self._path!r}: {problem}")
        self._lock = threading.RLock()
        self._closed = False
        self._connection = self._connect(synchronous, seconds)
        logger.debug("opened store %s in %s", name, self._path)

    @property
    def name(self) -> str:
        """The store's name, which is also its table's."""
        return self._name

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"SqliteStore({self._path!r}, {self._name!r}{state})"

    def pragmas(self) -> dict[str, object]:
        """The settings in effect on the store's connection, for diagnostics.

        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     with SqliteStore(Path(folder) / "shop.db", "stock", busy_timeout=2) as store:
        ...         store.pragmas()
        {'journal_mode': 'wal', 'synchronous': 2, 'busy_timeout': 2000}
        """
        names = ("journal_mode", "synchronous", "busy_timeout")
        with self._transaction(write=False) as db:
            return {name: db.execute(f"PRAGMA {name}").fetchone()[0] for name in names}

    def close(self) -> None:
        """Close the connection; every later call raises `StoreClosedError`."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._connection.close()

    def __enter__(self) -> SqliteStore[_K, _V]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check_key(self, key: object, /) -> None:
        """Keys are all of the store's `key_type`; an int key must fit in 64 bits."""
        if isinstance(key, bool) or not isinstance(key, self._key_type):
            raise TypeError(
                f"store {self._name!r} holds {self._key_type.__name__} keys, got "
                f"{type(key).__name__} {key!r}"
            )
        if isinstance(key, int) and key not in _INT64:
            raise TypeError(f"store {self._name!r}: key {key} does not fit in 64 bits")

    def get(self, key: _K, /) -> Versioned[_V] | None:
        """See `Store.get`."""
        self.check_key(key)
        with self._transaction(write=False) as db:
            row = db.execute(
                f"SELECT value, version FROM {self._table} WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else Versioned(self._decode(key, row[0]), row[1])

    def put(
        self, key: _K, value: _V, /, *, expected: Expected = None, write_id: str | None = None
    ) -> Change[_V]:
        """See `Store.put`."""
        self.check_key(key)
        data = self._encode(key, value)
        with self._transaction(write=True) as db:
            recorded = self._recorded(db, key, write_id)
            if recorded is not None:
                return recorded
            before = self._raw_state(db, key)
            check_expected(self._name, key, before, expected)
            after = Versioned(data, self._next_version(db))
            self._set(db, key, after, before)
            self._record(db, key, write_id, before, after)
            return Change(self._decoded(key, before), Versioned(value, after.version))

    def delete(
        self, key: _K, /, *, expected: Expected = None, write_id: str | None = None
    ) -> Change[_V]:
        """See `Store.delete`."""
        self.check_key(key)
        with self._transaction(write=True) as db:
            recorded = self._recorded(db, key, write_id)
            if recorded is not None:
                return recorded
            before = self._raw_state(db, key)
            check_expected(self._name, key, before, expected)
            if not isinstance(before, Versioned):
                self._record(db, key, write_id, before, before)  # nothing to delete
                return Change(before, before)
            after = Deleted(self._next_version(db))
            self._set(db, key, after, before)
            self._record(db, key, write_id, before, after)
            return Change(self._decoded(key, before), after)

    def update(
        self, key: _K, function: Callable[[_V], _V], /, *, write_id: str | None = None
    ) -> Change[_V]:
        """See `Store.update`; `function` runs inside the write transaction."""
        self.check_key(key)
        with self._transaction(write=True) as db:
            recorded = self._recorded(db, key, write_id)
            if recorded is not None:
                return recorded
            before = self._raw_state(db, key)
            if not isinstance(before, Versioned):
                raise MissingKeyError(self._name, key)
            value = function(self._decode(key, before.value))
            after = Versioned(self._encode(key, value), self._next_version(db))
            self._set(db, key, after, before)
            self._record(db, key, write_id, before, after)
            return Change(self._decoded(key, before), Versioned(value, after.version))

    def undo(self, key: _K, change: Change[_V] | None, /, *, write_id: str | None = None) -> None:
        """See `Store.undo`."""
        self.check_key(key)
        with self._transaction(write=True) as db:
            # Decoding the recorded change is needed only when the caller has none to give.
            receipt = (
                self._receipt(db, key, write_id)
                if change is None
                else self._receipt_state(db, write_id)
            )
            check_undo_arguments(
                self._name, key, change, write_id, key if receipt is None else receipt[0]
            )
            if receipt is not None:
                if receipt[2]:
                    return  # undone already
                if change is None:
                    change = receipt[1]
            if change is not None:
                found = self._raw_state(db, key)
                if check_undo(self._name, key, found, change):
                    restored = change.before
                    if isinstance(restored, Versioned):
                        raw = Versioned(self._encode(key, restored.value), restored.version)
                        self._set(db, key, raw, found)
                    else:
                        self._set(db, key, restored, found)
            if write_id is not None:
                db.execute(
                    "INSERT INTO fsaga_store_writes (store, write_id, key, applied, undone)"
                    " VALUES (?, ?, ?, 0, 1)"
                    " ON CONFLICT (store, write_id) DO UPDATE SET undone = 1",
                    (self._name, write_id, key),
                )

    def snapshot(self) -> dict[_K, Versioned[_V]]:
        """Every key and its versioned value, in key order."""
        with self._transaction(write=False) as db:
            rows = db.execute(
                f"SELECT key, value, version FROM {self._table} ORDER BY key"
            ).fetchall()
        return {key: Versioned(self._decode(key, data), version) for key, data, version in rows}

    def forget_writes(self, saga_id: str) -> int:
        """Drop the write ids recorded for `saga_id`'s steps (those starting ``saga_id/``), once
        the saga has finished and will not be recovered again; the number dropped."""
        # Every string that starts with "id/" sorts between "id/" and "id0" ("0" follows "/").
        with self._transaction(write=True) as db:
            cursor = db.execute(
                "DELETE FROM fsaga_store_writes WHERE store = ? AND write_id >= ? AND write_id < ?",
                (self._name, f"{saga_id}/", f"{saga_id}0"),
            )
            return cursor.rowcount

    # -- the connection --------------------------------------------------------------------

    def _connect(self, synchronous: Synchronous, busy_timeout: float) -> sqlite3.Connection:
        with self._translated_errors():
            connection = sqlite3.connect(
                self._path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        try:
            with self._translated_errors():
                connection.execute(f"PRAGMA busy_timeout = {round(busy_timeout * 1000)}")
                if self._path not in ("", ":memory:"):
                    mode = switch_to_wal(connection, busy_timeout)
                    if mode.lower() != "wal":
                        raise StoreError(
                            self._name,
                            f"store {self._name!r}: {self._path!r} cannot use WAL mode (SQLite "
                            f"kept {mode!r}); the file system may lack shared memory support",
                        )
                connection.execute(f"PRAGMA synchronous = {synchronous}")
                self._create_table(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _create_table(self, connection: sqlite3.Connection) -> None:
        key_type = self._key_type.__name__
        with transaction(connection, write=True):
            for statement in _META:
                connection.execute(statement)
            found = connection.execute(
                "SELECT key_type, schema_version FROM fsaga_stores WHERE name = ?", (self._name,)
            ).fetchone()
            table = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                (self._name,),
            ).fetchone()
            if found is None:
                if table is not None:
                    raise StoreError(
                        self._name,
                        f"{self._path!r} has a table {self._name!r} that is not an fsaga store; "
                        "give the store another name",
                    )
                connection.execute(
                    f"CREATE TABLE {self._table} ("
                    f" key {_KEY_COLUMN_TYPES[key_type]} PRIMARY KEY NOT NULL,"
                    " value BLOB NOT NULL,"
                    " version INTEGER NOT NULL"
                    ") WITHOUT ROWID"
                )
                connection.execute(
                    "INSERT INTO fsaga_stores (name, key_type, last_version, schema_version)"
                    " VALUES (?, ?, 0, ?)",
                    (self._name, key_type, _SCHEMA_VERSION),
                )
            else:
                found_key_type, schema_version = found
                if schema_version > _SCHEMA_VERSION:
                    raise StoreError(
                        self._name,
                        f"store {self._name!r} in {self._path!r} was created by a newer fsaga "
                        f"(schema {schema_version}; this one knows {_SCHEMA_VERSION})",
                    )
                if found_key_type != key_type:
                    raise StoreError(
                        self._name,
                        f"store {self._name!r} in {self._path!r} holds {found_key_type} keys; "
                        f"it was opened with key_type={key_type}",
                    )
                if table is None:
                    raise StoreError(
                        self._name,
                        f"store {self._name!r} in {self._path!r} is registered, but its table "
                        "is missing",
                    )

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        with self._lock, self._translated_errors():
            if self._closed:
                raise StoreClosedError(self._name)
            with transaction(self._connection, write=write) as connection:
                yield connection

    @contextlib.contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            code = getattr(error, "sqlite_errorcode", None)
            message = f"store {self._name!r} in {self._path!r}: {error}"
            if code is not None and code & 0xFF in _UNAVAILABLE_CODES:
                raise StoreUnavailableError(self._name, message) from error
            raise StoreError(self._name, message) from error

    # -- rows --------------------------------------------------------------------------------

    def _raw_state(self, db: sqlite3.Connection, key: _K) -> Versioned[bytes] | Deleted | None:
        """The key's state, its value still encoded."""
        row = db.execute(
            f"SELECT value, version FROM {self._table} WHERE key = ?", (key,)
        ).fetchone()
        if row is not None:
            return Versioned(row[0], row[1])
        deleted = db.execute(
            "SELECT version FROM fsaga_store_deletions WHERE store = ? AND key = ?",
            (self._name, key),
        ).fetchone()
        return None if deleted is None else Deleted(deleted[0])

    def _set(
        self,
        db: sqlite3.Connection,
        key: _K,
        state: Versioned[bytes] | Deleted | None,
        previous: Versioned[bytes] | Deleted | None,
    ) -> None:
        """Make `state` the key's state, which was `previous`."""
        if isinstance(state, Versioned):
            db.execute(self._upsert, (key, state.value, state.version))
        elif isinstance(previous, Versioned):
            db.execute(f"DELETE FROM {self._table} WHERE key = ?", (key,))
        if isinstance(state, Deleted):
            db.execute(
                "INSERT INTO fsaga_store_deletions (store, key, version) VALUES (?, ?, ?)"
                " ON CONFLICT (store, key) DO UPDATE SET version = excluded.version",
                (self._name, key, state.version),
            )
        elif isinstance(previous, Deleted):
            db.execute(
                "DELETE FROM fsaga_store_deletions WHERE store = ? AND key = ?", (self._name, key)
            )

    def _decoded(
        self, key: _K, state: Versioned[bytes] | Deleted | None
    ) -> Versioned[_V] | Deleted | None:
        if isinstance(state, Versioned):
            return Versioned(self._decode(key, state.value), state.version)
        return state

    def _next_version(self, db: sqlite3.Connection) -> int:
        row = db.execute(
            "UPDATE fsaga_stores SET last_version = last_version + 1 WHERE name = ?"
            " RETURNING last_version",
            (self._name,),
        ).fetchone()
        return int(row[0])

    def _recorded(self, db: sqlite3.Connection, key: _K, write_id: str | None) -> Change[_V] | None:
        """The change recorded under `write_id` for a write asking for it again (see
        `replayed_change`), or None when nothing is recorded."""
        receipt = self._receipt(db, key, write_id)
        if receipt is None:
            return None
        recorded_key, change, undone = receipt
        assert write_id is not None
        return replayed_change(self._name, write_id, key, recorded_key, change, undone=undone)

    def _receipt_state(
        self, db: sqlite3.Connection, write_id: str | None
    ) -> tuple[object, None, bool] | None:
        """`_receipt` without the change: (key, None, undone); None when nothing is recorded."""
        if write_id is None:
            return None
        row = db.execute(
            "SELECT key, undone FROM fsaga_store_writes WHERE store = ? AND write_id = ?",
            (self._name, write_id),
        ).fetchone()
        return None if row is None else (row[0], None, bool(row[1]))

    def _receipt(
        self, db: sqlite3.Connection, key: _K, write_id: str | None
    ) -> tuple[object, Change[_V] | None, bool] | None:
        """What `write_id` recorded: (key, the change or None for an undo that came first,
        undone); None when nothing is recorded."""
        if write_id is None:
            return None
        row: _WriteRow | None = db.execute(
            "SELECT key, applied, before_value, before_version, after_value, after_version, undone"
            " FROM fsaga_store_writes WHERE store = ? AND write_id = ?",
            (self._name, write_id),
        ).fetchone()
        if row is None:
            return None
        recorded_key, applied, before_value, before_version, after_value, after_version, undone = (
            row
        )
        change: Change[_V] | None = None
        if applied:
            change = Change(
                self._state_of(key, before_value, before_version),
                self._state_of(key, after_value, after_version),
            )
        return recorded_key, change, bool(undone)

    def _record(
        self,
        db: sqlite3.Connection,
        key: _K,
        write_id: str | None,
        before: Versioned[bytes] | Deleted | None,
        after: Versioned[bytes] | Deleted | None,
    ) -> None:
        if write_id is None:
            return
        db.execute(
            "INSERT INTO fsaga_store_writes (store, write_id, key, applied, before_value,"
            " before_version, after_value, after_version, undone)"
            " VALUES (?, ?, ?, 1, ?, ?, ?, ?, 0)",
            (self._name, write_id, key, *_columns(before), *_columns(after)),
        )

    def _state_of(
        self, key: _K, data: bytes | None, version: int | None
    ) -> Versioned[_V] | Deleted | None:
        """A state from its columns in ``fsaga_store_writes`` (see `_columns`)."""
        if version is None:
            return None
        if data is None:
            return Deleted(version)
        return Versioned(self._decode(key, data), version)

    def _encode(self, key: _K, value: _V) -> bytes:
        try:
            return self._codec.encode(value)
        except CodecError as error:
            raise CodecError(f"store {self._name!r}, key {key!r}: {error}") from error

    def _decode(self, key: _K, data: bytes) -> _V:
        try:
            return cast(_V, self._codec.decode(data))
        except CodecError as error:
            raise StoreError(
                self._name, f"store {self._name!r}, key {key!r}: unreadable value: {error}"
            ) from error


def _columns(state: Versioned[bytes] | Deleted | None) -> tuple[bytes | None, int | None]:
    """A state as (value, version) columns: a deletion has a version and no value."""
    if isinstance(state, Versioned):
        return state.value, state.version
    if isinstance(state, Deleted):
        return None, state.version
    return None, None
