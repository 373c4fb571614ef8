"""A journal's sagas as text: what ``fsaga journal show`` prints.

Payloads are read with `fsaga.journal.JsonCodec`, the default codec; bytes it cannot decode
are shown by their size.

>>> describe_entry(Entry(2, "failed", "charge", 1, b'["CardDeclined","no funds"]'))
'#2 failed charge (attempt 1): CardDeclined: no funds'
>>> error = b'["shop:CardDeclined","CardDeclined","no funds"]'  # [module:qualname, name, message]
>>> describe_entry(Entry(2, "failed", "charge", 1, error))
'#2 failed charge (attempt 1): CardDeclined: no funds'
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from fsaga.journal.codec import CodecError, JsonCodec
from fsaga.journal.records import Entry, EntryKind, PendingSaga, SagaRecord
from fsaga.outcome import CompensationFailure, Failure, Outcome, PartialFailure, Success
from fsaga.render import describe_outcome

__all__ = [
    "describe_entry",
    "describe_payload",
    "describe_recorded_outcome",
    "describe_saga",
    "describe_submission",
    "utc",
]

_RESULTS: Final[dict[EntryKind, EntryKind]] = {
    "completed": "intent",
    "failed": "intent",
    "unknown": "intent",
    "rejected": "intent",
    "compensated": "compensation_intent",
    "compensation_failed": "compensation_intent",
}
_INTENTS: Final[frozenset[EntryKind]] = frozenset(_RESULTS.values())
_ERRORS: Final[frozenset[EntryKind]] = frozenset({"failed", "unknown", "compensation_failed"})
_CODEC: Final = JsonCodec()


def describe_saga(
    record: SagaRecord,
    entries: Sequence[Entry],
    *,
    db: str | None = None,
    journal: str | None = None,
) -> str:
    """A saga as ``journal show`` prints it: its record, its timeline, where it stands.

    For a dead saga, where it stands says why it was parked, and how to release it: the
    command names the journal as `journal` says (the command-line options, e.g.
    ``"--dsn 'dbname=orders'"``), or by `db`, the journal file's path (``--db PATH``).

    >>> from fsaga.journal import SagaRecord
    >>> record = SagaRecord("pay-1", "pay", 1, b'{"cents":450}', "running", None, 0, 0.0, 0.0)
    >>> print(describe_saga(record, [
    ...     Entry(1, "intent", "hold", 1),
    ...     Entry(2, "completed", "hold", 1, b'"H-1"'),
    ...     Entry(3, "intent", "capture", 1),
    ... ]))
    saga pay-1
      definition:        pay@1
      status:            running
      input:             {"cents": 450}
      recovery attempts: 0
    <BLANKLINE>
    timeline:
      #1 intent    hold (attempt 1)
      #2 completed hold (attempt 1): "H-1"
      #3 intent    capture (attempt 1): no result
    <BLANKLINE>
    unfinished: last entry #3 intent capture (attempt 1)
      in flight: capture (the intent without a result: its process stopped while it ran)
    """
    lines = [
        f"saga {record.saga_id}",
        f"  definition:        {record.name}@{record.version}",
        f"  status:            {record.status}",
        f"  input:             {_decoded(record.input)}",
        f"  recovery attempts: {record.recovery_attempts}",
        "",
        "timeline:",
    ]
    seq_width = max((len(str(entry.seq)) for entry in entries), default=1)
    kind_width = max((len(entry.kind) for entry in entries), default=0)
    unanswered = _intents_without_result(entries)
    for entry in entries:
        line = "  " + describe_entry(entry, seq_width=seq_width, kind_width=kind_width)
        lines.append(line + ": no result" if entry.seq in unanswered else line)
    if not entries:
        lines.append("  (no entries)")
    if journal is None and db is not None:
        journal = f"--db {db}"
    lines += ["", *_where_it_stands(record, entries, journal)]
    return "\n".join(lines)


def describe_submission(submission: PendingSaga, *, journal: str | None = None) -> str:
    """A submission as ``journal show-submission`` prints it: what was submitted, its claims,
    and where it stands (for a parked one: why, and how to release it, naming the journal as
    `journal` says).

    >>> from fsaga.journal import PendingSaga
    >>> error = b'["fsaga.durable.errors:UnknownDefinitionError", "UnknownDefinitionError", "ordr"]'
    >>> print(describe_submission(PendingSaga(
    ...     "order-7", "ordr", b'{"sku":"a"}', 0.0, claims=5, last_claimed_at=120.0,
    ...     last_error=error, parked_at=150.0,
    ... ), journal="--dsn db"))
    submission order-7
      definition:   ordr
      input:        {"sku": "a"}
      submitted:    1970-01-01T00:00:00Z
      claims:       5
      last claimed: 1970-01-01T00:02:00Z; its start failed: UnknownDefinitionError: ordr
    <BLANKLINE>
    parked at 1970-01-01T00:02:30Z: 5 claims did not start it
      once the cause is fixed, queue it again: fsaga journal release-submission order-7 --dsn db
    """
    if submission.last_claimed_at is None:
        claimed = "never"
    elif submission.last_error is not None:
        claimed = f"its start failed: {_recorded_error(submission.last_error)}"
        claimed = f"{utc(submission.last_claimed_at)}; {claimed}"
    elif submission.lease is not None:
        claimed = f"{utc(submission.last_claimed_at)}; worker {submission.lease.owner} starts it"
    else:
        claimed = f"{utc(submission.last_claimed_at)}; its worker stopped without recording why"
    lines = [
        f"submission {submission.saga_id}",
        f"  definition:   {submission.name}",
        f"  input:        {_decoded(submission.input)}",
        f"  submitted:    {utc(submission.submitted_at)}",
        f"  claims:       {submission.claims}",
        f"  last claimed: {claimed}",
        "",
    ]
    if submission.parked_at is None:
        lines.append("queued: the next worker to sweep claims it")
        return "\n".join(lines)
    where = f" {journal}" if journal is not None else ""
    lines += [
        f"parked at {utc(submission.parked_at)}: {submission.claims} claims did not start it",
        "  once the cause is fixed, queue it again: "
        f"fsaga journal release-submission {submission.saga_id}{where}",
    ]
    return "\n".join(lines)


def describe_entry(entry: Entry, *, seq_width: int = 0, kind_width: int = 0) -> str:
    """One entry of a timeline: ``#seq kind path (attempt n)``, then its decoded payload.

    A result is shown as JSON, an error (of a ``failed``, ``unknown`` or
    ``compensation_failed`` entry) as ``Type: message``, a rejection as its error and the
    result the step was compensated with. The widths pad the seq and the kind, to align a
    timeline's columns.

    >>> describe_entry(Entry(7, "completed", "payment/charge", 2, b'{"id":"P-1"}'))
    '#7 completed payment/charge (attempt 2): {"id": "P-1"}'
    >>> describe_entry(Entry(8, "rejected", "tag", 1, b'{"error":["CodecError","no JSON"]}'))
    '#8 rejected tag (attempt 1): CodecError: no JSON; its result was not recorded'
    """
    text = f"#{entry.seq:<{seq_width}} {entry.kind:<{kind_width}} {entry.path} "
    text += f"(attempt {entry.attempt})"
    payload = describe_payload(entry)
    return text if payload is None else f"{text}: {payload}"


def describe_payload(entry: Entry) -> str | None:
    """An entry's payload decoded: a result as JSON, an error as ``Type: message``, a rejection
    as its error and the result; ``None`` for an entry without one.

    >>> describe_payload(Entry(3, "failed", "charge", 1, b'["CardDeclined","no funds"]'))
    'CardDeclined: no funds'
    >>> describe_payload(Entry(2, "intent", "charge", 1)) is None
    True
    """
    if entry.payload is None:
        return None
    if entry.kind in _ERRORS:
        return _recorded_error(entry.payload)
    if entry.kind == "rejected":
        return _rejection(entry.payload)
    return _decoded(entry.payload)


def utc(seconds: float) -> str:
    """A journal timestamp as an ISO 8601 UTC time.

    >>> utc(1_700_000_000.0)
    '2023-11-14T22:13:20Z'
    """
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _intents_without_result(entries: Sequence[Entry]) -> set[int]:
    """The seqs of the intents no entry gives a result to: in flight when a process stopped."""
    open_intents: dict[tuple[EntryKind, str, int], int] = {}
    for entry in entries:
        if entry.kind in _INTENTS:
            open_intents[entry.kind, entry.path, entry.attempt] = entry.seq
        elif entry.kind in _RESULTS:
            open_intents.pop((_RESULTS[entry.kind], entry.path, entry.attempt), None)
    return set(open_intents.values())


def _where_it_stands(
    record: SagaRecord, entries: Sequence[Entry], journal: str | None
) -> list[str]:
    if record.status != "running" and record.status != "dead":
        lines = [f"finished: {record.status}"]
        if record.outcome is not None:
            lines += ["  " + line for line in _describe_recorded_outcome(record.outcome)]
        return lines
    if record.status == "dead":
        return _why_dead(record, entries, journal)
    if any(entry.kind == "compensation_intent" for entry in entries):
        state = "unfinished, compensating"
    else:
        state = "unfinished"
    if not entries:
        return [f"{state}: nothing recorded yet"]
    return [f"{state}: last entry {describe_entry(entries[-1])}", *_in_flight(entries)]


def _in_flight(entries: Sequence[Entry]) -> list[str]:
    last = entries[-1] if entries else None
    if last is None or last.kind not in _INTENTS:
        return []
    what = last.path if last.kind == "intent" else f"the compensation of {last.path}"
    return [f"  in flight: {what} (the intent without a result: its process stopped while it ran)"]


def _why_dead(record: SagaRecord, entries: Sequence[Entry], journal: str | None) -> list[str]:
    lines = [
        f"dead: parked at {utc(record.updated_at)} after {record.recovery_attempts} recovery "
        "attempt(s) that did not finish it"
    ]
    if record.last_recovery_at is not None:
        if record.last_recovery_error is None:
            ended = "its process stopped without recording why"
        else:
            ended = f"it failed: {_recorded_error(record.last_recovery_error)}"
        lines.append(f"  last recovery: {utc(record.last_recovery_at)}; {ended}")
    if entries:
        lines.append(f"  last entry: {describe_entry(entries[-1])}")
    else:
        lines.append("  last entry: none (nothing recorded)")
    lines += _in_flight(entries)
    where = f" {journal}" if journal is not None else ""
    lines.append(
        "  once the cause is fixed, release it for recovery: "
        f"fsaga journal release {record.saga_id}{where}"
    )
    return lines


def describe_recorded_outcome(data: bytes) -> str:
    """A recorded outcome (`fsaga.journal.SagaRecord.outcome`) as `fsaga.render.describe_outcome`
    describes a live one.

    >>> describe_recorded_outcome(b'{"kind":"failure","error":["E","no"],"compensated":["a"]}')
    'Failure: E: no\\n  compensated: a'
    """
    return "\n".join(_describe_recorded_outcome(data))


def _describe_recorded_outcome(data: bytes) -> list[str]:
    """A recorded outcome as `fsaga.render.describe_outcome` describes a live one."""
    try:
        document = _CODEC.decode(data)
        if isinstance(document, dict) and "unrecordable" in document:
            # An earlier fsaga's record of a success whose final value it could not encode.
            return [
                f"its final value was never recorded ({document['unrecordable']}); its effects "
                "took place and were not compensated"
            ]
        outcome = _outcome_from_document(document)
    except (CodecError, KeyError, TypeError, ValueError):
        return [f"outcome: {_decoded(data)}"]
    return describe_outcome(outcome).splitlines()


def _outcome_from_document(document: object) -> Outcome[object]:
    """The outcome `fsaga.durable.DurableSagas` recorded as this JSON document."""
    if not isinstance(document, dict):
        raise TypeError("an outcome is a JSON object")
    kind = document["kind"]
    if kind == "success":
        return Success(document["value"])
    error = _recorded(document["error"])
    compensated = tuple(document["compensated"])
    if kind == "failure":
        return Failure(error, compensated)
    if kind == "partial_failure":
        failed = tuple(
            CompensationFailure(path, _recorded(described), attempts)
            for path, described, attempts in document["failed"]
        )
        return PartialFailure(
            error, compensated, failed, tuple(document["skipped"]), tuple(document["unresolved"])
        )
    raise ValueError(f"unknown outcome kind {kind!r}")


def _recorded(described: object) -> _Recorded:
    """An error as the journal describes it: ``[module:qualname, name, message]``, or
    ``[name, message]`` as fsaga's first journals wrote it."""
    if isinstance(described, list) and len(described) in (2, 3):
        *_, name, message = described
        return _Recorded(str(name), str(message))
    raise ValueError(f"not an error description: {described!r}")


class _Recorded(Exception):
    """An error as the journal recorded it, shown as ``Type: message``."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name

    def __repr__(self) -> str:
        message = str(self)
        return f"{self.type_name}: {message}" if message else self.type_name


def _decoded(data: bytes) -> str:
    try:
        value = _CODEC.decode(data)
    except CodecError:
        return f"<{len(data)} bytes, not JSON>"
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _recorded_error(data: bytes) -> str:
    try:
        return repr(_recorded(_CODEC.decode(data)))
    except CodecError:
        return f"<{len(data)} bytes, not JSON>"
    except ValueError:
        return _decoded(data)


def _rejection(data: bytes) -> str:
    try:
        document = _CODEC.decode(data)
        if not isinstance(document, dict):
            raise ValueError("a rejection is a JSON object")
        error = repr(_recorded(document["error"]))
    except CodecError:
        return f"<{len(data)} bytes, not JSON>"
    except (KeyError, ValueError):
        return _decoded(data)
    if "result" not in document:
        return f"{error}; its result was not recorded"
    result = json.dumps(document["result"], ensure_ascii=False, sort_keys=True)
    return f"{error}; its result: {result}"
