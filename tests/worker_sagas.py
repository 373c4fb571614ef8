"""Saga definitions for the worker tests (tests/test_workers.py).

``fsaga worker --definitions worker_sagas:definitions`` imports this module by name (the tests
run it with tests/ as the current directory). `ran` lists, in order, every effect that ran in
this process (``"saga-id:step"``). The ``hang`` saga's first step prints ``in-effect ID`` and
waits for `release_hang` (in a test's process) or forever (in a worker the test kills); the
``hang_async`` saga's does the same without printing, as an async effect (for the async
worker, which cancels it when it hands the saga back).
"""

from __future__ import annotations

import sys
import threading
from typing import TypeVar

import anyio.to_thread

from fsaga import Saga, current_context, step
from fsaga.durable import SagaDefinitions

_T = TypeVar("_T")

definitions = SagaDefinitions()
ran: list[str] = []
hanging = threading.Event()
"""Set once the ``hang`` saga's first step is running."""
release_hang = threading.Event()
"""Lets the ``hang`` saga's first step return."""


def _effect(name: str, value: _T) -> _T:
    ran.append(f"{current_context().saga_id}:{name}")
    return value


def _hang() -> str:
    ran.append(f"{current_context().saga_id}:first")
    print(f"in-effect {current_context().saga_id}", flush=True)
    hanging.set()
    release_hang.wait()
    return "first"


async def _hang_async() -> str:
    ran.append(f"{current_context().saga_id}:first")
    hanging.set()
    # Abandoned when the run is cancelled: the wait ends with the test (`release_hang`).
    await anyio.to_thread.run_sync(release_hang.wait, abandon_on_cancel=True)
    return "first"


@definitions.saga("order")
def order(quantity: int) -> Saga[str]:
    return step(lambda: _effect("reserve", quantity), name="reserve", idempotent=True).then(
        step(lambda: _effect("charge", f"charged {quantity}"), name="charge")
    )


@definitions.saga("hang")
def hang(_: None) -> Saga[object]:
    return step(_hang, name="first").then(step(lambda: _effect("second", 2), name="second"))


@definitions.saga("hang_async")
def hang_async(_: None) -> Saga[object]:
    return step(_hang_async, name="first").then(step(lambda: _effect("second", 2), name="second"))


def reset() -> None:
    ran.clear()
    hanging.clear()
    release_hang.clear()


if __name__ == "__main__":  # pragma: no cover
    sys.exit("import this module")
