"""The `Perform` function of a durable run: it replays the journal, then records."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from inspect import isawaitable
from typing import Final, final

import anyio
import anyio.lowlevel

from fsaga.durable.deadlines import RUN_AGAIN, Deadlines
from fsaga.durable.errors import (
    NonDeterminismError,
    RecordedError,
    SagaBusyError,
    describe_error,
    revive_error,
)
from fsaga.durable.replay import Replay
from fsaga.errors import ResultRejectedError, UnknownOutcomeError
from fsaga.events import Event
from fsaga.interpreter._attempts import NotStarted
from fsaga.interpreter.protocol import Effect
from fsaga.interpreter.results import unwrap_result
from fsaga.interpreter.sync import _wait as wait_in_thread
from fsaga.journal.codec import Codec, CodecError
from fsaga.journal.protocol import EntrySequenceError, Journal, JournalError, SagaFinishedError
from fsaga.journal.records import Entry, EntryKind, FinishedStatus

__all__ = ["OutOfOrder", "Recorder", "RecoveryClaim", "TakenOver"]

_RESULT_KINDS: Final[dict[EntryKind, EntryKind]] = {
    "intent": "completed",
    "compensation_intent": "compensated",
}
# How many times in a row a replay waiting for its turn may find that nothing else moved before
# it takes the replay for stuck. Every task of a replay that can move does so within a pass or
# two of the event loop (a replayed effect never waits on the world), so this only tells a
# divergence from a slow start.
_PATIENCE: Final = 16


class _Halt(Exception):
    """Raised in place of every effect once a run must stop touching the world."""


class TakenOver(SagaBusyError):
    """Another process owns the saga now: it claimed it first, extended its timeline, or
    finished or parked it. The runner reads the journal to tell which."""


class OutOfOrder(NonDeterminismError):
    """A run that performs one effect at a time asked for a recorded effect before the journal's
    order allows: it cannot replay a timeline that concurrent branches recorded (the runner
    replays it with `AsyncInterpreter`)."""


class _Matched(Exception):
    """What stops a probe: its replay matched the journal, and the run would go on live."""


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
    first write or its first effect, once every recorded entry has been replayed, so a recovery
    refused during the replay (a divergence, a payload it cannot decode) leaves the journal as
    it found it (contract rule 12).

    A replay finds each effect's entries by its path (see `fsaga.durable.replay`) and hands the
    recorded results back in the order they were recorded. With `concurrent` (set by a run
    under `AsyncInterpreter`), an effect whose result is not next waits for its turn, and an
    effect the journal never saw waits until everything recorded has been replayed; one at a
    time (`SyncInterpreter`), either stops the run with `OutOfOrder`.

    Effects of concurrent branches call it from concurrent tasks: every change of its state
    happens between two awaits, so two tasks never see one half made.
    """

    __slots__ = (
        "_asked",
        "_claim",
        "_codec",
        "_create",
        "_deadlines",
        "_history",
        "_journal",
        "_noted",
        "_probing",
        "_progress",
        "_replay",
        "_saga_id",
        "_written",
        "claimed",
        "concurrent",
        "note",
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
        # What is left to replay: None once everything recorded has been (or nothing was).
        self._replay = Replay(recorded, run_again=codec.encode(RUN_AGAIN)) if recorded else None
        self._history = recorded
        self._written = len(recorded)
        # (name, version, input) of a saga the first write creates.
        self._create = create
        self._claim = claim
        self._probing = False
        # Counts what the replay does, so that a task waiting for its turn can tell a replay
        # that moves from one that is stuck; and the effects waiting for the replay to end.
        self._progress = 0
        self._asked: list[Effect] = []
        self._deadlines = Deadlines()
        self.concurrent = False
        """Whether effects may wait for their turn (the run is under `AsyncInterpreter`)."""
        self.claimed = False
        """Whether this run claimed the saga for recovery."""
        # Entries written with the next commit: a result waits for the next intent (or the
        # outcome), so a step costs one commit where no effect lies between two transitions.
        self.pending: list[Entry] = []
        self.trouble: BaseException | None = None
        self.note: Callable[[], bytes | None] | None = None
        """Makes the payload of the first intent this run writes: what its listeners carry
        across a crash (`fsaga.durable.carrier`), if any do."""
        self._noted = False

    @property
    def history(self) -> list[Entry]:
        """What the journal held for the saga when this run began (empty for a new one)."""
        return self._history

    @property
    def replayed_all(self) -> bool:
        """Whether the run asked for every effect the journal recorded."""
        return self._replay is None

    def again(self) -> Recorder:
        """A recorder for another run over the same journal: one that starts over (nothing
        written, nothing replayed, nothing claimed yet)."""
        assert not self.claimed
        assert not self.pending
        assert self._create is None
        recorded = [] if self._replay is None else list(self._replay.entries)
        return Recorder(self._journal, self._saga_id, self._codec, recorded, claim=self._claim)

    def probe(self) -> Recorder:
        """A recorder that only replays, for a run that checks whether the journal can be
        replayed one effect at a time: it stops that run where it would perform, write or
        claim anything, with `matched` true."""
        recorder = self.again()
        recorder._claim = None
        recorder._probing = True
        return recorder

    @property
    def matched(self) -> bool:
        """Whether a probe's replay matched the journal (see `probe`)."""
        return isinstance(self.trouble, _Matched) or (self.trouble is None and self._replay is None)

    def raise_trouble(self) -> None:
        """Raise what stopped the run from touching the world, if anything did; and refuse a
        run that ended before its replay reached the end of the journal: it decided otherwise
        than the run that wrote it, so its outcome is not the saga's (nothing is written)."""
        replay = self._replay
        if self.trouble is None and replay is not None:
            self.trouble = NonDeterminismError(
                f"saga {self._saga_id!r}: the replay finished, but the journal recorded more: "
                f"{_where(replay)}"
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

    def observe(self, event: Event) -> None:
        """A listener of the run: records what its deadlines decided, since a replay cannot
        consult the clock (see `fsaga.durable.deadlines`)."""
        decision = self._deadlines.decided(event, live=self._replay is None)
        if decision is not None:
            kind, path, attempt, error = decision
            self._record_at(kind, path, attempt, self._error_bytes(error))

    async def sleep(self, delay: float) -> None:
        """Wait `delay` seconds before a retry; while replaying, only let other tasks run: the
        recorded run waited already, and a replay that sleeps would look stuck to those
        waiting for their turn."""
        if self._replay is None:
            await anyio.sleep(delay)
        else:
            await anyio.lowlevel.checkpoint()

    def sleep_in_thread(self, delay: float) -> None:
        """`sleep` for `SyncInterpreter`: wait `delay` seconds in the calling thread before a
        retry, unless replaying (the recorded run waited already)."""
        if self._replay is None:
            wait_in_thread(delay)

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
        self._written += len(entries)
        self.pending = []

    def _next_seq(self) -> int:
        return self._written + len(self.pending) + 1

    def __call__(self, effect: Effect) -> object:
        if self.trouble is not None:
            raise _Halt("the run stopped touching the world")
        intent: EntryKind = "intent" if effect.kind == "action" else "compensation_intent"
        replay = self._replay
        if replay is not None:
            return self._replayed(replay, effect, intent)
        return self._perform(effect, intent, write_intent=True)

    # -- replay -----------------------------------------------------------------------------

    def _replayed(self, replay: Replay, effect: Effect, intent: EntryKind) -> object:
        """What the journal recorded for `effect`, at its turn; or `effect` performed, once
        everything recorded has been replayed, if the journal never saw it."""
        self._progress += 1
        head_index = replay.head_index(effect.path)
        if head_index is None:
            return self._unrecorded(replay, effect, intent)
        head = replay.entries[head_index]
        expected: tuple[EntryKind, int] = (intent, effect.attempt)
        if replay.not_started(head_index) and self._deadlines.announced(
            effect.path, effect.attempt
        ):
            # A retry the recorded run decided on, which a deadline kept from starting.
            expected = (head.kind, effect.attempt)
        if (head.kind, head.attempt) != expected:
            self.trouble = NonDeterminismError(
                f"saga {self._saga_id!r}: the replay asked for the {effect.kind} of step "
                f"{effect.path!r} (attempt {effect.attempt}); the journal recorded "
                f"{head.kind} of {head.path!r} (attempt {head.attempt}) at #{head.seq}"
            )
            raise _Halt(str(self.trouble))
        index = replay.take(effect.path)
        if effect.kind == "action":
            self._deadlines.replayed(effect.path, effect.attempt)
        slot = replay.slot_of(index)
        if slot is None:
            # The journal ends this step at its intent: the effect was in flight when its
            # process stopped. Settled once the rest has been replayed.
            return self._after_replay(replay, effect, lambda: self._in_flight(effect, intent))
        if replay.turn == slot:
            return self._deliver(replay, effect, intent, index)
        if not self.concurrent:
            raise self._out_of_order(replay, effect)
        return self._in_turn(replay, effect, intent, index, slot)

    def _unrecorded(self, replay: Replay, effect: Effect, intent: EntryKind) -> object:
        """An effect the journal never saw, asked for before the replay is over."""
        if effect.kind == "action" and effect.attempt == 1 and replay.undo_began:
            # The recorded run had ended its forward work without starting this step: a
            # deadline binding it had passed (the engine names it), or an interrupt came first.
            interrupted = revive_error(
                [
                    "builtins:Exception",
                    "Interrupted",
                    f"step {effect.path!r} did not start: its run had stopped before",
                ],
                final=True,
            )
            raise NotStarted(interrupted, recorded=False)
        return self._after_replay(
            replay,
            effect,
            lambda: self._perform(effect, intent, write_intent=True),
            unrecorded=True,
        )

    def _after_replay(
        self,
        replay: Replay,
        effect: Effect,
        then: Callable[[], object],
        *,
        unrecorded: bool = False,
    ) -> object:
        """`then()` once everything recorded has been replayed: now, or, with `concurrent`, when
        the tasks replaying the rest are done. `unrecorded`: the journal never saw `effect`."""
        self._end_of(replay)
        if self._replay is None:
            return then()
        if not self.concurrent:
            raise self._out_of_order(replay, effect)
        return self._later(replay, effect, then, unrecorded=unrecorded)

    async def _later(
        self, replay: Replay, effect: Effect, then: Callable[[], object], *, unrecorded: bool
    ) -> object:
        if unrecorded:
            self._asked.append(effect)
        try:
            await self._wait(replay, lambda: replay.done)
        finally:
            if unrecorded:
                self._asked.remove(effect)
        result = then()
        while isawaitable(result):
            result = await result
        return result

    async def _in_turn(
        self, replay: Replay, effect: Effect, intent: EntryKind, index: int, slot: int
    ) -> object:
        await self._wait(replay, lambda: replay.turn == slot)
        return self._deliver(replay, effect, intent, index)

    async def _wait(self, replay: Replay, ready: Callable[[], bool]) -> None:
        """Let the other tasks of the run replay until `ready()`; stop the run if the replay
        is stuck: every task waits, and the one whose turn it is never asks (a divergence)."""
        seen, idle = self._progress, 0
        while not ready():
            if self.trouble is not None:
                raise _Halt("the run stopped touching the world")
            await anyio.lowlevel.checkpoint()
            if self._progress != seen:
                seen, idle = self._progress, 0
                continue
            idle += 1
            if idle > _PATIENCE and not ready() and self.trouble is None:
                self.trouble = self._stuck(replay)
        if self.trouble is not None:
            raise _Halt("the run stopped touching the world")

    def _stuck(self, replay: Replay) -> NonDeterminismError:
        if self._asked:
            asked = self._asked[0]
            return NonDeterminismError(
                f"saga {self._saga_id!r}: the replay asked for the {asked.kind} of step "
                f"{asked.path!r} (attempt {asked.attempt}); the journal recorded "
                f"{_where(replay)}"
            )
        return NonDeterminismError(
            f"saga {self._saga_id!r}: the replay never asked for what the journal recorded "
            f"next: {_where(replay)}"
        )

    def _out_of_order(self, replay: Replay, effect: Effect) -> _Halt:
        self.trouble = OutOfOrder(
            f"saga {self._saga_id!r}: the replay asked for the {effect.kind} of step "
            f"{effect.path!r} (attempt {effect.attempt}) before the journal's order allows; "
            f"it recorded first {_where(replay)}"
        )
        return _Halt(str(self.trouble))

    def _end_of(self, replay: Replay) -> None:
        """Forget `replay` once it is done: the run goes on live."""
        if replay.done and self._replay is replay:
            self._replay = None

    def _deliver(self, replay: Replay, effect: Effect, intent: EntryKind, index: int) -> object:
        """Hand `effect` its recorded result (or raise its recorded error), whose turn it is."""
        self._progress += 1
        result = replay.deliver(index)
        self._end_of(replay)
        if result is None:
            if replay.not_started(index):
                # A retry a deadline kept from starting: the step fails as it did.
                entry = replay.entries[index]
                self._deadlines.replayed_not_started(entry.path, entry.attempt)
                raise NotStarted(self._recorded_error(entry), recorded=True)
            raise self._cut_off_unrecorded(replay, effect, index)
        following = replay.entries[result]
        if following.kind == _RESULT_KINDS[intent]:
            return None if following.payload is None else self._decoded(following)
        if following.kind == "rejected":
            raise self._rejection(following)
        # The run that recorded the failure retried it or not, whatever the policy would say
        # now (an interrupt may have come before the retry, a deadline may have kept it from
        # starting or cut the attempt off for every attempt): the replay does as it did.
        unknown = following.kind == "unknown"
        final = not replay.retried_after(result)
        error = self._recorded_error(following, final=final, unknown=unknown)
        if unknown and not isinstance(error, UnknownOutcomeError):
            # Its type could not be combined with one: still an unknown outcome to the engine.
            raise _unknown(error.message, final=final)
        raise error

    def _cut_off_unrecorded(self, replay: Replay, effect: Effect, intent: int) -> RecordedError:
        """What the attempt whose intent is at index `intent` ended as, cut off without a
        recorded result before the run moved on: by an interrupt (or a cancelled sibling),
        after which the run went straight to its undo, retrying nothing; or, in a journal
        written before cut-off attempts were recorded, by a deadline."""
        if effect.kind == "action":
            return _unknown(f"step {effect.path!r} was cut short by an interrupt", final=True)
        following = replay.head(effect.path)
        if following is not None and (following.kind, following.attempt) == (
            "compensation_intent",
            effect.attempt + 1,
        ):
            # The run retried it: only its own timeout cuts a compensation off and lets it be
            # retried (an interrupt fails it for good).
            return revive_error(
                [
                    "fsaga.errors:StepTimeoutError",
                    "StepTimeoutError",
                    f"the compensation of step {effect.path!r} timed out on attempt "
                    f"{replay.entries[intent].attempt}",
                ]
            )
        return revive_error(
            [
                "builtins:Exception",
                "Interrupted",
                f"the compensation of {effect.path!r} was cut off",
            ],
            final=True,
        )

    def _in_flight(self, effect: Effect, intent: EntryKind) -> object:
        """Settle the effect that was in flight when the recorded run's process stopped: its
        outcome is unknown, and the journal says so from now on; a compensation runs again."""
        if effect.kind != "action":
            return self._perform(effect, intent, write_intent=False)  # compensations repeat
        self._live()
        unknown = UnknownOutcomeError(f"step {effect.path!r} was running when its process stopped")
        self._record("unknown", effect, self._error_bytes(unknown))
        raise unknown

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

    def _recorded_error(
        self, entry: Entry, *, final: bool = False, unknown: bool = False
    ) -> RecordedError:
        if entry.payload is None:
            return revive_error(["builtins:Exception", "Exception", ""], final=final)
        return revive_error(self._decoded(entry), final=final, unknown=unknown)

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

    def _live(self) -> None:
        """The run is about to act on the world or the journal: a probe stops here."""
        if self._probing:
            self.trouble = _Matched()
            raise _Halt("the replay matched the journal")

    def _perform(self, effect: Effect, intent: EntryKind, *, write_intent: bool) -> object:
        if self._probing:
            self._live()
        if write_intent:
            # The undo running a step again says so: a replay must not take it for a retry.
            # Otherwise the run's first intent keeps what its listeners carry (`note`).
            again = intent == "intent" and not self._deadlines.forward(effect)
            payload = None
            if again:
                payload = self._codec.encode(RUN_AGAIN)
            elif self.note is not None and not self._noted:
                self._noted = True
                payload = self.note()
            entry = Entry(self._next_seq(), intent, effect.path, effect.attempt, payload)
            self._write([*self.pending, entry])
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
        except BaseException:
            # Cut off (a deadline, a cancelled sibling, an interrupt): what the engine makes of
            # it comes next, as an event (`observe`).
            self._deadlines.cut_off(intent, effect.path, effect.attempt)
            raise
        return self._settled(effect, intent, result)

    def _failed(self, effect: Effect, intent: EntryKind, error: Exception) -> None:
        kind: EntryKind
        if isinstance(error, ResultRejectedError) and intent == "intent":
            self._record(
                "rejected",
                effect,
                self._rejection_bytes(error.result, error.error),
            )
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
            self._record(
                "rejected",
                effect,
                self._rejection_bytes(_UNRECORDED, unrecordable),
            )
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
        self._record_at(kind, effect.path, effect.attempt, payload)

    def _record_at(self, kind: EntryKind, path: str, attempt: int, payload: bytes | None) -> None:
        self.pending.append(Entry(self._next_seq(), kind, path, attempt, payload))


def _unknown(message: str, *, final: bool) -> RecordedError:
    """An unknown outcome as a replay feeds it to the engine: an `UnknownOutcomeError` (a
    `NonRetryableError` too, when the recording run did not run the step again forward)."""
    return revive_error(
        ["fsaga.errors:UnknownOutcomeError", "UnknownOutcomeError", message], final=final
    )


def _where(replay: Replay) -> str:
    """The first entry `replay` has not replayed, as an error message names it."""
    entry = replay.first_left()
    assert entry is not None, "a replay that is done has nothing left to name"
    return f"{entry.kind} of {entry.path!r} (attempt {entry.attempt}) at #{entry.seq}"
