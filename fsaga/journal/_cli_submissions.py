"""The ``fsaga journal`` commands of a PostgreSQL journal's submission queue (see
`fsaga.journal.cli`, which adds them): list the submissions, queued or parked, show one, and
release a parked one.

``python -m fsaga journal submissions --dsn DSN [--schema SCHEMA] [--parked]``
    one line per submission waiting to start (with ``--parked``: parked because its starts
    kept failing): id, definition, claims, times (UTC), the error its last start recorded.
``python -m fsaga journal show-submission ID --dsn DSN [--schema SCHEMA]``
    the submission, its claims, and (parked) why.
``python -m fsaga journal release-submission ID --dsn DSN [--schema SCHEMA]``
    queue a parked submission again, for the workers to start.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Final

from fsaga.journal.cli import (
    _DSN_HELP,
    EXIT_FAILED,
    EXIT_OK,
    _Location,
    _postgres,
)
from fsaga.journal.protocol import SubmissionNotParkedError, UnknownSubmissionError
from fsaga.journal.records import PendingSaga
from fsaga.journal.rendering import _recorded_error, describe_submission, utc

__all__ = ["COMMANDS", "add_submission_commands", "run_submission_command"]

_Write = Callable[[str], object]

COMMANDS: Final = ("submissions", "show-submission", "release-submission")
"""The sub-commands this module adds to ``fsaga journal``."""

_SCHEMA_HELP: Final = "the schema holding the journal's tables (default: fsaga)"


def add_submission_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``submissions``, ``show-submission`` and ``release-submission`` to the ``journal``
    command's sub-commands."""
    listing = commands.add_parser(
        "submissions",
        help="list the sagas submitted to a PostgreSQL journal and not started yet",
        description=(
            "List the sagas submitted for the workers to start and not started yet, oldest "
            "first; with --parked, those parked because their starts kept failing."
        ),
    )
    listing.add_argument(
        "--parked", action="store_true", help="the parked submissions, in the order parked"
    )
    showing = commands.add_parser(
        "show-submission",
        help="show a submission, its claims and why it is parked",
        description=(
            "Show a submitted saga not started yet: its definition and input, how often workers "
            "claimed it, the error its last start recorded, and whether it is parked."
        ),
    )
    showing.add_argument("saga_id", metavar="ID", help="the submitted saga's id")
    releasing = commands.add_parser(
        "release-submission",
        help="queue a parked submission again",
        description=(
            "Queue a parked submission again, with its count of claims reset, so that the "
            "workers start it. Release it once what kept it from starting is fixed (its "
            "definition deployed to the workers, say)."
        ),
    )
    releasing.add_argument("saga_id", metavar="ID", help="the parked submission's id")
    for command in (listing, showing, releasing):
        command.add_argument("--dsn", required=True, metavar="DSN", help=_DSN_HELP)
        command.add_argument("--schema", default="fsaga", help=_SCHEMA_HELP)


def run_submission_command(
    arguments: argparse.Namespace, *, write: _Write, write_error: _Write
) -> int:
    """Run one of `COMMANDS`; its exit code."""
    location = _Location(None, arguments.dsn, arguments.schema)
    match arguments.journal_command:
        case "submissions":
            return _list(location, parked=arguments.parked, write=write)
        case "show-submission":
            return _show(location, arguments.saga_id, write, write_error)
        case command:
            assert command == "release-submission", command
            return _release(location, arguments.saga_id, write, write_error)


def _list(location: _Location, *, parked: bool, write: _Write) -> int:
    assert location.dsn is not None
    with _postgres()(location.dsn, schema=location.schema) as journal:
        found = journal.parked_submissions() if parked else journal.pending()
        where = f"database {journal.database!r}, schema {journal.schema!r}"
    if not found:
        write(f"no {'parked' if parked else 'queued'} submissions in {where}")
        return EXIT_OK
    header = ("ID", "DEFINITION", "CLAIMS", "SUBMITTED", "LAST CLAIMED", "PARKED", "LAST ERROR")
    rows = [header, *(_row(submission) for submission in found)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return EXIT_OK


def _row(submission: PendingSaga) -> tuple[str, ...]:
    error = submission.last_error
    return (
        submission.saga_id,
        submission.name,
        str(submission.claims),
        utc(submission.submitted_at),
        "-" if submission.last_claimed_at is None else utc(submission.last_claimed_at),
        "-" if submission.parked_at is None else utc(submission.parked_at),
        "-" if error is None else _recorded_error(error),
    )


def _show(location: _Location, saga_id: str, write: _Write, write_error: _Write) -> int:
    assert location.dsn is not None
    with _postgres()(location.dsn, schema=location.schema) as journal:
        submission = journal.submission(saga_id)
        where = f"database {journal.database!r}, schema {journal.schema!r}"
    if submission is None:
        write_error(
            f"fsaga journal: no submission {saga_id!r} in {where}: it was never submitted, or "
            f"it started (`fsaga journal show {saga_id}` shows the saga)"
        )
        return EXIT_FAILED
    for line in describe_submission(submission, journal=location.options).splitlines():
        write(line)
    return EXIT_OK


def _release(location: _Location, saga_id: str, write: _Write, write_error: _Write) -> int:
    assert location.dsn is not None
    with _postgres()(location.dsn, schema=location.schema) as journal:
        try:
            journal.release_submission(saga_id)
        except (UnknownSubmissionError, SubmissionNotParkedError) as error:
            write_error(f"fsaga journal: {error}")
            return EXIT_FAILED
    write(f"{saga_id}: released; the workers start it")
    return EXIT_OK
