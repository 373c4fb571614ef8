"""A recorded timeline, as a recovery replays it: entries found by step path, results handed
back in the order the recorded run received them.

Concurrent `par` branches interleave their entries in the journal in whatever order their
effects happened to finish, so a replay cannot walk the journal entry by entry. It finds each
effect's entries by the effect's path and attempt instead. What it must keep is the order of
the reports: the engine decides from what it has been told so far (whether a branch may start
its next step once a sibling failed, the order of the undo), so a replay tells it the recorded
results in the order they were recorded. That order is the journal's: a result is recorded
just before the engine hears of it.

An attempt a deadline cut off is recorded like any other result (``unknown`` for an action,
``compensation_failed`` for a compensation), and so is a retry a deadline kept from starting: a
``failed`` entry of that attempt with no intent before it (a *not-started record*), which the
replay hands back, in its turn, to the engine's request for that attempt.

An effect cut off without a recorded result (an interrupt, a cancelled branch; a deadline, in a
journal written before deadlines were recorded) is reported as an unknown outcome at the latest
point the journal allows: before the next entry of its own step, and before the undo began if
it came before that. The undo begins with its first compensation, or with the first step it runs
again to learn the result of an attempt whose outcome is unknown: an intent that says so (its
payload; see `Replay.runs_again`), or, in a journal written before those said so, an intent
right after a resultless intent of the same step (a run an interrupt cut off retries nothing
forward). Effects an interrupt cut off together are reported in the order the undo shows in
reverse, as it undoes the last reported first. One whose process died while it ran (nothing of
its step follows, and the run never moved on past it) is in flight: the recovery settles it
once everything else has been replayed (contract rule 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, final

from fsaga.journal.records import Entry, EntryKind

__all__ = ["Replay"]

# What can follow an intent as the result of its effect.
_OUTCOME_KINDS: Final[dict[EntryKind, frozenset[EntryKind]]] = {
    "intent": frozenset({"completed", "failed", "unknown", "rejected"}),
    "compensation_intent": frozenset({"compensated", "compensation_failed"}),
}
_INTENT_OF: Final[dict[EntryKind, EntryKind]] = {
    result: intent for intent, results in _OUTCOME_KINDS.items() for result in results
}
# The entries only an undo writes (see `Replay._begins_undo` for the other one): once one is
# recorded, forward work had ended (the undo of a durable run starts once nothing is in flight,
# and runs one effect at a time).
_UNDO_KINDS: Final = frozenset({"compensation_intent", "compensated", "compensation_failed"})


@final
class Replay:
    """The entries of one saga, being replayed.

    Each intent is taken (`take`) when the replay asks for its effect; its result, recorded or
    an unknown outcome where the run was cut off, is handed back (`deliver`) once every result
    recorded before it has been (`turn`, `slot_of`). The replay is `done` once every entry has
    been taken and every result handed back.

    >>> replay = Replay([
    ...     Entry(1, "intent", "#0/a", 1), Entry(2, "intent", "#1/b", 1),
    ...     Entry(3, "completed", "#1/b", 1, b'"b"'), Entry(4, "completed", "#0/a", 1, b'"a"'),
    ... ])
    >>> a = replay.take("#0/a")
    >>> replay.slot_of(a), replay.turn  # b's result was recorded first: a waits for it
    (1, 0)
    >>> b = replay.take("#1/b")
    >>> replay.entries[replay.deliver(b)].payload, replay.entries[replay.deliver(a)].payload
    (b'"b"', b'"a"')
    >>> replay.done
    True
    """

    __slots__ = (
        "_by_slot",
        "_heads",
        "_left",
        "_logs",
        "_not_started",
        "_outcomes",
        "_run_again",
        "_slots",
        "_undo",
        "entries",
        "turn",
    )

    def __init__(self, entries: Sequence[Entry], *, run_again: bytes | None = None) -> None:
        self.entries: Final = tuple(entries)
        # The payload of an intent to run a step again (None: any payload is one).
        self._run_again = run_again
        logs: dict[str, list[int]] = {}
        for index, entry in enumerate(self.entries):
            logs.setdefault(entry.path, []).append(index)
        self._logs = logs
        self._heads = dict.fromkeys(logs, 0)
        end = len(self.entries)
        self._undo = min((index for index in range(end) if self._begins_undo(index)), default=end)
        # For each intent with a result to hand back: its result's index (None: cut off, or a
        # not-started record, which stands for its own intent), and where that result goes in
        # the order of reports.
        self._outcomes: dict[int, int | None] = {}
        self._not_started: set[int] = set()
        # (place in the order of reports, tie-breaks, the intent's index)
        reports: list[tuple[int, int, int, int]] = []
        for log in logs.values():
            for place, index in enumerate(log):
                intent = self.entries[index]
                if self._records_not_started(log, place):
                    self._not_started.add(index)
                    self._outcomes[index] = None
                    reports.append((index, 2, 0, index))
                    continue
                results = _OUTCOME_KINDS.get(intent.kind)
                if results is None:
                    continue
                following = log[place + 1] if place + 1 < len(log) else None
                if following is not None:
                    result = self.entries[following]
                    if result.kind in results and result.attempt == intent.attempt:
                        self._outcomes[index] = following
                        reports.append((following, 2, 0, index))
                        continue
                bound = self._moved_on(index, following)
                if bound is None:
                    continue
                self._outcomes[index] = None
                # Effects an interrupt cut off together were reported in an order the undo
                # shows in reverse (it undoes the last reported first): those it had not
                # reached yet came first, then the others, the latest undone the earliest.
                if following is None:
                    reports.append((bound, 0, index, index))
                else:
                    reports.append((bound, 1, -following, index))
        reports.sort()
        self._by_slot = [index for *_, index in reports]
        self._slots = {index: slot for slot, index in enumerate(self._by_slot)}
        self._left = end
        self.turn = 0
        """How many results have been handed back: the slot whose turn it is."""

    def _begins_undo(self, index: int) -> bool:
        """Whether only an undo writes the entry at `index`: a compensation's, or the intent to
        run a step again to learn the result of an attempt whose outcome is unknown (see
        `runs_again`)."""
        return self.entries[index].kind in _UNDO_KINDS or self.runs_again(index)

    def runs_again(self, index: int) -> bool:
        """Whether the entry at `index` is the intent of the undo to run its step again, to
        learn the result of an attempt whose outcome is unknown before compensating it.

        Such an intent says so (it carries `run_again`, the encoded
        `fsaga.durable.deadlines.RUN_AGAIN`; a forward attempt's intent carries nothing, or what
        the run's listeners keep, `fsaga.durable.carrier`). In
        a journal written before intents said so, it is the intent right after a resultless
        intent of the same step: an attempt cut off without a recorded result was cut off by
        an interrupt, and a run an interrupt cut off retries nothing forward.
        """
        entry = self.entries[index]
        if entry.kind != "intent" or entry.attempt == 1:
            return False
        if entry.payload is not None:
            return self._run_again is None or entry.payload == self._run_again
        log = self._logs[entry.path]
        place = log.index(index)
        previous = self.entries[log[place - 1]] if place else None
        return (
            previous is not None
            and previous.kind == "intent"
            and previous.attempt == entry.attempt - 1
        )

    def _records_not_started(self, log: list[int], place: int) -> bool:
        """Whether the entry at `place` of a step's `log` is a not-started record: a
        ``failed`` entry that no intent of its attempt precedes (a retry a deadline kept from
        starting)."""
        entry = self.entries[log[place]]
        if entry.kind != "failed":
            return False
        previous = self.entries[log[place - 1]] if place else None
        return previous is None or (previous.kind, previous.attempt) != ("intent", entry.attempt)

    def not_started(self, index: int) -> bool:
        """Whether the entry at `index` is a not-started record (see the module docstring)."""
        return index in self._not_started

    def _moved_on(self, index: int, following: int | None) -> int | None:
        """Where the run was past the intent at `index`, which has no result: the entry before
        which its cut-off was reported; None if its process died while it ran."""
        if index >= self._undo:
            # The undo runs one effect at a time: anything recorded after it came after it.
            return index + 1 if index + 1 < len(self.entries) else None
        bounds = [bound for bound in (following, self._undo) if bound is not None]
        bound = min(bounds)
        return bound if bound < len(self.entries) else None

    @property
    def done(self) -> bool:
        """Whether every entry has been taken and every result handed back."""
        return not self._left and self.turn == len(self._slots)

    @property
    def undo_began(self) -> bool:
        """Whether the recorded run had begun its undo: it started no forward step after."""
        return self._undo < len(self.entries)

    def head(self, path: str) -> Entry | None:
        """The next entry of step `path` not replayed yet, if any."""
        index = self.head_index(path)
        return None if index is None else self.entries[index]

    def head_index(self, path: str) -> int | None:
        """The index of `head(path)`, if any."""
        log = self._logs.get(path)
        if log is None:
            return None
        place = self._heads[path]
        return log[place] if place < len(log) else None

    def take(self, path: str) -> int:
        """Take the intent `head(path)` (the replay asked for its effect); its index."""
        place = self._heads[path]
        self._heads[path] = place + 1
        self._left -= 1
        return self._logs[path][place]

    def slot_of(self, intent: int) -> int | None:
        """When the result of the intent at index `intent` is handed back (see `turn`); None if
        its effect was in flight when its process died."""
        return self._slots.get(intent)

    def deliver(self, intent: int) -> int | None:
        """Hand back the result of the intent at index `intent`, whose turn it is: the index of
        the entry that recorded it, or None if the effect was cut off without one."""
        assert self._slots[intent] == self.turn
        self.turn += 1
        result = self._outcomes[intent]
        if result is not None:
            path = self.entries[result].path
            self._heads[path] += 1
            self._left -= 1
        return result

    def retried_after(self, result: int) -> bool:
        """Whether the recorded run went on to run the effect whose failure is recorded at
        index `result` again (forward: the undo running a step again to settle its unknown
        outcome is no retry), or decided to and a deadline kept it from starting; also when the
        journal ends before saying, as the engine then decides."""
        failure = self.entries[result]
        log = self._logs[failure.path]
        place = self._heads[failure.path]
        if place < len(log):
            index = log[place]
            following = self.entries[index]
            if following.attempt != failure.attempt + 1:
                return False
            if self.not_started(index):
                return True
            return following.kind == _INTENT_OF[failure.kind] and not self.runs_again(index)
        if result < self._undo:
            return not self.undo_began
        return result + 1 == len(self.entries)

    def first_left(self) -> Entry | None:
        """The earliest entry not replayed yet (the first one a replay that stopped short of
        the journal never asked for); once all are, the intent of the effect whose result is
        next, if any is left to hand back."""
        places = [
            self._logs[path][place]
            for path, place in self._heads.items()
            if place < len(self._logs[path])
        ]
        if places:
            return self.entries[min(places)]
        if self.turn < len(self._by_slot):
            return self.entries[self._by_slot[self.turn]]
        return None
