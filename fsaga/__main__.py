"""The command line: ``python -m fsaga demo`` and ``python -m fsaga journal list|show|recover``
(or ``fsaga ...`` once installed).

The journal commands live in `fsaga.journal.cli`.

>>> main(["demo"], write=lambda text: None)
0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from fsaga.journal.cli import add_journal_commands, run_journal_command

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fsaga`` command."""
    command = argparse.ArgumentParser(
        prog="fsaga",
        description="Typed, functional sagas for Python.",
    )
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
            help="list, show or recover the durable sagas of a journal file",
            description="Inspect and recover the durable sagas of an SQLite journal file.",
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
    Exit codes: 0 on success; 1 when ``journal show`` finds no such saga or ``journal
    recover`` could not recover one; 2 on a usage error (an unknown command, say), a journal
    file that is missing or damaged, or unusable saga definitions.
    """
    try:
        arguments = parser().parse_args(argv)
    except SystemExit as exiting:
        # argparse exits itself on --help (0) and on usage errors (2): report, do not exit.
        return exiting.code if isinstance(exiting.code, int) else 2
    if arguments.command == "demo":
        from fsaga.demo import run_demo

        run_demo(write=write)
        return 0
    if arguments.command == "journal":
        return run_journal_command(arguments, write=write, write_error=write_error)
    raise AssertionError(f"unhandled command {arguments.command!r}")  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
