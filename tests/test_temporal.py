"""fsaga on Temporal: the sagas of tests/temporal_sagas.py run as workflows on the time-skipping
test server (one for the run: the `temporal` fixture), their effects as activities.

Retries wait on durable timers, which the server skips over (virtual time); the tests that need
an activity to time out use timeouts of a fraction of a second, since the server does not skip
time while an activity runs.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import temporal_sagas as sagas
from temporal_env import TemporalSession, require_temporal
from temporal_sagas import Declined, Order, definitions, order_saga

require_temporal()

from temporalio.client import WorkflowExecutionStatus  # noqa: E402

from fsaga import Failure, Outcome, PartialFailure, StepTimeoutError, Success  # noqa: E402
from fsaga.durable import RecordedError  # noqa: E402
from fsaga.errors import UnknownOutcomeError  # noqa: E402
from fsaga.events import StepRetrying  # noqa: E402
from fsaga.interpreter import SyncInterpreter  # noqa: E402
from fsaga.temporal import (  # noqa: E402
    NotAnActivityError,
    SagaCancelledError,
    execute,
    start,
)


def fresh_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run(temporal: TemporalSession, name: str, value: object, **options: Any) -> tuple[str, Outcome[object]]:
    saga_id = fresh_id(name)
    outcome = temporal.run(
        execute,
        temporal.client,
        definitions,
        name,
        value,
        id=saga_id,
        task_queue=temporal.task_queue,
        **options,
    )
    return saga_id, outcome


def order_of(saga_id: str) -> list[tuple[str, str]]:
    """The effects of a saga, in the order they ran: (kind, path)."""
    return [(kind, path) for kind, path, *_ in sagas.effects[saga_id]]


def test_a_saga_that_succeeds_returns_its_value(temporal: TemporalSession) -> None:
    saga_id = fresh_id("order")
    outcome = temporal.run(
        execute,
        temporal.client,
        definitions,
        order_saga,
        Order("o-1", "book", 2, 450),
        id=saga_id,
        task_queue=temporal.task_queue,
    )
    assert outcome == Success("S-o-1")
    assert order_of(saga_id) == [("action", "reserve"), ("action", "charge"), ("action", "ship")]


def test_a_failure_compensates_the_completed_steps_in_reverse(
    temporal: TemporalSession,
) -> None:
    saga_id, outcome = run(temporal, "order", Order("o-2", "book", 1, 300, no_courier=True))
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, ConnectionError)
    assert isinstance(outcome.error, RecordedError)
    assert str(outcome.error) == "ConnectionError: no courier for o-2"
    assert outcome.compensated == ("charge", "reserve")
    assert sagas.effects[saga_id][-2:] == [
        ("compensation", "charge", 1, "P-o-2-300", None),
        ("compensation", "reserve", 1, "R-book-1", None),
    ]
