"""The demo (`fsaga.demo`), the command line (`fsaga.__main__`) and the text renderings
(`fsaga.render`)."""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
    SyncInterpreter,
)
from fsaga.__main__ import main
from fsaga.demo import (
    CRASH_SAGA_ID,
    CRASH_TITLE,
    DATABASE,
    HEADER,
    PAYMENT_TIMEOUT,
    SCENARIOS,
    CardDeclined,
    OrderRequest,
    OutOfStock,
    Receipt,
    Row,
    Scenario,
    Shop,
    order_id_for,
    place_order,
    run_crash_recovery,
    run_demo,
    run_scenario,
    take,
)
from fsaga.render import describe_event, describe_outcome, render_timeline
from fsaga.stores import VersionConflictError
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

STOCKED = (Row("sku-42", b"10", 1),)
"""The stock store's rows in a new shop: what every run starts from."""

PLACED = {"customer": "ada", "sku": "sku-42", "quantity": 3, "amount_cents": 4_500}


def order_row(order_id: str, version: int, **fields: object) -> Row:
    """An order's row as SQLite holds it (JSON, keys sorted, no spaces)."""
    value = {**PLACED, "status": "placed", **fields}
    data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return Row(order_id, data, version)


def test_demo_prints_the_five_runs_in_order() -> None:
    output = demo_output()
    assert output.startswith(HEADER)
    outcomes = [
        "outcome:\n  Success: ",
        "outcome:\n  Failure: CardDeclined",
        "outcome:\n  PartialFailure: CardDeclined",
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


def test_demo_output_names_no_temporary_path() -> None:
    output = demo_output()
    assert "/tmp" not in output
    assert "fsaga-demo-" not in output
    assert "\\" not in output  # nor a Windows one


def test_every_run_starts_from_a_new_shop() -> None:
    for scenario in SCENARIOS:
        run = run_scenario(scenario)
        assert (run.before.stock, run.before.orders) == (STOCKED, ()), scenario.saga_id
        assert run.before.payments.held == {}


def test_the_order_id_is_derived_from_the_saga_id() -> None:
    assert [order_id_for(scenario.saga_id) for scenario in SCENARIOS] == [
        "O-1001",
        "O-1002",
        "O-1003",
        "O-1004",
    ]
    assert order_id_for(CRASH_SAGA_ID) == "O-1005"


def test_the_stores_are_tables_of_one_sqlite_file_in_the_given_folder(tmp_path: Path) -> None:
    run = run_scenario(SCENARIOS[0], folder=tmp_path)
    assert isinstance(run.outcome, Success)
    with contextlib.closing(sqlite3.connect(tmp_path / DATABASE)) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        stock = db.execute("SELECT key, value, version FROM stock").fetchall()
    assert {"stock", "orders"} <= tables
    assert stock == [("sku-42", b"7", 2)]


def test_success_places_the_order() -> None:
    run = run_scenario(SCENARIOS[0])
    assert run.outcome == Success(Receipt(order_id="O-1001", payment_id="P-1"))
    retries = [event for event in run.events if isinstance(event, StepRetrying)]
    assert [event.path for event in retries] == ["payment/authorize"]
    completed = [event.path for event in run.events if isinstance(event, StepCompleted)]
    assert completed == [
        "update:stock:sku-42",
        "save:orders:O-1001",
        "payment/authorize",
        "payment/capture",
        "update:orders:O-1001",
    ]
    after = run.after
    assert after.stock == (Row("sku-42", b"7", 2),)
    # Created as version 1, marked paid (after the payment's external calls) as version 2.
    assert after.orders == (order_row("O-1001", 2, status="paid", payment="P-1"),)
    assert after.orders[0].value == {**PLACED, "status": "paid", "payment": "P-1"}
    assert (after.payments.held, after.payments.captured) == ({}, {"P-1": 4_500})


def test_failure_restores_every_row_exactly() -> None:
    run = run_scenario(SCENARIOS[1])
    assert isinstance(run.outcome, Failure)
    assert isinstance(run.outcome.error, CardDeclined)
    assert run.outcome.compensated == (
        "payment/authorize",
        "save:orders:O-1002",
        "update:stock:sku-42",
    )
    # The stock row is byte for byte what it was before, version included; the order is gone.
    assert run.after.stock == run.before.stock == STOCKED
    assert run.after.orders == ()
    payments = run.after.payments
    assert (payments.held, payments.captured, payments.voided) == ({}, {}, ["A-1"])


def test_partial_failure_keeps_the_clerks_edit_and_names_the_conflict() -> None:
    run = run_scenario(SCENARIOS[2])
    outcome = run.outcome
    assert isinstance(outcome, PartialFailure)
    assert isinstance(outcome.error, CardDeclined)
    assert outcome.compensated == ("payment/authorize", "update:stock:sku-42")
    [failure] = outcome.failed_compensations
    assert (failure.path, failure.attempts) == ("save:orders:O-1003", 1)
    conflict = failure.error
    assert isinstance(conflict, VersionConflictError)
    # The saga left version 1 (the order it created); the clerk's edit made version 2.
    assert (conflict.store, conflict.key, conflict.expected, conflict.found) == (
        "orders",
        "O-1003",
        1,
        2,
    )
    assert "key 'O-1003'" in str(conflict)
    assert "the saga left version 1, found version 2" in str(conflict)
    assert (outcome.skipped, outcome.unresolved) == ((), ())
    # The clerk's edit is kept, and the stock is restored all the same.
    assert run.after.orders == (order_row("O-1003", 2, note="call before delivery"),)
    assert run.after.stock == STOCKED
    assert run.after.payments.voided == ["A-1"]


def test_the_clerk_writes_through_another_connection(tmp_path: Path) -> None:
    shop = Shop.open(tmp_path)
    try:
        shop.orders.put("O-1", {"status": "placed"})
        shop.clerk_edits_order("O-1")
        got = shop.orders.get("O-1")
    finally:
        shop.close()
    assert got is not None
    assert (got.value, got.version) == ({"status": "placed", "note": "call before delivery"}, 2)


def test_timeout_voids_the_payment_by_key_and_restores_the_stores() -> None:
    run = run_scenario(SCENARIOS[3])
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
    assert run.outcome.compensated == (
        "payment/authorize",
        "save:orders:O-1004",
        "update:stock:sku-42",
    )
    [cut_short] = [event for event in run.events if isinstance(event, StepFailed)]
    assert (cut_short.path, cut_short.unknown) == ("payment/authorize", True)
    payments = run.after.payments
    assert payments.requests == {"order-1004/payment/authorize": "A-1"}
    assert (payments.held, payments.captured, payments.voided) == ({}, {}, ["A-1"])
    assert run.after.stock == STOCKED
    assert run.after.orders == ()


def test_out_of_stock_fails_the_first_step_and_writes_nothing(tmp_path: Path) -> None:
    shop = Shop.open(tmp_path)
    try:
        greedy = OrderRequest("ada", "sku-42", 11, 16_500)
        outcome = place_order(shop, greedy, "O-1").run(SyncInterpreter(), saga_id="order-1")
        state = shop.state()
    finally:
        shop.close()
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, OutOfStock)
    assert str(outcome.error) == "only 10 left, 11 wanted"
    assert outcome.compensated == ()
    assert (state.stock, state.orders, state.payments.held) == (STOCKED, (), {})


def test_take() -> None:
    assert take(3)(3) == 0
    with pytest.raises(OutOfStock, match="only 2 left, 3 wanted"):
        take(3)(2)


def test_the_runs_print_their_rows() -> None:
    output = demo_output()
    runs = [output[output.index(f"== {number}. ") :] for number in range(1, 5)]
    rows = "state afterwards (the rows of shop.db: key, version, value as stored):"
    expected = [
        [
            "  stock:     sku-42  version 2  7",
            '  orders:    O-1001  version 2  {"amount_cents":4500,"customer":"ada",'
            '"payment":"P-1","quantity":3,"sku":"sku-42","status":"paid"}',
            "  payments:  held none, captured {'P-1': 4500}, voided none",
        ],
        [
            "  stock:     sku-42  version 1  10",
            "  orders:    no rows",
            "  payments:  held none, captured none, voided A-1",
        ],
        [
            "  stock:     sku-42  version 1  10",
            '  orders:    O-1003  version 2  {"amount_cents":4500,"customer":"ada",'
            '"note":"call before delivery","quantity":3,"sku":"sku-42","status":"placed"}',
            "  payments:  held none, captured none, voided A-1",
        ],
        [
            "  stock:     sku-42  version 1  10",
            "  orders:    no rows",
            "  payments:  held none, captured none, voided A-1",
        ],
    ]
    for text, lines in zip(runs, expected, strict=True):
        state = text.splitlines()
        at = state.index(rows)
        assert state[at + 1 : at + 4] == lines


def test_the_conflict_run_prints_its_key_lines() -> None:
    output = demo_output()
    run_three = output[output.index("== 3. ") : output.index("== 4. ")]
    conflict = (
        "VersionConflictError(\"store 'orders', key 'O-1003': not undone, someone else changed "
        "it after this saga wrote it (the saga left version 1, found version 2); their value "
        'was kept")'
    )
    for line in [
        "  0.070s      payment/capture: failed: CardDeclined('card declined: insufficient funds')",
        f"  0.095s    save:orders:O-1003: compensation failed after 1 attempt(s): {conflict}",
        "  0.095s    update:stock:sku-42: compensated",
        "  0.095s  saga order-1003 finished: PartialFailure",
        "    compensated:          payment/authorize, update:stock:sku-42",
        f"    failed compensations: save:orders:O-1003: {conflict} after 1 attempt(s)",
    ]:
        assert line in run_three.splitlines(), line


def test_the_timeout_run_prints_its_key_lines() -> None:
    output = demo_output()
    run_four = output[output.index("== 4. ") :]
    for line in [
        "  0.000s      payment/authorize: started",
        "  0.050s      payment/authorize: cut short, outcome unknown: StepTimeoutError(",
        "  0.050s      payment/authorize: compensating",
        "  0.075s      payment/authorize: compensated",
        "  0.075s    save:orders:O-1004: compensated",
        "  0.075s    update:stock:sku-42: compensated",
        "  0.075s  saga order-1004 finished: Failure",
        "    compensated: payment/authorize, save:orders:O-1004, update:stock:sku-42",
        "  why: step 'payment/authorize' timed out on attempt 1: it ran past its 0.05 s step "
        "timeout",
    ]:
        assert line in run_four, line


@needs_sigkill
def test_crash_recovery_reruns_the_payment_in_flight_with_its_key_and_completes(
    tmp_path: Path,
) -> None:
    run = run_crash_recovery(folder=tmp_path)

    # The child process died after the gateway held the money, before the journal knew; the
    # store writes before it are committed in the file.
    at_crash = run.state_at_crash
    assert at_crash.payments.held == {"A-1": 4_500}
    assert at_crash.stock == (Row("sku-42", b"7", 2),)
    assert at_crash.orders == (order_row("O-1005", 1),)
    assert run.journal_at_crash.splitlines()[-2:] == [
        "unfinished: last entry #5 intent payment/authorize (attempt 1)",
        "  in flight: payment/authorize (the intent without a result: its process stopped "
        "while it ran)",
    ]
    # Recovery ran the authorisation again with the same key: the gateway held nothing twice.
    assert run.outcome == Success({"order_id": "O-1005", "payment_id": "P-1"})
    payments = run.state_after.payments
    assert payments.requests == {f"{CRASH_SAGA_ID}/payment/authorize": "A-1"}
    assert (payments.held, payments.captured, payments.voided) == ({}, {"P-1": 4_500}, [])
    assert "  recovery attempts: 1" in run.journal_after
    assert "finished: succeeded" in run.journal_after

    # No store write was applied twice: 3 taken once (10 -> 7, one new version), the order
    # created once and marked paid once (versions 1 and 2), one write id per write step.
    after = run.state_after
    assert after.stock == (Row("sku-42", b"7", 2),)
    assert after.orders == (order_row("O-1005", 2, status="paid", payment="P-1"),)
    with contextlib.closing(sqlite3.connect(tmp_path / DATABASE)) as db:
        counters = dict(db.execute("SELECT name, last_version FROM fsaga_stores").fetchall())
        writes = db.execute(
            "SELECT store, write_id, applied, undone FROM fsaga_store_writes"
            " ORDER BY store, write_id"
        ).fetchall()
    assert counters == {"stock": 2, "orders": 2}
    assert writes == [
        ("orders", "order-1005/save:orders:O-1005", 1, 0),
        ("orders", "order-1005/update:orders:O-1005", 1, 0),
        ("stock", "order-1005/update:stock:sku-42", 1, 0),
    ]


@needs_sigkill
def test_the_crash_recovery_run_prints_its_key_lines() -> None:
    output = demo_output()
    run_five = output[output.index("== 5. ") :]
    order_placed = (
        '{"amount_cents":4500,"customer":"ada","quantity":3,"sku":"sku-42","status":"placed"}'
    )
    order_paid = (
        '{"amount_cents":4500,"customer":"ada","payment":"P-1","quantity":3,"sku":"sku-42",'
        '"status":"paid"}'
    )
    for line in [
        "what the journal holds (fsaga journal show order-1005):",
        "    status:            running",
        '    input:             {"amount_cents": 4500, "customer": "ada", "order_id": "O-1005", '
        '"quantity": 3, "sku": "sku-42"}',
        '    #2 completed update:stock:sku-42 (attempt 1): {"after": {"value": 7, "version": 2}, '
        '"before": {"value": 10, "version": 1}}',
        "    #5 intent    payment/authorize (attempt 1): no result",
        "  unfinished: last entry #5 intent payment/authorize (attempt 1)",
        "state when the process died (the rows of shop.db: key, version, value as stored):",
        "  stock:     sku-42  version 2  7",
        f"  orders:    O-1005  version 1  {order_placed}",
        "  payments:  held {'A-1': 4500}, captured none, voided none",
        "settled by rule 3 in docs/concepts.md. The step is idempotent: the gateway files each",
        "hold under the request's idempotency key, order-1005/payment/authorize, so recovery",
        "  Success: {'order_id': 'O-1005', 'payment_id': 'P-1'}",
        "    #6  unknown   payment/authorize (attempt 1): UnknownOutcomeError: step "
        "'payment/authorize' was running when its process stopped",
        "    #7  intent    payment/authorize (attempt 2)",
        '    #8  completed payment/authorize (attempt 2): "A-1"',
        "    #11 intent    update:orders:O-1005 (attempt 1)",
        "  finished: succeeded",
        "state afterwards (the rows of shop.db: key, version, value as stored):",
        f"  orders:    O-1005  version 2  {order_paid}",
        "  payments:  held none, captured {'P-1': 4500}, voided none",
        "  gateway:   holds requested by key: {'order-1005/payment/authorize': 'A-1'}",
    ]:
        assert line in run_five.splitlines(), line
    # Recovery wrote neither the stock nor the order's creation again.
    after = run_five[run_five.index("the journal afterwards:") :]
    assert after.count("intent    update:stock:sku-42") == 1
    assert after.count("intent    save:orders:O-1005") == 1


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
