"""The store steps (`save`, `delete`, `update`, `read`), `transaction`, and what every
interpreter and a durable run make of them: compensations generated from receipts, conflicts
reported and never overwritten, unavailable stores retried, writes applied once across crashes.

The `orders` and `stock` fixtures are stores of each kind in turn: `MemoryStore`, `SqliteStore`,
`PostgresStore` and `RedisStore` (tests/store_backends.py).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.lowlevel
import pytest
from store_backends import KINDS, AnyStore, Backend, backend

from fsaga import (
    Event,
    Failure,
    PartialFailure,
    Retry,
    Saga,
    StepCompleted,
    Success,
    current_context,
    par,
    step,
)
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.events import CompensationRetrying, StepRetrying
from fsaga.interpreter import AsyncInterpreter, SyncInterpreter
from fsaga.journal import CodecError, Entry, JournalError, JsonCodec, MemoryJournal, SqliteJournal
from fsaga.stores import (
    ABSENT,
    STORE_RETRY,
    Change,
    Expected,
    MemoryStore,
    MissingKeyError,
    SqliteStore,
    Store,
    StoreClosedError,
    StoreUnavailableError,
    Transaction,
    VersionConflictError,
    Versioned,
    delete,
    read,
    save,
    transaction,
    update,
)
from fsaga.testing import (
    AsyncFaultInjectingInterpreter,
    FaultInjectingInterpreter,
    FaultPlan,
    InjectedFault,
    Raise,
    RecordingInterpreter,
    Return,
    ScriptedInterpreter,
)

CODEC = JsonCodec()


class Declined(Exception):
    pass


def declined() -> None:
    raise Declined("card declined")


def fail_after(saga: Saga[object]) -> Saga[object]:
    """`saga`, then a step that fails: what `saga` wrote is compensated."""
    return saga.then(step(declined, name="charge"))


def undone(outcome: object) -> tuple[str, ...]:
    """What a `Failure` (and only a `Failure`: no compensation failed) compensated."""
    assert isinstance(outcome, Failure), outcome
    return outcome.compensated


def no_sleep() -> SyncInterpreter:
    return SyncInterpreter(sleep=lambda _: None)


def state(value: object, version: int) -> dict[str, object]:
    return {"value": value, "version": version}


class Flaky:
    """A `Store` over a `MemoryStore` whose calls fail with `StoreUnavailableError` the number of
    times `failures` says per method, then work; `calls` lists each call and its write id."""

    def __init__(self, inner: MemoryStore[str, Any], **failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls: list[tuple[str, str | None]] = []

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def closed(self) -> bool:
        return self.inner.closed

    def check_key(self, key: object, /) -> None:
        self.inner.check_key(key)

    def _call(self, method: str, write_id: str | None) -> None:
        self.calls.append((method, write_id))
        if self.failures.get(method, 0) > 0:
            self.failures[method] -= 1
            raise StoreUnavailableError(self.name, f"store {self.name!r} is busy")

    def get(self, key: str, /) -> Versioned[Any] | None:
        self._call("get", None)
        return self.inner.get(key)

    def put(
        self, key: str, value: Any, /, *, expected: Expected = None, write_id: str | None = None
    ) -> Change[Any]:
        self._call("put", write_id)
        return self.inner.put(key, value, expected=expected, write_id=write_id)

    def delete(
        self, key: str, /, *, expected: Expected = None, write_id: str | None = None
    ) -> Change[Any]:
        self._call("delete", write_id)
        return self.inner.delete(key, expected=expected, write_id=write_id)

    def update(
        self, key: str, function: Callable[[Any], Any], /, *, write_id: str | None = None
    ) -> Change[Any]:
        self._call("update", write_id)
        return self.inner.update(key, function, write_id=write_id)

    def undo(self, key: str, change: Change[Any] | None, /, *, write_id: str | None = None) -> None:
        self._call("undo", write_id)
        self.inner.undo(key, change, write_id=write_id)


def _is_a_store(store: Store[str, Any]) -> None:
    """mypy checks here that `Flaky` implements the protocol."""


_is_a_store(Flaky(MemoryStore("x")))


@pytest.fixture(params=KINDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with backend(request.param, request, tmp_path) as opened:
        yield opened


@pytest.fixture
def orders(stores: Backend) -> AnyStore:
    return stores.open("orders")


@pytest.fixture
def stock(stores: Backend) -> AnyStore:
    return stores.open("stock", {"sku-1": 10})


# -- each step under SyncInterpreter ----------------------------------------------------------


def test_save_returns_the_value_written_and_its_version(orders: AnyStore) -> None:
    outcome = save(orders, "o-1", "placed").run(SyncInterpreter())

    assert outcome == Success(Versioned("placed", 1))
    assert orders.get("o-1") == Versioned("placed", 1)


def test_a_compensated_save_restores_the_value_and_version_it_replaced(
    orders: AnyStore,
) -> None:
    orders.put("o-1", "placed")

    outcome = fail_after(save(orders, "o-1", "paid")).run(SyncInterpreter())

    assert undone(outcome) == ("save:orders:o-1",)
    assert orders.get("o-1") == Versioned("placed", 1)


def test_a_compensated_save_deletes_the_key_it_created(orders: AnyStore) -> None:
    fail_after(save(orders, "o-1", "placed")).run(SyncInterpreter())

    assert orders.snapshot() == {}


def test_delete_returns_what_it_deleted_and_its_compensation_puts_it_back(
    orders: AnyStore,
) -> None:
    orders.put("o-1", "placed")

    assert delete(orders, "o-1").run(SyncInterpreter()) == Success(Versioned("placed", 1))
    orders.put("o-1", "placed")  # version 3: the delete took version 2
    outcome = fail_after(delete(orders, "o-1")).run(SyncInterpreter())

    assert isinstance(outcome, Failure)
    assert orders.get("o-1") == Versioned("placed", 3)


def test_delete_of_nothing_returns_none_and_its_compensation_changes_nothing(
    orders: AnyStore,
) -> None:
    assert delete(orders, "o-1").run(SyncInterpreter()) == Success(None)
    outcome = fail_after(delete(orders, "o-1")).run(SyncInterpreter())

    assert undone(outcome) == ("delete:orders:o-1",)
    assert orders.snapshot() == {}


def test_update_returns_the_new_value_and_its_compensation_restores_the_old(
    stock: AnyStore,
) -> None:
    assert update(stock, "sku-1", lambda n: n - 1).run(SyncInterpreter()) == Success(
        Versioned(9, 2)
    )

    fail_after(update(stock, "sku-1", lambda n: n - 1)).run(SyncInterpreter())

    assert stock.get("sku-1") == Versioned(9, 2)


def test_update_of_a_missing_key_fails_with_missing_key_error_and_compensates_the_rest(
    orders: AnyStore, stock: AnyStore
) -> None:
    saga = save(orders, "o-1", "placed").then(update(stock, "sku-9", lambda n: n - 1))

    outcome = saga.run(SyncInterpreter())

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, MissingKeyError)
    assert outcome.compensated == ("save:orders:o-1",)
    assert orders.snapshot() == {}


def test_read_returns_the_value_or_none_and_has_nothing_to_compensate(
    stock: AnyStore,
) -> None:
    saga = read(stock, "sku-1").zip(read(stock, "sku-9"))

    assert saga.run(SyncInterpreter()) == Success((Versioned(10, 1), None))
    outcome = fail_after(read(stock, "sku-1")).run(SyncInterpreter())
    assert undone(outcome) == ()


def test_a_saga_can_write_conditionally_on_what_it_read(stock: AnyStore) -> None:
    def take_one(current: Versioned[int] | None) -> Saga[Versioned[int]]:
        assert current is not None
        return save(stock, "sku-1", current.value - 1, expected=current.version)

    assert read(stock, "sku-1").bind(take_one).run(SyncInterpreter()) == Success(Versioned(9, 2))


def test_the_step_result_and_the_compensations_argument_are_json_receipts(
    orders: AnyStore,
) -> None:
    orders.put("o-1", "placed")
    orders.put("o-2", "placed")
    recording = RecordingInterpreter()
    saga = save(orders, "o-1", "paid").then(delete(orders, "o-2")).then(save(orders, "o-3", 1))

    fail_after(saga).run(recording)

    receipts = {
        "save:orders:o-1": {"before": state("placed", 1), "after": state("paid", 3)},
        "delete:orders:o-2": {"before": state("placed", 2), "after": {"deleted": 4}},
        "save:orders:o-3": {"before": None, "after": state(1, 5)},
    }
    actions = {e.path: e.result for e in recording.effects if e.kind == "action"}
    undone = {e.path: e.argument for e in recording.effects if e.kind == "compensation"}
    assert {path: actions[path] for path in receipts} == receipts
    assert undone == receipts
    assert CODEC.decode(CODEC.encode(receipts)) == receipts  # JSON-shaped


@pytest.mark.parametrize(
    ("build", "path"),
    [
        (lambda store: save(store, "o-1", "x"), "save:orders:o-1"),
        (lambda store: delete(store, "o-1"), "delete:orders:o-1"),
        (lambda store: update(store, "o-1", str.upper), "update:orders:o-1"),
        (lambda store: read(store, "o-1"), "read:orders:o-1"),
        (lambda store: save(store, "order 1", "x"), "save:orders"),
        (lambda store: save(store, "o/1", "x"), "save:orders"),
        (lambda store: save(store, "k" * 41, "x"), "save:orders"),
        (lambda store: save(store, "k" * 40, "x"), "save:orders:" + "k" * 40),
        (lambda store: save(store, "me@x.io:a_b-c", "x"), "save:orders:me@x.io:a_b-c"),
        (lambda store: save(store, 42, "x"), "save:orders:42"),
        (lambda store: save(store, ("o", 1), "x"), "save:orders"),
        (lambda store: save(store, "o-1", "x", name="record"), "record"),
        (lambda store: read(store, "o-1", name="look"), "look"),
    ],
)
def test_step_names_default_to_verb_store_and_key(
    build: Callable[[MemoryStore[Any, Any]], Saga[object]], path: str
) -> None:
    store = MemoryStore[Any, Any]("orders", {"o-1": "x"})
    recording = RecordingInterpreter()

    build(store).run(recording)

    assert recording.paths() == [path]


def test_two_writes_of_one_key_in_one_scope_get_numbered_paths_and_both_apply(
    orders: AnyStore,
) -> None:
    recording = RecordingInterpreter()
    saga = save(orders, "o-1", "placed").then(save(orders, "o-1", "paid"))

    assert saga.run(recording, saga_id="s-1") == Success(Versioned("paid", 2))
    assert recording.paths() == ["save:orders:o-1", "save:orders:o-1#2"]

    fail_after(saga).run(recording, saga_id="s-2")
    assert orders.get("o-1") == Versioned("paid", 2)


def test_each_write_carries_its_steps_idempotency_key_as_write_id() -> None:
    store = Flaky(MemoryStore("orders", {"o-1": "placed"}))
    saga = transaction(
        lambda tx: tx.save(store, "o-1", "paid").then(tx.delete(store, "o-2")), name="pay"
    )

    fail_after(saga).run(no_sleep(), saga_id="s-1")

    assert store.calls == [
        ("put", "s-1/pay/save:orders:o-1"),
        ("delete", "s-1/pay/delete:orders:o-2"),
        ("undo", "s-1/pay/delete:orders:o-2"),
        ("undo", "s-1/pay/save:orders:o-1"),
    ]


def test_save_expecting_absent_on_an_existing_key_fails_and_compensates_the_earlier_writes(
    orders: AnyStore, stock: AnyStore
) -> None:
    orders.put("o-1", "someone else's")
    saga = update(stock, "sku-1", lambda n: n - 1).then(
        save(orders, "o-1", "mine", expected=ABSENT)
    )
    events: list[Event] = []

    outcome = saga.run(SyncInterpreter(listeners=[events.append]))

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, VersionConflictError)
    assert (outcome.error.key, outcome.error.expected, outcome.error.found) == ("o-1", ABSENT, 1)
    assert outcome.compensated == ("update:stock:sku-1",)
    assert not any(isinstance(event, StepRetrying) for event in events)  # no retry of a conflict
    assert orders.get("o-1") == Versioned("someone else's", 1)
    assert stock.get("sku-1") == Versioned(10, 1)


# -- conflicts: someone else wrote after the saga -----------------------------------------------


def test_a_value_changed_between_the_write_and_the_undo_is_kept_and_reported(
    orders: AnyStore, stock: AnyStore
) -> None:
    saga = (
        save(orders, "o-1", "placed")
        .then(update(stock, "sku-1", lambda n: n - 1))
        .then(step(lambda: orders.put("o-1", "edited by a clerk"), name="meanwhile"))
        .then(step(declined, name="charge"))
    )

    outcome = saga.run(SyncInterpreter())

    assert isinstance(outcome, PartialFailure)
    assert isinstance(outcome.error, Declined)
    assert outcome.compensated == ("update:stock:sku-1",)
    [failed] = outcome.failed_compensations
    assert (failed.path, failed.attempts) == ("save:orders:o-1", 1)  # a conflict is not retried
    assert isinstance(failed.error, VersionConflictError)
    assert (failed.error.key, failed.error.expected, failed.error.found) == ("o-1", 1, 2)
    assert orders.get("o-1") == Versioned("edited by a clerk", 2)
    assert stock.get("sku-1") == Versioned(10, 1)


def test_a_value_deleted_by_an_event_listener_is_a_conflict_for_the_undo_of_an_update(
    orders: AnyStore, stock: AnyStore
) -> None:
    def meddle(event: Event) -> None:
        if isinstance(event, StepCompleted) and event.path == "update:stock:sku-1":
            stock.put("sku-1", 100)  # someone restocked meanwhile

    saga = fail_after(update(stock, "sku-1", lambda n: n - 1).then(save(orders, "o-1", "x")))

    outcome = saga.run(SyncInterpreter(listeners=[meddle]))

    assert isinstance(outcome, PartialFailure)
    assert outcome.compensated == ("save:orders:o-1",)
    [failed] = outcome.failed_compensations
    assert isinstance(failed.error, VersionConflictError)
    assert (failed.error.key, failed.error.expected, failed.error.found) == ("sku-1", 2, 3)
    assert stock.get("sku-1") == Versioned(100, 3)
    assert orders.snapshot() == {}


def test_another_connection_writing_a_sqlite_key_is_a_conflict_for_the_undo(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shop.db"
    with (
        SqliteStore[str, Any](path, "orders") as orders,
        SqliteStore[str, int](path, "stock") as stock,
        SqliteStore[str, Any](path, "orders") as elsewhere,
    ):
        stock.put("sku-1", 10)
        saga = (
            update(stock, "sku-1", lambda n: n - 1)
            .then(save(orders, "o-1", {"status": "placed"}))
            .then(step(lambda: elsewhere.put("o-1", {"status": "held"}), name="meanwhile"))
            .then(step(declined, name="charge"))
        )

        outcome = saga.run(SyncInterpreter())

        assert isinstance(outcome, PartialFailure)
        [failed] = outcome.failed_compensations
        assert isinstance(failed.error, VersionConflictError)
        assert (failed.error.store, failed.error.key) == ("orders", "o-1")
        assert (failed.error.expected, failed.error.found) == (1, 2)
        assert outcome.compensated == ("update:stock:sku-1",)
        assert orders.get("o-1") == Versioned({"status": "held"}, 2)
        assert stock.get("sku-1") == Versioned(10, 1)


def test_undoing_a_delete_that_found_nothing_never_reports_a_conflict(
    orders: AnyStore,
) -> None:
    # The delete wrote nothing, so there is nothing to undo and nothing to report: the new
    # order stays and the saga failed cleanly.
    saga = delete(orders, "o-1").then(
        step(lambda: orders.put("o-1", "created by a clerk"), name="meanwhile")
    )

    outcome = fail_after(saga).run(SyncInterpreter())

    assert undone(outcome) == ("delete:orders:o-1",)
    assert orders.get("o-1") == Versioned("created by a clerk", 1)


# -- an unavailable store is retried --------------------------------------------------------------


def test_an_unavailable_store_is_retried_by_the_compensation_until_it_answers() -> None:
    store = Flaky(MemoryStore("orders", {"o-1": "placed"}), undo=2)
    recording = RecordingInterpreter()

    outcome = fail_after(save(store, "o-1", "paid")).run(recording)

    assert undone(outcome) == ("save:orders:o-1",)
    retries = [e for e in recording.events if isinstance(e, CompensationRetrying)]
    assert [(e.attempt, type(e.error)) for e in retries] == [
        (1, StoreUnavailableError),
        (2, StoreUnavailableError),
    ]
    assert len(recording.sleeps) == 2  # recorded, never slept
    assert store.inner.get("o-1") == Versioned("placed", 1)


def test_a_store_unavailable_for_every_attempt_fails_the_compensation_after_three() -> None:
    store = Flaky(MemoryStore("orders", {"o-1": "placed"}), undo=10)

    outcome = fail_after(save(store, "o-1", "paid")).run(no_sleep())

    assert isinstance(outcome, PartialFailure)
    [failed] = outcome.failed_compensations
    assert failed.attempts == STORE_RETRY.attempts == 3
    assert isinstance(failed.error, StoreUnavailableError)
    assert store.inner.get("o-1") == Versioned("paid", 2)


def test_an_unavailable_store_is_retried_forward_with_the_same_write_id() -> None:
    store = Flaky(MemoryStore("orders"), put=2)
    recording = RecordingInterpreter()

    outcome = save(store, "o-1", "placed").run(recording, saga_id="s-1")

    assert outcome == Success(Versioned("placed", 1))
    assert store.calls == [("put", "s-1/save:orders:o-1")] * 3
    assert [e.attempt for e in recording.events if isinstance(e, StepRetrying)] == [1, 2]


def test_a_transactions_policies_reach_every_step() -> None:
    store = Flaky(MemoryStore("orders", {"o-1": "placed"}), put=4, undo=1)
    saga = transaction(
        lambda tx: tx.save(store, "o-1", "paid"),
        retry=Retry(5, delay=0.0),
        compensation_retry=None,
    )

    outcome = fail_after(saga).run(no_sleep())

    assert isinstance(outcome, PartialFailure)
    [failed] = outcome.failed_compensations
    assert failed.attempts == 1
    assert [method for method, _ in store.calls] == ["put"] * 5 + ["undo"]


# -- bad input is refused when the saga is built -----------------------------------------------

BUILDERS: dict[str, Callable[[Any, object], object]] = {
    "save": lambda store, key: save(store, key, "x"),
    "delete": lambda store, key: delete(store, key),
    "update": lambda store, key: update(store, key, str.upper),
    "read": lambda store, key: read(store, key),
    "tx.save": lambda store, key: Transaction().save(store, key, "x"),
}


@pytest.mark.parametrize("verb", sorted(BUILDERS))
def test_a_key_the_store_cannot_hold_is_a_type_error_naming_the_step(
    verb: str, tmp_path: Path
) -> None:
    with (
        SqliteStore[str, str](tmp_path / "s.db", "orders") as store,
        pytest.raises(TypeError, match="holds str keys, got int 7") as caught,
    ):
        BUILDERS[verb](store, 7)

    assert str(caught.value).startswith(f"step '{verb.removeprefix('tx.')}:orders:7': ")


@pytest.mark.parametrize("verb", sorted(BUILDERS))
def test_a_closed_store_is_refused_naming_the_step(verb: str) -> None:
    store = MemoryStore[str, str]("orders")
    store.close()

    with pytest.raises(StoreClosedError) as caught:
        BUILDERS[verb](store, "o-1")

    assert str(caught.value) == (
        f"step '{verb.removeprefix('tx.')}:orders:o-1': store 'orders' is closed"
    )


@pytest.mark.parametrize("verb", sorted(BUILDERS))
@pytest.mark.parametrize("thing", [{"o-1": "x"}, "orders", None])
def test_something_that_is_not_a_store_is_refused(verb: str, thing: object) -> None:
    name = verb.removeprefix("tx.")
    with pytest.raises(TypeError, match=rf"^{name}\(\): expected a fsaga.stores.Store, got"):
        BUILDERS[verb](thing, "o-1")


def test_an_update_function_that_is_not_callable_is_refused_naming_the_step(
    stock: AnyStore,
) -> None:
    with pytest.raises(TypeError, match=r"^step 'update:stock:sku-1': function must be callable"):
        update(stock, "sku-1", 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^step 'take': function must be callable"):
        Transaction().update(stock, "sku-1", None, name="take")  # type: ignore[arg-type]


def test_a_transaction_needs_a_callable_build() -> None:
    with pytest.raises(TypeError, match=r"^transaction\(\): build must be callable, got 'x'"):
        transaction("x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "where"), [(None, "transaction()"), ("place", "transaction 'place'")]
)
def test_a_transaction_whose_build_returns_no_saga_is_refused(name: str | None, where: str) -> None:
    with pytest.raises(TypeError, match=rf"^{re.escape(where)}: build must return a saga, got 42"):
        transaction(lambda tx: 42, name=name)  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize("option", ["retry", "compensation_retry"])
def test_a_transaction_refuses_a_policy_that_is_not_a_retry(option: str) -> None:
    with pytest.raises(TypeError, match=rf"^transaction\(\): {option} must be a Retry or None"):
        transaction(lambda tx: step(lambda: 1), **{option: 3})  # type: ignore[arg-type]


# -- transaction ------------------------------------------------------------------------------


def test_a_transaction_builds_once_and_writes_nothing_until_it_runs(
    orders: AnyStore, stock: AnyStore
) -> None:
    built: list[Transaction] = []

    def build(tx: Transaction) -> Saga[Versioned[str]]:
        built.append(tx)
        return tx.update(stock, "sku-1", lambda n: n - 1).then(tx.save(orders, "o-1", "placed"))

    saga = transaction(build)
    assert orders.snapshot() == {}
    assert saga.run(SyncInterpreter()) == Success(Versioned("placed", 1))

    assert len(built) == 1
    assert built[0] == Transaction(STORE_RETRY, STORE_RETRY)
    assert stock.get("sku-1") == Versioned(9, 2)


def test_a_named_transaction_is_one_unit_and_undone_in_reverse_order(
    orders: AnyStore, stock: AnyStore
) -> None:
    recording = RecordingInterpreter()
    place = transaction(
        lambda tx: (
            tx.update(stock, "sku-1", lambda n: n - 1)
            .then(tx.save(orders, "o-1", "placed"))
            .then(tx.read(orders, "o-1"))
        ),
        name="place",
    )

    outcome = fail_after(place).run(recording)

    assert recording.paths("action") == [
        "place/update:stock:sku-1",
        "place/save:orders:o-1",
        "place/read:orders:o-1",
        "charge",
    ]
    assert undone(outcome) == ("place/save:orders:o-1", "place/update:stock:sku-1")
    assert (orders.snapshot(), stock.get("sku-1")) == ({}, Versioned(10, 1))


# -- store writes and other effects in one saga -----------------------------------------------


class Payments:
    """An external payment service that deduplicates charges on the idempotency key."""

    def __init__(self, *, decline: bool = False) -> None:
        self.decline = decline
        self.charges: dict[str, int] = {}
        self.refunds: list[str] = []
        self.log: list[str] = []

    def charge(self, amount: int) -> str:
        if self.decline:
            raise Declined("card declined")
        key = current_context().idempotency_key
        self.charges.setdefault(key, amount)
        self.log.append("charge")
        return key

    def refund(self, charge: str) -> None:
        self.refunds.append(charge)
        self.log.append("refund")

    def step(self, amount: int) -> Saga[str]:
        return step(lambda: self.charge(amount), self.refund, name="charge", idempotent=True)


def test_a_failure_after_the_payment_undoes_writes_and_payment_in_reverse_order(
    orders: AnyStore, stock: AnyStore
) -> None:
    payments = Payments()
    recording = RecordingInterpreter()
    saga = (
        save(orders, "o-1", "placed")
        .then(payments.step(12))
        .then(update(stock, "sku-1", lambda n: n - 1))
        .then(step(lambda: 1 / 0, name="ship"))
    )

    outcome = saga.run(recording, saga_id="s-1")

    assert undone(outcome) == ("update:stock:sku-1", "charge", "save:orders:o-1")
    assert recording.paths("compensation") == ["update:stock:sku-1", "charge", "save:orders:o-1"]
    assert payments.refunds == ["s-1/charge"]
    assert (orders.snapshot(), stock.get("sku-1")) == ({}, Versioned(10, 1))


def test_a_declined_payment_undoes_the_write_before_it_and_skips_the_one_after(
    orders: AnyStore, stock: AnyStore
) -> None:
    payments = Payments(decline=True)
    saga = (
        save(orders, "o-1", "placed")
        .then(payments.step(12))
        .then(update(stock, "sku-1", lambda n: n - 1))
    )

    outcome = saga.run(SyncInterpreter())

    assert undone(outcome) == ("save:orders:o-1",)
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, Declined)
    assert (orders.snapshot(), stock.get("sku-1")) == ({}, Versioned(10, 1))


# -- every interpreter --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_async_interpreter_runs_and_undoes_store_steps(
    orders: AnyStore, stock: AnyStore
) -> None:
    async def check_out() -> None:
        await anyio.lowlevel.checkpoint()
        raise Declined("card declined")

    writes = update(stock, "sku-1", lambda n: n - 1).then(save(orders, "o-1", "placed"))
    interpreter = AsyncInterpreter()

    assert await interpreter.run_saga(writes) == Success(Versioned("placed", 1))
    outcome = await interpreter.run_saga(
        update(stock, "sku-1", lambda n: n - 1)
        .then(save(orders, "o-1", "paid"))
        .then(step(check_out, name="check_out"))
    )

    assert undone(outcome) == ("save:orders:o-1", "update:stock:sku-1")
    assert orders.get("o-1") == Versioned("placed", 1)
    assert stock.get("sku-1") == Versioned(9, 2)


@pytest.mark.anyio
async def test_par_of_two_transactions_writes_both_or_undoes_both(
    orders: AnyStore, stock: AnyStore
) -> None:
    reserve = transaction(lambda tx: tx.update(stock, "sku-1", lambda n: n - 1), name="reserve")
    record = transaction(lambda tx: tx.save(orders, "o-1", "placed"), name="record")
    failing = transaction(
        lambda tx: tx.save(orders, "o-2", "placed").then(step(declined, name="charge")),
        name="record",
    )

    assert await AsyncInterpreter().run_saga(par(reserve, record)) == Success(
        (Versioned(9, 2), Versioned("placed", 1))
    )
    outcome = await AsyncInterpreter().run_saga(par(reserve, failing))

    assert isinstance(outcome, Failure)
    assert set(outcome.compensated) == {"reserve/update:stock:sku-1", "record/save:orders:o-2"}
    assert stock.get("sku-1") == Versioned(9, 2)
    assert orders.snapshot() == {"o-1": Versioned("placed", 1)}


def test_par_of_two_transactions_under_the_sync_interpreter(
    orders: AnyStore, stock: AnyStore
) -> None:
    reserve = transaction(lambda tx: tx.update(stock, "sku-1", lambda n: n - 1), name="reserve")
    record = transaction(lambda tx: tx.save(orders, "o-1", "placed"), name="record")

    outcome = fail_after(par(reserve, record)).run(SyncInterpreter())

    assert undone(outcome) == ("record/save:orders:o-1", "reserve/update:stock:sku-1")
    assert (orders.snapshot(), stock.get("sku-1")) == ({}, Versioned(10, 1))


def test_a_scripted_run_may_answer_a_store_step_with_a_change(
    orders: AnyStore,
) -> None:
    written = Change(Versioned("placed", 4), Versioned("paid", 5))
    scripted = ScriptedInterpreter(
        {"save:orders:o-1": Return(written), "charge": Raise(Declined("no"))}
    )
    result: list[Versioned[Any]] = []

    def keep(value: Versioned[Any]) -> Versioned[Any]:
        result.append(value)
        return value

    saga = save(orders, "o-1", "paid").map(keep)

    outcome = fail_after(saga).run(scripted)

    assert undone(outcome) == ("save:orders:o-1",)
    assert result == [Versioned("paid", 5)]
    [undo] = [e for e in scripted.effects if e.kind == "compensation"]
    assert undo.argument == written
    assert orders.snapshot() == {}  # nothing real ran


def test_a_generated_compensation_undoes_a_change_handed_to_it_as_such(
    orders: AnyStore,
) -> None:
    # A perform that answers the write with a `Change` it made itself: the real compensation
    # accepts the Change in place of a receipt.
    def perform(effect: Any) -> object:
        if effect.kind == "action" and effect.path == "save:orders:o-1":
            return orders.put("o-1", "placed")
        return effect.run()

    outcome = fail_after(save(orders, "o-1", "ignored")).run(RecordingInterpreter(perform=perform))

    assert undone(outcome) == ("save:orders:o-1",)
    assert orders.snapshot() == {}


def test_a_fault_injected_in_a_store_step_is_not_retried_and_undoes_the_earlier_writes(
    orders: AnyStore, stock: AnyStore
) -> None:
    faults = FaultInjectingInterpreter(FaultPlan(actions={"save:orders:o-1": 1}))

    outcome = update(stock, "sku-1", lambda n: n - 1).then(save(orders, "o-1", "x")).run(faults)

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, InjectedFault)
    assert outcome.compensated == ("update:stock:sku-1",)
    assert faults.paths("action") == ["update:stock:sku-1", "save:orders:o-1"]
    assert (orders.snapshot(), stock.get("sku-1")) == ({}, Versioned(10, 1))


def test_a_fault_injected_in_a_compensation_leaves_the_write_and_is_reported(
    orders: AnyStore, stock: AnyStore
) -> None:
    faults = FaultInjectingInterpreter(FaultPlan(compensations={"update:stock:sku-1": 1}))
    saga = fail_after(update(stock, "sku-1", lambda n: n - 1).then(save(orders, "o-1", "x")))

    outcome = saga.run(faults)

    assert isinstance(outcome, PartialFailure)
    assert outcome.compensated == ("save:orders:o-1",)
    [failed] = outcome.failed_compensations
    assert (failed.path, failed.attempts) == ("update:stock:sku-1", 1)
    assert isinstance(failed.error, InjectedFault)
    assert stock.get("sku-1") == Versioned(9, 2)


def test_a_compensation_retried_after_an_injected_fault_restores_the_value(
    stock: AnyStore,
) -> None:
    faults = FaultInjectingInterpreter(FaultPlan(compensations={"update:stock:sku-1": 1}))
    saga = transaction(
        lambda tx: tx.update(stock, "sku-1", lambda n: n - 1),
        compensation_retry=Retry(2, delay=0.0, retry_on=InjectedFault),
    )

    outcome = fail_after(saga).run(faults)

    assert undone(outcome) == ("update:stock:sku-1",)
    assert faults.paths("compensation") == ["update:stock:sku-1"] * 2
    assert stock.get("sku-1") == Versioned(10, 1)


@pytest.mark.anyio
async def test_the_async_fault_injecting_interpreter_undoes_store_writes(
    orders: AnyStore, stock: AnyStore
) -> None:
    faults = AsyncFaultInjectingInterpreter(FaultPlan(actions={"save:orders:o-1": 1}))

    outcome = await faults.run_saga(
        update(stock, "sku-1", lambda n: n - 1).then(save(orders, "o-1", "x"))
    )

    assert isinstance(outcome, Failure)
    assert (orders.snapshot(), stock.get("sku-1")) == ({}, Versioned(10, 1))


# -- durable runs -------------------------------------------------------------------------------


class Shop:
    """Two SqliteStores in one file, a payment service, and the durable `order` saga over them."""

    def __init__(self, path: Path, *, decline: bool = False) -> None:
        self.orders: SqliteStore[str, Any] = SqliteStore(path, "orders")
        self.stock: SqliteStore[str, int] = SqliteStore(path, "stock")
        if self.stock.get("sku-1") is None:
            self.stock.put("sku-1", 10)
        self.path = path
        self.payments = Payments(decline=decline)
        self.definitions = SagaDefinitions()
        self.definitions.saga("order")(self.order)

    def order(self, order_id: object) -> Saga[str]:
        assert isinstance(order_id, str)
        return transaction(
            lambda tx: (
                tx.save(self.orders, order_id, {"status": "placed"}, expected=ABSENT)
                .then(tx.update(self.stock, "sku-1", lambda n: n - 1))
                .then(self.payments.step(12))
                .then(tx.save(self.orders, order_id, {"status": "paid"}))
                .map(lambda _: order_id)
            )
        )

    def last_versions(self) -> dict[str, int]:
        connection = sqlite3.connect(self.path)
        try:
            rows = connection.execute("SELECT name, last_version FROM fsaga_stores").fetchall()
        finally:
            connection.close()
        return dict(rows)

    def close(self) -> None:
        self.orders.close()
        self.stock.close()


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    shop = Shop(tmp_path / "shop.db")
    yield shop
    shop.close()


@pytest.fixture
def declining_shop(tmp_path: Path) -> Iterator[Shop]:
    shop = Shop(tmp_path / "shop.db", decline=True)
    yield shop
    shop.close()


PAID = {"status": "paid"}
PLACED = {"status": "placed"}


def test_a_durable_run_writes_every_store_and_journals_the_receipts(shop: Shop) -> None:
    journal = MemoryJournal()

    outcome = DurableSagas(journal, shop.definitions).start("order", "o-1", saga_id="o-1")

    assert outcome == Success("o-1")
    assert shop.orders.get("o-1") == Versioned(PAID, 2)
    assert shop.stock.get("sku-1") == Versioned(9, 2)
    completed = {
        entry.path: CODEC.decode(entry.payload)
        for entry in journal.entries("o-1")
        if entry.kind == "completed" and entry.payload is not None
    }
    assert completed == {
        "save:orders:o-1": {"before": None, "after": state(PLACED, 1)},
        "update:stock:sku-1": {"before": state(10, 1), "after": state(9, 2)},
        "charge": "o-1/charge",
        "save:orders:o-1#2": {"before": state(PLACED, 1), "after": state(PAID, 2)},
    }


def test_a_durable_run_over_a_sqlite_journal_is_not_run_twice(shop: Shop, tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "journal.db") as journal:
        runs = DurableSagas(journal, shop.definitions)
        assert runs.start("order", "o-1", saga_id="o-1") == Success("o-1")
    with SqliteJournal(tmp_path / "journal.db") as journal:
        runs = DurableSagas(journal, shop.definitions)
        assert runs.start("order", "o-1", saga_id="o-1") == Success("o-1")

    assert shop.stock.get("sku-1") == Versioned(9, 2)
    assert shop.last_versions() == {"orders": 2, "stock": 2}


def test_a_failed_durable_run_undoes_its_writes(declining_shop: Shop, tmp_path: Path) -> None:
    shop = declining_shop
    with SqliteJournal(tmp_path / "journal.db") as journal:
        outcome = DurableSagas(journal, shop.definitions).start("order", "o-1", saga_id="o-1")
        kinds = [(entry.kind, entry.path) for entry in journal.entries("o-1")][-4:]

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("update:stock:sku-1", "save:orders:o-1")
    assert kinds == [
        ("compensation_intent", "update:stock:sku-1"),
        ("compensated", "update:stock:sku-1"),
        ("compensation_intent", "save:orders:o-1"),
        ("compensated", "save:orders:o-1"),
    ]
    assert shop.orders.get("o-1") is None
    assert shop.stock.get("sku-1") == Versioned(10, 1)


class CrashingJournal(MemoryJournal):
    """A `MemoryJournal` whose `crash_at`-th write (create, append or finish) fails, as if the
    process died just before it: what the run did since the previous write is not journaled."""

    def __init__(self, crash_at: int | None = None) -> None:
        super().__init__()
        self.crash_at = crash_at
        self.writes = 0

    def _write(self) -> None:
        self.writes += 1
        if self.writes == self.crash_at:
            raise JournalError("the process died")

    def create(self, *args: Any, **kwargs: Any) -> Any:
        self._write()
        return super().create(*args, **kwargs)

    def append(self, saga_id: str, entries: Any) -> None:
        self._write()
        super().append(saga_id, entries)

    def finish(self, *args: Any, **kwargs: Any) -> bool:
        self._write()
        return super().finish(*args, **kwargs)


def crash_and_recover(
    shop: Shop, crash_at: int, meanwhile: Callable[[MemoryJournal], None] | None = None
) -> object:
    """Run the order until the journal write `crash_at`, call `meanwhile` with the journal as
    the crash left it, then recover the order with a new runner."""
    journal = CrashingJournal(crash_at)
    with pytest.raises(JournalError, match="the process died"):
        DurableSagas(journal, shop.definitions).start("order", "o-1", saga_id="o-1")
    journal.crash_at = None
    if meanwhile is not None:
        meanwhile(journal)
    runs = DurableSagas(journal, shop.definitions)
    if journal.get("o-1") is None:  # died before its first write: nothing to recover
        return runs.start("order", "o-1", saga_id="o-1")
    return runs.recover()["o-1"]


def journal_writes(decline: bool, folder: Path) -> int:
    shop = Shop(folder / "count.db", decline=decline)
    journal = CrashingJournal()
    DurableSagas(journal, shop.definitions).start("order", "o-1", saga_id="o-1")
    shop.close()
    return journal.writes


def test_a_write_committed_but_not_journaled_is_not_applied_again_on_recovery(
    declining_shop: Shop,
) -> None:
    # Write 3 carries update's result and the charge's intent: the update committed, the
    # journal only holds its intent. Recovery runs it again with the same write id; the store
    # answers with the change it recorded, so the compensation restores 10, not 9.
    shop = declining_shop

    def check(journal: MemoryJournal) -> None:
        last = journal.entries("o-1")[-1]
        assert (last.kind, last.path) == ("intent", "update:stock:sku-1")
        assert shop.stock.get("sku-1") == Versioned(9, 2)  # committed before the crash

    outcome = crash_and_recover(shop, crash_at=3, meanwhile=check)

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("update:stock:sku-1", "save:orders:o-1")
    assert shop.stock.get("sku-1") == Versioned(10, 1)
    assert shop.orders.get("o-1") is None
    assert shop.last_versions() == {"orders": 1, "stock": 2}


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
def test_a_write_in_flight_at_the_crash_is_applied_exactly_once_on_recovery(
    shop: Shop, committed: bool
) -> None:
    # State surgery: the journal holds only the save's intent; the save did or did not commit
    # under its write id before the crash.
    if committed:
        shop.orders.put("o-1", PLACED, expected=ABSENT, write_id="o-1/save:orders:o-1")
    journal = MemoryJournal()
    journal.create(
        "o-1",
        "order",
        1,
        CODEC.encode("o-1"),
        entries=[Entry(1, "intent", "save:orders:o-1", 1)],
    )

    outcome = DurableSagas(journal, shop.definitions).recover()["o-1"]

    assert outcome == Success("o-1")  # no conflict with its own write (expected=ABSENT)
    assert shop.orders.get("o-1") == Versioned(PAID, 2)
    assert shop.last_versions() == {"orders": 2, "stock": 2}
    receipts = [e for e in journal.entries("o-1") if e.kind == "completed"]
    assert receipts[0].payload is not None
    assert CODEC.decode(receipts[0].payload) == {"before": None, "after": state(PLACED, 1)}


def test_a_compensation_journaled_but_not_run_before_the_crash_runs_on_recovery(
    tmp_path: Path,
) -> None:
    # State surgery: a crash at write 4 leaves the store written and the journal at the
    # charge's intent; the entries a full run wrote next (the charge failed, the update's undo
    # began) are appended by hand, as if the process died right after journaling that intent.
    full = Shop(tmp_path / "full.db", decline=True)
    full_journal = MemoryJournal()
    DurableSagas(full_journal, full.definitions).start("order", "o-1", saga_id="o-1")
    full.close()
    entries = full_journal.entries("o-1")
    cut = next(
        i
        for i, entry in enumerate(entries)
        if (entry.kind, entry.path) == ("compensation_intent", "update:stock:sku-1")
    )
    shop = Shop(tmp_path / "shop.db", decline=True)
    journal = CrashingJournal(crash_at=4)
    with pytest.raises(JournalError):
        DurableSagas(journal, shop.definitions).start("order", "o-1", saga_id="o-1")
    journal.crash_at = None
    done = len(journal.entries("o-1"))
    assert journal.entries("o-1") == entries[:done]
    journal.append("o-1", entries[done : cut + 1])
    assert shop.stock.get("sku-1") == Versioned(9, 2)

    outcome = DurableSagas(journal, shop.definitions).recover()["o-1"]

    assert undone(outcome) == ("update:stock:sku-1", "save:orders:o-1")
    assert shop.stock.get("sku-1") == Versioned(10, 1)
    assert shop.orders.get("o-1") is None
    shop.close()


def test_a_compensation_cut_off_after_its_undo_runs_again_without_a_false_conflict(
    declining_shop: Shop,
) -> None:
    # Write 5 carries the update's "compensated" and the save's undo intent: the update was
    # undone, the journal only holds the intent of its undo. Meanwhile someone restocks. The
    # undo, run again, recognises its own write id instead of reporting their value a conflict.
    shop = declining_shop

    def restock(journal: MemoryJournal) -> None:
        last = journal.entries("o-1")[-1]
        assert (last.kind, last.path) == ("compensation_intent", "update:stock:sku-1")
        assert shop.stock.get("sku-1") == Versioned(10, 1)  # the undo was applied
        shop.stock.put("sku-1", 100)

    outcome = crash_and_recover(shop, crash_at=5, meanwhile=restock)

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("update:stock:sku-1", "save:orders:o-1")
    assert shop.stock.get("sku-1") == Versioned(100, 3)
    assert shop.orders.get("o-1") is None


def test_recovery_from_every_journal_write_applies_each_store_write_once(tmp_path: Path) -> None:
    for decline in (False, True):
        writes = journal_writes(decline, tmp_path)
        for crash_at in range(1, writes + 1):
            shop = Shop(tmp_path / f"{decline}-{crash_at}.db", decline=decline)

            outcome = crash_and_recover(shop, crash_at)

            where = f"decline={decline}, crash at write {crash_at}"
            if decline:
                assert isinstance(outcome, Failure), (where, outcome)  # no false conflict
                assert shop.orders.get("o-1") is None, where
                assert shop.stock.get("sku-1") == Versioned(10, 1), where
                assert shop.last_versions() == {"orders": 1, "stock": 2}, where
            else:
                assert outcome == Success("o-1"), where
                assert shop.orders.get("o-1") == Versioned(PAID, 2), where
                assert shop.stock.get("sku-1") == Versioned(9, 2), where
                assert shop.last_versions() == {"orders": 2, "stock": 2}, where
                assert shop.payments.charges == {"o-1/charge": 12}, where
            shop.close()


@pytest.mark.anyio
async def test_an_async_durable_run_undoes_its_store_writes(declining_shop: Shop) -> None:
    runs = DurableSagas(MemoryJournal(), declining_shop.definitions)

    outcome = await runs.start_async("order", "o-1", saga_id="o-1")

    assert isinstance(outcome, Failure)
    assert declining_shop.stock.get("sku-1") == Versioned(10, 1)
    assert declining_shop.orders.get("o-1") is None


def test_forget_writes_after_a_finished_saga_drops_its_write_ids(declining_shop: Shop) -> None:
    shop = declining_shop
    DurableSagas(MemoryJournal(), shop.definitions).start("order", "o-1", saga_id="o-1")

    assert shop.orders.forget_writes("o-1") == 1
    assert shop.stock.forget_writes("o-1") == 1
    assert shop.orders.forget_writes("o-1") == 0
    # Without the record, the same saga id can write again (a new run of a finished id).
    shop.payments.decline = False
    outcome = DurableSagas(MemoryJournal(), shop.definitions).start("order", "o-1", saga_id="o-1")
    assert outcome == Success("o-1")
    assert shop.stock.get("sku-1") == Versioned(9, 3)


def test_a_write_whose_receipt_cannot_be_journaled_is_undone_with_its_receipt() -> None:
    # A MemoryStore holds any value, but a set cannot go into the journal: the write happened,
    # and its receipt cannot be recorded. The step fails with the codec's error, without a
    # retry (the same write would give the same receipt), and is undone with the receipt the
    # process holds.
    tags = MemoryStore[str, object]("tags", {"o-1": ["gift"]})
    definitions = SagaDefinitions()

    @definitions.saga("tag")
    def tag(request: object) -> Saga[Versioned[object]]:
        return save(tags, "o-1", {"urgent"})

    runs = DurableSagas(MemoryJournal(), definitions)
    outcome = runs.start("tag", None, saga_id="s-1")

    assert isinstance(outcome, Failure), outcome
    assert isinstance(outcome.error, CodecError)
    assert "step 'save:tags:o-1'" in str(outcome.error)
    assert outcome.compensated == ("save:tags:o-1",)
    assert tags.get("o-1") == Versioned(["gift"], 1)
