"""The `Perform` function of a durable run: it replays the journal, then records."""

from __future__ import annotations

from collections.abc import Awaitable
from inspect import isawaitable
from typing import Final, final

from fsaga.durable.errors import (
    NonDeterminismError,
    RecordedError,
    SagaBusyError,
    describe_error,
    recorded_error,
)
from fsaga.errors import UnknownOutcomeError
from fsaga.interpreter.protocol import Effect
from fsaga.interpreter.results import unwrap_result
from fsaga.journal.codec import Codec, CodecError
from fsaga.journal.protocol import EntrySequenceError, Journal, JournalError
from fsaga.journal.records import Entry, EntryKind

__all__ = ["Recorder"]

_RESULT_KINDS: Final[dict[EntryKind, EntryKind]] = {
    "intent": "completed",
    "compensation_intent": "compensated",
}
# The entries that can end an intent's effect.
_OUTCOME_KINDS: Final[dict[EntryKind, frozenset[EntryKind]]] = {
    "intent": frozenset({"completed", "failed", "unknown"}),
    "compensation_intent": frozenset({"compensated", "compensation_failed"}),
}


class _Halt(Exception):
    """Raised in place of every effect once a run must stop touching the world."""


@final
class Recorder:
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
            raise UnknownOutcomeError(str(recorded_error(self._codec, following)))
        raise recorded_error(self._codec, following)

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
    return codec.encode(describe_error(error))
