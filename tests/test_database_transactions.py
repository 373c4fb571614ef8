"""A property of transactions that span real databases: a PostgreSQL store, a Redis store, and a
payment service (in the process, standing in for an HTTP API: it keeps its own log of calls).

When the saga fails, both databases hold exactly what they held before (every value, version
and deletion, read through connections of the test's own), and every charge was refunded. When
someone else writes a key of either database between the saga's writes and the undo, their
write survives, and each saga write of that key is reported as a `VersionConflictError` naming
the key and the versions (but where no value was there either way: nothing to undo then), and
everything else is restored. Runs under `SyncInterpreter` with `PostgresStore` and `RedisStore`,
and under `AsyncInterpreter` with `AsyncPostgresStore` and `AsyncRedisStore` (asyncio).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeAlias

import anyio
import psycopg
import psycopg_pool
import pytest
import redis
from hypothesis import event, given, settings
from hypothesis import strategies as st
from psycopg import sql
from servers import PostgresServer
from store_backends import unique

from fsaga import Failure, Outcome, PartialFailure, Saga, sequence, step
from fsaga.interpreter import AsyncInterpreter, SyncInterpreter
from fsaga.stores import (
    AsyncPostgresStore,
    AsyncRedisStore,
    PostgresStore,
    RedisStore,
    Transaction,
    VersionConflictError,
    transaction,
)

Database: TypeAlias = Literal["postgres", "redis"]
DATABASES: tuple[Database, ...] = ("postgres", "redis")
KEYS = ("a", "b", "c")
Json: TypeAlias = "int | str | list[Json] | dict[str, Json] | None"

# What a database holds, read through a connection of the test's own: each key's value (its
# encoded bytes, or None for a deletion) and version.
Held: TypeAlias = dict[str, tuple[bytes | None, int]]


class Declined(Exception):
    """The payment service refused a charge."""


@dataclass
class Payments:
    """A payment service: each charge and refund is a call it logs, as an HTTP API would."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    charged: dict[str, int] = field(default_factory=dict)

    def charge(self, payment: str, amount: int, *, declines: bool) -> str:
        self.calls.append(("charge", payment))
        if declines:
            raise Declined(f"{payment}: card declined")
        self.charged[payment] = amount
        return payment

    def refund(self, payment: str) -> None:
        self.calls.append(("refund", payment))
        self.charged.pop(payment, None)


# -- what a case is ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """A saga write: a save (of `value`), a delete (`value` is None and `delete`), or an
    update that wraps the value (`update`)."""

    database: Database
    key: str
    value: Json = None
    delete: bool = False
    update: bool = False


@dataclass(frozen=True)
class Charge:
    amount: int


@dataclass(frozen=True)
class Meanwhile:
    """Someone else's write of a key, between the saga's writes and its undo."""

    database: Database
    key: str
    value: Json = None
    delete: bool = False


Op: TypeAlias = Write | Charge


@dataclass(frozen=True)
class Case:
    initial: dict[Database, tuple[tuple[str, Json], ...]]
    deleted: dict[Database, tuple[str, ...]]
    ops: tuple[Op, ...]
    failure: Literal["declined", "after"]
    meanwhile: Meanwhile | None
    runner: Literal["sync", "async"]


VALUES: st.SearchStrategy[Json] = st.one_of(
    st.integers(-9, 9), st.text("xy", max_size=2), st.lists(st.integers(0, 3), max_size=2)
)


@st.composite
def cases(draw: st.DrawFn, *, concurrent: bool) -> Case:
    initial: dict[Database, tuple[tuple[str, Json], ...]] = {}
    deleted: dict[Database, tuple[str, ...]] = {}
    for database in DATABASES:
        keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=3))
        initial[database] = tuple((key, draw(VALUES)) for key in keys)
        gone = draw(st.lists(st.sampled_from(keys), unique=True, max_size=1)) if keys else []
        deleted[database] = tuple(gone)
    holding = {
        database: {key for key, _ in initial[database]} - set(deleted[database])
        for database in DATABASES
    }
    ops: list[Op] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(("save", "save", "delete", "update", "charge")))
        database = draw(st.sampled_from(DATABASES))
        if kind == "charge":
            ops.append(Charge(draw(st.integers(1, 100))))
        elif kind == "update" and holding[database]:
            ops.append(
                Write(database, draw(st.sampled_from(sorted(holding[database]))), update=True)
            )
        elif kind == "delete":
            key = draw(st.sampled_from(KEYS))
            ops.append(Write(database, key, delete=True))
            holding[database].discard(key)
        else:
            key = draw(st.sampled_from(KEYS))
            ops.append(Write(database, key, draw(VALUES)))
            holding[database].add(key)
    meanwhile = None
    if concurrent:
        written = sorted({(op.database, op.key) for op in ops if isinstance(op, Write)})
        aim_at_a_write: bool = draw(st.booleans())
        if written and aim_at_a_write:
            database, key = draw(st.sampled_from(written))
        else:
            database, key = draw(st.sampled_from(DATABASES)), draw(st.sampled_from(KEYS))
        delete = draw(st.booleans())
        meanwhile = Meanwhile(database, key, None if delete else draw(VALUES), delete)
    failure: Literal["declined", "after"] = draw(st.sampled_from(("declined", "after")))
    runner: Literal["sync", "async"] = draw(st.sampled_from(("sync", "async")))
    return Case(initial, deleted, tuple(ops), failure, meanwhile, runner)


# -- the databases ------------------------------------------------------------------------------


@dataclass
class Servers:
    """The session's servers, and what the test reads them with."""

    postgres: PostgresServer
    redis_url: str
    schema: str
    pool: psycopg_pool.ConnectionPool
    connection: psycopg.Connection[tuple[Any, ...]]
    client: redis.Redis
    names: Iterator[int] = field(default_factory=itertools.count)


SERVERS: list[Servers] = []


@pytest.fixture(scope="module", autouse=True)
def servers(postgres: PostgresServer, redis_server_url: str) -> Iterator[Servers]:
    schema = unique("x")
    conninfo = f"{postgres.dsn} options='-c synchronous_commit=off'"
    with (
        psycopg.connect(postgres.dsn, autocommit=True) as connection,
        psycopg_pool.ConnectionPool(conninfo, min_size=2, max_size=2, open=True) as pool,
        redis.Redis.from_url(redis_server_url) as client,
    ):
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        # A pool opens its connections in a thread of its own, drawing random numbers as it
        # does: let it finish before hypothesis draws (it checks nothing else used `random`).
        # A pool of a fixed size opens no more.
        pool.wait()
        SERVERS.append(Servers(postgres, redis_server_url, schema, pool, connection, client))
        try:
            yield SERVERS[-1]
        finally:
            SERVERS.clear()


def held_postgres(servers: Servers, name: str) -> Held:
    table = sql.Identifier(servers.schema, name)
    held: Held = {}
    for key, data, version in servers.connection.execute(
        sql.SQL("SELECT key, value, version FROM {}").format(table)
    ):
        held[key] = (bytes(data), version)
    for key, version in servers.connection.execute(
        sql.SQL("SELECT key, version FROM {}.fsaga_store_deletions WHERE store = %s").format(
            sql.Identifier(servers.schema)
        ),
        (name,),
    ):
        held[key] = (None, version)
    return held


def held_redis(servers: Servers, prefix: str, name: str) -> Held:
    tag = f"{{{prefix}:{name}}}"
    values = {
        as_bytes(key): as_bytes(data)
        for key, data in servers.client.hgetall(f"{tag}:values").items()
    }
    return {
        as_bytes(key).decode(): (values.get(as_bytes(key)), int(version))
        for key, version in servers.client.hgetall(f"{tag}:versions").items()
    }


def as_bytes(value: bytes | str) -> bytes:
    assert isinstance(value, bytes), value
    return value


@dataclass
class Place:
    """Where one example's stores live: a PostgreSQL table and a Redis prefix of its own."""

    servers: Servers
    orders: str = ""
    prefix: str = ""

    def __post_init__(self) -> None:
        self.orders = f"orders{next(self.servers.names)}"
        self.prefix = unique("x")

    def held(self) -> dict[Database, Held]:
        return {
            "postgres": held_postgres(self.servers, self.orders),
            "redis": held_redis(self.servers, self.prefix, "stock"),
        }


# -- the saga -----------------------------------------------------------------------------------


def wrap(value: Json) -> Json:
    return {"was": value}


def build(
    case: Case,
    stores: dict[Database, Any],
    payments: Payments,
    meanwhile_step: Saga[object],
) -> Saga[object]:
    def ship() -> None:
        raise RuntimeError("the warehouse is closed")

    def charging(payment: str, amount: int, *, declines: bool = False) -> Saga[str]:
        def charge() -> str:
            return payments.charge(payment, amount, declines=declines)

        return step(charge, payments.refund, name=payment)

    def body(tx: Transaction) -> Saga[object]:
        steps: list[Saga[object]] = []
        charges = 0
        for op in case.ops:
            if isinstance(op, Charge):
                charges += 1
                steps.append(charging(f"p{charges}", op.amount))
                continue
            store = stores[op.database]
            if op.delete:
                steps.append(tx.delete(store, op.key))
            elif op.update:
                steps.append(tx.update(store, op.key, wrap))
            else:
                steps.append(tx.save(store, op.key, op.value))
        steps.append(meanwhile_step)
        if case.failure == "declined":
            steps.append(charging("last", 1, declines=True))
        else:
            steps.append(step(ship, name="ship"))
        return sequence(steps).map(lambda _: None)

    return transaction(body, name="order")


def open_sync(place: Place) -> tuple[dict[Database, Any], dict[Database, Any]]:
    """The saga's stores, and the stores of someone else writing meanwhile."""
    servers = place.servers

    def pair() -> dict[Database, Any]:
        return {
            "postgres": PostgresStore[str, Json](servers.pool, place.orders, schema=servers.schema),
            "redis": RedisStore[str, Json](servers.redis_url, "stock", prefix=place.prefix),
        }

    return pair(), pair()


def fill(case: Case, stores: dict[Database, Any]) -> None:
    stores["postgres"].create_tables()
    for database in DATABASES:
        for key, value in case.initial[database]:
            stores[database].put(key, value)
        for key in case.deleted[database]:
            stores[database].delete(key)


@dataclass
class Run:
    """What a run did: its outcome, what the databases held before it and right after the
    write made meanwhile (if any)."""

    outcome: Outcome[object]
    before: dict[Database, Held]
    written: dict[Database, Held]


def run_case(case: Case, place: Place, payments: Payments) -> Run:
    """Fill the stores, then run the saga as the case says."""
    saga_stores, other = open_sync(place)
    fill(case, saga_stores)
    before = place.held()
    written: dict[Database, Held] = {}
    meanwhile = case.meanwhile

    def write_meanwhile() -> None:
        if meanwhile is not None:
            store = other[meanwhile.database]
            if meanwhile.delete:
                store.delete(meanwhile.key)
            else:
                store.put(meanwhile.key, meanwhile.value)
        written.update(place.held())

    async def write_meanwhile_async(others: dict[Database, Any]) -> None:
        if meanwhile is not None:
            store = others[meanwhile.database]
            if meanwhile.delete:
                await store.delete(meanwhile.key)
            else:
                await store.put(meanwhile.key, meanwhile.value)
        written.update(place.held())

    async def run_async() -> Outcome[object]:
        servers = place.servers
        dsn, schema = servers.postgres.dsn, servers.schema
        async with (
            AsyncPostgresStore[str, Json](dsn, place.orders, schema=schema) as orders,
            AsyncRedisStore[str, Json](servers.redis_url, "stock", prefix=place.prefix) as stock,
            AsyncPostgresStore[str, Json](dsn, place.orders, schema=schema) as other_orders,
            AsyncRedisStore[str, Json](servers.redis_url, "stock", prefix=place.prefix) as other,
        ):
            others: dict[Database, Any] = {"postgres": other_orders, "redis": other}
            meanwhile_step = step(partial(write_meanwhile_async, others), name="meanwhile")
            saga = build(case, {"postgres": orders, "redis": stock}, payments, meanwhile_step)
            return await saga.run(AsyncInterpreter())

    try:
        if case.runner == "sync":
            saga = build(case, saga_stores, payments, step(write_meanwhile, name="meanwhile"))
            outcome = saga.run(SyncInterpreter())
        else:
            outcome = anyio.run(run_async, backend="asyncio")
    finally:
        for store in (*saga_stores.values(), *other.values()):
            store.close()
    return Run(outcome, before, written)


# -- the checks ---------------------------------------------------------------------------------


def expected_conflicts(case: Case, before: dict[Database, Held]) -> list[tuple[Database, str]]:
    """The saga writes whose undo must report a conflict, in undo order: every write of the
    key written meanwhile that changed it, but where neither it nor the meanwhile write left a
    value (no value either way: nothing to undo)."""
    meanwhile = case.meanwhile
    if meanwhile is None:
        return []
    state: dict[Database, dict[str, bool | None]] = {
        database: {key: data is not None for key, (data, _) in before[database].items()}
        for database in DATABASES
    }  # key -> holds a value (True), a deletion (False); missing: never held one
    changes: list[tuple[Database, str, bool]] = []  # writes that changed a key, and whether
    # the key held a value before them
    for op in case.ops:
        if not isinstance(op, Write):
            continue
        holds = state[op.database].get(op.key)
        if op.delete:
            if holds:
                changes.append((op.database, op.key, True))
                state[op.database][op.key] = False
        else:
            changes.append((op.database, op.key, bool(holds)))
            state[op.database][op.key] = True
    holds_meanwhile = state[meanwhile.database].get(meanwhile.key)
    if meanwhile.delete and not holds_meanwhile:
        return []  # a delete of nothing is no write
    conflicts = []
    for database, key, had_value in reversed(changes):
        if (database, key) == (meanwhile.database, meanwhile.key) and (
            not meanwhile.delete or had_value
        ):
            conflicts.append((database, key))
    return conflicts


def check(case: Case, run: Run, place: Place, payments: Payments) -> None:
    after = place.held()
    before, written, outcome = run.before, run.written, run.outcome
    conflicts = expected_conflicts(case, before)
    event(f"{case.runner}: {type(outcome).__name__}, {len(conflicts)} conflict(s)")
    if case.meanwhile is not None:
        event(f"written meanwhile: {case.meanwhile.database}")
    for database in DATABASES:
        if any(isinstance(op, Write) and op.database == database for op in case.ops):
            event(f"writes {database}")
    meanwhile = case.meanwhile
    spared = None if meanwhile is None else (meanwhile.database, meanwhile.key)
    for database in DATABASES:
        kept = {key: item for key, item in after[database].items() if (database, key) != spared}
        old = {key: item for key, item in before[database].items() if (database, key) != spared}
        assert kept == old, f"{database} was not restored: {old} became {kept}"
    if spared is not None:
        database, key = spared
        assert after[database].get(key) == written[database].get(key), (
            f"{database}, key {key!r}: the write made meanwhile left "
            f"{written[database].get(key)}, the undo left {after[database].get(key)}"
        )
    # Every charge was refunded, newest first.
    charges = [payment for call, payment in payments.calls if call == "charge"]
    refunds = [payment for call, payment in payments.calls if call == "refund"]
    assert refunds == [payment for payment in charges[::-1] if payment != "last"], payments.calls
    assert payments.charged == {}
    if not conflicts:
        assert isinstance(outcome, Failure), outcome
        return
    assert isinstance(outcome, PartialFailure), outcome
    found: list[tuple[Database, str]] = []
    for failure in outcome.failed_compensations:
        error = failure.error
        assert isinstance(error, VersionConflictError), failure
        assert str(error).endswith(("their value was kept", "their deletion was kept")), error
        found.append(("postgres" if error.store == place.orders else "redis", str(error.key)))
    assert found == conflicts, (found, conflicts)


SETTINGS = settings(max_examples=40)


@SETTINGS
@given(case=cases(concurrent=False))
def test_a_failed_transaction_over_both_databases_restores_both_exactly(case: Case) -> None:
    place, payments = Place(SERVERS[-1]), Payments()
    check(case, run_case(case, place, payments), place, payments)


@SETTINGS
@given(case=cases(concurrent=True))
def test_a_change_made_meanwhile_in_either_database_survives_and_is_reported(case: Case) -> None:
    place, payments = Place(SERVERS[-1]), Payments()
    check(case, run_case(case, place, payments), place, payments)
