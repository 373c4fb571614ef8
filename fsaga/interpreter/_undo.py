"""The compensation phase: which record of the undo log is undone when, and what it reports.

Private to the engine. `Undo` owns the undo log once a run starts failing: it hands out its
records in the order contract rule 5 asks (newest first, one at a time; or, with concurrent
compensation, by the reverse causal order of `CausalOrder`, so independent `par` branches are
compensated side by side), and collects what the outcome reports. The engine turns each record
into the calls that undo it.
"""

from __future__ import annotations

from typing import final

from fsaga.interpreter._call import Call
from fsaga.interpreter._fibers import Fiber, Join
from fsaga.interpreter._plan import StretchRun
from fsaga.outcome import CompensationFailure, Failure, PartialFailure

__all__ = ["CausalOrder", "Undo"]


@final
class Undo:
    """The compensation phase's state, made when a run starts failing with `error`.

    `records` is the undo log, in completion order (forward calls still in flight when the run
    started to fail may add to it). Sequentially, a cursor walks it backwards, set when the
    first compensation starts, once nothing forward is in flight any more, and a completed
    stretch stands for its steps until the engine undoes it; concurrently, every record is a
    call, and a `CausalOrder` made at that moment hands out what may run.
    """

    __slots__ = (
        "compensated",
        "concurrent",
        "cursor",
        "error",
        "failures",
        "order",
        "ready",
        "records",
        "skipped",
        "unresolved",
    )

    def __init__(
        self, error: BaseException, records: list[Call | StretchRun], *, concurrent: bool
    ) -> None:
        self.error = error
        self.records = records
        self.concurrent = concurrent
        self.cursor: int | None = None
        self.order: CausalOrder | None = None
        self.ready: list[Call] = []
        self.compensated: list[str] = []
        self.failures: list[CompensationFailure] = []
        self.skipped: list[str] = []
        self.unresolved: list[str] = []

    def next_newest(self) -> Call | StretchRun | None:
        """Sequentially: the newest record not handed out yet, or ``None`` past the oldest."""
        cursor = self.cursor
        if cursor is None:
            cursor = len(self.records) - 1
        if cursor < 0:
            self.cursor = cursor
            return None
        self.cursor = cursor - 1
        return self.records[cursor]

    def put_back(self, records: list[Call]) -> None:
        """Sequentially: `records` (in completion order) are the next to hand out, before any
        older record."""
        cursor = self.cursor
        assert cursor is not None
        self.records[cursor + 1 : cursor + 1] = records
        self.cursor = cursor + len(records)

    def next_ready(self) -> Call | None:
        """Concurrently: a record the causal order lets start now, if any."""
        order = self.order
        if order is None:
            records = self.records
            assert all(type(record) is Call for record in records)
            order = self.order = CausalOrder(records)  # type: ignore[arg-type]
            self.ready = order.start()
        ready = self.ready
        return ready.pop() if ready else None

    def release(self, record: Call) -> None:
        """`record` is undone (or given up on): let the causal order start what waited for it."""
        if self.order is not None:
            self.ready.extend(self.order.done(record))

    def skip_the_rest(self) -> None:
        """Give up on every record not handed out yet (the ``"stop"`` policy): they are
        reported as skipped, newest first."""
        if self.concurrent:
            waiting = list(reversed(self.ready))
            self.ready.clear()
            if self.order is not None:
                waiting.extend(self.order.drain())
            self.skipped.extend(record.path for record in waiting)
            return
        cursor = self.cursor
        if cursor is None:
            cursor = len(self.records) - 1
        records = self.records
        while cursor >= 0:
            record = records[cursor]
            if type(record) is StretchRun:
                self.skipped.extend(record.path_of(index) for index in record.compensable())
            else:
                assert type(record) is Call
                self.skipped.append(record.path)
            cursor -= 1
        self.cursor = cursor

    def outcome(self) -> Failure | PartialFailure:
        """The outcome, once every record is undone: `Failure` if the undo left nothing behind,
        else `PartialFailure`."""
        if self.failures or self.skipped or self.unresolved:
            return PartialFailure(
                self.error,
                tuple(self.compensated),
                tuple(self.failures),
                tuple(self.skipped),
                tuple(self.unresolved),
            )
        return Failure(self.error, tuple(self.compensated))


@final
class _Group:
    """A `par` in the undo log: its branches' lines, undone side by side."""

    __slots__ = ("join", "lines", "owner", "pending")

    def __init__(self, join: Join | None, owner: _Line | None) -> None:
        self.join = join
        self.owner = owner
        self.lines: list[_Line] = []
        self.pending = 0


@final
class _Line:
    """One fiber's part of the undo log, in completion order: its own records, and a group
    for every `par` it forked (placed where the fork happened)."""

    __slots__ = ("cursor", "entries", "group")

    def __init__(self, group: _Group) -> None:
        self.group = group
        self.entries: list[Call | _Group] = []
        self.cursor = -1


@final
class CausalOrder:
    """Hands out the undo log's records as soon as the rule lets them run.

    A fiber's records are undone newest first; a `par` it forked is undone (all branches at
    once) after the records it made later, and before those it made earlier. Records of sibling
    branches never wait for each other.

    `start()` returns the records that may run at once; `done(record)` those that the end of
    `record`'s undo lets run; the undo is complete when every record handed out is done.
    """

    __slots__ = ("_lines", "_records", "_top")

    def __init__(self, records: list[Call]) -> None:
        self._records = records
        self._top = _Group(None, None)
        self._lines: dict[Fiber, _Line] = {}
        for record in records:
            self._line(record.fiber).entries.append(record)
        for line in self._lines.values():
            line.cursor = len(line.entries) - 1

    def _line(self, fiber: Fiber) -> _Line:
        line = self._lines.get(fiber)
        if line is not None:
            return line
        # Make the lines of this fiber and of its ancestors that have none yet, outermost first.
        missing: list[Fiber] = []
        ancestor: Fiber | None = fiber
        while ancestor is not None and ancestor not in self._lines:
            missing.append(ancestor)
            ancestor = ancestor.join.parent if ancestor.join is not None else None
        for made in reversed(missing):
            join = made.join
            if join is None:
                group = self._top
            else:
                owner = self._lines[join.parent]
                last = owner.entries[-1] if owner.entries else None
                if isinstance(last, _Group) and last.join is join:
                    group = last
                else:
                    group = _Group(join, owner)
                    owner.entries.append(group)
            line = _Line(group)
            group.lines.append(line)
            self._lines[made] = line
        return self._lines[fiber]

    def start(self) -> list[Call]:
        """The records whose undo may start at once."""
        self._top.pending = len(self._top.lines)
        return self._advance(list(self._top.lines))

    def done(self, record: Call) -> list[Call]:
        """The records whose undo may start now that `record`'s is over."""
        return self._advance([self._lines[record.fiber]])

    def drain(self) -> list[Call]:
        """Every record not handed out yet, newest first; none will be handed out after."""
        waiting: set[int] = set()
        for line in self._lines.values():
            for entry in line.entries[: line.cursor + 1]:
                if isinstance(entry, Call):
                    waiting.add(id(entry))
            line.cursor = -1
        return [record for record in reversed(self._records) if id(record) in waiting]

    def _advance(self, lines: list[_Line]) -> list[Call]:
        ready: list[Call] = []
        while lines:
            line = lines.pop()
            if line.cursor < 0:
                group = line.group
                group.pending -= 1
                if group.pending == 0 and group.owner is not None:
                    lines.append(group.owner)
                continue
            entry = line.entries[line.cursor]
            line.cursor -= 1
            if isinstance(entry, _Group):
                entry.pending = len(entry.lines)
                lines.extend(entry.lines)
            else:
                ready.append(entry)
        return ready
