"""Events (fsaga.events): one value per transition of a run, with ids, paths, attempts and times."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest
from returns.result import Success as ResultSuccess
from trio.testing import MockClock

from fsaga import (
    AsyncInterpreter,
    CompensationCompleted,
    CompensationFailed,
    CompensationRetrying,
    CompensationStarted,
    Event,
    Failure,
    PartialFailure,
    Retry,
    Saga,
    SagaFinished,
    SagaStarted,
    SagaStopped,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
    StepTimeoutError,
    Success,
    par,
    step,
)
from fsaga.events import branches_independent
from fsaga.interpreter import SyncInterpreter


class Declined(Exception):
    pass


class Ticks:
    """A clock that advances by one on every reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def failing_times(times: int, result: str = "ok") -> Callable[[], str]:
    """An action that raises `Declined` on its first `times` calls, then returns `result`."""
    calls = 0

    def action() -> str:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise Declined(f"call {calls}")
        return result

    return action


def refund(_: object) -> None:
    return None


def declined() -> str:
    raise Declined("card declined")


def record(saga: Saga[object], *, saga_id: str | None = "saga-1") -> list[Event]:
    events: list[Event] = []
    interpreter = SyncInterpreter(
        listeners=[events.append], clock=Ticks(), sleep=lambda _: None, random_unit=lambda: 0.0
    )
    saga.run(interpreter, saga_id=saga_id)
    return events


def shape(events: list[Event]) -> list[tuple[str, str, int]]:
    """(event type, path, attempt) for each event; "" and 0 where an event has none."""
    return [
        (type(event).__name__, getattr(event, "path", ""), getattr(event, "attempt", 0))
        for event in events
    ]


def test_a_successful_run_emits_start_step_and_finish_events() -> None:
    events = record(step(lambda: 1, name="one").then(step(lambda: 2, refund, name="two")))

    assert events == [
        SagaStarted("saga-1", 1.0),
        StepStarted("saga-1", "one", 1, 2.0),
        StepCompleted("saga-1", "one", 1, 3.0, 2.0, 1, compensable=False),
        StepStarted("saga-1", "two", 1, 4.0),
        StepCompleted("saga-1", "two", 1, 5.0, 4.0, 2, compensable=True),
        SagaFinished("saga-1", 6.0, Success(2)),
    ]


def test_a_failed_run_emits_step_failed_and_compensation_events() -> None:
    error = Declined("card declined")

    def charge() -> str:
        raise error

    events = record(step(lambda: "R-1", refund, name="reserve").then(step(charge, name="charge")))

    assert events == [
        SagaStarted("saga-1", 1.0),
        StepStarted("saga-1", "reserve", 1, 2.0),
        StepCompleted("saga-1", "reserve", 1, 3.0, 2.0, "R-1", compensable=True),
        StepStarted("saga-1", "charge", 1, 4.0),
        StepFailed("saga-1", "charge", 1, 5.0, 4.0, error, unknown=False),
        CompensationStarted("saga-1", "reserve", 1, 6.0),
        CompensationCompleted("saga-1", "reserve", 1, 7.0, 6.0),
        SagaFinished("saga-1", 8.0, Failure(error, ("reserve",))),
    ]


def test_retries_emit_step_retrying_with_the_error_and_the_delay() -> None:
    retry = Retry(3, delay=0.5, backoff=2.0, jitter=0.0)
    events = record(step(failing_times(2), name="flaky", retry=retry))

    assert shape(events) == [
        ("SagaStarted", "", 0),
        ("StepStarted", "flaky", 1),
        ("StepRetrying", "flaky", 1),
        ("StepStarted", "flaky", 2),
        ("StepRetrying", "flaky", 2),
        ("StepStarted", "flaky", 3),
        ("StepCompleted", "flaky", 3),
        ("SagaFinished", "", 0),
    ]
    retrying = [event for event in events if isinstance(event, StepRetrying)]
    assert [(str(event.error), event.delay) for event in retrying] == [
        ("call 1", 0.5),
        ("call 2", 1.0),
    ]
    assert [event.started_at for event in retrying] == [2.0, 4.0]


def test_a_step_that_fails_every_attempt_reports_its_last_attempt() -> None:
    events = record(step(failing_times(5), name="flaky", retry=Retry(2, jitter=0.0)))

    failed = [event for event in events if isinstance(event, StepFailed)]
    assert [(event.attempt, str(event.error)) for event in failed] == [(2, "call 2")]


def test_compensation_retries_and_failure_emit_their_events() -> None:
    undo = failing_times(5)
    saga = step(
        lambda: 1,
        lambda _: undo(),
        name="reserve",
        compensation_retry=Retry(2, delay=0.25, jitter=0.0),
    ).then(step(declined, name="charge"))

    events = record(saga)

    assert shape(events)[-5:] == [
        ("CompensationStarted", "reserve", 1),
        ("CompensationRetrying", "reserve", 1),
        ("CompensationStarted", "reserve", 2),
        ("CompensationFailed", "reserve", 2),
        ("SagaFinished", "", 0),
    ]
    retrying = next(event for event in events if isinstance(event, CompensationRetrying))
    assert (str(retrying.error), retrying.delay) == ("call 1", 0.25)
    failed = next(event for event in events if isinstance(event, CompensationFailed))
    assert str(failed.error) == "call 2"
    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    assert isinstance(finished.outcome, PartialFailure)


def test_a_failed_compensation_is_stamped_as_it_fails_and_as_its_last_attempt_started() -> None:
    """`CompensationFailed.at` is the clock's reading when the compensation fails for good, and
    its `started_at` the reading when its last attempt started (not its first)."""
    first, second = Declined("ledger busy"), Declined("ledger down")
    errors = iter([first, second])

    def release(_: object) -> None:
        raise next(errors)

    retry = Retry(2, delay=0.25, jitter=0.0)
    saga = step(lambda: "R-1", release, name="reserve", compensation_retry=retry).then(
        step(declined, name="charge")
    )

    events = record(saga)

    assert events[5:-1] == [
        CompensationStarted("saga-1", "reserve", 1, 6.0),
        CompensationRetrying("saga-1", "reserve", 1, 7.0, 6.0, first, 0.25),
        CompensationStarted("saga-1", "reserve", 2, 8.0),
        CompensationFailed("saga-1", "reserve", 2, 9.0, 8.0, second),
    ]
    assert events[-1].at == 10.0


def test_a_compensation_whose_retry_wait_fails_is_stamped_with_its_last_attempts_start() -> None:
    """The wait before a compensation's retry fails: the compensation fails for good as its
    last attempt that ran, stamped with that attempt's start and the time the wait failed."""
    busy, broken = Declined("ledger busy"), Declined("no timer")

    def release(_: object) -> None:
        raise busy

    def sleep(_: float) -> None:
        raise broken

    retry = Retry(2, delay=0.25, jitter=0.0)
    saga = step(lambda: "R-1", release, name="reserve", compensation_retry=retry).then(
        step(declined, name="charge")
    )
    events: list[Event] = []
    interpreter = SyncInterpreter(listeners=[events.append], clock=Ticks(), sleep=sleep)

    saga.run(interpreter, saga_id="saga-1")

    assert events[5:-1] == [
        CompensationStarted("saga-1", "reserve", 1, 6.0),
        CompensationRetrying("saga-1", "reserve", 1, 7.0, 6.0, busy, 0.25),
        CompensationFailed("saga-1", "reserve", 1, 8.0, 6.0, broken),
    ]
    assert events[-1].at == 9.0


def test_step_completed_carries_the_unwrapped_result_of_a_returns_container() -> None:
    events = record(step(lambda: ResultSuccess("R-1"), refund, name="reserve"))

    completed = [event for event in events if isinstance(event, StepCompleted)]
    assert [(event.result, event.compensable) for event in completed] == [("R-1", True)]


def test_an_explicit_saga_id_appears_in_every_event() -> None:
    saga = step(lambda: 1, refund, name="a").then(step(declined, name="b", retry=Retry(2)))

    events = record(saga, saga_id="order-42")

    assert len(events) > 5
    assert {event.saga_id for event in events} == {"order-42"}


def test_without_a_saga_id_each_run_gets_a_fresh_one() -> None:
    saga = step(lambda: 1, name="a")

    first = record(saga, saga_id=None)
    second = record(saga, saga_id=None)

    first_ids = {event.saga_id for event in first}
    second_ids = {event.saga_id for event in second}
    assert len(first_ids) == 1
    assert len(second_ids) == 1
    assert first_ids != second_ids
    assert all(saga_id for saga_id in first_ids | second_ids)


def test_timestamps_come_from_the_interpreter_clock_in_order() -> None:
    saga = step(lambda: 1, refund, name="a").then(step(declined, name="b"))

    events = record(saga)

    stamps = [event.at for event in events]
    assert stamps == sorted(stamps)
    assert stamps == [float(tick) for tick in range(1, len(events) + 1)]


def test_every_ending_event_carries_when_its_attempt_started() -> None:
    saga = step(lambda: 1, refund, name="a").then(
        step(failing_times(1), refund, name="b", retry=Retry(2, jitter=0.0))
    )
    saga = saga.then(step(declined, name="c"))

    events = record(saga)

    started: dict[tuple[str, str, int], float] = {}
    for event in events:
        if isinstance(event, StepStarted):
            started["action", event.path, event.attempt] = event.at
        elif isinstance(event, CompensationStarted):
            started["compensation", event.path, event.attempt] = event.at
        elif isinstance(event, StepCompleted | StepFailed | StepRetrying):
            assert event.started_at == started["action", event.path, event.attempt]
        elif isinstance(event, CompensationCompleted | CompensationFailed | CompensationRetrying):
            assert event.started_at == started["compensation", event.path, event.attempt]
    assert len(started) == 6


def test_saga_finished_carries_the_returned_outcome() -> None:
    events: list[Event] = []
    outcome = step(declined, name="a").run(SyncInterpreter(listeners=[events.append]))

    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    assert finished.outcome is outcome


def test_every_emitted_event_belongs_to_the_event_union() -> None:
    saga = (
        step(lambda: 0, refund, name="undone")
        .then(step(lambda: 1, lambda _: declined(), name="a", compensation_retry=Retry(2)))
        .then(step(failing_times(9), name="b", retry=Retry(2)))
    )

    events = record(saga)

    kinds = typing.get_args(Event)
    # SagaStopped: only a durable run stops without an outcome (tests/test_durable_stops.py).
    assert {type(event) for event in events} == set(kinds) - {SagaStopped}


def test_events_are_frozen_values() -> None:
    event = StepStarted("saga-1", "a", 1, 2.0)

    with pytest.raises(dataclasses.FrozenInstanceError):
        event.attempt = 2  # type: ignore[misc]
    assert event == StepStarted("saga-1", "a", 1, 2.0)


def test_step_events_name_the_branch_each_step_ran_on() -> None:
    events: list[Event] = []
    saga = (
        step(lambda: 0, name="first")
        .then(par(step(lambda: 1, name="a"), par(step(lambda: 2, name="b"), step(lambda: 3))))
        .then(par(step(lambda: 4, name="c")))
    )

    saga.run(SyncInterpreter(listeners=[events.append]))

    started = {event.path: event.branch for event in events if isinstance(event, StepStarted)}
    completed = {event.path: event.branch for event in events if isinstance(event, StepCompleted)}
    assert (
        started
        == completed
        == {
            "first": "",
            "a": "1:0",
            "#1/b": "1:1/2:0",
            "#1/#1/step": "1:1/2:1",
            "c": "3:0",
        }
    )
    assert branches_independent(started["a"], started["#1/b"])
    assert branches_independent(started["#1/b"], started["#1/#1/step"])
    assert not branches_independent(started["first"], started["a"])
    assert not branches_independent(started["a"], started["c"])  # one par after the other


def test_a_failed_step_names_its_branch() -> None:
    events: list[Event] = []

    def declined() -> None:
        raise ValueError("declined")

    par(step(lambda: 1, name="a"), step(declined, name="b")).run(
        SyncInterpreter(listeners=[events.append])
    )

    [failed] = [event for event in events if isinstance(event, StepFailed)]
    assert (failed.path, failed.branch) == ("b", "1:1")


# -- listeners take no time from an effect's own deadline ------------------------------------


def _jumping_listener(clock: MockClock, on: type[Event], seconds: float) -> Callable[[Event], None]:
    """A listener that takes `seconds` of (virtual) time over every `on` event."""

    def listen(event: Event) -> None:
        if isinstance(event, on):
            clock.jump(seconds)

    return listen


def _on_trio(clock: MockClock, saga: Saga[object], listener: Callable[[Event], None]) -> object:
    async def run() -> object:
        return await saga.run(AsyncInterpreter(listeners=[listener]))

    return anyio.run(run, backend="trio", backend_options={"clock": clock})


def test_a_slow_listener_does_not_eat_the_steps_own_timeout() -> None:
    """The attempt's deadline is armed after `StepStarted` is emitted: a listener taking
    60 ms does not fail an instant action with a 50 ms timeout."""
    clock = MockClock()

    async def quick() -> str:
        await anyio.lowlevel.checkpoint()  # it yields once, as any real async call does
        return "instant"

    saga = step(quick, name="quick", timeout=0.05)

    outcome = _on_trio(clock, saga, _jumping_listener(clock, StepStarted, 0.06))

    assert outcome == Success("instant")


def test_a_slow_listener_does_not_eat_the_compensations_own_timeout() -> None:
    clock = MockClock()
    undone: list[object] = []

    async def release(result: object) -> None:
        await anyio.lowlevel.checkpoint()
        undone.append(result)

    saga = step(lambda: 1, release, name="a", compensation_timeout=0.05).then(
        step(failing_times(1), name="b")
    )

    outcome = _on_trio(clock, saga, _jumping_listener(clock, CompensationStarted, 0.06))

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("a",)
    assert undone == [1]


def test_a_slow_listener_still_counts_against_an_enclosing_deadline() -> None:
    """A sub-tree's deadline is a point in time, not an effect's own budget: listener time
    passes for it like any other."""
    clock = MockClock()
    saga = step(lambda: "a", name="a").then(step(lambda: "b", name="b")).timeout(0.05)

    outcome = _on_trio(clock, saga, _jumping_listener(clock, StepStarted, 0.06))

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, StepTimeoutError)
    assert outcome.error.path == "b"
    assert not outcome.error.started
