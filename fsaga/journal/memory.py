"""`MemoryJournal`: the `Journal` protocol in a dict, for tests and examples.

It keeps every rule of the protocol (conditional writes, atomic batches, dead-lettering) and is
safe to share between threads, but nothing survives the process: use
`fsaga.journal.SqliteJournal` for durable runs.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence

from fsaga.journal.protocol import (
    Journal,
    JournalClosedError,
    SagaFinishedError,
    SagaNotDeadError,
    UnknownSagaError,
    _check_bytes,
    _check_finished_status,
    _check_max_attempts,
    _check_saga_fields,
    _check_sequence,
    _check_status,
)
from fsaga.journal.records import HEARTBEAT, Entry, FinishedStatus, SagaRecord, SagaStatus

__all__ = ["MemoryJournal"]


class MemoryJournal(Journal):
    """A `Journal` held in memory, guarded by a lock.

    Args:
        clock: gives the timestamps of records (seconds since the epoch); pass a fake one for
            deterministic tests.

    >>> journal = MemoryJournal(clock=lambda: 100.0)
    >>> journal.create("order-1", "order", 1, b'{"sku":"book"}')[1]
    True
    >>> journal.append("order-1", [Entry(1, "intent", "charge", 1)])
    >>> journal.finish("order-1", "succeeded", b'"done"')
    True
    >>> journal.finish("order-1", "failed", b'"too late"')
    False
    >>> journal.get("order-1").status
    'succeeded'
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sagas: dict[str, SagaRecord] = {}
        self._entries: dict[str, list[Entry]] = {}
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._sagas)} sagas"
        return f"MemoryJournal({state})"

    def create(
        self,
        saga_id: str,
        name: str,
        version: int,
        input: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> tuple[SagaRecord, bool]:
        """See `Journal.create`."""
        _check_saga_fields(saga_id, name, version, input)
        _check_sequence(saga_id, 1, entries)
        with self._lock:
            self._check_open()
            existing = self._sagas.get(saga_id)
            if existing is not None:
                return existing, False
            now = float(self._clock())
            record = SagaRecord(
                saga_id=saga_id,
                name=name,
                version=version,
                input=input,
                status="running",
                outcome=None,
                recovery_attempts=0,
                created_at=now,
                updated_at=now,
            )
            self._sagas[saga_id] = record
            self._entries[saga_id] = list(entries)
            return record, True

    def append(self, saga_id: str, entries: Sequence[Entry]) -> None:
        """See `Journal.append`."""
        with self._lock:
            record = self._record(saga_id)
            if record.finished:
                raise SagaFinishedError(saga_id, record.status)
            timeline = self._entries[saga_id]
            _check_sequence(saga_id, len(timeline) + 1, entries)
            if entries:
                now = float(self._clock())
                timeline.extend(entries)
                if now - record.updated_at >= HEARTBEAT:
                    self._sagas[saga_id] = dataclasses.replace(record, updated_at=now)

    def entries(self, saga_id: str) -> list[Entry]:
        """See `Journal.entries`."""
        with self._lock:
            self._record(saga_id)
            return list(self._entries[saga_id])

    def finish(
        self,
        saga_id: str,
        status: FinishedStatus,
        outcome: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> bool:
        """See `Journal.finish`."""
        _check_finished_status(status)
        _check_bytes("outcome", outcome)
        with self._lock:
            record = self._record(saga_id)
            if record.finished:
                return False
            timeline = self._entries[saga_id]
            _check_sequence(saga_id, len(timeline) + 1, entries)
            finished = dataclasses.replace(
                record, status=status, outcome=outcome, updated_at=float(self._clock())
            )
            timeline.extend(entries)
            self._sagas[saga_id] = finished
            return True

    def get(self, saga_id: str) -> SagaRecord | None:
        """See `Journal.get`."""
        with self._lock:
            self._check_open()
            return self._sagas.get(saga_id)

    def sagas(self, status: SagaStatus | None = None) -> list[SagaRecord]:
        """See `Journal.sagas`."""
        _check_status(status)
        with self._lock:
            self._check_open()
            found = [
                record
                for record in self._sagas.values()
                if status is None or record.status == status
            ]
        return sorted(found, key=lambda record: (record.created_at, record.saga_id))

    def claim_for_recovery(
        self, saga_id: str, *, max_attempts: int, stale_before: float | None = None
    ) -> bool:
        """See `Journal.claim_for_recovery`."""
        _check_max_attempts(max_attempts)
        with self._lock:
            record = self._record(saga_id)
            if record.finished:
                return False
            if stale_before is not None and record.updated_at >= stale_before:
                return False
            now = float(self._clock())
            if record.recovery_attempts >= max_attempts:
                self._sagas[saga_id] = dataclasses.replace(record, status="dead", updated_at=now)
                return False
            self._sagas[saga_id] = dataclasses.replace(
                record,
                recovery_attempts=record.recovery_attempts + 1,
                updated_at=now,
                last_recovery_at=now,
                last_recovery_error=None,
            )
            return True

    def record_recovery_error(self, saga_id: str, error: bytes) -> bool:
        """See `Journal.record_recovery_error`."""
        _check_bytes("error", error)
        with self._lock:
            record = self._record(saga_id)
            if record.finished:
                return False
            self._sagas[saga_id] = dataclasses.replace(
                record, last_recovery_error=error, updated_at=float(self._clock())
            )
            return True

    def release(self, saga_id: str) -> SagaRecord:
        """See `Journal.release`."""
        with self._lock:
            record = self._record(saga_id)
            if record.status != "dead":
                raise SagaNotDeadError(saga_id, record.status)
            released = dataclasses.replace(record, status="running", recovery_attempts=0)
            self._sagas[saga_id] = released
            return released

    def close(self) -> None:
        """See `Journal.close`."""
        with self._lock:
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise JournalClosedError("the memory journal is closed")

    def _record(self, saga_id: str) -> SagaRecord:
        self._check_open()
        record = self._sagas.get(saga_id)
        if record is None:
            raise UnknownSagaError(saga_id)
        return record
