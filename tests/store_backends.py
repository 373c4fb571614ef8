"""Stores of every kind for the tests of `fsaga.stores`, each test's data apart from the others'.

The store tests run unchanged over these kinds:

- ``memory``: `MemoryStore`;
- ``sqlite``: `SqliteStore`, in a file of the test's own folder;
- ``postgres``: `PostgresStore` on the session's PostgreSQL server (fixture `postgres`), its
  tables in a schema of the test's own;
- ``redis``: `RedisStore` on the session's Redis server (fixture `redis_server_url`), its keys
  under a prefix of the test's own;
- ``postgres-async``, ``redis-async``: `AsyncPostgresStore` and `AsyncRedisStore`, driven
  through `Blocking` (an asyncio loop in a thread of its own, anyio's blocking portal), so the
  same synchronous tests call their coroutines.

A test that asks for a database kind starts the session's server on first use; without the
server's binaries it skips (and fails under ``CI=true``, see tests/servers.py).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Generic, Literal, TypeAlias, TypeVar

import psycopg
import pytest
import redis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from servers import PostgresServer

from fsaga.stores import (
    AsyncPostgresStore,
    AsyncRedisStore,
    Change,
    Expected,
    MemoryStore,
    PostgresStore,
    RedisStore,
    SqliteStore,
    Versioned,
)

_K = TypeVar("_K", str, int)
_V = TypeVar("_V")

Kind: TypeAlias = Literal["memory", "sqlite", "postgres", "redis", "postgres-async", "redis-async"]
KINDS: tuple[Kind, ...] = ("memory", "sqlite", "postgres", "redis")
"""The four stores the store suite runs over."""
ALL_KINDS: tuple[Kind, ...] = (*KINDS, "postgres-async", "redis-async")
"""The four, and the async twins of the database stores."""


def unique(prefix: str) -> str:
    """A name no other test uses (letters, digits and ``_``)."""
    return f"{prefix}{uuid.uuid4().hex[:16]}"


class Blocking(Generic[_K, _V]):
    """An async store behind the synchronous methods of its sync twin: each call runs on the
    portal's event loop, and the calling thread waits for it (several threads may call at
    once: their calls run concurrently on the loop)."""

    def __init__(
        self,
        store: AsyncPostgresStore[_K, _V] | AsyncRedisStore[_K, _V],
        portal: BlockingPortal,
    ) -> None:
        self.inner: AsyncPostgresStore[_K, _V] | AsyncRedisStore[_K, _V] = store
        self.portal = portal

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def closed(self) -> bool:
        return self.inner.closed

    def __repr__(self) -> str:
        return f"Blocking({self.inner!r})"

    def check_key(self, key: object, /) -> None:
        self.inner.check_key(key)

    def create_tables(self) -> None:
        assert isinstance(self.inner, AsyncPostgresStore)
        self.portal.call(self.inner.create_tables)

    def get(self, key: _K, /) -> Versioned[_V] | None:
        return self.portal.call(self.inner.get, key)

    def put(
        self, key: _K, value: _V, /, *, expected: Expected = None, write_id: str | None = None
    ) -> Change[_V]:
        return self.portal.call(
            partial(self.inner.put, key, value, expected=expected, write_id=write_id)
        )

    def delete(
        self, key: _K, /, *, expected: Expected = None, write_id: str | None = None
    ) -> Change[_V]:
        return self.portal.call(
            partial(self.inner.delete, key, expected=expected, write_id=write_id)
        )

    def update(
        self, key: _K, function: Callable[[_V], _V], /, *, write_id: str | None = None
    ) -> Change[_V]:
        return self.portal.call(partial(self.inner.update, key, function, write_id=write_id))

    def undo(self, key: _K, change: Change[_V] | None, /, *, write_id: str | None = None) -> None:
        self.portal.call(partial(self.inner.undo, key, change, write_id=write_id))

    def snapshot(self) -> dict[_K, Versioned[_V]]:
        return self.portal.call(self.inner.snapshot)

    def forget_writes(self, saga_id: str) -> int:
        return self.portal.call(self.inner.forget_writes, saga_id)

    def close(self) -> None:
        self.portal.call(self.inner.aclose)

    def __enter__(self) -> Blocking[_K, _V]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


AnyStore: TypeAlias = (
    "MemoryStore[str, Any] | SqliteStore[str, Any] | PostgresStore[str, Any] "
    "| RedisStore[str, Any] | Blocking[str, Any]"
)
"""A store of any kind, str keys (what the suite opens)."""


@dataclass
class Servers:
    """The session's servers, started on first use."""

    request: pytest.FixtureRequest

    @property
    def postgres(self) -> PostgresServer:
        server: PostgresServer = self.request.getfixturevalue("postgres")
        return server

    @property
    def redis_url(self) -> str:
        url: str = self.request.getfixturevalue("redis_server_url")
        return url


@dataclass
class Backend:
    """Opens stores of one kind for one test, and closes them at its end.

    Stores of the test share one SQLite file, one PostgreSQL schema, one Redis prefix (per
    `place`), as stores of one application share a database.
    """

    kind: Kind
    servers: Servers
    folder: Path
    label: str = field(default_factory=lambda: unique("t"))
    opened: list[Callable[[], None]] = field(default_factory=list)
    _portal: BlockingPortal | None = None
    _portal_context: contextlib.AbstractContextManager[BlockingPortal] | None = None
    _schemas: set[str] = field(default_factory=set)

    @property
    def portal(self) -> BlockingPortal:
        if self._portal is None:
            self._portal_context = start_blocking_portal(backend="asyncio")
            self._portal = self._portal_context.__enter__()
        return self._portal

    def schema(self, place: str = "") -> str:
        """The test's PostgreSQL schema for `place`, created on first use."""
        name = f"{self.label}{place}"
        if name not in self._schemas:
            with psycopg.connect(self.servers.postgres.dsn, autocommit=True) as connection:
                connection.execute(f'CREATE SCHEMA "{name}"')
            self._schemas.add(name)
        return name

    def prefix(self, place: str = "") -> str:
        """The test's Redis key prefix for `place`."""
        return f"{self.label}{place}"

    def open(
        self,
        name: str = "orders",
        initial: Mapping[str, object] | None = None,
        *,
        place: str = "",
    ) -> AnyStore:
        """A store of the backend's kind, holding `initial` (versions 1, 2, ... in order)."""
        if self.kind == "memory":
            return MemoryStore[str, Any](name, initial)
        store = self.open_empty(name, place=place)
        for key, value in (initial or {}).items():
            store.put(key, value)
        return store

    def open_empty(self, name: str, *, place: str = "") -> AnyStore:
        store: AnyStore
        match self.kind:
            case "memory":
                store = MemoryStore[str, Any](name)
            case "sqlite":
                store = SqliteStore[str, Any](self.folder / f"stores{place}.db", name)
            case "postgres":
                postgres: PostgresStore[str, Any] = PostgresStore(
                    self.servers.postgres.dsn, name, schema=self.schema(place)
                )
                postgres.create_tables()
                store = postgres
            case "redis":
                store = RedisStore[str, Any](
                    self.servers.redis_url, name, prefix=self.prefix(place)
                )
            case "postgres-async":
                async_postgres: AsyncPostgresStore[str, Any] = AsyncPostgresStore(
                    self.servers.postgres.dsn, name, schema=self.schema(place)
                )
                blocking = Blocking(async_postgres, self.portal)
                blocking.create_tables()
                store = blocking
            case "redis-async":
                async_redis: AsyncRedisStore[str, Any] = AsyncRedisStore(
                    self.servers.redis_url, name, prefix=self.prefix(place)
                )
                store = Blocking(async_redis, self.portal)
        self.opened.append(store.close)
        return store

    def again(self, store: AnyStore) -> AnyStore:
        """The same store as another process would open it: its own connection or client (a
        `MemoryStore` is itself)."""
        other: AnyStore
        match store:
            case MemoryStore():
                return store
            case SqliteStore():
                other = SqliteStore[str, Any](store.path, store.name)
            case PostgresStore():
                other = PostgresStore[str, Any](
                    self.servers.postgres.dsn, store.name, schema=store.schema
                )
            case RedisStore():
                other = RedisStore[str, Any](
                    self.servers.redis_url, store.name, prefix=store.prefix
                )
            case Blocking(inner=AsyncPostgresStore() as inner):
                other = Blocking(
                    AsyncPostgresStore[str, Any](
                        self.servers.postgres.dsn, inner.name, schema=inner.schema
                    ),
                    self.portal,
                )
            case Blocking(inner=AsyncRedisStore() as inner):
                other = Blocking(
                    AsyncRedisStore[str, Any](
                        self.servers.redis_url, inner.name, prefix=inner.prefix
                    ),
                    self.portal,
                )
            case _:
                raise TypeError(f"not a store of the suite: {store!r}")
        self.opened.append(other.close)
        return other

    def close(self) -> None:
        for close in reversed(self.opened):
            close()
        self.opened.clear()
        if self._portal_context is not None:
            self._portal_context.__exit__(None, None, None)
            self._portal_context = self._portal = None


@contextlib.contextmanager
def backend(kind: Kind, request: pytest.FixtureRequest, folder: Path) -> Iterator[Backend]:
    """A `Backend` of `kind` for the test `request` is for; its stores close at the end."""
    opened = Backend(kind, Servers(request), folder)
    try:
        yield opened
    finally:
        opened.close()


def redis_client(url: str) -> redis.Redis:
    """A client of the test's own, to look at what a store keeps."""
    return redis.Redis.from_url(url)
