"""Traces of saga runs with OpenTelemetry: ``pip install fsaga[otel]`` (the API only).

`tracing()` makes a listener (`Tracing`) to give an interpreter, or `fsaga.durable.DurableSagas`,
like any other listener. Each run then has a span, and each attempt of a step's action and of
a compensation a span of its own under it:

- ``saga run``: the run, under whatever span is current where the run starts;
- ``step PATH``: one per attempt of a step's action (a retry is a span of its own);
- ``compensate PATH``: one per attempt of a compensation;
- ``on_unknown PATH``: one per attempt of an unknown-outcome compensation.

While an effect runs, its attempt's span is the current span (in its task, and in the threads
and tasks it starts), so the spans an effect makes itself (an HTTP call, a SQL query traced by
their own instrumentation) nest under its step. Attributes:

- every span: ``fsaga.saga_id``;
- attempts: ``fsaga.step.path``, ``fsaga.attempt`` (from 1), ``fsaga.idempotency_key``,
  ``fsaga.effect.kind`` (``"action"``, ``"compensation"`` or ``"unknown"``), ``fsaga.outcome``
  (for an action ``"completed"``, ``"failed"`` or ``"unknown"``, for a compensation
  ``"compensated"`` or ``"failed"``), ``fsaga.retry.delay`` (seconds) when another attempt
  follows, ``fsaga.branch`` for a step inside `par` branches (see `fsaga.events.StepStarted`);
- the run: ``fsaga.outcome`` (``"success"``, ``"failure"`` or ``"partial_failure"``),
  ``fsaga.compensated`` (the paths undone, in order), and for a partial failure
  ``fsaga.compensation_failed``, ``fsaga.skipped`` and ``fsaga.unresolved``; ``fsaga.recovered``
  on the run of a durable recovery.

An attempt that failed or whose outcome is unknown, and a run that failed, have the status
``ERROR`` and the error recorded as an exception event. A durable run (`DurableSagas` given
this listener) writes the context of its run span into the journal with its first intent; a
recovery's run span links to the run spans of the runs that wrote the saga before it (one
link each, attribute ``fsaga.link`` = ``"earlier run"``).

>>> from opentelemetry.sdk.trace import TracerProvider
>>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
>>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
>>> from fsaga import step
>>> from fsaga.interpreter import SyncInterpreter
>>> exporter = InMemorySpanExporter()
>>> provider = TracerProvider()
>>> provider.add_span_processor(SimpleSpanProcessor(exporter))
>>> saga = step(lambda: 1, name="reserve").then(step(lambda: 2, name="charge"))
>>> saga.run(SyncInterpreter(listeners=[tracing(tracer_provider=provider)]))
Success(value=2)
>>> [span.name for span in exporter.get_finished_spans()]
['step reserve', 'step charge', 'saga run']
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Literal, final

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Link, Span, Status, StatusCode, Tracer, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from opentelemetry.util.types import AttributeValue
except ImportError as missing:
    raise ImportError(
        "fsaga.contrib.opentelemetry needs the OpenTelemetry API: pip install 'fsaga[otel]'"
    ) from missing

from fsaga.context import StepContext, StepContextKind
from fsaga.errors import StepTimeoutError, UnknownOutcomeError
from fsaga.events import (
    CompensationCompleted,
    CompensationFailed,
    CompensationRetrying,
    CompensationStarted,
    Event,
    SagaFinished,
    SagaStarted,
    SagaStopped,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
)
from fsaga.outcome import Failure, Outcome, PartialFailure, Success

__all__ = ["Tracing", "tracing"]

_SCOPE: Final = "fsaga"
"""The instrumentation scope of fsaga's spans."""

_RUN: Final = "saga run"
_SPAN_PREFIX: Final[Mapping[StepContextKind, str]] = {
    "action": "step",
    "compensation": "compensate",
    "unknown": "on_unknown",
}

_SAGA_ID: Final = "fsaga.saga_id"
_PATH: Final = "fsaga.step.path"
_ATTEMPT: Final = "fsaga.attempt"
_KEY: Final = "fsaga.idempotency_key"
_KIND: Final = "fsaga.effect.kind"
_OUTCOME: Final = "fsaga.outcome"
_DELAY: Final = "fsaga.retry.delay"
_BRANCH: Final = "fsaga.branch"
_RECOVERED: Final = "fsaga.recovered"
_LINK: Final = "fsaga.link"

_PROPAGATOR: Final = TraceContextTextMapPropagator()
"""How a run's context is written into the journal and read back: W3C ``traceparent``, whatever
propagators the application configured, so any tool can read it."""

_resumed: ContextVar[tuple[str, tuple[Link, ...]] | None] = ContextVar(
    "fsaga_otel_resumed", default=None
)
"""The saga a durable recovery is about to run here, and the links its run span gets."""


def tracing(*, tracer_provider: TracerProvider | None = None) -> Tracing:
    """A listener that traces every run it hears of (see the module docstring).

    Args:
        tracer_provider: where the spans go; the global one (`opentelemetry.trace`) by default.
    """
    return Tracing(tracer_provider=tracer_provider)


@final
class Tracing:
    """Traces runs from their events (a listener, `fsaga.events.Listener`), makes each attempt's
    span current while its effect runs (`fsaga.events.EffectScope`), and carries a run's
    context across a durable recovery (`fsaga.durable.ContextCarrier`). Made by `tracing`.

    One `Tracing` may serve any number of interpreters and runs at once, in any threads and
    tasks; runs are told apart by their saga ids, so two runs with one id at the same time
    share one set of spans.
    """

    __slots__ = ("_runs", "_tracer")

    def __init__(self, *, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer: Tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self._runs: dict[str, _RunSpans] = {}

    def __repr__(self) -> str:
        return f"<Tracing: {len(self._runs)} run(s) open>"

    # -- the listener -------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Open, close or annotate the span `event` concerns."""
        if type(event) is SagaStarted:
            self._start_run(event.saga_id)
            return
        run = self._runs.get(event.saga_id)
        if run is None:
            return  # a run that started before this listener heard of it
        match event:
            case StepStarted(path=path, attempt=attempt, branch=branch):
                started = self._start_attempt(run, "action", path, attempt)
                if branch:
                    started.set_attribute(_BRANCH, branch)
                run.actions[path, attempt] = started
            case StepCompleted(path=path, attempt=attempt):
                run.unknown.discard(path)
                _end(run.actions.pop((path, attempt), None), "completed")
            case StepRetrying(path=path, attempt=attempt, error=error, delay=delay):
                outcome = "unknown" if _is_unknown(error) else "failed"
                _end(run.actions.pop((path, attempt), None), outcome, error, delay)
            case StepFailed(path=path, attempt=attempt, error=error, unknown=unknown):
                if unknown:
                    run.unknown.add(path)
                else:
                    run.unknown.discard(path)
                outcome = "unknown" if unknown else "failed"
                span = run.actions.pop((path, attempt), None)
                if span is None:
                    # The attempt it stands for ended already (the wait before its retry was
                    # cut short, or the retry could not start): the run span notes it.
                    _note(run.span, "step failed", path, attempt, outcome, error)
                else:
                    _end(span, outcome, error)
            case CompensationStarted(path=path, attempt=attempt):
                kind: StepContextKind = "unknown" if path in run.unknown else "compensation"
                run.compensations[path, attempt] = self._start_attempt(run, kind, path, attempt)
            case CompensationCompleted(path=path, attempt=attempt):
                _end(run.compensations.pop((path, attempt), None), "compensated")
            case CompensationRetrying(path=path, attempt=attempt, error=error, delay=delay):
                _end(run.compensations.pop((path, attempt), None), "failed", error, delay)
            case CompensationFailed(path=path, attempt=attempt, error=error):
                span = run.compensations.pop((path, attempt), None)
                if span is None:
                    _note(run.span, "compensation failed", path, attempt, "failed", error)
                else:
                    _end(span, "failed", error)
            case SagaFinished(saga_id=saga_id, outcome=outcome):
                self._finish_run(saga_id, outcome)
            case SagaStopped():
                # A durable run that recorded no outcome: another run will finish the saga.
                self._finish_run(event.saga_id, event)

    def _start_run(self, saga_id: str) -> None:
        attributes: dict[str, AttributeValue] = {_SAGA_ID: saga_id}
        links: tuple[Link, ...] = ()
        resumed = _resumed.get()
        if resumed is not None and resumed[0] == saga_id:
            attributes[_RECOVERED] = True
            links = resumed[1]
        span = self._tracer.start_span(_RUN, attributes=attributes, links=links)
        self._runs[saga_id] = _RunSpans(saga_id, span, trace.set_span_in_context(span))

    def _start_attempt(
        self, run: _RunSpans, kind: StepContextKind, path: str, attempt: int
    ) -> Span:
        return self._tracer.start_span(
            f"{_SPAN_PREFIX[kind]} {path}",
            context=run.context,
            attributes={
                _SAGA_ID: run.saga_id,
                _PATH: path,
                _ATTEMPT: attempt,
                _KEY: f"{run.saga_id}/{path}",
                _KIND: kind,
            },
        )

    def _finish_run(self, saga_id: str, outcome: Outcome[object] | SagaStopped) -> None:
        run = self._runs.pop(saga_id, None)
        if run is None:
            return
        for spans in (run.actions, run.compensations):
            # None is left open by the engine's events; should one be, it still ends here.
            for span in spans.values():
                span.set_status(Status(StatusCode.ERROR, "the run ended before this attempt did"))
                span.end()
        span = run.span
        match outcome:
            case Success():
                span.set_attribute(_OUTCOME, "success")
            case Failure(error=error, compensated=compensated):
                span.set_attribute(_OUTCOME, "failure")
                span.set_attribute("fsaga.compensated", compensated)
                _record(span, error)
            case PartialFailure(error, compensated, failed, skipped, unresolved):
                span.set_attribute(_OUTCOME, "partial_failure")
                span.set_attribute("fsaga.compensated", compensated)
                span.set_attribute(
                    "fsaga.compensation_failed", tuple(failure.path for failure in failed)
                )
                span.set_attribute("fsaga.skipped", skipped)
                span.set_attribute("fsaga.unresolved", unresolved)
                _record(span, error)
            case SagaStopped(reason=reason, error=error):
                span.set_attribute(_OUTCOME, "stopped")
                span.set_attribute("fsaga.stop_reason", reason)
                if error is not None:
                    _record(span, error)
        span.end()

    # -- around each effect -------------------------------------------------------------------

    def around_effect(self, context: StepContext) -> AbstractContextManager[object]:
        """Make the span of the attempt `context` describes the current one while its effect
        runs (see `fsaga.events.EffectScope`)."""
        run = self._runs.get(context.saga_id)
        if run is None:
            return nullcontext()
        key = (context.path, context.attempt)
        span = run.actions.get(key) if context.kind == "action" else run.compensations.get(key)
        if span is None:
            return nullcontext()
        if context.kind == "unknown" and context.path not in run.unknown:
            # Named before the effect said what it is (never, with the engine's events).
            span.update_name(f"{_SPAN_PREFIX['unknown']} {context.path}")
            span.set_attribute(_KIND, "unknown")
        return _Current(span)

    # -- across a durable recovery ------------------------------------------------------------

    def carrier(self, saga_id: str) -> dict[str, str]:
        """The context of the run of `saga_id` going on now, as W3C trace context headers, for
        the journal to keep (empty if no run of it is traced here)."""
        run = self._runs.get(saga_id)
        carrier: dict[str, str] = {}
        if run is not None:
            _PROPAGATOR.inject(carrier, context=run.context)
        return carrier

    def resuming(
        self, saga_id: str, carriers: Sequence[Mapping[str, str]]
    ) -> AbstractContextManager[object]:
        """Within it, a run of `saga_id` that starts is a recovery: its span links to the runs
        whose contexts `carriers` hold (what `carrier` gave them, read back from the journal)."""
        return _resuming(saga_id, tuple(_links(carriers)))


@final
@dataclass(slots=True)
class _RunSpans:
    """The spans of one run: its own, and those of the attempts not ended yet."""

    saga_id: str
    span: Span
    context: otel_context.Context
    actions: dict[tuple[str, int], Span] = field(default_factory=dict)
    compensations: dict[tuple[str, int], Span] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)
    """Paths whose last attempt has an unknown outcome: what they compensate next is their
    unknown-outcome compensation."""


@final
class _Current:
    """Makes `span` the current span, in the task or thread that enters it."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> None:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]:
        otel_context.detach(self._token)
        return False


@contextmanager
def _resuming(saga_id: str, links: tuple[Link, ...]) -> Iterator[None]:
    token = _resumed.set((saga_id, links))
    try:
        yield
    finally:
        _resumed.reset(token)


def _links(carriers: Sequence[Mapping[str, str]]) -> Iterator[Link]:
    """A link to each valid context `carriers` hold, once each, in order."""
    seen: set[tuple[int, int]] = set()
    for carrier in carriers:
        context = trace.get_current_span(_PROPAGATOR.extract(dict(carrier))).get_span_context()
        if context.is_valid and (context.trace_id, context.span_id) not in seen:
            seen.add((context.trace_id, context.span_id))
            yield Link(context, {_LINK: "earlier run"})


def _is_unknown(error: BaseException) -> bool:
    """Whether an attempt that failed with `error` has an unknown outcome (contract rule 3)."""
    return isinstance(error, UnknownOutcomeError | StepTimeoutError)


def _end(
    span: Span | None,
    outcome: str,
    error: BaseException | None = None,
    delay: float | None = None,
) -> None:
    if span is None:
        return
    span.set_attribute(_OUTCOME, outcome)
    if delay is not None:
        span.set_attribute(_DELAY, delay)
    if error is not None:
        _record(span, error)
    span.end()


def _record(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def _note(
    span: Span, name: str, path: str, attempt: int, outcome: str, error: BaseException
) -> None:
    span.add_event(
        name,
        {
            _PATH: path,
            _ATTEMPT: attempt,
            _OUTCOME: outcome,
            "exception.type": type(error).__qualname__,
            "exception.message": str(error),
        },
    )
