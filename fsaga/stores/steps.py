"""Steps that write to a `Store`, with their compensations generated: `save`, `delete`, `update`,
and the read-only `read`.

A write step records what it replaced (a `Change`) as its result, so its compensation can put
that back: a save restores the previous value or deletes what it created, a delete restores
what it removed, an update restores the value it replaced. A compensation only does so while
the key still holds what the step left: when someone else changed it in the meantime, it
raises `VersionConflictError` (naming the key and both versions) and the saga ends in
`PartialFailure`, their value kept.

Every write carries its step's idempotency key as its write id, so a step that runs again (a
retry, a recovery after a crash) finds the change it made the first time instead of writing
twice. The steps are therefore declared idempotent, and a durable run can settle one that a
crash cut off by running it again. Should that not settle it, their unknown-outcome
compensation undoes whatever the store recorded under the write id: a store step is never
left unresolved.

What a step returns to the saga is typed (`Versioned` values); what it records, and what its
compensation receives, is a JSON-shaped receipt (``{"before": state, "after": state}``, each
state ``None``, ``{"value": value, "version": version}`` or ``{"deleted": version}``), so a
durable run can journal it.
`change_from_receipt` reads one back. A read records the state it found.

Every step takes a `Store` or an `AsyncStore`. Over an `AsyncStore` the action and the
compensations are ``async def`` (awaiting the store's coroutines), for an async interpreter;
`SyncInterpreter` refuses such a step before its action runs.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable
from functools import partial
from inspect import iscoroutinefunction
from typing import Final, TypeAlias, TypeVar, cast

from fsaga.context import StepContext, current_context
from fsaga.policy import Retry
from fsaga.saga import Saga, step
from fsaga.stores.errors import StoreClosedError, StoreUnavailableError
from fsaga.stores.protocol import AsyncStore, Change, Deleted, Expected, Store, Versioned

__all__ = ["STORE_RETRY", "change_from_receipt", "delete", "read", "save", "update"]

_K = TypeVar("_K")
_V = TypeVar("_V")

STORE_RETRY: Final = Retry(3, delay=0.05, retry_on=StoreUnavailableError)
"""The default retry of store steps and their compensations: three attempts while the store is
unavailable (busy, locked, an I/O error). Other errors, a version conflict among them, are not
worth another attempt."""

# The JSON shape a store step records: {"before": state, "after": state}, where a state is
# None (no value ever), {"value": value, "version": version} or {"deleted": version}.
_Receipt: TypeAlias = dict[str, object]

_KEY_IN_NAME: Final = re.compile(r"[A-Za-z0-9_.:@-]{1,40}")


def save(
    store: Store[_K, _V] | AsyncStore[_K, _V],
    key: _K,
    value: _V,
    /,
    *,
    expected: Expected = None,
    name: str | None = None,
    retry: Retry | None = STORE_RETRY,
    compensation_retry: Retry | None = STORE_RETRY,
) -> Saga[Versioned[_V]]:
    """A step that writes `value` under `key`; its compensation restores what was there before
    (or deletes the key, if the step created it).

    Args:
        store: where to write: a `Store`, or an `AsyncStore` (the step is then ``async``).
        key: the key; checked by the store now, so a bad key fails here.
        value: the value to write.
        expected: a condition on what the key holds when the step runs: a version, `ABSENT`
            (create only), or ``None`` (overwrite whatever is there).
        name: the step's name; by default ``save:STORE:KEY`` (or ``save:STORE`` for a key
            that does not read well in a path).
        retry: how the write is retried; `STORE_RETRY` by default.
        compensation_retry: how the compensation is retried; `STORE_RETRY` by default.

    Returns:
        A saga of the value written and its new version.

    Raises:
        TypeError: the store cannot hold `key`, or an argument has the wrong type.
        StoreClosedError: the store is closed.

    >>> from fsaga.interpreter import SyncInterpreter
    >>> from fsaga.stores import MemoryStore
    >>> orders = MemoryStore("orders")
    >>> save(orders, "o-1", "placed").run(SyncInterpreter())
    Success(value=Versioned(value='placed', version=1))
    """
    label = _label("save", store, key, name)

    def put(write_id: str) -> Change[_V] | Awaitable[Change[_V]]:
        return store.put(key, value, expected=expected, write_id=write_id)

    return _write_step(put, store, key, label, name, retry, compensation_retry).map(
        partial(_written, label)
    )


def delete(
    store: Store[_K, _V] | AsyncStore[_K, _V],
    key: _K,
    /,
    *,
    expected: Expected = None,
    name: str | None = None,
    retry: Retry | None = STORE_RETRY,
    compensation_retry: Retry | None = STORE_RETRY,
) -> Saga[Versioned[_V] | None]:
    """A step that deletes the value under `key`; its compensation puts it back.

    Deleting a key that holds nothing succeeds and changes nothing (add ``expected=`` to make
    it fail instead). Arguments as for `save` (the default name is ``delete:STORE:KEY``).

    Returns:
        A saga of what was deleted (``None``: there was nothing).

    >>> from fsaga.interpreter import SyncInterpreter
    >>> from fsaga.stores import MemoryStore
    >>> orders = MemoryStore("orders", {"o-1": "placed"})
    >>> delete(orders, "o-1").run(SyncInterpreter())
    Success(value=Versioned(value='placed', version=1))
    """
    label = _label("delete", store, key, name)

    def remove(write_id: str) -> Change[_V] | Awaitable[Change[_V]]:
        return store.delete(key, expected=expected, write_id=write_id)

    return _write_step(remove, store, key, label, name, retry, compensation_retry).map(
        partial(_deleted, label)
    )


def update(
    store: Store[_K, _V] | AsyncStore[_K, _V],
    key: _K,
    function: Callable[[_V], _V],
    /,
    *,
    name: str | None = None,
    retry: Retry | None = STORE_RETRY,
    compensation_retry: Retry | None = STORE_RETRY,
) -> Saga[Versioned[_V]]:
    """A step that replaces the value under `key` with ``function(value)``, atomically; its
    compensation restores the value it replaced.

    `function` should be quick and pure: the store may call it inside its own transaction, and
    again when the write is retried. A key that holds nothing fails the step with
    `MissingKeyError`. Other arguments as for `save` (the default name is
    ``update:STORE:KEY``).

    Returns:
        A saga of the new value and its version.

    >>> from fsaga.interpreter import SyncInterpreter
    >>> from fsaga.stores import MemoryStore
    >>> stock = MemoryStore("stock", {"sku-1": 10})
    >>> update(stock, "sku-1", lambda count: count - 3).run(SyncInterpreter())
    Success(value=Versioned(value=7, version=2))
    """
    label = _label("update", store, key, name)
    if not callable(function):
        raise TypeError(f"step {label!r}: function must be callable, got {function!r}")

    def replace(write_id: str) -> Change[_V] | Awaitable[Change[_V]]:
        return store.update(key, function, write_id=write_id)

    return _write_step(replace, store, key, label, name, retry, compensation_retry).map(
        partial(_written, label)
    )


def read(
    store: Store[_K, _V] | AsyncStore[_K, _V],
    key: _K,
    /,
    *,
    name: str | None = None,
    retry: Retry | None = STORE_RETRY,
) -> Saga[Versioned[_V] | None]:
    """A step that reads the value under `key` (nothing to compensate).

    Use it to decide what to write next from inside a saga; in a durable run the value read is
    journaled, so a recovery decides the same way. The default name is ``read:STORE:KEY``.

    >>> from fsaga.interpreter import SyncInterpreter
    >>> from fsaga.stores import MemoryStore
    >>> stock = MemoryStore("stock", {"sku-1": 10})
    >>> read(stock, "sku-1").run(SyncInterpreter())
    Success(value=Versioned(value=10, version=1))
    """
    label = _label("read", store, key, name)
    if _is_async(store):
        reading = cast(AsyncStore[_K, _V], store)

        async def get_async() -> dict[str, object] | None:
            return _state(await reading.get(key))

        get_async.__name__ = label
        found = step(get_async, name=name, retry=retry, idempotent=True)
    else:
        synchronous = cast(Store[_K, _V], store)

        def get() -> dict[str, object] | None:
            return _state(synchronous.get(key))

        get.__name__ = label
        found = step(get, name=name, retry=retry, idempotent=True)
    return found.map(partial(_found, label))


def _write_step(
    write: Callable[[str], Change[_V] | Awaitable[Change[_V]]],
    store: Store[_K, _V] | AsyncStore[_K, _V],
    key: _K,
    label: str,
    name: str | None,
    retry: Retry | None,
    compensation_retry: Retry | None,
) -> Saga[_Receipt]:
    """The step that calls `write` with its idempotency key as the write id and records the
    receipt, compensated by the store's undo."""
    if _is_async(store):
        return _async_write_step(
            cast(Callable[[str], Awaitable[Change[_V]]], write),
            cast(AsyncStore[_K, _V], store),
            key,
            label,
            name,
            retry,
            compensation_retry,
        )
    synchronous = cast(Store[_K, _V], store)

    def perform() -> _Receipt:
        change = cast(Change[_V], write(current_context().idempotency_key))
        return _receipt(change)

    def undo(receipt: _Receipt) -> None:
        write_id = current_context().idempotency_key
        synchronous.undo(key, _change_of(receipt, label), write_id=write_id)

    def undo_unknown(context: StepContext) -> None:
        # The write's outcome is unknown and running it again did not settle it (its receipt
        # could not be recorded, say): undo whatever the store recorded under its write id.
        synchronous.undo(key, None, write_id=context.idempotency_key)

    # Without an explicit name, the label is the action's name: such names are numbered when
    # they repeat in a scope (``save:stock:sku-1#2``) instead of being refused as duplicates.
    perform.__name__ = label
    return step(
        perform,
        undo,
        name=name,
        retry=retry,
        compensation_retry=compensation_retry,
        idempotent=True,
        on_unknown=undo_unknown,
    )


def _async_write_step(
    write: Callable[[str], Awaitable[Change[_V]]],
    store: AsyncStore[_K, _V],
    key: _K,
    label: str,
    name: str | None,
    retry: Retry | None,
    compensation_retry: Retry | None,
) -> Saga[_Receipt]:
    """`_write_step` over an `AsyncStore`: the same step, with coroutines."""

    async def perform() -> _Receipt:
        return _receipt(await write(current_context().idempotency_key))

    async def undo(receipt: _Receipt) -> None:
        write_id = current_context().idempotency_key
        await store.undo(key, _change_of(receipt, label), write_id=write_id)

    async def undo_unknown(context: StepContext) -> None:
        await store.undo(key, None, write_id=context.idempotency_key)

    perform.__name__ = label
    return step(
        perform,
        undo,
        name=name,
        retry=retry,
        compensation_retry=compensation_retry,
        idempotent=True,
        on_unknown=undo_unknown,
    )


def _is_async(store: object) -> bool:
    """Whether `store` is an `AsyncStore` (its ``undo`` is a coroutine function)."""
    return iscoroutinefunction(getattr(store, "undo", None))


def _label(verb: str, store: object, key: object, name: str | None) -> str:
    """The step's name (checking the store and the key on the way)."""
    store_name = getattr(store, "name", None)
    if not isinstance(store_name, str) or not all(
        callable(getattr(store, method, None))
        for method in ("check_key", "get", "put", "delete", "update", "undo")
    ):
        raise TypeError(f"{verb}(): expected a fsaga.stores.Store, got {store!r}")
    typed = cast(Store[object, object], store)
    if (
        isinstance(key, bool)
        or not isinstance(key, str | int)
        or not _KEY_IN_NAME.fullmatch(str(key))
    ):
        label = f"{verb}:{store_name}"
    else:
        label = f"{verb}:{store_name}:{key}"
    if name is not None:
        label = name
    try:
        typed.check_key(key)
    except TypeError as error:
        raise TypeError(f"step {label!r}: {error}") from None
    if getattr(typed, "closed", False) is True:
        raise StoreClosedError(store_name, step=label)
    return label


def _state(state: Versioned[object] | Deleted | None) -> dict[str, object] | None:
    """A state as JSON: ``{"value": ..., "version": ...}``, ``{"deleted": version}`` or None."""
    if isinstance(state, Versioned):
        return {"value": state.value, "version": state.version}
    if isinstance(state, Deleted):
        return {"deleted": state.version}
    return None


def _receipt(change: Change[_V]) -> _Receipt:
    return {"before": _state(change.before), "after": _state(change.after)}


def _change_of(receipt: object, label: str) -> Change[_V]:
    """The change a receipt records (a `Change` is accepted as is, for scripted runs)."""
    if isinstance(receipt, Change):
        return cast(Change[_V], receipt)
    if isinstance(receipt, dict) and receipt.keys() == {"before", "after"}:
        with contextlib.suppress(ValueError):
            return Change(_state_of(receipt["before"]), _state_of(receipt["after"]))
    raise TypeError(
        f"step {label!r}: expected the receipt of a store write (or a fsaga.stores.Change), "
        f"got {receipt!r}"
    )


def _state_of(state: object) -> Versioned[_V] | Deleted | None:
    """A state from its JSON (see `_state`)."""
    if state is None:
        return None
    if isinstance(state, dict):
        if state.keys() == {"value", "version"}:
            version = state["version"]
            if isinstance(version, int) and not isinstance(version, bool):
                return Versioned(cast(_V, state["value"]), version)
        elif state.keys() == {"deleted"}:
            version = state["deleted"]
            if isinstance(version, int) and not isinstance(version, bool):
                return Deleted(version)
    raise ValueError(f"not a state: {state!r}")


def _written(label: str, receipt: _Receipt) -> Versioned[_V]:
    after: Versioned[_V] | Deleted | None = _change_of(receipt, label).after
    if not isinstance(after, Versioned):
        raise TypeError(f"step {label!r}: the receipt of a save or update has no value after")
    return after


def _deleted(label: str, receipt: _Receipt) -> Versioned[_V] | None:
    before: Versioned[_V] | Deleted | None = _change_of(receipt, label).before
    return before if isinstance(before, Versioned) else None


def _found(label: str, state: object) -> Versioned[_V] | None:
    """What a read recorded: a state (a `Versioned` is accepted as is, for scripted runs)."""
    if isinstance(state, Versioned):
        return cast(Versioned[_V], state)
    with contextlib.suppress(ValueError):
        found: Versioned[_V] | Deleted | None = _state_of(state)
        if not isinstance(found, Deleted):
            return found
    raise TypeError(
        f"step {label!r}: expected what a store read records (None, or a dict of value and "
        f"version), got {state!r}"
    )


def change_from_receipt(receipt: object) -> Change[object] | None:
    """The `Change` a store write step recorded, or ``None`` when `receipt` is not one.

    A write step's result in events and journals is a JSON-shaped receipt; this reads it back
    (for a listener, a renderer, or a look at a journal).

    >>> change_from_receipt({"before": None, "after": {"value": 7, "version": 2}})
    Change(before=None, after=Versioned(value=7, version=2))
    >>> change_from_receipt("R-1") is None
    True
    """
    try:
        return _change_of(receipt, "")
    except TypeError:
        return None
