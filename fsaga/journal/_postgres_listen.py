"""`SubmissionListener`: a connection of its own that ``LISTEN``s on a `PostgresJournal`'s
submission channel (see `fsaga.journal.postgres`, whose `PostgresJournal.listen` makes one).

A worker waits on it between its sweeps, so that a submitted saga starts at once rather than at
the next sweep. The connection is made again, quietly, when it breaks (the server restarted).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from types import TracebackType
from typing import Any, Self, final

import psycopg
import psycopg.sql

from fsaga.journal._postgres_support import describe_dsn

__all__ = ["SubmissionListener"]

logger = logging.getLogger("fsaga.journal.postgres")

# How long one wait for a notification lasts at most before the stop event is looked at again.
_SLICE = 0.25


@final
class SubmissionListener:
    """``LISTEN`` on a journal's submission channel, from a connection of its own.

    Notifications that arrive while nobody waits stay in the connection until the next `wait`:
    none is lost between a worker's sweep and its wait. After the connection broke (and was made
    again), `wait` returns ``True`` at once, since submissions may have been missed meanwhile.

    Args:
        dsn: the journal's database.
        channel: the channel to listen on (`PostgresJournal.submission_channel`).
        connect_timeout: how long a connection attempt may take, in seconds.
    """

    __slots__ = ("_channel", "_connection", "_dsn", "_missed", "_timeout")

    def __init__(self, dsn: str, channel: str, *, connect_timeout: float) -> None:
        self._dsn = dsn
        self._channel = channel
        self._timeout = connect_timeout
        self._connection: psycopg.Connection[tuple[Any, ...]] | None = None
        self._missed = False

    def __repr__(self) -> str:
        state = "connected" if self._connection is not None else "not connected"
        return f"SubmissionListener({self._channel!r}, {state})"

    def __enter__(self) -> Self:
        self._connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def wait(self, timeout: float, *, stop: threading.Event | None = None) -> bool:
        """Block until a saga is submitted, `timeout` seconds pass, or `stop` is set.

        Never raises for the database: while it cannot be reached, the wait lasts its
        `timeout` (the connection is tried again every fraction of a second, and the failure
        logged once).

        Returns:
            Whether a submission was notified (or may have been missed: the connection broke).
        """
        deadline = time.monotonic() + timeout
        while stop is None or not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            connection = self._connection or self._connect()
            if connection is None:
                pause = min(remaining, _SLICE)
                if stop is None:
                    time.sleep(pause)
                else:
                    stop.wait(pause)
                continue
            if self._missed:
                self._missed = False
                return True
            try:
                for _ in connection.notifies(timeout=min(remaining, _SLICE), stop_after=1):
                    return True
            except psycopg.Error as error:
                logger.warning("listening for submissions failed, reconnecting: %s", error)
                self._drop()
        return False

    def close(self) -> None:
        """Close the connection (a later `wait` makes it again)."""
        self._drop()
        self._missed = False

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]] | None:
        try:
            connection = psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=max(2, math.ceil(self._timeout))
            )
        except psycopg.Error as error:
            if not self._missed:
                logger.warning(
                    "cannot listen for submissions (%s), trying again: %s",
                    describe_dsn(self._dsn),
                    error,
                )
            self._missed = True
            return None
        try:
            connection.execute(
                psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(self._channel))
            )
        except psycopg.Error as error:
            logger.warning("cannot listen for submissions, trying again: %s", error)
            connection.close()
            self._missed = True
            return None
        self._connection = connection
        return connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._missed = True
            with contextlib.suppress(psycopg.Error):
                connection.close()
