"""Benchmark of durable runs: the cost of a step recorded in a `SqliteJournal`, against SQLite.

Run: ``.venv/bin/python tests/benchmarks/bench_durable.py`` (add ``--quick`` for a short run).
Not part of the test suite: it measures, it does not assert. Every figure is measured in this one
process, on files in the system's temporary directory (so on the same disk):

- durable: ``DurableSagas.start`` of a 10-step saga of no-op effects, started afresh N times over
  one `SqliteJournal`; the figure is the time of the N runs divided by N * 10 steps;
- floor: a loop of single-row transactions (``BEGIN IMMEDIATE``, one ``INSERT`` into a table like
  the journal's entries, ``COMMIT``) on its own file, with the journal's pragmas (WAL, the same
  ``synchronous``, ``busy_timeout``, ``foreign_keys``); the figure is the time per transaction;
- floor journal: the same durable runs over a journal whose every write is one floor
  transaction and which reads nothing, on a file of its own: what the runs would cost with
  the cheapest journal there could be. It splits the durable figure in two: durable / floor
  journal is what the journal costs beyond the floor's commits, floor journal / floor what the
  rest of a run costs (its 1.1 commits per step, and the engine between them).

Rounds of the three alternate, so all see the same state of the disk; each figure is the best
round (least noise), the median is shown beside it. All run under ``synchronous=FULL`` (a commit
waits for the disk: what a durable run promises by default) and ``synchronous=NORMAL``.

Target: a durable step costs at most 1.3x the floor's transaction, with ``synchronous=FULL`` and
with ``NORMAL``. A step needs one commit (its result is written with the next step's intent),
plus the run's share of the commits that create the saga and write its outcome: 1.1 commits.
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from fsaga import Saga, step
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.journal import Entry, Journal, SqliteJournal
from fsaga.journal.records import FinishedStatus, SagaRecord, SagaStatus
from fsaga.journal.sqlite import Synchronous

STEPS: Final = 10
TARGET: Final = 1.3
BUSY_TIMEOUT: Final = 5.0  # SqliteJournal's default, in seconds
MODES: Final[tuple[Synchronous, ...]] = ("FULL", "NORMAL")


def noop() -> None:
    return None


def undo(_result: object) -> None:
    return None


def ten_steps(_input: object) -> Saga[object]:
    saga: Saga[object] = step(noop, undo, name="s0")
    for index in range(1, STEPS):
        saga = saga.then(step(noop, undo, name=f"s{index}"))
    return saga


DEFINITIONS = SagaDefinitions()
DEFINITIONS.saga("ten")(ten_steps)


class CountingJournal(Journal):
    """`journal`, counting its write transactions (commits) by method."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.commits: dict[str, int] = {}

    def _count(self, method: str) -> None:
        self.commits[method] = self.commits.get(method, 0) + 1

    def create(
        self, saga_id: str, name: str, version: int, input: bytes, *, entries: Sequence[Entry] = ()
    ) -> tuple[SagaRecord, bool]:
        self._count("create")
        return self.journal.create(saga_id, name, version, input, entries=entries)

    def append(self, saga_id: str, entries: Sequence[Entry]) -> None:
        self._count("append")
        self.journal.append(saga_id, entries)

    def entries(self, saga_id: str) -> list[Entry]:
        return self.journal.entries(saga_id)

    def finish(
        self,
        saga_id: str,
        status: FinishedStatus,
        outcome: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> bool:
        self._count("finish")
        return self.journal.finish(saga_id, status, outcome, entries=entries)

    def get(self, saga_id: str) -> SagaRecord | None:
        return self.journal.get(saga_id)

    def sagas(self, status: SagaStatus | None = None) -> list[SagaRecord]:
        return self.journal.sagas(status)

    def claim_for_recovery(
        self, saga_id: str, *, max_attempts: int, stale_before: float | None = None
    ) -> bool:
        self._count("claim_for_recovery")
        return self.journal.claim_for_recovery(
            saga_id, max_attempts=max_attempts, stale_before=stale_before
        )

    def record_recovery_error(self, saga_id: str, error: bytes) -> bool:
        self._count("record_recovery_error")
        return self.journal.record_recovery_error(saga_id, error)

    def release(self, saga_id: str) -> SagaRecord:
        self._count("release")
        return self.journal.release(saga_id)

    def close(self) -> None:
        self.journal.close()


class Durable:
    """N durable runs of the 10-step saga per round, each under a new saga id."""

    def __init__(self, path: Path, synchronous: Synchronous) -> None:
        self.journal: Journal = SqliteJournal(
            path, synchronous=synchronous, busy_timeout=BUSY_TIMEOUT
        )
        self.runs = DurableSagas(self.journal, DEFINITIONS)
        self.started = 0

    def commits_per_run(self) -> dict[str, int]:
        counting = CountingJournal(self.journal)
        DurableSagas(counting, DEFINITIONS).start("ten", None, saga_id="counted")
        return counting.commits

    def round(self, runs: int) -> float:
        """Seconds per step."""
        start = self.runs.start
        first = self.started
        self.started += runs
        began = time.perf_counter()
        for number in range(first, first + runs):
            start("ten", None, saga_id=f"run-{number}")
        return (time.perf_counter() - began) / (runs * STEPS)

    def close(self) -> None:
        self.journal.close()


class Floor:
    """Single-row transactions with the journal's pragmas: what any commit costs on this disk."""

    def __init__(self, path: Path, synchronous: Synchronous) -> None:
        self.connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        db = self.connection
        db.execute(f"PRAGMA busy_timeout = {round(BUSY_TIMEOUT * 1000)}")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        assert str(mode).lower() == "wal", mode
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(
            "CREATE TABLE entries (saga_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,"
            " path TEXT NOT NULL, attempt INTEGER NOT NULL, payload BLOB,"
            " PRIMARY KEY (saga_id, seq))"
        )
        self.inserted = 0

    def round(self, transactions: int) -> float:
        """Seconds per transaction."""
        execute = self.connection.execute
        first = self.inserted + 1
        self.inserted += transactions
        began = time.perf_counter()
        for seq in range(first, first + transactions):
            execute("BEGIN IMMEDIATE")
            execute(
                "INSERT INTO entries (saga_id, seq, kind, path, attempt, payload)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                ("floor", seq, "intent", "s0", 1, None),
            )
            execute("COMMIT")
        return (time.perf_counter() - began) / transactions

    def close(self) -> None:
        self.connection.close()


class FloorJournal(Journal):
    """A journal whose every write is one floor transaction (one row, whatever the batch) and
    which reads nothing: enough for `DurableSagas.start` of new ids, and nothing more."""

    def __init__(self, floor: Floor) -> None:
        self.floor = floor

    def create(
        self, saga_id: str, name: str, version: int, input: bytes, *, entries: Sequence[Entry] = ()
    ) -> tuple[SagaRecord, bool]:
        self.floor.round(1)
        return SagaRecord(saga_id, name, version, input, "running", None, 0, 0.0, 0.0), True

    def append(self, saga_id: str, entries: Sequence[Entry]) -> None:
        self.floor.round(1)

    def entries(self, saga_id: str) -> list[Entry]:
        return []

    def finish(
        self,
        saga_id: str,
        status: FinishedStatus,
        outcome: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> bool:
        self.floor.round(1)
        return True

    def get(self, saga_id: str) -> SagaRecord | None:
        return None

    def sagas(self, status: SagaStatus | None = None) -> list[SagaRecord]:
        return []

    def claim_for_recovery(
        self, saga_id: str, *, max_attempts: int, stale_before: float | None = None
    ) -> bool:
        raise NotImplementedError("new runs only")

    def record_recovery_error(self, saga_id: str, error: bytes) -> bool:
        raise NotImplementedError("new runs only")

    def release(self, saga_id: str) -> SagaRecord:
        raise NotImplementedError("new runs only")

    def close(self) -> None:
        self.floor.close()


class FloorRuns(Durable):
    """N durable runs of the 10-step saga per round over a `FloorJournal`."""

    def __init__(self, path: Path, synchronous: Synchronous) -> None:
        self.journal: Journal = FloorJournal(Floor(path, synchronous))
        self.runs = DurableSagas(self.journal, DEFINITIONS)
        self.started = 0


def alternate(rounds: int, *measures: Callable[[], float]) -> list[list[float]]:
    """Each measure's figure in every round, the measures taken in turn within a round."""
    times: list[list[float]] = [[] for _ in measures]
    for _ in range(rounds):
        for figures, measure in zip(times, measures, strict=True):
            figures.append(measure())
    return times


def compare(folder: Path, synchronous: Synchronous, runs: int, rounds: int) -> None:
    durable = Durable(folder / f"durable-{synchronous.lower()}.db", synchronous)
    floor = Floor(folder / f"floor-{synchronous.lower()}.db", synchronous)
    floor_runs = FloorRuns(folder / f"floor-journal-{synchronous.lower()}.db", synchronous)
    try:
        commits = durable.commits_per_run()
        durable.round(max(1, runs // 10))  # warm up: caches, the WAL file
        floor.round(max(1, runs))
        floor_runs.round(max(1, runs // 10))
        durable_times, floor_times, floor_run_times = alternate(
            rounds,
            lambda: durable.round(runs),
            lambda: floor.round(runs * STEPS),
            lambda: floor_runs.round(runs),
        )
    finally:
        durable.close()
        floor.close()
        floor_runs.close()
    ours, theirs, ideal = min(durable_times), min(floor_times), min(floor_run_times)
    ratio = ours / theirs
    total = sum(commits.values())
    verdict = "meets" if round(ratio, 2) <= TARGET else "MISSES"  # as printed
    print(
        f"synchronous={synchronous:<6} durable {ours * 1e6:7.1f} us/step "
        f"(median {statistics.median(durable_times) * 1e6:7.1f})   "
        f"floor {theirs * 1e6:7.1f} us/txn (median {statistics.median(floor_times) * 1e6:7.1f})   "
        f"ratio {ratio:4.2f}x  (target <= {TARGET}x: {verdict})"
    )
    per_commit = ours * STEPS / total
    print(
        f"  {total} commits per {STEPS}-step run ({total / STEPS:.1f} per step: "
        + ", ".join(f"{count} {method}" for method, count in commits.items())
        + f"); {per_commit * 1e6:.1f} us per commit, {per_commit / theirs:4.2f}x the floor's"
    )
    print(
        f"  floor journal {ideal * 1e6:7.1f} us/step "
        f"(median {statistics.median(floor_run_times) * 1e6:7.1f}): {ideal / theirs:4.2f}x the "
        f"floor without the journal's own cost; durable is {ours / ideal:4.2f}x it"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer runs and rounds")
    args = parser.parse_args(argv)
    runs, rounds = (30, 3) if args.quick else (200, 5)
    temporary = tempfile.gettempdir()
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {sys.platform}; "
        f"SQLite {sqlite3.sqlite_version}; files in {temporary} "
        f"({rounds} rounds of {runs} runs = {runs * STEPS} steps, and {runs * STEPS} transactions)"
    )
    with tempfile.TemporaryDirectory(dir=temporary) as folder:
        for synchronous in MODES:
            compare(Path(folder), synchronous, runs, rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
