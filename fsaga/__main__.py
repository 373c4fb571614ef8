"""The command line: ``python -m fsaga demo``, ``python -m fsaga journal
list|show|recover|release|migrate|submit|submissions|show-submission|release-submission``,
``python -m fsaga worker`` and ``python -m fsaga --version`` (or ``fsaga ...`` once installed).

The journal commands live in `fsaga.journal.cli`, the worker in `fsaga._worker_cli`.

>>> main(["demo"], write=lambda text: None)
0
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Callable, Sequence

from fsaga import __version__
from fsaga.journal.cli import add_journal_commands, run_journal_command

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fsaga`` command."""
    command = argparse.ArgumentParser(
        prog="fsaga",
        description="Typed, functional sagas for Python.",
    )
    command.add_argument("--version", action="version", version=f"fsaga {__version__}")
    commands = command.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "demo",
        help=(
            "place an order over two SQLite stores and a payment gateway: success, failure, "
            "partial failure, timeout, and a durable run killed mid-saga and recovered"
        ),
        description=(
            "Run one order saga four times (success, failure, partial failure, and a payment "
            "that times out under the async interpreter) and print each run's events as a "
            "timeline, its outcome and the stores' rows afterwards; then run it durably in "
            "a process that is killed mid-payment, and recover it from its journal."
        ),
    )
    add_journal_commands(
        commands.add_parser(
            "journal",
            help="list, show or recover the durable sagas of a journal",
            description=(
                "Inspect and recover the durable sagas of a journal: an SQLite file (--db) or "
                "a PostgreSQL database (--dsn), whose tables `migrate` creates."
            ),
        )
    )
    from fsaga._worker_cli import add_worker_command

    add_worker_command(
        commands.add_parser(
            "worker",
            help="start submitted sagas and recover abandoned ones, until SIGTERM",
            description=(
                "Run a worker over a PostgreSQL journal (--dsn): start the sagas submitted to "
                "it and recover those whose worker went away, holding a lease on each saga it "
                "drives, until SIGTERM or SIGINT; then let what runs finish for up to --grace "
                "seconds, hand back what is left, and exit 0."
            ),
        )
    )
    return command


def _write_to_stderr(text: str) -> None:
    print(text, file=sys.stderr)


def main(
    argv: Sequence[str] | None = None,
    *,
    write: Callable[[str], object] = print,
    write_error: Callable[[str], object] = _write_to_stderr,
) -> int:
    """Run the command line with `argv` (default: ``sys.argv[1:]``); return the exit code.

    Output goes to `write`, error messages to `write_error` (standard error by default).
    Exit codes: 0 on success; 1 when ``journal show`` or ``journal release`` finds no such
    saga (or, for ``release``, one that is not dead), or ``journal show-submission`` or
    ``journal release-submission`` no such submission (or one that is not parked), when
    ``journal recover`` could not recover one, or when standard output was closed before
    everything was written to it (a reader such as ``head`` stopped reading: the command stops
    quietly); 2 on a usage error (an unknown command, say), a journal that is missing, damaged
    or unreachable, or unusable saga definitions.
    """
    try:
        arguments = parser().parse_args(argv)
    except SystemExit as exiting:
        # argparse exits itself on --help (0) and on usage errors (2): report, do not exit.
        return exiting.code if isinstance(exiting.code, int) else 2
    try:
        code = _run(arguments, write, write_error)
        sys.stdout.flush()  # a closed pipe shows here at the latest, not at exit
    except BrokenPipeError:
        _discard_standard_output()
        return 1
    return code


def _run(
    arguments: argparse.Namespace,
    write: Callable[[str], object],
    write_error: Callable[[str], object],
) -> int:
    if arguments.command == "demo":
        from fsaga.demo import run_demo

        run_demo(write=write)
        return 0
    if arguments.command == "journal":
        return run_journal_command(arguments, write=write, write_error=write_error)
    if arguments.command == "worker":
        from fsaga._worker_cli import run_worker_command

        return run_worker_command(arguments, write=write, write_error=write_error)
    raise AssertionError(f"unhandled command {arguments.command!r}")  # pragma: no cover


def _discard_standard_output() -> None:
    """Point standard output at the null device: what is still buffered for the closed pipe
    is dropped, and the interpreter's flush at exit has nothing to complain about."""
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
