"""Chaos: four ``fsaga worker`` processes drive 300 submitted sagas over one PostgreSQL journal
while the test SIGKILLs workers at random moments (and starts new ones), and restarts the
server once mid-run. Then it checks, from the journal and from the effect log the sagas' effects
append to (tests/chaos_sagas.py), what docs/concepts.md#rule-11 and docs/concepts.md#rule-3
promise across machines:

- every saga has exactly one recorded outcome, and nothing is left queued or running;
- no completed step ran again: an action's effect logged more than once is allowed only while
  no run of it was recorded as completed (a run cut off by a kill; at least once for effects in
  flight), never after the run whose result the journal recorded;
- nothing completed is left uncompensated unless the outcome reports it;
- no two workers drove a saga at once: every effect ran while its worker held the saga's live
  lease (the effect log reads the lease in the statement that logs the effect), and the
  workers' effects on one saga never interleave.

The kills and the restart happen when the count of finished sagas reaches thresholds drawn
from a seeded generator; every wait is bounded.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO

import chaos_sagas
import psycopg
import pytest
from servers import PostgresServer

from fsaga.journal import JsonCodec, PostgresJournal

TESTS = Path(__file__).parent
SAGAS = 300
WORKERS = 4
KILLS = 6
SEED = 2026
TTL = 3.0
DEADLINE = 240.0
"""A failure bound for the whole run, in seconds (it takes well under a minute)."""
JOURNAL = "chaos_journal"
LOG = "chaos_log"
codec = JsonCodec()


def connect(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


class Workers:
    """The worker processes: sync ones and ``--async`` ones, alternately."""

    def __init__(self, dsn: str, folder: Path) -> None:
        self.dsn = dsn
        self.folder = folder
        self.running: dict[str, subprocess.Popen[str]] = {}
        self.logs: list[TextIO] = []
        self._numbers = itertools.count()

    def start(self, slot: int) -> str:
        owner = f"w{slot}-{next(self._numbers)}"
        environment = {
            **os.environ,
            "FSAGA_CHAOS_DSN": self.dsn,
            "FSAGA_CHAOS_OWNER": owner,
            "FSAGA_CHAOS_LOG_SCHEMA": LOG,
            "FSAGA_CHAOS_JOURNAL_SCHEMA": JOURNAL,
        }
        output = (self.folder / f"{owner}.log").open("w")
        self.logs.append(output)
        mode = ["--async", "--concurrency", "4"] if slot % 2 else []
        self.running[owner] = subprocess.Popen(
            [
                *(sys.executable, "-m", "fsaga", "worker", "--dsn", self.dsn),
                *("--schema", JOURNAL, "--definitions", "chaos_sagas:definitions"),
                *("--owner", owner, "--ttl", str(TTL), "--poll", "0.5", "--grace", "5"),
                *mode,
            ],
            cwd=TESTS,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return owner

    def kill(self, owner: str) -> None:
        process = self.running.pop(owner)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def stop_all(self) -> dict[str, int | None]:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for owner, process in self.running.items():
            try:
                codes[owner] = process.wait(timeout=60)
            except subprocess.TimeoutExpired:  # pragma: no cover - a failed test
                process.kill()
                codes[owner] = None
        for output in self.logs:
            output.close()
        return codes


def finished_count(dsn: str) -> int | None:
    """How many sagas finished (``None`` while the server cannot be reached)."""
    try:
        with connect(dsn) as connection:
            row = connection.execute(
                f"SELECT count(*) FROM {JOURNAL}.sagas WHERE status <> 'running'"
            ).fetchone()
    except psycopg.OperationalError:
        return None
    assert row is not None
    return int(row[0])


@pytest.fixture
def chaos_dsn(postgres: PostgresServer) -> str:
    with connect(postgres.dsn) as connection:
        connection.execute("DROP DATABASE IF EXISTS chaos WITH (FORCE)")
        connection.execute("CREATE DATABASE chaos")
    dsn = postgres.dsn_for("chaos")
    PostgresJournal.migrate(dsn, schema=JOURNAL)
    with connect(dsn) as connection:
        connection.execute(f"CREATE SCHEMA {LOG}")
        connection.execute(
            f"""CREATE TABLE {LOG}.effects (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                saga_id text NOT NULL, path text NOT NULL, kind text NOT NULL,
                attempt integer NOT NULL, owner text NOT NULL,
                lease_owner text, lease_live boolean NOT NULL
            )"""
        )
    return dsn


def test_workers_killed_at_random_and_a_server_restart_keep_every_promise(
    postgres: PostgresServer, chaos_dsn: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    shapes = {f"saga-{n:03d}": rng.choice(chaos_sagas.SHAPES) for n in range(SAGAS)}
    with PostgresJournal(chaos_dsn, schema=JOURNAL) as journal:
        for saga_id, shape in shapes.items():
            assert journal.submit(saga_id, "mix", codec.encode(shape))
    kill_at = sorted(rng.sample(range(10, SAGAS - 20), KILLS))
    restart_at = SAGAS // 2
    workers = Workers(chaos_dsn, tmp_path)
    slots = {workers.start(slot): slot for slot in range(WORKERS)}
    killed: list[str] = []
    restarted = False
    deadline = time.monotonic() + DEADLINE
    poll = threading.Event()
    try:
        while True:
            assert time.monotonic() < deadline, f"not finished in time; killed {killed}"
            done = finished_count(chaos_dsn)
            if done is None:
                poll.wait(0.1)
                continue
            if done == SAGAS:
                break
            if kill_at and done >= kill_at[0]:
                kill_at.pop(0)
                victim = rng.choice(sorted(workers.running))
                workers.kill(victim)
                killed.append(victim)
                slot = slots.pop(victim)
                slots[workers.start(slot)] = slot
            if not restarted and done >= restart_at:
                restarted = True
                postgres.restart()
            poll.wait(0.1)
    finally:
        codes = workers.stop_all()
    assert len(killed) == KILLS, killed
    assert restarted
    assert set(codes.values()) == {0}, codes
    check(chaos_dsn, shapes)


def check(dsn: str, shapes: dict[str, str]) -> None:
    with PostgresJournal(dsn, schema=JOURNAL) as journal:
        assert journal.integrity_check() == ["ok"]
        assert journal.pending() == []
        records = {record.saga_id: record for record in journal.sagas()}
        entries = {saga_id: journal.entries(saga_id) for saga_id in records}
    with connect(dsn) as connection:
        rows = connection.execute(
            f"SELECT id, saga_id, path, kind, attempt, owner, lease_owner, lease_live"
            f" FROM {LOG}.effects ORDER BY id"
        ).fetchall()
    # Exactly one outcome each.
    assert sorted(records) == sorted(shapes)
    statuses = {record.status for record in records.values()}
    assert statuses <= {"succeeded", "failed", "partially_failed"}, statuses
    effects: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        effects[row[1]].append(row)
    taken_over = {saga_id for saga_id, rows in effects.items() if len({r[5] for r in rows}) > 1}
    recovered = {saga_id for saga_id, record in records.items() if record.recovery_attempts}
    # The kills hit workers in the middle of sagas, which others took over and recovered.
    assert taken_over or recovered, "the chaos never cut a saga short"
    for saga_id, record in records.items():
        check_saga(
            saga_id,
            shapes[saga_id],
            record.status,
            record.outcome,
            entries[saga_id],
            effects[saga_id],
        )


def decoded(payload: bytes | None) -> dict[str, Any]:
    assert payload is not None
    document = codec.decode(payload)
    assert isinstance(document, dict)
    return document


def check_saga(
    saga_id: str,
    shape: str,
    status: str,
    outcome: bytes | None,
    timeline: list[Any],
    effects: list[tuple[Any, ...]],
) -> None:
    where = f"saga {saga_id} ({shape}, {status})"
    # One driver at a time: every effect ran under its worker's live lease, and the effects of
    # two workers never interleave.
    for row in effects:
        assert row[7], f"{where}: effect {row} ran after its worker's lease ran out"
        assert row[6] == row[5], f"{where}: effect {row} ran under another worker's lease"
    owners = [row[5] for row in effects]
    segments = [owner for owner, _ in itertools.groupby(owners)]
    assert len(segments) == len(set(segments)), f"{where}: workers interleave: {segments}"
    # No completed step ran again: nothing after the run the journal recorded as completing it.
    completed: dict[str, int] = {}
    for entry in timeline:
        if entry.kind == "completed":
            assert entry.path not in completed, f"{where}: {entry.path} completed twice"
            completed[entry.path] = decoded(entry.payload)["log"]
    for row in effects:
        if row[3] == "action" and row[2] in completed:
            assert row[0] <= completed[row[2]], (
                f"{where}: action {row[2]} ran again (log {row[0]}) after the run recorded as "
                f"completing it (log {completed[row[2]]})"
            )
    compensated_runs = {row[2] for row in effects if row[3] == "compensation"}
    assert outcome is not None
    document = decoded(outcome)
    if status == "succeeded":
        assert not compensated_runs, f"{where}: compensations ran: {compensated_runs}"
        return
    # Nothing completed is left uncompensated unless the outcome reports it.
    reported = set(document["compensated"])
    if document["kind"] == "partial_failure":
        reported |= {failed[0] for failed in document["failed"]}
        reported |= set(document["skipped"]) | set(document["unresolved"])
    missing = set(completed) - reported
    assert not missing, f"{where}: completed, not compensated nor reported: {missing}"
    not_run = set(document["compensated"]) - compensated_runs
    assert not not_run, f"{where}: reported compensated, never ran: {not_run}"
    recorded = {entry.path for entry in timeline if entry.kind == "compensated"}
    assert recorded == set(document["compensated"]), where
