"""The demo (`fsaga.demo`), the command line (`fsaga.__main__`) and the text renderings
(`fsaga.render`)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from fsaga import (
    CompensationCompleted,
    CompensationFailed,
    CompensationFailure,
    CompensationRetrying,
    CompensationStarted,
    Event,
    Failure,
    PartialFailure,
    SagaFinished,
    SagaStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
    StepTimeoutError,
    Success,
)
from fsaga.__main__ import main
from fsaga.demo import (
    HEADER,
    PAYMENT_TIMEOUT,
    SCENARIOS,
    Receipt,
    Scenario,
    run_demo,
    run_scenario,
)
from fsaga.render import describe_event, describe_outcome, render_timeline
from fsaga.testing import RecordedEffect, check_run

# -- the demo ------------------------------------------------------------------------------------


def demo_output() -> str:
    printed: list[str] = []
    run_demo(write=printed.append)
    return "\n".join(printed)


def test_demo_prints_the_four_runs_in_order() -> None:
    output = demo_output()
    assert output.startswith(HEADER)
    outcomes = [
        "outcome:\n  Success: ",
        "outcome:\n  Failure: CardDeclined",
        "outcome:\n  PartialFailure: ",
        "outcome:\n  Failure: StepTimeoutError",
    ]
    positions = [output.index(outcome) for outcome in outcomes]
    assert positions == sorted(positions)
    assert [line for line in output.splitlines() if line.startswith("== ")] == [
        f"== {number}. {scenario.title}" for number, scenario in enumerate(SCENARIOS, start=1)
    ]


def test_demo_output_is_the_same_on_every_run() -> None:
    assert demo_output() == demo_output()


def test_success_places_the_order() -> None:
    run = run_scenario(SCENARIOS[0])
    assert run.outcome == Success(Receipt(order_id="O-1", reservation_id="R-1", payment_id="P-1"))
    retries = [event for event in run.events if isinstance(event, StepRetrying)]
    assert [event.path for event in retries] == ["payment/authorize"]
    services = run.services
    assert services.inventory.stock == {"sku-42": 7}
    assert services.orders.status == {"O-1": "placed"}
    assert services.payments.captured == {"P-1": 4_500}


def test_failure_rolls_everything_back_in_reverse_order() -> None:
    run = run_scenario(SCENARIOS[1])
    assert isinstance(run.outcome, Failure)
    assert run.outcome.compensated == ("payment/authorize", "create_order", "reserve_stock")
    services = run.services
    assert services.inventory.stock == {"sku-42": 10}
    assert services.inventory.reservations == {}
    assert services.orders.status == {"O-1": "cancelled"}
    assert services.payments.held == {}
    assert services.payments.captured == {}


def test_partial_failure_names_the_compensation_that_failed() -> None:
    run = run_scenario(SCENARIOS[2])
    assert isinstance(run.outcome, PartialFailure)
    assert run.outcome.compensated == ("payment/authorize", "create_order")
    [failure] = run.outcome.failed_compensations
    assert (failure.path, failure.attempts) == ("reserve_stock", 3)
    assert run.outcome.skipped == ()
    assert run.outcome.unresolved == ()
    assert run.services.inventory.stock == {"sku-42": 7}  # the stock is still held


def test_timeout_voids_the_payment_by_key_and_rolls_everything_back() -> None:
    started = time.monotonic()
    run = run_scenario(SCENARIOS[3])
    assert time.monotonic() - started < 2.0  # the real wait is the 50 ms payment timeout
    assert isinstance(run.outcome, Failure)  # the unknown outcome was settled, not unresolved
    error = run.outcome.error
    assert isinstance(error, StepTimeoutError)
    assert (error.path, error.attempt, error.seconds, error.deadline, error.started) == (
        "payment/authorize",
        1,
        PAYMENT_TIMEOUT,
        "step",
        True,
    )
    # payment/authorize is compensated by its unknown-outcome compensation (void by key).
    assert run.outcome.compensated == ("payment/authorize", "create_order", "reserve_stock")
    [cut_short] = [event for event in run.events if isinstance(event, StepFailed)]
    assert (cut_short.path, cut_short.unknown) == ("payment/authorize", True)
    services = run.services
    assert services.payments.requests == {"order-1004/payment/authorize": "A-1"}
    assert services.payments.voided == ["A-1"]
    assert services.payments.held == {}
    assert services.payments.captured == {}
    assert services.orders.status == {"O-1": "cancelled"}
    assert services.inventory.stock == {"sku-42": 10}
    assert services.inventory.reservations == {}


def test_the_timeout_run_prints_its_key_lines() -> None:
    output = demo_output()
    run_four = output[output.index("== 4. ") :]
    for line in [
        "  0.032s      payment/authorize: started",
        "  0.082s      payment/authorize: cut short, outcome unknown: StepTimeoutError(",
        "  0.082s      payment/authorize: compensating",
        "  0.107s      payment/authorize: compensated",
        "  0.132s    reserve_stock: compensated",
        "  0.132s  saga order-1004 finished: Failure",
        "    compensated: payment/authorize, create_order, reserve_stock",
        "  why: step 'payment/authorize' timed out on attempt 1: it ran past its 0.05 s step "
        "timeout",
        "  inventory: stock {'sku-42': 10}, reservations held: none",
        "  orders:    O-1 cancelled",
        "  payments:  held none, captured none, voided A-1",
    ]:
        assert line in run_four, line


@dataclass(frozen=True)
class EventsOnly:
    """A trace with events and no recorded effects (the demo does not record them)."""

    events: Sequence[Event]
    effects: Sequence[RecordedEffect] = ()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.saga_id for s in SCENARIOS])
def test_demo_runs_keep_the_run_invariants(scenario: Scenario) -> None:
    run = run_scenario(scenario)
    check_run(EventsOnly(run.events), run.outcome)
    assert {event.saga_id for event in run.events} == {run.scenario.saga_id}


# -- the command line ----------------------------------------------------------------------------


def test_cli_demo_returns_zero() -> None:
    printed: list[str] = []
    assert main(["demo"], write=printed.append) == 0
    assert "\n".join(printed) == demo_output()


def test_cli_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    error = capsys.readouterr().err
    assert "invalid choice: 'frobnicate'" in error
    assert "usage: fsaga" in error


def test_cli_without_a_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "required" in capsys.readouterr().err


def test_cli_help_returns_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out


def test_python_dash_m_fsaga_runs_the_demo() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "fsaga", "demo"], capture_output=True, text=True, check=False
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == demo_output() + "\n"
    unknown = subprocess.run(
        [sys.executable, "-m", "fsaga", "nope"], capture_output=True, text=True, check=False
    )
    assert unknown.returncode == 2
    assert "invalid choice" in unknown.stderr


# -- rendering -----------------------------------------------------------------------------------


def test_empty_timeline_is_empty() -> None:
    assert render_timeline([]) == ""


def test_timeline_times_are_relative_and_indented_by_depth() -> None:
    events: list[Event] = [
        SagaStarted("s", 1000.0),
        StepStarted("s", "a", 1, 1000.5),
        StepStarted("s", "x/y/z", 1, 1002.25),
        SagaFinished("s", 1003.0, Success(None)),
    ]
    assert render_timeline(events).splitlines() == [
        "  0.000s  saga s started",
        "  0.500s    a: started",
        "  2.250s        x/y/z: started",
        "  3.000s  saga s finished: Success",
    ]


ERROR = ValueError("no")


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (StepStarted("s", "a", 2, 0.0), "a: started (attempt 2)"),
        (StepCompleted("s", "a", 1, 1.5, 1.0, "R-1", True), "a: completed in 0.500s -> 'R-1'"),
        (
            StepRetrying("s", "a", 1, 1.0, 0.0, ERROR, 0.25),
            "a: attempt 1 failed: ValueError('no'); retrying in 0.250s",
        ),
        (StepFailed("s", "a", 1, 1.0, 0.0, ERROR), "a: failed: ValueError('no')"),
        (
            StepFailed("s", "a", 1, 1.0, 0.0, KeyboardInterrupt(), unknown=True),
            "a: cut short, outcome unknown: KeyboardInterrupt()",
        ),
        (CompensationStarted("s", "a", 1, 0.0), "a: compensating"),
        (CompensationCompleted("s", "a", 1, 1.0, 0.0), "a: compensated"),
        (
            CompensationRetrying("s", "a", 2, 1.0, 0.0, ERROR, 1.0),
            "a: compensation attempt 2 failed: ValueError('no'); retrying in 1.000s",
        ),
        (
            CompensationFailed("s", "a", 3, 1.0, 0.0, ERROR),
            "a: compensation failed after 3 attempt(s): ValueError('no')",
        ),
    ],
)
def test_describe_event(event: Event, text: str) -> None:
    assert describe_event(event) == text


def test_long_results_are_shortened_to_one_line() -> None:
    text = describe_event(StepCompleted("s", "a", 1, 0.0, 0.0, "x" * 500, True))
    assert len(text) < 80
    assert "..." in text


def test_describe_outcome() -> None:
    assert describe_outcome(Success((1, "a"))) == "Success: (1, 'a')"
    assert describe_outcome(Failure(ERROR, ("b", "a"))) == (
        "Failure: ValueError('no')\n  compensated: b, a"
    )
    assert describe_outcome(Failure(ERROR)) == "Failure: ValueError('no')\n  compensated: none"
    partial = PartialFailure(
        ERROR,
        compensated=("c",),
        failed_compensations=(CompensationFailure("b", OSError("down"), 2),),
        skipped=("a",),
        unresolved=("d",),
    )
    assert describe_outcome(partial).splitlines() == [
        "PartialFailure: ValueError('no')",
        "  compensated:          c",
        "  failed compensations: b: OSError('down') after 2 attempt(s)",
        "  skipped:              a",
        "  unresolved:           d",
    ]
