"""The submission queue of a `fsaga.journal.PostgresJournal` (see `fsaga.journal.postgres`,
whose `PostgresJournal` has these methods): sagas submitted by one process for any worker to
start, and the submissions parked because their starts kept failing.

A submission whose start fails (its definition is unknown to the worker, the definition refuses
its input, its input cannot be decoded) stays queued, and the worker that claimed it records
the error (`SubmissionQueue.record_start_error`) and keeps its lease until it runs out, so that
the next claim comes `ttl` seconds later, not at once. After `max_claims` claims that did not
start it (`SubmissionQueue.claim_pending`), the next claim parks it instead: no worker claims
it again until it is released (`SubmissionQueue.release_submission`), once what kept it from
starting is fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from fsaga._numbers import check_count, check_seconds
from fsaga.journal._postgres_listen import SubmissionListener
from fsaga.journal._postgres_sql import Statements
from fsaga.journal._postgres_support import Row, check_owner, pending_saga
from fsaga.journal.protocol import (
    SubmissionNotParkedError,
    UnknownSubmissionError,
    _check_bytes,
    _check_saga_fields,
)
from fsaga.journal.records import PendingSaga

__all__ = ["SubmissionQueue"]

logger = logging.getLogger("fsaga.journal.postgres")


class _Plumbing(Protocol):
    """What the queue needs of the journal."""

    @property
    def _sql(self) -> Statements: ...

    @property
    def _dsn(self) -> str: ...

    @property
    def _connect_timeout(self) -> float: ...

    @property
    def submission_channel(self) -> str: ...

    def _rows(self, statement: str, parameters: Mapping[str, object]) -> list[Row]: ...

    def _now(self) -> float | None: ...


class SubmissionQueue:
    """The submission queue's methods of `fsaga.journal.PostgresJournal`."""

    __slots__ = ()

    def submit(self: _Plumbing, saga_id: str, name: str, input: bytes) -> bool:
        """Record a saga for any worker to start: the one registered as `name`, on `input`
        (encoded with the codec the workers use), as `saga_id`.

        Returns:
            ``True`` when it was queued; ``False`` (nothing written) when `saga_id` is queued
            (or parked) or was started already.
        """
        _check_saga_fields(saga_id, name, 0, input)
        rows = self._rows(
            self._sql.submit,
            {
                "saga_id": saga_id,
                "name": name,
                "input": input,
                "channel": self.submission_channel,
                "now": self._now(),
            },
        )
        return bool(rows)

    def claim_pending(
        self: _Plumbing, owner: str, *, ttl: float, limit: int = 1, max_claims: int | None = None
    ) -> list[PendingSaga]:
        """Take, for `ttl` seconds, the lease of up to `limit` submitted sagas nobody is
        starting (none claimed them, or their claimer's lease ran out), oldest first, skipping
        those another worker is claiming.

        The worker starts each one (`fsaga.durable.DurableSagas.start` with its name, decoded
        input and id) through `as_owner`: the start creates the saga with the worker's lease
        and takes it off the queue, in one commit. A start that fails before that leaves the
        submission queued: the worker records why (`record_start_error`), and the next claim
        comes once its lease runs out.

        Args:
            owner: the worker.
            ttl: the lease's length, in seconds.
            limit: the most submissions to claim.
            max_claims: with it, a submission claimed that many times already (and still
                queued: none of those claims started it) is parked rather than claimed again
                (`parked_submissions`, `release_submission`). ``None``: never parked.

        Returns:
            The claimed sagas, oldest first, each with the worker's `PendingSaga.lease`.
        """
        check_owner(owner)
        ttl = check_seconds(ttl, what="ttl")
        limit = check_count(limit, what="limit", minimum=1)
        if max_claims is not None:
            max_claims = check_count(max_claims, what="max_claims", minimum=1)
        claimed: list[PendingSaga] = []
        while len(claimed) < limit:
            rows = self._rows(
                self._sql.claim_pending,
                {
                    "owner": owner,
                    "ttl": ttl,
                    "limit": limit - len(claimed),
                    "max_claims": max_claims,
                    "now": self._now(),
                },
            )
            found = [pending_saga(row) for row in rows]
            parked = [pending for pending in found if pending.parked]
            for submission in parked:
                logger.warning(
                    "parked submission %s (%s): %d claims did not start it; see why with "
                    "`fsaga journal show-submission %s`, and release it once it can start",
                    submission.saga_id,
                    submission.name,
                    submission.claims,
                    submission.saga_id,
                )
            claimed += [pending for pending in found if not pending.parked]
            if not parked:
                break  # else claim again in place of those parked: there may be more
        return sorted(claimed, key=lambda pending: (pending.submitted_at, pending.saga_id))

    def record_start_error(self: _Plumbing, saga_id: str, owner: str, error: bytes) -> bool:
        """Note why the start of a claimed submission failed (the encoded error), for
        `parked_submissions` and `submission` to say.

        Returns:
            ``True`` when it was noted; ``False`` (nothing written) when `owner` does not hold
            the submission's live lease, or the submission left the queue (it started).
        """
        check_owner(owner)
        _check_bytes("error", error)
        rows = self._rows(
            self._sql.record_start_error,
            {"saga_id": saga_id, "owner": owner, "error": error, "now": self._now()},
        )
        return bool(rows[0][0])

    def listen(self: _Plumbing) -> SubmissionListener:
        """A connection of its own that ``LISTEN``s on `submission_channel`: a worker waits on
        it (`SubmissionListener.wait`) between its sweeps, so that a submitted saga starts at
        once. Use it as a context manager (or `SubmissionListener.close` it); it listens from
        the moment the block starts, and reconnects by itself if the server restarts.
        """
        return SubmissionListener(
            self._dsn, self.submission_channel, connect_timeout=self._connect_timeout
        )

    def pending(self: _Plumbing) -> list[PendingSaga]:
        """Every submitted saga queued and not started yet, oldest first (not those parked)."""
        return [pending_saga(row) for row in self._rows(self._sql.pending, {})]

    def parked_submissions(self: _Plumbing) -> list[PendingSaga]:
        """Every submission parked because its starts kept failing, in the order they were
        parked; each with its `PendingSaga.last_error`, if its last start recorded one."""
        return [pending_saga(row) for row in self._rows(self._sql.parked_submissions, {})]

    def submission(self: _Plumbing, saga_id: str) -> PendingSaga | None:
        """The submission `saga_id`, queued or parked; ``None`` if there is none (it was never
        submitted, or it started)."""
        rows = self._rows(self._sql.submission, {"saga_id": saga_id})
        return pending_saga(rows[0]) if rows else None

    def release_submission(self: _Plumbing, saga_id: str) -> PendingSaga:
        """Queue a parked submission again, with its count of claims reset, and notify the
        workers. Release it once what kept it from starting is fixed (its definition deployed
        to the workers, say).

        Returns:
            The submission as it is now.

        Raises:
            UnknownSubmissionError: no submission `saga_id` (it was never submitted, or it
                started).
            SubmissionNotParkedError: the submission is queued, not parked (nothing is
                written).
        """
        rows = self._rows(
            self._sql.release_submission,
            {"saga_id": saga_id, "channel": self.submission_channel},
        )
        if not rows:
            if not self._rows(self._sql.submission, {"saga_id": saga_id}):
                raise UnknownSubmissionError(saga_id)
            raise SubmissionNotParkedError(saga_id)
        logger.debug("submission %s released", saga_id)
        return pending_saga(rows[0])
