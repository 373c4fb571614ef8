"""The ``fsaga journal`` commands: list a journal's sagas, show one, recover them, release one,
and create or upgrade a PostgreSQL journal's tables.

Each command names its journal with ``--db PATH`` (an `fsaga.journal.SqliteJournal` file) or
``--dsn DSN [--schema SCHEMA]`` (an `fsaga.journal.PostgresJournal`: a libpq connection string
or URI, and the schema holding its tables, ``fsaga`` by default; needs the ``postgres`` extra).
JOURNAL below stands for either.

``python -m fsaga journal list JOURNAL [--status STATUS]``
    one line per saga: id, definition, status, recovery attempts, entries, times (UTC).
``python -m fsaga journal show ID JOURNAL [--mermaid] [--html FILE]``
    the saga's record, its timeline entry by entry, and where it stands (for a dead saga:
    why it was parked); with ``--mermaid``, its trace as a Mermaid sequence diagram instead;
    with ``--html FILE``, its trace written to FILE too, as a self-contained HTML page
    (`fsaga.pictures`).
``python -m fsaga journal recover JOURNAL --definitions MODULE:ATTRIBUTE [--stale-after SECONDS]
[--max-recovery-attempts N]``
    finish every unfinished saga with the `fsaga.durable.SagaDefinitions` found at
    ``MODULE:ATTRIBUTE``, and print each one's outcome (parking as dead a saga that N
    recoveries claimed without finishing).
``python -m fsaga journal release ID JOURNAL``
    give a saga parked as dead back to recovery.
``python -m fsaga journal migrate --dsn DSN [--schema SCHEMA]``
    create a PostgreSQL journal's tables, or upgrade them to this fsaga's schema version
    (`fsaga.journal.PostgresJournal.migrate`).
``python -m fsaga journal submit NAME INPUT_JSON --dsn DSN [--schema SCHEMA] [--id ID]``
    queue a saga for the workers (``python -m fsaga worker``) to start
    (`fsaga.journal.PostgresJournal.submit`), and print its id.
``python -m fsaga journal submissions|show-submission ID|release-submission ID --dsn DSN``
    list the submissions (``--parked``: those parked because their starts kept failing), show
    one, queue a parked one again (see `fsaga.journal._cli_submissions`).

Exit codes: 0 when the command did what it was asked; 1 when a saga (or submission) to show
or release does not exist or is not dead (not parked), when a saga could not be recovered, or
when the output was closed before the command finished writing it; 2 for a usage error, a
journal that is missing, is not a journal or cannot be reached, or definitions that cannot be
loaded or do not match the journal.

Payloads are read with `fsaga.journal.JsonCodec`, the default codec (see
`fsaga.journal.rendering`). `list`, `show`, `recover` and `release` never create a journal: the
file must exist, and a PostgreSQL journal must have been created by ``migrate``. (Opening an
SQLite journal written by an earlier fsaga upgrades its schema in place.)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from fsaga._numbers import check_count, check_seconds
from fsaga.durable import DurableSagas, SagaDefinitions, UnknownDefinitionError
from fsaga.durable.errors import RecordedError
from fsaga.journal.codec import JsonCodec
from fsaga.journal.protocol import Journal, JournalError, SagaNotDeadError, UnknownSagaError
from fsaga.journal.records import (
    SAGA_STATUSES,
    Entry,
    FinishedStatus,
    SagaRecord,
    SagaStatus,
)
from fsaga.journal.rendering import describe_entry as describe_entry
from fsaga.journal.rendering import describe_saga as describe_saga
from fsaga.journal.rendering import utc
from fsaga.journal.sqlite import SqliteJournal
from fsaga.outcome import Outcome
from fsaga.render import describe_outcome

if TYPE_CHECKING:
    from fsaga.journal.postgres import PostgresJournal

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
"""No saga with the id to show or release (or it is not dead), a saga that could not be
recovered, or output closed before the command finished writing it."""
EXIT_UNUSABLE: Final = 2
"""A usage error, a journal that is missing, not a journal or unreachable, or unusable
definitions."""

_Write = Callable[[str], object]


def _seconds(text: str) -> float:
    """A command-line number of seconds, as `DurableSagas` takes it (argparse reports the error)."""
    try:
        return check_seconds(float(text), what="--stale-after", allow_zero=True)
    except ValueError as error:
        message = str(error)
        if message.startswith("--stale-after "):  # argparse names the option itself
            message = message.removeprefix("--stale-after ")
        else:
            message = f"not a number of seconds: {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def _attempts(text: str) -> int:
    """A command-line count of recovery attempts (argparse reports the error)."""
    try:
        return check_count(int(text), what="--max-recovery-attempts", minimum=1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 or more: {text!r}") from None


class _Unusable(Exception):
    """The command cannot run at all: its message says why (exit code 2)."""


def add_journal_commands(journal: argparse.ArgumentParser) -> None:
    """Give the ``journal`` command's parser its sub-commands: ``list``, ``show``, ``recover``,
    ``release``, ``migrate``, ``submit``, ``submissions``, ``show-submission``,
    ``release-submission``."""
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
            "and where it stands: its outcome, what was in flight when its process stopped, "
            "or, for a dead saga, why it was parked."
        ),
    )
    showing.add_argument("saga_id", metavar="ID", help="the saga's id")
    showing.add_argument(
        "--mermaid",
        action="store_true",
        help=(
            "print the saga's trace as a Mermaid sequence diagram (one participant per par "
            "branch, the undo going back) instead of the text"
        ),
    )
    showing.add_argument(
        "--html",
        metavar="FILE",
        help=(
            "also write the saga's trace to FILE as a self-contained HTML page: a timeline "
            "with a lane per par branch, that works offline"
        ),
    )
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
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help=(
            "take over only the sagas nothing was written to for this long (default 0: every "
            "unfinished saga; set it when the application may still be running them)"
        ),
    )
    recovering.add_argument(
        "--max-recovery-attempts",
        type=_attempts,
        default=5,
        metavar="N",
        help=(
            "park as dead a saga that this many recoveries claimed without finishing it "
            "(default 5; see `show ID`, then `release ID`)"
        ),
    )
    releasing = commands.add_parser(
        "release",
        help="give a saga parked as dead back to recovery",
        description=(
            "Make a saga parked as dead (see `show ID` for why) running again, with its count "
            "of recovery attempts reset, so that the next `recover` takes it over. Release it "
            "once what kept stopping its recoveries is fixed."
        ),
    )
    releasing.add_argument("saga_id", metavar="ID", help="the dead saga's id")
    for command in (listing, showing, recovering, releasing):
        where = command.add_mutually_exclusive_group(required=True)
        where.add_argument("--db", metavar="PATH", help="the journal's SQLite file")
        where.add_argument("--dsn", metavar="DSN", help=_DSN_HELP)
        command.add_argument("--schema", help=_SCHEMA_HELP)
    migrating = commands.add_parser(
        "migrate",
        help="create or upgrade a PostgreSQL journal's tables",
        description=(
            "Create a PostgreSQL journal's tables in SCHEMA (and the schema), or upgrade them "
            "to this fsaga's schema version; do nothing if they are up to date. Processes "
            "migrating one schema at once take turns."
        ),
    )
    migrating.add_argument("--dsn", required=True, metavar="DSN", help=_DSN_HELP)
    migrating.add_argument("--schema", default="fsaga", help=_SCHEMA_HELP)
    submitting = commands.add_parser(
        "submit",
        help="queue a saga for the workers to start",
        description=(
            "Queue the saga registered as NAME, on the input INPUT_JSON (a JSON document), for "
            "any worker (`fsaga worker`) to start, and print its id. An id that was submitted "
            "or started already is refused (exit code 1)."
        ),
    )
    submitting.add_argument("name", metavar="NAME", help="the saga definition's name")
    submitting.add_argument("input", metavar="INPUT_JSON", help="its input, as JSON")
    submitting.add_argument(
        "--id", dest="saga_id", metavar="ID", help="the saga's id (default: a new UUID)"
    )
    submitting.add_argument("--dsn", required=True, metavar="DSN", help=_DSN_HELP)
    submitting.add_argument("--schema", default="fsaga", help=_SCHEMA_HELP)
    from fsaga.journal._cli_submissions import add_submission_commands

    add_submission_commands(commands)


_DSN_HELP: Final = (
    "the PostgreSQL database holding the journal: a libpq connection string or URI, e.g. "
    "'host=db dbname=orders user=fsaga' (needs fsaga[postgres])"
)
_SCHEMA_HELP: Final = "with --dsn: the schema holding the journal's tables (default: fsaga)"


def run_journal_command(
    arguments: argparse.Namespace, *, write: _Write, write_error: _Write
) -> int:
    """Run the ``journal`` sub-command `arguments` were parsed for; return its exit code.

    Results go to `write`, one line per call; errors to `write_error`.
    """
    try:
        match arguments.journal_command:
            case "list":
                return _list(_Location.of(arguments), arguments.status, write)
            case "show":
                return _show(_Location.of(arguments), arguments, write, write_error)
            case "recover":
                location = _Location.of(arguments)
                return _recover(
                    location,
                    arguments.definitions,
                    write,
                    stale_after=arguments.stale_after,
                    max_attempts=arguments.max_recovery_attempts,
                )
            case "release":
                return _release(_Location.of(arguments), arguments.saga_id, write, write_error)
            case "migrate":
                return _migrate(arguments.dsn, arguments.schema, write)
            case "submit":
                return _submit(arguments, write, write_error)
            case "submissions" | "show-submission" | "release-submission":
                from fsaga.journal._cli_submissions import run_submission_command

                return run_submission_command(arguments, write=write, write_error=write_error)
            case command:  # pragma: no cover - argparse only accepts the nine above
                raise AssertionError(f"unhandled journal command {command!r}")
    except _Unusable as error:
        write_error(f"fsaga journal: {error}")
        return EXIT_UNUSABLE
    except (JournalError, sqlite3.Error) as error:
        write_error(f"fsaga journal: {error}")
        return EXIT_UNUSABLE


# -- the commands --------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class _Location:
    """Where the command's journal is: an SQLite file (`db`), or a PostgreSQL schema."""

    db: str | None
    dsn: str | None
    schema: str

    @classmethod
    def of(cls, arguments: argparse.Namespace) -> _Location:
        if arguments.db is not None and arguments.schema is not None:
            raise _Unusable("--schema goes with --dsn: an SQLite journal has no schemas")
        return cls(arguments.db, arguments.dsn, arguments.schema or "fsaga")

    @property
    def options(self) -> str:
        """The command-line options naming the journal (a DSN without its password)."""
        if self.db is not None:
            return f"--db {self.db}"
        assert self.dsn is not None
        schema = "" if self.schema == "fsaga" else f" --schema {shlex.quote(self.schema)}"
        return f"--dsn {shlex.quote(_without_password(self.dsn))}{schema}"

    @contextlib.contextmanager
    def open(self) -> Iterator[tuple[Journal, str]]:
        """The journal, which must exist (reading a journal never creates one), and how
        messages name it; closed when the block ends."""
        if self.db is not None:
            with _open_file(self.db) as sqlite:
                yield sqlite, self.db
            return
        assert self.dsn is not None
        postgres_journal = _postgres()
        with postgres_journal(self.dsn, schema=self.schema) as postgres:
            yield postgres, f"database {postgres.database!r}, schema {postgres.schema!r}"


def _postgres() -> type[PostgresJournal]:
    """`fsaga.journal.PostgresJournal`, imported on first use (with psycopg)."""
    try:
        from fsaga.journal.postgres import PostgresJournal
    except ImportError as error:
        raise _Unusable(
            f"--dsn needs PostgreSQL support, which is not installed ({error}): "
            "pip install 'fsaga[postgres]'"
        ) from error
    return PostgresJournal


def _without_password(dsn: str) -> str:
    """`dsn` as a command to print may show it: without its password."""
    import psycopg.conninfo

    try:
        fields = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return dsn
    if "password" not in fields:
        return dsn
    fields.pop("password")
    return psycopg.conninfo.make_conninfo(**{key: str(value) for key, value in fields.items()})


def _open_file(path: str) -> SqliteJournal:
    """The journal at `path`, which must exist: reading a journal never creates one."""
    if not os.path.exists(path):
        raise _Unusable(f"no journal file at {path!r}")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        # SQLite would take an empty file for an empty database and write a journal into it.
        raise _Unusable(f"{path!r} is an empty file, not a journal")
    return SqliteJournal(path)


def _migrate(dsn: str, schema: str, write: _Write) -> int:
    postgres_journal = _postgres()
    found = postgres_journal.migrate(dsn, schema=schema)
    with postgres_journal(dsn, schema=schema) as journal:
        where = f"database {journal.database!r}, schema {journal.schema!r}"
    version = _postgres_schema_version()
    if found == version:
        write(f"the journal in {where} is up to date (schema version {version})")
    elif found == 0:
        write(f"created the journal in {where} (schema version {version})")
    else:
        write(f"upgraded the journal in {where} from schema version {found} to {version}")
    return EXIT_OK


def _submit(arguments: argparse.Namespace, write: _Write, write_error: _Write) -> int:
    import json
    import uuid

    try:
        document = json.loads(arguments.input)
    except ValueError as error:
        raise _Unusable(f"INPUT_JSON is not JSON: {error}") from error
    saga_id = arguments.saga_id if arguments.saga_id is not None else str(uuid.uuid4())
    encoded = JsonCodec().encode(document)
    with _postgres()(arguments.dsn, schema=arguments.schema) as journal:
        queued = journal.submit(saga_id, arguments.name, encoded)
    if not queued:
        write_error(f"fsaga journal: saga {saga_id!r} was submitted or started already")
        return EXIT_FAILED
    write(saga_id)
    return EXIT_OK


def _postgres_schema_version() -> int:
    from fsaga.journal.postgres import SCHEMA_VERSION

    return SCHEMA_VERSION


def _list(location: _Location, status: str | None, write: _Write) -> int:
    with location.open() as (journal, where):
        records = journal.sagas(_status(status))
        counts = [len(journal.entries(record.saga_id)) for record in records]
    if not records:
        which = "" if status is None else f" with status {status}"
        write(f"no sagas{which} in {where}")
        return EXIT_OK
    rows = [("ID", "DEFINITION", "STATUS", "RECOVERIES", "ENTRIES", "CREATED", "UPDATED")]
    rows += [
        (
            record.saga_id,
            f"{record.name}@{record.version}",
            record.status,
            str(record.recovery_attempts),
            str(count),
            utc(record.created_at),
            utc(record.updated_at),
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


def _show(
    location: _Location, arguments: argparse.Namespace, write: _Write, write_error: _Write
) -> int:
    saga_id: str = arguments.saga_id
    with location.open() as (journal, where):
        record = journal.get(saga_id)
        entries = [] if record is None else journal.entries(saga_id)
    if record is None:
        write_error(f"fsaga journal: no saga {saga_id!r} in {where}")
        return EXIT_FAILED
    text = describe_saga(record, entries, journal=location.options)
    if arguments.mermaid or arguments.html is not None:
        from fsaga.pictures import trace_as_html, trace_as_mermaid, trace_of_journal

        trace = trace_of_journal(record, entries)
        if arguments.html is not None:
            _write_page(arguments.html, trace_as_html(trace))
        if arguments.mermaid:
            text = trace_as_mermaid(trace)
    for line in text.splitlines():
        write(line)
    return EXIT_OK


def _write_page(path: str, page: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as file:
            file.write(page)
    except OSError as error:
        raise _Unusable(f"cannot write the page to {path!r}: {error.strerror or error}") from error


def _release(location: _Location, saga_id: str, write: _Write, write_error: _Write) -> int:
    with location.open() as (journal, where):
        try:
            journal.release(saga_id)
        except UnknownSagaError:
            write_error(f"fsaga journal: no saga {saga_id!r} in {where}")
            return EXIT_FAILED
        except SagaNotDeadError as error:
            write_error(f"fsaga journal: {error}")
            return EXIT_FAILED
    write(f"{saga_id}: released; the next `fsaga journal recover` takes it over")
    return EXIT_OK


def _recover(
    location: _Location, found_at: str, write: _Write, *, stale_after: float, max_attempts: int
) -> int:
    definitions = _load_definitions(found_at)
    with location.open() as (opened, where):
        running = opened.sagas("running")
        _check_definitions(definitions, found_at, running)
        journal = _FinishWatcher(opened)
        outcomes = DurableSagas(
            journal, definitions, stale_after=stale_after, max_recovery_attempts=max_attempts
        ).recover()
        now = {record.saga_id: opened.get(record.saga_id) for record in running}
    if not running:
        write(f"no unfinished sagas in {where}")
        return EXIT_OK
    exit_code = EXIT_OK
    for record in running:
        saga_id = record.saga_id
        outcome = outcomes.get(saga_id)
        if isinstance(outcome, BaseException):
            write(f"{saga_id}: not recovered: {_error(outcome)}")
            exit_code = EXIT_FAILED
        elif outcome is not None and saga_id in journal.finished:
            write(f"{saga_id}: {_one_line(outcome)}")
        elif outcome is not None:
            write(f"{saga_id}: recovered by another process: {_one_line(outcome)}")
        else:
            write(f"{saga_id}: {_left_alone(now[saga_id], stale_after)}")
    return exit_code


def _left_alone(record: SagaRecord | None, stale_after: float) -> str:
    """Why `recover` left a saga out: another process has it."""
    if record is not None and record.status != "running":
        return f"recovered by another process: it is {record.status} now"
    recently = f", or wrote to it in the last {stale_after:g} s" if stale_after else ""
    return f"left alone: another process is running it{recently}"


class _FinishWatcher(Journal):
    """A journal that remembers which sagas this process finished: `recover` returns the
    outcome another process recorded for a saga it lost to, and the command says so."""

    def __init__(self, inner: Journal) -> None:
        self.inner = inner
        self.finished: set[str] = set()

    def create(
        self,
        saga_id: str,
        name: str,
        version: int,
        input: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> tuple[SagaRecord, bool]:
        return self.inner.create(saga_id, name, version, input, entries=entries)

    def append(self, saga_id: str, entries: Sequence[Entry]) -> None:
        self.inner.append(saga_id, entries)

    def entries(self, saga_id: str) -> list[Entry]:
        return self.inner.entries(saga_id)

    def finish(
        self,
        saga_id: str,
        status: FinishedStatus,
        outcome: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> bool:
        finished = self.inner.finish(saga_id, status, outcome, entries=entries)
        if finished:
            self.finished.add(saga_id)
        return finished

    def get(self, saga_id: str) -> SagaRecord | None:
        return self.inner.get(saga_id)

    def sagas(self, status: SagaStatus | None = None) -> list[SagaRecord]:
        return self.inner.sagas(status)

    def claim_for_recovery(
        self, saga_id: str, *, max_attempts: int, stale_before: float | None = None
    ) -> bool:
        return self.inner.claim_for_recovery(
            saga_id, max_attempts=max_attempts, stale_before=stale_before
        )

    def record_recovery_error(self, saga_id: str, error: bytes) -> bool:
        return self.inner.record_recovery_error(saga_id, error)

    def release(self, saga_id: str) -> SagaRecord:
        return self.inner.release(saga_id)

    def close(self) -> None:
        self.inner.close()


def _one_line(outcome: Outcome[object]) -> str:
    """`describe_outcome` on one line: its lines joined with ``;``."""
    first, *rest = describe_outcome(outcome).splitlines()
    details = []
    for line in rest:
        label, _, value = line.strip().partition(":")
        details.append(f"{label}: {value.strip()}")
    return "; ".join([first, *details])


def _error(error: BaseException) -> str:
    if isinstance(error, RecordedError):
        return str(error)  # already "Type: message"
    message = str(error)
    name = type(error).__qualname__
    return f"{name}: {message}" if message else name


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
    """Refuse definitions that cannot rebuild every unfinished saga, before recovering any: a
    deployment with the wrong definitions recovers nothing rather than some."""
    problems: list[str] = []
    for record in running:
        try:
            version, _ = definitions.lookup(record.name)
        except UnknownDefinitionError as error:
            known = ", ".join(map(repr, error.registered)) or "none"
            problems.append(
                f"saga {record.saga_id!r} needs {record.name!r}, which is missing "
                f"(registered: {known})"
            )
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
