"""The worker loop (`DurableSagas.run_worker`, `run_worker_async`, ``fsaga worker``) over a
`PostgresJournal` on the session's throwaway server: it starts submitted sagas at once, recovers
those whose worker died, is fenced when its lease is taken over, hands back what it holds on
SIGTERM, and carries on across a restart of the server.

Nothing waits by sleeping: the tests wait for the sagas' `SagaFinished` events, for lines a
worker prints, or for threads to end, with generous timeouts as failure bounds only. Takeovers
happen on the journal's clock, which the test moves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pg_journals
import pytest
import worker_sagas
from servers import PostgresServer

from fsaga import Success
from fsaga.durable import DurableSagas, WorkerReport
from fsaga.events import Event, SagaFinished, SagaStopped
from fsaga.journal import (
    Entry,
    JournalError,
    JsonCodec,
    Lease,
    LeaseLostError,
    MemoryJournal,
    PostgresJournal,
)
from fsaga.outcome import Outcome

TESTS = Path(__file__).parent
TIMEOUT = 60.0
"""A failure bound: nothing here should take more than a few seconds."""
TTL = 30.0
codec = JsonCodec()


class Clock:
    """The journal's clock, set by the test."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Finished:
    """A listener that collects the outcomes of the sagas that finished in this process, and
    the runs that stopped without one."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Outcome[object]] = {}
        self.stopped: dict[str, SagaStopped] = {}
        self._changed = threading.Condition()

    def __call__(self, event: Event) -> None:
        if isinstance(event, SagaFinished | SagaStopped):
            with self._changed:
                if isinstance(event, SagaFinished):
                    self.outcomes[event.saga_id] = event.outcome
                else:
                    self.stopped[event.saga_id] = event
                self._changed.notify_all()

    def wait_for_stop(self, saga_id: str) -> SagaStopped:
        with self._changed:
            assert self._changed.wait_for(lambda: saga_id in self.stopped, timeout=TIMEOUT), (
                f"{saga_id} did not stop in time"
            )
            return self.stopped[saga_id]

    def wait_for(self, *saga_ids: str) -> dict[str, Outcome[object]]:
        with self._changed:
            assert self._changed.wait_for(
                lambda: all(saga_id in self.outcomes for saga_id in saga_ids), timeout=TIMEOUT
            ), f"not finished in time: {set(saga_ids) - set(self.outcomes)}"
            return {saga_id: self.outcomes[saga_id] for saga_id in saga_ids}


class RunningWorker:
    """`run_worker` in a thread of its own; `stop` it to get its report."""

    def __init__(self, runs: DurableSagas, **options: object) -> None:
        self.stop_event = threading.Event()
        self.report: WorkerReport | None = None
        self.error: BaseException | None = None

        def work() -> None:
            try:
                self.report = runs.run_worker(stop=self.stop_event, **options)  # type: ignore[arg-type]
            except BaseException as error:  # pragma: no cover - shown by `stop`
                self.error = error

        self.thread = threading.Thread(target=work, name="test-worker", daemon=True)
        self.thread.start()

    def stop(self) -> WorkerReport:
        self.stop_event.set()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the worker did not stop"
        assert self.error is None, self.error
        assert self.report is not None
        return self.report


@pytest.fixture(autouse=True)
def fresh_sagas() -> Iterator[None]:
    worker_sagas.reset()
    yield
    worker_sagas.release_hang.set()  # a hung effect left behind ends with its test


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextlib.contextmanager
def worker(
    journal: PostgresJournal, finished: Finished, **options: object
) -> Iterator[RunningWorker]:
    running = RunningWorker(
        DurableSagas(journal, worker_sagas.definitions, listeners=[finished]), **options
    )
    try:
        yield running
    finally:
        if running.thread.is_alive():
            running.stop()


def test_a_worker_starts_a_submitted_saga_as_soon_as_it_is_notified(
    postgres: PostgresServer,
) -> None:
    finished = Finished()
    with (
        pg_journals.new_journal(postgres) as journal,
        worker(journal, finished, owner="worker-a", ttl=TTL, poll=3600.0) as running,
    ):
        # The sweep finds nothing; only the notification can wake it within the failure bound.
        assert journal.submit("order-1", "order", codec.encode(2))
        assert finished.wait_for("order-1") == {"order-1": Success("charged 2")}
        report = running.stop()
        assert journal.pending() == []
    assert (report.owner, report.started, report.recovered, report.lost) == ("worker-a", 1, 0, 0)
    assert worker_sagas.ran == ["order-1:reserve", "order-1:charge"]


def test_a_worker_recovers_a_saga_whose_owner_died(postgres: PostgresServer, clock: Clock) -> None:
    finished = Finished()
    with pg_journals.new_journal(postgres, clock=clock) as journal:
        dead = journal.as_owner("worker-dead", ttl=TTL)
        dead.create(
            "order-2", "order", 1, codec.encode(3), entries=[Entry(1, "intent", "reserve", 1)]
        )
        assert journal.claim_expired("worker-b", ttl=TTL) == []  # the dead worker's lease holds
        clock.now += TTL  # ...until it runs out
        with worker(journal, finished, owner="worker-b", ttl=TTL, poll=3600.0) as running:
            assert finished.wait_for("order-2") == {"order-2": Success("charged 3")}
            report = running.stop()
        assert (report.started, report.recovered) == (0, 1)
        # `reserve` is idempotent: the recovery ran it again, then went on.
        assert worker_sagas.ran == ["order-2:reserve", "order-2:charge"]
        assert journal.get("order-2").status == "succeeded"  # type: ignore[union-attr]


def test_a_worker_whose_lease_is_taken_over_stops_that_saga_and_runs_nothing_more(
    postgres: PostgresServer, clock: Clock
) -> None:
    finished = Finished()
    with pg_journals.new_journal(postgres, clock=clock) as journal:
        with worker(journal, finished, owner="worker-a", ttl=TTL, poll=3600.0) as running:
            journal.submit("hang-1", "hang", codec.encode(None))
            assert worker_sagas.hanging.wait(TIMEOUT)
            clock.now += TTL + 1  # worker A hangs in `first` past its lease...
            [taken] = journal.claim_expired("worker-b", ttl=TTL)  # ...and B takes the saga
            assert taken.saga_id == "hang-1"
            worker_sagas.release_hang.set()  # A's effect in flight finishes
            report = running.stop()
        assert (report.started, report.lost, report.failed) == (0, 1, 0)
        # Its listeners hear that the run stopped without an outcome, never that it finished.
        assert finished.stopped["hang-1"].reason == "fenced"
        assert "hang-1" not in finished.outcomes
        assert journal.get("hang-1").status == "running"  # type: ignore[union-attr]
        # Nothing after A's effect was written or run: its result, and `second`, never were.
        assert worker_sagas.ran == ["hang-1:first"]
        assert [(e.kind, e.path) for e in journal.entries("hang-1")] == [("intent", "first")]
        # B drives it from here (the step A lost settles as an unknown outcome).
        outcome = DurableSagas(
            journal.as_owner("worker-b", ttl=TTL), worker_sagas.definitions
        ).resume("hang-1")
        assert not isinstance(outcome, Success)
        assert worker_sagas.ran == ["hang-1:first"]
        assert journal.get("hang-1").finished  # type: ignore[union-attr]


def test_a_saga_the_sync_worker_hands_back_stops_at_its_next_write_and_says_so(
    postgres: PostgresServer,
) -> None:
    finished = Finished()
    with pg_journals.new_journal(postgres) as journal:
        with worker(
            journal, finished, owner="worker-a", ttl=TTL, poll=3600.0, grace=0.0
        ) as running:
            journal.submit("hang-3", "hang", codec.encode(None))
            assert worker_sagas.hanging.wait(TIMEOUT)
            report = running.stop()  # past the grace: handed back while `first` runs
        assert report.handed_back == ("hang-3",)
        worker_sagas.release_hang.set()  # the effect in flight returns; its result is refused
        stopped = finished.wait_for_stop("hang-3")
        assert (stopped.reason, type(stopped.error)) == ("fenced", LeaseLostError)
        assert "hang-3" not in finished.outcomes
        assert worker_sagas.ran == ["hang-3:first"]
        assert [(e.kind, e.path) for e in journal.entries("hang-3")] == [("intent", "first")]


def test_a_saga_the_async_worker_hands_back_is_cancelled_and_stops_without_an_outcome(
    postgres: PostgresServer,
) -> None:
    finished = Finished()
    stop = threading.Event()
    with pg_journals.new_journal(postgres) as journal:
        runs = DurableSagas(journal, worker_sagas.definitions, listeners=[finished])

        async def main() -> WorkerReport:
            async with anyio.create_task_group() as group:

                async def submit_and_stop() -> None:
                    journal.submit("hang-4", "hang_async", codec.encode(None))
                    assert await anyio.to_thread.run_sync(worker_sagas.hanging.wait, TIMEOUT)
                    stop.set()

                group.start_soon(submit_and_stop)
                return await runs.run_worker_async(
                    owner="worker-async", ttl=TTL, poll=3600.0, grace=0.0, stop=stop
                )
            raise AssertionError("unreachable")  # pragma: no cover

        report = anyio.run(main)
        assert report.handed_back == ("hang-4",)
        # Cancelled once its lease was released: the undo's writes were refused.
        assert finished.wait_for_stop("hang-4").reason == "fenced"
        assert "hang-4" not in finished.outcomes
        assert journal.get("hang-4").status == "running"  # type: ignore[union-attr]
        assert journal.claim_expired("worker-next", ttl=TTL)[0].saga_id == "hang-4"


def test_the_async_worker_drives_several_submitted_sagas(postgres: PostgresServer) -> None:
    finished = Finished()
    stop = threading.Event()
    ids = [f"order-{n}" for n in range(5)]
    with pg_journals.new_journal(postgres) as journal:
        runs = DurableSagas(journal, worker_sagas.definitions, listeners=[finished])

        async def main() -> WorkerReport:
            async with anyio.create_task_group() as group:

                async def submit_and_stop() -> None:
                    for n, saga_id in enumerate(ids):
                        journal.submit(saga_id, "order", codec.encode(n))
                    await anyio.to_thread.run_sync(finished.wait_for, *ids)
                    stop.set()

                group.start_soon(submit_and_stop)
                return await runs.run_worker_async(
                    owner="worker-async", ttl=TTL, poll=3600.0, concurrency=3, stop=stop
                )
            raise AssertionError("unreachable")  # pragma: no cover

        report = anyio.run(main)
    assert (report.started, report.lost, report.failed) == (5, 0, 0)
    assert {finished.outcomes[saga_id] for saga_id in ids} == {
        Success(f"charged {n}") for n in range(5)
    }


class Logged(logging.Handler):
    """The worker's log lines, as they come: a test waits for one instead of sleeping."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.lines.append(record.getMessage())
            self._changed.notify_all()

    def wait_for(self, text: str, *, times: int = 1) -> None:
        with self._changed:
            assert self._changed.wait_for(
                lambda: sum(text in line for line in self.lines) >= times, timeout=TIMEOUT
            ), f"never logged {times} x {text!r}: {self.lines}"


@pytest.fixture
def logged() -> Iterator[Logged]:
    handler = Logged()
    logger = logging.getLogger("fsaga")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_submission_whose_start_keeps_failing_is_parked_and_the_others_still_start(
    postgres: PostgresServer, clock: Clock, logged: Logged
) -> None:
    finished = Finished()
    failed = "the start of saga poison failed: UnknownDefinitionError"
    with pg_journals.new_journal(postgres, clock=clock) as journal:
        with worker(
            journal, finished, owner="worker-a", ttl=TTL, poll=3600.0, max_claims=2
        ) as running:
            journal.submit("poison", "ordr", codec.encode(1))  # a definition nobody has
            logged.wait_for(failed)
            poison = journal.submission("poison")
            assert poison is not None
            assert (poison.claims, poison.parked_at) == (1, None)
            assert poison.lease == Lease("poison", "worker-a", clock.now + TTL)  # kept: no loop
            assert poison.last_error is not None
            assert "registered as 'ordr'" in codec.decode(poison.last_error)[2]  # type: ignore[index]

            clock.now += TTL  # its lease ran out: the next sweep claims it again, and fails
            journal.submit("order-1", "order", codec.encode(1))
            finished.wait_for("order-1")
            logged.wait_for(failed, times=2)
            clock.now += TTL  # two claims did not start it: the next one parks it
            journal.submit("order-2", "order", codec.encode(2))
            assert finished.wait_for("order-2") == {"order-2": Success("charged 2")}
            report = running.stop()

        assert (report.started, report.failed) == (2, 2)
        [parked] = journal.parked_submissions()
        assert (parked.saga_id, parked.claims, parked.lease) == ("poison", 2, None)
        assert parked.last_error == poison.last_error
        assert journal.pending() == []
        assert journal.get("poison") is None
        logged.wait_for("parked submission poison (ordr): 2 claims did not start it")


def test_a_worker_leaves_a_running_saga_it_cannot_replay_to_the_workers_that_can(
    postgres: PostgresServer, clock: Clock
) -> None:
    finished = Finished()
    with pg_journals.new_journal(postgres, clock=clock) as journal:
        dead = journal.as_owner("worker-dead", ttl=TTL)
        reserve = [Entry(1, "intent", "reserve", 1)]
        dead.create("refund-1", "refund", 1, codec.encode(1), entries=reserve)  # not registered
        dead.create("order-9", "order", 2, codec.encode(9), entries=reserve)  # a newer version
        dead.create("order-2", "order", 1, codec.encode(2), entries=reserve)
        clock.now += TTL

        with worker(journal, finished, owner="worker-b", ttl=TTL, poll=3600.0) as running:
            assert finished.wait_for("order-2") == {"order-2": Success("charged 2")}
            report = running.stop()

        assert (report.recovered, report.failed) == (1, 0)
        for saga_id in ("refund-1", "order-9"):
            record = journal.get(saga_id)
            assert record is not None
            assert (record.status, record.recovery_attempts) == ("running", 0)
        # Untouched, and free for a worker that has those definitions.
        taken = journal.claim_expired("worker-c", ttl=TTL, limit=5)
        assert sorted(lease.saga_id for lease in taken) == ["order-9", "refund-1"]


def test_the_command_line_worker_parks_poison_submissions_and_sagas_whose_recoveries_fail(
    postgres: PostgresServer,
) -> None:
    with pg_journals.new_journal(postgres) as journal:
        journal.submit("poison", "ordr", codec.encode(1))
        dead = journal.as_owner("worker-dead", ttl=TTL)
        dead.create(
            "order-5", "order", 1, codec.encode(5), entries=[Entry(1, "intent", "reserve", 1)]
        )
        schema = f'"{journal.schema}"'
        with pg_journals.raw(postgres) as connection:
            # A worker claimed the submission once and died; a recovery of the saga died too;
            # both leases ran out.
            connection.execute(f"UPDATE {schema}.submissions SET claims = 1")
            connection.execute(
                f"UPDATE {schema}.sagas SET recovery_attempts = 1, lease_expires_at = 0"
            )
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "fsaga", "worker", "--dsn", postgres.dsn),
                *("--schema", journal.schema, "--definitions", "worker_sagas:definitions"),
                *("--owner", "cli-worker", "--poll", "3600"),
                *("--max-claims", "1", "--max-recovery-attempts", "1"),
            ],
            cwd=TESTS,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stderr is not None
            seen: list[str] = []
            while not (
                any("parked submission poison" in line for line in seen)
                and any("saga 'order-5' is parked as dead" in line for line in seen)
            ):
                line = process.stderr.readline()
                assert line, f"the worker ended: {seen}"
                seen.append(line)
            process.send_signal(signal.SIGTERM)
            output, errors = process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:  # pragma: no cover - a failed test
                process.kill()
                process.wait()
        assert process.returncode == 0, errors
        assert "0 started, 0 recovered, 0 lost, 1 failed" in output
        assert [parked.saga_id for parked in journal.parked_submissions()] == ["poison"]
        assert journal.get("order-5").status == "dead"  # type: ignore[union-attr]
        assert journal.entries("order-5") == [Entry(1, "intent", "reserve", 1)]  # nothing ran


def test_a_worker_needs_a_journal_workers_share() -> None:
    runs = DurableSagas(MemoryJournal(), worker_sagas.definitions)
    with pytest.raises(TypeError, match="PostgresJournal"):
        runs.run_worker(stop=threading.Event())


def test_a_worker_carries_on_across_a_restart_of_the_server(postgres: PostgresServer) -> None:
    finished = Finished()
    with (
        pg_journals.new_journal(postgres) as journal,
        worker(journal, finished, owner="worker-r", ttl=TTL, poll=0.2) as running,
    ):
        journal.submit("before", "order", codec.encode(1))
        finished.wait_for("before")
        postgres.restart()
        # The journal's pooled connections were cut: a call may fail once while it finds out.
        for _ in range(10):
            try:
                journal.submit("after", "order", codec.encode(2))
                break
            except JournalError:
                continue
        assert finished.wait_for("after") == {"after": Success("charged 2")}
        report = running.stop()
    assert report.started == 2


def test_sigterm_stops_the_command_line_worker_which_hands_back_its_saga_and_exits_0(
    postgres: PostgresServer,
) -> None:
    with pg_journals.new_journal(postgres) as journal:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "fsaga", "worker", "--dsn", postgres.dsn),
                *("--schema", journal.schema, "--definitions", "worker_sagas:definitions"),
                *("--owner", "cli-worker", "--grace", "0", "--poll", "3600"),
            ],
            cwd=TESTS,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline().startswith("worker ready on database")
            journal.submit("hang-2", "hang", codec.encode(None))
            assert process.stdout.readline() == "in-effect hang-2\n"
            process.send_signal(signal.SIGTERM)
            output, errors = process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:  # pragma: no cover - a failed test
                process.kill()
                process.wait()
        assert process.returncode == 0, errors
        assert "worker cli-worker stopped" in output
        assert output.rstrip().endswith("handed back: hang-2"), output
        # Its lease was released: another worker takes the saga over at once.
        assert journal.claim_expired("worker-next", ttl=TTL)[0].saga_id == "hang-2"
        assert os.linesep.join(errors.splitlines()).count("handing it back") == 1
