"""A journal the process dies in: `CrashingJournal` raises `Crash` at a chosen write, for the
property tests that kill durable runs at every journal write (tests/test_durable_properties.py,
tests/test_store_properties.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

from fsaga.journal import Entry, Journal
from fsaga.journal.records import FinishedStatus, SagaRecord, SagaStatus

_T = TypeVar("_T")


class Crash(BaseException):
    """The process running the saga dies here."""


class PassingJournal(Journal):
    """`journal`, every call passed through: the base of the test journals that change what
    some writes do (they override ``create``, ``append`` and ``finish``)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def create(
        self, saga_id: str, name: str, version: int, input: bytes, *, entries: Sequence[Entry] = ()
    ) -> tuple[SagaRecord, bool]:
        return self.journal.create(saga_id, name, version, input, entries=entries)

    def append(self, saga_id: str, entries: Sequence[Entry]) -> None:
        self.journal.append(saga_id, entries)

    def entries(self, saga_id: str) -> list[Entry]:
        return self.journal.entries(saga_id)

    def finish(
        self,
        saga_id: str,
        status: FinishedStatus,
        outcome: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> bool:
        return self.journal.finish(saga_id, status, outcome, entries=entries)

    def get(self, saga_id: str) -> SagaRecord | None:
        return self.journal.get(saga_id)

    def sagas(self, status: SagaStatus | None = None) -> list[SagaRecord]:
        return self.journal.sagas(status)

    def claim_for_recovery(
        self, saga_id: str, *, max_attempts: int, stale_before: float | None = None
    ) -> bool:
        return self.journal.claim_for_recovery(
            saga_id, max_attempts=max_attempts, stale_before=stale_before
        )

    def record_recovery_error(self, saga_id: str, error: bytes) -> bool:
        return self.journal.record_recovery_error(saga_id, error)

    def release(self, saga_id: str) -> SagaRecord:
        return self.journal.release(saga_id)

    def close(self) -> None:
        self.journal.close()


class CrashingJournal(PassingJournal):
    """`journal`, until the process dies at its write number `crash_at` (``append``, ``finish``
    and a ``create`` that records entries count, from 0): that write raises `Crash` before it is
    performed, or just after when `after`, and so does every later write. `on_crash` is called
    once, at the crash.

    Reads and the bookkeeping writes (``claim_for_recovery``, ``record_recovery_error``,
    ``release``, ``create`` without entries) pass through.
    """

    def __init__(
        self,
        journal: Journal,
        *,
        crash_at: int | None = None,
        after: bool = False,
        on_crash: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(journal)
        self.crash_at = crash_at
        self.after = after
        self.on_crash = on_crash
        self.writes = 0
        self.crashed = False

    def _write(self, perform: Callable[[], _T]) -> _T:
        if self.crashed:
            raise Crash("the process is dead")
        index = self.writes
        self.writes += 1
        if index != self.crash_at:
            return perform()
        self.crashed = True
        if self.after:
            perform()
        self.on_crash()
        raise Crash(f"the process died at journal write {index}")

    def create(
        self, saga_id: str, name: str, version: int, input: bytes, *, entries: Sequence[Entry] = ()
    ) -> tuple[SagaRecord, bool]:
        create = partial(self.journal.create, saga_id, name, version, input, entries=entries)
        # A creation that records entries (a first intent) is a transition like an append.
        return self._write(create) if entries else create()

    def append(self, saga_id: str, entries: Sequence[Entry]) -> None:
        self._write(partial(self.journal.append, saga_id, entries))

    def finish(
        self,
        saga_id: str,
        status: FinishedStatus,
        outcome: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> bool:
        finish = partial(self.journal.finish, saga_id, status, outcome, entries=entries)
        return self._write(finish)
