"""A run's trace: what ran, failed, was retried and compensated, in order, on which branch.

A `RunTrace` is read off a run's events (`trace_of_events`, with timings from the
interpreter's clock) or off a durable saga's journal (`trace_of_journal`, in the order of its
entries: the journal records no times). It is a list of `Span`s, one per attempt of an action
or a compensation, each on a `Lane`: the saga's main line, or a `par` branch. `trace_as_text`
lists the spans; `fsaga.pictures.trace_as_mermaid` and `fsaga.pictures.trace_as_html` draw them.

>>> from fsaga import step
>>> from fsaga.testing import RecordingInterpreter
>>> recording = RecordingInterpreter()  # its clock ticks a second per reading
>>> def charge() -> int:
...     raise ValueError("declined")
>>> saga = step(lambda: "R-1", lambda _: None, name="reserve").then(step(charge))
>>> outcome = saga.run(recording, saga_id="s-1")
>>> print(trace_as_text(trace_of_events(recording.events)))
saga s-1: failed, after 7s
     start  took  lane  what
  1     1s    1s  main  reserve: completed -> 'R-1'
  2     3s    1s  main  charge: failed: ValueError('declined')
  3     5s    1s  main  undo reserve: compensated
Failure: ValueError('declined')
  compensated: reserve
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final, Literal, TypeAlias, final

from fsaga.events import (
    CompensationCompleted,
    CompensationFailed,
    CompensationRetrying,
    CompensationStarted,
    Event,
    SagaFinished,
    SagaStarted,
    SagaStopped,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
)
from fsaga.outcome import Failure, PartialFailure, Success
from fsaga.pictures._words import seconds, short
from fsaga.render import describe_outcome

if TYPE_CHECKING:
    from fsaga.journal.records import Entry, SagaRecord

__all__ = [
    "MAIN",
    "Clock",
    "Lane",
    "RunStatus",
    "RunTrace",
    "Span",
    "SpanKind",
    "SpanStatus",
    "describe_span",
    "trace_as_text",
    "trace_of_events",
    "trace_of_journal",
]

SpanKind: TypeAlias = Literal["action", "compensation"]
"""What a span is an attempt of: a step's action, or its compensation (or `on_unknown`)."""

SpanStatus: TypeAlias = Literal[
    "completed", "retried", "failed", "unknown", "rejected", "in_flight"
]
"""How an attempt ended: it returned (a compensation: the step is undone); it failed and
another attempt followed; it failed for good; it was cut short with its outcome unknown; it
returned a result the journal refused (`fsaga.errors.ResultRejectedError`); or it has no end
recorded (its process stopped while it ran)."""

RunStatus: TypeAlias = Literal["running", "succeeded", "failed", "partially_failed", "dead"]
"""Where the run stands, as the journal says it (`fsaga.journal.SagaStatus`): ``"running"``
when no outcome was seen."""

Clock: TypeAlias = Literal["seconds", "entries"]
"""What span times count: seconds since the run started (from events), or the journal's entry
numbers (``start`` is the intent's seq, ``end`` the result's)."""

MAIN: Final = ""
"""The key of the saga's main lane."""


@final
@dataclass(frozen=True, slots=True)
class Lane:
    """A line of control: the saga's main line (key ``""``) or a `par` branch.

    Attributes:
        key: the lane's identity: an event's ``branch`` (`fsaga.events.StepStarted.branch`),
            or, for a journal, the scope its steps' paths share.
        label: how pictures name it: ``main``, or the branch's scope (``#1``, ``payment``).
        parent: the key of the lane it forked from; ``None`` for the main lane.
    """

    key: str
    label: str
    parent: str | None


@final
@dataclass(frozen=True, slots=True)
class Span:
    """One attempt of an action or a compensation.

    Attributes:
        path: the step's path.
        kind: ``"action"`` or ``"compensation"``.
        attempt: the attempt's number, from 1.
        lane: the key of its `Lane`.
        status: how it ended (`SpanStatus`).
        start: when it started (see `Clock`).
        end: when it ended; ``None`` for one in flight.
        detail: the result or the error, in a few words ("" when there is nothing to say).
        retry_delay: for a retried attempt, the wait before the next, when known.
    """

    path: str
    kind: SpanKind
    attempt: int
    lane: str
    status: SpanStatus
    start: float
    end: float | None
    detail: str = ""
    retry_delay: float | None = None


@final
@dataclass(frozen=True, slots=True)
class RunTrace:
    """What a run did: its spans in the order they started, on their lanes.

    Attributes:
        saga_id: the run's saga id.
        status: where it stands (`RunStatus`).
        outcome: its outcome described (`fsaga.render.describe_outcome`); ``None`` while
            unfinished.
        lanes: the main lane first, then each branch in the order it first ran.
        spans: every attempt, in the order they started.
        clock: what the times count (`Clock`).
        length: the run's length on that clock, from its start to its end (or last span).
    """

    saga_id: str
    status: RunStatus
    outcome: str | None
    lanes: tuple[Lane, ...]
    spans: tuple[Span, ...]
    clock: Clock = "seconds"
    length: float = 0.0

    def lane(self, key: str) -> Lane:
        """The lane with this key."""
        for lane in self.lanes:
            if lane.key == key:
                return lane
        raise KeyError(f"saga {self.saga_id!r} has no lane {key!r}")


@dataclass(slots=True)
class _Open:
    """A span being read: its start seen, its end not yet."""

    path: str
    kind: SpanKind
    attempt: int
    lane: str
    start: float
    status: SpanStatus = "in_flight"
    end: float | None = None
    detail: str = ""
    retry_delay: float | None = None

    def close(
        self, status: SpanStatus, end: float, detail: str = "", delay: float | None = None
    ) -> None:
        self.status, self.end, self.detail, self.retry_delay = status, end, detail, delay

    def span(self) -> Span:
        return Span(
            self.path,
            self.kind,
            self.attempt,
            self.lane,
            self.status,
            self.start,
            self.end,
            self.detail,
            self.retry_delay,
        )


@dataclass(slots=True)
class _Reading:
    """The spans read so far, and the ones still open by (kind, path, attempt)."""

    spans: list[_Open] = field(default_factory=list)
    open: dict[tuple[SpanKind, str, int], _Open] = field(default_factory=dict)

    def begin(self, kind: SpanKind, path: str, attempt: int, lane: str, start: float) -> None:
        opened = _Open(path, kind, attempt, lane, start)
        self.spans.append(opened)
        self.open[kind, path, attempt] = opened

    def end(self, kind: SpanKind, path: str, attempt: int, lane: str, start: float) -> _Open:
        """The open span this ends (one begun now, if its start was not seen)."""
        found = self.open.pop((kind, path, attempt), None)
        if found is None:
            found = _Open(path, kind, attempt, lane, start)
            self.spans.append(found)
        return found


def trace_of_events(events: Iterable[Event], *, saga_id: str | None = None) -> RunTrace:
    """The trace of one run from its events (the first run's, unless `saga_id` names one).

    Times are seconds since the run started. Each span is on the lane of its step's
    ``branch``; a compensation on the lane of the step it undoes.

    Raises:
        ValueError: no event of the run.
    """
    chosen = [event for event in events if saga_id is None or event.saga_id == saga_id]
    if not chosen:
        raise ValueError(f"no events of saga {saga_id!r}" if saga_id else "no events to trace")
    saga_id = chosen[0].saga_id
    chosen = [event for event in chosen if event.saga_id == saga_id]
    origin = next((e.at for e in chosen if isinstance(e, SagaStarted)), chosen[0].at)
    reading = _Reading()
    branch_of: dict[str, str] = {}
    status: RunStatus = "running"
    outcome: str | None = None
    last = origin
    for event in chosen:
        last = max(last, event.at)
        at = event.at - origin
        match event:
            case StepStarted(path=path, attempt=attempt, branch=branch):
                branch_of[path] = branch
                reading.begin("action", path, attempt, branch, at)
            case StepCompleted(path=p, attempt=n, started_at=began, result=result, branch=b):
                branch_of.setdefault(p, b)
                opened = reading.end("action", p, n, b, began - origin)
                opened.close("completed", at, short(result))
            case StepRetrying(path=p, attempt=n, started_at=began, error=error, delay=delay):
                opened = reading.end("action", p, n, branch_of.get(p, MAIN), began - origin)
                opened.close("retried", at, short(error), delay)
            case StepFailed(path=p, attempt=n, started_at=began, error=error, unknown=unknown):
                branch_of.setdefault(p, event.branch)
                opened = reading.end("action", p, n, event.branch, began - origin)
                opened.close("unknown" if unknown else "failed", at, short(error))
            case CompensationStarted(path=path, attempt=attempt):
                reading.begin("compensation", path, attempt, branch_of.get(path, MAIN), at)
            case CompensationCompleted(path=p, attempt=n, started_at=began):
                opened = reading.end("compensation", p, n, branch_of.get(p, MAIN), began - origin)
                opened.close("completed", at)
            case CompensationRetrying(path=p, attempt=n, started_at=began, error=error):
                opened = reading.end("compensation", p, n, branch_of.get(p, MAIN), began - origin)
                opened.close("retried", at, short(error), event.delay)
            case CompensationFailed(path=p, attempt=n, started_at=began, error=error):
                opened = reading.end("compensation", p, n, branch_of.get(p, MAIN), began - origin)
                opened.close("failed", at, short(error))
            case SagaFinished(outcome=finished):
                outcome = describe_outcome(finished)
                match finished:
                    case Success():
                        status = "succeeded"
                    case Failure():
                        status = "failed"
                    case PartialFailure():
                        status = "partially_failed"
            case SagaStopped(reason=reason):
                # A durable run that stopped without recording an outcome: the saga is still
                # running, for another process to finish.
                outcome = f"stopped ({reason}), no outcome recorded"
            case SagaStarted():
                pass
    spans = [opened.span() for opened in reading.spans]
    lanes = _event_lanes(spans)
    return RunTrace(saga_id, status, outcome, lanes, tuple(spans), "seconds", last - origin)


def _event_lanes(spans: Sequence[Span]) -> tuple[Lane, ...]:
    """The lanes of event spans: one per ``branch``, parented by the branch it forked from
    (the nearest one with spans of its own)."""
    keys = [MAIN, *dict.fromkeys(span.lane for span in spans if span.lane != MAIN)]
    present = set(keys)
    parents: dict[str, str | None] = {MAIN: None}
    for key in keys[1:]:
        parent = key
        while parent != MAIN:
            parent = parent.rpartition("/")[0]
            if parent in present:
                break
        parents[key] = parent
    return _labelled(keys, parents, spans)


def _labelled(
    keys: Sequence[str], parents: dict[str, str | None], spans: Sequence[Span]
) -> tuple[Lane, ...]:
    """The lanes, each named by what its steps share: the path of its one step (a branch that
    is a single step), or else the scope of its steps' paths (``#1``, ``payment``); ``main``
    for the main lane."""
    labels: dict[str, str] = {MAIN: "main"}
    for key in keys[1:]:
        paths = list(dict.fromkeys(span.path for span in spans if span.lane == key))
        if len(paths) == 1:
            label = paths[0]
        else:
            shared = _common_prefix([path.split("/")[:-1] for path in paths])
            label = "/".join(shared) or (paths[0] if paths else key)
        while label in labels.values():
            label += "'"
        labels[key] = label
    return tuple(Lane(key, labels[key], parents[key]) for key in keys)


def _common_prefix(paths: Sequence[Sequence[str]]) -> tuple[str, ...]:
    if not paths:
        return ()
    shortest = min(len(path) for path in paths)
    shared: list[str] = []
    for index in range(shortest):
        segment = paths[0][index]
        if any(path[index] != segment for path in paths):
            break
        shared.append(segment)
    return tuple(shared)


_STATUSES: dict[str, RunStatus] = {
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "partially_failed": "partially_failed",
    "dead": "dead",
}


def trace_of_journal(record: SagaRecord, entries: Sequence[Entry]) -> RunTrace:
    """The trace of a durable saga from its journal: times are entry numbers (an action's span
    runs from its intent to its result), since the journal records no times.

    The journal does not record which ``par`` branch a step ran on, so lanes come from what
    it does record: a step whose path has a position scope (``#1/charge``: branch 1 of a
    ``par``) is on that branch's lane, and the steps of a named scope (``payment/...``, or
    a step named ``charge``) are on a lane of their own when they overlapped another scope's
    steps in the journal (branches that ran concurrently). Branches run one after another
    under `fsaga.interpreter.SyncInterpreter` and named by their steps stay on their parent's
    lane.
    """
    from fsaga.journal.rendering import describe_payload, describe_recorded_outcome

    reading = _Reading()
    for entry in entries:
        kind: SpanKind = "action" if entry.kind in _ACTION_KINDS else "compensation"
        seq = float(entry.seq)
        if entry.kind in ("intent", "compensation_intent"):
            reading.begin(kind, entry.path, entry.attempt, MAIN, seq)
        else:
            ended = reading.end(kind, entry.path, entry.attempt, MAIN, seq)
            ended.close(_ENDED[entry.kind], seq, describe_payload(entry) or "")
    later = {(span.kind, span.path, span.attempt - 1) for span in reading.spans}
    spans = [
        replace(span, status="retried")
        if span.status == "failed" and (span.kind, span.path, span.attempt) in later
        else span
        for span in (opened.span() for opened in reading.spans)
    ]
    lane_of = _journal_lanes(spans)
    spans = [replace(span, lane=lane_of[span.path]) for span in spans]
    keys = [MAIN, *dict.fromkeys(lane for lane in lane_of.values() if lane != MAIN)]
    parents: dict[str, str | None] = {MAIN: None}
    for key in keys[1:]:
        parents[key] = _parent_lane(key, set(keys))
    outcome = None if record.outcome is None else describe_recorded_outcome(record.outcome)
    length = float(entries[-1].seq) if entries else 0.0
    return RunTrace(
        record.saga_id,
        _STATUSES[record.status],
        outcome,
        _labelled(keys, parents, spans),
        tuple(spans),
        "entries",
        length,
    )


_ACTION_KINDS: Final = frozenset({"intent", "completed", "failed", "unknown", "rejected"})
_ENDED: Final[dict[str, SpanStatus]] = {
    "completed": "completed",
    "compensated": "completed",
    "unknown_settled": "completed",
    "failed": "failed",
    "compensation_failed": "failed",
    "unknown": "unknown",
    "rejected": "rejected",
}


def _journal_lanes(spans: Sequence[Span]) -> dict[str, str]:
    """Each path's lane key: its scope through its last position segment (``#1``), then, on
    that lane, its first named scope if that scope's steps overlapped another's."""
    lane_of: dict[str, str] = {}
    units: dict[str, dict[str, list[float]]] = {}  # lane -> unit -> [first start, last end]
    for span in spans:
        segments = span.path.split("/")
        cut = max((i + 1 for i, s in enumerate(segments[:-1]) if s.startswith("#")), default=0)
        lane = "/".join(segments[:cut])
        lane_of.setdefault(span.path, lane)
        if span.kind == "action":
            unit = segments[cut]
            window = units.setdefault(lane, {}).setdefault(unit, [span.start, span.start])
            window[1] = max(window[1], span.end if span.end is not None else float("inf"))
    concurrent: set[tuple[str, str]] = set()
    for lane, windows in units.items():
        for unit, (start, end) in windows.items():
            for other, (other_start, other_end) in windows.items():
                if other != unit and start < other_end and other_start < end:
                    concurrent.add((lane, unit))
    for path, lane in lane_of.items():
        segments = path.split("/")
        depth = len(lane.split("/")) if lane else 0
        if (lane, segments[depth]) in concurrent:
            lane_of[path] = "/".join(segments[: depth + 1])
    return lane_of


def _parent_lane(key: str, keys: set[str]) -> str:
    parent = key
    while parent:
        parent = parent.rpartition("/")[0]
        if parent in keys:
            return parent
    return MAIN


# -- as text ---------------------------------------------------------------------------------


_DONE: dict[SpanStatus, str] = {
    "completed": "completed",
    "retried": "failed, retried",
    "failed": "failed",
    "unknown": "cut short, outcome unknown",
    "rejected": "rejected",
    "in_flight": "in flight, no result recorded",
}
_UNDONE: dict[SpanStatus, str] = {
    "completed": "compensated",
    "retried": "compensation failed, retried",
    "failed": "compensation failed",
    "unknown": "compensation cut short",
    "rejected": "compensation rejected",
    "in_flight": "compensating, no result recorded",
}


def describe_span(span: Span) -> str:
    """What a span did, in a few words: the step, how it ended, its result or error.

    >>> describe_span(Span("charge", "action", 2, "", "retried", 1.0, 1.5, "ValueError('x')", 0.5))
    "charge (attempt 2): failed, retried after 0.5s: ValueError('x')"
    >>> describe_span(Span("reserve", "compensation", 1, "", "completed", 3.0, 3.5))
    'undo reserve: compensated'
    """
    name = span.path if span.kind == "action" else f"undo {span.path}"
    attempt = "" if span.attempt == 1 else f" (attempt {span.attempt})"
    ended = (_DONE if span.kind == "action" else _UNDONE)[span.status]
    if span.status == "retried" and span.retry_delay is not None:
        ended += f" after {seconds(span.retry_delay)}"
    if span.detail:
        joiner = " -> " if span.status == "completed" else ": "
        ended += joiner + span.detail
    return f"{name}{attempt}: {ended}"


def trace_as_text(trace: RunTrace) -> str:
    """A trace as text: a header, one line per span in the order they started (number, start,
    duration, lane, what happened), then the outcome.

    Times are seconds for a trace of events, entry numbers (``#3``) for one of a journal.
    """
    header = f"saga {trace.saga_id}: {trace.status.replace('_', ' ')}"
    if trace.clock == "seconds" and trace.status != "running":
        header += f", after {seconds(trace.length)}"
    rows = [("", "start", "took", "lane", "what")]
    if trace.clock == "entries":
        rows = [("", "intent", "result", "lane", "what")]
    for number, span in enumerate(trace.spans, start=1):
        rows.append(
            (
                str(number),
                _at(trace.clock, span.start),
                _took(trace.clock, span),
                trace.lane(span.lane).label,
                describe_span(span),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [header]
    for place, start, took, lane, what in rows:
        lines.append(
            f"  {place:>{widths[0]}}  {start:>{widths[1]}}  {took:>{widths[2]}}  "
            f"{lane:<{widths[3]}}  {what}".rstrip()
        )
    if trace.outcome is not None:
        lines.extend(trace.outcome.splitlines())
    return "\n".join(lines)


def _at(clock: Clock, value: float) -> str:
    return seconds(value) if clock == "seconds" else f"#{value:g}"


def _took(clock: Clock, span: Span) -> str:
    if span.end is None:
        return "-"
    if clock == "seconds":
        return seconds(span.end - span.start)
    return f"#{span.end:g}"
