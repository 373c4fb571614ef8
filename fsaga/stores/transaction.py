"""`transaction(...)`: one saga of writes over several stores, written the way you think of it.

>>> from fsaga.interpreter import SyncInterpreter
>>> from fsaga.stores import MemoryStore, transaction
>>> orders = MemoryStore[str, str]("orders")
>>> stock = MemoryStore("stock", {"sku-1": 10})
>>> place = transaction(
...     lambda tx: tx.update(stock, "sku-1", lambda count: count - 1).then(
...         tx.save(orders, "o-1", "placed")
...     ),
...     name="place_order",
... )
>>> place.run(SyncInterpreter())
Success(value=Versioned(value='placed', version=1))
>>> stock.get("sku-1")
Versioned(value=9, version=2)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, final

from fsaga.policy import Retry
from fsaga.saga import Saga
from fsaga.stores import steps
from fsaga.stores.protocol import AsyncStore, Expected, Store, Versioned
from fsaga.stores.steps import STORE_RETRY

__all__ = ["Transaction", "transaction"]

_K = TypeVar("_K")
_V = TypeVar("_V")
_T = TypeVar("_T")


@final
@dataclass(frozen=True, slots=True)
class Transaction:
    """What `transaction` hands the function that builds it: the store steps of `fsaga.stores`
    with the transaction's retry policies filled in.

    Its methods only build steps; nothing is read or written until the saga runs. The sagas
    they return compose with any other saga (`then`, `bind`, `par`, ...), a payment call between
    two writes included.

    Attributes:
        retry: how each write is retried.
        compensation_retry: how each generated compensation is retried.
    """

    retry: Retry | None = STORE_RETRY
    compensation_retry: Retry | None = STORE_RETRY

    def save(
        self,
        store: Store[_K, _V] | AsyncStore[_K, _V],
        key: _K,
        value: _V,
        /,
        *,
        expected: Expected = None,
        name: str | None = None,
    ) -> Saga[Versioned[_V]]:
        """`fsaga.stores.save` with this transaction's policies."""
        return steps.save(
            store,
            key,
            value,
            expected=expected,
            name=name,
            retry=self.retry,
            compensation_retry=self.compensation_retry,
        )

    def delete(
        self,
        store: Store[_K, _V] | AsyncStore[_K, _V],
        key: _K,
        /,
        *,
        expected: Expected = None,
        name: str | None = None,
    ) -> Saga[Versioned[_V] | None]:
        """`fsaga.stores.delete` with this transaction's policies."""
        return steps.delete(
            store,
            key,
            expected=expected,
            name=name,
            retry=self.retry,
            compensation_retry=self.compensation_retry,
        )

    def update(
        self,
        store: Store[_K, _V] | AsyncStore[_K, _V],
        key: _K,
        function: Callable[[_V], _V],
        /,
        *,
        name: str | None = None,
    ) -> Saga[Versioned[_V]]:
        """`fsaga.stores.update` with this transaction's policies."""
        return steps.update(
            store,
            key,
            function,
            name=name,
            retry=self.retry,
            compensation_retry=self.compensation_retry,
        )

    def read(
        self,
        store: Store[_K, _V] | AsyncStore[_K, _V],
        key: _K,
        /,
        *,
        name: str | None = None,
    ) -> Saga[Versioned[_V] | None]:
        """`fsaga.stores.read` with this transaction's retry."""
        return steps.read(store, key, name=name, retry=self.retry)


def transaction(
    build: Callable[[Transaction], Saga[_T]],
    /,
    *,
    name: str | None = None,
    retry: Retry | None = STORE_RETRY,
    compensation_retry: Retry | None = STORE_RETRY,
) -> Saga[_T]:
    """One saga of writes over several stores: all of them happen, or all are undone.

    `build` receives a `Transaction` and returns the saga of its writes, composed like any other
    saga. It is called once, now, and only builds: nothing is written until the saga runs.
    When a write (or any other step of the saga) fails, every completed write is undone in
    reverse order; an undo that finds a value someone else changed in the meantime keeps their
    value and is reported in `PartialFailure` (see `VersionConflictError`).

    Args:
        build: builds the saga from the transaction's steps.
        name: makes the transaction a named sub-saga (one unit to its parent, with paths like
            ``NAME/save:orders:o-1``).
        retry: how each write is retried; `STORE_RETRY` by default.
        compensation_retry: how each generated compensation is retried; `STORE_RETRY` by
            default.

    Raises:
        TypeError: `build` is not callable or does not return a saga.
    """
    if not callable(build):
        raise TypeError(f"transaction(): build must be callable, got {build!r}")
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"transaction(): retry must be a Retry or None, got {retry!r}")
    if compensation_retry is not None and not isinstance(compensation_retry, Retry):
        raise TypeError(
            f"transaction(): compensation_retry must be a Retry or None, got {compensation_retry!r}"
        )
    saga: object = build(Transaction(retry, compensation_retry))
    if not isinstance(saga, Saga):
        where = "transaction()" if name is None else f"transaction {name!r}"
        raise TypeError(f"{where}: build must return a saga, got {saga!r}")
    typed: Saga[_T] = saga
    return typed if name is None else typed.named(name)
