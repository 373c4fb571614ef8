"""Type-level tests of `fsaga.contrib.opentelemetry`: checked by mypy, never run by pytest (see
test_types.py)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import assert_type

from opentelemetry.sdk.trace import TracerProvider

from fsaga import AsyncInterpreter, SyncInterpreter
from fsaga.context import StepContext
from fsaga.contrib.opentelemetry import Tracing, tracing
from fsaga.durable import ContextCarrier, DurableSagas, SagaDefinitions
from fsaga.events import EffectScope, Listener
from fsaga.journal import MemoryJournal


def tracing_types() -> None:
    traced = tracing()
    assert_type(traced, Tracing)
    assert_type(tracing(tracer_provider=TracerProvider()), Tracing)
    assert_type(Tracing(tracer_provider=None), Tracing)

    # One object is a listener, an effect scope and a context carrier.
    listener: Listener = traced
    scope: EffectScope = traced
    carrier: ContextCarrier = traced
    assert_type(listener, Listener)
    assert_type(
        scope.around_effect(StepContext("s", "a", 1, "action")), AbstractContextManager[object]
    )
    assert_type(carrier.carrier("s"), Mapping[str, str])
    assert_type(traced.carrier("s"), dict[str, str])
    assert_type(traced.resuming("s", [{"traceparent": "00-"}]), AbstractContextManager[object])

    # Given where listeners go.
    SyncInterpreter(listeners=[traced])
    AsyncInterpreter(listeners=[traced, print])
    DurableSagas(MemoryJournal(), SagaDefinitions(), listeners=[traced])


def tracing_refuses_what_it_is_not_given() -> None:
    tracing(TracerProvider())  # type: ignore[call-arg]  # keyword-only
    tracing(tracer_provider="global")  # type: ignore[arg-type]
