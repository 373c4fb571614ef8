"""Traces of generated sagas under generated fault plans (fsaga.contrib.opentelemetry): every
attempt of a step and of a compensation has exactly one span, under its run's span, ended with
the outcome its events report, and current while its effect runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Literal, TypeVar

import anyio
import pytest
from hypothesis import event as note
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from test_opentelemetry import Traced, span_id
from trio.testing import MockClock
from virtual_time import VirtualTimeLoop

from fsaga import Outcome
from fsaga.context import StepContext
from fsaga.errors import StepTimeoutError, UnknownOutcomeError
from fsaga.events import (
    CompensationCompleted,
    CompensationFailed,
    CompensationRetrying,
    CompensationStarted,
    Event,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
)
from fsaga.testing import (
    AsyncFaultInjectingInterpreter,
    FaultInjectingInterpreter,
    RecordingInterpreter,
)
from fsaga.testing.strategies import SagaSpec, World, build_saga, fault_plans, saga_specs

_T = TypeVar("_T")

Backend = Literal["asyncio", "trio"]

SPAN_KINDS = {"step": "action", "compensate": "compensation", "on_unknown": "unknown"}


class CurrentSpans:
    """A listener whose effect scope (entered after the tracer's) notes, for each effect, which
    span is current as it starts."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int, int]] = []

    def __call__(self, event: Event) -> None:
        pass

    @contextmanager
    def around_effect(self, context: StepContext) -> Iterator[None]:
        current = trace.get_current_span().get_span_context().span_id
        self.seen.append((context.kind, context.path, context.attempt, current))
        yield


def check_trace(traced: Traced, events: list[Event], current: CurrentSpans) -> None:
    spans = traced.spans()
    # Every span that started has ended (the exporter only gets ended spans).
    assert len(spans) == len(traced.starts.order)
    (run,) = [span for span in spans if span.name == "saga run"]
    assert run.parent is None
    attempts: dict[tuple[str, str, int], ReadableSpan] = {}
    for span in spans:
        if span is run:
            continue
        prefix, _, path = span.name.partition(" ")
        attributes = dict(span.attributes or {})
        attempt = attributes["fsaga.attempt"]
        assert isinstance(attempt, int)
        key = (SPAN_KINDS[prefix], path, attempt)
        assert key not in attempts, f"two spans for {key}"
        attempts[key] = span
        assert span.parent is not None
        assert span.parent.span_id == span_id(run), f"{span.name} is not under the run"

    # One span per attempt that started, of the right kind; none other.
    started: dict[tuple[str, int], str] = {}
    for event in events:
        if isinstance(event, StepStarted):
            started["action:" + event.path, event.attempt] = "action"
        elif isinstance(event, CompensationStarted):
            started["undo:" + event.path, event.attempt] = "undo"
    spanned = {
        (("action:" if kind == "action" else "undo:") + path, attempt)
        for kind, path, attempt in attempts
    }
    assert spanned == set(started)

    # Each span ends with the outcome its attempt's last event reports.
    def span_of(action: bool, path: str, attempt: int) -> ReadableSpan | None:
        kinds = ("action",) if action else ("compensation", "unknown")
        found = [
            attempts[kind, path, attempt] for kind in kinds if (kind, path, attempt) in attempts
        ]
        return found[0] if found else None

    for event in events:
        outcome: str | None = None
        action = True
        delay: float | None = None
        match event:
            case StepCompleted():
                outcome = "completed"
            case StepRetrying(error=error, delay=delay):
                unknown = isinstance(error, UnknownOutcomeError | StepTimeoutError)
                outcome = "unknown" if unknown else "failed"
            case StepFailed(unknown=unknown):
                outcome = "unknown" if unknown else "failed"
            case CompensationCompleted():
                outcome, action = "compensated", False
            case CompensationRetrying(delay=delay):
                outcome, action = "failed", False
            case CompensationFailed():
                outcome, action = "failed", False
            case _:
                continue
        ended = span_of(action, event.path, event.attempt)
        assert ended is not None
        attributes = dict(ended.attributes or {})
        if attributes.get("fsaga.outcome") != outcome:
            # A failure reported for an attempt that had ended already (the wait before its
            # retry was cut short): noted on the run's span.
            assert isinstance(event, StepFailed | CompensationFailed)
            assert "fsaga.retry.delay" in attributes
            notes = [note for note in run.events if note.attributes is not None]
            assert any(
                note.attributes is not None
                and note.attributes["fsaga.step.path"] == event.path
                and note.attributes["fsaga.attempt"] == event.attempt
                for note in notes
            )
            continue
        if delay is not None:
            assert attributes["fsaga.retry.delay"] == delay
        erred = outcome in ("failed", "unknown")
        assert (ended.status.status_code is StatusCode.ERROR) == erred

    # What the examples exercised (``--hypothesis-show-statistics``).
    for kind, _, attempt in attempts:
        note(f"{kind} spans" if attempt == 1 else f"{kind} retried")
    for span in attempts.values():
        if dict(span.attributes or {})["fsaga.outcome"] == "unknown":
            note("unknown outcome")
    for noted in run.events:
        note(f"run span notes: {noted.name}")

    # While each effect ran, its attempt's span was the current one.
    assert len(current.seen) == sum(1 for event in events if isinstance(event, StepStarted)) + sum(
        1 for event in events if isinstance(event, CompensationStarted)
    )
    for kind, path, attempt, current_id in current.seen:
        assert span_id(attempts[kind, path, attempt]) == current_id, (kind, path, attempt)


def action_paths(spec: SagaSpec) -> list[str]:
    interpreter = RecordingInterpreter()
    build_saga(spec, World()).run(interpreter)
    return list(dict.fromkeys(interpreter.paths("action")))


@settings(max_examples=150, deadline=None)
@given(spec=saga_specs(max_leaves=7), data=st.data())
def test_every_attempt_has_one_span_under_its_run(spec: SagaSpec, data: st.DataObject) -> None:
    paths = action_paths(spec)
    plan = data.draw(fault_plans(paths), label="plan")
    traced, current = Traced.make(), CurrentSpans()
    interpreter = FaultInjectingInterpreter(plan, listeners=[traced.tracing, current])
    try:
        build_saga(spec, World()).run(interpreter)
    except KeyboardInterrupt:
        assert plan.interrupt is not None

    check_trace(traced, interpreter.events, current)


def run_on(backend: Backend, function: Callable[[], Awaitable[_T]]) -> _T:
    """Run `function` under `backend`, on virtual time."""
    if backend == "trio":
        return anyio.run(
            function, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
        )
    return anyio.run(function, backend="asyncio", backend_options={"loop_factory": VirtualTimeLoop})


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=75, deadline=None)
@given(spec=saga_specs(max_leaves=7, timeouts=True), data=st.data())
def test_every_async_attempt_has_one_span_under_its_run(
    backend: Backend, spec: SagaSpec, data: st.DataObject
) -> None:
    paths = action_paths(spec)
    plan = data.draw(fault_plans(paths, hangs=True), label="plan")
    traced, current = Traced.make(), CurrentSpans()
    interpreter = AsyncFaultInjectingInterpreter(
        plan,
        timeout=1_000.0,
        listeners=[traced.tracing, current],
        on_branch_failure=data.draw(st.sampled_from(("settle", "cancel")), label="siblings"),
        concurrent_compensation=data.draw(st.booleans(), label="concurrent undo"),
    )

    async def run() -> Outcome[object]:
        return await build_saga(spec, World()).run(interpreter)

    run_on(backend, run)

    check_trace(traced, interpreter.events, current)
