"""The ``fsaga worker`` command: run a worker over a PostgreSQL journal until SIGTERM.

``python -m fsaga worker --dsn DSN [--schema SCHEMA] --definitions MODULE:ATTRIBUTE [--owner ID]
[--ttl SECONDS] [--poll SECONDS] [--grace SECONDS] [--max-claims N] [--max-recovery-attempts N]
[--async [--concurrency N]]``

It starts the sagas submitted to the journal (``fsaga journal submit``, or
`fsaga.journal.PostgresJournal.submit`) and recovers those whose worker went away
(`fsaga.durable.DurableSagas.run_worker`, or `run_worker_async` with ``--async``). SIGTERM or
SIGINT stops it: it claims nothing more, lets what it drives finish for up to ``--grace``
seconds, hands back (releases the leases of) what is still running after that, and exits 0.
It logs to standard error, and prints one line when it is ready and one when it stopped.

A submission that ``--max-claims`` claims did not start is parked (``fsaga journal submissions
--parked``); a saga that ``--max-recovery-attempts`` recoveries claimed without finishing is
parked as dead (``fsaga journal list --status dead``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Final

import anyio

from fsaga.durable import DurableSagas, WorkerReport
from fsaga.journal.cli import (
    _DSN_HELP,
    EXIT_OK,
    EXIT_UNUSABLE,
    _load_definitions,
    _postgres,
    _Unusable,
)
from fsaga.journal.protocol import JournalError

__all__ = ["add_worker_command", "run_worker_command"]

_Write = Callable[[str], object]

_SCHEMA_HELP: Final = "the schema holding the journal's tables (default: fsaga)"


def _positive(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
        return value

    parse.__name__ = what
    return parse


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def add_worker_command(worker: argparse.ArgumentParser) -> None:
    """Give the ``worker`` command's parser its options."""
    worker.add_argument("--dsn", required=True, metavar="DSN", help=_DSN_HELP)
    worker.add_argument("--schema", default="fsaga", help=_SCHEMA_HELP)
    worker.add_argument(
        "--definitions",
        required=True,
        metavar="MODULE:ATTRIBUTE",
        help="where the saga definitions are, e.g. myapp.sagas:definitions",
    )
    worker.add_argument(
        "--owner",
        metavar="ID",
        help="the worker's name, unique among the workers (default: host name and process id)",
    )
    worker.add_argument(
        "--ttl",
        type=_positive("ttl"),
        default=30.0,
        metavar="SECONDS",
        help="how long a lease lasts without renewal (default 30): a worker that dies leaves "
        "its sagas to the others that long",
    )
    worker.add_argument(
        "--poll",
        type=_positive("poll"),
        default=5.0,
        metavar="SECONDS",
        help="the longest wait between two sweeps (default 5); submissions are heard at once",
    )
    worker.add_argument(
        "--grace",
        type=_non_negative,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long to let running sagas finish before handing them back "
        "(default 30)",
    )
    worker.add_argument(
        "--max-claims",
        type=_count,
        default=5,
        metavar="N",
        help="park a submission that N claims did not start (default 5)",
    )
    worker.add_argument(
        "--max-recovery-attempts",
        type=_count,
        default=5,
        metavar="N",
        help="park as dead a saga that N recoveries claimed without finishing it (default 5)",
    )
    worker.add_argument(
        "--async",
        dest="use_async",
        action="store_true",
        help="drive sagas with the async interpreter, several at once",
    )
    worker.add_argument(
        "--concurrency",
        type=_count,
        default=8,
        metavar="N",
        help="with --async: how many sagas to drive at once (default 8)",
    )


def run_worker_command(arguments: argparse.Namespace, *, write: _Write, write_error: _Write) -> int:
    """Run the worker `arguments` describe until SIGTERM or SIGINT; its exit code."""
    try:
        definitions = _load_definitions(arguments.definitions)
        postgres_journal = _postgres()
        journal = postgres_journal(arguments.dsn, schema=arguments.schema)
    except _Unusable as error:
        write_error(f"fsaga worker: {error}")
        return EXIT_UNUSABLE
    except JournalError as error:
        write_error(f"fsaga worker: {error}")
        return EXIT_UNUSABLE
    stop = threading.Event()

    def on_signal(number: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {
        number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)
    }
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    try:
        with journal:
            runs = DurableSagas(
                journal, definitions, max_recovery_attempts=arguments.max_recovery_attempts
            )
            where = f"database {journal.database!r}, schema {journal.schema!r}"
            write(f"worker ready on {where}")
            report: WorkerReport
            if arguments.use_async:

                async def work() -> WorkerReport:
                    return await runs.run_worker_async(
                        concurrency=arguments.concurrency,
                        owner=arguments.owner,
                        ttl=arguments.ttl,
                        poll=arguments.poll,
                        grace=arguments.grace,
                        max_claims=arguments.max_claims,
                        stop=stop,
                    )

                report = anyio.run(work)
            else:
                report = runs.run_worker(
                    owner=arguments.owner,
                    ttl=arguments.ttl,
                    poll=arguments.poll,
                    grace=arguments.grace,
                    max_claims=arguments.max_claims,
                    stop=stop,
                )
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    handed = ", ".join(report.handed_back) or "none"
    write(
        f"worker {report.owner} stopped: {report.started} started, {report.recovered} "
        f"recovered, {report.lost} lost, {report.failed} failed; handed back: {handed}"
    )
    return EXIT_OK
