"""`DurableSagas`: durable starts and recovery by replay."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from typing import TYPE_CHECKING, final

import anyio

from fsaga._numbers import check_count, check_seconds
from fsaga.durable.carrier import (
    _carrier_payload,
    _carriers_of,
    _recorded_carriers,
    _resuming,
)
from fsaga.durable.definitions import SagaDefinitions
from fsaga.durable.ending import Ending, HoldingBack
from fsaga.durable.errors import (
    DefinitionConflictError,
    SagaBusyError,
    SagaParkedError,
    describe_error,
)
from fsaga.durable.outcomes import decode_outcome, encode_failure
from fsaga.durable.parked import ParkedSaga, parked_sagas
from fsaga.durable.recorder import OutOfOrder, Recorder, RecoveryClaim, TakenOver
from fsaga.events import Listener, SagaFinished
from fsaga.interpreter.asynchronous import AsyncInterpreter
from fsaga.interpreter.sync import SyncInterpreter
from fsaga.journal.codec import Codec, CodecError, JsonCodec
from fsaga.journal.protocol import Journal, JournalError, LeaseLostError, UnknownSagaError
from fsaga.journal.records import FinishedStatus, SagaRecord
from fsaga.outcome import Failure, Outcome, PartialFailure, Success
from fsaga.saga import Saga

if TYPE_CHECKING:
    from fsaga.durable.worker import WorkerReport, _Worker

__all__ = ["DurableSagas"]


@final
class DurableSagas:
    """Starts and recovers durable runs of registered sagas over a journal.

    A run reports exactly the outcome it recorded (contract rule 11): a saga whose final value
    the codec cannot encode does not succeed, it fails with a `fsaga.journal.CodecError`
    naming the saga and the value's type, and compensates.

    Args:
        journal: where runs are recorded (`fsaga.journal.SqliteJournal` for real use).
        definitions: how runs are rebuilt.
        codec: turns inputs, results and outcomes into bytes (`fsaga.journal.JsonCodec` by
            default; give it your types with ``JsonCodec(types=...)``). A step whose result it
            cannot encode fails with a `fsaga.journal.CodecError` naming the step, without a
            retry, and is compensated with the result the process holds.
        listeners: called with every event of every run. One that is also a
            `fsaga.durable.ContextCarrier` (`fsaga.contrib.opentelemetry.Tracing`) has what it
            carries of a run kept in the journal, and handed to the recoveries of that run.
        max_recovery_attempts: recoveries that may claim a saga without finishing it before it
            is parked as dead (see `parked`).
        stale_after: seconds without a journal write after which an unfinished saga counts as
            abandoned by its process, so `recover` or a repeated `start` may take it over. With
            the default, 0, `recover` counts every unfinished saga as abandoned (right for one
            process that recovers at start-up, before it starts new runs) and `start` never
            takes one over (it raises `SagaBusyError`).
    """

    __slots__ = (
        "_carriers",
        "_codec",
        "_definitions",
        "_held_back",
        "_journal",
        "_listeners",
        "_max_attempts",
        "_stale",
    )

    def __init__(
        self,
        journal: Journal,
        definitions: SagaDefinitions,
        *,
        codec: Codec | None = None,
        listeners: Iterable[Listener] = (),
        max_recovery_attempts: int = 5,
        stale_after: float = 0.0,
    ) -> None:
        check_count(max_recovery_attempts, what="max_recovery_attempts", minimum=1)
        stale_after = check_seconds(stale_after, what="stale_after", allow_zero=True)
        self._journal = journal
        self._definitions = definitions
        self._codec: Codec = codec if codec is not None else JsonCodec()
        self._listeners = tuple(listeners)
        # The interpreter's `SagaFinished` comes before the outcome is recorded: the run emits
        # its last event itself (`fsaga.durable.ending`).
        self._held_back = tuple(HoldingBack(listener) for listener in self._listeners)
        self._carriers = _carriers_of(self._listeners)
        self._max_attempts = max_recovery_attempts
        self._stale = stale_after

    def start(self, name: str, input: object, *, saga_id: str) -> Outcome[object]:
        """Run the saga registered as `name` on `input`, durably, as `saga_id`, with
        `SyncInterpreter`.

        An id that already exists is never run twice: a finished saga returns its recorded
        outcome; an unfinished one is resumed as `recover` would, if its process has been
        silent for `stale_after` seconds (with the default, 0, it is left to `recover`).

        Raises:
            UnknownDefinitionError: nothing is registered as `name`.
            DefinitionConflictError: `saga_id` belongs to another definition, version or input.
            SagaBusyError: `saga_id` is running in another process.
            SagaParkedError: `saga_id` is parked as dead (see `parked`).
            NonDeterminismError: resuming it replayed other steps than the journal holds.
            fsaga.journal.CodecError: the codec cannot encode `input`; or `saga_id` succeeded
                under an earlier fsaga that could not record its final value.
        """
        ready = self._prepare_start(name, input, saga_id)
        return ready if not isinstance(ready, _Ready) else self._run(ready)

    async def start_async(self, name: str, input: object, *, saga_id: str) -> Outcome[object]:
        """`start`, with `AsyncInterpreter`: effects may be ``async``, and `par` branches run
        concurrently (contract rule 5), as in a run that is not durable.

        Concurrent branches record their entries in the order they happen, interleaved in the
        journal, one commit per step as ever. A replay (resuming the saga, or `recover_async`)
        finds each effect's entries by its step path, and hands the recorded results back in
        the order they were recorded, so that the engine decides as the recorded run did;
        every effect a crash left in flight is settled by contract rule 3. It raises what
        `start` raises.
        """
        ready = self._prepare_start(name, input, saga_id)
        return ready if not isinstance(ready, _Ready) else await self._run_async(ready)

    def recover(self) -> dict[str, Outcome[object] | BaseException]:
        """Finish every unfinished saga whose process is gone; return each one's outcome, or
        the error that kept it from recovering.

        A recovery refused before it performs anything (`NonDeterminismError`,
        `UnknownDefinitionError`, `DefinitionConflictError`, a `fsaga.journal.CodecError`
        decoding what was recorded, a definition that raises) writes nothing (contract rule
        12). Sagas another process is running, or takes over meanwhile, are left out, unless
        that process finished one first: then its recorded outcome is returned. A saga that
        too many recoveries claimed without finishing gets `SagaParkedError` and is parked.

        Each saga is replayed with `SyncInterpreter`, one effect at a time, if that can follow
        the order of its journal (checked first by a replay that performs and writes nothing).
        A journal of concurrent branches (`start_async`) often cannot be followed so: that saga
        is recovered with `AsyncInterpreter`, in an event loop of its own (`anyio.run`), as
        `recover_async` would; call that one from async code.
        """
        outcomes: dict[str, Outcome[object] | BaseException] = {}
        for saga_id, ready in self._resumable():
            try:
                outcomes[saga_id] = ready if not isinstance(ready, _Ready) else self._run(ready)
            except SagaBusyError:
                continue
            except Exception as error:
                outcomes[saga_id] = error
        return outcomes

    async def recover_async(self) -> dict[str, Outcome[object] | BaseException]:
        """`recover`, with `AsyncInterpreter`: `par` branches run concurrently, whatever
        interpreter recorded the journal (see `start_async`)."""
        outcomes: dict[str, Outcome[object] | BaseException] = {}
        for saga_id, ready in self._resumable():
            try:
                outcomes[saga_id] = (
                    ready if not isinstance(ready, _Ready) else await self._run_async(ready)
                )
            except SagaBusyError:
                continue
            except Exception as error:
                outcomes[saga_id] = error
        return outcomes

    def resume(self, saga_id: str) -> Outcome[object]:
        """Finish one unfinished saga, by replay, as `recover` would: the saga this process now
        owns (a worker took its lease with `fsaga.journal.PostgresJournal.claim_expired`, say).
        A finished saga returns its recorded outcome and runs nothing.

        Raises:
            fsaga.journal.UnknownSagaError: no such saga.
            SagaBusyError: another process took the saga over meanwhile (or, with
                `stale_after`, wrote to it that recently).
            SagaParkedError: the saga is parked as dead, or gets parked now (too many
                recoveries claimed it without finishing it).
            fsaga.journal.LeaseLostError: through a worker's journal
                (`fsaga.journal.PostgresJournal.as_owner`), the worker lost the saga's lease;
                nothing further was written or run.
            NonDeterminismError: the replay met other steps than the journal holds (nothing
                was written).
        """
        ready = self._prepare_resume(self._record_of(saga_id))
        return ready if not isinstance(ready, _Ready) else self._run(ready)

    async def resume_async(self, saga_id: str) -> Outcome[object]:
        """`resume`, with `AsyncInterpreter` (see `recover_async`). It raises what `resume`
        raises."""
        ready = self._prepare_resume(self._record_of(saga_id))
        return ready if not isinstance(ready, _Ready) else await self._run_async(ready)

    def run_worker(
        self,
        *,
        owner: str | None = None,
        ttl: float = 30.0,
        poll: float = 5.0,
        grace: float = 30.0,
        max_claims: int = 5,
        stop: threading.Event | None = None,
    ) -> WorkerReport:
        """Be a worker until `stop` is set: start the sagas submitted to the journal, recover
        those whose worker went away, one at a time, with `SyncInterpreter`.

        The journal must be one that workers share (`fsaga.journal.PostgresJournal`; give
        it here, not an owned view). Each loop claims one saga, a submitted one first
        (`claim_pending`), else one whose lease ran out (`claim_expired`), and drives it to
        its outcome through the worker's own view of the journal (`as_owner`), under a
        `fsaga.journal.LeaseKeeper` that renews its lease every ``ttl / 3`` seconds however
        long an effect takes. A saga whose lease is lost meanwhile (the worker hung, or lost
        the database, for longer than `ttl`, and another worker took it) stops at its next
        journal write, which is refused: the effect in flight finishes, nothing after it runs
        or is written (docs/concepts.md#rule-11), and the worker goes on. With nothing to
        claim, the worker waits for a submission to be notified, at most `poll` seconds. The
        journal failing (the server restarting) is logged, and the claim tried again at the
        next sweep; a saga whose run it cut short is handed back (its lease released) for the
        next sweep to recover.

        What cannot run is not retried in a tight loop. A submission whose start fails (its
        definition is not registered here, or refuses its input) stays queued with the error
        recorded (`record_start_error`), and the worker keeps its lease until it runs out, so
        the next claim comes `ttl` seconds later; after `max_claims` claims that did not start
        it, it is parked (`parked_submissions`, ``fsaga journal submissions --parked``) until
        it is released. A saga whose recoveries keep failing is parked as dead after this
        `DurableSagas`' `max_recovery_attempts`. A running saga whose definition is not
        registered here, or is in another version, is never claimed: it is left to the workers
        that can replay it.

        One saga at a time: `SyncInterpreter` holds a thread for as long as a saga runs, and
        one driver per process keeps a crash's blast radius to one saga. Run more processes
        for more throughput, or `run_worker_async`, which drives several sagas at once.

        Once `stop` is set, the worker claims nothing more and lets the saga it drives finish;
        if that takes longer than `grace` seconds, it hands the saga back (releases its lease,
        so that another worker recovers it at once, and its next write is refused) and returns.

        Args:
            owner: the worker's name, unique among the workers (default: the host name and
                the process id).
            ttl: how long each lease lasts without renewal, in seconds: a worker that dies
                leaves its sagas to the others that long.
            poll: the longest wait between two sweeps, in seconds.
            grace: how long a stopping worker lets its saga run before handing it back.
            max_claims: how many claims may fail to start a submission before it is parked.
            stop: set it (from another thread, or a signal handler) to stop the worker.

        Returns:
            What the worker did.

        Raises:
            TypeError: the journal is not one that workers share.
            ValueError: a duration is not positive, or `max_claims` is below 1.
        """
        worker = self._worker(
            owner=owner, ttl=ttl, poll=poll, grace=grace, max_claims=max_claims, stop=stop
        )
        return worker.run()

    async def run_worker_async(
        self,
        *,
        owner: str | None = None,
        ttl: float = 30.0,
        poll: float = 5.0,
        grace: float = 30.0,
        concurrency: int = 8,
        max_claims: int = 5,
        stop: threading.Event | None = None,
    ) -> WorkerReport:
        """`run_worker` with `AsyncInterpreter` (effects may be ``async``, and `par` branches run
        concurrently), driving up to `concurrency` sagas at once, each with its own lease and
        keeper. Past `grace`, the sagas still running are handed back and cancelled: their
        next journal write is refused, so the cancellation runs nothing further.

        Raises:
            TypeError: the journal is not one that workers share.
            ValueError: a duration is not positive, or `concurrency` or `max_claims` is below
                1.
        """
        check_count(concurrency, what="concurrency", minimum=1)
        worker = self._worker(
            owner=owner, ttl=ttl, poll=poll, grace=grace, max_claims=max_claims, stop=stop
        )
        return await worker.run_async(concurrency)

    def _worker(
        self,
        *,
        owner: str | None,
        ttl: float,
        poll: float,
        grace: float,
        max_claims: int,
        stop: threading.Event | None,
    ) -> _Worker:
        from fsaga.durable.worker import _check_shared, _Worker, default_owner

        shared = _check_shared(self._journal)
        ttl = check_seconds(ttl, what="ttl")
        poll = check_seconds(poll, what="poll")
        grace = check_seconds(grace, what="grace", allow_zero=True)
        max_claims = check_count(max_claims, what="max_claims", minimum=1)
        owner = default_owner() if owner is None else owner
        owned = DurableSagas(
            shared.as_owner(owner, ttl=ttl),
            self._definitions,
            codec=self._codec,
            listeners=self._listeners,
            max_recovery_attempts=self._max_attempts,
        )
        return _Worker(
            shared,
            owned,
            self._definitions,
            self._codec,
            owner=owner,
            ttl=ttl,
            poll=poll,
            grace=grace,
            max_claims=max_claims,
            stop=threading.Event() if stop is None else stop,
        )

    def _record_of(self, saga_id: str) -> SagaRecord:
        record = self._journal.get(saga_id)
        if record is None:
            raise UnknownSagaError(saga_id)
        return record

    def parked(self) -> list[ParkedSaga]:
        """Every saga parked as dead, oldest first, with what the journal says about why.

        >>> from fsaga import step
        >>> from fsaga.journal import Entry, JsonCodec, MemoryJournal
        >>> definitions = SagaDefinitions()
        >>> _ = definitions.saga("pay")(lambda cents: step(lambda: cents, name="charge"))
        >>> journal = MemoryJournal(clock=lambda: 0.0)
        >>> _ = journal.create("pay-1", "pay", 1, b"450", entries=[Entry(1, "intent", "charge", 1)])
        >>> runs = DurableSagas(journal, definitions, max_recovery_attempts=1)
        >>> journal.claim_for_recovery("pay-1", max_attempts=1)  # a recovery that crashed
        True
        >>> runs.recover()  # the next one finds the limit reached: parked  # doctest: +ELLIPSIS
        {'pay-1': SagaParkedError("saga 'pay-1' is parked as dead: ...")}
        >>> [(saga.saga_id, saga.recovery_attempts, saga.in_flight) for saga in runs.parked()]
        [('pay-1', 1, Entry(seq=1, kind='intent', path='charge', attempt=1, payload=None))]
        >>> runs.release("pay-1")
        >>> runs.recover()  # doctest: +ELLIPSIS
        {'pay-1': Failure(error=UnknownOutcomeError(...), compensated=())}
        """
        return parked_sagas(self._journal, self._codec)

    def release(self, saga_id: str) -> None:
        """Give a saga parked as dead back to `recover`: it is running again, with its count
        of recovery attempts reset. Release it once what kept stopping its recoveries is fixed.

        Raises:
            fsaga.journal.UnknownSagaError: no such saga.
            fsaga.journal.SagaNotDeadError: the saga is not parked (nothing is written).
        """
        self._journal.release(saga_id)

    def _resumable(
        self,
    ) -> Iterator[tuple[str, Outcome[object] | BaseException | _Ready]]:
        """Every unfinished saga this process may take over, ready to run (or what kept it from
        being so); those running elsewhere are left out."""
        for record in self._journal.sagas("running"):
            try:
                yield record.saga_id, self._prepare_resume(record)
            except SagaBusyError:
                continue
            except Exception as error:
                yield record.saga_id, error

    def _prepare_start(self, name: str, input: object, saga_id: str) -> Outcome[object] | _Ready:
        version, _ = self._definitions.lookup(name)
        try:
            encoded = self._codec.encode(input)
        except CodecError as error:
            raise CodecError(
                f"saga {saga_id!r}: its input for definition {name!r}, a "
                f"{type(input).__qualname__}, cannot be recorded: {error}"
            ) from error
        record = self._journal.get(saga_id)
        if record is None:
            # Created by the run's first write, together with its first intent: one commit
            # fewer. Should another start create it first, that write says so and the run
            # stops before its first effect.
            recorder = Recorder(
                self._journal, saga_id, self._codec, [], create=(name, version, encoded)
            )
            return self._ready(saga_id, name, encoded, recorder)
        if (record.name, record.version, record.input) != (name, version, encoded):
            raise DefinitionConflictError(
                f"saga {saga_id!r} already runs {record.name!r} version {record.version} with "
                f"another input than {name!r} version {version} with {input!r}"
            )
        if record.status == "running" and not self._stale:
            # It may be running right now, in another process or thread: never run it twice.
            raise SagaBusyError(
                f"saga {saga_id!r} is unfinished and may be running elsewhere; `recover()` "
                "takes unfinished sagas over, or give DurableSagas(stale_after=...) so that "
                "`start` resumes one whose process has been silent that long"
            )
        return self._prepare_resume(record)

    def _prepare_resume(self, record: SagaRecord) -> Outcome[object] | _Ready:
        """A recovery of `record`, ready to replay, or its recorded outcome.

        Everything here only reads: the saga is claimed by the run's first write or effect,
        once its replay matched the journal, so a recovery refused until then has written
        nothing (contract rule 12)."""
        saga_id = record.saga_id
        if record.status == "dead":
            raise SagaParkedError(saga_id)
        if record.finished:
            assert record.outcome is not None
            return decode_outcome(self._codec, saga_id, record.outcome)
        version, _ = self._definitions.lookup(record.name)
        if version != record.version:
            raise DefinitionConflictError(
                f"saga {saga_id!r} was started by {record.name!r} version {record.version}; "
                f"version {version} is registered now, so it cannot be replayed"
            )
        stale_before = time.time() - self._stale if self._stale else None
        if stale_before is not None and record.updated_at >= stale_before:
            # Written to recently: its process may be alive. (The claim checks it again.)
            raise SagaBusyError(f"saga {saga_id!r} is running elsewhere")
        claim = RecoveryClaim(self._max_attempts, stale_before)
        recorder = Recorder(
            self._journal, saga_id, self._codec, self._journal.entries(saga_id), claim=claim
        )
        return self._ready(saga_id, record.name, record.input, recorder)

    def _ready(self, saga_id: str, name: str, encoded: bytes, recorder: Recorder) -> _Ready:
        _, build = self._definitions.lookup(name)
        try:
            input = self._codec.decode(encoded)
        except CodecError as error:
            raise CodecError(
                f"saga {saga_id!r} ({name!r}) cannot be rebuilt: its recorded input cannot be "
                f"decoded: {error}"
            ) from error
        saga: object = build(input)
        if not isinstance(saga, Saga):
            raise TypeError(f"saga definition {name!r} returned {saga!r}, not a Saga")
        return _Ready(saga_id, name, saga, recorder, self._codec, self._listeners)

    def _run(self, ready: _Ready) -> Outcome[object]:
        if not ready.recorder.replayed_all and not _replays_one_at_a_time(ready):
            # Recorded by concurrent branches in an order that one effect at a time cannot
            # follow: the recovery runs them concurrently too, in an event loop of its own.
            return anyio.run(self._run_async, ready.again())
        interpreter = SyncInterpreter(
            listeners=(ready.recorder.observe, ready.keep_outcome, *self._held_back),
            perform=ready.recorder,
            sleep=ready.recorder.sleep_in_thread,
        )
        try:
            with self._carried(ready):
                outcome = interpreter.run_saga(ready.saga, saga_id=ready.saga_id)
        except Exception as error:
            ready.ending.stopped(error)
            self._note_failed_recovery(ready, error)
            raise
        except BaseException as interruption:
            self._interrupted(ready, interruption)
            raise
        return self._conclude(ready, outcome)

    async def _run_async(self, ready: _Ready) -> Outcome[object]:
        recorder = ready.recorder
        recorder.concurrent = True
        interpreter = AsyncInterpreter(
            listeners=(recorder.observe, ready.keep_outcome, *self._held_back),
            perform=recorder,
            sleep=recorder.sleep,
        )
        try:
            with self._carried(ready):
                outcome = await interpreter.run_saga(ready.saga, saga_id=ready.saga_id)
        except Exception as error:
            ready.ending.stopped(error)
            self._note_failed_recovery(ready, error)
            raise
        except BaseException as interruption:
            self._interrupted(ready, interruption)
            raise
        return self._conclude(ready, outcome)

    def _carried(self, ready: _Ready) -> AbstractContextManager[object]:
        """Around a run: its listeners' carriers (`fsaga.durable.carrier`) get the run's first
        intent to keep what they carry, and, for a recovery, what the runs before it kept."""
        carriers = self._carriers
        if not carriers:
            return contextlib.nullcontext()
        recorder = ready.recorder
        recorder.note = partial(_carrier_payload, carriers, ready.saga_id, self._codec)
        if not recorder.history:
            return contextlib.nullcontext()
        kept = _recorded_carriers(recorder.history, self._codec)
        return _resuming(carriers, ready.saga_id, kept)

    def _interrupted(self, ready: _Ready, interruption: BaseException) -> None:
        """Interrupted or cancelled: the undo ran; record its outcome before it goes on."""
        recorder = ready.recorder
        if not (ready.finished and recorder.trouble is None and recorder.replayed_all):
            # Nothing to record: the run stopped touching the world first (the trouble says
            # why), or had not caught up with its journal, or had no outcome yet.
            ready.ending.stopped(recorder.trouble or interruption)
            return
        outcome = ready.finished[-1]
        try:
            recorded = self._record(ready, outcome)
        except TakenOver as error:
            # Lost to another process: the interruption goes on all the same.
            ready.ending.stopped(error)
            return
        except BaseException as error:
            ready.ending.stopped(error)
            raise
        if not recorded:
            ready.ending.stopped(None, "taken_over")

    def _conclude(self, ready: _Ready, outcome: Outcome[object]) -> Outcome[object]:
        try:
            ready.recorder.raise_trouble()
            recorded = self._record(ready, outcome)
        except TakenOver as error:
            return self._recorded_elsewhere(ready, error)
        except Exception as error:
            ready.ending.stopped(error)
            self._note_failed_recovery(ready, error)
            raise
        except BaseException as error:
            ready.ending.stopped(error)  # unless the outcome landed (see `_record`)
            raise
        if not recorded:
            return self._recorded_elsewhere(ready, None)
        return outcome

    def _record(self, ready: _Ready, outcome: Outcome[object]) -> bool:
        """Record `outcome` once, and tell the run's listeners (`SagaFinished`); False if
        another process recorded one first (or parked the saga).

        When the journal fails while it records (the connection lost during the commit, say),
        or an interrupt comes then, the outcome may have landed all the same: the saga is read
        back, and an outcome that landed counts as recorded (a journal error is then
        forgotten; an interrupt goes on)."""
        status: FinishedStatus
        encoded: bytes
        match outcome:
            case Success():
                status = "succeeded"
                assert ready.success_outcome is not None  # the saga's last map encoded it
                encoded = ready.success_outcome
            case Failure():
                status = "failed"
                encoded = encode_failure(self._codec, outcome)
            case PartialFailure():
                status = "partially_failed"
                encoded = encode_failure(self._codec, outcome)
        try:
            recorded = ready.recorder.finish(status, encoded)
        except (LeaseLostError, UnknownSagaError):
            raise  # refused by the journal: nothing was written
        except JournalError:
            if not self._landed(ready.saga_id, status, encoded):
                raise
            recorded = True
        except Exception:
            raise
        except BaseException:
            if self._landed(ready.saga_id, status, encoded):
                ready.ending.finished(outcome)
            raise
        if recorded:
            ready.ending.finished(outcome)
        return recorded

    def _landed(self, saga_id: str, status: FinishedStatus, outcome: bytes) -> bool:
        """Whether the journal holds `outcome` for the saga, by a read that may fail too."""
        try:
            record = self._journal.get(saga_id)
        except JournalError:
            return False
        return record is not None and (record.status, record.outcome) == (status, outcome)

    def _recorded_elsewhere(self, ready: _Ready, lost_to: TakenOver | None) -> Outcome[object]:
        """The outcome another process recorded for the saga this run lost to (the run's
        listeners hear that it stopped)."""
        saga_id = ready.saga_id
        try:
            current = self._journal.get(saga_id)
        except BaseException as error:
            ready.ending.stopped(error)
            raise
        assert current is not None
        if current.status == "dead":
            parked = SagaParkedError(saga_id)
            ready.ending.stopped(parked)
            raise parked
        if current.outcome is None:
            busy = SagaBusyError(
                f"saga {saga_id!r} was taken over by another process, which is recovering it"
            )
            ready.ending.stopped(busy)
            raise busy
        ready.ending.stopped(lost_to, "taken_over")
        return decode_outcome(self._codec, saga_id, current.outcome)

    def _note_failed_recovery(self, ready: _Ready, error: Exception) -> None:
        """Note the error that ended a recovery (after its claim: it wrote), so that a saga
        parked for good says why."""
        if not ready.recorder.claimed or isinstance(error, SagaBusyError):
            return
        # The journal failing is likely what ended it; the error goes out anyway.
        with contextlib.suppress(JournalError, CodecError):
            self._journal.record_recovery_error(
                ready.saga_id, self._codec.encode(describe_error(error))
            )


@final
class _Ready:
    """A run about to start or resume: its saga, its recorder, and the outcome it reports.

    The saga's last continuation encodes its final value as the outcome to record: a value
    the codec cannot encode fails the run (which compensates) before anything says it
    succeeded, under every interpreter and identically on a replay; and the bytes are kept, so
    the outcome is not encoded twice."""

    __slots__ = (
        "_built",
        "_codec",
        "_listeners",
        "ending",
        "finished",
        "name",
        "recorder",
        "saga",
        "saga_id",
        "success_outcome",
    )

    def __init__(
        self,
        saga_id: str,
        name: str,
        built: Saga[object],
        recorder: Recorder,
        codec: Codec,
        listeners: tuple[Listener, ...],
    ) -> None:
        self.saga_id = saga_id
        self.name = name
        self.recorder = recorder
        self._codec = codec
        self._listeners = listeners
        self.ending = Ending(saga_id, listeners)
        self._built = built
        self.success_outcome: bytes | None = None
        self.saga = built.map(self._encode_success)
        self.finished: list[Outcome[object]] = []

    def again(self) -> _Ready:
        """The same run, ready to start over under another interpreter (nothing ran yet)."""
        return _Ready(
            self.saga_id,
            self.name,
            self._built,
            self.recorder.again(),
            self._codec,
            self._listeners,
        )

    def _encode_success(self, value: object) -> object:
        try:
            self.success_outcome = self._codec.encode({"kind": "success", "value": value})
        except CodecError as error:
            raise CodecError(
                f"saga {self.saga_id!r} ({self.name!r}) finished with a value of type "
                f"{type(value).__qualname__} that the journal cannot record: {error}"
            ) from error
        return value

    def keep_outcome(self, event: object) -> None:
        if isinstance(event, SagaFinished):
            self.finished.append(event.outcome)


def _replays_one_at_a_time(ready: _Ready) -> bool:
    """Whether `SyncInterpreter`, one effect at a time, can replay what `ready`'s journal
    holds in the order it was recorded. A dry run finds out: it replays until the run would act
    on the world or the journal, and performs and writes nothing. A divergence it meets is
    raised (the recovery is refused, as the run itself would refuse it)."""
    probe = ready.recorder.probe()
    # It never waits before a retry: one it would wait for is the live run's, which it stops.
    SyncInterpreter(listeners=(probe.observe,), perform=probe, sleep=_no_wait).run_saga(
        ready.saga, saga_id=ready.saga_id
    )
    if probe.matched:
        return True
    trouble = probe.trouble
    if trouble is None or isinstance(trouble, OutOfOrder):
        # Stopped short of the journal, or asked for an effect out of its order: concurrent
        # branches recorded it (or the saga diverged, which the concurrent replay says).
        return False
    raise trouble


def _no_wait(_delay: float) -> None:
    """The retry waits of a probe (`_replays_one_at_a_time`), which waits for nothing."""
