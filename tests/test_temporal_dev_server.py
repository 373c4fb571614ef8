"""End to end on Temporal's local development server (``temporal server start-dev``): worker
processes of their own (tests/temporal_sagas.py run as a script), one of them killed with
SIGKILL in the middle of an activity, and another that finishes the saga; and the siblings of a
failed `par` branch cancelled (``on_branch_failure="cancel"``), which the time-skipping test
server cannot do reliably (tests/test_temporal_properties.py says why).

The saga (``killed``) reserves, charges and ships; its charge is idempotent and its first run
never returns. Every effect leaves a line in an evidence file, which both processes append to.
Once the first worker's charge is running, the test kills that worker. Its activity stops
heartbeating, so the server times it out: the charge's outcome is unknown, and the engine, in
the workflow the second worker takes over (replaying the history the first one left), runs the
idempotent charge again with the same idempotency key (contract rule 3), then ships.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from temporal_env import local_environment, require_temporal

pytestmark = pytest.mark.temporal

require_temporal()

import temporal_sagas as sagas  # noqa: E402
from temporal_sagas import definitions, killed_saga  # noqa: E402
from temporalio.api.enums.v1 import TimeoutType  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Replayer  # noqa: E402

from fsaga import Failure, Outcome, Success  # noqa: E402
from fsaga.events import StepFailed  # noqa: E402
from fsaga.temporal import SagaHandle, execute, saga_workflow, start, worker  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "temporal_sagas.py"


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal("asyncio") as portal:
        yield portal


@pytest.fixture(scope="module")
def dev_server(portal: BlockingPortal) -> Iterator[WorkflowEnvironment]:
    with local_environment(portal) as environment:
        yield environment


def start_worker(address: str, task_queue: str, log: Path) -> subprocess.Popen[str]:
    """A worker process, returned once it polls."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    with log.open("a", encoding="utf-8") as errors:
        process = subprocess.Popen(
            [sys.executable, str(WORKER), address, task_queue],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=environment,
            cwd=ROOT,
        )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip() == "ready", f"the worker did not start: {log.read_text()[-2000:]}"
    return process


def evidence(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def wait_for(path: Path, label: str) -> None:
    """Wait until an effect leaves `label` in the evidence file (a condition, polled)."""
    deadline = time.monotonic() + 60
    while not any(line[3] == label for line in evidence(path)):
        assert time.monotonic() < deadline, f"no {label!r} in the evidence: {evidence(path)}"
        time.sleep(0.02)


def test_a_worker_killed_mid_activity_leaves_the_saga_to_another(
    portal: BlockingPortal, dev_server: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_server.client
    address = client.service_client.config.target_host
    task_queue = f"e2e-{uuid.uuid4().hex[:8]}"
    saga_id = f"killed-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "evidence.jsonl"
    log = tmp_path / "workers.log"
    first = start_worker(address, task_queue, log)
    second: subprocess.Popen[str] | None = None
    try:

        async def started() -> SagaHandle[str]:
            return await start(
                client,
                definitions,
                killed_saga,
                str(path),
                id=saga_id,
                task_queue=task_queue,
                heartbeat_timeout=1.0,
            )

        handle = portal.call(started)
        wait_for(path, "charge started")
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
        second = start_worker(address, task_queue, log)

        assert portal.call(handle.outcome) == Success("ship")
        history = portal.call(client.get_workflow_handle(saga_id).fetch_history)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=30)
            if process is not None and process.stdout is not None:
                process.stdout.close()

    key = f"{saga_id}/charge"
    assert [(line[0], line[1], line[2], line[3]) for line in evidence(path)] == [
        ("action", "reserve", f"{saga_id}/reserve", "reserve"),
        ("action", "charge", key, "charge started"),
        ("action", "charge", key, "charge again"),  # the same key, from the second worker
        ("action", "ship", f"{saga_id}/ship", "ship"),
    ]
    # The server timed the lost attempt out when its heartbeats stopped.
    timed_out = [
        event.activity_task_timed_out_event_attributes.failure.timeout_failure_info.timeout_type
        for event in history.events
        if event.HasField("activity_task_timed_out_event_attributes")
    ]
    assert timed_out == [TimeoutType.TIMEOUT_TYPE_HEARTBEAT]
    # The history two workers wrote replays as one run.
    replayer = Replayer(workflows=[saga_workflow(definitions)])
    assert portal.call(replayer.replay_workflow, history).replay_failure is None


def test_siblings_of_a_failed_branch_are_cancelled_and_their_outcomes_settled(
    portal: BlockingPortal, dev_server: WorkflowEnvironment
) -> None:
    task_queue = f"siblings-{uuid.uuid4().hex[:8]}"
    saga_id = f"siblings-{uuid.uuid4().hex[:8]}"
    running = worker(
        dev_server.client,
        definitions,
        task_queue=task_queue,
        activities=sagas.ACTIVITIES,
        listeners=[sagas.listen],
    )
    with portal.wrap_async_context_manager(running):

        async def run() -> Outcome[object]:
            return await execute(
                dev_server.client,
                definitions,
                "siblings",
                None,
                id=saga_id,
                task_queue=task_queue,
                on_branch_failure="cancel",
                heartbeat_timeout=1.0,
            )

        outcome = portal.call(run)
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, ConnectionError)
    # The branch in flight was cancelled: its outcome is unknown, so its on_unknown voided it.
    assert set(outcome.compensated) == {"done", "held"}
    kinds = {(kind, path) for kind, path, *_ in sagas.effects[saga_id]}
    assert ("unknown", "held") in kinds
    assert ("compensation", "done") in kinds
    failed = [event for event in sagas.events[saga_id] if isinstance(event, StepFailed)]
    assert {(event.path, event.unknown) for event in failed} == {("send", False), ("held", True)}
