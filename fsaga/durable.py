"""Durable sagas: runs recorded in a `Journal`, started once, recovered by replay after a crash.

Register how a saga is built from its input under a name, then start runs through
`DurableSagas`. Every effect is journaled before it runs (its intent) and after (its result or
error); a run that a crash cut short is rebuilt from its definition and input by `recover`,
which feeds the recorded results back (a completed step never runs again), settles the step
that was in flight as an unknown outcome (DESIGN rule 3), and finishes forward or compensates.

`start` and `recover` drive `SyncInterpreter`; `start_async` and `recover_async` drive
`AsyncInterpreter`, with `par` branches one after another. Either way a run performs its effects
in one order, so a replay matches the journal entry by entry.

>>> from fsaga import step
>>> from fsaga.journal import MemoryJournal
>>> definitions = SagaDefinitions()
>>> @definitions.saga("greet")
... def greet(name: str) -> Saga[str]:
...     return step(lambda: f"hello {name}", name="say")
>>> runs = DurableSagas(MemoryJournal(), definitions)
>>> runs.start("greet", "ada", saga_id="greet-1")
Success(value='hello ada')
>>> runs.start("greet", "ada", saga_id="greet-1")  # the same id: the recorded outcome
Success(value='hello ada')
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any, Final, TypeVar, final

from fsaga.errors import UnknownOutcomeError
from fsaga.events import Listener, SagaFinished
from fsaga.interpreter.asynchronous import AsyncInterpreter
from fsaga.interpreter.protocol import Effect
from fsaga.interpreter.results import unwrap_result
from fsaga.interpreter.sync import SyncInterpreter
from fsaga.journal.codec import Codec, CodecError, JsonCodec
from fsaga.journal.protocol import EntrySequenceError, Journal, JournalError
from fsaga.journal.records import Entry, EntryKind, FinishedStatus, SagaRecord
from fsaga.outcome import CompensationFailure, Failure, Outcome, PartialFailure, Success
from fsaga.saga import Saga

__all__ = [
    "DefinitionConflictError",
    "DurableSagas",
    "NonDeterminismError",
    "RecordedError",
    "SagaBusyError",
    "SagaDefinitions",
    "SagaParkedError",
    "UnknownDefinitionError",
]

_I = TypeVar("_I")
_T = TypeVar("_T")

_RESULT_KINDS: Final[dict[EntryKind, EntryKind]] = {
    "intent": "completed",
    "compensation_intent": "compensated",
}
# The entries that can end an intent's effect.
_OUTCOME_KINDS: Final[dict[EntryKind, frozenset[EntryKind]]] = {
    "intent": frozenset({"completed", "failed", "unknown"}),
    "compensation_intent": frozenset({"compensated", "compensation_failed"}),
}


class UnknownDefinitionError(LookupError):
    """No saga definition is registered under this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no saga definition is registered as {name!r}")
        self.name = name


class DefinitionConflictError(ValueError):
    """A saga id already belongs to a run of another definition, version or input."""


class NonDeterminismError(RuntimeError):
    """A replay asked for other effects than the journal recorded: the definition changed.

    Nothing was performed and nothing was written once the divergence showed.
    """


class SagaBusyError(RuntimeError):
    """The saga is running (or being recovered) elsewhere: it is not run a second time."""


class SagaParkedError(RuntimeError):
    """The saga failed to recover too many times and was parked in the dead-letter state."""


class RecordedError(Exception):
    """An error as an earlier run recorded it: its type's name and its message.

    Outcomes read back from the journal, and failures a replay feeds to the engine, carry
    these instead of the original exceptions, which do not survive a process. When the
    original type can still be imported, the recorded error is also an instance of it (a
    subclass made on the fly), so a retry policy that chooses errors by type decides on a
    replay as it did in the first run.
    """

    def __init__(self, type_name: str, message: str) -> None:
        # Not `super().__init__`: in a subclass made for an original type, that would call
        # the original's constructor, whose signature is unknown.
        Exception.__init__(self, message)
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name

    def __repr__(self) -> str:
        if type(self) is RecordedError:
            return f"RecordedError({self.type_name!r}, {self.message!r})"
        return f"{type(self).__name__}({self.message!r})"  # reads like the original

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordedError):
            return NotImplemented
        return (self.type_name, self.message) == (other.type_name, other.message)

    def __hash__(self) -> int:
        return hash((self.type_name, self.message))

    def __reduce__(self) -> tuple[object, ...]:
        return (RecordedError, (self.type_name, self.message))


_RECORDED_TYPES: dict[str, type[RecordedError]] = {}


def _recorded_type(origin: str) -> type[RecordedError]:
    """A `RecordedError` subclass that is also the type named ``module:qualname``, if that type
    can be imported and combined; `RecordedError` otherwise."""
    known = _RECORDED_TYPES.get(origin)
    if known is not None:
        return known
    made: type[RecordedError] = RecordedError
    module_name, _, qualname = origin.partition(":")
    try:
        found: object = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
        if (
            isinstance(found, type)
            and issubclass(found, Exception)
            and not issubclass(found, RecordedError)
        ):
            made = type(found.__name__, (RecordedError, found), {"__module__": __name__})
    except Exception:
        made = RecordedError  # not importable, or its layout cannot be combined
    _RECORDED_TYPES[origin] = made
    return made


@final
@dataclass(frozen=True, slots=True)
class _Definition:
    name: str
    version: int
    build: Callable[[Any], Saga[object]]


@final
class SagaDefinitions:
    """Saga definitions by name: how `DurableSagas` rebuilds a run from its recorded input."""

    __slots__ = ("_by_name",)

    def __init__(self) -> None:
        self._by_name: dict[str, _Definition] = {}

    def saga(
        self, name: str, *, version: int = 1
    ) -> Callable[[Callable[[_I], Saga[_T]]], Callable[[_I], Saga[_T]]]:
        """Register the decorated function (input -> saga) under `name` and `version`.

        Bump `version` when the steps change: a run started under another version is not
        replayed against the new steps (its `start` raises `DefinitionConflictError`).
        """
        given_name: object = name
        given_version: object = version
        if not isinstance(given_name, str) or not given_name:
            raise ValueError(f"a saga definition needs a non-empty name, got {name!r}")
        if isinstance(given_version, bool) or not isinstance(given_version, int) or version < 1:
            raise ValueError(f"saga definition {name!r}: version must be an int >= 1")

        def register(build: Callable[[_I], Saga[_T]]) -> Callable[[_I], Saga[_T]]:
            if not callable(build):
                raise TypeError(f"saga definition {name!r} must be a callable, got {build!r}")
            if name in self._by_name:
                raise ValueError(f"a saga definition is already registered as {name!r}")
            self._by_name[name] = _Definition(name, version, build)
            return build

        return register

    def lookup(self, name: str) -> tuple[int, Callable[[Any], Saga[object]]]:
        """The version and builder registered under `name`."""
        definition = self._by_name.get(name)
        if definition is None:
            raise UnknownDefinitionError(name)
        return definition.version, definition.build


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
        if isinstance(max_recovery_attempts, bool) or max_recovery_attempts < 1:
            raise ValueError("max_recovery_attempts must be at least 1")
        if stale_after < 0:
            raise ValueError("stale_after must not be negative")
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
        for record in self._journal.sagas("running"):
            try:
                ready = self._prepare_resume(record)
                outcomes[record.saga_id] = (
                    ready if not isinstance(ready, _Ready) else self._run(ready)
                )
            except SagaBusyError:
                continue
            except Exception as error:
                outcomes[record.saga_id] = error
        return outcomes

    async def recover_async(self) -> dict[str, Outcome[object] | BaseException]:
        """`recover`, with `AsyncInterpreter` (see `start_async`)."""
        outcomes: dict[str, Outcome[object] | BaseException] = {}
        for record in self._journal.sagas("running"):
            try:
                ready = self._prepare_resume(record)
                outcomes[record.saga_id] = (
                    ready if not isinstance(ready, _Ready) else await self._run_async(ready)
                )
            except SagaBusyError:
                continue
            except Exception as error:
                outcomes[record.saga_id] = error
        return outcomes

    def _prepare_start(self, name: str, input: object, saga_id: str) -> Outcome[object] | _Ready:
        version, build = self._definitions.lookup(name)
        encoded = self._codec.encode(input)
        record = self._journal.get(saga_id)
        if record is None:
            # Created by the run's first write, together with its first intent: one commit
            # fewer. Should another start create it first, that write says so and the run
            # stops before its first effect.
            saga = build(self._codec.decode(encoded))
            recorder = _Recorder(
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
            record.saga_id, saga, _Recorder(self._journal, record.saga_id, self._codec, recorded)
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
                    {"kind": "failure", "error": _describe(error), "compensated": compensated}
                )
            case PartialFailure():
                return codec.encode(
                    {
                        "kind": "partial_failure",
                        "error": _describe(outcome.error),
                        "compensated": outcome.compensated,
                        "failed": [
                            [failure.path, _describe(failure.error), failure.attempts]
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
        error = _revive(document["error"])
        if kind == "failure":
            return Failure(error, tuple(document["compensated"]))
        return PartialFailure(
            error,
            tuple(document["compensated"]),
            tuple(
                CompensationFailure(path, _revive(described), attempts)
                for path, described, attempts in document["failed"]
            ),
            tuple(document["skipped"]),
            tuple(document["unresolved"]),
        )


def _describe(error: BaseException) -> list[str]:
    """An error as the journal keeps it: ``[module:qualname, name, message]``."""
    if isinstance(error, RecordedError):
        return [_ORIGINS.get(type(error), "builtins:Exception"), error.type_name, error.message]
    kind = type(error)
    return [f"{kind.__module__}:{kind.__qualname__}", kind.__qualname__, str(error)]


def _revive(described: object) -> RecordedError:
    """The error `_describe` recorded, back as a `RecordedError`."""
    if isinstance(described, list) and len(described) == 3:
        origin, name, message = (str(part) for part in described)
        error = _recorded_type(origin)(name, message)
        _ORIGINS.setdefault(type(error), origin)
        return error
    return RecordedError("Exception", str(described))


_ORIGINS: dict[type[RecordedError], str] = {}


@final
class _Ready:
    """A run about to start or resume: its saga, its recorder, and the outcome it reports."""

    __slots__ = ("finished", "recorder", "saga", "saga_id")

    def __init__(self, saga_id: str, saga: Saga[object], recorder: _Recorder) -> None:
        self.saga_id = saga_id
        self.saga = saga
        self.recorder = recorder
        self.finished: list[Outcome[object]] = []

    def keep_outcome(self, event: object) -> None:
        if isinstance(event, SagaFinished):
            self.finished.append(event.outcome)


class _Halt(Exception):
    """Raised in place of every effect once a run must stop touching the world."""


@final
class _Recorder:
    """The `Perform` function of a durable run: replays what the journal holds, then records
    each effect (intent before, result after) as it runs it."""

    __slots__ = (
        "_codec",
        "_create",
        "_journal",
        "_position",
        "_recorded",
        "_saga_id",
        "pending",
        "trouble",
    )

    def __init__(
        self,
        journal: Journal,
        saga_id: str,
        codec: Codec,
        recorded: list[Entry],
        *,
        create: tuple[str, int, bytes] | None = None,
    ) -> None:
        self._journal = journal
        self._saga_id = saga_id
        self._codec = codec
        self._recorded = recorded
        # (name, version, input) of a saga the first write creates.
        self._create = create
        self._position = 0
        # Entries written with the next commit: a result waits for the next intent (or the
        # outcome), so a step costs one commit where no effect lies between two transitions.
        self.pending: list[Entry] = []
        self.trouble: BaseException | None = None

    def raise_trouble(self) -> None:
        if self.trouble is not None:
            raise self.trouble

    def create_if_needed(self) -> None:
        """Create the saga's record, with what is pending, if no write has yet (a run with no
        effect)."""
        if self._create is None:
            return
        self._write(self.pending)
        self.raise_trouble()

    def _write(self, entries: list[Entry]) -> None:
        """Commit `entries` (creating the saga with them, on a run's first write); on failure,
        stop the run from touching the world."""
        try:
            if self._create is not None:
                name, version, encoded = self._create
                self._create = None
                _, created = self._journal.create(
                    self._saga_id, name, version, encoded, entries=entries
                )
                if not created:
                    self.trouble = SagaBusyError(
                        f"saga {self._saga_id!r} was started elsewhere at the same time"
                    )
                    raise _Halt(str(self.trouble))
            else:
                self._journal.append(self._saga_id, entries)
        except EntrySequenceError as error:
            self.trouble = SagaBusyError(
                f"saga {self._saga_id!r} was taken over by another process: {error}"
            )
            raise _Halt(str(self.trouble)) from error
        except JournalError as error:
            # Nothing may run that the journal did not record: stop here, and let the error
            # out of the run; `recover` carries on from what was recorded.
            self.trouble = error
            raise _Halt(str(error)) from error
        self._recorded.extend(entries)
        self._position = len(self._recorded)
        self.pending = []

    def _next_seq(self) -> int:
        return len(self._recorded) + len(self.pending) + 1

    def __call__(self, effect: Effect) -> object:
        if self.trouble is not None:
            raise _Halt("the run stopped touching the world")
        intent: EntryKind = "intent" if effect.kind == "action" else "compensation_intent"
        if self._position < len(self._recorded):
            return self._replay(effect, intent)
        return self._perform(effect, intent, write_intent=True)

    def _replay(self, effect: Effect, intent: EntryKind) -> object:
        entry = self._recorded[self._position]
        if (entry.kind, entry.path, entry.attempt) != (intent, effect.path, effect.attempt):
            self.trouble = NonDeterminismError(
                f"saga {self._saga_id!r}: the replay asked for the {effect.kind} of step "
                f"{effect.path!r} (attempt {effect.attempt}); the journal recorded "
                f"{entry.kind} of {entry.path!r} (attempt {entry.attempt}) at #{entry.seq}"
            )
            raise _Halt(str(self.trouble))
        self._position += 1
        following = self._recorded[self._position] if self._position < len(self._recorded) else None
        if following is None:
            # The journal ends at this intent: the effect was in flight when its process
            # stopped. Its outcome is unknown, and the journal says so from now on.
            if effect.kind == "action":
                unknown = UnknownOutcomeError(
                    f"step {effect.path!r} was running when its process stopped"
                )
                self._record("unknown", effect, _error_bytes(self._codec, unknown))
                raise unknown
            return self._perform(effect, intent, write_intent=False)  # compensations repeat
        if (
            following.path != effect.path
            or following.attempt != effect.attempt
            or following.kind not in _OUTCOME_KINDS[intent]
        ):
            # Nothing was recorded for it before the run moved on: it was left unknown. (The
            # entry after it may share its path and attempt: the intent of its own undo.)
            if effect.kind == "action":
                raise UnknownOutcomeError(f"step {effect.path!r} was left with no outcome")
            raise RecordedError("Interrupted", f"the compensation of {effect.path!r} was cut off")
        self._position += 1
        if following.kind == _RESULT_KINDS[intent]:
            if following.payload is None:
                return None
            return self._codec.decode(following.payload)
        if following.kind == "unknown":
            raise UnknownOutcomeError(str(_replayed_error(self._codec, following)))
        raise _replayed_error(self._codec, following)

    def _perform(self, effect: Effect, intent: EntryKind, *, write_intent: bool) -> object:
        if write_intent:
            self._write(
                [*self.pending, Entry(self._next_seq(), intent, effect.path, effect.attempt)]
            )
        try:
            result = effect.run()
        except Exception as error:
            self._failed(effect, intent, error)
            raise
        if isawaitable(result):
            return self._settle_later(effect, intent, result)
        return self._settled(effect, intent, result)

    async def _settle_later(
        self, effect: Effect, intent: EntryKind, pending: Awaitable[object]
    ) -> object:
        """An async effect's result, awaited, recorded as a plain one's is."""
        try:
            result: object = pending
            while isawaitable(result):
                result = await result
        except Exception as error:
            self._failed(effect, intent, error)
            raise
        return self._settled(effect, intent, result)

    def _failed(self, effect: Effect, intent: EntryKind, error: Exception) -> None:
        kind: EntryKind
        if isinstance(error, UnknownOutcomeError):
            kind = "unknown"
        else:
            kind = "failed" if intent == "intent" else "compensation_failed"
        self._record(kind, effect, _error_bytes(self._codec, error))

    def _settled(self, effect: Effect, intent: EntryKind, result: object) -> object:
        success = _RESULT_KINDS[intent]
        if effect.kind != "action":
            self._record(success, effect, None)
            return result
        value, returned_failure = unwrap_result(effect.path, result)
        if returned_failure is not None:
            self._record("failed", effect, _error_bytes(self._codec, returned_failure))
            return result
        try:
            payload = None if value is None else self._codec.encode(value)
        except CodecError as error:
            unrecordable = UnknownOutcomeError(
                f"step {effect.path!r} completed, but its result cannot be recorded: {error}"
            )
            self._record("unknown", effect, _error_bytes(self._codec, unrecordable))
            raise unrecordable from error
        self._record(success, effect, payload)
        return value

    def _record(self, kind: EntryKind, effect: Effect, payload: bytes | None) -> None:
        self.pending.append(Entry(self._next_seq(), kind, effect.path, effect.attempt, payload))


def _error_bytes(codec: Codec, error: BaseException) -> bytes:
    return codec.encode(_describe(error))


def _replayed_error(codec: Codec, entry: Entry) -> RecordedError:
    """The error `entry` recorded, as a `RecordedError`."""
    if entry.payload is None:
        return RecordedError("Exception", "")
    return _revive(codec.decode(entry.payload))
