"""PostgreSQL journals for the tests: each in a schema of its own on the session's throwaway
server (the `postgres` fixture, tests/servers.py), so that tests never see each other's sagas.

A schema costs a migration (a few milliseconds); tests that open many journals (the hypothesis
properties) reuse one and `clear` it between examples instead.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator

import psycopg
from servers import PostgresServer

from fsaga.journal import PostgresJournal

__all__ = ["clear", "fresh_schema", "new_journal", "raw", "rows", "spec"]

_numbers = itertools.count()


def fresh_schema() -> str:
    """A schema name no test used yet on this server."""
    return f"journal_{os.getpid()}_{next(_numbers)}"


def new_journal(
    server: PostgresServer,
    *,
    clock: Callable[[], float] | None = None,
    schema: str | None = None,
    **options: float,
) -> PostgresJournal:
    """A journal in a new schema (or `schema`, migrated if it is new)."""
    schema = fresh_schema() if schema is None else schema
    PostgresJournal.migrate(server.dsn, schema=schema)
    journal = PostgresJournal(server.dsn, schema=schema, clock=clock, **options)  # type: ignore[arg-type]
    # The pool makes its first connection in a thread of its own, and draws a random number
    # for it: a hypothesis property would take that for randomness in its strategies. Waiting
    # for that connection here leaves the pool quiet once the test starts drawing.
    journal.integrity_check()
    return journal


@contextlib.contextmanager
def raw(server: PostgresServer) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain connection of the test's own, in autocommit mode."""
    with psycopg.connect(server.dsn, autocommit=True) as connection:
        yield connection


def clear(server: PostgresServer, schema: str) -> None:
    """Delete every saga, entry and submission of the journal in `schema`."""
    with raw(server) as connection:
        connection.execute(f'TRUNCATE "{schema}".entries, "{schema}".sagas, "{schema}".submissions')


def rows(server: PostgresServer, schema: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of the journal in `schema`, read by a connection of its own."""
    with raw(server) as connection:
        return {
            table: connection.execute(f'SELECT * FROM "{schema}".{table} ORDER BY 1, 2').fetchall()
            for table in ("entries", "sagas", "schema_version", "submissions")
        }


def spec(server: PostgresServer, schema: str) -> str:
    """How a subprocess names the journal in `schema`: ``postgres:SCHEMA:DSN``."""
    return f"postgres:{schema}:{server.dsn}"
