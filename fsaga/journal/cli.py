"""The ``fsaga journal`` commands: list a journal's sagas, show one's timeline, recover them.

``python -m fsaga journal list --db PATH [--status STATUS]``
    one line per saga: id, definition, status, recovery attempts, entries, times (UTC).
``python -m fsaga journal show ID --db PATH``
    the saga's record, its timeline entry by entry, and where it stands.
``python -m fsaga journal recover --db PATH --definitions MODULE:ATTRIBUTE``
    finish every unfinished saga with the `fsaga.durable.SagaDefinitions` found at
    ``MODULE:ATTRIBUTE``, and print each one's outcome.

Exit codes: 0 when the command did what it was asked; 1 when a saga to show does not exist or
a saga could not be recovered; 2 for a usage error, a journal file that is missing or is not
a journal, or definitions that cannot be loaded or do not match the journal.

Payloads are read with `fsaga.journal.JsonCodec`, the default codec; bytes it cannot decode
are shown by their size. `list` and `show` never create a journal: the file must exist.

>>> describe_entry(Entry(2, "failed", "charge", 1, b'["CardDeclined","no funds"]'))
'#2 failed charge (attempt 1): CardDeclined: no funds'
>>> error = b'["shop:CardDeclined","CardDeclined","no funds"]'  # [module:qualname, name, message]
>>> describe_entry(Entry(2, "failed", "charge", 1, error))
'#2 failed charge (attempt 1): CardDeclined: no funds'
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from fsaga.durable import DurableSagas, SagaDefinitions, UnknownDefinitionError
from fsaga.journal.codec import CodecError, JsonCodec
from fsaga.journal.protocol import JournalError
from fsaga.journal.records import SAGA_STATUSES, Entry, EntryKind, SagaRecord, SagaStatus
from fsaga.journal.sqlite import SqliteJournal
from fsaga.outcome import CompensationFailure, Failure, Outcome, PartialFailure, Success
from fsaga.render import describe_outcome

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNUSABLE",
    "add_journal_commands",
    "describe_entry",
    "describe_saga",
    "run_journal_command",
]

EXIT_OK: Final = 0
"""The command did what it was asked."""
EXIT_FAILED: Final = 1
"""No saga with the id to show, or a saga that could not be recovered."""
EXIT_UNUSABLE: Final = 2
"""A usage error, a journal file that is missing or not a journal, or unusable definitions."""

_Write = Callable[[str], object]

_RESULTS: Final[dict[EntryKind, EntryKind]] = {
    "completed": "intent",
    "failed": "intent",
    "unknown": "intent",
    "compensated": "compensation_intent",
    "compensation_failed": "compensation_intent",
}
_INTENTS: Final[frozenset[EntryKind]] = frozenset(_RESULTS.values())
_ERRORS: Final[frozenset[EntryKind]] = frozenset({"failed", "unknown", "compensation_failed"})
_CODEC: Final = JsonCodec()


class _Unusable(Exception):
    """The command cannot run at all: its message says why (exit code 2)."""


def add_journal_commands(journal: argparse.ArgumentParser) -> None:
    """Give the ``journal`` command's parser its sub-commands: ``list``, ``show``, ``recover``."""
    commands = journal.add_subparsers(dest="journal_command", required=True, metavar="COMMAND")
    listing = commands.add_parser(
        "list",
        help="list the sagas of a journal",
        description="List the sagas of a journal, oldest first, one line each.",
    )
    listing.add_argument("--status", choices=SAGA_STATUSES, help="only the sagas with this status")
    showing = commands.add_parser(
        "show",
        help="show a saga's timeline and where it stands",
        description=(
            "Show a saga's record, every entry of its timeline (results and errors decoded), "
            "and where it stands: its outcome, or what was in flight when its process stopped."
        ),
    )
    showing.add_argument("saga_id", metavar="ID", help="the saga's id")
    recovering = commands.add_parser(
        "recover",
        help="finish every unfinished saga of a journal",
        description=(
            "Finish every unfinished saga of a journal, forward or by compensating, with the "
            "saga definitions found at MODULE:ATTRIBUTE (a fsaga.durable.SagaDefinitions), and "
            "print each one's outcome. The current directory is searched for MODULE first."
        ),
    )
    recovering.add_argument(
        "--definitions",
        required=True,
        metavar="MODULE:ATTRIBUTE",
        help="where the saga definitions are, e.g. myapp.sagas:definitions",
    )
    recovering.add_argument(
        "--stale-after",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=(
            "take over only the sagas nothing was written to for this long (default 0: every "
            "unfinished saga; set it when the application may still be running them)"
        ),
    )
    for command in (listing, showing, recovering):
        command.add_argument("--db", required=True, metavar="PATH", help="the journal's file")


def run_journal_command(
    arguments: argparse.Namespace, *, write: _Write, write_error: _Write
) -> int:
    """Run the ``journal`` sub-command `arguments` were parsed for; return its exit code.

    Results go to `write`, one line per call; errors to `write_error`.
    """
    try:
        match arguments.journal_command:
            case "list":
                return _list(arguments.db, arguments.status, write)
            case "show":
                return _show(arguments.db, arguments.saga_id, write, write_error)
            case "recover":
                return _recover(arguments.db, arguments.definitions, arguments.stale_after, write)
            case command:  # pragma: no cover - argparse only accepts the three above
                raise AssertionError(f"unhandled journal command {command!r}")
    except _Unusable as error:
        write_error(f"fsaga journal: {error}")
        return EXIT_UNUSABLE
    except (JournalError, sqlite3.Error) as error:
        write_error(f"fsaga journal: {error}")
        return EXIT_UNUSABLE


# -- the commands --------------------------------------------------------------------------------


def _open(path: str) -> SqliteJournal:
    """The journal at `path`, which must exist: reading a journal never creates one."""
    if not os.path.exists(path):
        raise _Unusable(f"no journal file at {path!r}")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        # SQLite would take an empty file for an empty database and write a journal into it.
        raise _Unusable(f"{path!r} is an empty file, not a journal")
    return SqliteJournal(path)


def _list(path: str, status: str | None, write: _Write) -> int:
    with _open(path) as journal:
        records = journal.sagas(_status(status))
        counts = [len(journal.entries(record.saga_id)) for record in records]
    if not records:
        which = "" if status is None else f" with status {status}"
        write(f"no sagas{which} in {path}")
        return EXIT_OK
    rows = [("ID", "DEFINITION", "STATUS", "RECOVERIES", "ENTRIES", "CREATED", "UPDATED")]
    rows += [
        (
            record.saga_id,
            f"{record.name}@{record.version}",
            record.status,
            str(record.recovery_attempts),
            str(count),
            _utc(record.created_at),
            _utc(record.updated_at),
        )
        for record, count in zip(records, counts, strict=True)
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return EXIT_OK


def _status(given: str | None) -> SagaStatus | None:
    """The `SagaStatus` argparse let through (it only accepts the choices), or ``None``."""
    return next((status for status in SAGA_STATUSES if status == given), None)


def _show(path: str, saga_id: str, write: _Write, write_error: _Write) -> int:
    with _open(path) as journal:
        record = journal.get(saga_id)
        entries = [] if record is None else journal.entries(saga_id)
    if record is None:
        write_error(f"fsaga journal: no saga {saga_id!r} in {path}")
        return EXIT_FAILED
    for line in describe_saga(record, entries).splitlines():
        write(line)
    return EXIT_OK


def _recover(path: str, where: str, stale_after: float, write: _Write) -> int:
    definitions = _load_definitions(where)
    if not stale_after >= 0:
        raise _Unusable(f"--stale-after must be 0 or more seconds, got {stale_after}")
    with _open(path) as journal:
        running = journal.sagas("running")
        _check_definitions(definitions, where, running)
        outcomes = DurableSagas(journal, definitions, stale_after=stale_after).recover()
    if not running:
        write(f"no unfinished sagas in {path}")
        return EXIT_OK
    exit_code = EXIT_OK
    for record in running:
        outcome = outcomes.get(record.saga_id)
        if outcome is None:
            recently = f", or wrote to it in the last {stale_after:g} s" if stale_after else ""
            write(f"{record.saga_id}: left alone: another process is running it{recently}")
        elif isinstance(outcome, BaseException):
            write(f"{record.saga_id}: not recovered: {_error(outcome)}")
            exit_code = EXIT_FAILED
        else:
            write(f"{record.saga_id}: {_one_line(outcome)}")
    return exit_code


def _load_definitions(where: str) -> SagaDefinitions:
    module_name, _, attribute = where.partition(":")
    if not module_name or not attribute:
        raise _Unusable(f"--definitions must be MODULE:ATTRIBUTE, got {where!r}")
    # As `python -m` does, and the installed `fsaga` script does not: find the application's
    # modules in the current directory.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise _Unusable(f"cannot import {module_name!r}: {_error(error)}") from error
    found: object = module
    for name in attribute.split("."):
        if not hasattr(found, name):
            raise _Unusable(f"{module_name!r} has no attribute {attribute!r}")
        found = getattr(found, name)
    if not isinstance(found, SagaDefinitions):
        raise _Unusable(
            f"{where} is a {type(found).__qualname__}, not a fsaga.durable.SagaDefinitions"
        )
    return found


def _check_definitions(
    definitions: SagaDefinitions, where: str, running: Sequence[SagaRecord]
) -> None:
    """Refuse definitions that cannot rebuild every unfinished saga, before touching any:
    each failed recovery counts towards parking a saga as dead."""
    problems: list[str] = []
    for record in running:
        try:
            version, _ = definitions.lookup(record.name)
        except UnknownDefinitionError:
            problems.append(f"saga {record.saga_id!r} needs {record.name!r}, which is missing")
            continue
        if version != record.version:
            problems.append(
                f"saga {record.saga_id!r} started under {record.name!r} version "
                f"{record.version}, {where} has version {version}"
            )
    if problems:
        raise _Unusable(
            f"{where} does not match the journal ({'; '.join(problems)}); nothing was recovered"
        )


# -- rendering -----------------------------------------------------------------------------------


def describe_saga(record: SagaRecord, entries: Sequence[Entry]) -> str:
    """A saga as ``journal show`` prints it: its record, its timeline, where it stands.

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
    lines += ["", *_where_it_stands(record, entries)]
    return "\n".join(lines)


def describe_entry(entry: Entry, *, seq_width: int = 0, kind_width: int = 0) -> str:
    """One entry of a timeline: ``#seq kind path (attempt n)``, then its decoded payload.

    A result is shown as JSON, an error (of a ``failed``, ``unknown`` or
    ``compensation_failed`` entry) as ``Type: message``. The widths pad the seq and the kind,
    to align a timeline's columns.

    >>> describe_entry(Entry(7, "completed", "payment/charge", 2, b'{"id":"P-1"}'))
    '#7 completed payment/charge (attempt 2): {"id": "P-1"}'
    """
    text = f"#{entry.seq:<{seq_width}} {entry.kind:<{kind_width}} {entry.path} "
    text += f"(attempt {entry.attempt})"
    if entry.payload is None:
        return text
    if entry.kind in _ERRORS:
        return f"{text}: {_recorded_error(entry.payload)}"
    return f"{text}: {_decoded(entry.payload)}"


def _intents_without_result(entries: Sequence[Entry]) -> set[int]:
    """The seqs of the intents no entry gives a result to: in flight when a process stopped."""
    open_intents: dict[tuple[EntryKind, str, int], int] = {}
    for entry in entries:
        if entry.kind in _INTENTS:
            open_intents[entry.kind, entry.path, entry.attempt] = entry.seq
        elif entry.kind in _RESULTS:
            open_intents.pop((_RESULTS[entry.kind], entry.path, entry.attempt), None)
    return set(open_intents.values())


def _where_it_stands(record: SagaRecord, entries: Sequence[Entry]) -> list[str]:
    if record.status != "running" and record.status != "dead":
        lines = [f"finished: {record.status}"]
        if record.outcome is not None:
            lines += ["  " + line for line in _describe_recorded_outcome(record.outcome)]
        return lines
    if record.status == "dead":
        state = f"dead: recovery gave up after {record.recovery_attempts} attempt(s)"
    elif any(entry.kind == "compensation_intent" for entry in entries):
        state = "unfinished, compensating"
    else:
        state = "unfinished"
    if not entries:
        return [f"{state}: nothing recorded yet"]
    last = entries[-1]
    lines = [f"{state}: last entry {describe_entry(last)}"]
    if last.kind in _INTENTS:
        what = last.path if last.kind == "intent" else f"the compensation of {last.path}"
        lines.append(
            f"  in flight: {what} (the intent without a result: its process stopped while it ran)"
        )
    return lines


def _describe_recorded_outcome(data: bytes) -> list[str]:
    """A recorded outcome as `fsaga.render.describe_outcome` describes a live one."""
    try:
        outcome = _outcome_from_document(_CODEC.decode(data))
    except (CodecError, KeyError, TypeError, ValueError):
        return [f"outcome: {_decoded(data)}"]
    return describe_outcome(outcome).splitlines()


def _outcome_from_document(document: object) -> Outcome[object]:
    """The outcome `fsaga.durable.DurableSagas` recorded as this JSON document."""
    if not isinstance(document, dict):
        raise TypeError("an outcome is a JSON object")
    kind = document["kind"]
    if kind == "success":
        if "unrecordable" in document:
            return Success(_Recorded("CodecError", str(document["unrecordable"])))
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


def _one_line(outcome: Outcome[object]) -> str:
    """`describe_outcome` on one line: its lines joined with ``;``."""
    first, *rest = describe_outcome(outcome).splitlines()
    details = []
    for line in rest:
        label, _, value = line.strip().partition(":")
        details.append(f"{label}: {value.strip()}")
    return "; ".join([first, *details])


def _error(error: BaseException) -> str:
    message = str(error)
    name = type(error).__qualname__
    return f"{name}: {message}" if message else name


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
