"""What can go wrong with a store: every error names the store and, where there is one, the key.

All of them derive from `StoreError`. `StoreUnavailableError` is the one worth another attempt
(the generated steps retry it); the others say something that another attempt cannot change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsaga.stores.protocol import Absent

__all__ = [
    "MissingKeyError",
    "ReusedWriteIdError",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "VersionConflictError",
]


class StoreError(Exception):
    """Base of the errors a store raises about its own state.

    Attributes:
        store: the store's name.
    """

    def __init__(self, store: str, message: str) -> None:
        super().__init__(message)
        self.store = store


class StoreClosedError(StoreError):
    """The store was closed: it reads and writes nothing any more."""

    def __init__(self, store: str, *, step: str | None = None) -> None:
        where = "" if step is None else f"step {step!r}: "
        super().__init__(store, f"{where}store {store!r} is closed")


class StoreUnavailableError(StoreError):
    """The store could not be reached or was busy (a lock held too long, an I/O error).

    Nothing was written, so another attempt is safe; the generated steps and compensations of
    `fsaga.stores` retry it.
    """


class MissingKeyError(StoreError, KeyError):
    """An update found no value to update.

    Attributes:
        key: the key that holds no value.
    """

    def __init__(self, store: str, key: object) -> None:
        super().__init__(store, f"store {store!r} holds no value under key {key!r} to update")
        self.key = key

    def __str__(self) -> str:  # KeyError would print the message's repr
        return str(self.args[0])


class VersionConflictError(StoreError):
    """A conditional write found the key in another state than the one it expected.

    From a generated compensation this means someone else changed the key after the saga
    wrote it: the compensation leaves their value (or their deletion) alone, and the saga ends
    in `PartialFailure` with this error, which names the key and both versions.

    Attributes:
        key: the key written.
        expected: the version the write expected (`ABSENT`: no value). For an undo, the version
            of the state the saga's write left: its value's, or its deletion's.
        found: the version found: a value's, ``None`` when the key holds no value. For an
            undo, a deletion's version when the key's value was deleted, ``None`` when it
            never held one.
        expected_deleted: `expected` is the version of a deletion (the saga's write deleted
            the value).
        found_deleted: `found` is the version of a deletion (someone deleted the value).
    """

    def __init__(
        self,
        store: str,
        key: object,
        expected: int | Absent,
        found: int | None,
        *,
        undo: bool = False,
        expected_deleted: bool = False,
        found_deleted: bool = False,
    ) -> None:
        left = _describe(expected, deleted=expected_deleted)
        seen = _describe(found, deleted=found_deleted)
        if undo:
            kept = "deletion" if found_deleted else "value"
            message = (
                f"store {store!r}, key {key!r}: not undone, someone else changed it after this "
                f"saga wrote it (the saga left {left}, found {seen}); their {kept} was kept"
            )
        else:
            message = f"store {store!r}, key {key!r}: expected {left}, found {seen}"
        super().__init__(store, message)
        self.key = key
        self.expected = expected
        self.found = found
        self.expected_deleted = expected_deleted
        self.found_deleted = found_deleted


class ReusedWriteIdError(StoreError):
    """A write id came back for another write than the one it was first given to.

    Write ids are steps' idempotency keys (``saga_id/path``), so this means a saga id was used
    for two runs, or a saga wrote another key at the same path on a replay.

    Attributes:
        write_id: the write id.
    """

    def __init__(self, store: str, write_id: str, reason: str) -> None:
        super().__init__(store, f"store {store!r}: write id {write_id!r} {reason}")
        self.write_id = write_id


def _describe(version: object, *, deleted: bool = False) -> str:
    if deleted:
        return f"no value (deleted at version {version})"
    if isinstance(version, int):
        return f"version {version}"
    return "no value"  # None, or ABSENT
