"""`DurableSagas`: durable starts and recovery by replay."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import final

from fsaga._numbers import check_count, check_seconds
from fsaga.durable.definitions import SagaDefinitions
from fsaga.durable.errors import (
    DefinitionConflictError,
    RecordedError,
    SagaBusyError,
    SagaParkedError,
    describe_error,
    revive_error,
)
from fsaga.durable.recorder import Recorder
from fsaga.events import Listener, SagaFinished
from fsaga.interpreter.asynchronous import AsyncInterpreter
from fsaga.interpreter.sync import SyncInterpreter
from fsaga.journal.codec import Codec, CodecError, JsonCodec
from fsaga.journal.protocol import Journal
from fsaga.journal.records import Entry, FinishedStatus, SagaRecord
from fsaga.outcome import CompensationFailure, Failure, Outcome, PartialFailure, Success
from fsaga.saga import Saga

__all__ = ["DurableSagas"]


@final
class DurableSagas:
    """Starts and recovers durable runs of registered sagas over a journal.

    Args:
        journal: where runs are recorded (`fsaga.journal.SqliteJournal` for real use).
        definitions: how runs are rebuilt.
        codec: turns inputs, results and outcomes into bytes (JSON by default); a step result
            it cannot encode is reported as an unknown outcome naming the step, never lost.
        listeners: called with every event of every run.
        max_recovery_attempts: recoveries a saga gets before it is parked as dead.
        stale_after: seconds without a journal write after which an unfinished saga counts as
            abandoned by its process, so `recover` or a repeated `start` may take it over. With
            the default, 0, `recover` counts every unfinished saga as abandoned (right for one
            process that recovers at start-up, before it starts new runs) and `start` never
            takes one over (it raises `SagaBusyError`).
    """

    __slots__ = ("_codec", "_definitions", "_journal", "_listeners", "_max_attempts", "_stale")

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
            SagaParkedError: `saga_id` failed to recover too often.
            NonDeterminismError: resuming it replayed other steps than the journal holds.
            fsaga.journal.CodecError: the codec cannot encode `input`.
        """
        ready = self._prepare_start(name, input, saga_id)
        return ready if not isinstance(ready, _Ready) else self._run(ready)

    async def start_async(self, name: str, input: object, *, saga_id: str) -> Outcome[object]:
        """`start`, with `AsyncInterpreter`: effects may be ``async``. Its `par` branches run
        one after another, so that every run of a saga performs its effects in one order and a
        replay can check them against the journal entry by entry."""
        ready = self._prepare_start(name, input, saga_id)
        return ready if not isinstance(ready, _Ready) else await self._run_async(ready)

    def recover(self) -> dict[str, Outcome[object] | BaseException]:
        """Finish every unfinished saga whose process is gone; return each one's outcome (or
        the error that kept it from recovering; after too many, the saga is parked)."""
        outcomes: dict[str, Outcome[object] | BaseException] = {}
        for saga_id, ready in self._resumable():
            try:
                outcomes[saga_id] = ready if not isinstance(ready, _Ready) else self._run(ready)
            except Exception as error:
                outcomes[saga_id] = error
        return outcomes

    async def recover_async(self) -> dict[str, Outcome[object] | BaseException]:
        """`recover`, with `AsyncInterpreter` (see `start_async`)."""
        outcomes: dict[str, Outcome[object] | BaseException] = {}
        for saga_id, ready in self._resumable():
            try:
                outcomes[saga_id] = (
                    ready if not isinstance(ready, _Ready) else await self._run_async(ready)
                )
            except Exception as error:
                outcomes[saga_id] = error
        return outcomes

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
        version, build = self._definitions.lookup(name)
        encoded = self._codec.encode(input)
        record = self._journal.get(saga_id)
        if record is None:
            # Created by the run's first write, together with its first intent: one commit
            # fewer. Should another start create it first, that write says so and the run
            # stops before its first effect.
            saga = build(self._codec.decode(encoded))
            recorder = Recorder(
                self._journal, saga_id, self._codec, [], create=(name, version, encoded)
            )
            return _Ready(saga_id, saga, recorder)
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
        saga_id = record.saga_id
        if record.status == "dead":
            raise SagaParkedError(f"saga {saga_id!r} is parked after failed recoveries")
        if record.finished:
            assert record.outcome is not None
            return self._decode_outcome(record.outcome)
        # Checked before the claim: a missing or changed definition must not use up the
        # saga's recovery attempts.
        version, _ = self._definitions.lookup(record.name)
        if version != record.version:
            raise DefinitionConflictError(
                f"saga {saga_id!r} was started by {record.name!r} version {record.version}; "
                f"version {version} is registered now, so it cannot be replayed"
            )
        stale_before = time.time() - self._stale if self._stale else None
        if not self._journal.claim_for_recovery(
            saga_id, max_attempts=self._max_attempts, stale_before=stale_before
        ):
            current = self._journal.get(saga_id)
            if current is not None and current.status == "dead":
                raise SagaParkedError(f"saga {saga_id!r} is parked after failed recoveries")
            if current is not None and current.finished and current.outcome is not None:
                return self._decode_outcome(current.outcome)
            raise SagaBusyError(f"saga {saga_id!r} is running elsewhere")
        return self._ready(record, self._journal.entries(saga_id))

    def _ready(self, record: SagaRecord, recorded: list[Entry]) -> _Ready:
        _, build = self._definitions.lookup(record.name)
        saga = build(self._codec.decode(record.input))
        return _Ready(
            record.saga_id, saga, Recorder(self._journal, record.saga_id, self._codec, recorded)
        )

    def _run(self, ready: _Ready) -> Outcome[object]:
        interpreter = SyncInterpreter(
            listeners=(ready.keep_outcome, *self._listeners), perform=ready.recorder
        )
        try:
            outcome = interpreter.run_saga(ready.saga, saga_id=ready.saga_id)
        except Exception:
            raise
        except BaseException:
            self._interrupted(ready)
            raise
        return self._conclude(ready, outcome)

    async def _run_async(self, ready: _Ready) -> Outcome[object]:
        interpreter = AsyncInterpreter(
            listeners=(ready.keep_outcome, *self._listeners),
            perform=ready.recorder,
            concurrent_branches=False,
        )
        try:
            outcome = await interpreter.run_saga(ready.saga, saga_id=ready.saga_id)
        except Exception:
            raise
        except BaseException:
            self._interrupted(ready)
            raise
        return self._conclude(ready, outcome)

    def _interrupted(self, ready: _Ready) -> None:
        """Interrupted or cancelled: the undo ran; record its outcome before it goes on."""
        if ready.finished and ready.recorder.trouble is None:
            ready.recorder.create_if_needed()
            self._finish(ready.saga_id, ready.finished[-1], ready.recorder.pending)

    def _conclude(self, ready: _Ready, outcome: Outcome[object]) -> Outcome[object]:
        ready.recorder.raise_trouble()
        ready.recorder.create_if_needed()
        recorded_outcome = self._finish(ready.saga_id, outcome, ready.recorder.pending)
        return outcome if recorded_outcome is None else recorded_outcome

    def _finish(
        self, saga_id: str, outcome: Outcome[object], pending: list[Entry]
    ) -> Outcome[object] | None:
        """Record `outcome` once; if another process recorded one first, return that."""
        status: FinishedStatus
        match outcome:
            case Success():
                status = "succeeded"
            case Failure():
                status = "failed"
            case PartialFailure():
                status = "partially_failed"
        if self._journal.finish(saga_id, status, self._encode_outcome(outcome), entries=pending):
            return None
        current = self._journal.get(saga_id)
        assert current is not None
        assert current.outcome is not None
        return self._decode_outcome(current.outcome)

    def _encode_outcome(self, outcome: Outcome[object]) -> bytes:
        codec = self._codec
        match outcome:
            case Success(value=value):
                try:
                    return codec.encode({"kind": "success", "value": value})
                except CodecError as error:
                    return codec.encode({"kind": "success", "unrecordable": str(error)})
            case Failure(error=error, compensated=compensated):
                return codec.encode(
                    {"kind": "failure", "error": describe_error(error), "compensated": compensated}
                )
            case PartialFailure():
                return codec.encode(
                    {
                        "kind": "partial_failure",
                        "error": describe_error(outcome.error),
                        "compensated": outcome.compensated,
                        "failed": [
                            [failure.path, describe_error(failure.error), failure.attempts]
                            for failure in outcome.failed_compensations
                        ],
                        "skipped": outcome.skipped,
                        "unresolved": outcome.unresolved,
                    }
                )

    def _decode_outcome(self, data: bytes) -> Outcome[object]:
        document = self._codec.decode(data)
        assert isinstance(document, dict)
        kind = document["kind"]
        if kind == "success":
            if "unrecordable" in document:
                return Success(RecordedError("CodecError", str(document["unrecordable"])))
            return Success(document["value"])
        error = revive_error(document["error"])
        if kind == "failure":
            return Failure(error, tuple(document["compensated"]))
        return PartialFailure(
            error,
            tuple(document["compensated"]),
            tuple(
                CompensationFailure(path, revive_error(described), attempts)
                for path, described, attempts in document["failed"]
            ),
            tuple(document["skipped"]),
            tuple(document["unresolved"]),
        )


@final
class _Ready:
    """A run about to start or resume: its saga, its recorder, and the outcome it reports."""

    __slots__ = ("finished", "recorder", "saga", "saga_id")

    def __init__(self, saga_id: str, saga: Saga[object], recorder: Recorder) -> None:
        self.saga_id = saga_id
        self.saga = saga
        self.recorder = recorder
        self.finished: list[Outcome[object]] = []

    def keep_outcome(self, event: object) -> None:
        if isinstance(event, SagaFinished):
            self.finished.append(event.outcome)
