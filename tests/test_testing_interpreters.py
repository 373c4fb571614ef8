"""Interpreters for tests (fsaga.testing.interpreters): recording, scripted, fault-injecting."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from fsaga import (
    CompensationFailure,
    CompensationStarted,
    Effect,
    Failure,
    PartialFailure,
    Retry,
    Saga,
    SagaFinished,
    SagaStarted,
    StepCompleted,
    StepStarted,
    Success,
    par,
    step,
)
from fsaga.testing import (
    AsyncFaultInjectingInterpreter,
    FaultInjectingInterpreter,
    FaultPlan,
    InjectedFault,
    Interruption,
    Raise,
    RecordedEffect,
    RecordingInterpreter,
    Return,
    ScriptedInterpreter,
    UnscriptedStepError,
    check_run,
)


class Declined(Exception):
    pass


def flaky(times: int) -> Any:
    """An action raising `Declined` on its first `times` calls, then returning "ok"."""
    calls = 0

    def action() -> str:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise Declined(f"call {calls}")
        return "ok"

    return action


# -- RecordingInterpreter -----------------------------------------------------------------------


def test_recording_performs_real_effects_and_records_them_with_their_results() -> None:
    undone: list[object] = []
    error = Declined("no")

    def charge() -> str:
        raise error

    saga = step(lambda: "R-1", undone.append, name="reserve").then(step(charge, name="charge"))
    recording = RecordingInterpreter()

    outcome = saga.run(recording)

    assert outcome == Failure(error, ("reserve",))
    assert undone == ["R-1"]
    assert recording.effects == [
        RecordedEffect("action", "reserve", 1, None, result="R-1"),
        RecordedEffect("action", "charge", 1, None, error=error),
        RecordedEffect("compensation", "reserve", 1, "R-1", result=None),
    ]
    check_run(recording, outcome)


def test_recording_lists_paths_by_kind() -> None:
    saga = step(lambda: 1, lambda _: None, name="a").then(step(flaky(9), name="b"))
    recording = RecordingInterpreter()

    saga.run(recording)

    assert recording.paths() == ["a", "b", "a"]
    assert recording.paths("action") == ["a", "b"]
    assert recording.paths("compensation") == ["a"]


def test_recording_records_sleeps_without_sleeping() -> None:
    recording = RecordingInterpreter()

    outcome = step(flaky(2), retry=Retry(3, delay=10.0, backoff=3.0)).run(recording)

    assert outcome == Success("ok")
    assert recording.sleeps == [10.0, 30.0]


def test_recording_random_unit_is_injectable() -> None:
    recording = RecordingInterpreter(random_unit=lambda: 0.5)

    step(flaky(1), retry=Retry(2, delay=10.0, jitter=1.0)).run(recording)

    assert recording.sleeps == [5.0]


def test_recording_events_carry_repeatable_timestamps() -> None:
    recording = RecordingInterpreter()

    step(lambda: 1, name="a").run(recording, saga_id="s")

    assert recording.events == [
        SagaStarted("s", 1.0),
        StepStarted("s", "a", 1, 2.0),
        StepCompleted("s", "a", 1, 3.0, 2.0, 1, compensable=False),
        SagaFinished("s", 4.0, Success(1)),
    ]


def test_recording_accepts_a_clock_and_further_listeners() -> None:
    heard: list[object] = []
    recording = RecordingInterpreter(clock=lambda: 7.0, listeners=[heard.append])

    step(lambda: 1).run(recording)

    assert heard == recording.events
    assert {event.at for event in recording.events} == {7.0}


def test_recording_custom_perform_sees_every_effect() -> None:
    seen: list[Effect] = []

    def perform(effect: Effect) -> object:
        seen.append(effect)
        return f"fake {effect.path}"

    recording = RecordingInterpreter(perform=perform)

    outcome = step(lambda: "real", name="a").run(recording)

    assert outcome == Success("fake a")
    assert [effect.path for effect in seen] == ["a"]
    assert recording.effects == [RecordedEffect("action", "a", 1, None, result="fake a")]


def test_recording_keeps_the_trace_of_every_run_until_cleared() -> None:
    recording = RecordingInterpreter()
    saga = step(lambda: 1, name="a")

    saga.run(recording)
    saga.run(recording)
    assert recording.paths() == ["a", "a"]

    recording.clear()
    assert (recording.events, recording.effects, recording.sleeps) == ([], [], [])


def test_recording_on_compensation_failure_stop() -> None:
    saga = (
        step(lambda: 1, lambda _: None, name="a")
        .then(step(lambda: 2, lambda _: flaky(9)(), name="b"))
        .then(step(flaky(9), name="c"))
    )
    recording = RecordingInterpreter(on_compensation_failure="stop")

    outcome = saga.run(recording)

    assert isinstance(outcome, PartialFailure)
    assert outcome.skipped == ("a",)


def test_recording_records_an_interrupt_and_lets_it_propagate() -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    recording = RecordingInterpreter()

    with pytest.raises(KeyboardInterrupt):
        step(interrupt, name="cut").run(recording)

    [effect] = recording.effects
    assert (effect.path, type(effect.error)) == ("cut", KeyboardInterrupt)


# -- ScriptedInterpreter ------------------------------------------------------------------------


def real_effect() -> str:
    raise AssertionError("a scripted run performed a real effect")


def real_compensation(_: object) -> None:
    raise AssertionError("a scripted run performed a real compensation")


def test_scripted_performs_no_real_effect() -> None:
    saga = step(real_effect, real_compensation, name="reserve").then(
        step(real_effect, name="charge")
    )
    scripted = ScriptedInterpreter({"reserve": Return("R-1"), "charge": Raise(Declined("no"))})

    outcome = saga.run(scripted)

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("reserve",)
    assert [(effect.kind, effect.path, effect.argument) for effect in scripted.effects] == [
        ("action", "reserve", None),
        ("action", "charge", None),
        ("compensation", "reserve", "R-1"),
    ]
    check_run(scripted, outcome)


def test_scripted_answers_per_attempt_and_repeats_the_last_answer() -> None:
    scripted = ScriptedInterpreter(
        {"charge": [Raise(Declined("1")), Raise(Declined("2")), Return("paid")]}
    )

    outcome = step(real_effect, name="charge", retry=Retry(5)).run(scripted)

    assert outcome == Success("paid")
    assert [effect.attempt for effect in scripted.effects] == [1, 2, 3]
    assert scripted.sleeps == [0.1, 0.2]


def test_scripted_last_answer_repeats_for_later_attempts() -> None:
    scripted = ScriptedInterpreter({"charge": [Raise(Declined("1")), Raise(Declined("again"))]})

    outcome = step(real_effect, name="charge", retry=Retry(4)).run(scripted)

    assert isinstance(outcome, Failure)
    assert str(outcome.error) == "again"
    assert [effect.attempt for effect in scripted.effects] == [1, 2, 3, 4]


def test_scripted_compensations_default_to_success_and_can_fail() -> None:
    saga = (
        step(real_effect, real_compensation, name="a")
        .then(step(real_effect, real_compensation, name="b"))
        .then(step(real_effect, name="c"))
    )
    undo_error = Declined("refund refused")
    scripted = ScriptedInterpreter(
        {"a": Return(1), "b": Return(2), "c": Raise(Declined("no"))},
        compensations={"b": Raise(undo_error)},
    )

    outcome = saga.run(scripted)

    assert isinstance(outcome, PartialFailure)
    assert outcome.compensated == ("a",)
    assert outcome.failed_compensations == (CompensationFailure("b", undo_error, 1),)


def test_an_unscripted_step_fails_with_unscripted_step_error() -> None:
    scripted = ScriptedInterpreter({"a": Return(1)})
    saga = step(real_effect, real_compensation, name="a").then(
        step(real_effect, name="forgotten").named("payment")
    )

    outcome = saga.run(scripted)

    assert isinstance(outcome, Failure)
    error = outcome.error
    assert isinstance(error, UnscriptedStepError)
    assert isinstance(error, LookupError)
    assert error.path == "payment/forgotten"
    assert "'payment/forgotten'" in str(error)
    assert outcome.compensated == ("a",)


def test_a_default_answers_unscripted_steps() -> None:
    scripted = ScriptedInterpreter(default=Return("default"))

    outcome = par(step(real_effect), step(real_effect)).run(scripted)

    assert outcome == Success(("default", "default"))


def test_scripted_accepts_listeners_and_the_stop_policy() -> None:
    heard: list[object] = []
    saga = (
        step(real_effect, real_compensation, name="a")
        .then(step(real_effect, real_compensation, name="b"))
        .then(step(real_effect, name="c"))
    )
    scripted = ScriptedInterpreter(
        {"a": Return(0), "b": Return(0), "c": Raise(Declined())},
        compensations={"b": Raise(Declined())},
        listeners=[heard.append],
        on_compensation_failure="stop",
    )

    outcome = saga.run(scripted)

    assert isinstance(outcome, PartialFailure)
    assert outcome.skipped == ("a",)
    assert heard == scripted.events


@pytest.mark.parametrize(
    ("actions", "compensations"),
    [
        pytest.param({"charge": 3}, None, id="action-not-a-script"),
        pytest.param({"charge": []}, None, id="action-empty-sequence"),
        pytest.param({"charge": [Return(1), "paid"]}, None, id="action-bad-member"),
        pytest.param({"charge": "paid"}, None, id="action-str"),
        pytest.param({"charge": iter([Return(1)])}, None, id="action-iterator"),
        pytest.param(None, {"charge": None}, id="compensation-not-a-script"),
    ],
)
def test_bad_scripts_are_rejected_naming_the_path(actions: Any, compensations: Any) -> None:
    with pytest.raises(TypeError, match=r"\['charge'\]"):
        ScriptedInterpreter(actions, compensations=compensations)


def test_a_bad_default_is_rejected() -> None:
    bad: Any = "paid"

    with pytest.raises(TypeError, match="default must be Return or Raise"):
        ScriptedInterpreter(default=bad)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), "boom", ValueError])
def test_raise_needs_an_exception_instance(error: Any) -> None:
    with pytest.raises(TypeError, match="Raise needs an Exception instance"):
        Raise(error)


def test_return_defaults_to_none() -> None:
    assert Return().value is None


# -- FaultInjectingInterpreter ------------------------------------------------------------------


def test_faults_fail_the_first_attempts_then_effects_run_for_real() -> None:
    calls: list[str] = []

    def charge() -> str:
        calls.append("charge")
        return "paid"

    interpreter = FaultInjectingInterpreter(FaultPlan(actions={"charge": 2}))

    outcome = step(charge, name="charge", retry=Retry(3)).run(interpreter)

    assert outcome == Success("paid")
    assert calls == ["charge"]
    errors = [effect.error for effect in interpreter.effects]
    assert [type(error) for error in errors] == [InjectedFault, InjectedFault, type(None)]
    first = errors[0]
    assert isinstance(first, InjectedFault)
    assert (first.kind, first.path, first.attempt) == ("action", "charge", 1)


def test_an_injected_action_fault_fails_the_saga_and_compensates() -> None:
    undone: list[object] = []
    saga = step(lambda: "R-1", undone.append, name="reserve").then(
        step(lambda: "paid", name="charge")
    )
    interpreter = FaultInjectingInterpreter(FaultPlan(actions={"charge": 1}))

    outcome = saga.run(interpreter)

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, InjectedFault)
    assert outcome.compensated == ("reserve",)
    assert undone == ["R-1"]
    check_run(interpreter, outcome)


def test_injected_compensation_faults_give_partial_failure() -> None:
    saga = (
        step(lambda: 1, lambda _: None, name="a")
        .then(step(lambda: 2, lambda _: None, name="b"))
        .then(step(lambda: 3, name="c"))
    )
    interpreter = FaultInjectingInterpreter(FaultPlan(actions={"c": 1}, compensations={"b": 1}))

    outcome = saga.run(interpreter)

    assert isinstance(outcome, PartialFailure)
    assert outcome.compensated == ("a",)
    [failure] = outcome.failed_compensations
    assert failure.path == "b"
    assert isinstance(failure.error, InjectedFault)
    assert failure.error.kind == "compensation"
    check_run(interpreter, outcome)


def test_an_injected_compensation_fault_is_retried_by_its_policy() -> None:
    saga = step(lambda: 1, lambda _: None, name="a", compensation_retry=Retry(2)).then(
        step(lambda: 2, name="b")
    )
    interpreter = FaultInjectingInterpreter(FaultPlan(actions={"b": 1}, compensations={"a": 1}))

    outcome = saga.run(interpreter)

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("a",)


def test_an_injected_interrupt_compensates_and_propagates() -> None:
    undone: list[object] = []
    saga = step(lambda: "R-1", undone.append, name="a").then(
        step(lambda: 2, lambda _: None, name="b")
    )
    interpreter = FaultInjectingInterpreter(FaultPlan(interrupt="b"))

    with pytest.raises(KeyboardInterrupt, match="injected interrupt at 'b'"):
        saga.run(interpreter)

    assert undone == ["R-1"]
    finished = interpreter.events[-1]
    assert isinstance(finished, SagaFinished)
    outcome = finished.outcome
    assert isinstance(outcome, PartialFailure)
    assert isinstance(outcome.error, KeyboardInterrupt)
    assert (outcome.compensated, outcome.unresolved) == (("a",), ("b",))


def interrupted_undo_saga(undone: list[object]) -> Saga[object]:
    """reserve, charge, then ship; charge's compensation is the one the tests interrupt."""
    return (
        step(lambda: "R-1", undone.append, name="reserve")
        .then(step(lambda: "C-1", undone.append, name="charge"))
        .then(step(lambda: "S-1", name="ship"))
    )


def test_an_interrupted_compensation_fails_for_good_the_rest_run_the_interrupt_propagates() -> None:
    undone: list[object] = []
    plan = FaultPlan(
        actions={"ship": 1}, compensations={"charge": 1}, interrupt_compensations={"charge"}
    )
    interpreter = FaultInjectingInterpreter(plan)

    with pytest.raises(
        KeyboardInterrupt, match="injected interrupt at the compensation of 'charge'"
    ):
        interrupted_undo_saga(undone).run(interpreter)

    assert undone == ["R-1"]
    finished = interpreter.events[-1]
    assert isinstance(finished, SagaFinished)
    outcome = finished.outcome
    assert isinstance(outcome, PartialFailure)
    assert isinstance(outcome.error, InjectedFault)
    assert outcome.compensated == ("reserve",)
    [failure] = outcome.failed_compensations
    assert (failure.path, failure.attempts) == ("charge", 1)
    assert isinstance(failure.error, KeyboardInterrupt)
    interrupted = next(effect for effect in interpreter.effects if effect.kind == "compensation")
    assert (interrupted.path, interrupted.error) == ("charge", failure.error)


def test_a_plan_without_compensation_interrupts_is_the_plan_it_always_was() -> None:
    plan = FaultPlan({"ship": 1}, {"charge": 1}, "reserve", {})

    assert (plan.interrupt_compensations, plan.interrupt_with) == (
        frozenset(),
        "keyboard_interrupt",
    )
    assert plan == FaultPlan(actions={"ship": 1}, compensations={"charge": 1}, interrupt="reserve")


@pytest.mark.parametrize("paths", ["charge", ["charge", 1], 7, None])
def test_interrupt_compensations_must_be_a_collection_of_paths(paths: Any) -> None:
    with pytest.raises(TypeError, match="FaultPlan: interrupt_compensations must be a collection"):
        FaultPlan(interrupt_compensations=paths)


def test_interrupt_with_must_be_an_interruption() -> None:
    bad: Any = "SIGINT"

    with pytest.raises(ValueError, match=r"FaultPlan: interrupt_with must be one of \('keyboard_"):
        FaultPlan(interrupt_compensations={"charge"}, interrupt_with=bad)


def test_the_sync_fault_injector_cannot_raise_a_cancellation() -> None:
    plan = FaultPlan(interrupt_compensations={"charge"}, interrupt_with="cancelled")

    with pytest.raises(ValueError, match="AsyncFaultInjectingInterpreter"):
        FaultInjectingInterpreter(plan)


@pytest.mark.parametrize("interruption", ["keyboard_interrupt", "cancelled"])
@pytest.mark.anyio
async def test_the_async_fault_injector_interrupts_a_compensation_in_its_place(
    interruption: Interruption,
) -> None:
    undone: list[object] = []
    plan = FaultPlan(
        actions={"ship": 1}, interrupt_compensations={"charge"}, interrupt_with=interruption
    )
    interpreter = AsyncFaultInjectingInterpreter(plan)
    expected = (
        KeyboardInterrupt
        if interruption == "keyboard_interrupt"
        else anyio.get_cancelled_exc_class()
    )

    with pytest.raises(expected) as raised:
        await interrupted_undo_saga(undone).run(interpreter)

    assert raised.value.__notes__[-1].startswith("fsaga: saga ")
    assert (interpreter.cancelled, interpreter.interrupted) == (False, False)
    assert undone == ["R-1"]
    finished = interpreter.events[-1]
    assert isinstance(finished, SagaFinished)
    outcome = finished.outcome
    assert isinstance(outcome, PartialFailure)
    assert outcome.compensated == ("reserve",)
    assert outcome.failed_compensations == (CompensationFailure("charge", raised.value, 1),)
    interrupted = next(effect for effect in interpreter.effects if effect.kind == "compensation")
    assert (interrupted.path, interrupted.error) == ("charge", raised.value)


def test_an_empty_plan_changes_nothing() -> None:
    interpreter = FaultInjectingInterpreter(FaultPlan())

    assert step(lambda: 1).then(step(lambda: 2)).run(interpreter) == Success(2)
    assert interpreter.paths() == ["step", "step#2"]
    assert interpreter.sleeps == []


@pytest.mark.parametrize(
    "plan",
    [
        pytest.param({"actions": {"charge": -1}}, id="negative-action-count"),
        pytest.param({"actions": {"charge": True}}, id="bool-action-count"),
        pytest.param({"actions": {"charge": 1.5}}, id="float-action-count"),
        pytest.param({"compensations": {"charge": "2"}}, id="str-compensation-count"),
    ],
)
def test_bad_fault_plans_are_rejected_naming_the_path(plan: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"FaultPlan: \w+\['charge'\]"):
        FaultPlan(**plan)


def test_fault_injecting_needs_a_fault_plan() -> None:
    bad: Any = {"charge": 1}

    with pytest.raises(TypeError, match="needs a FaultPlan"):
        FaultInjectingInterpreter(bad)


# -- check=True: each run checked against the contract as it finishes ---------------------------


def order_saga(undone: list[object]) -> Saga[int]:
    return (
        step(lambda: "R-1", undone.append, name="reserve")
        .then(step(lambda: "O-1", undone.append, name="order"))
        .then(step(lambda: 3, name="charge"))
    )


class SwapTheCompensations:
    """A listener that, once a run finishes, rewrites the trace it recorded (`events`, given
    once the interpreter exists) so that the undo looks as if it ran oldest first: what a
    broken engine would record. Until `events` is given, it does nothing."""

    def __init__(self) -> None:
        self.events: list[Any] | None = None

    def __call__(self, event: object) -> None:
        events = self.events
        if events is None or not isinstance(event, SagaFinished):
            return
        run = max(index for index, item in enumerate(events) if isinstance(item, SagaStarted))
        starts = [
            index
            for index, item in enumerate(events)
            if index > run and isinstance(item, CompensationStarted)
        ]
        first, last = starts[0], starts[-1]
        events[first], events[last] = events[last], events[first]


def test_checked_interpreters_run_sagas_as_before() -> None:
    undone: list[object] = []
    recording = RecordingInterpreter(check=True)
    faulty = FaultInjectingInterpreter(FaultPlan(actions={"charge": 1}), check=True)
    scripted = ScriptedInterpreter({"reserve": Return(1), "order": Return(2)}, check=True)

    assert order_saga(undone).run(recording) == Success(3)
    assert order_saga(undone).run(recording) == Success(3)  # each run checked on its own trace
    outcome = order_saga(undone).run(faulty)
    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("order", "reserve")
    assert isinstance(order_saga(undone).run(scripted), Failure)  # "charge" is unscripted


@pytest.mark.parametrize("kind", ["recording", "fault-injecting", "scripted"])
def test_a_run_that_breaks_a_rule_raises_naming_the_saga(kind: str) -> None:
    swap = SwapTheCompensations()
    listeners = [swap]
    interpreter: RecordingInterpreter | FaultInjectingInterpreter | ScriptedInterpreter
    plan = FaultPlan(actions={"charge": 1})
    if kind == "recording":
        interpreter = RecordingInterpreter(listeners=listeners, check=True)
        saga = order_saga([]).then(step(lambda: 1 / 0, name="divide"))
    elif kind == "fault-injecting":
        interpreter = FaultInjectingInterpreter(plan, listeners=listeners, check=True)
        saga = order_saga([])
    else:
        interpreter = ScriptedInterpreter(
            {"reserve": Return(1), "order": Return(2)}, listeners=listeners, check=True
        )
        saga = order_saga([])
    swap.events = interpreter.events

    with pytest.raises(
        AssertionError,
        match=r"the run of saga 'o-1' broke the contract: compensations ran in the order "
        r"\['reserve', 'order'\]; reverse completion order is \['order', 'reserve'\]",
    ):
        saga.run(interpreter, saga_id="o-1")


def test_an_interrupted_run_is_checked_and_the_interrupt_still_propagates() -> None:
    swap = SwapTheCompensations()
    interpreter = FaultInjectingInterpreter(
        FaultPlan(interrupt="charge"), listeners=[swap], check=True
    )
    with pytest.raises(KeyboardInterrupt):
        order_saga([]).run(interpreter)

    swap.events = interpreter.events
    with pytest.raises(AssertionError, match="the run of saga 'o-2' broke the contract"):
        order_saga([]).run(interpreter, saga_id="o-2")


def test_a_checked_interpreter_runs_one_saga_at_a_time() -> None:
    interpreter = RecordingInterpreter(check=True)
    nested = step(lambda: step(lambda: 1).run(interpreter), name="outer")

    outcome = nested.run(interpreter)

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, RuntimeError)
    assert "runs one saga at a time" in str(outcome.error)
    assert step(lambda: 2).run(interpreter) == Success(2)  # and it is usable again


@pytest.mark.anyio
async def test_the_async_fault_injector_checks_each_run() -> None:
    plan = FaultPlan(actions={"charge": 1})
    checked = AsyncFaultInjectingInterpreter(plan, check=True)
    outcome = await order_saga([]).run(checked)
    assert isinstance(outcome, Failure)

    swap = SwapTheCompensations()
    broken = AsyncFaultInjectingInterpreter(plan, listeners=[swap], check=True)
    swap.events = broken.events
    with pytest.raises(AssertionError, match="broke the contract: compensations ran in the order"):
        await order_saga([]).run(broken)

    cancelled = AsyncFaultInjectingInterpreter(FaultPlan(interrupt="order"), check=True)
    outcome = await order_saga([]).run(cancelled)  # the cancellation is absorbed, then checked
    assert cancelled.interrupted
    assert isinstance(outcome, PartialFailure)


@pytest.mark.anyio
async def test_a_checked_async_interpreter_refuses_a_second_concurrent_run() -> None:
    interpreter = AsyncFaultInjectingInterpreter(FaultPlan(), check=True)
    released = anyio.Event()

    async def wait() -> int:
        await released.wait()
        return 1

    results: list[object] = []

    async def run_first() -> None:
        results.append(await step(wait, name="wait").run(interpreter))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run_first)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match="runs one saga at a time"):
            await step(lambda: 2).run(interpreter)
        released.set()
    assert results == [Success(1)]


@pytest.mark.parametrize(
    "make",
    [
        lambda: RecordingInterpreter(check=1),  # type: ignore[arg-type]
        lambda: ScriptedInterpreter(check="yes"),  # type: ignore[arg-type]
        lambda: FaultInjectingInterpreter(FaultPlan(), check=None),  # type: ignore[arg-type]
        lambda: AsyncFaultInjectingInterpreter(FaultPlan(), check=0),  # type: ignore[arg-type]
    ],
)
def test_check_must_be_a_bool(make: Any) -> None:
    with pytest.raises(TypeError, match="check must be a bool"):
        make()
