"""`MemoryStore`: the `Store` protocol in a dict, for tests, examples and single-process state."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar, final

from fsaga.stores.errors import MissingKeyError, StoreClosedError
from fsaga.stores.protocol import (
    Change,
    Deleted,
    Expected,
    Versioned,
    check_expected,
    check_store_name,
    check_undo,
    check_undo_arguments,
    replayed_change,
)

__all__ = ["MemoryStore"]

_K = TypeVar("_K")
_V = TypeVar("_V")


@final
class MemoryStore(Generic[_K, _V]):
    """A `Store` in memory. Thread-safe: one (reentrant) lock serialises every read and write.

    Values are kept as given, not copied: treat them as immutable (a dict saved and then changed
    in place would change what the store holds, and what a compensation puts back).

    Args:
        name: the store's name (letters, digits and ``_``), used in step names and errors.
        initial: values to start with; they get versions 1, 2, ... in iteration order.

    >>> stock = MemoryStore("stock", {"sku-1": 10})
    >>> stock.get("sku-1")
    Versioned(value=10, version=1)
    >>> change = stock.put("sku-1", 7)
    >>> change
    Change(before=Versioned(value=10, version=1), after=Versioned(value=7, version=2))
    >>> stock.undo("sku-1", change)
    >>> stock.get("sku-1")
    Versioned(value=10, version=1)
    """

    __slots__ = ("_closed", "_data", "_deletions", "_last_version", "_lock", "_name", "_receipts")

    def __init__(self, name: str, initial: Mapping[_K, _V] | None = None) -> None:
        self._name = check_store_name(name)
        self._lock = threading.RLock()
        self._closed = False
        self._data: dict[_K, Versioned[_V]] = {}
        # key -> the version of the deletion that left it without a value
        self._deletions: dict[_K, int] = {}
        # write id -> (key, the change it made or None for an undo that came first, undone)
        self._receipts: dict[str, tuple[_K, Change[_V] | None, bool]] = {}
        self._last_version = 0
        for key, value in (initial or {}).items():
            self.check_key(key)
            self._data[key] = Versioned(value, self._next_version())

    @property
    def name(self) -> str:
        """The store's name."""
        return self._name

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"MemoryStore({self._name!r}, {len(self._data)} key(s){state})"

    def close(self) -> None:
        """Refuse every read and write from now on (`StoreClosedError`)."""
        self._closed = True

    def __enter__(self) -> MemoryStore[_K, _V]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check_key(self, key: object, /) -> None:
        """Keys must be hashable."""
        try:
            hash(key)
        except TypeError:
            raise TypeError(
                f"store {self._name!r} cannot hold key {key!r}: a key must be hashable"
            ) from None

    def get(self, key: _K, /) -> Versioned[_V] | None:
        """See `Store.get`."""
        with self._lock:
            self._check_open()
            return self._data.get(key)

    def put(
        self, key: _K, value: _V, /, *, expected: Expected = None, write_id: str | None = None
    ) -> Change[_V]:
        """See `Store.put`."""
        with self._lock:
            self._check_open()
            recorded = self._recorded(key, write_id)
            if recorded is not None:
                return recorded
            before = self._state(key)
            check_expected(self._name, key, before, expected)
            after = Versioned(value, self._next_version())
            self._set(key, after)
            return self._record(key, Change(before, after), write_id)

    def delete(
        self, key: _K, /, *, expected: Expected = None, write_id: str | None = None
    ) -> Change[_V]:
        """See `Store.delete`."""
        with self._lock:
            self._check_open()
            recorded = self._recorded(key, write_id)
            if recorded is not None:
                return recorded
            before = self._state(key)
            check_expected(self._name, key, before, expected)
            after: Versioned[_V] | Deleted | None = before
            if isinstance(before, Versioned):
                after = Deleted(self._next_version())
                self._set(key, after)
            return self._record(key, Change(before, after), write_id)

    def update(
        self, key: _K, function: Callable[[_V], _V], /, *, write_id: str | None = None
    ) -> Change[_V]:
        """See `Store.update`; `function` runs under the store's lock."""
        with self._lock:
            self._check_open()
            recorded = self._recorded(key, write_id)
            if recorded is not None:
                return recorded
            before = self._data.get(key)
            if before is None:
                raise MissingKeyError(self._name, key)
            after = Versioned(function(before.value), self._next_version())
            self._set(key, after)
            return self._record(key, Change(before, after), write_id)

    def undo(self, key: _K, change: Change[_V] | None, /, *, write_id: str | None = None) -> None:
        """See `Store.undo`."""
        with self._lock:
            self._check_open()
            receipt = None if write_id is None else self._receipts.get(write_id)
            check_undo_arguments(
                self._name, key, change, write_id, key if receipt is None else receipt[0]
            )
            if receipt is not None:
                if receipt[2]:
                    return  # undone already
                if change is None:
                    change = receipt[1]
            if change is not None and check_undo(self._name, key, self._state(key), change):
                self._set(key, change.before)
            if write_id is not None:
                self._receipts[write_id] = (key, None if receipt is None else receipt[1], True)

    def snapshot(self) -> dict[_K, Versioned[_V]]:
        """Every key and its versioned value, as a new dict."""
        with self._lock:
            self._check_open()
            return dict(self._data)

    def forget_writes(self, saga_id: str) -> int:
        """Drop the write ids recorded for `saga_id`'s steps (those starting ``saga_id/``), once
        the saga has finished and will not be recovered again; the number dropped."""
        prefix = f"{saga_id}/"
        with self._lock:
            self._check_open()
            gone = [write_id for write_id in self._receipts if write_id.startswith(prefix)]
            for write_id in gone:
                del self._receipts[write_id]
            return len(gone)

    def _state(self, key: _K) -> Versioned[_V] | Deleted | None:
        value = self._data.get(key)
        if value is not None:
            return value
        deleted = self._deletions.get(key)
        return None if deleted is None else Deleted(deleted)

    def _set(self, key: _K, state: Versioned[_V] | Deleted | None) -> None:
        if isinstance(state, Versioned):
            self._data[key] = state
            self._deletions.pop(key, None)
        else:
            self._data.pop(key, None)
            if state is None:
                self._deletions.pop(key, None)
            else:
                self._deletions[key] = state.version

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(self._name)

    def _next_version(self) -> int:
        self._last_version += 1
        return self._last_version

    def _recorded(self, key: _K, write_id: str | None) -> Change[_V] | None:
        if write_id is None:
            return None
        receipt = self._receipts.get(write_id)
        if receipt is None:
            return None
        recorded_key, change, undone = receipt
        return replayed_change(self._name, write_id, key, recorded_key, change, undone=undone)

    def _record(self, key: _K, change: Change[_V], write_id: str | None) -> Change[_V]:
        if write_id is not None:
            self._receipts[write_id] = (key, change, False)
        return change
