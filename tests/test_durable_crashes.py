"""Durable runs against real files, real databases and real processes.

- A crash matrix: a worker process (tests/durable_worker.py) runs the ``order`` saga on an
  `SqliteJournal` file or a `PostgresJournal` schema and kills itself with SIGKILL at one
  point; a fresh process recovers.
  Effects leave evidence outside the journal (a line per run, with its idempotency key), so
  executions are counted across the crash. A second matrix does the same with the ``parcel``
  saga started by `DurableSagas.start_async`, whose concurrent branches interleave their
  entries and may both be in flight at the crash, recovered by ``recover`` and by
  ``recover_async``.
- Races: two recoverers, and two starts of one id, in threads and in processes.
- A journal write that fails (a commit rolled back), and torn or damaged files (SQLite).

Every test that is not about SQLite's files runs on both journals (the `store` fixture), except
that the matrix of concurrent branches runs on PostgreSQL for two of its crash points (one
forward, one compensating), under both recoveries: the other points exercise the replay, which
is the same over either journal, and each case costs two processes.

The rules of the contract (docs/concepts.md) checked after every recovery:

- rule 12: no step whose ``completed`` entry was in the journal at the crash runs again, nor a
  compensation whose ``compensated`` entry was;
- rule 3: the effect in flight at the crash runs at most once more, with the same idempotency key;
- rule 2: when the saga did not succeed, every completed step with a compensation was compensated
  (or is reported in the outcome);
- rules 11, 13: exactly one outcome is recorded (one `finish` applied, across every process), and a
  later `start` or `recover` returns it without running anything;
- rule 11: what the journal held at the crash is a prefix of what it holds after, and the
  journal's integrity check (``PRAGMA integrity_check``, or `PostgresJournal.integrity_check`)
  is ok.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from durable_worker import (
    COMPENSABLE,
    PARCEL_COMPENSABLE,
    EvidenceJournal,
    Shop,
    describe,
    order_definitions,
    read_evidence,
    worker_definitions,
)
from journal_stores import BACKENDS, JournalStore, journal_store
from test_durable_properties import assert_undone_in_reverse_completion_order

from fsaga import Failure, Outcome, PartialFailure, Success
from fsaga.durable import DurableSagas, SagaBusyError
from fsaga.journal import (
    Entry,
    JournalCorruptError,
    JournalError,
    JsonCodec,
    PostgresJournal,
    SqliteJournal,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("durable_worker.py")
SAGA_ID = "o-1"
ORDER: dict[str, Any] = {"sku": "sku-1", "decline": False}
DECLINED: dict[str, Any] = {"sku": "sku-1", "decline": True}
TIMEOUT = 60.0  # seconds: only ever reached when something hangs

needs_sigkill = pytest.mark.skipif(
    not hasattr(signal, "SIGKILL"), reason="the crashes are SIGKILL, which this platform lacks"
)


# -- helpers -------------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JournalStore:
    """The journal's store: an SQLite file, or a PostgreSQL schema."""
    return journal_store(request.param, request, tmp_path)


def worker_command(command: str, store: JournalStore, evidence: Path) -> list[str]:
    return [sys.executable, str(WORKER), command, *store.options, "--evidence", str(evidence)]


def run_worker(
    command: str, store: JournalStore, evidence: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*worker_command(command, store, evidence), *options],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def worker_result(process: subprocess.CompletedProcess[str]) -> Any:
    assert process.returncode == 0, process.stderr
    assert process.stderr == ""
    return json.loads(process.stdout)


def runs(evidence: Path) -> Counter[str]:
    """How often each effect ran (``"action:create"``, ``"compensation:reserve"``) in every
    process; the outcomes recorded count as ``"outcome"``."""
    return Counter(
        "outcome" if line["kind"] == "outcome" else f"{line['kind']}:{line['path']}"
        for line in read_evidence(evidence)
    )


def effects(evidence: Path) -> dict[str, int]:
    """`runs` without the outcomes."""
    return {key: count for key, count in runs(evidence).items() if key != "outcome"}


def runner(
    store: JournalStore, evidence: Path, *, stale_after: float = 0.0, shop: Shop | None = None
) -> tuple[SqliteJournal | PostgresJournal, DurableSagas]:
    """A journal on `store` and a runner over it that leaves evidence, as a worker's (its
    sagas' actions plain functions)."""
    durable = store.open()
    journal = EvidenceJournal(durable, evidence)
    definitions = worker_definitions(shop if shop is not None else Shop(evidence))
    return durable, DurableSagas(journal, definitions, stale_after=stale_after)


def unfinished_order(store: JournalStore) -> list[Entry]:
    """An ``order`` saga cut off while ``create`` ran, written an hour ago (journal surgery):
    stale for any `stale_after` under an hour. Returns its entries."""
    codec = JsonCodec()
    entries = [
        Entry(1, "intent", "reserve", 1),
        Entry(2, "completed", "reserve", 1, codec.encode("reserve-done")),
        Entry(3, "intent", "create", 1),
    ]
    an_hour_ago = time.time() - 3600
    with store.open(clock=lambda: an_hour_ago) as journal:
        journal.create(SAGA_ID, "order", 1, codec.encode(ORDER), entries=entries)
    return entries


def copy_journal(source: Path, target: Path) -> None:
    """Copy the journal file and its WAL as they are on disk (the WAL holds what was committed
    but not checkpointed: all of it, after a crash)."""
    shutil.copyfile(source, target)
    wal = source.with_name(source.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, target.with_name(target.name + "-wal"))


def assert_one_outcome(evidence: Path) -> None:
    assert runs(evidence)["outcome"] == 1, read_evidence(evidence)


def assert_keys_are_stable(evidence: Path) -> None:
    for line in read_evidence(evidence):
        if line["kind"] != "outcome":
            assert line["key"] == f"{SAGA_ID}/{line['path']}", line


# -- the crash matrix ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CrashCase:
    """One crash point.

    Attributes:
        crash: the worker's ``--crash``.
        declined: whether ``charge`` is declined (the compensation points need a failure).
        in_flight: the effect cut off by the crash (``"action:reserve"``), if any: the last
            entry of the journal it left is that effect's intent.
        runs: how often each effect ran, over both processes.
        compensated: the outcome's compensated steps, or None for a `Success`.
    """

    crash: str
    declined: bool
    in_flight: str | None
    runs: dict[str, int]
    compensated: tuple[str, ...] | None


ONCE_EACH = {"action:reserve": 1, "action:create": 1, "action:charge": 1, "action:notify": 1}
UNDONE = {
    "action:reserve": 1,
    "action:create": 1,
    "action:charge": 1,
    "compensation:create": 1,
    "compensation:reserve": 1,
}

CRASH_MATRIX = {
    # The result of reserve waits to be written with the next intent (one commit per step), so
    # a crash before that write finds reserve in flight: it runs again, same key.
    "before intent": CrashCase(
        "before:intent:create", False, "action:reserve", {**ONCE_EACH, "action:reserve": 2}, None
    ),
    # create's intent is written, its effect never ran: it runs once, in the recovery.
    "after intent": CrashCase("after:intent:create", False, "action:create", ONCE_EACH, None),
    # create ran, its result was never written: it runs again, same key.
    "after effect, before its result": CrashCase(
        "in:action:create", False, "action:create", {**ONCE_EACH, "action:create": 2}, None
    ),
    # charge was declined; its failure waits for the first compensation's intent: charge is
    # in flight, runs again (idempotent), is declined again, and the saga compensates.
    "before compensation intent": CrashCase(
        "before:compensation_intent:create",
        True,
        "action:charge",
        {**UNDONE, "action:charge": 2},
        ("create", "reserve"),
    ),
    # the compensation of create is recorded as started but never ran: it runs once.
    "after compensation intent": CrashCase(
        "after:compensation_intent:create",
        True,
        "compensation:create",
        UNDONE,
        ("create", "reserve"),
    ),
    # the compensation of create ran, its result was never written: it runs again.
    "after compensation, before its result": CrashCase(
        "in:compensation:create",
        True,
        "compensation:create",
        {**UNDONE, "compensation:create": 2},
        ("create", "reserve"),
    ),
    # the outcome is written: the recovery has nothing to do.
    "after outcome": CrashCase("after:finish:-", True, None, UNDONE, ("create", "reserve")),
}


def assert_outcome_matches(outcome: dict[str, Any], compensated: tuple[str, ...] | None) -> None:
    if compensated is None:
        assert outcome == {"type": "Success", "value": "sku-1"}
    else:
        assert outcome["type"] == "Failure", outcome
        assert "card declined" in outcome["error"]
        assert tuple(outcome["compensated"]) == compensated


@needs_sigkill
@pytest.mark.parametrize("case", CRASH_MATRIX.values(), ids=CRASH_MATRIX.keys())
def test_a_saga_killed_at_a_crash_point_is_recovered_by_a_fresh_process(
    tmp_path: Path, store: JournalStore, case: CrashCase
) -> None:
    evidence = tmp_path / "evidence.jsonl"
    options = ["--crash", case.crash, *(["--decline"] if case.declined else [])]

    crashed = run_worker("start", store, evidence, *options)

    assert crashed.returncode == -signal.SIGKILL, (crashed.stdout, crashed.stderr)
    with store.open() as journal:  # what the crash left: read, never written
        at_crash = journal.entries(SAGA_ID)
        record = journal.get(SAGA_ID)
    assert record is not None
    ran_before = runs(evidence)
    if case.in_flight is None:
        assert record.finished
    else:
        assert not record.finished
        kind, path = case.in_flight.split(":")
        last = at_crash[-1]
        assert (last.kind, last.path) == ("intent" if kind == "action" else f"{kind}_intent", path)

    recovered = worker_result(run_worker("recover", store, evidence))

    if case.in_flight is None:
        assert recovered == {}
    else:
        assert_outcome_matches(recovered[SAGA_ID], case.compensated)
    # Rule 12: what was recorded as done is not done again.
    ran_after = runs(evidence) - ran_before
    for entry in at_crash:
        if entry.kind == "completed":
            assert ran_after[f"action:{entry.path}"] == 0, entry
        if entry.kind == "compensated":
            assert ran_after[f"compensation:{entry.path}"] == 0, entry
    # Rules 3 and 12: the effect in flight ran at most once more, with the same key.
    if case.in_flight is not None:
        assert ran_after[case.in_flight] <= 1
    assert_keys_are_stable(evidence)
    assert effects(evidence) == case.runs
    # Rules 11 and 13: one outcome, and it is what a later start or recovery gets, running nothing.
    assert_one_outcome(evidence)
    before_again = read_evidence(evidence)
    journal, durable = runner(store, evidence)
    with journal:
        assert durable.recover() == {}
        again = describe(
            durable.start("order", DECLINED if case.declined else ORDER, saga_id=SAGA_ID)
        )
        after = journal.entries(SAGA_ID)
        record = journal.get(SAGA_ID)
        integrity = journal.integrity_check()
    assert read_evidence(evidence) == before_again
    assert_outcome_matches(again, case.compensated)
    assert record is not None
    assert record.status == ("succeeded" if case.compensated is None else "failed")
    # Rule 11: nothing recorded was lost, and the journal is sound.
    assert after[: len(at_crash)] == at_crash
    assert [entry.seq for entry in after] == list(range(1, len(after) + 1))
    assert integrity == ["ok"]
    # Rule 2: every completed step with a compensation was compensated.
    if case.compensated is not None:
        completed = {entry.path for entry in after if entry.kind == "completed"}
        compensated = {entry.path for entry in after if entry.kind == "compensated"}
        assert completed & set(COMPENSABLE) <= compensated == set(case.compensated)


# -- the crash matrix of concurrent branches ------------------------------------------------------

PARCEL_ONCE = {"action:reserve": 1, "action:charge": 1, "action:ship": 1, "action:notify": 1}
PARCEL_UNDONE = {
    "action:reserve": 1,
    "action:charge": 1,
    "action:ship": 1,
    "compensation:ship": 1,
    "compensation:reserve": 1,
}

# The ``parcel`` saga under `start_async` records reserve, then charge's intent, ship's intent,
# ship's result and charge's result (charge lets ship run first), then notify.
PARCEL_MATRIX = {
    # Both branches' intents are written; neither effect ran: each runs once, in the recovery.
    "both branches in flight": CrashCase(
        "after:intent:ship", False, "action:charge action:ship", PARCEL_ONCE, None
    ),
    # ship ran, charge had not yet: ship runs again (same key), charge once.
    "in the branch that finishes first": CrashCase(
        "in:action:ship",
        False,
        "action:charge action:ship",
        {**PARCEL_ONCE, "action:ship": 2},
        None,
    ),
    # ship finished, its result waiting for the next commit; charge ran: both run again.
    "in the branch that finishes last": CrashCase(
        "in:action:charge",
        False,
        "action:charge action:ship",
        {**PARCEL_ONCE, "action:charge": 2, "action:ship": 2},
        None,
    ),
    # charge was declined after ship finished; both results wait for the first compensation's
    # intent: both run again (charge is declined again), and the saga compensates.
    "before compensation intent": CrashCase(
        "before:compensation_intent:ship",
        True,
        "action:charge action:ship",
        {**PARCEL_UNDONE, "action:charge": 2, "action:ship": 2},
        ("ship", "reserve"),
    ),
    # the compensation of ship is recorded as started but never ran: it runs once.
    "after compensation intent": CrashCase(
        "after:compensation_intent:ship",
        True,
        "compensation:ship",
        PARCEL_UNDONE,
        ("ship", "reserve"),
    ),
}


# On PostgreSQL, one forward and one compensating crash point (see the module docstring).
PARCEL_ON_POSTGRES = ("both branches in flight", "after compensation intent")


@needs_sigkill
@pytest.mark.parametrize("recovery", ["recover", "recover-async"])
@pytest.mark.parametrize(
    ("case", "store"),
    [
        pytest.param(case, backend, id=f"{backend}-{name}")
        for backend in BACKENDS
        for name, case in PARCEL_MATRIX.items()
        if backend == "sqlite" or name in PARCEL_ON_POSTGRES
    ],
    indirect=["store"],
)
def test_concurrent_branches_killed_at_a_crash_point_are_recovered_by_a_fresh_process(
    tmp_path: Path, store: JournalStore, case: CrashCase, recovery: str
) -> None:
    """`start_async` runs the ``parcel`` saga's branches concurrently and dies; a fresh process
    recovers it with `recover` (the actions plain functions: one effect at a time cannot
    follow an interleaved journal, so it replays it under `AsyncInterpreter`) or with
    `recover_async`. Every effect the crash left in flight is settled (contract rule 3)."""
    evidence = tmp_path / "evidence.jsonl"
    options = ["--saga", "parcel", "--crash", case.crash, *(["--decline"] if case.declined else [])]

    crashed = run_worker("start-async", store, evidence, *options)

    assert crashed.returncode == -signal.SIGKILL, (crashed.stdout, crashed.stderr)
    with store.open() as journal:
        at_crash = journal.entries(SAGA_ID)
        record = journal.get(SAGA_ID)
    assert record is not None
    assert not record.finished
    assert case.in_flight is not None
    in_flight = set(case.in_flight.split())
    last = {entry.path: entry for entry in at_crash}
    assert {
        f"{'action' if entry.kind == 'intent' else 'compensation'}:{entry.path}"
        for entry in last.values()
        if entry.kind in ("intent", "compensation_intent")
    } == in_flight
    ran_before = runs(evidence)

    recovered = worker_result(run_worker(recovery, store, evidence))

    assert_outcome_matches(recovered[SAGA_ID], case.compensated)
    ran_after = runs(evidence) - ran_before
    for entry in at_crash:
        if entry.kind == "completed":
            assert ran_after[f"action:{entry.path}"] == 0, entry
        if entry.kind == "compensated":
            assert ran_after[f"compensation:{entry.path}"] == 0, entry
    for effect in in_flight:
        assert ran_after[effect] <= 1, effect
    assert_keys_are_stable(evidence)
    assert effects(evidence) == case.runs
    assert_one_outcome(evidence)
    before_again = read_evidence(evidence)
    journal, durable = runner(store, evidence)
    with journal:
        assert durable.recover() == {}
        again = durable.start("parcel", DECLINED if case.declined else ORDER, saga_id=SAGA_ID)
        after = journal.entries(SAGA_ID)
        assert journal.integrity_check() == ["ok"]
    assert read_evidence(evidence) == before_again
    assert_outcome_matches(describe(again), case.compensated)
    assert after[: len(at_crash)] == at_crash
    assert [entry.seq for entry in after] == list(range(1, len(after) + 1))
    assert_undone_in_reverse_completion_order(after)
    if case.compensated is not None:
        completed = {entry.path for entry in after if entry.kind == "completed"}
        compensated = {entry.path for entry in after if entry.kind == "compensated"}
        assert completed & set(PARCEL_COMPENSABLE) <= compensated == set(case.compensated)


# -- races ---------------------------------------------------------------------------------------

# Long enough that a live run is never taken for abandoned while these tests run; the saga the
# crash left is an hour old.
STALE_AFTER = 60.0
# What recovering `unfinished_order` runs: create, which was in flight, and the rest.
REMAINING = {"action:create": 1, "action:charge": 1, "action:notify": 1, "outcome": 1}


def test_two_threads_recovering_one_journal_run_the_remaining_steps_once(
    tmp_path: Path, store: JournalStore
) -> None:
    evidence = tmp_path / "evidence.jsonl"
    unfinished_order(store)
    barrier = threading.Barrier(2, timeout=TIMEOUT)

    def recover() -> dict[str, Outcome[object] | BaseException]:
        journal, durable = runner(store, evidence, stale_after=STALE_AFTER)
        with journal:
            barrier.wait()
            return durable.recover()

    with ThreadPoolExecutor(2) as pool:
        results = [future.result(TIMEOUT) for future in [pool.submit(recover) for _ in range(2)]]

    # The loser skips the saga (busy), or, if it looked after the winner finished, returns the
    # recorded outcome.
    assert [SAGA_ID] in [list(result) for result in results]
    for result in results:
        assert result in ({}, {SAGA_ID: Success("sku-1")})
    assert runs(evidence) == REMAINING
    assert_keys_are_stable(evidence)


@needs_sigkill
def test_two_processes_recovering_one_journal_run_the_remaining_steps_once(
    tmp_path: Path, store: JournalStore
) -> None:
    evidence = tmp_path / "evidence.jsonl"
    unfinished_order(store)
    command = [
        *worker_command("recover", store, evidence),
        *("--wait", "--stale-after", str(STALE_AFTER)),
    ]

    with released_together(command, command) as processes:
        results = [json.loads(process.communicate(timeout=TIMEOUT)[0]) for process in processes]

    assert [process.returncode for process in processes] == [0, 0]
    assert [SAGA_ID] in [list(result) for result in results]
    for result in results:
        assert result in ({}, {SAGA_ID: {"type": "Success", "value": "sku-1"}})
    assert runs(evidence) == REMAINING
    assert_keys_are_stable(evidence)


@contextmanager
def released_together(*commands: list[str]) -> Iterator[list[subprocess.Popen[str]]]:
    """Start the workers (each with ``--wait``), wait until every one has opened its journal,
    then release them all at once; kill whatever is left when the block ends."""
    processes = [
        subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate()


def test_duplicate_starts_in_threads_run_once_and_the_second_is_busy(
    tmp_path: Path, store: JournalStore
) -> None:
    """With ``stale_after`` > 0 a live run is not taken over: of two starts of one id, one runs
    the saga; the other raises `SagaBusyError` while the first runs (and would return the
    recorded outcome once it finished)."""
    evidence = tmp_path / "evidence.jsonl"
    store.open().close()  # see test_journals_opening_one_new_file_at_once_all_open_it
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    first_start_settled = threading.Event()

    def hold_reserve(path: str) -> None:
        # Keep the winner inside its first step until the other start has its answer.
        if path == "reserve":
            assert first_start_settled.wait(TIMEOUT)

    shop = Shop(evidence, pause=hold_reserve)

    def start() -> Outcome[object] | SagaBusyError:
        journal, durable = runner(store, evidence, stale_after=STALE_AFTER, shop=shop)
        with journal:
            barrier.wait()
            try:
                return durable.start("order", ORDER, saga_id=SAGA_ID)
            except SagaBusyError as error:
                return error
            finally:
                first_start_settled.set()

    with ThreadPoolExecutor(2) as pool:
        results = [future.result(TIMEOUT) for future in [pool.submit(start) for _ in range(2)]]

    assert sorted(type(result).__name__ for result in results) == ["SagaBusyError", "Success"]
    assert Success("sku-1") in results
    assert runs(evidence) == {**ONCE_EACH, "outcome": 1}
    journal, durable = runner(store, evidence, stale_after=STALE_AFTER)
    with journal:
        assert durable.start("order", ORDER, saga_id=SAGA_ID) == Success("sku-1")
    assert runs(evidence) == {**ONCE_EACH, "outcome": 1}


@needs_sigkill
def test_duplicate_starts_in_processes_run_once_and_the_second_is_busy(
    tmp_path: Path, store: JournalStore
) -> None:
    evidence = tmp_path / "evidence.jsonl"
    store.open().close()  # see test_journals_opening_one_new_file_at_once_all_open_it
    command = [
        *worker_command("start", store, evidence),
        *("--wait", "--stale-after", str(STALE_AFTER), "--pause-in", "reserve"),
    ]

    with released_together(command, command) as processes:
        # Each says one thing at once: the winner that it is inside reserve (and waits), the
        # loser its answer.
        said = []
        for process in processes:
            assert process.stdout is not None
            said.append(process.stdout.readline())
        assert said.count("in-effect\n") == 1, said
        winner = processes[said.index("in-effect\n")]
        loser_said = said[1 - said.index("in-effect\n")]
        outcome = winner.communicate("continue\n", timeout=TIMEOUT)[0]

    assert json.loads(loser_said)["type"] == "SagaBusyError"
    assert json.loads(outcome) == {"type": "Success", "value": "sku-1"}
    assert runs(evidence) == {**ONCE_EACH, "outcome": 1}


def test_journals_opening_one_new_file_at_once_all_open_it(tmp_path: Path) -> None:
    """Openers that race to create a new journal file's schema all open it: each reads the
    file's schema version and tables in one transaction, so none sees another's schema half
    made and mistakes the file for another program's database."""
    for attempt in range(20):
        db = tmp_path / f"journal-{attempt}.db"
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def open_it(
            db: Path = db,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                SqliteJournal(db).close()
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []


def test_with_the_default_stale_after_a_duplicate_start_of_a_live_run_is_busy(
    tmp_path: Path, store: JournalStore
) -> None:
    """With ``stale_after=0`` (the default) `start` never takes an unfinished saga over: a
    second start of an id whose first run is still in its first step raises `SagaBusyError`,
    and every step runs once; the first run finishes and records the one outcome."""
    evidence = tmp_path / "evidence.jsonl"
    second: list[BaseException] = []

    def start_again_inside_reserve(path: str) -> None:
        if path == "reserve" and not second:
            journal, durable = runner(store, evidence)
            with journal, pytest.raises(SagaBusyError) as busy:
                durable.start("order", ORDER, saga_id=SAGA_ID)
            second.append(busy.value)

    journal, durable = runner(
        store, evidence, shop=Shop(evidence, pause=start_again_inside_reserve)
    )
    with journal:
        first = durable.start("order", ORDER, saga_id=SAGA_ID)

    assert len(second) == 1
    assert first == Success("sku-1")
    assert runs(evidence) == {**ONCE_EACH, "outcome": 1}
    assert_keys_are_stable(evidence)


# -- a journal write that fails ------------------------------------------------------------------


@dataclass(frozen=True)
class FailedWrite:
    """A journal write that fails once (`JournalError`, nothing written) and what follows.

    Attributes:
        write: the ``(kind, path)`` of an entry the failing write carries; ``("finish", "-")``
            for the outcome's write.
        declined: whether ``charge`` is declined.
        raises: whether `start` raises the error (the run stops; `recover` finishes it) rather
            than returning an outcome.
        outcome: the outcome's ``describe()``, minus the error message.
        runs: how often each effect ran, over the start and the recovery.
    """

    write: tuple[str, str]
    declined: bool
    raises: bool
    outcome: dict[str, Any]
    runs: dict[str, int]


FAILED_WRITES = {
    # The write carrying reserve's result and create's intent fails: nothing of it lands, and
    # nothing runs that the journal did not record, so the run stops and start raises. A
    # recovery finds reserve in flight (its result was never written), runs it again with the
    # same key (it is idempotent), and finishes.
    "intent": FailedWrite(
        ("intent", "create"),
        False,
        True,
        {"type": "Success", "value": "sku-1"},
        {**ONCE_EACH, "action:reserve": 2},
    ),
    # The write carrying charge's failure and create's compensation intent fails: the run
    # stops, no compensation runs unrecorded, and start raises. A recovery finds charge in
    # flight, runs it again (declined again), and compensates create and reserve.
    "compensation intent": FailedWrite(
        ("compensation_intent", "create"),
        True,
        True,
        {"type": "Failure", "compensated": ["create", "reserve"]},
        {**UNDONE, "action:charge": 2},
    ),
    # The outcome is not written: start raises, the saga stays running with notify in flight,
    # and a recovery runs notify again (same key) and records the outcome.
    "outcome": FailedWrite(
        ("finish", "-"),
        False,
        True,
        {"type": "Success", "value": "sku-1"},
        {**ONCE_EACH, "action:notify": 2},
    ),
}


@pytest.mark.parametrize("case", FAILED_WRITES.values(), ids=FAILED_WRITES.keys())
def test_a_journal_write_that_fails_once_loses_nothing(
    tmp_path: Path, store: JournalStore, case: FailedWrite
) -> None:
    evidence = tmp_path / "evidence.jsonl"
    input = DECLINED if case.declined else ORDER
    with store.open() as opened:
        journal = EvidenceJournal(opened, evidence, fail_once=case.write)
        durable = DurableSagas(journal, order_definitions(Shop(evidence)))
        try:
            outcome: Outcome[object] | JournalError = durable.start("order", input, saga_id=SAGA_ID)
        except JournalError as error:
            outcome = error

    if case.raises:
        assert isinstance(outcome, JournalError)
        assert "injected" in str(outcome)
        reopened, durable = runner(store, evidence)
        with reopened:
            record = reopened.get(SAGA_ID)
            assert record is not None
            assert record.status == "running"
            recovered = durable.recover()
        assert list(recovered) == [SAGA_ID]
        outcome_seen = describe(recovered[SAGA_ID])
    else:
        assert isinstance(outcome, Failure | PartialFailure)
        assert "injected" in str(outcome.error) or "card declined" in str(outcome.error)
        outcome_seen = describe(outcome)
    outcome_seen.pop("error", None)
    assert outcome_seen == case.outcome
    assert effects(evidence) == case.runs
    assert_one_outcome(evidence)
    assert_keys_are_stable(evidence)
    with store.open() as reopened:
        entries = reopened.entries(SAGA_ID)
        record = reopened.get(SAGA_ID)
        assert reopened.integrity_check() == ["ok"]
    assert record is not None
    assert record.finished
    # Nothing ran unrecorded: every effect that ran has its intent in the journal.
    intents = {(entry.kind, entry.path) for entry in entries}
    for line in read_evidence(evidence):
        if line["kind"] == "action":
            assert ("intent", line["path"]) in intents, line
        elif line["kind"] == "compensation":
            assert ("compensation_intent", line["path"]) in intents, line
    # Every completed step was compensated, or the outcome says it was not.
    if outcome_seen["type"] != "Success":
        reported = {
            *outcome_seen["compensated"],
            *outcome_seen.get("failed", ()),
            *outcome_seen.get("unresolved", ()),
        }
        completed = {entry.path for entry in entries if entry.kind == "completed"}
        assert completed & set(COMPENSABLE) <= reported


def test_a_process_whose_journal_write_failed_leaves_a_recoverable_saga(
    tmp_path: Path, store: JournalStore
) -> None:
    """The failed write stops the run before anything unrecorded happens (no compensation runs
    past the journal), so a fresh process replays the journal and finishes the saga."""
    evidence = tmp_path / "evidence.jsonl"

    stopped = worker_result(run_worker("start", store, evidence, "--fail-once", "intent:create"))
    recovered = worker_result(run_worker("recover", store, evidence))

    assert stopped["type"] == "JournalError", stopped
    assert recovered[SAGA_ID]["type"] == "Success", recovered
    assert runs(evidence) == {**ONCE_EACH, "action:reserve": 2, "outcome": 1}
    assert_one_outcome(evidence)
    assert_keys_are_stable(evidence)


# -- torn and damaged files ----------------------------------------------------------------------


@needs_sigkill
def test_a_torn_last_commit_in_the_wal_is_absent_never_misread(tmp_path: Path) -> None:
    """A crash in the middle of writing the WAL leaves a partial frame; its checksums make
    SQLite drop the whole transaction. Here the torn transaction is the outcome's: the saga
    reads back as running, with every earlier entry, and recovers to the same outcome."""
    db, evidence = tmp_path / "journal.db", tmp_path / "evidence.jsonl"
    crashed = run_worker(
        "start", JournalStore(path=db), evidence, "--decline", "--crash", "after:finish:-"
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    torn = tmp_path / "torn.db"
    copy_journal(db, torn)
    wal = torn.with_name(torn.name + "-wal")
    page_size = int.from_bytes(db.read_bytes()[16:18], "big")
    frames, rest = divmod(wal.stat().st_size - 32, 24 + page_size)
    assert frames > 1
    assert rest == 0
    with wal.open("r+b") as file:  # cut the last frame (the outcome's commit) in half
        file.truncate(wal.stat().st_size - page_size // 2)
    with SqliteJournal(db) as journal:
        whole = journal.entries(SAGA_ID)

    torn_evidence = tmp_path / "torn-evidence.jsonl"
    sqlite, durable = runner(JournalStore(path=torn), torn_evidence)
    with sqlite:
        record = sqlite.get(SAGA_ID)
        left = sqlite.entries(SAGA_ID)
        assert sqlite.integrity_check() == ["ok"]
        recovered = durable.recover()

    assert record is not None
    assert record.status == "running"
    assert left == whole[:-1]  # the outcome's commit carried the last result
    assert_outcome_matches(describe(recovered[SAGA_ID]), ("create", "reserve"))
    # Only the compensation in flight in the torn commit ran again.
    assert runs(torn_evidence) == {"compensation:reserve": 1, "outcome": 1}


def durable_journal(db: Path, evidence: Path) -> None:
    """A journal with finished sagas, succeeded and failed, and an unfinished one."""
    sqlite, durable = runner(JournalStore(path=db), evidence)
    with sqlite:
        for number in range(12):
            input = {"sku": f"sku-{number}", "decline": number % 3 == 0}
            durable.start("order", input, saga_id=f"o-{number + 2}")
    unfinished_order(JournalStore(path=db))


def observe(db: Path, evidence: Path) -> list[object]:
    """What reading every saga gives (its id, status, outcome and entries), then what
    recovering the journal gives; ``"corrupt"`` where a `JournalCorruptError` naming `db` came
    instead, which ends the observation when reading."""
    seen: list[object] = []
    try:
        sqlite, durable = runner(JournalStore(path=db), evidence)
        with sqlite:
            for record in sqlite.sagas():
                entries = sqlite.entries(record.saga_id)
                seen.append((record.saga_id, record.status, record.outcome, entries))
            recovered = durable.recover()
    except JournalCorruptError as error:
        return [*seen, corrupt(error, db)]
    for saga_id, outcome in recovered.items():
        if isinstance(outcome, JournalCorruptError):
            seen.append((saga_id, corrupt(outcome, db)))
        else:
            seen.append((saga_id, describe(outcome)))
    return seen


def corrupt(error: JournalCorruptError, db: Path) -> str:
    assert error.path == str(db)
    assert str(db) in str(error)
    return "corrupt"


OBJECTS = ("sqlite_schema", "sagas", "sagas_by_saga_id", "unfinished_sagas", "entries")
"""Every table and index of a journal file, and its schema table."""


@dataclass(frozen=True)
class SoundJournal:
    """A journal file as bytes, where each object's (single) page is, and what reading and
    recovering it gives."""

    data: bytes
    page_size: int
    pages: dict[str, int]
    observed: list[object]


@pytest.fixture(scope="module")
def sound_journal(tmp_path_factory: pytest.TempPathFactory) -> SoundJournal:
    folder = tmp_path_factory.mktemp("sound")
    db = folder / "journal.db"
    durable_journal(db, folder / "evidence.jsonl")
    with SqliteJournal(db):  # opened and closed: checkpointed, the WAL gone
        pass
    data = db.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    with contextlib.closing(sqlite3.connect(db)) as connection:
        pages = dict(connection.execute("SELECT name, rootpage FROM sqlite_master").fetchall())
    pages["sqlite_schema"] = 1
    assert sorted(pages) == sorted(OBJECTS)
    # Every table and index fits in its root page: damaging each page damages one object.
    assert sorted(pages.values()) == list(range(1, len(data) // page_size + 1))
    copy = folder / "copy.db"
    copy.write_bytes(data)
    observed = observe(copy, folder / "copy.jsonl")
    assert "corrupt" not in str(observed)
    return SoundJournal(data, page_size, pages, observed)


DAMAGED_PAGES = [
    pytest.param(
        damage,
        name,
        id=f"{damage}-{name}",
    )
    for damage in ("cut", "garbage")
    for name in OBJECTS
]


@pytest.mark.parametrize(("damage", "name"), DAMAGED_PAGES)
def test_a_damaged_journal_file_is_a_clear_error_never_a_wrong_answer(
    tmp_path: Path, sound_journal: SoundJournal, damage: str, name: str
) -> None:
    """The file cut in the middle of the page of one table or index (as a torn copy leaves
    it), or that page overwritten with garbage: reading and recovering the journal either
    raise `JournalCorruptError` naming the file, or (when the damage misses what was read)
    give exactly what the sound file gives."""
    data, page_size = sound_journal.data, sound_journal.page_size
    start = (sound_journal.pages[name] - 1) * page_size
    damaged = tmp_path / "damaged.db"
    if damage == "cut":
        damaged.write_bytes(data[: start + page_size // 2])
    else:
        damaged.write_bytes(data[:start] + b"\xab" * page_size + data[start + page_size :])

    seen = observe(damaged, tmp_path / "evidence.jsonl")

    if seen != sound_journal.observed:
        last = seen[-1]
        assert isinstance(last, str | tuple)
        assert "corrupt" in last, seen
        assert seen[:-1] == sound_journal.observed[: len(seen) - 1]


def test_a_file_that_is_not_a_database_is_refused_with_its_path(
    tmp_path: Path, sound_journal: SoundJournal
) -> None:
    db = tmp_path / "journal.db"
    db.write_bytes(b"\x00" * 100 + sound_journal.data[100:])  # the header gone

    with pytest.raises(JournalCorruptError, match="not a valid SQLite database") as raised:
        SqliteJournal(db)

    assert raised.value.path == str(db)


def test_a_damaged_schema_that_is_not_utf8_is_a_clear_error(
    tmp_path: Path, sound_journal: SoundJournal
) -> None:
    db = tmp_path / "journal.db"
    data = bytearray(sound_journal.data)
    table = data.index(b"CREATE TABLE entries")
    column = data.index(b"saga_id", table)
    data[column : column + 2] = b"$\xff"  # an unrecognized token, not UTF-8
    db.write_bytes(bytes(data))

    with pytest.raises(JournalCorruptError) as raised:
        SqliteJournal(db).close()

    assert raised.value.path == str(db)
