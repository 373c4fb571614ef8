"""SQLite plumbing shared by `fsaga.journal.sqlite` and `fsaga.stores.sqlite` (stdlib `sqlite3`)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator

__all__ = ["rollback", "switch_to_wal", "transaction"]


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
