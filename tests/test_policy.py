"""Retry policies (fsaga.policy): validation, delays and which errors deserve another attempt."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from fsaga import Retry


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


def test_defaults() -> None:
    policy = Retry()

    assert (policy.attempts, policy.delay, policy.backoff, policy.max_delay, policy.jitter) == (
        3,
        0.1,
        2.0,
        30.0,
        0.1,
    )
    assert policy.retry_on is Exception


def test_only_attempts_is_positional() -> None:
    with pytest.raises(TypeError):
        Retry(3, 0.5)  # type: ignore[call-arg]


def test_a_policy_is_a_frozen_value() -> None:
    policy = Retry(2, delay=1.0)

    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.attempts = 5  # type: ignore[misc]
    assert policy == Retry(2, delay=1.0)
    assert dataclasses.replace(policy, attempts=4) == Retry(4, delay=1.0)


def test_replace_validates_too() -> None:
    with pytest.raises(ValueError, match="attempts"):
        dataclasses.replace(Retry(), attempts=0)


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "field"),
    [
        pytest.param({"attempts": 0}, ValueError, "attempts", id="attempts-zero"),
        pytest.param({"attempts": -2}, ValueError, "attempts", id="attempts-negative"),
        pytest.param({"attempts": 1.5}, TypeError, "attempts", id="attempts-float"),
        pytest.param({"attempts": True}, TypeError, "attempts", id="attempts-bool"),
        pytest.param({"attempts": "3"}, TypeError, "attempts", id="attempts-str"),
        pytest.param({"delay": -0.1}, ValueError, "delay", id="delay-negative"),
        pytest.param({"delay": math.nan}, ValueError, "delay", id="delay-nan"),
        pytest.param({"delay": math.inf}, ValueError, "delay", id="delay-inf"),
        pytest.param({"delay": "1"}, TypeError, "delay", id="delay-str"),
        pytest.param({"delay": False}, TypeError, "delay", id="delay-bool"),
        pytest.param({"backoff": 0.5}, ValueError, "backoff", id="backoff-shrinks"),
        pytest.param({"backoff": -1.0}, ValueError, "backoff", id="backoff-negative"),
        pytest.param({"backoff": None}, TypeError, "backoff", id="backoff-none"),
        pytest.param({"max_delay": -1.0}, ValueError, "max_delay", id="max-delay-negative"),
        pytest.param(
            {"delay": 2.0, "max_delay": 1.0}, ValueError, "max_delay", id="max-delay-below-delay"
        ),
        pytest.param({"max_delay": math.inf}, ValueError, "max_delay", id="max-delay-inf"),
        pytest.param({"jitter": 1.5}, ValueError, "jitter", id="jitter-above-one"),
        pytest.param({"jitter": -0.1}, ValueError, "jitter", id="jitter-negative"),
        pytest.param({"jitter": "0"}, TypeError, "jitter", id="jitter-str"),
        pytest.param({"retry_on": 42}, TypeError, "retry_on", id="retry-on-int"),
        pytest.param({"retry_on": ()}, TypeError, "retry_on", id="retry-on-empty-tuple"),
        pytest.param({"retry_on": (Flaky, 42)}, TypeError, "retry_on", id="retry-on-bad-member"),
        pytest.param({"retry_on": int}, TypeError, "retry_on", id="retry-on-not-an-exception"),
        pytest.param(
            {"retry_on": KeyboardInterrupt}, TypeError, "retry_on", id="retry-on-base-exception"
        ),
        pytest.param({"retry_on": [Flaky]}, TypeError, "retry_on", id="retry-on-list"),
    ],
)
def test_bad_fields_fail_at_construction_naming_the_field(
    options: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=f"^Retry: {field}"):
        Retry(**options)


@pytest.mark.parametrize(
    "retry_on",
    [
        pytest.param(Flaky, id="type"),
        pytest.param((Flaky, Fatal), id="tuple"),
        pytest.param(lambda error: "flaky" in str(error), id="predicate"),
    ],
)
def test_good_retry_on_forms_are_accepted(retry_on: Any) -> None:
    assert Retry(retry_on=retry_on).retry_on is retry_on


def test_zero_delay_and_jitter_are_allowed() -> None:
    policy = Retry(2, delay=0.0, max_delay=0.0, jitter=0.0, backoff=1.0)

    assert policy.delay_before(2, random_unit=0.5) == 0.0


# -- delays -------------------------------------------------------------------------------------


def test_delays_grow_by_backoff() -> None:
    policy = Retry(5, delay=0.5, backoff=3.0, jitter=0.0)

    assert [policy.delay_before(attempt, random_unit=0.9) for attempt in (2, 3, 4, 5)] == [
        0.5,
        1.5,
        4.5,
        13.5,
    ]


def test_constant_delay_with_backoff_one() -> None:
    policy = Retry(4, delay=2.0, backoff=1.0, jitter=0.0)

    assert [policy.delay_before(attempt, random_unit=0.0) for attempt in (2, 3, 4)] == [2.0] * 3


def test_delays_are_capped_by_max_delay() -> None:
    policy = Retry(6, delay=1.0, backoff=2.0, max_delay=3.0, jitter=0.0)

    assert [policy.delay_before(attempt, random_unit=0.0) for attempt in (2, 3, 4, 5)] == [
        1.0,
        2.0,
        3.0,
        3.0,
    ]


def test_a_huge_backoff_is_capped_instead_of_overflowing() -> None:
    policy = Retry(10_000, delay=1.0, backoff=10.0, max_delay=60.0, jitter=0.0)

    assert policy.delay_before(5_000, random_unit=0.0) == 60.0


@pytest.mark.parametrize(
    ("jitter", "random_unit", "expected"),
    [
        pytest.param(0.0, 0.99, 4.0, id="no-jitter"),
        pytest.param(0.5, 0.0, 4.0, id="half-jitter-low"),
        pytest.param(0.5, 0.5, 3.0, id="half-jitter-mid"),
        pytest.param(1.0, 0.25, 3.0, id="full-jitter"),
        pytest.param(1.0, 0.0, 4.0, id="full-jitter-zero"),
    ],
)
def test_jitter_randomises_a_fraction_of_the_wait(
    jitter: float, random_unit: float, expected: float
) -> None:
    policy = Retry(3, delay=4.0, jitter=jitter)

    assert policy.delay_before(2, random_unit=random_unit) == pytest.approx(expected)


@pytest.mark.parametrize("attempt", [1, 0, -1])
def test_no_delay_precedes_the_first_attempt(attempt: int) -> None:
    with pytest.raises(ValueError, match=f"attempt {attempt}"):
        Retry().delay_before(attempt, random_unit=0.0)


# -- which errors are retried -------------------------------------------------------------------


def test_by_default_every_exception_is_retried() -> None:
    assert Retry().should_retry(ValueError("x"))
    assert Retry().should_retry(Flaky())


@pytest.mark.parametrize("interruption", [KeyboardInterrupt(), SystemExit(1), GeneratorExit()])
def test_interruptions_are_never_retried(interruption: BaseException) -> None:
    assert not Retry().should_retry(interruption)
    assert not Retry(retry_on=lambda _: True).should_retry(interruption)


def test_retry_on_a_type_matches_subclasses_only() -> None:
    class VeryFlaky(Flaky):
        pass

    policy = Retry(retry_on=Flaky)

    assert policy.should_retry(Flaky())
    assert policy.should_retry(VeryFlaky())
    assert not policy.should_retry(Fatal())


def test_retry_on_a_tuple_matches_any_member() -> None:
    policy = Retry(retry_on=(Flaky, KeyError))

    assert policy.should_retry(Flaky())
    assert policy.should_retry(KeyError("k"))
    assert not policy.should_retry(Fatal())


def test_retry_on_a_predicate_sees_the_error() -> None:
    seen: list[Exception] = []

    def transient(error: Exception) -> bool:
        seen.append(error)
        return "transient" in str(error)

    policy = Retry(retry_on=transient)
    flaky = Flaky("transient glitch")

    assert policy.should_retry(flaky)
    assert not policy.should_retry(Flaky("permanent"))
    assert seen[0] is flaky
