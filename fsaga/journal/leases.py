"""Owner leases: one worker drives a saga at a time, and keeps its lease while it works.

A journal shared by workers on several machines (`fsaga.journal.PostgresJournal`) gives each
saga at most one owner at a time: a `Lease` (owner, expiry) taken and renewed by conditional
writes on the journal's clock, so that workers whose clocks disagree still agree on when a
lease ran out. `Leases` is what a journal offers for it; `LeaseKeeper` renews a lease in the
background while a worker runs the saga's effects, however long one of them takes, for as long
as the worker is alive. A worker that stops renewing (it died, hung, or lost the database)
loses the lease once it expires; another worker takes the saga over, and every later write of
the first is refused with `LeaseLostError` (it is fenced): a saga has one driver at a time
(docs/concepts.md#rule-11).

>>> from fsaga.journal import Lease
>>> Lease("order-1", "worker-a", 1_750_000_030.0)
Lease(saga_id='order-1', owner='worker-a', expires_at=1750000030.0)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, final

from fsaga._numbers import check_seconds
from fsaga.journal.protocol import (
    JournalError,
    LeaseLostError,
    SagaFinishedError,
    UnknownSagaError,
)
from fsaga.journal.records import Lease

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ["LeaseKeeper", "Leases"]

logger = logging.getLogger(__name__)


class Leases(Protocol):
    """Owner leases on a journal's sagas (`fsaga.journal.PostgresJournal` implements them).

    Every method is one conditional write on the journal's clock; none waits for a lease.
    """

    def acquire(self, saga_id: str, owner: str, *, ttl: float) -> Lease | None:
        """Take the lease of a running saga for `ttl` seconds, if nobody else holds it (or
        extend it, if `owner` holds it already).

        Returns:
            The lease; ``None`` when another worker holds it.

        Raises:
            UnknownSagaError: no such saga.
            SagaFinishedError: the saga is not running (finished, or dead).
        """
        ...

    def renew(self, saga_id: str, owner: str, *, ttl: float) -> Lease:
        """Extend `owner`'s lease to `ttl` seconds from now, if it still holds it.

        Raises:
            LeaseLostError: `owner` does not hold the lease (it expired, or another worker
                took it); nothing is written.
            SagaFinishedError: the saga is not running any more (its lease ended with it).
            UnknownSagaError: no such saga.
        """
        ...

    def release_lease(self, saga_id: str, owner: str) -> bool:
        """Give up `owner`'s lease at once, so that another worker may take the saga over.

        Returns:
            ``True`` when `owner` held it; ``False`` (nothing written) otherwise.
        """
        ...


@final
class LeaseKeeper:
    """Renews a lease in the background, every `every` seconds, while a worker runs its saga.

    As a context manager (``with``) it renews from a thread of its own; as an async context
    manager (``async with``, under anyio: asyncio or trio) from a task, each renewal in a worker
    thread. Either way the block runs undisturbed: the keeper never interrupts it. When a
    renewal finds the lease lost (`LeaseLostError`, or the saga gone), the keeper stops, marks
    itself `lost` and calls `on_lost`: the worker should stop working on the saga, and its
    next journal write is refused anyway. A renewal that fails otherwise (the database
    unreachable for a moment) is tried again at the next beat, as long as the lease it renewed
    last may still be valid; past that, the lease counts as lost. A saga that finished (its
    lease ended with it) stops the renewals quietly, and one that does not exist yet (a start
    creates it, with the worker's lease, at its first write) is simply tried again.

    Leaving the block stops the renewals and, with `release` (the default), releases the lease
    (`Leases.release_lease`; a finished saga's lease is gone already), so that another worker
    may take over at once a saga this one stopped working on.

    Args:
        leases: the journal holding the lease.
        saga_id: the saga.
        owner: the worker holding its lease (taken with `Leases.acquire` or a claim).
        ttl: how long each renewal extends the lease, in seconds.
        every: seconds between renewals; by default a third of `ttl`, so that two renewals in
            a row may fail before the lease runs out.
        on_lost: called once, with the error, when the lease is lost (from the keeper's thread
            or task).
        release: whether leaving the block releases the lease.

    Raises:
        ValueError: `every` is not shorter than `ttl`, or a duration is not positive.
    """

    __slots__ = (
        "_confirmed_at",
        "_every",
        "_group",
        "_leases",
        "_lost",
        "_on_lost",
        "_release",
        "_stop",
        "_thread",
        "_ttl",
        "error",
        "lease",
        "owner",
        "renewals",
        "saga_id",
    )

    def __init__(
        self,
        leases: Leases,
        saga_id: str,
        owner: str,
        *,
        ttl: float,
        every: float | None = None,
        on_lost: Callable[[JournalError], object] | None = None,
        release: bool = True,
    ) -> None:
        self._ttl = check_seconds(ttl, what="ttl")
        self._every = self._ttl / 3 if every is None else check_seconds(every, what="every")
        if self._every >= self._ttl:
            raise ValueError(
                f"every ({self._every} s) must be shorter than ttl ({self._ttl} s): a lease "
                "renewed less often than it lasts runs out between renewals"
            )
        self._leases = leases
        self.saga_id = saga_id
        self.owner = owner
        self._on_lost = on_lost
        self._release = release
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        self._group: TaskGroup | None = None
        # When the last renewal that succeeded was sent (monotonic): its lease holds until at
        # least `ttl` after that, whatever the clocks say.
        self._confirmed_at = time.monotonic()
        self.error: JournalError | None = None
        """Why the lease was lost, once it was."""
        self.lease: Lease | None = None
        """The lease as the last renewal left it (``None`` before the first)."""
        self.renewals = 0
        """How many renewals succeeded."""

    def __repr__(self) -> str:
        state = "lost" if self.lost else f"{self.renewals} renewals"
        return f"LeaseKeeper({self.saga_id!r}, owner={self.owner!r}, {state})"

    @property
    def lost(self) -> bool:
        """Whether the lease was lost: the worker must stop working on the saga."""
        return self._lost.is_set()

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until the lease is lost, or `timeout` seconds pass; whether it was lost."""
        return self._lost.wait(timeout)

    # -- a thread ----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._start()
        thread = threading.Thread(
            target=self._renew_until_stopped,
            name=f"fsaga-lease-{self.saga_id}",
            daemon=True,
        )
        self._thread = thread
        thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._give_up()

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self._every):
            if not self._renew_once():
                return

    # -- an anyio task -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        import anyio

        self._start()
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        group.start_soon(self._renew_until_cancelled)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        import anyio.to_thread

        group = self._group
        assert group is not None, "__aexit__ without __aenter__"
        self._stop.set()
        group.cancel_scope.cancel()
        # The renewing task raises nothing, so the group ends cleanly; the block's own error, if
        # any, goes on as it was (a task group would wrap it in an ExceptionGroup).
        await group.__aexit__(None, None, None)
        await anyio.to_thread.run_sync(self._give_up)

    async def _renew_until_cancelled(self) -> None:
        import anyio
        import anyio.to_thread

        while True:
            await anyio.sleep(self._every)
            # Not abandoned when cancelled: leaving the block waits for a renewal under way, so
            # that none lands after the lease is released.
            if not await anyio.to_thread.run_sync(self._renew_once):
                return

    # -- both --------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._stop.is_set() or self._thread is not None or self._group is not None:
            raise RuntimeError("a LeaseKeeper keeps a lease for one block: make another")
        self._confirmed_at = time.monotonic()

    def _renew_once(self) -> bool:
        """Renew the lease; whether to go on renewing."""
        if self._stop.is_set():
            return False
        sent = time.monotonic()
        try:
            self.lease = self._leases.renew(self.saga_id, self.owner, ttl=self._ttl)
        except SagaFinishedError:
            logger.debug("saga %s finished: its lease ended with it", self.saga_id)
            return False
        except LeaseLostError as error:
            self._mark_lost(error)
            return False
        except UnknownSagaError:
            # Not created yet: a start creates the saga, with its lease, at its first write.
            self._confirmed_at = sent
            return True
        except JournalError as error:
            # The journal failing: tried again while the lease may still hold.
            if sent + self._every >= self._confirmed_at + self._ttl:
                self._mark_lost(error)
                return False
            logger.warning(
                "renewing the lease of saga %s failed, trying again: %s", self.saga_id, error
            )
            return True
        self._confirmed_at = sent
        self.renewals += 1
        return True

    def _mark_lost(self, error: JournalError) -> None:
        self.error = error
        self._lost.set()
        logger.warning("worker %s lost the lease of saga %s: %s", self.owner, self.saga_id, error)
        if self._on_lost is not None:
            try:
                self._on_lost(error)
            except Exception:
                logger.exception("on_lost of the lease of saga %s raised", self.saga_id)

    def _give_up(self) -> None:
        if not self._release or self.lost:
            return
        try:
            self._leases.release_lease(self.saga_id, self.owner)
        except JournalError as error:
            # It expires on its own: another worker takes over a little later.
            logger.warning("could not release the lease of saga %s: %s", self.saga_id, error)
