"""Outcomes (fsaga.outcome): the closed union, its helpers and `SagaFailed`."""

from __future__ import annotations

import dataclasses
from typing import assert_never

import pytest
from returns.result import Failure as ResultFailure
from returns.result import Success as ResultSuccess

from fsaga import CompensationFailure, Failure, Outcome, PartialFailure, SagaFailed, Success

ERROR = RuntimeError("card declined")
FAILURE = Failure(ERROR, ("reserve",))
PARTIAL = PartialFailure(
    ERROR,
    compensated=("ship",),
    failed_compensations=(CompensationFailure("reserve", KeyError("gone"), 3),),
    skipped=("audit",),
    unresolved=("charge",),
)


def describe(outcome: Outcome[int]) -> str:
    match outcome:
        case Success(value):
            return f"success {value}"
        case Failure(error, compensated):
            return f"failure {error} undone {compensated}"
        case PartialFailure(error, failed_compensations=failed):
            return f"partial {error} failed {[failure.path for failure in failed]}"
        case _:
            assert_never(outcome)


def test_match_is_exhaustive_over_the_three_kinds() -> None:
    assert describe(Success(2)) == "success 2"
    assert describe(FAILURE) == "failure card declined undone ('reserve',)"
    assert describe(PARTIAL) == "partial card declined failed ['reserve']"


def test_defaults_report_nothing_more() -> None:
    assert Failure(ERROR).compensated == ()
    partial = PartialFailure(ERROR)
    assert (
        partial.compensated,
        partial.failed_compensations,
        partial.skipped,
        partial.unresolved,
    ) == ((), (), (), ())


@pytest.mark.parametrize(
    ("value", "field"),
    [
        pytest.param(Success(1), "value", id="success"),
        pytest.param(FAILURE, "error", id="failure"),
        pytest.param(PARTIAL, "skipped", id="partial"),
        pytest.param(CompensationFailure("a", ERROR, 1), "attempts", id="compensation-failure"),
    ],
)
def test_outcomes_are_frozen_values(value: object, field: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, field, None)


# -- when ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        pytest.param(Success(4), "success 40", id="success"),
        pytest.param(FAILURE, "failure ('reserve',)", id="failure"),
        pytest.param(PARTIAL, "partial ('audit',)", id="partial"),
    ],
)
def test_when_applies_the_matching_function(outcome: Outcome[int], expected: str) -> None:
    assert (
        outcome.when(
            success=lambda value: f"success {value * 10}",
            failure=lambda failure: f"failure {failure.compensated}",
            partial_failure=lambda partial: f"partial {partial.skipped}",
        )
        == expected
    )


# -- unwrap -------------------------------------------------------------------------------------


def test_unwrap_of_success_is_the_value() -> None:
    value = object()

    assert Success(value).unwrap() is value


@pytest.mark.parametrize("outcome", [FAILURE, PARTIAL], ids=["failure", "partial"])
def test_unwrap_of_a_failed_outcome_raises_saga_failed_from_the_error(
    outcome: Failure | PartialFailure,
) -> None:
    with pytest.raises(SagaFailed) as raised:
        outcome.unwrap()

    assert raised.value.outcome is outcome
    assert raised.value.__cause__ is ERROR
    assert "card declined" in str(raised.value)


def test_saga_failed_message_describes_a_failure() -> None:
    assert str(SagaFailed(FAILURE)) == (
        "saga failed: RuntimeError('card declined'); compensated: reserve"
    )
    assert str(SagaFailed(Failure(ERROR))) == (
        "saga failed: RuntimeError('card declined'); compensated: nothing"
    )


def test_saga_failed_message_describes_everything_left_undone() -> None:
    message = str(SagaFailed(PARTIAL))

    assert message == (
        "saga failed: RuntimeError('card declined'); compensated: ship; "
        "compensation failed: reserve (KeyError('gone') after 3 attempt(s)); "
        "skipped: audit; unknown outcome, unresolved: charge"
    )


def test_saga_failed_is_an_exception() -> None:
    assert issubclass(SagaFailed, Exception)


# -- to_result ----------------------------------------------------------------------------------


def test_success_to_result_is_a_returns_success() -> None:
    assert Success(3).to_result() == ResultSuccess(3)


@pytest.mark.parametrize("outcome", [FAILURE, PARTIAL], ids=["failure", "partial"])
def test_failed_to_result_is_a_returns_failure_carrying_the_outcome(
    outcome: Failure | PartialFailure,
) -> None:
    result = outcome.to_result()

    assert result == ResultFailure(outcome)
    assert result.failure() is outcome


def test_to_result_feeds_returns_pipelines() -> None:
    doubled = Success(21).to_result().map(lambda value: value * 2)
    failed = FAILURE.to_result().map(lambda value: value * 2)

    assert doubled == ResultSuccess(42)
    assert failed == ResultFailure(FAILURE)
