"""`PostgresStore` and `AsyncPostgresStore`: the `Store` protocol as PostgreSQL tables, with
psycopg 3 (``pip install 'fsaga[postgres]'``).

Each store is one table named after it, in a schema (``public`` by default), one row per key::

    CREATE TABLE orders (key TEXT PRIMARY KEY, value BYTEA NOT NULL, version BIGINT NOT NULL)

(``key BIGINT`` for ``key_type=int``). Values are the bytes of a `fsaga.journal.Codec`
(`JsonCodec` by default). Beside the stores' tables, the schema holds three of fsaga's own, as an
SQLite file does for `SqliteStore`: ``fsaga_stores`` (each store's key type and version counter),
``fsaga_store_deletions`` (the version of each key's last deletion) and ``fsaga_store_writes``
(the `Change` recorded under each write id).

Nothing is created behind your back: call `create_tables` once where the store is set up (it
is idempotent, and safe to call from several processes at once). A store whose tables are
missing says so on first use.

Every write is one transaction: it locks the store's row of ``fsaga_stores`` (writes to one
store follow one another; reads never wait), checks the write id and the condition, writes the
key with a compare-and-set statement, moves the version counter and records the change, and
commits all of it or nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Final, Generic, Protocol, TypeVar, cast, final, overload

import psycopg
import psycopg_pool
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from fsaga._numbers import check_seconds
from fsaga.journal.codec import Codec, JsonCodec
from fsaga.stores import _postgres
from fsaga.stores._postgres import Query, Rows, Tables
from fsaga.stores._writes import (
    Decide,
    KeyCodec,
    Operation,
    Written,
    delete_plan,
    drive,
    put_plan,
    shielded,
    undo_plan,
    update_plan,
)
from fsaga.stores.errors import StoreClosedError, StoreError
from fsaga.stores.protocol import Change, Expected, Versioned, check_store_name

__all__ = ["AsyncPostgresPool", "AsyncPostgresStore", "PostgresPool", "PostgresStore"]

logger = logging.getLogger(__name__)

_K = TypeVar("_K", str, int)
_V = TypeVar("_V")
_T = TypeVar("_T")

_MAX_LOCK_TIMEOUT: Final = 2_147_483.647  # PostgreSQL keeps lock_timeout as an int of ms


class PostgresPool(Protocol):
    """What `PostgresStore` needs of a pool: `psycopg_pool.ConnectionPool` has it."""

    def connection(
        self, timeout: float | None = None
    ) -> AbstractContextManager[psycopg.Connection[object]]:
        """A connection of the pool, for the time of a ``with`` block."""
        ...


class AsyncPostgresPool(Protocol):
    """What `AsyncPostgresStore` needs of a pool: `psycopg_pool.AsyncConnectionPool` has it."""

    def connection(
        self, timeout: float | None = None
    ) -> AbstractAsyncContextManager[psycopg.AsyncConnection[object]]:
        """A connection of the pool, for the time of an ``async with`` block."""
        ...


def _options(
    name: str, key_type: object, codec: object, schema: object, lock_timeout: object
) -> tuple[KeyCodec[_V], Tables, int]:
    """Check a store's options: its keys and values, where it lives, and its lock timeout in
    milliseconds."""
    check_store_name(name)
    if len(name) > 63:
        raise ValueError(
            f"a store's name must be at most 63 characters in PostgreSQL, got {name!r}"
        )
    keys: KeyCodec[_V] = KeyCodec.of(name, key_type, codec)
    tables = Tables(name, _postgres.check_schema_name(name, schema), keys.key_type_name)
    seconds = check_seconds(lock_timeout, what=f"store {name!r}: lock_timeout", allow_zero=True)
    if seconds > _MAX_LOCK_TIMEOUT:
        raise ValueError(
            f"store {name!r}: lock_timeout must be at most {_MAX_LOCK_TIMEOUT} seconds, got "
            f"{lock_timeout!r}"
        )
    # 0 would mean "wait forever" to PostgreSQL; a millisecond is the shortest wait it keeps.
    return keys, tables, max(1, round(seconds * 1000))


@final
class PostgresStore(Generic[_K, _V]):
    """A `Store` kept in a PostgreSQL table (psycopg 3).

    Thread-safe. Several processes on several machines may use the same store: its writes take
    turns on a row lock, each waiting up to `lock_timeout` seconds before it fails with
    `StoreUnavailableError`.

    Who closes what: given a connection string, the store opens its own connection (on first
    use, again after it was lost) and `close` closes it. Given a `psycopg.Connection` or a
    pool (`psycopg_pool.ConnectionPool`), the store only borrows it: `close` leaves it open,
    and closing it is yours. A connection given is used under the store's lock, one
    transaction per call, and must not be inside a transaction of yours when the store uses it
    (`StoreError`: the store's writes must commit on their own). A pool serves several threads
    at once; the store's own connection, or one given, serves one call at a time.

    Args:
        connection: a connection string (``"postgresql://..."`` or ``"host=... dbname=..."``),
            a `psycopg.Connection`, or a pool.
        name: the store's name and its table's (letters, digits and ``_``, at most 63).
        key_type: ``str`` (the default) or ``int`` (64-bit): the type of every key.
        codec: turns values into bytes and back; a value it cannot encode fails the write
            (`fsaga.journal.CodecError`, a `TypeError`) before anything is written.
        schema: the schema of the store's table and of fsaga's tables; it must exist.
        lock_timeout: seconds a write waits for the store's lock before it fails with
            `StoreUnavailableError`.

    Raises:
        TypeError, ValueError: a bad name, key type, schema or option.

    >>> store: PostgresStore[str, int] = PostgresStore("host=db.example dbname=shop", "stock")
    >>> store
    PostgresStore('stock', schema='public')
    >>> store.close()  # it never connected: nothing was used yet
    """

    __slots__ = (
        "_checked",
        "_closed",
        "_connection",
        "_conninfo",
        "_keys",
        "_lock",
        "_lock_timeout_ms",
        "_pool",
        "_where",
    )

    @overload
    def __init__(
        self: PostgresStore[str, _V],
        connection: str | psycopg.Connection[object] | PostgresPool,
        name: str,
        *,
        key_type: type[str] = ...,
        codec: Codec = ...,
        schema: str = ...,
        lock_timeout: float = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: PostgresStore[int, _V],
        connection: str | psycopg.Connection[object] | PostgresPool,
        name: str,
        *,
        key_type: type[int],
        codec: Codec = ...,
        schema: str = ...,
        lock_timeout: float = ...,
    ) -> None: ...
    def __init__(
        self,
        connection: str | psycopg.Connection[object] | PostgresPool,
        name: str,
        *,
        key_type: type[str] | type[int] = str,
        codec: Codec = JsonCodec(),  # noqa: B008 (an immutable value)
        schema: str = "public",
        lock_timeout: float = 5.0,
    ) -> None:
        self._keys: KeyCodec[_V]
        self._keys, self._where, self._lock_timeout_ms = _options(
            name, key_type, codec, schema, lock_timeout
        )
        self._conninfo: str | None = None
        self._connection: psycopg.Connection[object] | None = None
        self._pool: PostgresPool | None = None
        if isinstance(connection, str):
            self._conninfo = connection
        elif isinstance(connection, psycopg.Connection):
            self._connection = connection
        elif isinstance(connection, psycopg.AsyncConnection | psycopg_pool.AsyncConnectionPool):
            raise TypeError(
                f"store {name!r}: {type(connection).__name__} is async: use AsyncPostgresStore"
            )
        elif callable(getattr(connection, "connection", None)):
            self._pool = connection
        else:
            raise TypeError(
                f"store {name!r}: expected a connection string, a psycopg.Connection or a "
                f"connection pool, got {connection!r}"
            )
        self._lock = threading.RLock()
        self._closed = False
        self._checked = False

    @property
    def name(self) -> str:
        """The store's name, which is also its table's."""
        return self._where.name

    @property
    def schema(self) -> str:
        """The schema of its tables."""
        return self._where.schema

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"PostgresStore({self.name!r}, schema={self.schema!r}{state})"

    def close(self) -> None:
        """Refuse every later call (`StoreClosedError`), and close the store's own connection
        (never one given to it)."""
        with self._lock:
            self._closed = True
            if self._conninfo is not None and self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> PostgresStore[_K, _V]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create_tables(self) -> None:
        """Create fsaga's tables and the store's table in its schema, when missing.

        Idempotent, and safe to run from several processes at once. A store opened again is
        checked instead.

        Raises:
            StoreError: the schema is missing; a table of the store's name exists but is not
                an fsaga store; the store was created with another key type or by a newer
                fsaga, or its table was dropped.
        """
        self._run(_postgres.create_tables(self._where))
        logger.debug("created store %s in schema %s", self.name, self.schema)

    def check_key(self, key: object, /) -> None:
        """Keys are all of the store's `key_type`; an int key must fit in 64 bits."""
        self._keys.check_key(key)

    def get(self, key: _K, /) -> Versioned[_V] | None:
        """See `Store.get`."""
        self.check_key(key)
        return self._keys.value(key, self._run(_postgres.get(self._where, key, check=self._check)))

    def put(
        self, key: _K, value: _V, /, *, expected: Expected = None, write_id: str | None = None
    ) -> Change[_V]:
        """See `Store.put`."""
        self.check_key(key)
        plan = put_plan(self._keys, key, value, expected, write_id)
        return plan.finish(self._write(key, write_id, plan.decide))

    def delete(
        self, key: _K, /, *, expected: Expected = None, write_id: str | None = None
    ) -> Change[_V]:
        """See `Store.delete`."""
        self.check_key(key)
        plan = delete_plan(self._keys, key, expected, write_id)
        return plan.finish(self._write(key, write_id, plan.decide))

    def update(
        self, key: _K, function: Callable[[_V], _V], /, *, write_id: str | None = None
    ) -> Change[_V]:
        """See `Store.update`; `function` runs inside the write transaction."""
        self.check_key(key)
        plan = update_plan(self._keys, key, function, write_id)
        return plan.finish(self._write(key, write_id, plan.decide))

    def undo(self, key: _K, change: Change[_V] | None, /, *, write_id: str | None = None) -> None:
        """See `Store.undo`."""
        self.check_key(key)
        self._write(key, write_id, undo_plan(self._keys, key, change, write_id))

    def snapshot(self) -> dict[_K, Versioned[_V]]:
        """Every key and its versioned value, in key order."""
        rows = self._run(_postgres.snapshot(self._where, check=self._check))
        return cast(dict[_K, Versioned[_V]], self._keys.values(rows))

    def forget_writes(self, saga_id: str) -> int:
        """Drop the write ids recorded for `saga_id`'s steps (those starting ``saga_id/``), once
        the saga has finished and will not be recovered again; the number dropped."""
        return self._run(_postgres.forget_writes(self._where, saga_id, check=self._check))

    # -- running operations -------------------------------------------------------------------

    @property
    def _check(self) -> bool:
        """Whether a read checks the store's registration first (the first call does)."""
        return not self._checked

    def _write(self, key: object, write_id: str | None, decide: Decide) -> Written:
        return self._run(_postgres.write(self._where, key, write_id, decide, self._lock_timeout_ms))

    def _run(self, operation: Operation[Query, Rows, _T]) -> _T:
        try:
            with (
                self._connected() as connection,
                connection.transaction(),
                connection.cursor(row_factory=tuple_row) as cursor,
            ):

                def ask(query: Query) -> Rows:
                    cursor.execute(query.statement, query.parameters or None)
                    rows = cursor.fetchall() if cursor.description is not None else []
                    return Rows(rows, cursor.rowcount)

                result = drive(operation, ask)
                self._checked = True  # the operation checked the store's registration
                return result
        except psycopg.Error as error:
            raise _postgres.translated(self._where, error) from error

    @contextlib.contextmanager
    def _connected(self) -> Iterator[psycopg.Connection[object]]:
        if self._pool is not None:
            if self._closed:
                raise StoreClosedError(self.name)
            with self._pool.connection() as borrowed:
                yield borrowed
            return
        with self._lock:
            if self._closed:
                raise StoreClosedError(self.name)
            if self._conninfo is not None and (self._connection is None or self._connection.closed):
                self._connection = psycopg.connect(self._conninfo, autocommit=True)
            connection = self._connection
            assert connection is not None
            _check_idle(self.name, connection.closed, connection.info.transaction_status)
            yield connection


@final
class AsyncPostgresStore(Generic[_K, _V]):
    """`PostgresStore` for `fsaga.interpreter.AsyncInterpreter`: the same tables, written
    through a `psycopg.AsyncConnection`, so a store step never blocks the event loop.

    The store steps of `fsaga.stores` (`save`, `delete`, `update`, `read`, `transaction`)
    take it like any store; their actions and compensations are then ``async``, for an async
    interpreter (`SyncInterpreter` refuses them before anything runs). Its methods are
    coroutines: ``await store.put(...)``. A transaction, once started, is never cut off
    halfway: a cancellation that arrives meanwhile (a deadline, say) takes effect when it
    commits or rolls back.

    asyncio only, as psycopg's async connections are. Who closes what, as for
    `PostgresStore`: a connection string gives the store its own connection, opened on first
    use in the event loop it is used in and closed by `aclose`; a `psycopg.AsyncConnection` or
    an `psycopg_pool.AsyncConnectionPool` given stays yours to close. Use the store's own
    connection in one event loop.

    Arguments as for `PostgresStore`; `create_tables`, `get`, `put`, `delete`, `update`,
    `undo`, `snapshot` and `forget_writes` do the same, awaited.

    >>> store: AsyncPostgresStore[str, int] = AsyncPostgresStore("dbname=shop", "stock")
    >>> store
    AsyncPostgresStore('stock', schema='public')
    """

    __slots__ = (
        "_checked",
        "_closed",
        "_connection",
        "_conninfo",
        "_keys",
        "_lock",
        "_lock_timeout_ms",
        "_loop",
        "_pool",
        "_where",
    )

    @overload
    def __init__(
        self: AsyncPostgresStore[str, _V],
        connection: str | psycopg.AsyncConnection[object] | AsyncPostgresPool,
        name: str,
        *,
        key_type: type[str] = ...,
        codec: Codec = ...,
        schema: str = ...,
        lock_timeout: float = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: AsyncPostgresStore[int, _V],
        connection: str | psycopg.AsyncConnection[object] | AsyncPostgresPool,
        name: str,
        *,
        key_type: type[int],
        codec: Codec = ...,
        schema: str = ...,
        lock_timeout: float = ...,
    ) -> None: ...
    def __init__(
        self,
        connection: str | psycopg.AsyncConnection[object] | AsyncPostgresPool,
        name: str,
        *,
        key_type: type[str] | type[int] = str,
        codec: Codec = JsonCodec(),  # noqa: B008 (an immutable value)
        schema: str = "public",
        lock_timeout: float = 5.0,
    ) -> None:
        self._keys: KeyCodec[_V]
        self._keys, self._where, self._lock_timeout_ms = _options(
            name, key_type, codec, schema, lock_timeout
        )
        self._conninfo: str | None = None
        self._connection: psycopg.AsyncConnection[object] | None = None
        self._pool: AsyncPostgresPool | None = None
        if isinstance(connection, str):
            self._conninfo = connection
        elif isinstance(connection, psycopg.AsyncConnection):
            self._connection = connection
        elif isinstance(connection, psycopg.Connection | psycopg_pool.ConnectionPool):
            raise TypeError(
                f"store {name!r}: {type(connection).__name__} is not async: use PostgresStore"
            )
        elif callable(getattr(connection, "connection", None)):
            self._pool = connection
        else:
            raise TypeError(
                f"store {name!r}: expected a connection string, a psycopg.AsyncConnection or "
                f"an async connection pool, got {connection!r}"
            )
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._checked = False

    @property
    def name(self) -> str:
        """The store's name, which is also its table's."""
        return self._where.name

    @property
    def schema(self) -> str:
        """The schema of its tables."""
        return self._where.schema

    @property
    def closed(self) -> bool:
        """Whether `aclose` was called."""
        return self._closed

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"AsyncPostgresStore({self.name!r}, schema={self.schema!r}{state})"

    async def aclose(self) -> None:
        """Refuse every later call (`StoreClosedError`), and close the store's own connection
        (never one given to it)."""
        self._closed = True
        if self._conninfo is not None and self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()

    async def __aenter__(self) -> AsyncPostgresStore[_K, _V]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def create_tables(self) -> None:
        """See `PostgresStore.create_tables`."""
        await self._run(_postgres.create_tables(self._where))

    def check_key(self, key: object, /) -> None:
        """Keys are all of the store's `key_type`; an int key must fit in 64 bits."""
        self._keys.check_key(key)

    async def get(self, key: _K, /) -> Versioned[_V] | None:
        """See `Store.get`."""
        self.check_key(key)
        return self._keys.value(
            key, await self._run(_postgres.get(self._where, key, check=self._check))
        )

    async def put(
        self, key: _K, value: _V, /, *, expected: Expected = None, write_id: str | None = None
    ) -> Change[_V]:
        """See `Store.put`."""
        self.check_key(key)
        plan = put_plan(self._keys, key, value, expected, write_id)
        return plan.finish(await self._write(key, write_id, plan.decide))

    async def delete(
        self, key: _K, /, *, expected: Expected = None, write_id: str | None = None
    ) -> Change[_V]:
        """See `Store.delete`."""
        self.check_key(key)
        plan = delete_plan(self._keys, key, expected, write_id)
        return plan.finish(await self._write(key, write_id, plan.decide))

    async def update(
        self, key: _K, function: Callable[[_V], _V], /, *, write_id: str | None = None
    ) -> Change[_V]:
        """See `Store.update`; `function` runs inside the write transaction."""
        self.check_key(key)
        plan = update_plan(self._keys, key, function, write_id)
        return plan.finish(await self._write(key, write_id, plan.decide))

    async def undo(
        self, key: _K, change: Change[_V] | None, /, *, write_id: str | None = None
    ) -> None:
        """See `Store.undo`."""
        self.check_key(key)
        await self._write(key, write_id, undo_plan(self._keys, key, change, write_id))

    async def snapshot(self) -> dict[_K, Versioned[_V]]:
        """See `PostgresStore.snapshot`."""
        rows = await self._run(_postgres.snapshot(self._where, check=self._check))
        return cast(dict[_K, Versioned[_V]], self._keys.values(rows))

    async def forget_writes(self, saga_id: str) -> int:
        """See `PostgresStore.forget_writes`."""
        return await self._run(_postgres.forget_writes(self._where, saga_id, check=self._check))

    # -- running operations -------------------------------------------------------------------

    @property
    def _check(self) -> bool:
        """Whether a read checks the store's registration first (the first call does)."""
        return not self._checked

    async def _write(self, key: object, write_id: str | None, decide: Decide) -> Written:
        return await self._run(
            _postgres.write(self._where, key, write_id, decide, self._lock_timeout_ms)
        )

    async def _run(self, operation: Operation[Query, Rows, _T]) -> _T:
        try:
            async with self._connected() as connection:
                # Shielded: a transaction cut off halfway would leave the connection unusable,
                # and the outcome of a commit unknown.
                with shielded():
                    async with (
                        connection.transaction(),
                        connection.cursor(row_factory=tuple_row) as cursor,
                    ):
                        try:
                            request = next(operation)
                            while True:
                                await cursor.execute(request.statement, request.parameters or None)
                                rows = await cursor.fetchall() if cursor.description else []
                                request = operation.send(Rows(rows, cursor.rowcount))
                        except StopIteration as done:
                            self._checked = True  # it checked the store's registration
                            result: _T = done.value
                            return result
        except psycopg.Error as error:
            raise _postgres.translated(self._where, error) from error

    @contextlib.asynccontextmanager
    async def _connected(self) -> AsyncIterator[psycopg.AsyncConnection[object]]:
        if self._closed:
            raise StoreClosedError(self.name)
        if self._pool is not None:
            async with self._pool.connection() as borrowed:
                yield borrowed
            return
        loop = _running_loop(self.name)
        if self._lock is None or self._loop is None:
            self._lock, self._loop = asyncio.Lock(), loop
        elif self._loop is not loop:
            raise StoreError(
                self.name,
                f"store {self.name!r} was first used in another event loop; its connection "
                "and lock belong to that one: open one store per event loop",
            )
        async with self._lock:
            if self._closed:
                raise StoreClosedError(self.name)
            if self._conninfo is not None and (self._connection is None or self._connection.closed):
                self._connection = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                )
            connection = self._connection
            assert connection is not None
            _check_idle(self.name, connection.closed, connection.info.transaction_status)
            yield connection


def _running_loop(store: str) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise StoreError(
            store,
            f"store {store!r}: an async PostgreSQL store runs on asyncio only (psycopg's async "
            "connections do); under trio, use PostgresStore",
        ) from None


def _check_idle(store: str, closed: bool, status: TransactionStatus) -> None:
    if closed:
        raise StoreError(store, f"store {store!r}: the connection given to the store is closed")
    if status != TransactionStatus.IDLE:
        raise StoreError(
            store,
            f"store {store!r}: the connection given to the store is inside a transaction "
            f"({status.name}); the store's writes commit on their own: give it a connection "
            "of its own, or a pool",
        )
