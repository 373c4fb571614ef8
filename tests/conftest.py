"""Shared test configuration.

Hypothesis runs derandomized by default, so every run of the suite (CI included) draws the same
examples and a failure reproduces exactly. ``HYPOTHESIS_PROFILE=explore`` draws fresh random
examples, and more of them, for a deeper search on demand.

Async tests (marked ``@pytest.mark.anyio``) run under both anyio backends (`anyio_backend`).

fsaga's own pytest plugin gives the project's tests the fixtures it gives users (its entry
point loads it once fsaga is installed; listing it here also serves a checkout run without
installing), and pytest's ``pytester`` runs pytest sessions of their own to test it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from servers import PostgresServer, postgres_server, redis_server
from temporal_env import TemporalSession, require_temporal, time_skipping_session
from trio.testing import MockClock

pytest_plugins = ["pytester", "fsaga.testing.pytest_plugin"]

settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "explore",
    derandomize=False,
    deadline=None,
    max_examples=2_000,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param(("trio", {"clock": None}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """Every async test runs under asyncio and under trio; under trio with a mock clock that
    jumps ahead whenever every task waits, so deadlines pass at once and nothing really sleeps.
    """
    backend = request.param
    if isinstance(backend, tuple):
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return backend


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole run (tests/servers.py); tests that need
    isolation make a database of their own on it.
    """
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """One throwaway Redis server for the whole run (tests/servers.py), as its URL."""
    with redis_server() as server:
        yield server.url


@pytest.fixture(scope="session")
def temporal() -> Iterator[TemporalSession]:
    """One time-skipping Temporal server, client and worker for the whole run
    (tests/temporal_env.py); tests keep apart by giving each saga an id of its own."""
    require_temporal()
    with time_skipping_session() as session:
        yield session
