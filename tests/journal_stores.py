"""Where a test's durable journal lives: an SQLite file, or a PostgreSQL schema of its own on the
session's throwaway server, opened alike by the test, by the processes it starts, and by the
command line, so that one test body runs on both journals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pg_journals
import pytest
from servers import PostgresServer

from fsaga.journal import PostgresJournal, SqliteJournal

__all__ = ["BACKENDS", "JournalStore", "journal_store"]

BACKENDS = ("sqlite", "postgres")


@dataclass(frozen=True)
class JournalStore:
    """An SQLite file (`path`) or a PostgreSQL schema (`server` and `schema`)."""

    path: Path | None = None
    server: PostgresServer | None = None
    schema: str | None = None

    @property
    def kind(self) -> str:
        return "sqlite" if self.path is not None else "postgres"

    def open(self, *, clock: Callable[[], float] | None = None) -> SqliteJournal | PostgresJournal:
        """Another journal on the store."""
        if self.path is None:
            server, schema = self._schema()
            return PostgresJournal(server.dsn, schema=schema, clock=clock)
        if clock is None:
            return SqliteJournal(self.path)
        return SqliteJournal(self.path, clock=clock)

    @property
    def options(self) -> list[str]:
        """The command-line options naming the journal (``fsaga journal``, the worker)."""
        if self.path is None:
            server, schema = self._schema()
            return ["--dsn", server.dsn, "--schema", schema]
        return ["--db", str(self.path)]

    @property
    def spec(self) -> str:
        """How a ``python -c`` script names it: ``sqlite:PATH`` or ``postgres:SCHEMA:DSN``."""
        if self.path is None:
            return pg_journals.spec(*self._schema())
        return f"sqlite:{self.path}"

    def _schema(self) -> tuple[PostgresServer, str]:
        if self.server is None or self.schema is None:
            raise AssertionError("a store is a file or a schema")
        return self.server, self.schema


def journal_store(kind: str, request: pytest.FixtureRequest, folder: Path) -> JournalStore:
    """A new store of `kind`: a file in `folder` (not created yet), or a migrated schema."""
    if kind == "sqlite":
        return JournalStore(path=folder / "journal.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    schema = pg_journals.fresh_schema()
    PostgresJournal.migrate(server.dsn, schema=schema)
    return JournalStore(server=server, schema=schema)
