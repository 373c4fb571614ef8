"""Unknown outcomes (contract rule 3) under the sync interpreter, and deadlines it enforces between
steps (rule 7).

A step whose attempt was cut off mid-flight (here by a `KeyboardInterrupt` raised inside it) may
or may not have taken effect. It is run once more during the undo when it is idempotent and has a
compensation, handed to its `on_unknown` compensation otherwise, and reported unresolved when
neither applies. The async forms (timeouts, cancelled branches) are in test_async_interpreter.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from fsaga import (
    AsyncInterpreter,
    CompensationFailure,
    Event,
    Failure,
    PartialFailure,
    Retry,
    Saga,
    SagaFinished,
    StepContext,
    StepFailed,
    StepTimeoutError,
    Success,
    SyncInterpreter,
    UnknownOutcomeError,
    current_context,
    step,
)


class Declined(Exception):
    pass


def interrupted_first(log: list[str], name: str = "charge") -> Callable[[], str]:
    """An action whose first attempt is cut off by an interrupt; later attempts return a result.

    It records every attempt's context, so a test can check what the re-run saw.
    """

    def action() -> str:
        context = current_context()
        log.append(f"{name} {context.attempt} {context.idempotency_key}")
        if context.attempt == 1:
            raise KeyboardInterrupt
        return f"C-{context.attempt}"

    return action


def run_interrupted(
    saga: Saga[object], *, saga_id: str = "order-1"
) -> tuple[KeyboardInterrupt, list[Event]]:
    """Run `saga`, expecting the interrupt to propagate; the interrupt and the events."""
    events: list[Event] = []
    with pytest.raises(KeyboardInterrupt) as raised:
        saga.run(SyncInterpreter(listeners=[events.append]), saga_id=saga_id)
    return raised.value, events


def final_outcome(events: list[Event]) -> object:
    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    return finished.outcome


def reserve_step(log: list[str]) -> Saga[str]:
    return step(lambda: "R-1", lambda r: log.append(f"unreserve {r}"), name="reserve")


# -- idempotent steps: run once more during the undo --------------------------------------------


def test_an_interrupted_idempotent_step_is_rerun_in_the_undo_compensated_then_reraised() -> None:
    log: list[str] = []
    saga = (
        reserve_step(log)
        .then(
            step(
                interrupted_first(log),
                lambda c: log.append(f"refund {c}"),
                name="charge",
                idempotent=True,
            )
        )
        .then(step(lambda: log.append("ship"), name="ship"))
    )

    interrupt, events = run_interrupted(saga)

    assert log == [
        "charge 1 order-1/charge",
        "charge 2 order-1/charge",
        "refund C-2",
        "unreserve R-1",
    ]
    assert final_outcome(events) == Failure(interrupt, ("charge", "reserve"))
    [note] = interrupt.__notes__
    assert note == (
        "fsaga: saga order-1 interrupted; saga failed: KeyboardInterrupt(); "
        "compensated: charge, reserve"
    )
    charge_events = [
        (type(event).__name__, getattr(event, "attempt", 0))
        for event in events
        if getattr(event, "path", None) == "charge"
    ]
    assert charge_events == [
        ("StepStarted", 1),
        ("StepFailed", 1),
        ("StepStarted", 2),
        ("StepCompleted", 2),
        ("CompensationStarted", 1),
        ("CompensationCompleted", 1),
    ]
    [failed] = [event for event in events if isinstance(event, StepFailed)]
    assert (failed.unknown, failed.error) == (True, interrupt)


def test_an_idempotent_rerun_that_fails_leaves_the_step_unresolved() -> None:
    log: list[str] = []
    refused = Declined("service down")

    def charge() -> str:
        attempt = current_context().attempt
        log.append(f"charge {attempt}")
        if attempt == 1:
            raise KeyboardInterrupt
        raise refused

    saga = reserve_step(log).then(
        step(charge, lambda c: log.append(f"refund {c}"), name="charge", idempotent=True)
    )

    interrupt, events = run_interrupted(saga)

    assert log == ["charge 1", "charge 2", "unreserve R-1"]
    assert final_outcome(events) == PartialFailure(interrupt, ("reserve",), unresolved=("charge",))
    failed = [event for event in events if isinstance(event, StepFailed)]
    assert [(event.attempt, event.unknown, event.error) for event in failed] == [
        (1, True, interrupt),
        (2, True, refused),
    ]
    assert "unknown outcome, unresolved: charge" in interrupt.__notes__[0]


def test_an_idempotent_rerun_that_fails_falls_back_to_on_unknown() -> None:
    log: list[str] = []
    received: list[StepContext] = []

    def charge() -> str:
        attempt = current_context().attempt
        if attempt == 1:
            raise KeyboardInterrupt
        raise Declined("service down")

    saga = reserve_step(log).then(
        step(
            charge,
            lambda c: log.append(f"refund {c}"),
            name="charge",
            idempotent=True,
            on_unknown=received.append,
        )
    )

    interrupt, events = run_interrupted(saga)

    assert final_outcome(events) == Failure(interrupt, ("charge", "reserve"))
    assert received == [StepContext("order-1", "charge", 1, "unknown")]
    assert log == ["unreserve R-1"]


def test_an_idempotent_step_without_compensation_is_not_rerun() -> None:
    log: list[str] = []
    saga = reserve_step(log).then(step(interrupted_first(log), name="notify", idempotent=True))

    interrupt, events = run_interrupted(saga)

    assert log == ["charge 1 order-1/notify", "unreserve R-1"]
    assert final_outcome(events) == Failure(interrupt, ("reserve",))


def test_an_ordinary_failure_of_an_idempotent_step_is_known_and_not_retried() -> None:
    """Idempotency concerns unknown outcomes: a step that raised did not complete."""
    log: list[str] = []
    error = Declined("card declined")

    def charge() -> str:
        log.append(f"charge {current_context().attempt}")
        raise error

    saga = reserve_step(log).then(
        step(charge, lambda c: log.append(f"refund {c}"), name="charge", idempotent=True)
    )

    outcome = saga.run(SyncInterpreter())

    assert outcome == Failure(error, ("reserve",))
    assert log == ["charge 1", "unreserve R-1"]


# -- on_unknown: the unknown-outcome compensation -----------------------------------------------


def test_on_unknown_receives_the_steps_context_and_replaces_its_compensation() -> None:
    log: list[str] = []
    received: list[tuple[StepContext, StepContext]] = []

    def charge_unknown(context: StepContext) -> None:
        received.append((context, current_context()))

    saga = reserve_step(log).then(
        step(
            interrupted_first(log),
            lambda c: log.append(f"refund {c}"),
            name="charge",
            on_unknown=charge_unknown,
        ).named("payment")
    )

    interrupt, events = run_interrupted(saga)

    expected = StepContext("order-1", "payment/charge", 1, "unknown")
    assert received == [(expected, expected)]
    assert received[0][0].idempotency_key == "order-1/payment/charge"
    assert log == ["charge 1 order-1/payment/charge", "unreserve R-1"]  # no re-run, no refund
    assert final_outcome(events) == Failure(interrupt, ("payment/charge", "reserve"))
    assert "compensated: payment/charge, reserve" in interrupt.__notes__[0]


def test_on_unknown_works_for_a_step_without_a_compensation() -> None:
    log: list[str] = []
    received: list[StepContext] = []
    saga = reserve_step(log).then(
        step(interrupted_first(log), name="notify", on_unknown=received.append)
    )

    interrupt, events = run_interrupted(saga)

    assert received == [StepContext("order-1", "notify", 1, "unknown")]
    assert final_outcome(events) == Failure(interrupt, ("notify", "reserve"))


def test_on_unknown_that_raises_is_a_failed_compensation_and_the_rest_still_run() -> None:
    log: list[str] = []
    broken = Declined("ledger unavailable")

    def charge_unknown(context: StepContext) -> None:
        log.append(f"unknown {context.path}")
        raise broken

    saga = reserve_step(log).then(
        step(interrupted_first(log), name="charge", on_unknown=charge_unknown)
    )

    interrupt, events = run_interrupted(saga)

    assert final_outcome(events) == PartialFailure(
        interrupt, ("reserve",), (CompensationFailure("charge", broken, 1),)
    )
    assert log == ["charge 1 order-1/charge", "unknown charge", "unreserve R-1"]
    assert "compensation failed: charge" in interrupt.__notes__[0]


def test_compensation_retry_retries_on_unknown_with_increasing_attempts() -> None:
    log: list[str] = []
    attempts: list[StepContext] = []

    def charge_unknown(context: StepContext) -> None:
        attempts.append(context)
        if context.attempt == 1:
            raise Declined("flaky")

    saga = reserve_step(log).then(
        step(
            interrupted_first(log),
            name="charge",
            on_unknown=charge_unknown,
            compensation_retry=Retry(3, delay=0),
        )
    )

    interrupt, events = run_interrupted(saga)

    assert final_outcome(events) == Failure(interrupt, ("charge", "reserve"))
    assert attempts == [
        StepContext("order-1", "charge", 1, "unknown"),
        StepContext("order-1", "charge", 2, "unknown"),
    ]


def test_on_unknown_is_not_called_when_the_step_completed() -> None:
    received: list[StepContext] = []
    error = Declined()

    def fail() -> str:
        raise error

    saga = step(lambda: "C-1", lambda _: None, name="charge", on_unknown=received.append).then(
        step(fail, name="ship")
    )

    assert saga.run(SyncInterpreter()) == Failure(error, ("charge",))
    assert received == []


def test_on_unknown_is_not_called_for_a_step_that_failed_with_an_error() -> None:
    received: list[StepContext] = []
    error = Declined()

    def fail() -> str:
        raise error

    saga = step(fail, lambda _: None, name="charge", on_unknown=received.append)

    assert saga.run(SyncInterpreter()) == Failure(error, ())
    assert received == []


# -- deadlines under the sync interpreter: enforced between steps -------------------------------


def test_a_step_does_not_start_once_its_subtree_deadline_has_passed() -> None:
    log: list[str] = []

    def slow() -> str:
        time.sleep(0.02)
        log.append("slow")
        return "S"

    def second() -> str:
        log.append("second")
        return "never"

    saga = (
        step(slow, lambda s: log.append(f"undo slow {s}"), name="slow")
        .then(step(second, name="second"))
        .timeout(0.01)
    )

    outcome = saga.run(SyncInterpreter())

    assert isinstance(outcome, Failure)
    error = outcome.error
    assert isinstance(error, StepTimeoutError)
    assert (
        error.path,
        error.attempt,
        error.seconds,
        error.deadline,
        error.scope,
        error.started,
    ) == (
        "second",
        1,
        0.01,
        "sub-tree",
        "",
        False,
    )
    assert str(error) == (
        "step 'second' could not start attempt 1: "
        "a 0.01 s sub-tree timeout set at the saga's root had passed"
    )
    assert outcome.compensated == ("slow",)
    assert log == ["slow", "undo slow S"]


def test_a_subtree_deadline_inside_a_named_subsaga_names_it() -> None:
    log: list[str] = []

    def slow() -> str:
        time.sleep(0.01)
        return "S"

    payment = step(slow, log.append, name="authorize").then(step(lambda: "C", name="capture"))
    saga = step(lambda: "R", log.append, name="reserve").then(
        payment.named("payment").timeout(0.005)
    )

    outcome = saga.run(SyncInterpreter())

    assert isinstance(outcome, Failure)
    error = outcome.error
    assert isinstance(error, StepTimeoutError)
    assert (error.path, error.deadline, error.scope, error.started) == (
        "payment/capture",
        "sub-tree",
        "payment",
        False,
    )
    assert outcome.compensated == ("payment/authorize", "reserve")
    assert log == ["S", "R"]


def test_a_subtree_deadline_binds_only_its_own_subtree() -> None:
    log: list[str] = []

    def slow() -> str:
        time.sleep(0.01)
        log.append("slow")
        return "S"

    def after() -> str:
        log.append("after")
        return "done"

    saga = step(slow).timeout(0.005).then(step(after))

    assert saga.run(SyncInterpreter()) == Success("done")
    assert log == ["slow", "after"]


def test_the_sync_interpreter_cannot_cut_an_attempt_short() -> None:
    """A sync effect cannot be pre-empted: a step's own timeout is left to async interpreters."""

    def slow() -> str:
        time.sleep(0.005)
        return "done"

    assert step(slow, timeout=0.001).run(SyncInterpreter()) == Success("done")


# -- an effect that declares its own outcome unknown -------------------------------------------


def test_an_action_raising_unknown_outcome_is_left_unresolved_not_failed() -> None:
    log: list[str] = []
    events: list[Event] = []

    def charge() -> str:
        log.append("charge sent")
        raise UnknownOutcomeError("the gateway did not answer")

    saga = reserve_step(log).then(step(charge, lambda _: log.append("refund"), name="charge"))
    outcome = saga.run(SyncInterpreter(listeners=[events.append]))

    assert isinstance(outcome, PartialFailure)
    assert isinstance(outcome.error, UnknownOutcomeError)
    assert (outcome.compensated, outcome.unresolved) == (("reserve",), ("charge",))
    [failed] = [event for event in events if isinstance(event, StepFailed)]
    assert (failed.path, failed.unknown) == ("charge", True)
    assert "refund" not in log


def test_an_idempotent_action_raising_unknown_outcome_is_retried_with_the_same_key() -> None:
    keys: list[str] = []

    def charge() -> str:
        keys.append(current_context().idempotency_key)
        if len(keys) == 1:
            raise UnknownOutcomeError("connection dropped after the request was sent")
        return "C-1"

    saga = step(charge, lambda _: None, name="charge", idempotent=True)
    outcome = saga.run(SyncInterpreter(), saga_id="s-9")

    assert outcome == Success("C-1")
    assert keys == ["s-9/charge", "s-9/charge"]


def test_an_unknown_outcome_goes_to_on_unknown_with_the_steps_context() -> None:
    voided: list[StepContext] = []

    def charge() -> str:
        raise UnknownOutcomeError("no answer")

    saga = step(charge, name="charge", on_unknown=voided.append)
    outcome = saga.run(SyncInterpreter(), saga_id="s-10")

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("charge",)
    assert [context.idempotency_key for context in voided] == ["s-10/charge"]


@pytest.mark.anyio
async def test_an_async_action_raising_unknown_outcome_is_settled_like_a_timeout() -> None:
    voided: list[str] = []

    async def charge() -> str:
        await anyio.lowlevel.checkpoint()
        raise UnknownOutcomeError("no answer")

    def void(context: StepContext) -> None:
        voided.append(context.path)

    saga = step(lambda: "R-1", lambda _: None, name="reserve").then(
        step(charge, lambda _: None, name="charge", on_unknown=void)
    )
    outcome = await saga.run(AsyncInterpreter())

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("charge", "reserve")
    assert voided == ["charge"]
