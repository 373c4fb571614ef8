"""The `Perform` function of a durable run: it replays the journal, then records."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from inspect import isawaitable
from typing import Final, final

from fsaga.durable.errors import (
    NonDeterminismError,
    RecordedError,
    SagaBusyError,
    describe_error,
    revive_error,
)
from fsaga.errors import ResultRejectedError, UnknownOutcomeError
from fsaga.interpreter.protocol import Effect
from fsaga.interpreter.results import unwrap_result
from fsaga.journal.codec import Codec, CodecError
from fsaga.journal.protocol import EntrySequenceError, Journal, JournalError, SagaFinishedError
from fsaga.journal.records import Entry, EntryKind, FinishedStatus

__all__ = ["Recorder", "RecoveryClaim", "TakenOver"]

_RESULT_KINDS: Final[dict[EntryKind, EntryKind]] = {
    "intent": "completed",
    "compensation_intent": "compensated",
}
# The entries that can end an intent's effect.
_OUTCOME_KINDS: Final[dict[EntryKind, frozenset[EntryKind]]] = {
    "intent": frozenset({"completed", "failed", "unknown", "rejected"}),
    "compensation_intent": frozenset({"compensated", "compensation_failed"}),
}


class _Halt(Exception):
    """Raised in place of every effect once a run must stop touching the world."""


class TakenOver(SagaBusyError):
    """Another process owns the saga now: it claimed it first, extended its timeline, or
    finished or parked it. The runner reads the journal to tell which."""


@final
class _Unrecorded:
    """The result of a rejected step that a replay stands in for: it was never recorded."""

    def __repr__(self) -> str:
        return "<result not recorded>"


_UNRECORDED: Final = _Unrecorded()


@final
@dataclass(frozen=True, slots=True)
class RecoveryClaim:
    """What a recovery claims the saga with (`Journal.claim_for_recovery`), once its replay
    matched the journal."""

    max_attempts: int
    stale_before: float | None


@final
class Recorder:
    """The `Perform` function of a durable run: replays what the journal holds, then records
    each effect (intent before, result after) as it runs it.

    A replay performs nothing and writes nothing. A recovery claims the saga only before its
    first write or its first effect, so a recovery refused during the replay (a divergence, a
    payload it cannot decode) leaves the journal as it found it (contract rule 12).
    """

    __slots__ = (
        "_claim",
        "_codec",
        "_create",
        "_journal",
        "_position",
        "_recorded",
        "_saga_id",
        "claimed",
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
        claim: RecoveryClaim | None = None,
    ) -> None:
        self._journal = journal
        self._saga_id = saga_id
        self._codec = codec
        self._recorded = recorded
        # (name, version, input) of a saga the first write creates.
        self._create = create
        self._claim = claim
        self._position = 0
        self.claimed = False
        """Whether this run claimed the saga for recovery."""
        # Entries written with the next commit: a result waits for the next intent (or the
        # outcome), so a step costs one commit where no effect lies between two transitions.
        self.pending: list[Entry] = []
        self.trouble: BaseException | None = None

    @property
    def replayed_all(self) -> bool:
        """Whether the run asked for every effect the journal recorded."""
        return self._position >= len(self._recorded)

    def raise_trouble(self) -> None:
        """Raise what stopped the run from touching the world, if anything did; and refuse a
        run that ended before its replay reached the end of the journal: it decided otherwise
        than the run that wrote it, so its outcome is not the saga's (nothing is written)."""
        if self.trouble is None and not self.replayed_all:
            entry = self._recorded[self._position]
            self.trouble = NonDeterminismError(
                f"saga {self._saga_id!r}: the replay finished, but the journal recorded more: "
                f"{entry.kind} of {entry.path!r} (attempt {entry.attempt}) at #{entry.seq}"
            )
        if self.trouble is not None:
            raise self.trouble

    def finish(self, status: FinishedStatus, outcome: bytes) -> bool:
        """Record the outcome, with what is pending (creating the saga first if no write has).

        Returns ``False`` when another process recorded an outcome first, or parked the saga.
        Raises what stopped the run (`TakenOver` among others), or a journal error.
        """
        try:
            self._own()
            if self._create is not None:
                self._write(self.pending)
            return self._journal.finish(self._saga_id, status, outcome, entries=self.pending)
        except _Halt:
            self.raise_trouble()
            raise
        except EntrySequenceError as error:
            raise self._taken_over() from error

    def _own(self) -> None:
        """Claim the saga for recovery, once, before the run's first write or effect."""
        claim = self._claim
        if claim is None:
            return
        self._claim = None
        try:
            claimed = self._journal.claim_for_recovery(
                self._saga_id, max_attempts=claim.max_attempts, stale_before=claim.stale_before
            )
        except JournalError as error:
            self.trouble = error
            raise _Halt(str(error)) from error
        if not claimed:
            self.trouble = self._taken_over()
            raise _Halt(str(self.trouble))
        self.claimed = True

    def _taken_over(self) -> TakenOver:
        return TakenOver(f"saga {self._saga_id!r} was taken over by another process")

    def _write(self, entries: list[Entry]) -> None:
        """Commit `entries` (creating the saga with them, on a run's first write); on failure,
        stop the run from touching the world."""
        self._own()
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
        except (EntrySequenceError, SagaFinishedError) as error:
            # Another writer extended the timeline, or finished or parked the saga, since this
            # run read it: the saga is that writer's now.
            self.trouble = self._taken_over()
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

    # -- replay -----------------------------------------------------------------------------

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
                self._record("unknown", effect, self._error_bytes(unknown))
                raise unknown
            return self._perform(effect, intent, write_intent=False)  # compensations repeat
        if (
            following.path != effect.path
            or following.attempt != effect.attempt
            or following.kind not in _OUTCOME_KINDS[intent]
        ):
            # Nothing was recorded for it before the run moved on: an interrupt cut it short,
            # and the run went straight to its undo, retrying nothing. (The entry after it may
            # share its path and attempt: the intent of its own undo.)
            if effect.kind == "action":
                raise _unknown(f"step {effect.path!r} was cut short by an interrupt", final=True)
            raise revive_error(
                [
                    "builtins:Exception",
                    "Interrupted",
                    f"the compensation of {effect.path!r} was cut off",
                ],
                final=True,
            )
        self._position += 1
        if following.kind == _RESULT_KINDS[intent]:
            return None if following.payload is None else self._decoded(following)
        if following.kind == "rejected":
            raise self._rejection(following)
        # The run that recorded the failure retried it or not, whatever the policy would say
        # now (an interrupt may have come before the retry): the replay does as it did.
        final = not self._retried_next(effect, intent)
        error = self._recorded_error(following, final=final)
        if following.kind == "unknown" and not isinstance(error, UnknownOutcomeError):
            # Its type could not be imported again: still an unknown outcome to the engine.
            raise _unknown(error.message, final=final)
        raise error

    def _retried_next(self, effect: Effect, intent: EntryKind) -> bool:
        """Whether the journal's next entry, after the failure of `effect` just replayed, is
        its next attempt; also when the journal ends there, as the engine then decides."""
        if self._position == len(self._recorded):
            return True
        following = self._recorded[self._position]
        return (following.kind, following.path, following.attempt) == (
            intent,
            effect.path,
            effect.attempt + 1,
        )

    def _decoded(self, entry: Entry) -> object:
        """The value `entry` recorded; a payload the codec cannot decode stops the replay, as
        a divergence does: nothing performed, nothing written."""
        assert entry.payload is not None
        try:
            return self._codec.decode(entry.payload)
        except CodecError as error:
            self.trouble = CodecError(
                f"saga {self._saga_id!r} cannot be replayed: entry #{entry.seq} ({entry.kind} "
                f"of step {entry.path!r}, attempt {entry.attempt}) cannot be decoded: {error}"
            )
            raise _Halt(str(self.trouble)) from error

    def _recorded_error(self, entry: Entry, *, final: bool = False) -> RecordedError:
        if entry.payload is None:
            return revive_error(["builtins:Exception", "Exception", ""], final=final)
        return revive_error(self._decoded(entry), final=final)

    def _rejection(self, entry: Entry) -> ResultRejectedError:
        """The `ResultRejectedError` a ``rejected`` entry recorded: with its result when the
        result was recorded, else with a stand-in that its compensation refuses to run on."""
        document = self._decoded(entry) if entry.payload is not None else None
        if not isinstance(document, dict) or "error" not in document:
            self.trouble = CodecError(
                f"saga {self._saga_id!r} cannot be replayed: entry #{entry.seq} (rejected of "
                f"step {entry.path!r}) is not a rejection: {document!r}"
            )
            raise _Halt(str(self.trouble))
        result = document.get("result", _UNRECORDED)
        return ResultRejectedError(result, revive_error(document["error"]))

    # -- performing and recording -----------------------------------------------------------

    def _perform(self, effect: Effect, intent: EntryKind, *, write_intent: bool) -> object:
        if write_intent:
            self._write(
                [*self.pending, Entry(self._next_seq(), intent, effect.path, effect.attempt)]
            )
        else:
            self._own()
        if effect.kind == "compensation" and effect.argument is _UNRECORDED:
            refusal = CodecError(
                f"the compensation of step {effect.path!r} of saga {self._saga_id!r} cannot run: "
                "its step's result could not be recorded, and the process that held it stopped "
                "before the compensation finished; undo that step by hand"
            )
            self._failed(effect, intent, refusal)
            raise refusal
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
        if isinstance(error, ResultRejectedError) and intent == "intent":
            self._record("rejected", effect, self._rejection_bytes(error.result, error.error))
            return
        if isinstance(error, UnknownOutcomeError):
            kind = "unknown"
        else:
            kind = "failed" if intent == "intent" else "compensation_failed"
        self._record(kind, effect, self._error_bytes(error))

    def _settled(self, effect: Effect, intent: EntryKind, result: object) -> object:
        success = _RESULT_KINDS[intent]
        if effect.kind != "action":
            self._record(success, effect, None)
            return result
        value, returned_failure = unwrap_result(effect.path, result)
        if returned_failure is not None:
            self._record("failed", effect, self._error_bytes(returned_failure))
            return result
        try:
            payload = None if value is None else self._codec.encode(value)
        except CodecError as error:
            # The effect took place: running it again cannot make its result encodable. The
            # step fails, and is compensated with the result this process holds.
            unrecordable = CodecError(
                f"step {effect.path!r} of saga {self._saga_id!r} returned a value the journal "
                f"cannot record: {error}"
            )
            self._record("rejected", effect, self._rejection_bytes(_UNRECORDED, unrecordable))
            raise ResultRejectedError(value, unrecordable) from error
        self._record(success, effect, payload)
        return value

    def _rejection_bytes(self, result: object, error: Exception) -> bytes:
        described = describe_error(error)
        if result is not _UNRECORDED:
            try:
                return self._codec.encode({"error": described, "result": result})
            except CodecError:
                pass  # recorded without it: a recovery will not compensate it with a guess
        return self._codec.encode({"error": described})

    def _error_bytes(self, error: BaseException) -> bytes:
        return self._codec.encode(describe_error(error))

    def _record(self, kind: EntryKind, effect: Effect, payload: bytes | None) -> None:
        self.pending.append(Entry(self._next_seq(), kind, effect.path, effect.attempt, payload))


def _unknown(message: str, *, final: bool) -> RecordedError:
    """An unknown outcome as a replay feeds it to the engine: an `UnknownOutcomeError` (a
    `NonRetryableError` too, when the recording run did not run the step again forward)."""
    return revive_error(
        ["fsaga.errors:UnknownOutcomeError", "UnknownOutcomeError", message], final=final
    )
