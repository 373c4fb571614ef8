"""The testing kit's properties of a run, over generated sagas run as Temporal workflows.

The kit's strategies (`fsaga.testing.strategies`) draw saga trees and fault plans; the trees are
built with activities (tests/temporal_sagas.py) and run on the time-skipping test server, under
drawn options (sequential or concurrent undo, the undo going on or stopping after a compensation
fails for good). The kit's checks then read the run's events, as the worker's listener received
them, and its effects, as the activities recorded them: compensations in reverse order (reverse
causal order when the undo is concurrent), nothing unstarted compensated, every completed step
compensated or reported, no forward work once the undo began, each compensation given its own
step's result.

Siblings of a failed branch are left to settle here: cancelling them
(``on_branch_failure="cancel"``) may ask the server to cancel an activity that has just
completed, which the real server accepts and the time-skipping server refuses (the workflow
task then fails for ever); tests/test_temporal_dev_server.py cancels siblings on the real one.

Retry waits and deadlines are on the server's virtual time, so a run costs a few milliseconds
of activity dispatch per effect; the example count is kept small for the suite's budget.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
import temporal_sagas as sagas
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporal_env import TemporalSession, require_temporal
from temporal_sagas import build_spec, definitions, spec_json

pytestmark = pytest.mark.temporal

require_temporal()

from fsaga import Failure, PartialFailure, Success  # noqa: E402
from fsaga.events import Event, SagaFinished, StepCompleted  # noqa: E402
from fsaga.interpreter.settings import CompensationPolicy  # noqa: E402
from fsaga.temporal import execute  # noqa: E402
from fsaga.testing import RecordedEffect, RecordingInterpreter, check_run  # noqa: E402
from fsaga.testing.strategies import SagaSpec, fault_plans, saga_specs  # noqa: E402


@dataclass(frozen=True)
class Trace:
    """A run's trace as the kit's checks read it."""

    events: Sequence[Event]
    effects: Sequence[RecordedEffect]


def recorded_trace(saga_id: str) -> Trace:
    """The run's events, and its effects, each compensation holding the very result its step's
    `StepCompleted` event carries once it is checked to be equal to it (the activity received a
    copy: the value went through Temporal's payload converter)."""
    events = sagas.events[saga_id]
    results = {event.path: event.result for event in events if isinstance(event, StepCompleted)}
    effects: list[RecordedEffect] = []
    for kind, path, attempt, argument, result in sagas.effects[saga_id]:
        if kind == "compensation":
            assert argument == results[path], (
                f"the compensation of {path!r} received {argument!r}, its step returned "
                f"{results[path]!r}"
            )
            argument = results[path]
        effects.append(RecordedEffect(kind, path, attempt, argument, result))
    return Trace(events, effects)


def steps_of(spec: SagaSpec) -> list[str]:
    """The paths of the steps a run of `spec` without faults starts (under `SyncInterpreter`:
    the same saga value, its activities called in the test's thread)."""
    recording = RecordingInterpreter()
    build_spec(spec).run(recording, saga_id=f"discover-{uuid.uuid4().hex[:8]}")
    return list(dict.fromkeys(recording.paths("action")))


policies: st.SearchStrategy[CompensationPolicy] = st.sampled_from(("continue", "stop"))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    spec=saga_specs(max_leaves=6, timeouts=True),
    data=st.data(),
    concurrent_compensation=st.booleans(),
    on_compensation_failure=policies,
)
def test_the_kits_properties_hold_for_generated_sagas_on_temporal(
    temporal: TemporalSession,
    spec: SagaSpec,
    data: st.DataObject,
    concurrent_compensation: bool,
    on_compensation_failure: CompensationPolicy,
) -> None:
    paths = steps_of(spec)
    plan = data.draw(fault_plans(paths, interrupts=False))
    saga_id = f"generated-{uuid.uuid4().hex[:8]}"
    sagas.plans[saga_id] = plan
    try:
        outcome = temporal.run(
            execute,
            temporal.client,
            definitions,
            "generated",
            spec_json(spec),
            id=saga_id,
            task_queue=temporal.task_queue,
            concurrent_compensation=concurrent_compensation,
            on_compensation_failure=on_compensation_failure,
        )
        trace = recorded_trace(saga_id)
        finished = trace.events[-1]
        assert isinstance(finished, SagaFinished)
        # The client's outcome is the one the workflow reached (its errors decoded again).
        assert type(outcome) is type(finished.outcome)
        if isinstance(outcome, Failure | PartialFailure):
            assert isinstance(finished.outcome, Failure | PartialFailure)
            assert outcome.compensated == finished.outcome.compensated
        else:
            assert isinstance(outcome, Success)
        check_run(trace, finished.outcome, concurrent_compensation=concurrent_compensation)
        if not plan.actions:
            assert isinstance(outcome, Success)
    finally:
        sagas.reset(saga_id)
