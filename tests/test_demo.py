"""The demo (`fsaga.demo`), the command line (`fsaga.__main__`) and the text renderings
(`fsaga.render`)."""

from __future__ import annotations

import functools
import signal
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
    CRASH_SAGA_ID,
    CRASH_TITLE,
    HEADER,
    PAYMENT_TIMEOUT,
    SCENARIOS,
    Receipt,
    Scenario,
    run_crash_recovery,
    run_demo,
    run_scenario,
)
from fsaga.render import describe_event, describe_outcome, render_timeline
from fsaga.testing import RecordedEffect, check_run

# -- the demo ------------------------------------------------------------------------------------


def run_demo_output() -> str:
    printed: list[str] = []
    run_demo(write=printed.append)
    return "\n".join(printed)


@functools.cache
def demo_output() -> str:
    """The demo's output, computed once: every demo starts (and kills) a child process."""
    return run_demo_output()


needs_sigkill = pytest.mark.skipif(
    not hasattr(signal, "SIGKILL"), reason="the crash recovery run needs SIGKILL"
)


def test_demo_prints_the_five_runs_in_order() -> None:
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
        *(f"== {number}. {scenario.title}" for number, scenario in enumerate(SCENARIOS, start=1)),
        f"== 5. {CRASH_TITLE}",
    ]


def test_demo_output_is_the_same_on_every_run() -> None:
    assert run_demo_output() == demo_output()


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


@needs_sigkill
def test_crash_recovery_reruns_the_payment_in_flight_with_its_key_and_completes() -> None:
    started = time.monotonic()
    run = run_crash_recovery()
    assert time.monotonic() - started < 2.0

    # The child process died after the gateway held the money, before the journal knew.
    assert run.services_at_crash.payments.held == {"A-1": 4_500}
    assert run.services_at_crash.orders.status == {"O-1": "placed"}
    assert run.journal_at_crash.splitlines()[-2:] == [
        "unfinished: last entry #5 intent payment/authorize (attempt 1)",
        "  in flight: payment/authorize (the intent without a result: its process stopped "
        "while it ran)",
    ]
    # Recovery ran the authorisation again with the same key: the gateway held nothing twice.
    assert run.outcome == Success({"order": "O-1", "reservation": "R-1", "payment": "P-1"})
    payments = run.services_after.payments
    assert payments.requests == {f"{CRASH_SAGA_ID}/payment/authorize": "A-1"}
    assert (payments.held, payments.captured, payments.voided) == ({}, {"P-1": 4_500}, [])
    assert run.services_after.inventory.stock == {"sku-42": 7}
    assert run.services_after.orders.status == {"O-1": "placed"}
    assert "  recovery attempts: 1" in run.journal_after
    assert "finished: succeeded" in run.journal_after


@needs_sigkill
def test_the_crash_recovery_run_prints_its_key_lines() -> None:
    output = demo_output()
    run_five = output[output.index("== 5. ") :]
    for line in [
        "what the journal holds (fsaga journal show order-1005):",
        "    status:            running",
        '    #4 completed create_order (attempt 1): "O-1"',
        "    #5 intent    payment/authorize (attempt 1): no result",
        "  unfinished: last entry #5 intent payment/authorize (attempt 1)",
        "  payments:  held {'A-1': 4500}, captured none, voided none",
        "unknown (DESIGN rule 3). The step is idempotent: the gateway files each hold under",
        "the request's idempotency key, order-1005/payment/authorize, so recovery runs it",
        "  Success: {'order': 'O-1', 'payment': 'P-1', 'reservation': 'R-1'}",
        "    #6  unknown   payment/authorize (attempt 1): UnknownOutcomeError: step "
        "'payment/authorize' was running when its process stopped",
        "    #7  intent    payment/authorize (attempt 2)",
        '    #8  completed payment/authorize (attempt 2): "A-1"',
        "  finished: succeeded",
        "  payments:  held none, captured {'P-1': 4500}, voided none",
        "  gateway:   holds requested by key: {'order-1005/payment/authorize': 'A-1'}",
    ]:
        assert line in run_five.splitlines(), line
    assert "/tmp" not in run_five
    assert "fsaga-demo-" not in run_five


def test_without_sigkill_the_crash_recovery_run_is_skipped_with_a_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(signal, "SIGKILL", raising=False)
    output = run_demo_output()
    assert output.endswith(f"== 5. {CRASH_TITLE}\n\nskipped: this platform has no SIGKILL\n")


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
