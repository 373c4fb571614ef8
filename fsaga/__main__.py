"""The command line: ``python -m fsaga demo`` (or ``fsaga demo`` once installed).

>>> main(["demo"], write=lambda text: None)
0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

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
            "place an order across three in-memory services: success, failure, partial failure, "
            "timeout"
        ),
        description=(
            "Run one order saga four times (success, failure, partial failure, and a payment "
            "that times out under the async interpreter) and print each run's events as a "
            "timeline, its outcome and the services' state afterwards."
        ),
    )
    return command


def main(argv: Sequence[str] | None = None, *, write: Callable[[str], object] = print) -> int:
    """Run the command line with `argv` (default: ``sys.argv[1:]``); return the exit code.

    Exit codes: 0 on success, 2 on a usage error (an unknown command, say).
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
    raise AssertionError(f"unhandled command {arguments.command!r}")  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
