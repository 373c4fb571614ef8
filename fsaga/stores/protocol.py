"""The `Store` protocol: versioned values under keys, with conditional writes and write ids.

A store holds one value per key, each with a version. Versions come from one counter per store
that only moves forward, so a version names one value of one key for good: a value deleted and
written again gets a new version, and a compare-and-set can never mistake it for the old one.
A deletion takes a version too (`Deleted`), so an undo can tell the absence it left from an
absence someone else made later.

Every write can be made conditional (``expected``), and every write can carry a ``write_id``:
a store applies a write id once. Asked again, it answers with the `Change` it recorded the first
time, so a step that is run again after a crash or a timeout (with the same idempotency key)
does not write twice, and its compensation still learns what the first write replaced.

`undo` is the other half: it puts back what a `Change` replaced, with the version it had, but
only if the key still holds what the change left there. When someone else wrote the key in the
meantime it raises `VersionConflictError` and leaves their value alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final, Generic, Protocol, TypeAlias, TypeVar, final

from fsaga.stores.errors import ReusedWriteIdError, VersionConflictError

__all__ = [
    "ABSENT",
    "Absent",
    "AsyncStore",
    "Change",
    "Deleted",
    "Expected",
    "State",
    "Store",
    "Versioned",
    "check_expected",
    "check_store_name",
    "check_undo",
    "check_undo_arguments",
    "replayed_change",
    "state_version",
]

_V = TypeVar("_V")
_V_co = TypeVar("_V_co", covariant=True)
_K_contra = TypeVar("_K_contra", contravariant=True)


class Absent(Enum):
    """The type of `ABSENT`."""

    ABSENT = "ABSENT"

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = Absent.ABSENT
"""As an expected version: the key must hold no value (create, never overwrite)."""

Expected: TypeAlias = int | Absent | None
"""What a conditional write expects to find: a version, `ABSENT` (no value), or ``None`` (no
condition: write whatever is there)."""


@final
@dataclass(frozen=True, slots=True)
class Versioned(Generic[_V_co]):
    """A value and the version it was written with.

    >>> Versioned({"status": "placed"}, 7)
    Versioned(value={'status': 'placed'}, version=7)
    """

    value: _V_co
    version: int


@final
@dataclass(frozen=True, slots=True)
class Deleted:
    """The state of a key whose value was deleted, by the write that took `version`.

    >>> Deleted(4)
    Deleted(version=4)
    """

    version: int


State: TypeAlias = Versioned[_V] | Deleted | None
"""What a key holds: a value and its version, the version of the deletion that left it without
one, or ``None`` for a key that never held a value."""


@final
@dataclass(frozen=True, slots=True)
class Change(Generic[_V]):
    """What one write did to one key: the key's state before and after it.

    A state is a `Versioned` value, a `Deleted` marker (no value, since the deletion with that
    version), or ``None`` (no value ever).

    >>> Change(before=None, after=Versioned("placed", 1))
    Change(before=None, after=Versioned(value='placed', version=1))
    """

    before: Versioned[_V] | Deleted | None
    after: Versioned[_V] | Deleted | None

    @property
    def undone(self) -> Change[_V]:
        """The change that undoes this one."""
        return Change(self.after, self.before)


class Store(Protocol[_K_contra, _V]):
    """A keyed, versioned store the steps of `fsaga.stores` can write with generated
    compensations. `MemoryStore`, `SqliteStore`, `PostgresStore` and `RedisStore` implement it;
    so can a store of your own.

    Writes are atomic: a write's condition, its write-id check, the write and the record of its
    `Change` happen at once, or not at all. A failed write changes nothing.
    """

    @property
    def name(self) -> str:
        """The store's name, used in step names and errors."""
        ...

    @property
    def closed(self) -> bool:
        """Whether `close` was called; a closed store raises `StoreClosedError`."""
        ...

    def check_key(self, key: object, /) -> None:
        """Raise `TypeError` (saying why) when the store cannot hold `key`; called when a step
        is built, so a bad key fails there and not halfway through a saga."""
        ...

    def get(self, key: _K_contra, /) -> Versioned[_V] | None:
        """The value under `key` and its version, or ``None`` when there is none."""
        ...

    def put(
        self,
        key: _K_contra,
        value: _V,
        /,
        *,
        expected: Expected = None,
        write_id: str | None = None,
    ) -> Change[_V]:
        """Write `value` under `key` with a new version.

        Raises:
            VersionConflictError: the key is not at the `expected` version.
            ReusedWriteIdError: `write_id` was recorded for another write, or was undone.
        """
        ...

    def delete(
        self,
        key: _K_contra,
        /,
        *,
        expected: Expected = None,
        write_id: str | None = None,
    ) -> Change[_V]:
        """Remove the value under `key`. The deletion takes a version: the change's ``after``
        is ``Deleted(version)``. Deleting a key without a value changes nothing and takes no
        version (``Change(state, state)``).

        Raises:
            VersionConflictError: the key is not at the `expected` version.
            ReusedWriteIdError: `write_id` was recorded for another write, or was undone.
        """
        ...

    def update(
        self,
        key: _K_contra,
        function: Callable[[_V], _V],
        /,
        *,
        write_id: str | None = None,
    ) -> Change[_V]:
        """Replace the value under `key` with ``function(value)``, atomically: no other write
        can come between the read and the write. `function` should be quick and pure; it may
        run inside the store's transaction, and again if the write is retried.

        Raises:
            MissingKeyError: the key holds no value.
            ReusedWriteIdError: `write_id` was recorded for another write, or was undone.
        """
        ...

    def undo(
        self, key: _K_contra, change: Change[_V] | None, /, *, write_id: str | None = None
    ) -> None:
        """Put back ``change.before`` (value and version, or no value) if the key still holds
        ``change.after``. Undoing a change twice is harmless.

        With a `write_id`, the write recorded under it is marked undone, and the same write id
        is refused from then on. With ``change=None``, the change to undo is the one recorded
        under `write_id`, if any: a write whose outcome is unknown is undone by its write id
        alone (and if it never happened, it cannot happen later).

        Raises:
            VersionConflictError: someone else changed the key after `change`; nothing written.
            ReusedWriteIdError: `write_id` was recorded for another key.
            ValueError: neither `change` nor `write_id` is given.
        """
        ...


class AsyncStore(Protocol[_K_contra, _V]):
    """`Store` with coroutines: ``get``, ``put``, ``delete``, ``update`` and ``undo`` are
    ``async def`` and mean exactly what they mean there; ``name``, ``closed`` and
    ``check_key`` are plain. `AsyncPostgresStore` and `AsyncRedisStore` implement it.

    The store steps of `fsaga.stores` take an `AsyncStore` wherever they take a `Store`: their
    actions and compensations are then ``async`` (a store counts as async when its ``undo`` is
    a coroutine function), so an async interpreter awaits them on its event loop, and
    `SyncInterpreter` refuses such a saga before any of its steps runs.
    """

    @property
    def name(self) -> str:
        """The store's name, used in step names and errors."""
        ...

    @property
    def closed(self) -> bool:
        """Whether the store was closed; a closed store raises `StoreClosedError`."""
        ...

    def check_key(self, key: object, /) -> None:
        """See `Store.check_key`."""
        ...

    async def get(self, key: _K_contra, /) -> Versioned[_V] | None:
        """See `Store.get`."""
        ...

    async def put(
        self,
        key: _K_contra,
        value: _V,
        /,
        *,
        expected: Expected = None,
        write_id: str | None = None,
    ) -> Change[_V]:
        """See `Store.put`."""
        ...

    async def delete(
        self,
        key: _K_contra,
        /,
        *,
        expected: Expected = None,
        write_id: str | None = None,
    ) -> Change[_V]:
        """See `Store.delete`."""
        ...

    async def update(
        self,
        key: _K_contra,
        function: Callable[[_V], _V],
        /,
        *,
        write_id: str | None = None,
    ) -> Change[_V]:
        """See `Store.update`."""
        ...

    async def undo(
        self, key: _K_contra, change: Change[_V] | None, /, *, write_id: str | None = None
    ) -> None:
        """See `Store.undo`."""
        ...


def check_expected(
    store: str, key: object, found: Versioned[object] | Deleted | None, expected: Expected
) -> None:
    """Raise `VersionConflictError` unless the key's state `found` is what `expected` asks for
    (a deleted value counts as no value)."""
    if expected is None:
        return
    version = found.version if isinstance(found, Versioned) else None
    if (version is not None) if expected is ABSENT else (version != expected):
        raise VersionConflictError(store, key, expected, version)


def state_version(state: Versioned[object] | Deleted | None) -> int:
    """The version of a key's state: its value's, its deletion's, or 0 for a key that never
    held a value."""
    return 0 if state is None else state.version


def check_undo(
    store: str, key: object, found: Versioned[object] | Deleted | None, change: Change[_V]
) -> bool:
    """Whether undoing `change` has anything left to do, given the key's state `found`.

    The undo writes only over the state `change` left (same version). Finding what it would
    put back is fine too (undone already, or both the same absence of a value). Anything else
    is someone else's write.

    Raises:
        VersionConflictError: someone else changed the key after `change`.
    """
    left, replaced = change.after, change.before
    if state_version(left) == state_version(replaced):
        return False  # the write changed nothing (a delete that found no value)
    if state_version(found) == state_version(left):
        return True
    if state_version(found) == state_version(replaced) or not (
        isinstance(found, Versioned) or isinstance(replaced, Versioned)
    ):
        return False  # undone already, or no value either way
    raise VersionConflictError(
        store,
        key,
        state_version(left),
        None if found is None else found.version,
        undo=True,
        expected_deleted=isinstance(left, Deleted),
        found_deleted=isinstance(found, Deleted),
    )


_STORE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_store_name(name: object) -> str:
    """`name` if it can name a store (letters, digits and ``_``, not starting with a digit, as
    an SQL table name must), else raise `TypeError` or `ValueError` saying why."""
    if not isinstance(name, str):
        raise TypeError(f"a store's name must be a str, got {name!r}")
    if not _STORE_NAME.fullmatch(name) or name.lower().startswith(("sqlite_", "fsaga_")):
        raise ValueError(
            f"a store's name must be letters, digits and '_', not starting with a digit, "
            f"'sqlite_' or 'fsaga_', got {name!r}"
        )
    return name


def check_undo_arguments(
    store: str, key: object, change: object, write_id: str | None, recorded_key: object
) -> None:
    """Raise `ValueError` for an undo given neither a change nor a write id, and
    `ReusedWriteIdError` for a write id recorded for another key (`recorded_key`; pass `key`
    itself when nothing is recorded)."""
    if change is None and write_id is None:
        raise ValueError(f"store {store!r}, key {key!r}: undo needs a change or a write id")
    if write_id is not None and recorded_key != key:
        raise ReusedWriteIdError(
            store, write_id, f"was given to key {recorded_key!r}, now to key {key!r}"
        )


def replayed_change(
    store: str,
    write_id: str,
    key: object,
    recorded_key: object,
    change: Change[_V] | None,
    *,
    undone: bool,
) -> Change[_V]:
    """The change recorded under `write_id`, for a write asking for it again with `key`.

    Raises:
        ReusedWriteIdError: the write id was undone already, or was given to another key.
    """
    if undone or change is None:
        raise ReusedWriteIdError(
            store,
            write_id,
            "was applied and undone already (or undone before it was applied); it belongs to an "
            "earlier run: give each run its own saga id",
        )
    if recorded_key != key:
        raise ReusedWriteIdError(
            store, write_id, f"was given to key {recorded_key!r}, now to key {key!r}"
        )
    return change
