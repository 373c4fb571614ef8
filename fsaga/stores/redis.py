"""`RedisStore` and `AsyncRedisStore`: the `Store` protocol in Redis, with redis-py
(``pip install 'fsaga[redis]'``).

A store's keys share one prefix and hash tag, ``{PREFIX:NAME}`` (``{fsaga:orders}:values``,
...), so several stores, and your application's own keys, share a Redis database, and a Redis
Cluster keeps each store in one slot. Values are the bytes of a `fsaga.journal.Codec`
(`JsonCodec` by default). There is nothing to create: a store registers its key type on first
use.

Every write is a compare-and-set done by one Lua script (sent once, then run by its SHA1 with
``EVALSHA``, through redis-py's ``register_script``): the store reads the key and its write
id's record, decides as every store of fsaga does, and the script writes only if both are still
what was read; it then takes the next version, writes the key and records the change under the
write id, atomically. If another writer came in between, nothing is written and the write
starts over from the read. A script rather than ``WATCH``/``MULTI``: the condition is the key's
own version, so writers of other keys of the store never make a write start over (``WATCH``
would watch the whole hash of values), and the version counter, the key and the record change
in one server-side step, in one round trip.

A write is as durable as your Redis makes it: with ``appendonly yes`` and ``appendfsync
always`` a write the store returned survives a crash of the server, as an SQLite store's
with ``synchronous="FULL"``; Redis' defaults may lose the last second of writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Final, Generic, TypeVar, cast, final, overload

import redis
import redis.asyncio
import redis.exceptions
from redis.commands.core import AsyncScript, Script

from fsaga.journal.codec import Codec, JsonCodec
from fsaga.stores import _redis
from fsaga.stores._redis import Keys, Request, Run
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
from fsaga.stores.errors import StoreClosedError, StoreError, StoreUnavailableError
from fsaga.stores.protocol import Change, Expected, Versioned, check_store_name

__all__ = ["AsyncRedisStore", "RedisStore"]

_K = TypeVar("_K", str, int)
_V = TypeVar("_V")
_T = TypeVar("_T")

_UNAVAILABLE: Final = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.OutOfMemoryError,
)
_NOT_UNAVAILABLE: Final = (
    redis.exceptions.AuthenticationError,
    redis.exceptions.AuthorizationError,
)


def _options(
    name: str, key_type: object, codec: object, prefix: object
) -> tuple[KeyCodec[_V], Keys]:
    check_store_name(name)
    keys: KeyCodec[_V] = KeyCodec.of(name, key_type, codec)
    return keys, Keys(name, _redis.check_prefix(name, prefix), keys.key_type_name)


def _check_bytes(name: str, decode_responses: object) -> None:
    if decode_responses:
        raise ValueError(
            f"store {name!r}: the Redis client decodes responses (decode_responses=True); the "
            "store reads values as bytes: give it a client without decode_responses"
        )


def _translated(name: str, error: redis.exceptions.RedisError) -> StoreError:
    message = f"store {name!r}: {type(error).__name__}: {error}"
    if isinstance(error, _NOT_UNAVAILABLE):
        return StoreError(name, message)
    if isinstance(error, _UNAVAILABLE):
        return StoreUnavailableError(name, message)
    return StoreError(name, message)


@final
class RedisStore(Generic[_K, _V]):
    """A `Store` kept in Redis (redis-py).

    Thread-safe (a redis-py client is), and several processes on several machines may use the
    same store. Who closes what: given a URL (``"redis://host:6379/0"``), the store makes its
    own client and `close` closes it; given a `redis.Redis` client, the store only borrows it
    and `close` leaves it open. The client must return bytes (no ``decode_responses``).

    Args:
        client: a ``redis://`` URL, or a `redis.Redis` client.
        name: the store's name (letters, digits and ``_``), part of its keys.
        key_type: ``str`` (the default) or ``int`` (64-bit): the type of every key.
        codec: turns values into bytes and back; a value it cannot encode fails the write
            (`fsaga.journal.CodecError`, a `TypeError`) before anything is written.
        prefix: what the store's keys start with: ``{PREFIX:NAME}:...``; no ``{`` or ``}``.

    Raises:
        TypeError, ValueError: a bad name, key type, prefix, option or client.
        StoreError: the store was registered with another key type (on first use).

    >>> store: RedisStore[str, int] = RedisStore("redis://cache.example:6379/0", "stock")
    >>> store
    RedisStore('stock', prefix='fsaga')
    >>> store.close()  # it never connected: nothing was used yet
    """

    __slots__ = ("_checked", "_client", "_closed", "_keys", "_owned", "_scripts", "_where")

    @overload
    def __init__(
        self: RedisStore[str, _V],
        client: str | redis.Redis,
        name: str,
        *,
        key_type: type[str] = ...,
        codec: Codec = ...,
        prefix: str = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: RedisStore[int, _V],
        client: str | redis.Redis,
        name: str,
        *,
        key_type: type[int],
        codec: Codec = ...,
        prefix: str = ...,
    ) -> None: ...
    def __init__(
        self,
        client: str | redis.Redis,
        name: str,
        *,
        key_type: type[str] | type[int] = str,
        codec: Codec = JsonCodec(),  # noqa: B008 (an immutable value)
        prefix: str = "fsaga",
    ) -> None:
        self._keys: KeyCodec[_V]
        self._keys, self._where = _options(name, key_type, codec, prefix)
        if isinstance(client, str):
            self._client = redis.Redis.from_url(client)
            self._owned = True
        elif isinstance(client, redis.Redis):
            self._client = client
            self._owned = False
        elif isinstance(client, redis.asyncio.Redis):
            raise TypeError(f"store {name!r}: {client!r} is async: use AsyncRedisStore")
        else:
            raise TypeError(
                f"store {name!r}: expected a redis:// URL or a redis.Redis client, got {client!r}"
            )
        _check_bytes(name, self._client.connection_pool.connection_kwargs.get("decode_responses"))
        self._scripts: dict[str, Script] = {
            name: self._client.register_script(text) for name, text in _redis.SCRIPTS.items()
        }
        self._closed = False
        self._checked = False

    @property
    def name(self) -> str:
        """The store's name."""
        return self._where.name

    @property
    def prefix(self) -> str:
        """What its keys start with (inside their hash tag)."""
        return self._where.prefix

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"RedisStore({self.name!r}, prefix={self.prefix!r}{state})"

    def close(self) -> None:
        """Refuse every later call (`StoreClosedError`), and close the store's own client
        (never one given to it)."""
        if not self._closed:
            self._closed = True
            if self._owned:
                self._client.close()

    def __enter__(self) -> RedisStore[_K, _V]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check_key(self, key: object, /) -> None:
        """Keys are all of the store's `key_type`; an int key must fit in 64 bits."""
        self._keys.check_key(key)

    def get(self, key: _K, /) -> Versioned[_V] | None:
        """See `Store.get`."""
        self.check_key(key)
        return self._keys.value(key, self._run(_redis.get(self._where, key, check=self._check)))

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
        """See `Store.update`. `function` runs between the read and the compare-and-set, and
        again when another writer changed the key in between."""
        self.check_key(key)
        plan = update_plan(self._keys, key, function, write_id)
        return plan.finish(self._write(key, write_id, plan.decide))

    def undo(self, key: _K, change: Change[_V] | None, /, *, write_id: str | None = None) -> None:
        """See `Store.undo`."""
        self.check_key(key)
        self._write(key, write_id, undo_plan(self._keys, key, change, write_id))

    def snapshot(self) -> dict[_K, Versioned[_V]]:
        """Every key and its versioned value, in key order."""
        rows = self._run(_redis.snapshot(self._where, check=self._check))
        return cast(dict[_K, Versioned[_V]], self._keys.values(rows))

    def forget_writes(self, saga_id: str) -> int:
        """Drop the write ids recorded for `saga_id`'s steps (those starting ``saga_id/``), once
        the saga has finished and will not be recovered again; the number dropped."""
        return self._run(_redis.forget_writes(self._where, saga_id, check=self._check))

    # -- running operations -------------------------------------------------------------------

    @property
    def _check(self) -> bool:
        """Whether a call registers the store, or checks its registration, first (the first
        call does)."""
        return not self._checked

    def _write(self, key: object, write_id: str | None, decide: Decide) -> Written:
        return self._run(_redis.write(self._where, key, write_id, decide, check=self._check))

    def _run(self, operation: Operation[Request, object, _T]) -> _T:
        if self._closed:
            raise StoreClosedError(self.name)
        with _translated_errors(self.name):
            result = drive(operation, self._ask)
        self._checked = True
        return result

    def _ask(self, request: Request) -> object:
        if isinstance(request, Run):
            script = self._scripts[request.script]
            return script(keys=list(request.keys), args=list(request.arguments))
        return self._client.zrangebylex(request.key, f"[{request.start}", f"({request.end}")


@final
class AsyncRedisStore(Generic[_K, _V]):
    """`RedisStore` for `fsaga.interpreter.AsyncInterpreter`: the same keys, written through a
    `redis.asyncio.Redis` client, so a store step never blocks the event loop.

    The store steps of `fsaga.stores` take it like any store; their actions and compensations
    are then ``async``, for an async interpreter (`SyncInterpreter` refuses them before
    anything runs). Its methods are coroutines: ``await store.put(...)``. A write, once
    started, is not cut off halfway: a cancellation that arrives meanwhile takes effect when
    it is done.

    asyncio only, as redis-py's async client is. Who closes what, as for `RedisStore`: a URL
    gives the store its own client, bound to the event loop it is first used in and closed by
    `aclose`; a `redis.asyncio.Redis` client given stays yours to close.

    Arguments as for `RedisStore`; `get`, `put`, `delete`, `update`, `undo`, `snapshot` and
    `forget_writes` do the same, awaited.

    >>> store: AsyncRedisStore[str, int] = AsyncRedisStore("redis://localhost:6379/0", "stock")
    >>> store
    AsyncRedisStore('stock', prefix='fsaga')
    """

    __slots__ = ("_checked", "_client", "_closed", "_keys", "_loop", "_owned", "_scripts", "_where")

    @overload
    def __init__(
        self: AsyncRedisStore[str, _V],
        client: str | redis.asyncio.Redis,
        name: str,
        *,
        key_type: type[str] = ...,
        codec: Codec = ...,
        prefix: str = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: AsyncRedisStore[int, _V],
        client: str | redis.asyncio.Redis,
        name: str,
        *,
        key_type: type[int],
        codec: Codec = ...,
        prefix: str = ...,
    ) -> None: ...
    def __init__(
        self,
        client: str | redis.asyncio.Redis,
        name: str,
        *,
        key_type: type[str] | type[int] = str,
        codec: Codec = JsonCodec(),  # noqa: B008 (an immutable value)
        prefix: str = "fsaga",
    ) -> None:
        self._keys: KeyCodec[_V]
        self._keys, self._where = _options(name, key_type, codec, prefix)
        if isinstance(client, str):
            self._client = redis.asyncio.Redis.from_url(client)
            self._owned = True
        elif isinstance(client, redis.asyncio.Redis):
            self._client = client
            self._owned = False
        elif isinstance(client, redis.Redis):
            raise TypeError(f"store {name!r}: {client!r} is not async: use RedisStore")
        else:
            raise TypeError(
                f"store {name!r}: expected a redis:// URL or a redis.asyncio.Redis client, got "
                f"{client!r}"
            )
        _check_bytes(name, self._client.connection_pool.connection_kwargs.get("decode_responses"))
        self._scripts: dict[str, AsyncScript] = {
            name: self._client.register_script(text) for name, text in _redis.SCRIPTS.items()
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._checked = False

    @property
    def name(self) -> str:
        """The store's name."""
        return self._where.name

    @property
    def prefix(self) -> str:
        """What its keys start with (inside their hash tag)."""
        return self._where.prefix

    @property
    def closed(self) -> bool:
        """Whether `aclose` was called."""
        return self._closed

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"AsyncRedisStore({self.name!r}, prefix={self.prefix!r}{state})"

    async def aclose(self) -> None:
        """Refuse every later call (`StoreClosedError`), and close the store's own client
        (never one given to it)."""
        if not self._closed:
            self._closed = True
            if self._owned:
                await self._client.aclose()

    async def __aenter__(self) -> AsyncRedisStore[_K, _V]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def check_key(self, key: object, /) -> None:
        """Keys are all of the store's `key_type`; an int key must fit in 64 bits."""
        self._keys.check_key(key)

    async def get(self, key: _K, /) -> Versioned[_V] | None:
        """See `Store.get`."""
        self.check_key(key)
        return self._keys.value(
            key, await self._run(_redis.get(self._where, key, check=self._check))
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
        """See `RedisStore.update`."""
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
        """See `RedisStore.snapshot`."""
        rows = await self._run(_redis.snapshot(self._where, check=self._check))
        return cast(dict[_K, Versioned[_V]], self._keys.values(rows))

    async def forget_writes(self, saga_id: str) -> int:
        """See `RedisStore.forget_writes`."""
        return await self._run(_redis.forget_writes(self._where, saga_id, check=self._check))

    # -- running operations -------------------------------------------------------------------

    @property
    def _check(self) -> bool:
        """Whether a call registers the store, or checks its registration, first (the first
        call does)."""
        return not self._checked

    async def _write(self, key: object, write_id: str | None, decide: Decide) -> Written:
        return await self._run(_redis.write(self._where, key, write_id, decide, check=self._check))

    async def _run(self, operation: Operation[Request, object, _T]) -> _T:
        if self._closed:
            raise StoreClosedError(self.name)
        self._check_loop()
        with _translated_errors(self.name), shielded():
            try:
                request = next(operation)
                while True:
                    request = operation.send(await self._ask(request))
            except StopIteration as done:
                self._checked = True
                result: _T = done.value
                return result

    def _check_loop(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise StoreError(
                self.name,
                f"store {self.name!r}: an async Redis store runs on asyncio only (redis-py's "
                "async client does); under trio, use RedisStore",
            ) from None
        if self._loop is None:
            self._loop = loop
        elif self._owned and self._loop is not loop:
            raise StoreError(
                self.name,
                f"store {self.name!r} was first used in another event loop; its client's "
                "connections belong to that one: open one store per event loop",
            )

    async def _ask(self, request: Request) -> object:
        if isinstance(request, Run):
            script = self._scripts[request.script]
            return await script(keys=list(request.keys), args=list(request.arguments))
        return await self._client.zrangebylex(request.key, f"[{request.start}", f"({request.end}")


@contextlib.contextmanager
def _translated_errors(name: str) -> Iterator[None]:
    try:
        yield
    except redis.exceptions.RedisError as error:
        raise _translated(name, error) from error
