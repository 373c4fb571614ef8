"""Type-level tests of `fsaga.stores`: checked by mypy, never run by pytest (see test_types.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_type

from fsaga import Outcome, Saga, SyncInterpreter, par, step
from fsaga.stores import (
    ABSENT,
    AsyncPostgresStore,
    AsyncRedisStore,
    AsyncStore,
    Change,
    Deleted,
    MemoryStore,
    PostgresStore,
    RedisStore,
    SqliteStore,
    Store,
    Transaction,
    Versioned,
    change_from_receipt,
    delete,
    read,
    save,
    transaction,
    update,
)


@dataclass(frozen=True)
class Order:
    id: str
    total: int


def store_types() -> None:
    stock = MemoryStore("stock", {"sku-1": 10})
    assert_type(stock, MemoryStore[str, int])
    orders = MemoryStore[str, Order]("orders")
    rows: SqliteStore[str, dict[str, int]] = SqliteStore(":memory:", "rows")
    by_id: SqliteStore[int, str] = SqliteStore(":memory:", "by_id", key_type=int)

    # Both stores satisfy the protocol, with their key and value types.
    as_protocol: Store[str, int] = stock
    assert_type(as_protocol.get("sku-1"), Versioned[int] | None)
    sqlite_protocol: Store[int, str] = by_id
    assert_type(sqlite_protocol.put(1, "x", expected=ABSENT), Change[str])
    deleted = stock.delete("sku-1")
    assert_type(deleted.before, Versioned[int] | Deleted | None)
    assert_type(change_from_receipt({"before": None, "after": None}), Change[object] | None)
    assert_type(rows.update("k", lambda row: {**row, "n": 1}), Change[dict[str, int]])

    assert_type(save(orders, "o-1", Order("o-1", 10)), Saga[Versioned[Order]])
    assert_type(update(stock, "sku-1", lambda count: count - 1), Saga[Versioned[int]])
    assert_type(delete(orders, "o-1"), Saga[Versioned[Order] | None])
    assert_type(read(rows, "k"), Saga[Versioned[dict[str, int]] | None])

    save(orders, "o-1", "not an order")  # type: ignore[misc]
    save(by_id, "a string key", "x")  # type: ignore[misc]
    update(stock, "sku-1", lambda count: str(count))  # type: ignore[arg-type, return-value]


def transaction_types(stock: MemoryStore[str, int], orders: MemoryStore[str, Order]) -> None:
    def place(tx: Transaction) -> Saga[tuple[Versioned[int], Versioned[Order]]]:
        return tx.update(stock, "sku-1", lambda count: count - 1).zip(
            tx.save(orders, "o-1", Order("o-1", 10))
        )

    placed = transaction(place, name="place_order")
    assert_type(placed, Saga[tuple[Versioned[int], Versioned[Order]]])

    # A transaction composes with ordinary steps, and with other sagas.
    def charge() -> str:
        return "payment-1"

    paid = transaction(lambda tx: tx.save(orders, "o-1", Order("o-1", 10)).then(step(charge))).map(
        len
    )
    assert_type(paid, Saga[int])
    both = par(placed, tx_read(stock))
    assert_type(both, Saga[tuple[tuple[Versioned[int], Versioned[Order]], Versioned[int] | None]])
    assert_type(paid.run(SyncInterpreter()), Outcome[int])

    transaction(lambda tx: 42)  # type: ignore[arg-type, return-value]


def tx_read(stock: MemoryStore[str, int]) -> Saga[Versioned[int] | None]:
    return transaction(lambda tx: tx.read(stock, "sku-1"))


def database_store_types() -> None:
    orders: PostgresStore[str, Order] = PostgresStore("dbname=shop", "orders")
    by_id: PostgresStore[int, str] = PostgresStore("dbname=shop", "by_id", key_type=int)
    stock: RedisStore[str, int] = RedisStore("redis://localhost", "stock")
    async_orders: AsyncPostgresStore[str, Order] = AsyncPostgresStore("dbname=shop", "orders")
    async_stock: AsyncRedisStore[str, int] = AsyncRedisStore("redis://localhost", "stock")

    # The sync ones are Stores, the async ones AsyncStores, each with its key and value types.
    def sync(store: Store[str, int]) -> None: ...
    def asynchronous(store: AsyncStore[str, int]) -> None: ...

    sync_orders: Store[str, Order] = orders
    keyed_by_int: Store[int, str] = by_id
    async_protocol: AsyncStore[str, int] = async_stock
    assert_type(sync_orders.get("o-1"), Versioned[Order] | None)
    assert_type(keyed_by_int.put(1, "x"), Change[str])
    sync(stock)
    asynchronous(stock)  # type: ignore[arg-type]
    sync(async_stock)  # type: ignore[arg-type]

    # The steps take either, typed alike.
    assert_type(save(orders, "o-1", Order("o-1", 10)), Saga[Versioned[Order]])
    assert_type(save(async_orders, "o-1", Order("o-1", 10)), Saga[Versioned[Order]])
    assert_type(update(async_stock, "sku-1", lambda count: count - 1), Saga[Versioned[int]])
    assert_type(delete(async_orders, "o-1"), Saga[Versioned[Order] | None])
    assert_type(read(async_protocol, "sku-1"), Saga[Versioned[int] | None])
    assert_type(
        transaction(lambda tx: tx.save(async_orders, "o-1", Order("o-1", 10))),
        Saga[Versioned[Order]],
    )
    save(async_orders, "o-1", "not an order")  # type: ignore[misc]
    save(by_id, "a string key", "x")  # type: ignore[misc]


async def async_store_calls(store: AsyncPostgresStore[str, int]) -> None:
    assert_type(await store.put("sku-1", 10), Change[int])
    assert_type(await store.get("sku-1"), Versioned[int] | None)
    assert_type(await store.snapshot(), dict[str, Versioned[int]])
