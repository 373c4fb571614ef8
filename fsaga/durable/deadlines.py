"""What a durable run's deadlines decided, as its journal keeps it for a replay.

A deadline decides by the clock, which a replay cannot consult: a recovery replays a run in no
time, and counts the deadlines it meets afresh. So what a deadline decided is recorded, as the
engine reports it in its events (docs/durability.md, "Attempts a deadline cuts off"):

- an attempt a deadline cut off ends as an ``unknown`` outcome (an action, contract rule 3) or a
  ``compensation_failed`` one (a compensation, rule 4), with the `StepTimeoutError` as its error;
- a retry a deadline kept from starting (it passed during the wait before the retry, or before
  the retry could start) gets a *not-started record*: a ``failed`` entry of that attempt, with
  that error, and no intent before it. A first attempt that could not start leaves no event: a
  replay asks the engine to name the deadline then (see `fsaga.interpreter._attempts.NotStarted`);
- the intent of the undo's run-again of a step, to learn the result of an attempt whose outcome
  is unknown, says so (it carries `RUN_AGAIN`), so that a replay never takes it for a retry.

An attempt an interrupt or a cancelled sibling cut off is left without a result, as ever: a
replay infers those from where the run moved on (`fsaga.durable.replay`).
"""

from __future__ import annotations

from typing import Final, TypeAlias, final

from fsaga.errors import StepTimeoutError
from fsaga.events import CompensationFailed, CompensationRetrying, Event, StepFailed, StepRetrying
from fsaga.interpreter.protocol import Effect
from fsaga.journal.records import EntryKind

__all__ = ["RUN_AGAIN", "Deadlines", "Decision"]

RUN_AGAIN: Final = "run again to learn its result"
"""What the intent of the undo's run-again of a step carries (`Replay.runs_again`)."""

# What an attempt a deadline cut off ends as, by the kind of its intent.
_CUT_OFF: Final[dict[EntryKind, EntryKind]] = {
    "intent": "unknown",
    "compensation_intent": "compensation_failed",
}

Decision: TypeAlias = tuple[EntryKind, str, int, StepTimeoutError]
"""An entry to record: its kind, its step's path, its attempt, and the error it records."""


@final
class Deadlines:
    """Follows a durable run's events to tell what its deadlines decided (see the module
    docstring), for the recorder to record; and tells a forward attempt from the undo's
    run-again of a step.

    >>> deadlines = Deadlines()
    >>> deadlines.cut_off("intent", "charge", 1)  # performed, it returned nothing
    >>> cut = StepTimeoutError("charge", 1, 5.0, "step")
    >>> deadlines.decided(StepRetrying("s-1", "charge", 1, 5.0, 0.0, cut, 0.0), live=True)
    ('unknown', 'charge', 1, StepTimeoutError("step 'charge' timed out on attempt 1: ..."))
    >>> deadlines.forward(Effect("action", "s-1", "charge", 2, None, lambda: None))
    True
    """

    __slots__ = ("_cut", "_replayed", "_retries")

    def __init__(self) -> None:
        # Attempts performed live that ended without a result (a cancellation cut them off),
        # until the engine says what it made of them; the forward retries the engine
        # announced; the not-started records a replay handed back.
        self._cut: set[tuple[EntryKind, str, int]] = set()
        self._retries: set[tuple[str, int]] = set()
        self._replayed: set[tuple[str, int]] = set()

    def cut_off(self, intent: EntryKind, path: str, attempt: int) -> None:
        """An attempt performed live, whose intent is of kind `intent`, ended without a result
        to record: a cancellation cut it off."""
        self._cut.add((intent, path, attempt))

    def replayed(self, path: str, attempt: int) -> None:
        """A replay asked for this attempt of an action and took its entry from the journal."""
        self._retries.discard((path, attempt))

    def replayed_not_started(self, path: str, attempt: int) -> None:
        """A replay handed back the not-started record of this attempt."""
        self._replayed.add((path, attempt))

    def announced(self, path: str, attempt: int) -> bool:
        """Whether the engine announced a retry of the step at `path` as this attempt."""
        return (path, attempt) in self._retries

    def forward(self, effect: Effect) -> bool:
        """Whether `effect` is an action's first attempt, or a retry the engine announced (not
        the undo running the step again to settle its unknown outcome); noted once."""
        if effect.kind != "action":
            return False
        if effect.attempt == 1:
            return True
        key = (effect.path, effect.attempt)
        if key in self._retries:
            self._retries.remove(key)
            return True
        return False

    def decided(self, event: Event, *, live: bool) -> Decision | None:
        """The entry to record for what a deadline decided, if `event` tells one; `live`: the
        run is past its replay (what a replay decides again is in the journal already)."""
        match event:
            case StepRetrying(path=path, attempt=attempt, error=error):
                self._retries.add((path, attempt + 1))
                return self._cut_off_by("intent", path, attempt, error)
            case StepFailed(path=path, attempt=attempt, error=error):
                # Failed for good: a retry announced for it will not come (an interrupt came
                # during the wait before it, or a deadline passed).
                self._retries.discard((path, attempt + 1))
                return self._cut_off_by("intent", path, attempt, error) or (
                    self._kept_from_starting(path, error) if live else None
                )
            case CompensationRetrying(path=path, attempt=attempt, error=error):
                return self._cut_off_by("compensation_intent", path, attempt, error)
            case CompensationFailed(path=path, attempt=attempt, error=error):
                return self._cut_off_by("compensation_intent", path, attempt, error)
            case _:
                return None

    def _cut_off_by(
        self, intent: EntryKind, path: str, attempt: int, error: BaseException
    ) -> Decision | None:
        """An attempt cut off, by a deadline if `error` says so (else by an interrupt or a
        cancelled sibling: nothing to record)."""
        key = (intent, path, attempt)
        if key not in self._cut:
            return None
        self._cut.remove(key)
        if not isinstance(error, StepTimeoutError):
            return None
        return (_CUT_OFF[intent], path, attempt, error)

    def _kept_from_starting(self, path: str, error: BaseException) -> Decision | None:
        """A retry of the step at `path` that a deadline kept from starting, if `error` says so
        (the step failed as its last attempt that ran)."""
        if (
            not isinstance(error, StepTimeoutError)
            or error.started
            or error.path != path
            or (path, error.attempt) in self._replayed
        ):
            return None
        return ("failed", path, error.attempt, error)
