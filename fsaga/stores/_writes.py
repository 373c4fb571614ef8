"""What a write to a database store does, decided apart from the database (no I/O here).

`PostgresStore` and `RedisStore` (and their async twins) follow the same steps for every write:
read the key's state and what its write id recorded, decide, then apply the decision atomically.
The deciding is here, once, on the same helpers `MemoryStore` and `SqliteStore` use
(`check_expected`, `check_undo`, `replayed_change`), so every store behaves alike; each store
only reads and applies. A decision is a `Write` (what the key becomes and what to record), or
the `Change` a write id recorded earlier (a write asked for again), or ``None`` (nothing to do).

Values stay encoded (the codec's bytes) from the read to the write: a state is a `RawState`.
`put_plan`, `delete_plan`, `update_plan` and `undo_plan` turn a store method's arguments into
the decision and, for the first three, into what the method returns; `KeyCodec` checks keys
and encodes values. Each store writes its operations once, as generators (`Operation`), which
`drive` runs over a sync client and an `async` loop of the same shape over an async one;
`shielded` keeps an async operation, once started, from being cut off halfway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Final, Generic, Literal, TypeAlias, TypeVar, cast, final

import anyio

from fsaga.journal.codec import Codec, CodecError
from fsaga.stores.errors import MissingKeyError, StoreError
from fsaga.stores.protocol import (
    Change,
    Deleted,
    Expected,
    Versioned,
    check_expected,
    check_undo,
    check_undo_arguments,
    replayed_change,
)

__all__ = [
    "INT64",
    "Decide",
    "Decision",
    "KeyCodec",
    "Operation",
    "Planned",
    "RawState",
    "Receipt",
    "Write",
    "Written",
    "decide_delete",
    "decide_put",
    "decide_undo",
    "decide_update",
    "delete_plan",
    "drive",
    "put_plan",
    "shielded",
    "typed_change",
    "undo_plan",
    "update_plan",
]

_V = TypeVar("_V")
_Q = TypeVar("_Q")
_A = TypeVar("_A")
_T = TypeVar("_T")

RawState: TypeAlias = Versioned[bytes] | Deleted | None
"""A key's state with its value still encoded."""

INT64: Final = range(-(2**63), 2**63)

Operation: TypeAlias = Generator[_Q, _A, _T]
"""A store operation written once for a sync and an async driver: it yields each request to the
database (`_Q`), is sent the answer (`_A`), and returns its result (`_T`)."""


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Shield what runs inside from cancellation, so an async store's operation, once
    started, runs to its end (a shielded scope swallows no exception)."""
    with anyio.CancelScope(shield=True):
        yield


def drive(operation: Operation[_Q, _A, _T], ask: Callable[[_Q], _A]) -> _T:
    """Run `operation` to its end, answering each request with `ask` (the sync driver; the
    async drivers have the same loop with ``await``)."""
    try:
        request = next(operation)
        while True:
            request = operation.send(ask(request))
    except StopIteration as done:
        return cast(_T, done.value)


@final
@dataclass(frozen=True, slots=True)
class Receipt:
    """What a write id recorded: the key, the change (``None``: an undo came before any write),
    and whether it was undone."""

    key: object
    change: Change[bytes] | None
    undone: bool


@final
@dataclass(frozen=True, slots=True)
class Write:
    """A decided write: the key goes from `found` to the state `to` says.

    Attributes:
        key: the key.
        found: the state the decision was made on; applying it needs the key still there.
        to: ``"value"`` (`data` at a version), ``"deleted"`` (a deletion at a version),
            ``"absent"`` (no value, never held one), ``"same"`` (the key is left as it is).
        data: the encoded value, for ``"value"``.
        version: the version to put back (an undo); ``None`` takes the store's next one.
        record: what to record under `write_id`: nothing, the change, or that it was undone.
        write_id: the write id, when `record` is not ``"none"``.
    """

    key: object
    found: RawState
    to: Literal["value", "deleted", "absent", "same"]
    data: bytes | None = None
    version: int | None = None
    record: Literal["none", "change", "undone"] = "none"
    write_id: str | None = None

    @property
    def needs_version(self) -> bool:
        """Whether applying it takes the store's next version."""
        return self.to in ("value", "deleted") and self.version is None

    def after(self, version: int | None) -> RawState:
        """The key's state once written, `version` being the one taken (or `self.version`)."""
        if self.to == "same":
            return self.found
        if self.to == "absent":
            return None
        taken = self.version if self.version is not None else version
        assert taken is not None, "a new version was taken for the write"
        if self.to == "deleted":
            return Deleted(taken)
        assert self.data is not None
        return Versioned(self.data, taken)

    def change(self, version: int | None) -> Change[bytes]:
        """What the write did."""
        return Change(self.found, self.after(version))


Decision: TypeAlias = Write | Change[bytes] | None
"""A write decided (`Write`), the change its write id recorded earlier, or nothing to do."""

Decide: TypeAlias = Callable[[RawState, Receipt | None], Decision]
"""Decides a write from the key's state and its write id's record."""

Written: TypeAlias = tuple[Change[bytes], bool] | None
"""What a write did and whether it is the change its write id recorded earlier (a replay);
``None`` when there was nothing to write."""


def _replay(
    store: str, key: object, write_id: str | None, receipt: Receipt | None
) -> Change[bytes] | None:
    if write_id is None or receipt is None:
        return None
    return replayed_change(store, write_id, key, receipt.key, receipt.change, undone=receipt.undone)


def _record(write_id: str | None) -> Literal["none", "change"]:
    return "none" if write_id is None else "change"


def decide_put(
    store: str,
    key: object,
    data: bytes,
    expected: Expected,
    write_id: str | None,
    found: RawState,
    receipt: Receipt | None,
) -> Write | Change[bytes]:
    """A put: the change its write id recorded, or the write (see `Store.put`)."""
    replayed = _replay(store, key, write_id, receipt)
    if replayed is not None:
        return replayed
    check_expected(store, key, found, expected)
    return Write(key, found, "value", data, record=_record(write_id), write_id=write_id)


def decide_delete(
    store: str,
    key: object,
    expected: Expected,
    write_id: str | None,
    found: RawState,
    receipt: Receipt | None,
) -> Write | Change[bytes]:
    """A delete: a key without a value is left as it is (see `Store.delete`)."""
    replayed = _replay(store, key, write_id, receipt)
    if replayed is not None:
        return replayed
    check_expected(store, key, found, expected)
    to: Literal["deleted", "same"] = "deleted" if isinstance(found, Versioned) else "same"
    return Write(key, found, to, record=_record(write_id), write_id=write_id)


def decide_update(
    store: str,
    key: object,
    function: Callable[[bytes], bytes],
    write_id: str | None,
    found: RawState,
    receipt: Receipt | None,
) -> Write | Change[bytes]:
    """An update: `function` maps the encoded value to the new one (see `Store.update`)."""
    replayed = _replay(store, key, write_id, receipt)
    if replayed is not None:
        return replayed
    if not isinstance(found, Versioned):
        raise MissingKeyError(store, key)
    data = function(found.value)
    return Write(key, found, "value", data, record=_record(write_id), write_id=write_id)


def decide_undo(
    store: str,
    key: object,
    change: Change[_V] | None,
    write_id: str | None,
    found: RawState,
    receipt: Receipt | None,
    encode: Callable[[_V], bytes],
) -> Write | None:
    """An undo (see `Store.undo`): put back what `change` (or the change `write_id` recorded)
    replaced, if the key still holds what it left; ``None`` when there is nothing to write.

    Raises:
        VersionConflictError: someone else changed the key after the change.
    """
    check_undo_arguments(store, key, change, write_id, key if receipt is None else receipt.key)
    if receipt is not None and receipt.undone:
        return None  # undone already
    record: Literal["none", "undone"] = "none" if write_id is None else "undone"
    if change is not None:
        if check_undo(store, key, found, change):
            before = change.before
            if isinstance(before, Versioned):
                restored = Versioned(encode(before.value), before.version)
                return _restore(key, found, restored, record, write_id)
            return _restore(key, found, before, record, write_id)
    elif receipt is not None and receipt.change is not None:
        # No change given (the write's outcome was unknown): undo what its write id recorded.
        recorded = receipt.change
        if check_undo(store, key, found, recorded):
            return _restore(key, found, recorded.before, record, write_id)
    return None if write_id is None else Write(key, found, "same", record=record, write_id=write_id)


def _restore(
    key: object,
    found: RawState,
    state: RawState,
    record: Literal["none", "undone"],
    write_id: str | None,
) -> Write:
    if isinstance(state, Versioned):
        return Write(key, found, "value", state.value, state.version, record, write_id)
    if isinstance(state, Deleted):
        return Write(key, found, "deleted", None, state.version, record, write_id)
    return Write(key, found, "absent", record=record, write_id=write_id)


@final
@dataclass(frozen=True, slots=True)
class KeyCodec(Generic[_V]):
    """A database store's keys and values: which keys it holds, and values to bytes and back.

    Keys are all ``str`` or all ``int`` (fitting in 64 bits, as in SQLite and PostgreSQL), so
    the same keys work in every store. Keys are kept as text where a database has no other
    type (Redis, and the bookkeeping tables of PostgreSQL): `text` and `key` convert.
    """

    store: str
    key_type: type[str] | type[int]
    codec: Codec

    @staticmethod
    def of(store: str, key_type: object, codec: object) -> KeyCodec[_V]:
        """Check the options a store was given.

        Raises:
            TypeError: a key type other than ``str`` or ``int``, or a codec without
                ``encode`` and ``decode``.
        """
        if key_type is not str and key_type is not int:
            raise TypeError(f"store {store!r}: key_type must be str or int, got {key_type!r}")
        if not (
            callable(getattr(codec, "encode", None)) and callable(getattr(codec, "decode", None))
        ):
            raise TypeError(f"store {store!r}: codec must have encode and decode, got {codec!r}")
        return KeyCodec(store, key_type, cast(Codec, codec))

    @property
    def key_type_name(self) -> Literal["str", "int"]:
        return "int" if self.key_type is int else "str"

    def check_key(self, key: object) -> None:
        """Raise `TypeError` unless `key` is of the store's key type (an int in 64 bits)."""
        if isinstance(key, bool) or not isinstance(key, self.key_type):
            raise TypeError(
                f"store {self.store!r} holds {self.key_type.__name__} keys, got "
                f"{type(key).__name__} {key!r}"
            )
        if isinstance(key, int) and key not in INT64:
            raise TypeError(f"store {self.store!r}: key {key} does not fit in 64 bits")

    @staticmethod
    def text(key: object) -> str:
        """The key as text."""
        return str(key)

    def key(self, text: str) -> object:
        """A key from its text."""
        return int(text) if self.key_type is int else text

    def encode(self, key: object, value: _V) -> bytes:
        try:
            return self.codec.encode(value)
        except CodecError as error:
            raise CodecError(f"store {self.store!r}, key {key!r}: {error}") from error

    def decode(self, key: object, data: bytes) -> _V:
        try:
            return cast(_V, self.codec.decode(data))
        except CodecError as error:
            raise StoreError(
                self.store, f"store {self.store!r}, key {key!r}: unreadable value: {error}"
            ) from error

    def state(self, key: object, state: RawState) -> Versioned[_V] | Deleted | None:
        """A state with its value decoded."""
        if isinstance(state, Versioned):
            return Versioned(self.decode(key, state.value), state.version)
        return state

    def change(self, key: object, change: Change[bytes]) -> Change[_V]:
        """A change with its values decoded."""
        return Change(self.state(key, change.before), self.state(key, change.after))

    def value(self, key: object, found: Versioned[bytes] | None) -> Versioned[_V] | None:
        """What `get` returns for `found`."""
        return None if found is None else Versioned(self.decode(key, found.value), found.version)

    def values(self, rows: list[tuple[object, Versioned[bytes]]]) -> dict[object, Versioned[_V]]:
        """What `snapshot` returns for `rows`."""
        return {key: Versioned(self.decode(key, data.value), data.version) for key, data in rows}


def typed_change(
    keys: KeyCodec[_V], key: object, written: Written, *, fresh: Versioned[_V] | None
) -> Change[_V]:
    """What a put, delete or update did, values decoded. A change its write id recorded
    earlier comes back decoded; a fresh write's new value is the one given (`fresh`, its
    version replaced), not decoded again, as `SqliteStore` returns it."""
    assert written is not None, "a put, delete or update always decides something"
    change, replayed = written
    if replayed:
        return keys.change(key, change)
    before = keys.state(key, change.before)
    after = change.after
    if isinstance(after, Versioned):
        assert fresh is not None
        return Change(before, Versioned(fresh.value, after.version))
    return Change(before, after)


@final
@dataclass(frozen=True, slots=True)
class Planned(Generic[_V]):
    """A put, delete or update to make: how it decides once the key is read (`decide`), and
    what the store returns for what it did (`finish`)."""

    decide: Decide
    finish: Callable[[Written], Change[_V]]


def put_plan(
    keys: KeyCodec[_V], key: object, value: _V, expected: Expected, write_id: str | None
) -> Planned[_V]:
    """`Store.put`: the value is encoded now, so a value the codec refuses writes nothing."""
    data = keys.encode(key, value)

    def decide(found: RawState, receipt: Receipt | None) -> Decision:
        return decide_put(keys.store, key, data, expected, write_id, found, receipt)

    return Planned(decide, partial(typed_change, keys, key, fresh=Versioned(value, 0)))


def delete_plan(
    keys: KeyCodec[_V], key: object, expected: Expected, write_id: str | None
) -> Planned[_V]:
    """`Store.delete`."""

    def decide(found: RawState, receipt: Receipt | None) -> Decision:
        return decide_delete(keys.store, key, expected, write_id, found, receipt)

    return Planned(decide, partial(typed_change, keys, key, fresh=None))


def update_plan(
    keys: KeyCodec[_V], key: object, function: Callable[[_V], _V], write_id: str | None
) -> Planned[_V]:
    """`Store.update`: `function` runs when the write decides (again, if it decides again),
    and the value it returned last is the one the store returns."""
    values: list[_V] = []

    def apply(data: bytes) -> bytes:
        value = function(keys.decode(key, data))
        values.append(value)
        return keys.encode(key, value)

    def decide(found: RawState, receipt: Receipt | None) -> Decision:
        return decide_update(keys.store, key, apply, write_id, found, receipt)

    def finish(written: Written) -> Change[_V]:
        return typed_change(keys, key, written, fresh=Versioned(values[-1], 0) if values else None)

    return Planned(decide, finish)


def undo_plan(
    keys: KeyCodec[_V], key: object, change: Change[_V] | None, write_id: str | None
) -> Decide:
    """`Store.undo` (it returns nothing)."""

    def encode(value: _V) -> bytes:
        return keys.encode(key, value)

    def decide(found: RawState, receipt: Receipt | None) -> Decision:
        return decide_undo(keys.store, key, change, write_id, found, receipt, encode)

    return decide
