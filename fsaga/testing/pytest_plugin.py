"""fsaga's pytest plugin: fixtures for testing your own sagas.

Installed with fsaga, it is loaded by pytest's entry point (``pytest11``) in every session;
where plugins are not loaded automatically (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), opt in from
the top-level ``conftest.py``::

    pytest_plugins = ["fsaga.testing.pytest_plugin"]

or on the command line, ``pytest -p fsaga.testing.pytest_plugin``. Loading it costs nothing
until a test uses a fixture: this module imports only pytest, and each fixture imports what it
makes when it makes it.

Every interpreter the fixtures make checks each of its runs against the contract as it
finishes (``check=True``: `fsaga.testing.check_run` on the run's own trace), so a test that
only asserts its own outcome also proves the rules of the run held.

- `saga_interpreter`: a `RecordingInterpreter`: sync, real effects, the whole trace kept.
- `async_saga_interpreter`: an `AsyncFaultInjectingInterpreter` with an empty plan: real
  effects on anyio, recorded, retry waits recorded rather than waited (use it in
  ``@pytest.mark.anyio`` tests).
- `fault_injecting_interpreter`, `async_fault_injecting_interpreter`: factories of
  fault-injecting interpreters, ``make(plan, **options)``. They are session-scoped, since they
  keep no state: hypothesis accepts them in ``@given`` tests, each example making its own
  interpreter.
- `saga_journal`: a `SqliteJournal` in a file of the test's `tmp_path`, closed after the test.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

if TYPE_CHECKING:
    from fsaga.events import Listener
    from fsaga.interpreter.settings import BranchFailurePolicy, CompensationPolicy
    from fsaga.journal.sqlite import SqliteJournal
    from fsaga.testing.faults import (
        AsyncFaultInjectingInterpreter,
        FaultInjectingInterpreter,
        FaultPlan,
    )
    from fsaga.testing.interpreters import RecordingInterpreter

__all__ = [
    "AsyncFaultInjectingFactory",
    "FaultInjectingFactory",
    "async_fault_injecting_interpreter",
    "async_saga_interpreter",
    "fault_injecting_interpreter",
    "saga_interpreter",
    "saga_journal",
]


class FaultInjectingFactory(Protocol):
    """The `fault_injecting_interpreter` fixture: makes a checking `FaultInjectingInterpreter`.

    Annotate a test's parameter with it: ``fault_injecting_interpreter: FaultInjectingFactory``.
    """

    def __call__(
        self,
        plan: FaultPlan | None = None,
        /,
        *,
        listeners: Iterable[Listener] = (),
        on_compensation_failure: CompensationPolicy = "continue",
    ) -> FaultInjectingInterpreter:
        """A `FaultInjectingInterpreter` running `plan` (no faults when omitted), with
        ``check=True``; the options are the interpreter's own."""
        ...


class AsyncFaultInjectingFactory(Protocol):
    """The `async_fault_injecting_interpreter` fixture: makes a checking
    `AsyncFaultInjectingInterpreter`."""

    def __call__(
        self,
        plan: FaultPlan | None = None,
        /,
        *,
        listeners: Iterable[Listener] = (),
        timeout: float | None = None,
        on_branch_failure: BranchFailurePolicy = "settle",
        concurrent_compensation: bool = False,
        on_compensation_failure: CompensationPolicy = "continue",
    ) -> AsyncFaultInjectingInterpreter:
        """An `AsyncFaultInjectingInterpreter` running `plan` (no faults when omitted), with
        ``check=True``; the options are the interpreter's own."""
        ...


@pytest.fixture
def saga_interpreter() -> RecordingInterpreter:
    """A `RecordingInterpreter` that checks each run against the contract as it finishes."""
    from fsaga.testing.interpreters import RecordingInterpreter

    return RecordingInterpreter(check=True)


@pytest.fixture
def async_saga_interpreter() -> AsyncFaultInjectingInterpreter:
    """An `AsyncFaultInjectingInterpreter` with no faults planned, checking each run: real
    effects, recorded, under the test's anyio backend."""
    from fsaga.testing.faults import AsyncFaultInjectingInterpreter, FaultPlan

    return AsyncFaultInjectingInterpreter(FaultPlan(), check=True)


@pytest.fixture(scope="session")
def fault_injecting_interpreter() -> FaultInjectingFactory:
    """Makes a `FaultInjectingInterpreter` for a `FaultPlan`, checking each run (see
    `FaultInjectingFactory`)."""
    return _make_fault_injecting


@pytest.fixture(scope="session")
def async_fault_injecting_interpreter() -> AsyncFaultInjectingFactory:
    """Makes an `AsyncFaultInjectingInterpreter` for a `FaultPlan`, checking each run (see
    `AsyncFaultInjectingFactory`)."""
    return _make_async_fault_injecting


@pytest.fixture
def saga_journal(tmp_path: Path) -> Iterator[SqliteJournal]:
    """A `SqliteJournal` in ``tmp_path / "journal.db"``, closed after the test; hand it to
    `fsaga.durable.DurableSagas` for durable runs."""
    from fsaga.journal.sqlite import SqliteJournal

    with SqliteJournal(tmp_path / "journal.db") as journal:
        yield journal


def _make_fault_injecting(
    plan: FaultPlan | None = None,
    /,
    *,
    listeners: Iterable[Listener] = (),
    on_compensation_failure: CompensationPolicy = "continue",
) -> FaultInjectingInterpreter:
    from fsaga.testing.faults import FaultInjectingInterpreter, FaultPlan

    return FaultInjectingInterpreter(
        FaultPlan() if plan is None else plan,
        listeners=listeners,
        on_compensation_failure=on_compensation_failure,
        check=True,
    )


def _make_async_fault_injecting(
    plan: FaultPlan | None = None,
    /,
    *,
    listeners: Iterable[Listener] = (),
    timeout: float | None = None,
    on_branch_failure: BranchFailurePolicy = "settle",
    concurrent_compensation: bool = False,
    on_compensation_failure: CompensationPolicy = "continue",
) -> AsyncFaultInjectingInterpreter:
    from fsaga.testing.faults import AsyncFaultInjectingInterpreter, FaultPlan

    return AsyncFaultInjectingInterpreter(
        FaultPlan() if plan is None else plan,
        listeners=listeners,
        timeout=timeout,
        on_branch_failure=on_branch_failure,
        concurrent_compensation=concurrent_compensation,
        on_compensation_failure=on_compensation_failure,
        check=True,
    )
