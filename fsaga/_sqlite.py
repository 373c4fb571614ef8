"""SQLite plumbing shared by `fsaga.journal.sqlite` and `fsaga.stores.sqlite` (stdlib `sqlite3`)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import Final

from fsaga._numbers import check_seconds

__all__ = [
    "MAX_BUSY_TIMEOUT",
    "check_busy_timeout",
    "rollback",
    "switch_to_wal",
    "transaction",
    "unopenable",
]

MAX_BUSY_TIMEOUT: Final = 2_147_483.647
"""The longest busy timeout SQLite keeps, in seconds: it stores it as a C int of milliseconds."""


def check_busy_timeout(value: object, *, what: str) -> float:
    """`value` as a busy timeout in seconds: a number from 0 to `MAX_BUSY_TIMEOUT`.

    Raises:
        TypeError: `value` is not a number.
        ValueError: `value` is negative, not finite, or longer than SQLite can keep.

    >>> check_busy_timeout(5, what="busy_timeout")
    5.0
    """
    seconds = check_seconds(value, what=what, allow_zero=True)
    if seconds > MAX_BUSY_TIMEOUT:
        raise ValueError(
            f"{what} must be at most {MAX_BUSY_TIMEOUT} seconds (SQLite keeps it as an int of "
            f"milliseconds), got {value!r}"
        )
    return seconds


def unopenable(path: str) -> str | None:
    """Why SQLite could not open `path` as a database file, when the file system already tells:
    its directory is missing or is not a directory, or `path` is a directory. ``None`` when
    nothing is wrong that can be seen before trying (or for an in-memory database).

    SQLite's own message for all of these is "unable to open database file".
    """
    if path in ("", ":memory:"):
        return None
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(directory):
        return f"its directory {directory!r} does not exist: create it first"
    if not os.path.isdir(directory):
        return f"{directory!r}, where it would be, is not a directory"
    if os.path.isdir(path):
        return f"{path!r} is a directory, not a database file"
    return None


def switch_to_wal(connection: sqlite3.Connection, busy_timeout: float) -> str:
    """Put the file in WAL mode; the journal mode it is in after.

    Switching needs the file to itself, and SQLite does not wait for that (the busy timeout
    does not apply), so an opener racing others for a new file retries within the timeout.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            return str(connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
        time.sleep(0.001)


def rollback(connection: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any."""
    if connection.in_transaction:
        # The original error says what went wrong; a failed rollback adds nothing to it.
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection, *, write: bool) -> Iterator[sqlite3.Connection]:
    """One transaction, committed when the block ends, rolled back when it raises.

    A write takes SQLite's write lock at once (``BEGIN IMMEDIATE``), so its reads and its
    conditional writes see one state no other writer can change in between.
    """
    connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        rollback(connection)
        raise
