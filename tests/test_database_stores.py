"""What only the database stores do: `PostgresStore` and `RedisStore` (their tables and keys,
who closes what, lost connections, locks, writers that bypass them) and their async twins
under `AsyncInterpreter` (the loop never blocked, deadlines, conflicts).

The behaviour every store shares is tested over all of them in test_stores.py; these run on the
session's servers (tests/servers.py), each test in a schema or under a key prefix of its own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import psycopg
import psycopg_pool
import pytest
import redis
import redis.asyncio
from anyio.from_thread import start_blocking_portal
from psycopg import sql
from servers import PostgresServer
from store_backends import unique

from fsaga import Failure, PartialFailure, Saga, Success, step
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.interpreter import AsyncInterpreter, SyncInterpreter
from fsaga.journal import JsonCodec, MemoryJournal
from fsaga.stores import (
    AsyncPostgresStore,
    AsyncRedisStore,
    PostgresStore,
    RedisStore,
    StoreError,
    StoreUnavailableError,
    VersionConflictError,
    Versioned,
    delete,
    read,
    save,
    transaction,
    update,
)


@pytest.fixture
def admin(postgres: PostgresServer) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A connection of the test's own to the server, autocommit."""
    with psycopg.connect(postgres.dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def schema(admin: psycopg.Connection[tuple[Any, ...]]) -> str:
    """A schema no other test uses."""
    name = unique("t")
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    return name


@pytest.fixture
def prefix() -> str:
    """A Redis key prefix no other test uses."""
    return unique("t")


@pytest.fixture
def orders(postgres: PostgresServer, schema: str) -> Iterator[PostgresStore[str, Any]]:
    with PostgresStore[str, Any](postgres.dsn, "orders", schema=schema) as store:
        store.create_tables()
        yield store


@pytest.fixture
def client(redis_server_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_server_url) as opened:
        yield opened


def rows(
    admin: psycopg.Connection[tuple[Any, ...]], schema: str, table: str
) -> list[tuple[Any, ...]]:
    return admin.execute(
        sql.SQL("SELECT * FROM {} ORDER BY 1, 2").format(sql.Identifier(schema, table))
    ).fetchall()


def backend_of(store: PostgresStore[Any, Any], admin: psycopg.Connection[tuple[Any, ...]]) -> int:
    """The server process behind the store's own connection (it must have one)."""
    pid = store._connection.info.backend_pid  # type: ignore[union-attr]
    assert admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return pid


# -- PostgreSQL: tables ------------------------------------------------------------------------


def test_create_tables_makes_the_stores_table_and_fsagas_and_is_idempotent(
    postgres: PostgresServer, schema: str, admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    with PostgresStore[str, Any](postgres.dsn, "orders", schema=schema) as store:
        store.create_tables()
        store.create_tables()
        store.put("o-1", {"total": 12}, write_id="s-1/save")
        store.create_tables()

    tables = admin.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)
    ).fetchall()
    assert [name for (name,) in tables] == [
        "fsaga_store_deletions",
        "fsaga_store_writes",
        "fsaga_stores",
        "orders",
    ]
    assert rows(admin, schema, "orders") == [("o-1", JsonCodec().encode({"total": 12}), 1)]
    assert rows(admin, schema, "fsaga_stores") == [("orders", "str", 1, 1)]
    assert rows(admin, schema, "fsaga_store_writes") == [
        ("orders", "s-1/save", "o-1", True, None, None, b'{"total":12}', 1, False)
    ]


def test_create_tables_from_several_threads_at_once_creates_them_once(
    postgres: PostgresServer, schema: str, admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    stores = [PostgresStore[str, int](postgres.dsn, "stock", schema=schema) for _ in range(4)]
    errors: list[BaseException] = []

    def create(store: PostgresStore[str, int]) -> None:
        try:
            store.create_tables()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=create, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()

    assert errors == []
    assert rows(admin, schema, "fsaga_stores") == [("stock", "str", 0, 1)]


@pytest.mark.parametrize("call", ["get", "put", "snapshot"])
def test_a_store_without_its_tables_says_to_create_them(
    postgres: PostgresServer, schema: str, call: str
) -> None:
    calls: dict[str, Callable[[PostgresStore[str, str]], object]] = {
        "get": lambda store: store.get("o-1"),
        "put": lambda store: store.put("o-1", "placed"),
        "snapshot": lambda store: store.snapshot(),
    }
    with (
        PostgresStore[str, str](postgres.dsn, "orders", schema=schema) as store,
        pytest.raises(StoreError, match=r"call create_tables\(\) once") as caught,
    ):
        calls[call](store)

    assert not isinstance(caught.value, StoreUnavailableError)
    assert f"store 'orders' has no tables in schema {schema!r}" in str(caught.value)


def test_a_schema_that_does_not_exist_is_a_store_error(postgres: PostgresServer) -> None:
    with (
        PostgresStore[str, str](postgres.dsn, "orders", schema="nowhere") as store,
        pytest.raises(StoreError, match="schema 'nowhere'") as caught,
    ):
        store.create_tables()

    assert not isinstance(caught.value, StoreUnavailableError)


def test_a_table_of_the_application_with_the_stores_name_is_refused(
    postgres: PostgresServer, schema: str, admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    admin.execute(
        sql.SQL("CREATE TABLE {} (id INTEGER PRIMARY KEY, total INTEGER)").format(
            sql.Identifier(schema, "orders")
        )
    )
    admin.execute(sql.SQL("INSERT INTO {} VALUES (1, 12)").format(sql.Identifier(schema, "orders")))

    with (
        PostgresStore[str, str](postgres.dsn, "orders", schema=schema) as store,
        pytest.raises(StoreError, match="has a table 'orders' that is not an fsaga store"),
    ):
        store.create_tables()

    assert rows(admin, schema, "orders") == [(1, 12)]


def test_a_store_opened_with_another_key_type_is_refused_on_first_use(
    postgres: PostgresServer, orders: PostgresStore[str, Any], schema: str
) -> None:
    orders.put("o-1", "placed")

    with PostgresStore[int, Any](postgres.dsn, "orders", key_type=int, schema=schema) as again:
        with pytest.raises(StoreError, match="holds str keys; it was opened with key_type=int"):
            again.create_tables()
        with pytest.raises(StoreError, match="holds str keys; it was opened with key_type=int"):
            again.get(1)


def test_a_store_written_by_a_newer_schema_or_without_its_table_is_refused(
    postgres: PostgresServer,
    orders: PostgresStore[str, Any],
    schema: str,
    admin: psycopg.Connection[tuple[Any, ...]],
) -> None:
    stores = sql.Identifier(schema, "fsaga_stores")
    admin.execute(sql.SQL("UPDATE {} SET schema_version = 2").format(stores))
    with pytest.raises(StoreError, match=r"created by a newer fsaga \(schema 2; this one knows 1"):
        orders.put("o-1", "placed")

    admin.execute(sql.SQL("UPDATE {} SET schema_version = 1").format(stores))
    admin.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, "orders")))
    with (
        PostgresStore[str, Any](postgres.dsn, "orders", schema=schema) as again,
        pytest.raises(StoreError, match="is registered, but its table is missing"),
    ):
        again.create_tables()


def test_int_keys_are_a_bigint_column_in_numeric_order(
    postgres: PostgresServer, schema: str, admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    with PostgresStore[int, str](postgres.dsn, "orders", key_type=int, schema=schema) as store:
        store.create_tables()
        store.put(2**63 - 1, "max", write_id="s-1/a")
        store.put(-(2**63), "min")
        store.put(7, "seven")
        store.delete(7, write_id="s-1/b")

        assert list(store.snapshot()) == [-(2**63), 2**63 - 1]
        assert store.put(2**63 - 1, "again", write_id="s-1/a").after == Versioned("max", 1)
        assert store.put(7, "x", write_id="s-1/b").before == Versioned("seven", 3)
        with pytest.raises(TypeError, match="does not fit in 64 bits"):
            store.put(2**63, "too big")

    column = admin.execute(
        "SELECT data_type FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = 'orders' AND column_name = 'key'",
        (schema,),
    ).fetchone()
    assert column == ("bigint",)


def test_an_unreadable_value_is_a_store_error_naming_the_key(
    orders: PostgresStore[str, Any], schema: str, admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    orders.put("o-1", "placed")
    admin.execute(
        sql.SQL("UPDATE {} SET value = '\\xff00'::bytea").format(sql.Identifier(schema, "orders"))
    )

    with pytest.raises(StoreError, match="store 'orders', key 'o-1': unreadable value"):
        orders.get("o-1")


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"schema": "my-schema"}, ValueError, "schema must be letters"),
        ({"schema": 7}, TypeError, "schema must be a str"),
        ({"lock_timeout": -1}, ValueError, "lock_timeout"),
        ({"lock_timeout": 10**7}, ValueError, "lock_timeout must be at most"),
        ({"key_type": float}, TypeError, "key_type must be str or int"),
        ({"codec": object()}, TypeError, "codec must have encode and decode"),
    ],
)
def test_bad_postgres_options_are_refused(
    options: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        PostgresStore("dbname=shop", "orders", **options)  # type: ignore[call-overload]


def test_a_name_too_long_for_postgresql_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 63 characters"):
        PostgresStore("dbname=shop", "o" * 64)


@pytest.mark.parametrize("connection", [42, b"dbname=shop", None])
def test_something_that_is_not_a_connection_is_refused(connection: object) -> None:
    with pytest.raises(TypeError, match="expected a connection string"):
        PostgresStore(connection, "orders")  # type: ignore[call-overload]


# -- PostgreSQL: connections ---------------------------------------------------------------------


def test_the_store_closes_its_own_connection(
    orders: PostgresStore[str, Any], admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    orders.put("o-1", "placed")
    pid = backend_of(orders, admin)

    orders.close()

    gone = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
    # The server notices the end of the connection at once, but may list it a moment longer:
    # wait on the server's own view instead of sleeping.
    while gone.fetchone() != (0,):
        gone = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))


def test_a_connection_given_to_the_store_stays_open_and_is_the_callers(
    postgres: PostgresServer, schema: str
) -> None:
    with psycopg.connect(postgres.dsn) as connection:
        store: PostgresStore[str, str] = PostgresStore(connection, "orders", schema=schema)
        store.create_tables()
        store.put("o-1", "placed")
        store.close()

        assert not connection.closed
        assert connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert connection.execute(
            sql.SQL("SELECT key FROM {}").format(sql.Identifier(schema, "orders"))
        ).fetchall() == [("o-1",)]


def test_a_connection_inside_a_transaction_of_the_callers_is_refused(
    postgres: PostgresServer, schema: str
) -> None:
    with psycopg.connect(postgres.dsn) as connection:
        store: PostgresStore[str, str] = PostgresStore(connection, "orders", schema=schema)
        store.create_tables()
        connection.execute("SELECT 1")  # starts a transaction (not autocommit)

        with pytest.raises(StoreError, match=r"inside a transaction \(INTRANS\)"):
            store.put("o-1", "placed")

        connection.rollback()
        assert store.get("o-1") is None


def test_a_pool_given_to_the_store_stays_open_and_serves_several_stores(
    postgres: PostgresServer, schema: str
) -> None:
    with psycopg_pool.ConnectionPool(postgres.dsn, min_size=1, max_size=2, open=True) as pool:
        orders: PostgresStore[str, str] = PostgresStore(pool, "orders", schema=schema)
        stock: PostgresStore[str, int] = PostgresStore(pool, "stock", schema=schema)
        for store in (orders, stock):
            store.create_tables()
        orders.put("o-1", "placed")
        stock.put("sku-1", 10)
        orders.close()

        assert not pool.closed
        assert stock.get("sku-1") == Versioned(10, 1)
        with pool.connection() as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)


def test_a_lost_connection_is_unavailable_then_the_store_connects_again(
    orders: PostgresStore[str, Any], admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    orders.put("o-1", "placed")
    admin.execute("SELECT pg_terminate_backend(%s)", (backend_of(orders, admin),))

    with pytest.raises(StoreUnavailableError, match="store 'orders'"):
        orders.put("o-1", "paid", write_id="s-1/save")

    assert orders.put("o-1", "paid", write_id="s-1/save").after == Versioned("paid", 2)


def test_a_store_step_is_retried_across_a_lost_connection(
    orders: PostgresStore[str, Any], admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    orders.get("o-1")  # connects
    admin.execute("SELECT pg_terminate_backend(%s)", (backend_of(orders, admin),))

    outcome = save(orders, "o-1", "placed").run(SyncInterpreter(sleep=lambda _: None))

    assert outcome == Success(Versioned("placed", 1))


def test_a_write_waiting_too_long_for_the_stores_lock_is_unavailable_and_writes_nothing(
    postgres: PostgresServer, schema: str
) -> None:
    with PostgresStore[str, str](postgres.dsn, "orders", schema=schema, lock_timeout=0.01) as store:
        store.create_tables()
        store.put("o-1", "placed")
        with psycopg.connect(postgres.dsn) as holder:  # holds the store's lock, as a writer does
            holder.execute(
                sql.SQL("SELECT 1 FROM {} WHERE name = 'orders' FOR UPDATE").format(
                    sql.Identifier(schema, "fsaga_stores")
                )
            )

            with pytest.raises(StoreUnavailableError, match="lock timeout"):
                store.put("o-1", "paid", write_id="s-1/save")
            assert store.get("o-1") == Versioned("placed", 1)  # readers do not wait

            holder.rollback()
        assert store.put("o-1", "paid", write_id="s-1/save").after == Versioned("paid", 2)


def test_a_row_written_behind_the_stores_back_while_it_waits_is_not_overwritten(
    orders: PostgresStore[str, Any], schema: str, postgres: PostgresServer
) -> None:
    """A writer that bypasses fsaga (no lock, no version counter) changes the row between the
    store's read and its write: the compare-and-set finds another version and writes nothing."""
    orders.put("o-1", "placed")
    table = sql.Identifier(schema, "orders")
    errors: list[BaseException] = []
    with (
        psycopg.connect(postgres.dsn) as bypass,
        psycopg.connect(postgres.dsn, autocommit=True) as watch,
    ):
        bypass.execute(sql.SQL("UPDATE {} SET version = 99 WHERE key = 'o-1'").format(table))
        pid = orders._connection.info.backend_pid  # type: ignore[union-attr]

        def write() -> None:
            try:
                orders.put("o-1", "paid")
            except BaseException as error:
                errors.append(error)

        writer = threading.Thread(target=write)
        writer.start()
        # Wait until the store's UPDATE waits for the row lock the bypassing writer holds.
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'"
        )
        while watch.execute(waiting, (pid,)).fetchone() != (1,):
            pass
        bypass.commit()
        writer.join()

    assert len(errors) == 1
    assert isinstance(errors[0], StoreError)
    assert "the row changed while the store was locked" in str(errors[0])
    assert orders.get("o-1") == Versioned("placed", 99)
    assert orders.put("o-2", "next").after == Versioned("next", 2)  # no version was used up


def test_concurrent_updates_through_several_connections_lose_nothing(
    postgres: PostgresServer, orders: PostgresStore[str, Any], schema: str
) -> None:
    orders.put("counter", 0)
    stores = [PostgresStore[str, int](postgres.dsn, "orders", schema=schema) for _ in range(4)]
    each = 15

    def work(store: PostgresStore[str, int]) -> None:
        for _ in range(each):
            store.update("counter", lambda count: count + 1)

    threads = [threading.Thread(target=work, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()

    assert orders.get("counter") == Versioned(4 * each, 4 * each + 1)


def test_a_sync_store_refuses_async_connections_and_an_async_store_sync_ones(
    postgres: PostgresServer,
) -> None:
    with (
        psycopg.connect(postgres.dsn) as connection,
        pytest.raises(TypeError, match="is not async: use PostgresStore"),
    ):
        AsyncPostgresStore(connection, "orders")  # type: ignore[call-overload]
    pool = psycopg_pool.AsyncConnectionPool(postgres.dsn, open=False)
    with pytest.raises(TypeError, match="AsyncConnectionPool is async: use AsyncPostgresStore"):
        PostgresStore(pool, "orders")  # type: ignore[call-overload]


# -- Redis ---------------------------------------------------------------------------------------


def test_a_redis_store_keeps_its_keys_under_its_hash_tag(
    redis_server_url: str, prefix: str, client: redis.Redis
) -> None:
    with RedisStore[str, Any](redis_server_url, "orders", prefix=prefix) as store:
        store.put("o-1", {"total": 12}, write_id="s-1/save")
        store.delete("o-2")

    tag = f"{{{prefix}:orders}}"
    assert sorted(client.keys(f"{tag}*")) == [
        f"{tag}:meta".encode(),
        f"{tag}:values".encode(),
        f"{tag}:versions".encode(),
        f"{tag}:write:s-1/save".encode(),
        f"{tag}:writes".encode(),
    ]
    assert client.hgetall(f"{tag}:values") == {b"o-1": b'{"total":12}'}
    assert client.hgetall(f"{tag}:meta") == {
        b"key_type": b"str",
        b"schema_version": b"1",
        b"last_version": b"1",
    }


def test_a_redis_store_opened_with_another_key_type_is_refused(
    redis_server_url: str, prefix: str
) -> None:
    with RedisStore[str, str](redis_server_url, "orders", prefix=prefix) as store:
        store.put("1", "placed")

    with (
        RedisStore[int, str](redis_server_url, "orders", key_type=int, prefix=prefix) as again,
        pytest.raises(StoreError, match="holds str keys; it was opened with key_type=int"),
    ):
        again.get(1)


def test_a_redis_store_written_by_a_newer_schema_is_refused(
    redis_server_url: str, prefix: str, client: redis.Redis
) -> None:
    client.hset(f"{{{prefix}:orders}}:meta", mapping={"key_type": "str", "schema_version": 2})

    with (
        RedisStore[str, str](redis_server_url, "orders", prefix=prefix) as store,
        pytest.raises(StoreError, match=r"created by a newer fsaga \(schema 2"),
    ):
        store.put("o-1", "placed")


def test_a_redis_store_keeps_int_keys_in_numeric_order(redis_server_url: str, prefix: str) -> None:
    with RedisStore[int, str](redis_server_url, "orders", key_type=int, prefix=prefix) as store:
        for key in (10, -3, 2**63 - 1, 2):
            store.put(key, str(key), write_id=f"s-1/{key}")

        assert list(store.snapshot()) == [-3, 2, 10, 2**63 - 1]
        assert store.put(10, "again", write_id="s-1/10").after == Versioned("10", 1)
        assert store.forget_writes("s-1") == 4


def test_an_unreadable_redis_value_is_a_store_error_naming_the_key(
    redis_server_url: str, prefix: str, client: redis.Redis
) -> None:
    with RedisStore[str, str](redis_server_url, "orders", prefix=prefix) as store:
        store.put("o-1", "placed")
        client.hset(f"{{{prefix}:orders}}:values", "o-1", b"\xff\x00")

        with pytest.raises(StoreError, match="store 'orders', key 'o-1': unreadable value"):
            store.get("o-1")


def test_an_unreachable_redis_is_unavailable(prefix: str) -> None:
    from servers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    with (
        RedisStore[str, str](url, "orders", prefix=prefix) as store,
        pytest.raises(StoreUnavailableError, match="store 'orders': ConnectionError"),
    ):
        store.put("o-1", "placed")


def test_a_client_that_decodes_responses_is_refused(redis_server_url: str) -> None:
    with (
        redis.Redis.from_url(redis_server_url, decode_responses=True) as decoding,
        pytest.raises(ValueError, match="decode_responses=True"),
    ):
        RedisStore(decoding, "orders")


def test_a_client_given_to_the_store_stays_open(
    redis_server_url: str, prefix: str, client: redis.Redis
) -> None:
    store: RedisStore[str, str] = RedisStore(client, "orders", prefix=prefix)
    store.put("o-1", "placed")
    store.close()

    assert client.ping()


@pytest.mark.parametrize("bad", ["", "a{b", "c}"])
def test_a_prefix_that_breaks_the_hash_tag_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="prefix must be a non-empty str"):
        RedisStore("redis://localhost", "orders", prefix=bad)


def test_concurrent_updates_through_several_redis_clients_lose_nothing(
    redis_server_url: str, prefix: str
) -> None:
    stores = [RedisStore[str, int](redis_server_url, "stock", prefix=prefix) for _ in range(4)]
    stores[0].put("counter", 0)
    each = 25

    def work(store: RedisStore[str, int]) -> None:
        for _ in range(each):
            store.update("counter", lambda count: count + 1)

    threads = [threading.Thread(target=work, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert stores[0].get("counter") == Versioned(4 * each, 4 * each + 1)
    for store in stores:
        store.close()


def test_a_sync_redis_store_refuses_an_async_client_and_the_other_way_round(
    redis_server_url: str,
) -> None:
    with pytest.raises(TypeError, match="is async: use AsyncRedisStore"):
        RedisStore(redis.asyncio.Redis.from_url(redis_server_url), "orders")  # type: ignore[call-overload]
    with (
        redis.Redis.from_url(redis_server_url) as client,
        pytest.raises(TypeError, match="is not async: use RedisStore"),
    ):
        AsyncRedisStore(client, "orders")


# -- the async stores under AsyncInterpreter -------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    """psycopg's and redis-py's async clients run on asyncio only."""
    return "asyncio"


class Declined(Exception):
    pass


def declined() -> None:
    raise Declined("card declined")


@pytest.fixture
async def shop(
    postgres: PostgresServer, redis_server_url: str, schema: str, prefix: str
) -> AsyncIterator[tuple[AsyncPostgresStore[str, Any], AsyncRedisStore[str, int]]]:
    """An order book in PostgreSQL and a stock in Redis, async; the stock holds 10 of sku-1."""
    async with (
        AsyncPostgresStore[str, Any](postgres.dsn, "orders", schema=schema) as orders,
        AsyncRedisStore[str, int](redis_server_url, "stock", prefix=prefix) as stock,
    ):
        await orders.create_tables()
        await stock.put("sku-1", 10)
        yield orders, stock


Shop = tuple[AsyncPostgresStore[str, Any], AsyncRedisStore[str, int]]


@pytest.mark.anyio
async def test_async_stores_write_and_undo_under_the_async_interpreter(shop: Shop) -> None:
    orders, stock = shop
    place = transaction(
        lambda tx: (
            tx.update(stock, "sku-1", lambda count: count - 1)
            .then(tx.save(orders, "o-1", {"sku": "sku-1"}))
            .then(tx.read(orders, "o-1"))
        ),
        name="place",
    )

    placed = await place.run(AsyncInterpreter())
    declined_outcome = await place.then(step(declined, name="charge")).run(AsyncInterpreter())

    assert placed == Success(Versioned({"sku": "sku-1"}, 1))
    assert isinstance(declined_outcome, Failure)
    assert isinstance(declined_outcome.error, Declined)
    assert declined_outcome.compensated == ("place/save:orders:o-1", "place/update:stock:sku-1")
    assert await stock.get("sku-1") == Versioned(9, 2)
    assert await orders.get("o-1") == Versioned({"sku": "sku-1"}, 1)


@pytest.mark.anyio
async def test_an_async_delete_is_undone_with_its_value_and_version(shop: Shop) -> None:
    orders, _ = shop
    await orders.put("o-1", "placed")

    outcome = await delete(orders, "o-1").then(step(declined)).run(AsyncInterpreter())

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("delete:orders:o-1",)
    assert await orders.get("o-1") == Versioned("placed", 1)


@pytest.mark.anyio
async def test_a_change_made_meanwhile_in_either_database_is_kept_and_reported(
    shop: Shop, postgres: PostgresServer, redis_server_url: str
) -> None:
    orders, stock = shop
    async with (
        AsyncPostgresStore[str, Any](postgres.dsn, "orders", schema=orders.schema) as clerk,
        AsyncRedisStore[str, int](redis_server_url, "stock", prefix=stock.prefix) as warehouse,
    ):

        async def meanwhile() -> None:
            await clerk.put("o-1", "edited by a clerk")
            await warehouse.put("sku-1", 50)
            raise Declined("card declined")

        saga = (
            update(stock, "sku-1", lambda count: count - 1)
            .then(save(orders, "o-1", "placed"))
            .then(step(meanwhile, name="charge"))
        )
        outcome = await saga.run(AsyncInterpreter())

    assert isinstance(outcome, PartialFailure)
    assert outcome.compensated == ()
    conflicts = [(failure.path, failure.error) for failure in outcome.failed_compensations]
    assert [path for path, _ in conflicts] == ["save:orders:o-1", "update:stock:sku-1"]
    for (_, error), (store, found) in zip(conflicts, [("orders", 2), ("stock", 3)], strict=True):
        assert isinstance(error, VersionConflictError)
        assert (error.store, error.found) == (store, found)
    assert await orders.get("o-1") == Versioned("edited by a clerk", 2)
    assert await stock.get("sku-1") == Versioned(50, 3)


def test_the_sync_interpreter_refuses_async_store_steps_before_writing(
    postgres: PostgresServer, schema: str
) -> None:
    store: AsyncPostgresStore[str, str] = AsyncPostgresStore(postgres.dsn, "orders", schema=schema)

    outcome = save(store, "o-1", "placed").run(SyncInterpreter())

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, TypeError)
    assert "is async, so a sync interpreter could not undo the step" in str(outcome.error)
    assert "the step's action was not run" in str(outcome.error)
    assert store._connection is None  # never connected: nothing was written


@pytest.mark.anyio
async def test_the_event_loop_runs_on_while_an_async_store_waits_for_its_lock(
    shop: Shop, postgres: PostgresServer
) -> None:
    orders, _ = shop
    await orders.get("o-1")  # connects
    pid = orders._connection.info.backend_pid  # type: ignore[union-attr]
    outcome: list[object] = []
    async with (
        await psycopg.AsyncConnection.connect(postgres.dsn) as holder,
        await psycopg.AsyncConnection.connect(postgres.dsn, autocommit=True) as watch,
    ):
        await holder.execute(
            sql.SQL("SELECT 1 FROM {} WHERE name = 'orders' FOR UPDATE").format(
                sql.Identifier(orders.schema, "fsaga_stores")
            )
        )

        async def place() -> None:
            outcome.append(await save(orders, "o-1", "placed").run(AsyncInterpreter()))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(place)
            # This task runs only while the loop is free: the store's write waits for the lock
            # without blocking it. Release the lock once the write is seen waiting for it.
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'"
            )
            while (await (await watch.execute(waiting, (pid,))).fetchone()) != (1,):
                await anyio.lowlevel.checkpoint()
            await holder.rollback()

    assert outcome == [Success(Versioned("placed", 1))]


@pytest.mark.anyio
async def test_a_write_cancelled_while_it_waits_is_finished_then_undone(
    shop: Shop, postgres: PostgresServer
) -> None:
    """A cancellation that arrives while a write's transaction waits does not cut it off: the
    transaction commits, the saga is interrupted at its next step, and undoes the write
    (contract rule 8) before the cancellation propagates."""
    orders, _ = shop
    await orders.put("o-1", "draft")
    pid = orders._connection.info.backend_pid  # type: ignore[union-attr]
    async with (
        await psycopg.AsyncConnection.connect(postgres.dsn) as holder,
        await psycopg.AsyncConnection.connect(postgres.dsn, autocommit=True) as watch,
    ):
        await holder.execute(
            sql.SQL("SELECT 1 FROM {} WHERE name = 'orders' FOR UPDATE").format(
                sql.Identifier(orders.schema, "fsaga_stores")
            )
        )
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tasks:

                async def notify() -> str:
                    await anyio.lowlevel.checkpoint()  # where the cancellation arrives
                    return "sent"

                async def place() -> None:
                    saga = save(orders, "o-1", "placed").then(step(notify))
                    await saga.run(AsyncInterpreter())

                tasks.start_soon(place)
                waiting = (
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
                    " AND wait_event_type = 'Lock'"
                )
                while (await (await watch.execute(waiting, (pid,))).fetchone()) != (1,):
                    await anyio.lowlevel.checkpoint()
                scope.cancel()
                with anyio.CancelScope(shield=True):
                    await holder.rollback()

    assert scope.cancelled_caught
    assert await orders.get("o-1") == Versioned("draft", 1)
    # The write took version 2; the undo put version 1 back.
    assert (await orders.put("o-2", "x")).after == Versioned("x", 3)


@pytest.mark.anyio
async def test_an_async_pool_given_to_the_store_stays_open(
    postgres: PostgresServer, schema: str
) -> None:
    async with psycopg_pool.AsyncConnectionPool(postgres.dsn, min_size=1, open=False) as pool:
        store: AsyncPostgresStore[str, str] = AsyncPostgresStore(pool, "orders", schema=schema)
        await store.create_tables()
        outcome = (
            await save(store, "o-1", "placed").then(read(store, "o-1")).run(AsyncInterpreter())
        )
        await store.aclose()

        assert outcome == Success(Versioned("placed", 1))
        assert not pool.closed


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_an_async_store_belongs_to_the_event_loop_it_was_first_used_in(
    kind: str, postgres: PostgresServer, redis_server_url: str, schema: str, prefix: str
) -> None:
    store: AsyncPostgresStore[str, str] | AsyncRedisStore[str, str]
    if kind == "postgres":
        store = AsyncPostgresStore(postgres.dsn, "orders", schema=schema)
    else:
        store = AsyncRedisStore(redis_server_url, "orders", prefix=prefix)

    async def first_use() -> None:
        if isinstance(store, AsyncPostgresStore):
            await store.create_tables()
        await store.put("o-1", "placed")

    async def elsewhere() -> None:
        with pytest.raises(StoreError, match="was first used in another event loop"):
            await store.get("o-1")

    with start_blocking_portal(backend="asyncio") as portal:  # an event loop in a thread
        portal.call(first_use)
        anyio.run(elsewhere, backend="asyncio")
        assert portal.call(store.get, "o-1") == Versioned("placed", 1)
        portal.call(store.aclose)


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_an_async_store_under_trio_says_it_runs_on_asyncio_only(
    kind: str, postgres: PostgresServer, redis_server_url: str, schema: str, prefix: str
) -> None:
    store: AsyncPostgresStore[str, str] | AsyncRedisStore[str, str]
    if kind == "postgres":
        store = AsyncPostgresStore(postgres.dsn, "orders", schema=schema)
    else:
        store = AsyncRedisStore(redis_server_url, "orders", prefix=prefix)

    async def use() -> None:
        with pytest.raises(StoreError, match="runs on asyncio only") as caught:
            await store.get("o-1")
        assert "under trio, use" in str(caught.value)

    anyio.run(use, backend="trio")


@pytest.mark.anyio
async def test_a_durable_run_journals_the_receipts_of_async_store_writes(shop: Shop) -> None:
    orders, stock = shop
    definitions = SagaDefinitions()

    @definitions.saga("order")
    def order(order_id: object) -> Saga[None]:
        assert isinstance(order_id, str)
        return transaction(
            lambda tx: (
                tx.update(stock, "sku-1", lambda count: count - 1)
                .then(tx.save(orders, order_id, {"status": "placed"}))
                .then(step(declined, name="charge"))
            )
        )

    journal = MemoryJournal()
    outcome = await DurableSagas(journal, definitions).start_async("order", "o-1", saga_id="o-1")

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("save:orders:o-1", "update:stock:sku-1")
    completed = [
        (entry.path, json.loads(entry.payload or b"null"))
        for entry in journal.entries("o-1")
        if entry.kind == "completed"
    ]
    assert completed[0] == (
        "update:stock:sku-1",
        {"before": {"value": 10, "version": 1}, "after": {"value": 9, "version": 2}},
    )
    assert await stock.get("sku-1") == Versioned(10, 1)
    assert await orders.get("o-1") is None
