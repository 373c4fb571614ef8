"""The worker loop: `fsaga.durable.DurableSagas.run_worker` and `run_worker_async`.

A worker shares a journal with other workers (`fsaga.journal.PostgresJournal`) and, until it is
told to stop, takes the sagas submitted to the journal (`claim_pending`) and starts them, and
takes over the running sagas whose worker went away (`claim_expired`, its lease ran out) and
recovers them. It drives each saga through `PostgresJournal.as_owner`, under a
`fsaga.journal.LeaseKeeper` that renews the lease while effects run; a saga whose lease is lost
stops at its next journal write (it is fenced: docs/concepts.md#rule-11), and the worker goes
on with the others. Between sweeps it waits for a submission to be notified, at most `poll`
seconds. The journal failing (the server restarting, say) is logged and tried again at the
next sweep; it never ends the worker.

Told to stop (its `stop` event set, or SIGTERM on the command line), a worker claims nothing
more and lets the sagas it drives finish; those still running after `grace` seconds are handed
back: their leases are released, so another worker recovers them at once, and their next
journal write is refused.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, final, runtime_checkable

import anyio
import anyio.to_thread

from fsaga.durable.definitions import SagaDefinitions
from fsaga.durable.errors import SagaBusyError, SagaParkedError, describe_error
from fsaga.journal.codec import Codec, CodecError
from fsaga.journal.leases import LeaseKeeper, Leases
from fsaga.journal.protocol import Journal, JournalError, LeaseLostError
from fsaga.journal.records import Lease, PendingSaga
from fsaga.outcome import Outcome

if TYPE_CHECKING:
    from fsaga.durable.runs import DurableSagas

__all__ = ["SharedJournal", "SubmissionWaiter", "WorkerReport", "default_owner"]

logger = logging.getLogger(__name__)


class SubmissionWaiter(Protocol):
    """What a worker waits on between sweeps (`fsaga.journal.postgres.SubmissionListener`):
    it listens from the start of its ``with`` block to the end."""

    def __enter__(self) -> Self:
        """Start listening."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop listening."""
        ...

    def wait(self, timeout: float, *, stop: threading.Event | None = None) -> bool:
        """Block until a saga is submitted, `timeout` seconds pass or `stop` is set; whether
        one was (or may have been) submitted."""
        ...


@runtime_checkable
class SharedJournal(Leases, Protocol):
    """A journal workers share (`fsaga.journal.PostgresJournal`): leases, the submission queue,
    fenced views per worker, and notifications of submissions."""

    def as_owner(self, owner: str, *, ttl: float) -> Journal:
        """The journal as worker `owner` writes to it (fenced by its leases)."""
        ...

    def claim_pending(
        self, owner: str, *, ttl: float, limit: int = 1, max_claims: int | None = None
    ) -> list[PendingSaga]:
        """Leases on submitted sagas nobody is starting (parking those claimed `max_claims`
        times without starting)."""
        ...

    def record_start_error(self, saga_id: str, owner: str, error: bytes) -> bool:
        """Note why the start of a claimed submission failed."""
        ...

    def claim_expired(
        self,
        owner: str,
        *,
        ttl: float,
        limit: int = 1,
        definitions: Mapping[str, int] | None = None,
    ) -> list[Lease]:
        """Leases on running sagas nobody holds (of these definitions and versions only)."""
        ...

    def listen(self) -> SubmissionWaiter:
        """A waiter notified of submissions."""
        ...


@final
@dataclass(frozen=True, slots=True)
class WorkerReport:
    """What a worker did, once it stopped.

    Attributes:
        owner: the worker's name, the owner of its leases.
        started: submitted sagas it started and finished.
        recovered: sagas it took over and finished.
        lost: sagas it stopped driving because their lease was lost (or another worker had
            finished or taken them).
        failed: sagas it could not drive (an error other than the journal's, logged); each
            keeps its lease until it runs out, so another worker (or this one) tries later.
        handed_back: sagas still running when it stopped, past `grace`, whose leases it
            released.
    """

    owner: str
    started: int = 0
    recovered: int = 0
    lost: int = 0
    failed: int = 0
    handed_back: tuple[str, ...] = ()


def default_owner() -> str:
    """A worker name unique among the workers of one journal: host name and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class _Tally:
    started: int = 0
    recovered: int = 0
    lost: int = 0
    failed: int = 0
    handed_back: list[str] = field(default_factory=list)

    def report(self, owner: str) -> WorkerReport:
        return WorkerReport(
            owner,
            self.started,
            self.recovered,
            self.lost,
            self.failed,
            tuple(self.handed_back),
        )


@final
@dataclass(frozen=True, slots=True)
class _Work:
    """One saga claimed: a submission to start (`pending`), or a saga to recover."""

    saga_id: str
    pending: PendingSaga | None


@final
class _Worker:
    """The loop of one worker; `DurableSagas.run_worker` makes and runs it (not public)."""

    __slots__ = (
        "_codec",
        "_definitions",
        "_grace",
        "_journal",
        "_max_claims",
        "_owner",
        "_poll",
        "_runs",
        "_stop",
        "_ttl",
        "tally",
    )

    def __init__(
        self,
        journal: SharedJournal,
        runs: DurableSagas,
        definitions: SagaDefinitions,
        codec: Codec,
        *,
        owner: str,
        ttl: float,
        poll: float,
        grace: float,
        max_claims: int,
        stop: threading.Event,
    ) -> None:
        self._journal = journal
        self._definitions = definitions
        self._max_claims = max_claims
        self._owner = owner
        self._ttl = ttl
        self._poll = poll
        self._grace = grace
        self._stop = stop
        self._runs = runs
        self._codec = codec
        self.tally = _Tally()

    # -- claiming ----------------------------------------------------------------------------

    def claim(self, limit: int) -> list[_Work]:
        """Up to `limit` sagas to drive: submissions first (parking those whose starts failed
        `max_claims` times), then sagas nobody holds whose definition (and version) this
        worker has: it leaves the others to workers that can replay them. The journal failing
        is logged, and claims nothing."""
        journal = self._journal
        try:
            found = [
                _Work(pending.saga_id, pending)
                for pending in journal.claim_pending(
                    self._owner, ttl=self._ttl, limit=limit, max_claims=self._max_claims
                )
            ]
            if len(found) < limit:
                found += [
                    _Work(lease.saga_id, None)
                    for lease in journal.claim_expired(
                        self._owner,
                        ttl=self._ttl,
                        limit=limit - len(found),
                        definitions=self._definitions.versions(),
                    )
                ]
        except JournalError as error:
            logger.warning(
                "worker %s: claiming sagas failed, trying again at the next sweep: %s",
                self._owner,
                error,
            )
            return []
        return found

    # -- driving one saga --------------------------------------------------------------------

    def keeper(self, work: _Work) -> LeaseKeeper:
        # The worker releases leases itself: at once when the journal failed (another worker,
        # or this one, takes the saga over at its next sweep), never after a run that raised
        # otherwise (the lease runs out first: a saga that keeps failing is not retried in a
        # tight loop).
        return LeaseKeeper(self._journal, work.saga_id, self._owner, ttl=self._ttl, release=False)

    def drive(self, work: _Work) -> None:
        """Start or recover one saga, with `SyncInterpreter`; its lease is kept meanwhile."""
        with self.keeper(work):
            self._settle(work, lambda: self._run(work))

    async def drive_async(self, work: _Work) -> None:
        """`drive`, with `AsyncInterpreter`."""
        async with self.keeper(work):
            outcome: Outcome[object] | BaseException
            try:
                if work.pending is None:
                    outcome = await self._runs.resume_async(work.saga_id)
                else:
                    pending = work.pending
                    outcome = await self._runs.start_async(
                        pending.name, self._codec.decode(pending.input), saga_id=pending.saga_id
                    )
            except Exception as error:
                outcome = error
            await anyio.to_thread.run_sync(self._settle, work, lambda: outcome)

    def _run(self, work: _Work) -> Outcome[object] | BaseException:
        try:
            if work.pending is None:
                return self._runs.resume(work.saga_id)
            pending = work.pending
            return self._runs.start(
                pending.name, self._codec.decode(pending.input), saga_id=pending.saga_id
            )
        except Exception as error:
            return error

    def _settle(self, work: _Work, run: Callable[[], Outcome[object] | BaseException]) -> None:
        """Run (or take the result of) one drive, and count and log how it ended."""
        what = "start" if work.pending is not None else "recovery"
        result = run()
        saga_id = work.saga_id
        tally = self.tally
        if not isinstance(result, BaseException):
            logger.info("worker %s: saga %s finished: %r", self._owner, saga_id, result)
            if work.pending is not None:
                tally.started += 1
            else:
                tally.recovered += 1
        elif isinstance(result, LeaseLostError | SagaBusyError):
            tally.lost += 1
            logger.warning("worker %s: stopped driving saga %s: %s", self._owner, saga_id, result)
        elif isinstance(result, JournalError):
            tally.lost += 1
            logger.warning(
                "worker %s: the journal failed during the %s of saga %s; handing it back: %s",
                self._owner,
                what,
                saga_id,
                result,
            )
            self.release(saga_id)
        elif isinstance(result, SagaParkedError):
            tally.failed += 1
            logger.error("worker %s: %s", self._owner, result)
        else:
            tally.failed += 1
            if work.pending is not None:
                self._note_start_error(saga_id, result)
            logger.error(
                "worker %s: the %s of saga %s failed: %s: %s",
                self._owner,
                what,
                saga_id,
                type(result).__qualname__,
                result,
            )

    def _note_start_error(self, saga_id: str, error: BaseException) -> None:
        """Note why a submission did not start (it stays queued, and is claimed again once
        the lease this worker keeps runs out; parked after `max_claims` claims)."""
        try:
            encoded = self._codec.encode(describe_error(error))
            self._journal.record_start_error(saga_id, self._owner, encoded)
        except (JournalError, CodecError) as failure:
            logger.warning(
                "worker %s: could not note why submission %s did not start: %s",
                self._owner,
                saga_id,
                failure,
            )

    def release(self, saga_id: str) -> None:
        """Give a saga's lease up (logged, not raised, if the journal fails: it runs out)."""
        try:
            self._journal.release_lease(saga_id, self._owner)
        except JournalError as error:
            logger.warning(
                "worker %s: could not release the lease of saga %s (it runs out in %g s): %s",
                self._owner,
                saga_id,
                self._ttl,
                error,
            )

    def hand_back(self, saga_ids: list[str]) -> None:
        for saga_id in saga_ids:
            logger.warning(
                "worker %s: saga %s still running after the %g s grace; handing it back",
                self._owner,
                saga_id,
                self._grace,
            )
            self.release(saga_id)
            self.tally.handed_back.append(saga_id)

    # -- the loops ---------------------------------------------------------------------------

    def run(self) -> WorkerReport:
        """Claim and drive one saga at a time until `stop` is set."""
        stop = self._stop
        logger.info("worker %s: started", self._owner)
        with self._journal.listen() as listener:
            while not stop.is_set():
                claimed = self.claim(1)
                if not claimed:
                    listener.wait(self._poll, stop=stop)
                    continue
                [work] = claimed
                if not self._drive_in_thread(work):
                    break
        logger.info("worker %s: stopped", self._owner)
        return self.tally.report(self._owner)

    def _drive_in_thread(self, work: _Work) -> bool:
        """Drive `work` in a thread of its own, so that the loop may hand it back once `stop`
        is set and `grace` runs out; whether it finished."""
        done = threading.Event()

        def drive() -> None:
            try:
                self.drive(work)
            finally:
                done.set()

        thread = threading.Thread(target=drive, name=f"fsaga-worker-{work.saga_id}", daemon=True)
        thread.start()
        while not done.wait(_CHECK_EVERY):
            if self._stop.is_set() and not done.wait(self._grace):
                self.hand_back([work.saga_id])
                return False
        thread.join()
        return True

    async def run_async(self, concurrency: int) -> WorkerReport:
        """Claim and drive up to `concurrency` sagas at once until `stop` is set."""
        stop = self._stop
        logger.info("worker %s: started", self._owner)
        running: dict[str, anyio.CancelScope] = {}
        wake = _Wake()
        with self._journal.listen() as listener:
            async with anyio.create_task_group() as group:

                async def listen() -> None:
                    while not stop.is_set():
                        await anyio.to_thread.run_sync(
                            lambda: listener.wait(self._poll, stop=stop), abandon_on_cancel=True
                        )
                        wake.set()

                async def drive(work: _Work, scope: anyio.CancelScope) -> None:
                    try:
                        with scope:
                            await self.drive_async(work)
                    finally:
                        del running[work.saga_id]
                        wake.set()

                group.start_soon(listen)
                while not stop.is_set():
                    free = concurrency - len(running)
                    claimed = await anyio.to_thread.run_sync(self.claim, free) if free else []
                    for work in claimed:
                        if work.saga_id in running:
                            # Handed back by its run a moment ago (the journal failed), and not
                            # done yet: never two drivers of one saga. Its lease, ours again,
                            # runs out and the saga is recovered then.
                            continue
                        scope = anyio.CancelScope()
                        running[work.saga_id] = scope
                        group.start_soon(drive, work, scope)
                    if free and len(claimed) == free:
                        continue  # there may be more
                    await wake.wait()
                with anyio.move_on_after(self._grace):
                    while running:
                        await wake.wait()
                if running:
                    left = sorted(running)
                    await anyio.to_thread.run_sync(self.hand_back, left)
                    for saga_id in left:
                        running[saga_id].cancel()
        logger.info("worker %s: stopped", self._owner)
        return self.tally.report(self._owner)


_CHECK_EVERY = 0.1
"""How often the sync loop looks at `stop` while a saga runs, in seconds."""


@final
class _Wake:
    """An event that can be waited for again once it fired."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()


def _check_shared(journal: Journal) -> SharedJournal:
    """`journal` as a journal workers share, or a `TypeError` saying what is needed."""
    if not isinstance(journal, SharedJournal):
        raise TypeError(
            "a worker needs a journal that workers share, with leases and a submission queue "
            f"(fsaga.journal.PostgresJournal); got {type(journal).__qualname__}"
        )
    return journal
