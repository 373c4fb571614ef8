"""The SQL of `PostgresStore` and `AsyncPostgresStore`, and their operations, written once.

Each operation is a generator (an `Operation`) that yields a `Query` and is sent its `Rows`, so
the sync store drives it over a `psycopg.Connection` and the async store over a
`psycopg.AsyncConnection`, one transaction per operation.

A write locks its store's row of ``fsaga_stores`` first (``SELECT ... FOR UPDATE``): writes to
one store follow one another, as they do in SQLite, and the version counter in that row moves
forward in commit order. It then reads the key's state and its write id's record, decides
(`fsaga.stores._writes`), and writes with compare-and-set statements (``UPDATE ... WHERE
version = found``, ``INSERT ... ON CONFLICT DO NOTHING``, ``DELETE ... WHERE version = found``)
that must change exactly the row they expect, and records the change under the write id, all
in that transaction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, final

import psycopg
from psycopg import errors, sql

from fsaga.stores._writes import Decide, Operation, RawState, Receipt, Written
from fsaga.stores.errors import StoreError, StoreUnavailableError
from fsaga.stores.protocol import Change, Deleted, Versioned

__all__ = [
    "SCHEMA_VERSION",
    "Query",
    "Rows",
    "Tables",
    "check_schema_name",
    "create_tables",
    "forget_writes",
    "get",
    "snapshot",
    "translated",
    "write",
]

SCHEMA_VERSION: Final = 1
_CREATE_LOCK: Final = 0x66_73_61_67_61  # pg_advisory_xact_lock key while tables are created
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_IDENTIFIER: Final = 63  # PostgreSQL cuts longer names short


@final
@dataclass(frozen=True, slots=True)
class Query:
    """One statement and its parameters."""

    statement: sql.SQL | sql.Composed
    parameters: tuple[object, ...] = ()


@final
@dataclass(frozen=True, slots=True)
class Rows:
    """What a statement returned: its rows, and how many rows it changed."""

    rows: list[tuple[object, ...]]
    count: int


def check_schema_name(store: str, schema: object) -> str:
    """`schema` if it can name a schema (letters, digits and ``_``), else raise saying why."""
    if not isinstance(schema, str):
        raise TypeError(f"store {store!r}: schema must be a str, got {schema!r}")
    if not _IDENTIFIER.fullmatch(schema) or len(schema) > _MAX_IDENTIFIER:
        raise ValueError(
            f"store {store!r}: schema must be letters, digits and '_', not starting with a "
            f"digit, at most {_MAX_IDENTIFIER} characters, got {schema!r}"
        )
    return schema


@final
@dataclass(frozen=True, slots=True)
class Tables:
    """Where one store lives: its table and fsaga's three tables, in one schema; and its key
    type (``"str"`` or ``"int"``), since fsaga's tables keep keys as text."""

    name: str
    schema: str
    key_type: str

    def key_text(self, key: object) -> str:
        return str(key)

    def key_of(self, text: str) -> object:
        return int(text) if self.key_type == "int" else text

    def table(self, table: str) -> sql.Identifier:
        return sql.Identifier(self.schema, table)

    @property
    def values(self) -> sql.Identifier:
        return self.table(self.name)

    @property
    def where(self) -> str:
        return f"schema {self.schema!r}"

    def statement(self, text: str) -> sql.Composed:
        """`text` with ``{values}``, ``{stores}``, ``{deletions}`` and ``{writes}`` filled."""
        return sql.SQL(text).format(
            values=self.values,
            stores=self.table("fsaga_stores"),
            deletions=self.table("fsaga_store_deletions"),
            writes=self.table("fsaga_store_writes"),
        )


def translated(tables: Tables, error: Exception) -> Exception:
    """A psycopg error as the store error to raise instead: `StoreUnavailableError` for what
    another attempt may get past (the server unreachable or shutting down, a lock not granted
    in time, a serialization failure), `StoreError` otherwise."""
    name = tables.name
    said = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, errors.InvalidSchemaName):
        return StoreError(
            name,
            f"store {name!r}: {tables.where} does not exist: create it first (CREATE SCHEMA), "
            "or give the store another schema",
        )
    if isinstance(error, errors.UndefinedTable):
        return StoreError(name, _not_created(tables, said))
    if isinstance(error, psycopg.OperationalError):
        return StoreUnavailableError(name, f"store {name!r}: {said}")
    return StoreError(name, f"store {name!r}: {said}")


def _not_created(tables: Tables, cause: object) -> str:
    return (
        f"store {tables.name!r} has no tables in {tables.where} ({cause}); call "
        "create_tables() once, where the store is set up"
    )


# -- creating the tables ---------------------------------------------------------------------

_META: Final = (
    """
    CREATE TABLE IF NOT EXISTS {stores} (
        name TEXT COLLATE "C" PRIMARY KEY,
        key_type TEXT NOT NULL CHECK (key_type IN ('str', 'int')),
        last_version BIGINT NOT NULL CHECK (last_version >= 0),
        schema_version INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS {deletions} (
        store TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        version BIGINT NOT NULL,
        PRIMARY KEY (store, key)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS {writes} (
        store TEXT COLLATE "C" NOT NULL,
        write_id TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        applied BOOLEAN NOT NULL,
        before_value BYTEA,
        before_version BIGINT,
        after_value BYTEA,
        after_version BIGINT,
        undone BOOLEAN NOT NULL,
        PRIMARY KEY (store, write_id)
    )
    """,
)
_KEY_COLUMN: Final = {"str": 'TEXT COLLATE "C"', "int": "BIGINT"}


def create_tables(tables: Tables) -> Operation[Query, Rows, None]:
    """Create fsaga's tables and the store's, if missing, and register the store; check a
    store already registered (its key type, its schema version, its table)."""
    key_type = tables.key_type
    # Two processes creating the same tables at once would collide in the catalog.
    yield Query(sql.SQL("SELECT pg_advisory_xact_lock(%s)"), (_CREATE_LOCK,))
    for statement in _META:
        yield Query(tables.statement(statement))
    registered = yield Query(
        tables.statement("SELECT key_type, schema_version FROM {stores} WHERE name = %s"),
        (tables.name,),
    )
    present = yield Query(
        sql.SQL("SELECT to_regclass(%s) IS NOT NULL"), (f'"{tables.schema}"."{tables.name}"',)
    )
    exists = present.rows[0][0]
    if not registered.rows:
        if exists:
            raise StoreError(
                tables.name,
                f"{tables.where} has a table {tables.name!r} that is not an fsaga store; give "
                "the store another name",
            )
        column = sql.SQL(_KEY_COLUMN[key_type])
        yield Query(
            sql.SQL(
                "CREATE TABLE {values} (key {column} PRIMARY KEY, value BYTEA NOT NULL,"
                " version BIGINT NOT NULL)"
            ).format(values=tables.values, column=column)
        )
        yield Query(
            tables.statement(
                "INSERT INTO {stores} (name, key_type, last_version, schema_version)"
                " VALUES (%s, %s, 0, %s)"
            ),
            (tables.name, key_type, SCHEMA_VERSION),
        )
        return
    check_registration(tables, registered.rows[0])
    if not exists:
        raise StoreError(
            tables.name,
            f"store {tables.name!r} in {tables.where} is registered, but its table is missing",
        )


def check_registration(tables: Tables, row: Sequence[object]) -> None:
    """Raise `StoreError` unless the store's row of ``fsaga_stores`` matches this store."""
    found_key_type, schema_version = row[0], row[1]
    assert isinstance(schema_version, int)
    if schema_version > SCHEMA_VERSION:
        raise StoreError(
            tables.name,
            f"store {tables.name!r} in {tables.where} was created by a newer fsaga (schema "
            f"{schema_version}; this one knows {SCHEMA_VERSION})",
        )
    key_type = tables.key_type
    if found_key_type != key_type:
        raise StoreError(
            tables.name,
            f"store {tables.name!r} in {tables.where} holds {found_key_type} keys; it was "
            f"opened with key_type={key_type}",
        )


def _registration(tables: Tables, *, lock: bool) -> Operation[Query, Rows, None]:
    text = "SELECT key_type, schema_version FROM {stores} WHERE name = %s"
    found = yield Query(tables.statement(text + (" FOR UPDATE" if lock else "")), (tables.name,))
    if not found.rows:
        raise StoreError(tables.name, _not_created(tables, "it is not registered"))
    check_registration(tables, found.rows[0])


# -- reads -----------------------------------------------------------------------------------


def get(
    tables: Tables, key: object, *, check: bool
) -> Operation[Query, Rows, Versioned[bytes] | None]:
    """The key's value, still encoded; with `check`, the store's registration is checked
    first."""
    if check:
        yield from _registration(tables, lock=False)
    found = yield Query(
        tables.statement("SELECT value, version FROM {values} WHERE key = %s"), (key,)
    )
    if not found.rows:
        return None
    data, version = found.rows[0]
    return Versioned(_bytes(data), _int(version))


def snapshot(
    tables: Tables, *, check: bool
) -> Operation[Query, Rows, list[tuple[object, Versioned[bytes]]]]:
    """Every key and its value, still encoded, in key order."""
    if check:
        yield from _registration(tables, lock=False)
    found = yield Query(tables.statement("SELECT key, value, version FROM {values} ORDER BY key"))
    return [(key, Versioned(_bytes(data), _int(version))) for key, data, version in found.rows]


def forget_writes(tables: Tables, saga_id: str, *, check: bool) -> Operation[Query, Rows, int]:
    """Drop the records of `saga_id`'s write ids; the number dropped."""
    if check:
        yield from _registration(tables, lock=False)
    # Every string that starts with "id/" sorts between "id/" and "id0" ("0" follows "/"), in
    # the byte order of the "C" collation the column has.
    dropped = yield Query(
        tables.statement(
            "DELETE FROM {writes} WHERE store = %s AND write_id >= %s AND write_id < %s"
        ),
        (tables.name, f"{saga_id}/", f"{saga_id}0"),
    )
    return dropped.count


# -- writes ----------------------------------------------------------------------------------


def write(
    tables: Tables, key: object, write_id: str | None, decide: Decide, lock_timeout_ms: int
) -> Operation[Query, Rows, Written]:
    """Lock the store, read, decide and apply, in the transaction the driver opened."""
    yield Query(
        sql.SQL(
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = {}"
        ).format(sql.Literal(f"{lock_timeout_ms}ms"))
    )
    yield from _registration(tables, lock=True)
    receipt = None if write_id is None else (yield from _receipt(tables, write_id))
    found = yield from _state(tables, key)
    decision = decide(found, receipt)
    if decision is None:
        return None
    if isinstance(decision, Change):
        return decision, True
    version = decision.version
    if decision.needs_version:
        taken = yield Query(
            tables.statement(
                "UPDATE {stores} SET last_version = last_version + 1 WHERE name = %s"
                " RETURNING last_version"
            ),
            (tables.name,),
        )
        version = _int(taken.rows[0][0])
    change = decision.change(version)
    yield from _set(tables, key, change.after, found)
    if decision.record == "change":
        yield Query(
            tables.statement(
                "INSERT INTO {writes} (store, write_id, key, applied, before_value,"
                " before_version, after_value, after_version, undone)"
                " VALUES (%s, %s, %s, true, %s, %s, %s, %s, false)"
            ),
            (
                tables.name,
                write_id,
                tables.key_text(key),
                *_columns(found),
                *_columns(change.after),
            ),
        )
    elif decision.record == "undone":
        yield Query(
            tables.statement(
                "INSERT INTO {writes} (store, write_id, key, applied, undone)"
                " VALUES (%s, %s, %s, false, true)"
                " ON CONFLICT (store, write_id) DO UPDATE SET undone = true"
            ),
            (tables.name, write_id, tables.key_text(key)),
        )
    return change, False


def _receipt(tables: Tables, write_id: str) -> Operation[Query, Rows, Receipt | None]:
    found = yield Query(
        tables.statement(
            "SELECT key, applied, before_value, before_version, after_value, after_version,"
            " undone FROM {writes} WHERE store = %s AND write_id = %s"
        ),
        (tables.name, write_id),
    )
    if not found.rows:
        return None
    key, applied, before_value, before_version, after_value, after_version, undone = found.rows[0]
    change = None
    if applied:
        change = Change(
            _state_of(before_value, before_version), _state_of(after_value, after_version)
        )
    assert isinstance(key, str)
    return Receipt(tables.key_of(key), change, bool(undone))


def _state(tables: Tables, key: object) -> Operation[Query, Rows, RawState]:
    found = yield Query(
        tables.statement(
            "SELECT v.value, v.version, d.version FROM (SELECT 1) AS one"
            " LEFT JOIN {values} AS v ON v.key = %s"
            " LEFT JOIN {deletions} AS d ON d.store = %s AND d.key = %s"
        ),
        (key, tables.name, tables.key_text(key)),
    )
    data, version, deleted = found.rows[0]
    if version is not None:
        return Versioned(_bytes(data), _int(version))
    return None if deleted is None else Deleted(_int(deleted))


def _set(
    tables: Tables, key: object, state: RawState, previous: RawState
) -> Operation[Query, Rows, None]:
    """Make `state` the key's state, which was `previous`: compare-and-set on the value row."""
    if isinstance(state, Versioned):
        if isinstance(previous, Versioned):
            changed = yield Query(
                tables.statement(
                    "UPDATE {values} SET value = %s, version = %s WHERE key = %s AND version = %s"
                ),
                (state.value, state.version, key, previous.version),
            )
        else:
            changed = yield Query(
                tables.statement(
                    "INSERT INTO {values} (key, value, version) VALUES (%s, %s, %s)"
                    " ON CONFLICT (key) DO NOTHING"
                ),
                (key, state.value, state.version),
            )
        _check_one(tables, key, changed)
    elif isinstance(previous, Versioned):
        changed = yield Query(
            tables.statement("DELETE FROM {values} WHERE key = %s AND version = %s"),
            (key, previous.version),
        )
        _check_one(tables, key, changed)
    if isinstance(state, Deleted):
        yield Query(
            tables.statement(
                "INSERT INTO {deletions} (store, key, version) VALUES (%s, %s, %s)"
                " ON CONFLICT (store, key) DO UPDATE SET version = excluded.version"
            ),
            (tables.name, tables.key_text(key), state.version),
        )
    elif isinstance(previous, Deleted):
        yield Query(
            tables.statement("DELETE FROM {deletions} WHERE store = %s AND key = %s"),
            (tables.name, tables.key_text(key)),
        )


def _check_one(tables: Tables, key: object, changed: Rows) -> None:
    # The store's lock keeps fsaga's writers out; only a write that bypassed it can make the
    # row differ from what was read under that lock.
    if changed.count != 1:
        raise StoreError(
            tables.name,
            f"store {tables.name!r}, key {key!r}: the row changed while the store was locked: "
            f"something writes table {tables.name!r} in {tables.where} without fsaga; nothing "
            "was written",
        )


def _columns(state: RawState) -> tuple[bytes | None, int | None]:
    """A state as (value, version) columns: a deletion has a version and no value."""
    if isinstance(state, Versioned):
        return state.value, state.version
    if isinstance(state, Deleted):
        return None, state.version
    return None, None


def _state_of(data: object, version: object) -> RawState:
    if version is None:
        return None
    if data is None:
        return Deleted(_int(version))
    return Versioned(_bytes(data), _int(version))


def _bytes(data: object) -> bytes:
    assert isinstance(data, bytes | memoryview), data
    return bytes(data)


def _int(value: object) -> int:
    assert isinstance(value, int), value
    return value
