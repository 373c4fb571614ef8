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
from fsaga.events import StepCompleted, StepFailed, StepRetrying, StepStarted  # noqa: E402
from fsaga.interpreter import SyncInterpreter  # noqa: E402
from fsaga.testing import (  # noqa: E402
    assert_causal_compensation_order,
    assert_every_completed_step_accounted_for,
    assert_reverse_compensation_order,
)
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


def test_par_branches_run_concurrently_and_are_undone_in_reverse(
    temporal: TemporalSession,
) -> None:
    saga_id, outcome = run(temporal, "parcel", True)
    assert isinstance(outcome, Failure)
    events = sagas.events[saga_id]
    started = [event.path for event in events if isinstance(event, StepStarted)]
    first_completion = next(
        index for index, event in enumerate(events) if isinstance(event, StepCompleted)
    )
    # Every branch's first step was handed to Temporal before any of them completed.
    assert {"box", "#1/label", "invoice"} <= {
        event.path for event in events[:first_completion] if isinstance(event, StepStarted)
    }
    assert started[-1] == "send"
    completed = [
        event.path for event in events if isinstance(event, StepCompleted) and event.compensable
    ]
    assert outcome.compensated == tuple(reversed(completed))
    assert_reverse_compensation_order(events)
    assert_every_completed_step_accounted_for(events, outcome)
    # The compensations ran one at a time, newest first.
    undone = [path for kind, path, *_ in sagas.effects[saga_id] if kind == "compensation"]
    assert undone == list(outcome.compensated)


def test_concurrent_compensation_follows_the_reverse_causal_order(
    temporal: TemporalSession,
) -> None:
    saga_id, outcome = run(temporal, "parcel", True, concurrent_compensation=True)
    assert isinstance(outcome, Failure)
    assert set(outcome.compensated) == {"box", "#1/label", "#1/stamp", "invoice"}
    events = sagas.events[saga_id]
    assert_causal_compensation_order(events)
    assert outcome.compensated.index("#1/stamp") < outcome.compensated.index("#1/label")


def test_par_results_keep_argument_order(temporal: TemporalSession) -> None:
    _, outcome = run(temporal, "parcel", False)
    # The tuple of the branches' results, in argument order: the client decodes the value by
    # the definition's `-> Saga[tuple[str, str, str]]`.
    assert outcome == Success(("box", "stamp", "invoice"))


def test_retries_wait_with_backoff_on_durable_timers(temporal: TemporalSession) -> None:
    saga_id, outcome = run(temporal, "retries", 3)
    assert outcome == Success("flaky@4")
    events = sagas.events[saga_id]
    retrying = [event for event in events if isinstance(event, StepRetrying)]
    assert [event.delay for event in retrying] == [10.0, 20.0, 40.0]
    flaky_started = [e.at for e in events if isinstance(e, StepStarted) and e.path == "flaky"]
    # The events carry the workflow's clock: the timers took 70 virtual seconds.
    assert flaky_started[-1] - flaky_started[0] >= 70.0
    assert [result for kind, path, _, _, result in sagas.effects[saga_id] if path == "flaky"] == [
        "ConnectionError",
        "ConnectionError",
        "ConnectionError",
        "flaky@4",
    ]


def test_a_step_that_runs_out_of_retries_fails_and_compensates(temporal: TemporalSession) -> None:
    saga_id, outcome = run(temporal, "retries", 9)
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, ConnectionError)
    assert outcome.compensated == ("first",)
    assert sum(1 for _, path, *_ in sagas.effects[saga_id] if path == "flaky") == 5


def test_a_step_timeout_cuts_the_attempt_and_compensates(temporal: TemporalSession) -> None:
    saga_id, outcome = run(temporal, "timeout", 0.3)
    assert isinstance(outcome, PartialFailure)
    assert isinstance(outcome.error, StepTimeoutError)
    assert "'stuck'" in str(outcome.error)
    assert outcome.compensated == ("before",)
    # Cut off mid-flight, its outcome is unknown: nobody can say whether to refund it.
    assert outcome.unresolved == ("stuck",)
    failed = [event for event in sagas.events[saga_id] if isinstance(event, StepFailed)]
    assert [(event.path, event.unknown) for event in failed] == [("stuck", True)]


def test_a_cancelled_workflow_compensates_then_ends_cancelled(temporal: TemporalSession) -> None:
    saga_id = fresh_id("held")
    handle = temporal.run(
        start,
        temporal.client,
        definitions,
        "held",
        None,
        id=saga_id,
        task_queue=temporal.task_queue,
        heartbeat_timeout=1.0,
    )
    assert sagas.started[saga_id].wait(timeout=60)
    temporal.run(handle.workflow.cancel)
    with pytest.raises(SagaCancelledError) as cancelled:
        temporal.run(handle.outcome)
    outcome = cancelled.value.outcome
    assert isinstance(outcome, Failure)
    # The step in flight was cut off: its outcome is unknown, so its on_unknown voided it.
    assert outcome.compensated == ("c", "b", "a")
    assert order_of(saga_id) == [
        ("action", "a"),
        ("action", "b"),
        ("action", "c"),
        ("unknown", "c"),
        ("compensation", "b"),
        ("compensation", "a"),
    ]
    assert sagas.effects[saga_id][3][4] == f"{saga_id}/c"  # the key on_unknown was given
    description = temporal.run(handle.workflow.describe)
    assert description.status == WorkflowExecutionStatus.CANCELED


def test_an_attempt_whose_outcome_is_lost_is_run_again_with_the_same_key(
    temporal: TemporalSession,
) -> None:
    saga_id, outcome = run(temporal, "lost", None, activity_timeout=0.3)
    assert outcome == Success(f"b (key {saga_id}/b)")
    assert [result for kind, path, _, _, result in sagas.effects[saga_id] if path == "b"] == [
        "run 1",
        "run 2",
    ]
    failed = [event for event in sagas.events[saga_id] if isinstance(event, StepFailed)]
    assert failed == []  # the retry settled it forward
    retried = [event for event in sagas.events[saga_id] if isinstance(event, StepRetrying)]
    assert len(retried) == 1 and isinstance(retried[0].error, UnknownOutcomeError)


def test_an_unknown_outcome_goes_to_on_unknown_with_the_steps_key(
    temporal: TemporalSession,
) -> None:
    saga_id, outcome = run(temporal, "unanswered", None)
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, UnknownOutcomeError)
    assert outcome.compensated == ("b", "a")
    assert ("unknown", "b", 1, "b", f"{saga_id}/b") in sagas.effects[saga_id]


def test_a_non_activity_step_built_by_a_bind_fails_when_reached(
    temporal: TemporalSession,
) -> None:
    _, outcome = run(temporal, "late-lambda", None)
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, NotAnActivityError)
    assert "step 'shout'" in str(outcome.error)
    assert outcome.compensated == ("a",)


def test_starting_a_saga_id_again_runs_it_once(temporal: TemporalSession) -> None:
    saga_id = fresh_id("order")
    order = Order("o-3", "pen", 1, 100)
    first = temporal.run(
        execute, temporal.client, definitions, order_saga, order, id=saga_id,
        task_queue=temporal.task_queue,
    )
    again = temporal.run(
        execute, temporal.client, definitions, order_saga, order, id=saga_id,
        task_queue=temporal.task_queue,
    )
    assert first == again == Success("S-o-3")
    assert len(sagas.effects[saga_id]) == 3
