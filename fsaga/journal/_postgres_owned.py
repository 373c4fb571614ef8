"""`OwnedJournal`: a `fsaga.journal.PostgresJournal` as one worker writes to it (see
`fsaga.journal.postgres`, which exports it).

The view holds no state of the journal's: every call goes to the journal's shared
implementation, with the worker's name as the owner whose lease the write needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, final

from fsaga._numbers import check_seconds
from fsaga.journal._postgres_support import check_owner
from fsaga.journal.protocol import Journal
from fsaga.journal.records import Entry, FinishedStatus, SagaRecord, SagaStatus

if TYPE_CHECKING:
    from fsaga.journal.postgres import PostgresJournal

__all__ = ["OwnedJournal"]


@final
class OwnedJournal(Journal):
    """A `PostgresJournal` as one worker writes to it: the `Journal` protocol, with every write
    to a saga fenced by the worker's lease.

    Get one from `PostgresJournal.as_owner` and hand it to `fsaga.durable.DurableSagas` as its
    journal. A saga it creates (a start) begins with the worker's lease, for `ttl` seconds,
    taking it off the submission queue if it was submitted. `append`, `finish`,
    `claim_for_recovery` and `record_recovery_error` go through only while the worker holds
    the saga's live lease (taken by the start, `PostgresJournal.acquire`,
    `PostgresJournal.claim_expired` or `PostgresJournal.claim_pending`, renewed by a
    `fsaga.journal.LeaseKeeper`); otherwise they raise `LeaseLostError` and write nothing, and a
    run stops at once (the error comes out of ``start`` or ``recover``). Reads, and `release`,
    are the journal's own. Finishing a saga, or parking it as dead, ends its lease.

    Closing the view does nothing: the journal it views stays open.

    Attributes:
        journal: the journal.
        owner: the worker.
        ttl: the lease a saga this view creates starts with, in seconds.
    """

    __slots__ = ("journal", "owner", "ttl")

    def __init__(self, journal: PostgresJournal, owner: str, *, ttl: float) -> None:
        check_owner(owner)
        self.journal = journal
        self.owner = owner
        self.ttl = check_seconds(ttl, what="ttl")

    def __repr__(self) -> str:
        return f"OwnedJournal({self.journal!r}, owner={self.owner!r}, ttl={self.ttl:g})"

    def create(
        self,
        saga_id: str,
        name: str,
        version: int,
        input: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> tuple[SagaRecord, bool]:
        """See `Journal.create`; a new saga starts with the worker's lease."""
        return self.journal._create(
            saga_id, name, version, input, entries, owner=self.owner, ttl=self.ttl
        )

    def append(self, saga_id: str, entries: Sequence[Entry]) -> None:
        """See `Journal.append`.

        Raises:
            LeaseLostError: the worker does not hold the saga's lease (nothing is written).
        """
        self.journal._append(saga_id, entries, owner=self.owner)

    def entries(self, saga_id: str) -> list[Entry]:
        """See `Journal.entries`."""
        return self.journal.entries(saga_id)

    def finish(
        self,
        saga_id: str,
        status: FinishedStatus,
        outcome: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> bool:
        """See `Journal.finish`.

        Raises:
            LeaseLostError: the saga is running, and the worker does not hold its lease
                (nothing is written).
        """
        return self.journal._finish(saga_id, status, outcome, entries, owner=self.owner)

    def get(self, saga_id: str) -> SagaRecord | None:
        """See `Journal.get`."""
        return self.journal.get(saga_id)

    def sagas(self, status: SagaStatus | None = None) -> list[SagaRecord]:
        """See `Journal.sagas`."""
        return self.journal.sagas(status)

    def claim_for_recovery(
        self, saga_id: str, *, max_attempts: int, stale_before: float | None = None
    ) -> bool:
        """See `Journal.claim_for_recovery`.

        Raises:
            LeaseLostError: the saga is running, and the worker does not hold its lease.
        """
        return self.journal._claim_for_recovery(
            saga_id, max_attempts, stale_before, owner=self.owner
        )

    def record_recovery_error(self, saga_id: str, error: bytes) -> bool:
        """See `Journal.record_recovery_error`.

        Raises:
            LeaseLostError: the saga is running, and the worker does not hold its lease.
        """
        return self.journal._record_recovery_error(saga_id, error, owner=self.owner)

    def release(self, saga_id: str) -> SagaRecord:
        """See `Journal.release`."""
        return self.journal.release(saga_id)

    def close(self) -> None:
        """Nothing: the journal stays open (close it when its last user is done)."""
