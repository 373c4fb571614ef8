"""Benchmark of workers over one PostgreSQL journal: sagas per second with 1, 2 and 4 worker
processes, and a step's cost against the server's own commit.

Run: ``.venv/bin/python tests/benchmarks/bench_workers.py`` (add ``--quick`` for a short run).
Not part of the test suite: it measures, it does not assert. It starts a throwaway PostgreSQL
server (as the tests do, tests/servers.py: loopback, a private port, ``fsync`` on) and measures
everything on it, in this one run:

- workers: ``python -m fsaga worker`` processes (sync, one saga at a time each) over one
  journal. A round queues K sagas of 5 no-op steps with compensations (``journal.submit``, not
  timed), starts N workers, and waits until every saga succeeded; the round's time is the
  server's, from the first saga's creation to the last one's outcome
  (``max(updated_at) - min(created_at)``), so the workers' start-up is not counted. Then the
  workers are stopped (SIGTERM). The round's commits per step are the commit records the
  server wrote to its write-ahead log meanwhile (``pg_walinspect``: every transaction that
  wrote anything, so the claims, creations, steps, outcomes, lease renewals and releases, and
  none of the reads) divided by the K * 5 steps.
- one async worker: the same with a single ``fsaga worker --async --concurrency 4`` process.
- floor: single-row ``INSERT`` + ``COMMIT`` into a table like the journal's entries, from N
  connections at once (threads of this process), for as long as a worker round takes; the
  figure is commits per second, and for one connection the time per commit.

Rounds of the workers and of the floor alternate, so both see the same state of the disk; each
figure is the median of its rounds.

Targets: with one worker, a step costs at most 1.5x the floor's single commit (a step is one
commit: its result is written with the next step's intent; the saga's claim, creation and
outcome are shared by its 5 steps); and sagas per second grow near-linearly with workers up to
4, until the floor with as many connections, the server's disk, is the limit.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fsaga import Saga, step
from fsaga.durable import SagaDefinitions

STEPS: Final = 5
SCHEMA: Final = "bench"
HERE: Final = Path(__file__).resolve().parent
TESTS: Final = HERE.parent
WORKERS: Final = (1, 2, 4)


def noop() -> None:
    return None


def undo(_result: object) -> None:
    return None


definitions = SagaDefinitions()


@definitions.saga("five")
def five_steps(_input: object) -> Saga[object]:
    """5 no-op steps, each with a compensation (none runs: the sagas succeed)."""
    saga: Saga[object] = step(noop, undo, name="s0")
    for index in range(1, STEPS):
        saga = saga.then(step(noop, undo, name=f"s{index}"))
    return saga


@dataclass(frozen=True, slots=True)
class Round:
    """What one round of workers measured."""

    seconds: float
    sagas: int
    commits: int

    @property
    def per_second(self) -> float:
        return self.sagas / self.seconds

    @property
    def per_step(self) -> float:
        return self.seconds / (self.sagas * STEPS)

    @property
    def commits_per_step(self) -> float:
        return self.commits / (self.sagas * STEPS)


class Bench:
    """The server, the journal's schema, and the rounds run on them."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        from fsaga.journal import JsonCodec, PostgresJournal

        self.dsn = dsn
        PostgresJournal.migrate(dsn, schema=SCHEMA)
        self.journal = PostgresJournal(dsn, schema=SCHEMA)
        self.input = JsonCodec().encode(None)
        self.connection = psycopg.connect(dsn, autocommit=True)
        self.connection.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        self.connection.execute(
            'CREATE TABLE IF NOT EXISTS floor (saga_id text COLLATE "C" NOT NULL,'
            " seq bigint NOT NULL, kind text NOT NULL, path text NOT NULL,"
            " attempt bigint NOT NULL, payload bytea, PRIMARY KEY (saga_id, seq))"
        )
        self.rounds = 0
        self.floor_rows = 0

    def value(self, query: str, *parameters: object) -> Any:
        row = self.connection.execute(query, parameters).fetchone()
        assert row is not None
        return row[0]

    def commits_since(self, start: str) -> int:
        """The commit records written to the write-ahead log since `start` (an LSN)."""
        return int(
            self.value(
                "SELECT coalesce(sum(count), 0) FROM pg_get_wal_stats(%s::pg_lsn,"
                ' pg_current_wal_lsn(), per_record => true) WHERE "resource_manager/record_type"'
                " = 'Transaction/COMMIT'",
                start,
            )
        )

    @contextmanager
    def workers(self, count: int, *options: str) -> Iterator[None]:
        """`count` worker processes, stopped with SIGTERM (and waited for) on exit."""
        processes = [
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "fsaga", "worker", "--dsn", self.dsn),
                    *("--schema", SCHEMA, "--definitions", "bench_workers:definitions"),
                    *("--owner", f"bench-{self.rounds}-{number}", "--ttl", "60", "--poll", "30"),
                    *options,
                ],
                cwd=HERE,
                env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for number in range(count)
        ]
        try:
            yield
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                if process.wait(timeout=120) != 0:
                    raise RuntimeError(f"a worker exited with {process.returncode}")

    def workers_round(self, count: int, sagas: int, *options: str) -> Round:
        self.rounds += 1
        prefix = f"r{self.rounds}-"
        for number in range(sagas):
            assert self.journal.submit(f"{prefix}{number}", "five", self.input)
        start = str(self.value("SELECT pg_current_wal_lsn()"))
        with self.workers(count, *options):
            while (
                self.value(
                    f"SELECT count(*) FROM {SCHEMA}.sagas WHERE saga_id LIKE %s"
                    " AND status = 'succeeded'",
                    prefix + "%",
                )
                < sagas
            ):
                time.sleep(0.02)
        seconds = float(
            self.value(
                f"SELECT max(updated_at) - min(created_at) FROM {SCHEMA}.sagas"
                " WHERE saga_id LIKE %s",
                prefix + "%",
            )
        )
        return Round(seconds, sagas, self.commits_since(start))

    def floor_round(self, connections: int, seconds: float) -> float:
        """Single-row commits per second from `connections` connections at once."""
        import psycopg

        counts = [0] * connections
        ready = threading.Barrier(connections + 1)
        finish = threading.Event()
        first = self.floor_rows
        self.floor_rows += 1

        def commit(index: int) -> None:
            with psycopg.connect(self.dsn, autocommit=True) as connection:
                ready.wait()
                seq = 0
                while not finish.is_set():
                    seq += 1
                    with connection.transaction():
                        connection.execute(
                            "INSERT INTO floor (saga_id, seq, kind, path, attempt, payload)"
                            " VALUES (%s, %s, 'intent', 's0', 1, NULL)",
                            (f"floor-{first}-{index}", seq),
                        )
                    counts[index] = seq

        threads = [threading.Thread(target=commit, args=(index,)) for index in range(connections)]
        for thread in threads:
            thread.start()
        ready.wait()
        began = time.perf_counter()
        time.sleep(seconds)
        finish.set()
        for thread in threads:
            thread.join()
        return sum(counts) / (time.perf_counter() - began)

    def close(self) -> None:
        self.journal.close()
        self.connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer sagas and rounds")
    args = parser.parse_args(argv)
    sagas, rounds = (100, 2) if args.quick else (300, 3)
    sys.path.insert(0, str(TESTS))
    from servers import postgres_server

    with postgres_server() as server:
        bench = Bench(server.dsn)
        version = bench.value("SHOW server_version")
        print(
            f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores;"
            f" PostgreSQL {version} on 127.0.0.1, fsync on; {rounds} rounds of {sagas} sagas"
            f" of {STEPS} steps"
        )
        cases: list[tuple[str, int, tuple[str, ...]]] = [
            (f"{count} worker{'s' if count > 1 else ''}", count, ()) for count in WORKERS
        ]
        cases.append(("1 async worker, concurrency 4", 1, ("--async", "--concurrency", "4")))
        measured: dict[str, list[Round]] = {name: [] for name, _, _ in cases}
        floors: dict[int, list[float]] = {count: [] for count in WORKERS}
        try:
            for _ in range(rounds):
                for name, count, options in cases:
                    measured[name].append(bench.workers_round(count, sagas, *options))
                    connections = 4 if options else count
                    floors[connections].append(bench.floor_round(connections, 2.0))
        finally:
            bench.close()
    floor_one = statistics.median(floors[1])
    print(f"\nfloor: one connection {1e3 / floor_one:.2f} ms per commit ({floor_one:.0f}/s)")
    print(
        "\n| workers | sagas/s | vs 1 worker | floor commits/s (as many connections) |"
        " ms per step | per step vs one commit | commits per step |"
    )
    print("|---|---|---|---|---|---|---|")
    single = statistics.median(r.per_second for r in measured[cases[0][0]])
    for name, count, options in cases:
        found = measured[name]
        per_second = statistics.median(r.per_second for r in found)
        per_step = statistics.median(r.per_step for r in found)
        floor = statistics.median(floors[4 if options else count])
        ratio = per_step * floor_one if count == 1 and not options else float("nan")
        print(
            f"| {name} | {per_second:.0f} | {per_second / single:.2f}x | {floor:.0f} |"
            f" {per_step * 1e3:.2f} | {'' if ratio != ratio else f'{ratio:.2f}x'} |"
            f" {statistics.median(r.commits_per_step for r in found):.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
