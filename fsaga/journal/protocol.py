"""The `Journal` protocol a durable run writes to, and the errors journals raise.

A journal is deliberately small: a saga record created once, an append-only timeline of
entries, an outcome written once, and a recovery counter. Every write is conditional, so two
processes (a run and a recovery, or two recoveries) that race on one saga cannot both win:

- `Journal.create` never overwrites: the second start of an id finds the first one's record;
- `Journal.append` is a compare-and-set on the timeline: a batch must start exactly at the next
  ``seq``, so of two writers that read the same timeline only the first can extend it, and the
  other gets `EntrySequenceError` before it runs the effect it meant to record;
- `Journal.finish` only applies while the saga is running: exactly one outcome;
- `Journal.claim_for_recovery` counts recoveries and parks a saga as ``"dead"`` past a limit;
- `Journal.release` only takes a dead saga back to running;
- `Journal.record_recovery_error` only notes an error on a running saga.

Every method is atomic: a call that raises has written nothing.

Implementations: `fsaga.journal.MemoryJournal` (tests), `fsaga.journal.SqliteJournal`, and
`fsaga.journal.PostgresJournal` (several machines; it adds owner leases, `fsaga.journal.Leases`,
and a journal view whose writes are fenced by them, which raise `LeaseLostError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self

from fsaga.journal.records import (
    FINISHED_STATUSES,
    SAGA_STATUSES,
    Entry,
    FinishedStatus,
    SagaRecord,
    SagaStatus,
)

__all__ = [
    "EntrySequenceError",
    "Journal",
    "JournalClosedError",
    "JournalCorruptError",
    "JournalError",
    "JournalVersionError",
    "LeaseLostError",
    "SagaFinishedError",
    "SagaNotDeadError",
    "SubmissionNotParkedError",
    "UnknownSagaError",
    "UnknownSubmissionError",
]


class JournalError(Exception):
    """Something went wrong in the journal itself (its storage failed, or it is unusable)."""


class JournalClosedError(JournalError):
    """The journal was used after `Journal.close`."""


class JournalCorruptError(JournalError):
    """The journal's file is not a journal database, or is damaged.

    Attributes:
        path: the file.
    """

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(
            f"journal file {path!r} is not a valid SQLite database or is damaged ({detail}); "
            "restore it from a backup, or move it aside to start a new journal"
        )
        self.path = path


class JournalVersionError(JournalError):
    """The journal was written by a newer fsaga, with a schema this one does not know.

    Attributes:
        path: the file (for a PostgreSQL journal: its database and schema, as
            ``"database 'orders', schema 'fsaga'"``).
        found: the journal's schema version.
        supported: the newest schema version this fsaga reads.
    """

    def __init__(
        self, path: str, found: int, supported: int, *, subject: str | None = None
    ) -> None:
        where = f"journal file {path!r}" if subject is None else subject
        super().__init__(
            f"{where} has schema version {found}, but this fsaga supports up to "
            f"version {supported}: open it with the newer fsaga that wrote it"
        )
        self.path = path
        self.found = found
        self.supported = supported


class UnknownSagaError(JournalError, LookupError):
    """No saga with this id is in the journal.

    Attributes:
        saga_id: the id.
    """

    def __init__(self, saga_id: str) -> None:
        super().__init__(f"no saga {saga_id!r} in the journal")
        self.saga_id = saga_id


class SagaFinishedError(JournalError):
    """Entries were appended to a saga that is no longer running.

    Attributes:
        saga_id: the saga.
        status: its status.
    """

    def __init__(self, saga_id: str, status: SagaStatus) -> None:
        super().__init__(
            f"saga {saga_id!r} is {status}, not running: nothing more can be recorded for it"
        )
        self.saga_id = saga_id
        self.status = status


class SagaNotDeadError(JournalError):
    """A saga that is not dead was asked to be released for recovery.

    Attributes:
        saga_id: the saga.
        status: its status.
    """

    def __init__(self, saga_id: str, status: SagaStatus) -> None:
        super().__init__(
            f"saga {saga_id!r} is {status}, not dead: only a saga parked as dead can be released "
            "for recovery"
        )
        self.saga_id = saga_id
        self.status = status


class UnknownSubmissionError(JournalError, LookupError):
    """No submission with this id waits in the journal: it was never submitted, or it started
    (`fsaga.journal.PostgresJournal.submit`).

    Attributes:
        saga_id: the id.
    """

    def __init__(self, saga_id: str) -> None:
        super().__init__(
            f"no submission {saga_id!r} in the journal: it was never submitted, or it started"
        )
        self.saga_id = saga_id


class SubmissionNotParkedError(JournalError):
    """A submission that is not parked was asked to be released
    (`fsaga.journal.PostgresJournal.release_submission`).

    Attributes:
        saga_id: the submission's saga id.
    """

    def __init__(self, saga_id: str) -> None:
        super().__init__(
            f"submission {saga_id!r} is queued, not parked: only a parked submission can be "
            "released"
        )
        self.saga_id = saga_id


class LeaseLostError(JournalError):
    """A worker wrote for a saga whose lease it no longer holds: nothing was written.

    The lease expired (the worker did not renew it in time) or another worker took it over, so
    the saga is no longer this worker's to advance: it must stop working on it at once (see
    docs/concepts.md#rule-11: one worker drives a saga at a time).

    Attributes:
        saga_id: the saga.
        owner: the worker that wrote.
        holder: the worker holding the lease now, if any.
        expires_at: when the current lease (the holder's, or the writer's own, expired one)
            runs out, in seconds since the epoch on the database's clock; ``None`` when the saga
            has no lease.
    """

    def __init__(
        self, saga_id: str, owner: str, *, holder: str | None, expires_at: float | None
    ) -> None:
        if holder is not None and holder != owner:
            why = f"worker {holder!r} holds it now"
        elif holder is not None:
            why = "it ran out: it was not renewed in time, or was released"
        else:
            why = "nobody holds it now"
        super().__init__(
            f"saga {saga_id!r}: worker {owner!r} no longer holds its lease ({why}); nothing was "
            "written, and the worker must stop working on the saga"
        )
        self.saga_id = saga_id
        self.owner = owner
        self.holder = holder
        self.expires_at = expires_at


class EntrySequenceError(JournalError, ValueError):
    """A batch of entries does not continue the saga's timeline exactly.

    Either the batch itself is not numbered ``n, n+1, ...`` or ``n`` is not the next ``seq``:
    most likely another writer (a concurrent run or recovery) extended the timeline first. The
    writer that gets this error must stop advancing the saga: it is not its owner any more.

    Attributes:
        saga_id: the saga.
        expected: the ``seq`` the batch had to start at.
        got: the ``seq`` values of the batch.
    """

    def __init__(self, saga_id: str, expected: int, got: Sequence[int]) -> None:
        super().__init__(
            f"entries for saga {saga_id!r} must be numbered {expected}, {expected + 1}, ... "
            f"with no gaps, got {list(got)}; another writer may have advanced the saga"
        )
        self.saga_id = saga_id
        self.expected = expected
        self.got = tuple(got)


class Journal(Protocol):
    """Durable storage for sagas and their timelines; see the module docstring for the rules.

    Implementations may subclass it to inherit the context manager methods.
    """

    def create(
        self,
        saga_id: str,
        name: str,
        version: int,
        input: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> tuple[SagaRecord, bool]:
        """Create a running saga, or find the existing one.

        Args:
            saga_id: the run's id (non-empty).
            name: its definition's name.
            version: its definition's version.
            input: the encoded input.
            entries: first entries (``seq`` from 1) written in the same commit when, and only
                when, the saga is new: a start and its first intent cost one commit.

        Returns:
            ``(record, True)`` when the saga was created; ``(existing_record, False)`` when one
            with this id already exists, which is never changed (whatever its name, version or
            status: comparing them is the caller's business).

        Raises:
            EntrySequenceError: `entries` are not numbered from 1 (nothing is written).
        """
        ...

    def append(self, saga_id: str, entries: Sequence[Entry]) -> None:
        """Append `entries` to the saga's timeline, all in one commit.

        Raises:
            UnknownSagaError: no such saga.
            SagaFinishedError: the saga is not running.
            EntrySequenceError: the batch does not start at the next ``seq`` or has gaps.
        """
        ...

    def entries(self, saga_id: str) -> list[Entry]:
        """The saga's timeline, in ``seq`` order.

        Raises:
            UnknownSagaError: no such saga.
        """
        ...

    def finish(
        self,
        saga_id: str,
        status: FinishedStatus,
        outcome: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> bool:
        """Write the saga's outcome, once.

        Args:
            saga_id: the saga.
            status: how it ended (a `FinishedStatus`).
            outcome: the encoded outcome.
            entries: last entries, appended in the same commit as the outcome.

        Returns:
            ``True`` when this call finished the saga; ``False`` (and nothing written) when it
            was not running any more: someone else wrote its outcome, or it is dead.

        Raises:
            ValueError: `status` is not a `FinishedStatus`.
            UnknownSagaError: no such saga.
            EntrySequenceError: the saga is running but `entries` do not continue its timeline.
        """
        ...

    def get(self, saga_id: str) -> SagaRecord | None:
        """The saga's record, or ``None`` when there is no such saga."""
        ...

    def sagas(self, status: SagaStatus | None = None) -> list[SagaRecord]:
        """Every saga (with this status, when given), by creation time, then id.

        Raises:
            ValueError: `status` is not a `SagaStatus`.
        """
        ...

    def claim_for_recovery(
        self, saga_id: str, *, max_attempts: int, stale_before: float | None = None
    ) -> bool:
        """Count one more recovery of a running saga, or park it as dead.

        Args:
            saga_id: the saga.
            max_attempts: how many recoveries a saga gets; the claim that would be one more
                sets its status to ``"dead"`` instead (the dead-letter state, listed by
                ``sagas("dead")``) and returns ``False``.
            stale_before: when given, claim only a saga that nothing was written to since this
                time (`SagaRecord.updated_at` before it). A claim itself counts as a write, so
                of two recoverers that race, only the first claims.

        Returns:
            ``True`` when the caller may recover the saga (its `SagaRecord.last_recovery_at`
            is now, its `SagaRecord.last_recovery_error` cleared); ``False`` when it is not
            running, was written to since `stale_before`, or just became dead.

        Raises:
            ValueError: `max_attempts` is negative.
            UnknownSagaError: no such saga.
        """
        ...

    def record_recovery_error(self, saga_id: str, error: bytes) -> bool:
        """Note the encoded error that ended the saga's current recovery attempt
        (`SagaRecord.last_recovery_error`), so that a saga parked as dead says why.

        Returns:
            ``True`` when it was noted; ``False`` (nothing written) when the saga is not
            running.

        Raises:
            UnknownSagaError: no such saga.
        """
        ...

    def release(self, saga_id: str) -> SagaRecord:
        """Take a dead saga back to running, with its recovery count reset, so that the next
        recovery takes it over.

        Its `SagaRecord.updated_at` is left as it was (the saga counts as abandoned at once),
        and so is what it says about its last recovery.

        Returns:
            The released saga's record.

        Raises:
            UnknownSagaError: no such saga.
            SagaNotDeadError: the saga is not dead (nothing is written).
        """
        ...

    def close(self) -> None:
        """Release the journal's resources; further use raises `JournalClosedError`.

        Closing twice does nothing.
        """
        ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _check_saga_fields(saga_id: str, name: str, version: int, input: bytes) -> None:
    """Reject fields that a journal could store but a runner could not use."""
    if not _is_non_empty_str(saga_id):
        raise ValueError(f"saga_id must be a non-empty str, got {saga_id!r}")
    if not _is_non_empty_str(name):
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if not _is_int(version):
        raise TypeError(f"version must be an int, got {version!r}")
    if not isinstance(input, bytes):
        raise TypeError(f"input must be bytes (encode it with a codec), got {type(input)}")


def _check_finished_status(status: str) -> None:
    if status not in FINISHED_STATUSES:
        raise ValueError(f"a saga finishes with one of {FINISHED_STATUSES}, got {status!r}")


def _check_bytes(what: str, value: bytes) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{what} must be bytes (encode it with a codec), got {type(value)}")


def _check_status(status: str | None) -> None:
    if status is not None and status not in SAGA_STATUSES:
        raise ValueError(f"status must be one of {SAGA_STATUSES} or None, got {status!r}")


def _check_max_attempts(max_attempts: int) -> None:
    if not _is_int(max_attempts) or max_attempts < 0:
        raise ValueError(f"max_attempts must be an int of 0 or more, got {max_attempts!r}")


def _check_sequence(saga_id: str, next_seq: int, entries: Sequence[Entry]) -> None:
    """Raise `EntrySequenceError` unless `entries` are numbered ``next_seq, next_seq + 1, ...``."""
    items: Sequence[object] = entries
    for item in items:
        if not isinstance(item, Entry):
            raise TypeError(f"entries must be Entry values, got {type(item)}")
    if [entry.seq for entry in entries] != list(range(next_seq, next_seq + len(entries))):
        raise EntrySequenceError(saga_id, next_seq, [entry.seq for entry in entries])


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_non_empty_str(value: object) -> bool:
    return isinstance(value, str) and value != ""
