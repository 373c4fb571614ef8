"""Saga definitions for the chaos test (tests/test_worker_chaos.py), run by ``fsaga worker``
processes that the test kills and restarts.

Every run of an action or a compensation appends a row to an effect log outside the journal
(the table ``effects`` in the schema ``FSAGA_CHAOS_LOG_SCHEMA`` of the database
``FSAGA_CHAOS_DSN``): saga id, step path, kind, attempt, the worker that ran it
(``FSAGA_CHAOS_OWNER``), a monotonic id, and the lease of the saga as the journal holds it at
that moment (read from the journal's ``sagas`` table in ``FSAGA_CHAOS_JOURNAL_SCHEMA``, in the
same statement). An action returns ``{"log": id}``, so the journal records which run of it
completed the step.

The saga ``mix`` builds one of five shapes from its input: a chain of three steps, a `par` of
two then a third, a step that fails twice before it succeeds (retries), a chain whose last step
always fails (the others are compensated), and a failing saga whose compensation fails once
before it succeeds. Some actions are idempotent (a run cut off by a kill runs again).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import psycopg
import psycopg.sql

from fsaga import Retry, Saga, current_context, par, step
from fsaga.durable import SagaDefinitions

SHAPES = ("chain", "par", "retry", "fail", "compfail")

definitions = SagaDefinitions()
_local = threading.local()
_QUICK = Retry(3, delay=0.01, jitter=0.0)


class Declined(Exception):
    """A step that fails."""


def _connection() -> psycopg.Connection[tuple[Any, ...]]:
    connection: psycopg.Connection[tuple[Any, ...]] | None = getattr(_local, "connection", None)
    if connection is None or connection.closed or connection.broken:
        connection = psycopg.connect(os.environ["FSAGA_CHAOS_DSN"], autocommit=True)
        _local.connection = connection
    return connection


def log(kind: str) -> int:
    """Append this run of an effect to the effect log; its id."""
    context = current_context()
    statement = psycopg.sql.SQL(
        "INSERT INTO {log}.effects (saga_id, path, kind, attempt, owner, lease_owner, lease_live)"
        " SELECT %(saga_id)s, %(path)s, %(kind)s, %(attempt)s, %(owner)s, s.lease_owner,"
        " coalesce(s.lease_expires_at > extract(epoch FROM clock_timestamp()), false)"
        " FROM (SELECT 1) AS one LEFT JOIN {journal}.sagas AS s ON s.saga_id = %(saga_id)s"
        " RETURNING id"
    ).format(
        log=psycopg.sql.Identifier(os.environ["FSAGA_CHAOS_LOG_SCHEMA"]),
        journal=psycopg.sql.Identifier(os.environ["FSAGA_CHAOS_JOURNAL_SCHEMA"]),
    )
    parameters = {
        "saga_id": context.saga_id,
        "path": context.path,
        "kind": kind,
        "attempt": context.attempt,
        "owner": os.environ["FSAGA_CHAOS_OWNER"],
    }
    try:
        row = _connection().execute(statement, parameters).fetchone()
    except psycopg.Error:
        _local.connection = None
        raise
    assert row is not None
    return int(row[0])


def act(fails: bool = False, *, failures: int = 0) -> object:
    logged = log("action")
    if fails or current_context().attempt <= failures:
        raise Declined(f"declined at attempt {current_context().attempt}")
    return {"log": logged}


def undo(failures: int = 0) -> None:
    log("compensation")
    if current_context().attempt <= failures:
        raise Declined("compensation declined")


def _step(
    name: str,
    *,
    fails: bool = False,
    failures: int = 0,
    idempotent: bool = False,
    undo_failures: int = 0,
) -> Saga[object]:
    return step(
        lambda: act(fails, failures=failures),
        lambda _: undo(undo_failures),
        name=name,
        retry=_QUICK if failures else None,
        compensation_retry=_QUICK if undo_failures else None,
        idempotent=idempotent,
    )


@definitions.saga("mix")
def mix(shape: str) -> Saga[object]:
    match shape:
        case "chain":
            return _step("a", idempotent=True).then(_step("b")).then(_step("c"))
        case "par":
            return par(_step("a"), _step("b", idempotent=True)).then(_step("c"))
        case "retry":
            return _step("a").then(_step("b", failures=2)).then(_step("c", idempotent=True))
        case "fail":
            return _step("a", idempotent=True).then(_step("b")).then(_step("c", fails=True))
        case "compfail":
            return _step("a", undo_failures=1).then(_step("b", fails=True))
        case _:
            raise ValueError(f"no shape {shape!r}")
