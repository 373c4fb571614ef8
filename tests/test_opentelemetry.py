"""Traces with OpenTelemetry (fsaga.contrib.opentelemetry): the exact span tree of runs, as the
SDK's in-memory exporter receives it, under the sync and async interpreters and durable runs."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.lowlevel
import pytest
from crashing_journal import Crash, CrashingJournal
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from fsaga import (
    AsyncInterpreter,
    Failure,
    PartialFailure,
    Retry,
    Saga,
    Success,
    UnknownOutcomeError,
    current_context,
    in_worker_thread,
    par,
    step,
)
from fsaga.contrib.opentelemetry import Tracing, tracing
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.interpreter import SyncInterpreter
from fsaga.journal import JsonCodec, MemoryJournal, SqliteJournal
from fsaga.journal.rendering import describe_entry

_T = TypeVar("_T")


class Declined(Exception):
    pass


class StartOrder(SpanProcessor):
    """Numbers spans in the order they start (the exporter gets them in the order they end)."""

    def __init__(self) -> None:
        self.order: dict[int, int] = {}
        self.lock = threading.Lock()

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        with self.lock:
            self.order[span.context.span_id] = len(self.order)

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@dataclass
class Traced:
    """A tracer provider whose spans end up in `exporter`, and a `Tracing` that uses it."""

    provider: TracerProvider
    exporter: InMemorySpanExporter
    starts: StartOrder
    tracing: Tracing

    @classmethod
    def make(cls) -> Traced:
        provider = TracerProvider()
        exporter = InMemorySpanExporter()
        starts = StartOrder()
        provider.add_span_processor(starts)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return cls(provider, exporter, starts, tracing(tracer_provider=provider))

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer("tests")

    def spans(self) -> list[ReadableSpan]:
        """The finished spans, in the order they started."""
        return sorted(
            self.exporter.get_finished_spans(), key=lambda span: self.starts.order[span_id(span)]
        )

    def named(self, name: str) -> ReadableSpan:
        (span,) = [span for span in self.spans() if span.name == name]
        return span

    def tree(self) -> list[str]:
        """The span tree, one line per span, children indented under their parent in the order
        they started; every attempt span checked for the attributes it must carry."""
        spans = self.spans()
        ids = {span_id(span) for span in spans}
        children: dict[int | None, list[ReadableSpan]] = {}
        for span in spans:
            parent = span.parent.span_id if span.parent is not None else None
            children.setdefault(parent if parent in ids else None, []).append(span)
        lines: list[str] = []

        def render(span: ReadableSpan, depth: int) -> None:
            check_attributes(span)
            lines.append("  " * depth + describe(span))
            for child in children.get(span_id(span), []):
                render(child, depth + 1)

        for root in children.get(None, []):
            render(root, 0)
        return lines


def span_id(span: ReadableSpan) -> int:
    context = span.context
    assert context is not None
    number: int = context.span_id
    return number


def describe(span: ReadableSpan) -> str:
    """``name #attempt outcome`` and what else the span says, in a fixed order."""
    attributes = dict(span.attributes or {})
    words = [span.name]
    if "fsaga.attempt" in attributes:
        words.append(f"#{attributes['fsaga.attempt']}")
    if "fsaga.outcome" in attributes:
        words.append(str(attributes["fsaga.outcome"]))
    for key in ("fsaga.compensated", "fsaga.compensation_failed", "fsaga.skipped"):
        if attributes.get(key):
            words.append(f"{key.removeprefix('fsaga.')}={','.join(attributes[key])}")  # type: ignore[arg-type]
    if attributes.get("fsaga.unresolved"):
        words.append(f"unresolved={','.join(attributes['fsaga.unresolved'])}")  # type: ignore[arg-type]
    if "fsaga.retry.delay" in attributes:
        words.append(f"retry in {attributes['fsaga.retry.delay']}s")
    if attributes.get("fsaga.branch"):
        words.append(f"branch {attributes['fsaga.branch']}")
    if attributes.get("fsaga.recovered"):
        words.append("recovered")
    if span.links:
        words.append(f"links={len(span.links)}")
    if span.status.status_code is StatusCode.ERROR:
        words.append(f"ERROR({span.status.description})")
    for event in span.events:
        words.append(f"<{event.name}>")
    return " ".join(words)


def check_attributes(span: ReadableSpan) -> None:
    """An attempt span carries its saga id, path, idempotency key and kind, consistent with its
    name; an error status comes with the exception recorded."""
    attributes = dict(span.attributes or {})
    kinds = {"step": "action", "compensate": "compensation", "on_unknown": "unknown"}
    prefix, _, path = span.name.partition(" ")
    if prefix in kinds:
        saga_id = attributes["fsaga.saga_id"]
        assert attributes["fsaga.step.path"] == path
        assert attributes["fsaga.idempotency_key"] == f"{saga_id}/{path}"
        assert attributes["fsaga.effect.kind"] == kinds[prefix]
        assert isinstance(attributes["fsaga.attempt"], int)
    if span.status.status_code is StatusCode.ERROR and span.name != "saga run":
        assert [event.name for event in span.events] == ["exception"]


@pytest.fixture
def traced() -> Traced:
    return Traced.make()


def noting(log: list[str], name: str, value: _T) -> Callable[[], _T]:
    """An effect that notes `name` in `log` and returns `value`."""

    def effect() -> _T:
        log.append(name)
        return value

    return effect


def reserve(log: list[str]) -> Saga[int]:
    return step(noting(log, "reserve", 1), lambda _: log.append("undo"), name="reserve")


# -- sync runs ---------------------------------------------------------------------------------


def test_a_successful_run_is_one_span_with_a_child_per_step(traced: Traced) -> None:
    log: list[str] = []
    saga = reserve(log).then(step(lambda: "charged", name="charge"))

    with traced.tracer.start_as_current_span("request"):
        outcome = saga.run(SyncInterpreter(listeners=[traced.tracing]), saga_id="order-1")

    assert outcome == Success("charged")
    assert traced.tree() == [
        "request",
        "  saga run success",
        "    step reserve #1 completed",
        "    step charge #1 completed",
    ]
    assert dict(traced.named("step charge").attributes or {}) == {
        "fsaga.saga_id": "order-1",
        "fsaga.step.path": "charge",
        "fsaga.attempt": 1,
        "fsaga.idempotency_key": "order-1/charge",
        "fsaga.effect.kind": "action",
        "fsaga.outcome": "completed",
    }
    assert dict(traced.named("saga run").attributes or {}) == {
        "fsaga.saga_id": "order-1",
        "fsaga.outcome": "success",
    }
    assert traced.named("saga run").status.status_code is StatusCode.UNSET
    assert repr(traced.tracing) == "<Tracing: 0 run(s) open>"


def test_a_failed_run_records_the_error_and_each_compensation(traced: Traced) -> None:
    log: list[str] = []

    def declined() -> None:
        raise Declined("card declined")

    saga = (
        reserve(log)
        .then(step(lambda: 2, lambda _: log.append("refund"), name="hold"))
        .then(step(declined, name="charge"))
    )
    outcome = saga.run(SyncInterpreter(listeners=[traced.tracing]), saga_id="order-2")

    assert isinstance(outcome, Failure)
    assert traced.tree() == [
        "saga run failure compensated=hold,reserve ERROR(Declined: card declined) <exception>",
        "  step reserve #1 completed",
        "  step hold #1 completed",
        "  step charge #1 failed ERROR(Declined: card declined) <exception>",
        "  compensate hold #1 compensated",
        "  compensate reserve #1 compensated",
    ]
    (event,) = traced.named("step charge").events
    assert event.attributes is not None
    assert event.attributes["exception.type"] == f"{__name__}.Declined"
    assert event.attributes["exception.message"] == "card declined"


def test_a_failing_compensation_and_its_retries_are_spans_of_their_own(traced: Traced) -> None:
    def undo_fails(_: object) -> None:
        raise Declined("still reserved")

    saga = step(
        lambda: 1,
        undo_fails,
        name="reserve",
        compensation_retry=Retry(2, delay=0.5, jitter=0.0),
    ).then(step(lambda: (_ for _ in ()).throw(Declined("no")), name="charge"))
    interpreter = SyncInterpreter(listeners=[traced.tracing], sleep=lambda _: None)
    outcome = saga.run(interpreter, saga_id="order-3")

    assert isinstance(outcome, PartialFailure)
    assert traced.tree() == [
        "saga run partial_failure compensation_failed=reserve ERROR(Declined: no) <exception>",
        "  step reserve #1 completed",
        "  step charge #1 failed ERROR(Declined: no) <exception>",
        "  compensate reserve #1 failed retry in 0.5s ERROR(Declined: still reserved) <exception>",
        "  compensate reserve #2 failed ERROR(Declined: still reserved) <exception>",
    ]


def test_each_retry_is_an_attempt_span_and_the_wait_is_on_the_failed_one(traced: Traced) -> None:
    failures = iter([Declined("busy"), Declined("busy again")])

    def flaky() -> str:
        for error in failures:
            raise error
        return "charged"

    saga = step(flaky, name="charge", retry=Retry(3, delay=1.0, backoff=2.0, jitter=0.0))
    interpreter = SyncInterpreter(listeners=[traced.tracing], sleep=lambda _: None)

    assert saga.run(interpreter, saga_id="order-4") == Success("charged")
    assert traced.tree() == [
        "saga run success",
        "  step charge #1 failed retry in 1.0s ERROR(Declined: busy) <exception>",
        "  step charge #2 failed retry in 2.0s ERROR(Declined: busy again) <exception>",
        "  step charge #3 completed",
    ]


def test_an_unknown_outcome_is_marked_and_settled_by_its_own_compensation(traced: Traced) -> None:
    def no_answer() -> None:
        raise UnknownOutcomeError("the gateway did not answer")

    saga = reserve([]).then(step(no_answer, on_unknown=lambda _: None, name="charge"))
    outcome = saga.run(SyncInterpreter(listeners=[traced.tracing]), saga_id="order-5")

    assert isinstance(outcome, Failure)
    assert traced.tree() == [
        "saga run failure compensated=charge,reserve"
        " ERROR(UnknownOutcomeError: the gateway did not answer) <exception>",
        "  step reserve #1 completed",
        "  step charge #1 unknown ERROR(UnknownOutcomeError: the gateway did not answer)"
        " <exception>",
        "  on_unknown charge #1 compensated",
        "  compensate reserve #1 compensated",
    ]
    assert traced.named("on_unknown charge").attributes == {
        "fsaga.saga_id": "order-5",
        "fsaga.step.path": "charge",
        "fsaga.attempt": 1,
        "fsaga.idempotency_key": "order-5/charge",
        "fsaga.effect.kind": "unknown",
        "fsaga.outcome": "compensated",
    }


def test_an_idempotent_step_with_an_unknown_outcome_is_retried_as_a_new_attempt(
    traced: Traced,
) -> None:
    answers = iter([UnknownOutcomeError("timed out reading the answer")])

    def charge() -> str:
        for error in answers:
            raise error
        return "charged"

    saga = step(charge, lambda _: None, name="charge", idempotent=True)
    assert saga.run(SyncInterpreter(listeners=[traced.tracing])) == Success("charged")
    assert traced.tree() == [
        "saga run success",
        "  step charge #1 unknown retry in 0.0s"
        " ERROR(UnknownOutcomeError: timed out reading the answer) <exception>",
        "  step charge #2 completed",
    ]


def test_an_effects_own_spans_nest_under_its_attempt(traced: Traced) -> None:
    tracer = traced.tracer
    failures = iter([Declined("connection reset")])

    def charge() -> str:
        with tracer.start_as_current_span("POST /charges") as span:
            span.set_attribute("idempotency_key", current_context().idempotency_key)
            for error in failures:
                raise error
        return "charged"

    def refund(_: str) -> None:
        with tracer.start_as_current_span("POST /refunds"):
            pass

    saga = step(charge, refund, name="charge", retry=Retry(2, jitter=0.0)).then(
        step(lambda: (_ for _ in ()).throw(Declined("out of stock")), name="ship")
    )
    interpreter = SyncInterpreter(listeners=[traced.tracing], sleep=lambda _: None)
    assert isinstance(saga.run(interpreter, saga_id="order-6"), Failure)

    assert traced.tree() == [
        "saga run failure compensated=charge ERROR(Declined: out of stock) <exception>",
        "  step charge #1 failed retry in 0.1s ERROR(Declined: connection reset) <exception>",
        "    POST /charges ERROR(Declined: connection reset) <exception>",
        "  step charge #2 completed",
        "    POST /charges",
        "  step ship #1 failed ERROR(Declined: out of stock) <exception>",
        "  compensate charge #1 compensated",
        "    POST /refunds",
    ]
    # Outside the run, the current span is what it was.
    assert not trace.get_current_span().get_span_context().is_valid


def test_runs_in_threads_at_once_keep_their_spans_apart(traced: Traced) -> None:
    barrier = threading.Barrier(2)
    tracer = traced.tracer

    def work() -> str:
        barrier.wait()  # both runs are inside their step now
        with tracer.start_as_current_span("query"):
            return current_context().saga_id

    def run(saga_id: str) -> None:
        step(work, name="work").run(SyncInterpreter(listeners=[traced.tracing]), saga_id=saga_id)

    threads = [threading.Thread(target=run, args=(f"run-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    runs = [span for span in traced.spans() if span.name == "saga run"]
    assert len(runs) == 2
    for run_span in runs:
        saga_id = dict(run_span.attributes or {})["fsaga.saga_id"]
        (attempt,) = [
            span
            for span in traced.spans()
            if span.parent is not None and span.parent.span_id == span_id(run_span)
        ]
        assert dict(attempt.attributes or {})["fsaga.saga_id"] == saga_id
        (query,) = [
            span
            for span in traced.spans()
            if span.parent is not None and span.parent.span_id == span_id(attempt)
        ]
        assert query.name == "query"


def test_a_tracing_listener_ignores_runs_it_did_not_see_start(traced: Traced) -> None:
    from fsaga.events import StepStarted

    traced.tracing(StepStarted("elsewhere", "charge", 1, 0.0))
    assert traced.tracing.carrier("elsewhere") == {}
    assert traced.exporter.get_finished_spans() == ()


# -- async runs --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_par_branches_are_sibling_spans_and_their_effects_nest_under_them(
    traced: Traced,
) -> None:
    tracer = traced.tracer

    async def fetch(name: str, turns: int) -> str:
        with tracer.start_as_current_span(f"GET /{name}"):
            for _ in range(turns):
                await anyio.lowlevel.checkpoint()  # the other branch runs meanwhile
        return name

    def undo(_: str) -> None:
        with tracer.start_as_current_span("DELETE"):
            pass

    async def declined() -> None:
        await anyio.lowlevel.checkpoint()
        raise Declined("no stock")

    saga = par(
        step(lambda: fetch("a", 1), undo, name="a"),
        step(lambda: fetch("b", 3), undo, name="b").then(step(declined, name="c")),
    )
    outcome = await saga.run(AsyncInterpreter(listeners=[traced.tracing]), saga_id="p")

    assert isinstance(outcome, Failure)
    assert traced.tree() == [
        "saga run failure compensated=#1/b,a ERROR(Declined: no stock) <exception>",
        "  step a #1 completed branch 1:0",
        "    GET /a",
        "  step #1/b #1 completed branch 1:1",
        "    GET /b",
        "  step #1/c #1 failed branch 1:1 ERROR(Declined: no stock) <exception>",
        "  compensate #1/b #1 compensated",
        "    DELETE",
        "  compensate a #1 compensated",
        "    DELETE",
    ]
    # Concurrent: b's request began before a's ended.
    get_a, get_b = traced.named("GET /a"), traced.named("GET /b")
    assert get_a.end_time is not None
    assert get_b.start_time is not None
    assert get_b.start_time < get_a.end_time


@pytest.mark.anyio
async def test_async_timeouts_are_unknown_outcomes_and_threads_see_the_span(
    traced: Traced,
) -> None:
    tracer = traced.tracer

    def blocking_read() -> int:
        with tracer.start_as_current_span("SELECT"):
            return 1

    async def hang() -> None:
        with tracer.start_as_current_span("POST /slow"):
            await anyio.sleep(10)

    saga = step(in_worker_thread(blocking_read), lambda _: None, name="read").then(
        step(hang, on_unknown=lambda _: None, name="slow", timeout=0.01)
    )
    outcome = await saga.run(AsyncInterpreter(listeners=[traced.tracing]), saga_id="t")

    assert isinstance(outcome, Failure)
    error = (
        "StepTimeoutError: step 'slow' timed out on attempt 1: it ran past its 0.01 s step timeout"
    )
    assert traced.tree() == [
        f"saga run failure compensated=slow,read ERROR({error}) <exception>",
        "  step read #1 completed",
        "    SELECT",
        f"  step slow #1 unknown ERROR({error}) <exception>",
        "    POST /slow",
        "  on_unknown slow #1 compensated",
        "  compensate read #1 compensated",
    ]


# -- durable runs ------------------------------------------------------------------------------


def order_definitions(effects: list[str]) -> SagaDefinitions:
    definitions = SagaDefinitions()

    @definitions.saga("order")
    def order(cents: int) -> Saga[str]:
        return (
            step(
                noting(effects, "reserve", cents),
                lambda _: effects.append("release"),
                name="reserve",
            )
            .then(
                step(
                    noting(effects, "charge", "ch-1"),
                    lambda _: effects.append("refund"),
                    name="charge",
                    idempotent=True,
                )
            )
            .then(step(lambda: "shipped", name="ship"))
        )

    return definitions


def crash_in(
    path: Path, definitions: SagaDefinitions, traced: Traced, *, crash_at: int, run: str
) -> None:
    """Run (``start``) or recover (``recover``) the saga ``order-9`` over the journal at `path`
    in a process that dies at journal write `crash_at`."""
    with SqliteJournal(path) as journal:
        runs = DurableSagas(
            CrashingJournal(journal, crash_at=crash_at), definitions, listeners=[traced.tracing]
        )
        if run == "start":
            with pytest.raises(Crash):
                runs.start("order", 450, saga_id="order-9")
        else:
            with pytest.raises(Crash):
                runs.recover()


def carriers_in(path: Path) -> list[str]:
    with SqliteJournal(path) as journal:
        return [
            describe_entry(entry)
            for entry in journal.entries("order-9")
            if entry.kind == "intent" and entry.payload is not None
        ]


def traceparent(span: ReadableSpan) -> str:
    context = span.context
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def ids(context: trace.SpanContext | None) -> tuple[int, int]:
    """A span's trace and span ids (a link's context was read back, so it counts as remote)."""
    assert context is not None
    return context.trace_id, context.span_id


def test_a_recovered_run_links_to_the_run_that_crashed(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    effects: list[str] = []
    definitions = order_definitions(effects)
    crashed = Traced.make()
    # Writes: 0 creates the saga with reserve's intent, 1 appends reserve's result and charge's
    # intent, 2 would append charge's result: the process dies with charge in flight.
    crash_in(path, definitions, crashed, crash_at=2, run="start")
    original = crashed.named("saga run")
    # It recorded no outcome: its span ends as stopped (a SagaStopped event), not finished.
    assert original.attributes is not None
    assert original.attributes["fsaga.outcome"] == "stopped"
    assert original.attributes["fsaga.stop_reason"] == "interrupted"

    # The run kept its context with its first intent, and only there.
    carrier = f'{{"carrier": {{"traceparent": "{traceparent(original)}"}}}}'
    assert carriers_in(path) == [f"#1 intent reserve (attempt 1): {carrier}"]

    recovering = Traced.make()
    with SqliteJournal(path) as journal:
        runs = DurableSagas(journal, definitions, listeners=[recovering.tracing])
        assert runs.recover() == {"order-9": Success("shipped")}

    assert recovering.tree() == [
        "saga run success recovered links=1",
        "  step reserve #1 completed",
        "  step charge #1 unknown retry in 0.0s ERROR(UnknownOutcomeError: step 'charge' was"
        " running when its process stopped) <exception>",
        "  step charge #2 completed",
        "  step ship #1 completed",
    ]
    recovered = recovering.named("saga run")
    (link,) = recovered.links
    assert ids(link.context) == ids(original.context)
    assert link.attributes == {"fsaga.link": "earlier run"}
    # A trace of its own (it was started outside any span), linked, not continued.
    assert recovered.context is not None
    assert original.context is not None
    assert recovered.context.trace_id != original.context.trace_id
    assert recovered.parent is None
    assert effects == ["reserve", "charge", "charge"]


def test_a_second_recovery_links_to_every_run_before_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    definitions = order_definitions([])
    first, second, third = Traced.make(), Traced.make(), Traced.make()
    crash_in(path, definitions, first, crash_at=2, run="start")
    # The recovery writes charge's second intent (its first write), then dies before its result.
    crash_in(path, definitions, second, crash_at=1, run="recover")
    runs = [traced.named("saga run") for traced in (first, second)]
    assert len(carriers_in(path)) == 2

    with SqliteJournal(path) as journal:
        outcome = DurableSagas(journal, definitions, listeners=[third.tracing]).recover()

    assert list(outcome) == ["order-9"]
    last = third.named("saga run")
    assert [ids(link.context) for link in last.links] == [ids(run.context) for run in runs]
    assert dict(last.attributes or {})["fsaga.recovered"] is True


def test_journals_without_carriers_recover_and_carriers_do_not_change_a_replay() -> None:
    effects: list[str] = []
    definitions = order_definitions(effects)
    untraced = MemoryJournal()
    with pytest.raises(Crash):
        DurableSagas(CrashingJournal(untraced, crash_at=2), definitions).start(
            "order", 450, saga_id="order-9"
        )
    assert not [
        entry for entry in untraced.entries("order-9") if entry.kind == "intent" and entry.payload
    ]
    traced = Traced.make()
    assert DurableSagas(untraced, definitions, listeners=[traced.tracing]).recover() == {
        "order-9": Success("shipped")
    }
    assert traced.tree()[0] == "saga run success recovered"

    # The other way round: a traced journal recovered by a run that traces nothing.
    carried = MemoryJournal()
    with pytest.raises(Crash):
        DurableSagas(
            CrashingJournal(carried, crash_at=2), definitions, listeners=[Traced.make().tracing]
        ).start("order", 450, saga_id="order-9")
    assert carried.entries("order-9")[0].payload is not None
    assert DurableSagas(carried, definitions).recover() == {"order-9": Success("shipped")}


def test_a_payload_that_is_not_a_carrier_is_passed_over() -> None:
    from fsaga.durable.carrier import _recorded_carriers
    from fsaga.journal import Entry

    codec = JsonCodec()
    entries = [
        Entry(1, "intent", "a", 1, b"not json"),
        Entry(2, "intent", "b", 1, codec.encode({"carrier": {"traceparent": 7}})),
        Entry(3, "intent", "c", 1, codec.encode(["carrier"])),
        Entry(4, "completed", "c", 1, codec.encode({"carrier": {"k": "v"}})),
        Entry(5, "compensation_intent", "c", 1, codec.encode({"carrier": {"k": "v"}})),
    ]
    assert _recorded_carriers(entries, codec) == [{"k": "v"}]


@pytest.mark.anyio
async def test_an_async_durable_recovery_links_to_the_run_that_crashed(traced: Traced) -> None:
    definitions = SagaDefinitions()
    tracer = traced.tracer

    async def fetch(name: str) -> str:
        with tracer.start_as_current_span(f"GET /{name}"):
            await anyio.lowlevel.checkpoint()
        return name

    @definitions.saga("pair")
    def pair(_: int) -> Saga[tuple[str, str]]:
        return par(
            step(lambda: fetch("a"), lambda _: None, name="a", idempotent=True),
            step(lambda: fetch("b"), lambda _: None, name="b", idempotent=True),
        )

    journal = MemoryJournal()
    with pytest.raises(Crash):
        await DurableSagas(
            CrashingJournal(journal, crash_at=2), definitions, listeners=[traced.tracing]
        ).start_async("pair", 1, saga_id="pair-1")
    original = traced.named("saga run")
    traced.exporter.clear()

    outcomes = await DurableSagas(journal, definitions, listeners=[traced.tracing]).recover_async()

    assert outcomes == {"pair-1": Success(("a", "b"))}
    recovered = traced.named("saga run")
    assert [ids(link.context) for link in recovered.links] == [ids(original.context)]
    # The effects that ran again nest under their attempts, as in any run.
    for span in traced.spans():
        if span.name.startswith("GET /"):
            parent = [
                other
                for other in traced.spans()
                if span.parent is not None and span_id(other) == span.parent.span_id
            ]
            assert [other.name for other in parent] == [f"step {span.name[5:]}"]


def test_a_carrier_that_raises_never_fails_a_durable_run(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def __call__(self, event: object) -> None:
            pass

        def carrier(self, saga_id: str) -> dict[str, str]:
            raise RuntimeError("cannot carry")

        def resuming(self, saga_id: str, carriers: Sequence[object]) -> Iterator[None]:
            raise RuntimeError("cannot resume")

    effects: list[str] = []
    definitions = order_definitions(effects)
    journal = MemoryJournal()
    with pytest.raises(Crash):
        DurableSagas(CrashingJournal(journal, crash_at=2), definitions, listeners=[Broken()]).start(
            "order", 450, saga_id="order-9"
        )
    assert DurableSagas(journal, definitions, listeners=[Broken()]).recover() == {
        "order-9": Success("shipped")
    }
    assert "carrier" in caplog.text
    assert "raised" in caplog.text


def test_importing_it_without_opentelemetry_says_which_extra_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if it were not installed\n"
        "import fsaga, fsaga.contrib\n"
        "try:\n"
        "    import fsaga.contrib.opentelemetry\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert completed.stdout == (
        "fsaga.contrib.opentelemetry needs the OpenTelemetry API: pip install 'fsaga[otel]'\n"
    )


def test_importing_fsaga_imports_no_opentelemetry() -> None:
    code = "import sys, fsaga, fsaga.contrib, fsaga.durable\nprint('opentelemetry' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert completed.stdout == "False\n"
