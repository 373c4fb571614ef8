"""The sync interpreter (fsaga.interpreter.sync) and, through it, the engine's rules of a run.

Rule numbers are those of the contract, in docs/concepts.md.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from returns.io import IOFailure, IOSuccess
from returns.result import Failure as ResultFailure
from returns.result import Success as ResultSuccess

from fsaga import (
    CompensationFailure,
    CompensationStarted,
    Effect,
    Event,
    Failure,
    Interpreter,
    Outcome,
    PartialFailure,
    Retry,
    ReturnedFailure,
    Saga,
    SagaFinished,
    SagaStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
    StepTimeoutError,
    Success,
    SyncInterpreter,
    par,
    pure,
    sequence,
    step,
    traverse,
)
from fsaga.testing import (
    FaultInjectingInterpreter,
    FaultPlan,
    Raise,
    RecordingInterpreter,
    Return,
    ScriptedInterpreter,
)

ENGINE_LOGGER = "fsaga.interpreter"


class Declined(Exception):
    pass


class Ledger:
    """Builds steps that record what they did and what was undone, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.undone: list[tuple[str, object]] = []

    def step(
        self,
        name: str,
        result: object = None,
        *,
        raises: BaseException | None = None,
        compensable: bool = True,
        compensation_raises: BaseException | None = None,
        **options: Any,
    ) -> Saga[object]:
        def action() -> object:
            self.log.append(name)
            if raises is not None:
                raise raises
            return name if result is None else result

        def compensate(value: object) -> None:
            self.log.append(f"undo {name}")
            if compensation_raises is not None:
                raise compensation_raises
            self.undone.append((name, value))

        return step(action, compensate if compensable else None, name=name, **options)

    def undone_names(self) -> list[str]:
        return [name for name, _ in self.undone]


def failing_times(times: int, error: Exception | None = None) -> Callable[[], str]:
    """An action that raises on its first `times` calls, then returns "ok"."""
    calls = 0

    def action() -> str:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise error if error is not None else Declined(f"call {calls}")
        return "ok"

    return action


def run(saga: Saga[object], **options: Any) -> Outcome[object]:
    return saga.run(SyncInterpreter(**options))


# -- rule 1: forward order ----------------------------------------------------------------------


def test_forward_steps_run_in_tree_order() -> None:
    ledger = Ledger()
    saga = (
        ledger.step("a")
        .then(par(ledger.step("b"), ledger.step("c").then(ledger.step("d"))))
        .then(ledger.step("e").named("sub"))
        .bind(lambda _: sequence([ledger.step("f"), ledger.step("g")]))
        .then(traverse(["h", "i"], ledger.step))
    )

    outcome = run(saga)

    assert outcome == Success(("h", "i"))
    assert ledger.log == ["a", "b", "c", "d", "e", "f", "g", "h", "i"]


def test_bind_continuations_see_previous_results() -> None:
    seen: list[object] = []

    def after(value: object) -> Saga[object]:
        seen.append(value)
        return step(lambda: (value, "next"))

    saga = step(lambda: 1).bind(after).bind(after)

    assert run(saga) == Success(((1, "next"), "next"))
    assert seen == [1, (1, "next")]


def test_results_flow_through_map_zip_and_sequence() -> None:
    saga = (
        step(lambda: 2)
        .map(lambda n: n * 10)
        .zip(sequence([step(lambda: "a"), step(lambda: "b")]))
        .map(lambda pair: f"{pair[0]}{''.join(pair[1])}")
    )

    assert run(saga) == Success("20ab")


# -- rule 2: compensation on failure ------------------------------------------------------------


def test_completed_steps_are_compensated_in_reverse_with_their_own_results() -> None:
    ledger = Ledger()
    error = Declined("card declined")
    saga = (
        ledger.step("reserve", "R-1")
        .then(ledger.step("hold", "H-7"))
        .then(ledger.step("charge", raises=error))
        .then(ledger.step("ship"))
    )

    outcome = run(saga)

    assert isinstance(outcome, Failure)
    assert outcome.error is error
    assert outcome.compensated == ("hold", "reserve")
    assert ledger.undone == [("hold", "H-7"), ("reserve", "R-1")]
    assert ledger.log == ["reserve", "hold", "charge", "undo hold", "undo reserve"]


def test_a_compensation_receives_the_very_object_its_step_returned() -> None:
    result = object()
    received: list[object] = []
    saga = step(lambda: result, received.append).then(step(failing_times(1)))

    run(saga)

    assert received == [result]
    assert received[0] is result


def test_the_failed_step_and_unstarted_steps_are_not_compensated() -> None:
    ledger = Ledger()
    saga = ledger.step("a").then(ledger.step("b", raises=Declined())).then(ledger.step("c"))

    run(saga)

    assert ledger.undone_names() == ["a"]
    assert "c" not in ledger.log


def test_a_failing_first_step_compensates_nothing() -> None:
    ledger = Ledger()
    error = Declined()

    outcome = run(ledger.step("a", raises=error).then(ledger.step("b")))

    assert outcome == Failure(error, ())
    assert ledger.undone == []


def test_steps_without_compensation_are_not_compensated() -> None:
    ledger = Ledger()
    saga = (
        ledger.step("a")
        .then(ledger.step("read", compensable=False))
        .then(ledger.step("c"))
        .then(ledger.step("d", raises=Declined()))
    )

    outcome = run(saga)

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("c", "a")
    assert ledger.undone_names() == ["c", "a"]


def test_a_raising_bind_continuation_fails_the_saga_and_compensates() -> None:
    ledger = Ledger()
    error = Declined("no route")

    def plan(_: object) -> Saga[object]:
        raise error

    outcome = run(ledger.step("a").bind(plan).then(ledger.step("b")))

    assert outcome == Failure(error, ("a",))
    assert ledger.log == ["a", "undo a"]


def test_a_raising_map_function_fails_the_saga_and_compensates() -> None:
    ledger = Ledger()

    outcome = run(ledger.step("a").map(lambda _: 1 // 0))

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, ZeroDivisionError)
    assert outcome.compensated == ("a",)


def test_a_bind_continuation_returning_a_non_saga_fails_with_type_error() -> None:
    ledger = Ledger()

    def not_a_saga(_: object) -> Any:
        return 42

    saga = ledger.step("a").bind(not_a_saga)

    outcome = run(saga)

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, TypeError)
    assert "must return a Saga, got 42" in str(outcome.error)
    assert outcome.compensated == ("a",)


@pytest.mark.parametrize(
    "returned",
    [ResultSuccess("R-1"), IOSuccess("R-1")],
    ids=["result", "ioresult"],
)
def test_a_returns_success_is_unwrapped_for_the_result_and_the_compensation(
    returned: object,
) -> None:
    received: list[object] = []
    ok = step(lambda: returned, received.append, name="reserve")

    assert run(ok) == Success("R-1")
    failed = run(ok.then(step(failing_times(1))))
    assert isinstance(failed, Failure)
    assert failed.compensated == ("reserve",)
    assert received == ["R-1"]


@pytest.mark.parametrize(
    "wrap", [ResultFailure, IOFailure], ids=["result-failure", "ioresult-failure"]
)
def test_a_returns_failure_of_an_exception_fails_with_that_exception(
    wrap: Callable[[Exception], object],
) -> None:
    ledger = Ledger()
    error = Declined("declined by the bank")

    outcome = run(ledger.step("a").then(step(lambda: wrap(error), name="charge")))

    assert isinstance(outcome, Failure)
    assert outcome.error is error
    assert outcome.compensated == ("a",)


@pytest.mark.parametrize(
    "wrap", [ResultFailure, IOFailure], ids=["result-failure", "ioresult-failure"]
)
def test_a_returns_failure_of_another_value_fails_with_returned_failure(
    wrap: Callable[[object], object],
) -> None:
    ledger = Ledger()

    outcome = run(ledger.step("a").then(step(lambda: wrap("insufficient funds"), name="charge")))

    assert isinstance(outcome, Failure)
    error = outcome.error
    assert isinstance(error, ReturnedFailure)
    assert (error.value, error.path) == ("insufficient funds", "charge")
    assert "'charge'" in str(error)
    assert outcome.compensated == ("a",)


def test_an_action_returning_a_coroutine_fails_without_a_never_awaited_warning() -> None:
    ledger = Ledger()

    async def fetch() -> int:
        return 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = run(ledger.step("a").then(step(fetch)))
        assert isinstance(outcome, Failure)
        error, compensated = outcome.error, outcome.compensated
        del outcome  # see test_a_compensation_returning_a_coroutine_counts_as_failed
        gc.collect()

    assert isinstance(error, TypeError)
    assert "step 'fetch' returned an awaitable" in str(error)
    assert compensated == ("a",)
    assert [str(warning.message) for warning in caught] == []


@pytest.mark.parametrize("which", ["compensate", "on_unknown"])
@pytest.mark.parametrize("interpreter", ["sync", "recording", "fault-injecting"])
def test_an_async_compensation_is_refused_before_the_action_runs(
    which: str, interpreter: str
) -> None:
    """A sync interpreter cannot undo with an `async def`; it says so before the
    step's action runs, not in the middle of the rollback."""
    ran: list[object] = []

    async def release(_: object) -> None:
        ran.append("release")

    def reserve() -> int:
        ran.append("reserve")
        return 1

    undo: dict[str, Any] = {"compensate": release} if which == "compensate" else {}
    if which == "on_unknown":
        undo = {"compensate": lambda _: None, "on_unknown": release}
    saga = step(lambda: 0, ran.append, name="first").then(step(reserve, name="reserve", **undo))
    runners: dict[str, Interpreter] = {
        "sync": SyncInterpreter(),
        "recording": RecordingInterpreter(),
        "fault-injecting": FaultInjectingInterpreter(FaultPlan()),
    }
    runner = runners[interpreter]

    outcome = saga.run(runner)

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("first",)
    assert isinstance(outcome.error, TypeError)
    kind = "compensation" if which == "compensate" else "unknown-outcome compensation"
    assert str(outcome.error) == (
        f"the {kind} of step 'reserve' (release) is async, so a sync interpreter could not "
        "undo the step: run async effects with an async interpreter (the step's action was "
        "not run)"
    )
    assert ran == [0]


def test_a_scripted_run_of_a_step_with_an_async_compensation_is_not_refused() -> None:
    async def release(_: object) -> None:
        return None

    declined = Declined("no")
    scripted = ScriptedInterpreter({"reserve": Return(1), "charge": Raise(declined)})
    saga = step(lambda: 1, release, name="reserve").then(step(lambda: 2, name="charge"))

    outcome = saga.run(scripted)

    assert outcome == Failure(declined, ("reserve",))


def test_a_compensation_returning_a_coroutine_counts_as_failed() -> None:
    async def release(_: object) -> None:
        return None

    def undo(result: object) -> Coroutine[object, object, None]:
        # Not an `async def` itself, so nothing tells before it is called that it is async.
        return release(result)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = run(step(lambda: 1, undo, name="a").then(step(failing_times(1))))
        assert isinstance(outcome, PartialFailure)
        [failure] = outcome.failed_compensations
        # The outcome's tracebacks keep the run's frames alive: drop them so an unclosed
        # coroutine would warn here, inside the block.
        del outcome
        gc.collect()

    assert failure.path == "a"
    assert isinstance(failure.error, TypeError)
    assert [str(warning.message) for warning in caught] == []


# -- retries ------------------------------------------------------------------------------------


def test_a_retried_step_succeeds_and_the_sleep_receives_the_delays() -> None:
    sleeps: list[float] = []
    retry = Retry(5, delay=1.0, backoff=2.0, max_delay=3.0, jitter=0.0)

    outcome = run(step(failing_times(4), retry=retry), sleep=sleeps.append)

    assert outcome == Success("ok")
    assert sleeps == [1.0, 2.0, 3.0, 3.0]


def test_jitter_uses_the_injected_random_unit() -> None:
    sleeps: list[float] = []
    retry = Retry(3, delay=2.0, backoff=2.0, jitter=0.5)

    run(step(failing_times(2), retry=retry), sleep=sleeps.append, random_unit=lambda: 0.5)

    assert sleeps == [1.5, 3.0]


def test_a_zero_delay_retries_without_sleeping() -> None:
    sleeps: list[float] = []
    retry = Retry(3, delay=0.0, max_delay=0.0)

    outcome = run(step(failing_times(2), retry=retry), sleep=sleeps.append)

    assert outcome == Success("ok")
    assert sleeps == []


def test_a_step_failing_every_attempt_fails_with_the_last_error() -> None:
    attempts: list[int] = []

    def always() -> str:
        attempts.append(len(attempts) + 1)
        raise Declined(f"attempt {len(attempts)}")

    outcome = run(step(always, retry=Retry(3, jitter=0.0)), sleep=lambda _: None)

    assert isinstance(outcome, Failure)
    assert str(outcome.error) == "attempt 3"
    assert attempts == [1, 2, 3]


@pytest.mark.parametrize(
    "retry_on",
    [
        pytest.param(KeyError, id="type"),
        pytest.param((KeyError, LookupError), id="tuple"),
        pytest.param(lambda error: isinstance(error, KeyError), id="predicate"),
    ],
)
def test_errors_retry_on_does_not_match_fail_at_once(retry_on: Any) -> None:
    sleeps: list[float] = []
    action = failing_times(1, Declined("permanent"))

    outcome = run(step(action, retry=Retry(3, retry_on=retry_on)), sleep=sleeps.append)

    assert isinstance(outcome, Failure)
    assert str(outcome.error) == "permanent"
    assert sleeps == []


@pytest.mark.parametrize(
    "retry_on",
    [
        pytest.param(KeyError, id="type"),
        pytest.param((ValueError, KeyError), id="tuple"),
        pytest.param(lambda error: "transient" in str(error), id="predicate"),
    ],
)
def test_errors_retry_on_matches_are_retried(retry_on: Any) -> None:
    outcome = run(
        step(failing_times(2, KeyError("transient")), retry=Retry(3, retry_on=retry_on)),
        sleep=lambda _: None,
    )

    assert outcome == Success("ok")


def test_attempt_numbers_reach_the_effect() -> None:
    attempts: list[int] = []

    def perform(effect: Effect) -> object:
        attempts.append(effect.attempt)
        return effect.run()

    run(step(failing_times(2), retry=Retry(3)), perform=perform, sleep=lambda _: None)

    assert attempts == [1, 2, 3]


def test_an_interrupt_is_never_retried() -> None:
    calls: list[int] = []

    def action() -> str:
        calls.append(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(step(action, retry=Retry(5)), sleep=lambda _: None)

    assert calls == [1]


def test_a_sleep_that_raises_fails_the_step_with_its_error() -> None:
    ledger = Ledger()
    error = Declined("no sleeping here")

    def sleep(_: float) -> None:
        raise error

    saga = ledger.step("a").then(step(failing_times(1), retry=Retry(3)))

    outcome = run(saga, sleep=sleep)

    assert outcome == Failure(error, ("a",))


def test_a_failed_wait_reports_the_last_attempt_that_ran() -> None:
    events: list[Event] = []
    compensation_attempts: list[int] = []

    def sleep(_: float) -> None:
        raise Declined("no sleeping here")

    def undo(_: object) -> None:
        compensation_attempts.append(1)
        raise Declined("refund refused")

    saga = step(lambda: 1, undo, name="a", compensation_retry=Retry(3)).then(
        step(failing_times(1), name="b", retry=Retry(3))
    )

    outcome = SyncInterpreter(listeners=[events.append], sleep=sleep, clock=lambda: 5.0).run_saga(
        saga
    )

    failed = [event for event in events if isinstance(event, StepFailed)]
    assert [(event.path, event.attempt, event.started_at) for event in failed] == [("b", 1, 5.0)]
    assert isinstance(outcome, PartialFailure)
    assert compensation_attempts == [1]
    assert [(f.path, f.attempts) for f in outcome.failed_compensations] == [("a", 1)]


# -- rule 4: failing compensations --------------------------------------------------------------


def test_compensation_retry_retries_a_failing_compensation() -> None:
    sleeps: list[float] = []
    undo = failing_times(2)
    saga = step(
        lambda: 1,
        lambda _: undo(),
        name="a",
        compensation_retry=Retry(3, delay=0.5, jitter=0.0),
    ).then(step(failing_times(1)))

    outcome = run(saga, sleep=sleeps.append)

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("a",)
    assert sleeps == [0.5, 1.0]


def test_a_compensation_that_still_fails_gives_partial_failure_and_the_rest_still_run() -> None:
    ledger = Ledger()
    undo_error = Declined("refund refused")
    error = Declined("out of stock")
    saga = (
        ledger.step("a")
        .then(ledger.step("b", compensation_raises=undo_error, compensation_retry=Retry(3)))
        .then(ledger.step("c"))
        .then(ledger.step("d", raises=error))
    )

    outcome = run(saga, sleep=lambda _: None)

    assert outcome == PartialFailure(
        error,
        compensated=("c", "a"),
        failed_compensations=(CompensationFailure("b", undo_error, 3),),
    )
    assert ledger.log == ["a", "b", "c", "d", "undo c", "undo b", "undo b", "undo b", "undo a"]


def test_a_compensation_without_retry_fails_after_one_attempt() -> None:
    ledger = Ledger()
    saga = ledger.step("a", compensation_raises=Declined()).then(
        ledger.step("b", raises=Declined())
    )

    outcome = run(saga)

    assert isinstance(outcome, PartialFailure)
    assert [(failure.path, failure.attempts) for failure in outcome.failed_compensations] == [
        ("a", 1)
    ]


def test_a_compensation_error_not_matching_its_retry_on_fails_at_once() -> None:
    ledger = Ledger()
    saga = ledger.step(
        "a", compensation_raises=Declined(), compensation_retry=Retry(5, retry_on=KeyError)
    ).then(ledger.step("b", raises=Declined()))

    outcome = run(saga)

    assert isinstance(outcome, PartialFailure)
    assert outcome.failed_compensations[0].attempts == 1
    assert ledger.log.count("undo a") == 1


def test_the_stop_policy_skips_the_remaining_compensations_in_the_order_they_would_run() -> None:
    ledger = Ledger()
    undo_error = Declined("refund refused")
    saga = (
        ledger.step("a")
        .then(ledger.step("b"))
        .then(ledger.step("c", compensation_raises=undo_error))
        .then(ledger.step("d"))
        .then(ledger.step("e", raises=Declined()))
    )

    outcome = run(saga, on_compensation_failure="stop")

    assert isinstance(outcome, PartialFailure)
    assert outcome.compensated == ("d",)
    assert outcome.failed_compensations == (CompensationFailure("c", undo_error, 1),)
    assert outcome.skipped == ("b", "a")
    assert ledger.undone_names() == ["d"]


@pytest.mark.parametrize(
    ("returned", "error_type"),
    [
        pytest.param(ResultFailure("refused"), ReturnedFailure, id="result-failure-value"),
        pytest.param(ResultFailure(Declined("refused")), Declined, id="result-failure-error"),
        pytest.param(IOFailure("refused"), ReturnedFailure, id="ioresult-failure"),
    ],
)
def test_a_compensation_returning_a_returns_failure_counts_as_failed(
    returned: object, error_type: type[Exception]
) -> None:
    ledger = Ledger()
    saga = (
        step(lambda: 1, lambda _: returned, name="a")
        .then(ledger.step("b"))
        .then(step(failing_times(1)))
    )

    outcome = run(saga)

    assert isinstance(outcome, PartialFailure)
    assert outcome.compensated == ("b",)
    [failure] = outcome.failed_compensations
    assert failure.path == "a"
    assert isinstance(failure.error, error_type)


def test_a_compensation_returning_a_returns_success_counts_as_done() -> None:
    saga = step(lambda: 1, lambda _: ResultSuccess(None), name="a").then(step(failing_times(1)))

    outcome = run(saga)

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("a",)


# -- rule 5 (sync form): par --------------------------------------------------------------------


def test_par_branches_run_one_after_another_and_results_keep_argument_order() -> None:
    ledger = Ledger()
    saga = par(
        ledger.step("a1").then(ledger.step("a2", 2)),
        ledger.step("b", "B"),
        ledger.step("c1").then(ledger.step("c2", 3.0)),
    )

    outcome = run(saga)

    assert outcome == Success((2, "B", 3.0))
    assert ledger.log == ["a1", "a2", "b", "c1", "c2"]


def test_two_pars_in_one_scope_never_give_two_steps_the_same_path() -> None:
    def charge() -> int:
        return 1

    recording = RecordingInterpreter()
    saga = par(step(charge), step(charge)).then(par(step(charge), step(charge)))

    saga.run(recording)

    assert recording.paths("action") == ["#0/charge", "#1/charge", "#0#2/charge", "#1#2/charge"]


def test_when_a_par_branch_fails_later_branches_never_start() -> None:
    ledger = Ledger()
    error = Declined()
    saga = par(
        ledger.step("a"),
        ledger.step("b1").then(ledger.step("b2", raises=error)).then(ledger.step("b3")),
        ledger.step("c"),
    ).then(ledger.step("after"))

    outcome = run(saga)

    assert outcome == Failure(error, ("#1/b1", "a"))
    assert ledger.log == ["a", "b1", "b2", "undo b1", "undo a"]


def test_completed_steps_of_every_branch_are_compensated_in_reverse_completion_order() -> None:
    ledger = Ledger()
    saga = (
        ledger.step("before")
        .then(
            par(
                ledger.step("a1").then(ledger.step("a2")),
                par(ledger.step("n1"), ledger.step("n2")),
                ledger.step("c", raises=Declined()),
            )
        )
        .then(ledger.step("after"))
    )

    outcome = run(saga)

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("#1/n2", "#1/n1", "#0/a2", "#0/a1", "before")
    assert ledger.undone_names() == ["n2", "n1", "a2", "a1", "before"]


def test_a_failure_after_a_par_compensates_every_branch() -> None:
    ledger = Ledger()
    saga = par(ledger.step("a"), ledger.step("b")).then(ledger.step("c", raises=Declined()))

    outcome = run(saga)

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("b", "a")


# -- rule 6: named sub-sagas --------------------------------------------------------------------


def test_a_named_subsaga_is_compensated_in_reverse_at_its_place() -> None:
    ledger = Ledger()
    payment = ledger.step("authorize").then(ledger.step("capture")).named("payment")
    saga = (
        ledger.step("reserve")
        .then(payment)
        .then(ledger.step("ship"))
        .then(ledger.step("notify", raises=Declined()))
        .named("order")
    )

    outcome = run(saga)

    assert isinstance(outcome, Failure)
    assert outcome.compensated == (
        "order/ship",
        "order/payment/capture",
        "order/payment/authorize",
        "order/reserve",
    )
    assert ledger.undone_names() == ["ship", "capture", "authorize", "reserve"]


# -- rule 8 (sync): interrupts ------------------------------------------------------------------


@pytest.mark.parametrize(
    "interrupt",
    [KeyboardInterrupt, lambda: SystemExit(3)],
    ids=["keyboard-interrupt", "system-exit"],
)
def test_an_interrupted_action_stops_forward_compensates_and_reraises_with_a_note(
    interrupt: Callable[[], BaseException],
) -> None:
    interruption = interrupt()  # a fresh one each run: the run adds a note to it
    ledger = Ledger()
    events: list[Event] = []
    saga = (
        ledger.step("a")
        .then(ledger.step("b"))
        .then(ledger.step("cut", raises=interruption))
        .then(ledger.step("never"))
    )

    with pytest.raises(type(interruption)) as raised:
        saga.run(SyncInterpreter(listeners=[events.append]), saga_id="order-1")

    assert raised.value is interruption
    assert ledger.log == ["a", "b", "cut", "undo b", "undo a"]
    [note] = raised.value.__notes__
    assert "order-1" in note
    assert "compensated: b, a" in note
    assert "unresolved: cut" in note
    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    assert finished.outcome == PartialFailure(interruption, ("b", "a"), unresolved=("cut",))
    cut = [event for event in events if isinstance(event, StepFailed)]
    assert [(event.path, event.unknown) for event in cut] == [("cut", True)]


def test_an_interrupted_step_without_compensation_is_not_unresolved() -> None:
    ledger = Ledger()
    events: list[Event] = []
    saga = ledger.step("a").then(ledger.step("read", raises=KeyboardInterrupt(), compensable=False))

    with pytest.raises(KeyboardInterrupt) as raised:
        saga.run(SyncInterpreter(listeners=[events.append]))

    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    assert finished.outcome == Failure(raised.value, ("a",))
    assert ledger.undone_names() == ["a"]


def test_an_interrupt_in_a_par_branch_starts_no_later_branch() -> None:
    ledger = Ledger()
    saga = par(ledger.step("a"), ledger.step("b", raises=KeyboardInterrupt()), ledger.step("c"))

    with pytest.raises(KeyboardInterrupt):
        run(saga)

    assert ledger.log == ["a", "b", "undo a"]


def test_an_interrupted_compensation_is_reported_failed_and_the_rest_still_run() -> None:
    ledger = Ledger()
    events: list[Event] = []
    interruption = KeyboardInterrupt()
    error = Declined()
    saga = (
        ledger.step("a")
        .then(ledger.step("b", compensation_raises=interruption))
        .then(ledger.step("c"))
        .then(ledger.step("d", raises=error))
    )

    with pytest.raises(KeyboardInterrupt) as raised:
        saga.run(SyncInterpreter(listeners=[events.append]))

    assert raised.value is interruption
    assert ledger.undone_names() == ["c", "a"]
    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    assert finished.outcome == PartialFailure(
        error,
        compensated=("c", "a"),
        failed_compensations=(CompensationFailure("b", interruption, 1),),
    )
    assert "compensation failed: b" in raised.value.__notes__[0]


def test_an_interrupt_raised_inside_a_bind_continuation_compensates() -> None:
    ledger = Ledger()

    def plan(_: object) -> Saga[object]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as raised:
        run(ledger.step("a").bind(plan).then(ledger.step("b")))

    assert ledger.log == ["a", "undo a"]
    assert "compensated: a" in raised.value.__notes__[0]


def test_an_interrupt_while_waiting_to_retry_compensates_and_is_not_unknown() -> None:
    ledger = Ledger()
    events: list[Event] = []

    def sleep(_: float) -> None:
        raise KeyboardInterrupt

    saga = ledger.step("a").then(step(failing_times(1), lambda _: None, name="b", retry=Retry(2)))

    with pytest.raises(KeyboardInterrupt):
        saga.run(SyncInterpreter(listeners=[events.append], sleep=sleep))

    assert ledger.undone_names() == ["a"]
    failed = [event for event in events if isinstance(event, StepFailed)]
    assert [(event.path, event.unknown) for event in failed] == [("b", False)]
    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    assert isinstance(finished.outcome, Failure)


def test_an_interrupt_while_waiting_to_retry_a_compensation_reports_it_failed() -> None:
    ledger = Ledger()
    undo = failing_times(1)
    interruption = KeyboardInterrupt()

    def sleep(_: float) -> None:
        raise interruption

    saga = (
        ledger.step("a")
        .then(step(lambda: 1, lambda _: undo(), name="b", compensation_retry=Retry(3)))
        .then(ledger.step("c"))
        .then(ledger.step("d", raises=Declined()))
    )
    events: list[Event] = []

    with pytest.raises(KeyboardInterrupt):
        saga.run(SyncInterpreter(listeners=[events.append], sleep=sleep))

    assert ledger.undone_names() == ["c", "a"]
    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    outcome = finished.outcome
    assert isinstance(outcome, PartialFailure)
    assert outcome.compensated == ("c", "a")
    assert [failure.path for failure in outcome.failed_compensations] == ["b"]
    assert outcome.failed_compensations[0].error is interruption


@pytest.mark.parametrize(
    ("event_type", "path", "expected_log", "failed"),
    [
        pytest.param(StepStarted, "b", ["a", "undo a"], [], id="step-started"),
        pytest.param(StepCompleted, "b", ["a", "b", "undo b", "undo a"], [], id="step-completed"),
        pytest.param(
            CompensationStarted,
            "b",
            ["a", "b", "c", "undo a"],
            ["b"],
            id="compensation-started",
        ),
    ],
)
def test_an_interrupt_raised_by_a_listener_stops_forward_work_and_compensates(
    event_type: type[Event], path: str, expected_log: list[str], failed: list[str]
) -> None:
    ledger = Ledger()
    events: list[Event] = []

    def listener(event: Event) -> None:
        if isinstance(event, event_type) and getattr(event, "path", None) == path:
            raise KeyboardInterrupt

    saga = ledger.step("a").then(ledger.step("b")).then(ledger.step("c", raises=Declined()))

    with pytest.raises(KeyboardInterrupt) as raised:
        saga.run(SyncInterpreter(listeners=[listener, events.append]))

    assert ledger.log == expected_log
    assert raised.value.__notes__
    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    assert not isinstance(finished.outcome, Success)
    reported = (
        [failure.path for failure in finished.outcome.failed_compensations]
        if isinstance(finished.outcome, PartialFailure)
        else []
    )
    assert reported == failed


def test_a_listener_interrupting_as_an_interrupt_is_taken_in_still_lets_the_undo_run() -> None:
    """The engine emits `StepFailed` while it takes an interrupt in; a listener that raises
    another interrupt there escaped the sync driver, and nothing was compensated."""
    ledger = Ledger()

    def listener(event: Event) -> None:
        if isinstance(event, StepFailed):
            raise KeyboardInterrupt("from the listener")

    first = KeyboardInterrupt("from the step")
    saga = ledger.step("a").then(ledger.step("b", raises=first))

    with pytest.raises(KeyboardInterrupt) as raised:
        saga.run(SyncInterpreter(listeners=[listener]))

    assert raised.value is first
    assert ledger.log == ["a", "b", "undo a"]
    assert raised.value.__notes__ == [
        f"fsaga: saga {raised.value.__notes__[0].split()[2]} interrupted; saga failed: "
        "KeyboardInterrupt('from the step'); compensated: a; unknown outcome, unresolved: b"
    ]


def test_an_interrupt_raised_by_a_listener_at_saga_start_runs_nothing() -> None:
    ledger = Ledger()

    def listener(event: Event) -> None:
        if isinstance(event, SagaStarted):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ledger.step("a").run(SyncInterpreter(listeners=[listener]))

    assert ledger.log == []


def test_an_interrupt_raised_by_a_listener_at_the_finish_still_propagates() -> None:
    ledger = Ledger()

    def listener(event: Event) -> None:
        if isinstance(event, SagaFinished):
            raise KeyboardInterrupt

    saga = ledger.step("a").then(ledger.step("b", raises=Declined()))

    with pytest.raises(KeyboardInterrupt) as raised:
        saga.run(SyncInterpreter(listeners=[listener]))

    assert ledger.undone_names() == ["a"]
    assert "compensated: a" in raised.value.__notes__[0]


# -- rule 9: listeners --------------------------------------------------------------------------


def test_a_raising_listener_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = Ledger()
    quiet: list[Event] = []
    heard: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    saga = ledger.step("a").then(ledger.step("b", raises=Declined("x")))
    expected = saga.run(SyncInterpreter(listeners=[quiet.append]), saga_id="s")
    ledger.log.clear()

    with caplog.at_level(logging.ERROR, logger=ENGINE_LOGGER):
        outcome = saga.run(SyncInterpreter(listeners=[broken, heard.append]), saga_id="s")

    assert outcome == expected
    assert ledger.log == ["a", "b", "undo a"]
    assert [type(event) for event in heard] == [type(event) for event in quiet]
    records = [record for record in caplog.records if record.name == ENGINE_LOGGER]
    assert len(records) == len(heard)
    assert all(record.levelno == logging.ERROR for record in records)
    assert "listener" in records[0].getMessage()
    assert records[0].exc_info is not None


def test_listeners_are_called_in_order_for_every_event() -> None:
    calls: list[tuple[str, str]] = []
    interpreter = SyncInterpreter(
        listeners=[
            lambda event: calls.append(("first", type(event).__name__)),
            lambda event: calls.append(("second", type(event).__name__)),
        ]
    )

    step(lambda: 1).run(interpreter)

    assert calls[:4] == [
        ("first", "SagaStarted"),
        ("second", "SagaStarted"),
        ("first", "StepStarted"),
        ("second", "StepStarted"),
    ]
    assert len(calls) == 8


def test_debug_logging_reports_the_lifecycle_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = Ledger()
    saga = ledger.step("a").then(ledger.step("b", raises=Declined()))

    with caplog.at_level(logging.DEBUG, logger="fsaga"):
        outcome = saga.run(SyncInterpreter(), saga_id="dbg")

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("a",)
    messages = [record.getMessage() for record in caplog.records if record.name == ENGINE_LOGGER]
    assert messages == [
        "saga dbg: started",
        "saga dbg: action a attempt 1",
        "saga dbg: action b attempt 1",
        "saga dbg: step b failed: Declined()",
        "saga dbg: failed with Declined(); compensating 1 step(s)",
        "saga dbg: compensation a attempt 1",
        "saga dbg: finished: Failure",
    ]


# -- rule 10 and custom perform functions -------------------------------------------------------


def test_perform_receives_an_effect_for_every_action_and_compensation() -> None:
    seen: list[tuple[str, str, str, int, object]] = []

    def perform(effect: Effect) -> object:
        seen.append((effect.kind, effect.saga_id, effect.path, effect.attempt, effect.argument))
        return effect.run()

    saga = (
        step(lambda: "R-1", lambda _: None, name="reserve")
        .then(step(failing_times(1), name="charge", retry=Retry(2)).named("payment"))
        .then(step(failing_times(1), name="ship"))
    )

    outcome = saga.run(SyncInterpreter(perform=perform, sleep=lambda _: None), saga_id="o-1")

    assert isinstance(outcome, Failure)
    assert seen == [
        ("action", "o-1", "reserve", 1, None),
        ("action", "o-1", "payment/charge", 1, None),
        ("action", "o-1", "payment/charge", 2, None),
        ("action", "o-1", "ship", 1, None),
        ("compensation", "o-1", "reserve", 1, "R-1"),
    ]


def test_the_idempotency_key_is_saga_id_and_path_and_stable_across_retries() -> None:
    keys: list[str] = []

    def perform(effect: Effect) -> object:
        keys.append(effect.idempotency_key)
        return effect.run()

    saga = step(failing_times(2), name="charge", retry=Retry(3)).named("payment").named("order")

    saga.run(SyncInterpreter(perform=perform, sleep=lambda _: None), saga_id="saga-9")

    assert keys == ["saga-9/order/payment/charge"] * 3


def test_a_fresh_saga_id_is_shared_by_every_effect_of_a_run() -> None:
    ids: list[str] = []

    def perform(effect: Effect) -> object:
        ids.append(effect.saga_id)
        return effect.run()

    saga = step(lambda: 1).then(step(lambda: 2))
    interpreter = SyncInterpreter(perform=perform)
    saga.run(interpreter)
    saga.run(interpreter)

    assert ids[0] == ids[1]
    assert ids[2] == ids[3]
    assert ids[0] != ids[2]


def test_perform_may_fake_effects_without_running_them() -> None:
    ledger = Ledger()

    def perform(effect: Effect) -> object:
        return f"fake {effect.path}" if effect.kind == "action" else None

    outcome = run(ledger.step("a").then(ledger.step("b")), perform=perform)

    assert outcome == Success("fake b")
    assert ledger.log == []


def test_perform_raising_fails_the_attempt() -> None:
    ledger = Ledger()
    error = Declined("network down")

    def perform(effect: Effect) -> object:
        if effect.path == "b":
            raise error
        return effect.run()

    outcome = run(ledger.step("a").then(ledger.step("b")), perform=perform)

    assert outcome == Failure(error, ("a",))
    assert ledger.log == ["a", "undo a"]


def test_a_compensation_effect_runs_the_compensation_with_its_argument() -> None:
    ledger = Ledger()
    effects: list[Effect] = []

    def perform(effect: Effect) -> object:
        effects.append(effect)
        return effect.run()

    run(ledger.step("a", "A").then(step(failing_times(1))), perform=perform)

    compensation = effects[-1]
    assert (compensation.kind, compensation.argument) == ("compensation", "A")
    assert ledger.undone == [("a", "A")]


def test_perform_returning_a_returns_container_is_unwrapped() -> None:
    def perform(effect: Effect) -> object:
        return ResultSuccess(effect.path.upper())

    assert run(step(lambda: 0, name="charge"), perform=perform) == Success("CHARGE")


def test_an_effect_value_is_frozen_and_keyed() -> None:
    effect = Effect("action", "s", "order/charge", 2, None, lambda: None)

    assert effect.idempotency_key == "s/order/charge"
    with pytest.raises(AttributeError):
        effect.attempt = 3  # type: ignore[misc]


# -- timeouts: what a sync run can and cannot enforce -------------------------------------------


class SteppedTime:
    """A monotonic clock for deadlines that moves only when an effect says it took time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def taking(self, seconds: float, result: str) -> Callable[[], str]:
        """An action that takes `seconds` on this clock, then returns `result`."""

        def action() -> str:
            self.now += seconds
            return result

        return action

    def interpreter(self, **options: Any) -> SyncInterpreter:
        """A SyncInterpreter measuring its deadlines on this clock. (It has no option for it:
        under it a run's deadlines are the real ones.)"""
        interpreter = SyncInterpreter(**options)
        settings = interpreter._settings  # private: the clock its deadlines are measured on
        interpreter._settings = dataclasses.replace(settings, monotonic=self)
        return interpreter


def test_a_step_timeout_is_not_enforced_the_attempt_runs_to_its_end_and_counts() -> None:
    """A sync function cannot be cut off: its result counts, with no error and no warning (as
    `step`'s docstring and the tutorial say)."""
    time = SteppedTime()
    events: list[Event] = []
    saga = step(time.taking(10.0, "slow"), name="a", timeout=1.0)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outcome = saga.run(time.interpreter(listeners=[events.append]))

    assert outcome == Success("slow")
    assert not [event for event in events if isinstance(event, StepFailed)]


def test_a_compensation_timeout_is_not_enforced_the_compensation_runs_to_its_end() -> None:
    time = SteppedTime()
    undone: list[str] = []

    def undo(result: str) -> None:
        time.now += 10.0
        undone.append(result)

    saga = step(lambda: "a", undo, name="a", compensation_timeout=1.0).then(
        step(failing_times(1), name="b")
    )

    outcome = saga.run(time.interpreter())

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("a",)
    assert undone == ["a"]


def test_a_sub_tree_deadline_is_enforced_between_steps() -> None:
    time = SteppedTime()
    ran: list[str] = []
    saga = (
        step(time.taking(10.0, "a"), lambda _: ran.append("undo a"), name="a")
        .then(step(lambda: ran.append("b"), name="b"))
        .timeout(1.0)
    )

    outcome = saga.run(time.interpreter())

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, StepTimeoutError)
    assert (outcome.error.path, outcome.error.deadline) == ("b", "sub-tree")
    assert outcome.compensated == ("a",)
    assert ran == ["undo a"]


# -- the interpreter itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        pytest.param({"perform": 42}, TypeError, "perform must be callable", id="perform"),
        pytest.param({"sleep": None}, TypeError, "sleep must be callable", id="sleep"),
        pytest.param({"clock": 1.0}, TypeError, "clock must be callable", id="clock"),
        pytest.param(
            {"random_unit": 0.5}, TypeError, "random_unit must be callable", id="random-unit"
        ),
        pytest.param({"listeners": [print, 42]}, TypeError, "listener 42", id="listener"),
        pytest.param(
            {"on_compensation_failure": "panic"},
            ValueError,
            "on_compensation_failure must be 'continue' or 'stop'",
            id="compensation-policy",
        ),
    ],
)
def test_bad_interpreter_options_are_rejected(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^SyncInterpreter: .*{message}"):
        SyncInterpreter(**options)


def test_running_something_other_than_a_saga_is_a_type_error() -> None:
    bad: Any = 42

    with pytest.raises(TypeError, match="runs a Saga, got 42"):
        SyncInterpreter().run_saga(bad)


def test_an_interpreter_runs_many_sagas_independently() -> None:
    interpreter = SyncInterpreter()
    failing = step(lambda: 1, lambda _: None, name="a").then(step(failing_times(1)))

    assert isinstance(failing.run(interpreter), Failure)
    assert step(lambda: 1, name="a").run(interpreter) == Success(1)


def test_saga_run_calls_any_interpreter_with_the_saga_id() -> None:
    class Counting:
        def __init__(self) -> None:
            self.calls: list[tuple[Saga[Any], str | None]] = []

        def run_saga(self, saga: Saga[Any], /, *, saga_id: str | None = None) -> Outcome[Any]:
            self.calls.append((saga, saga_id))
            return Success("counted")

    counting = Counting()
    interpreter: Interpreter = counting
    saga = pure("real")

    assert saga.run(interpreter, saga_id="x") == Success("counted")
    assert counting.calls == [(saga, "x")]
