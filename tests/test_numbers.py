"""Every number a user passes to fsaga, over its whole range (fsaga._numbers).

Each public option that takes seconds or a count is tried with ints of any size (well past what
a float holds), floats (``nan``, ``inf``, ``-0.0``, the smallest and largest), bools and
non-numbers. Building with a bad one raises `TypeError` or `ValueError` naming the option, at
once; a value that is accepted then works in a run: no `OverflowError` (or any other error of
fsaga's own) ever comes out later.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from fsaga import (
    AsyncInterpreter,
    Failure,
    PartialFailure,
    Retry,
    Saga,
    StepTimeoutError,
    Success,
    SyncInterpreter,
    pure,
    step,
)
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.interpreter import sync
from fsaga.journal import MemoryJournal, SqliteJournal
from fsaga.stores import SqliteStore
from fsaga.testing.laws import assert_async_compensation_laws, assert_compensation_laws, fault_plans

EDGES: list[object] = [
    0,
    1,
    -1,
    2,
    10**400,
    -(10**400),
    2**63,
    2**63 - 1,
    2**1024,
    sys.float_info.max,
    -sys.float_info.max,
    sys.float_info.min,
    5e-324,
    1e-9,
    0.5,
    1.0,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    True,
    False,
    None,
    "1",
    b"1",
    [1],
]

numbers = st.one_of(
    st.sampled_from(EDGES),
    st.integers(),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(),
)


def trio_run(function: Callable[[], Any]) -> Any:
    """Run on trio's virtual clock: a wait of any length costs no real time."""
    return anyio.run(
        function, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
    )


def fail() -> None:
    raise RuntimeError("declined")


def ran_or_timed_out(outcome: object) -> bool:
    """A run's outcome with a deadline of any length: it completed, or (for a deadline too short
    to let anything start or finish) it failed with a timeout, never any other error."""
    return outcome == Success("ok") or (
        isinstance(outcome, Failure | PartialFailure)
        and isinstance(outcome.error, StepTimeoutError)
    )


# -- the options, each built with the value and, when accepted, used in a run ----------------


def step_timeout(value: Any) -> None:
    saga = step(lambda: "ok", timeout=value)

    async def run() -> object:
        return await saga.run(AsyncInterpreter())

    assert ran_or_timed_out(trio_run(run))
    assert ran_or_timed_out(saga.run(SyncInterpreter()))


def compensation_timeout(value: Any) -> None:
    saga = step(lambda: 1, lambda _: None, name="a", compensation_timeout=value).then(step(fail))

    async def run() -> object:
        return await saga.run(AsyncInterpreter())

    assert isinstance(trio_run(run), Failure)
    assert isinstance(saga.run(SyncInterpreter()), Failure)


def subtree_timeout(value: Any) -> None:
    saga = step(lambda: "ok").timeout(value)

    async def run() -> object:
        return await saga.run(AsyncInterpreter())

    assert ran_or_timed_out(trio_run(run))
    assert ran_or_timed_out(saga.run(SyncInterpreter()))


def run_timeout(value: Any) -> None:
    interpreter = AsyncInterpreter(timeout=value)

    async def run() -> object:
        return await step(lambda: "ok").run(interpreter)

    assert ran_or_timed_out(trio_run(run))


def retry_option(option: str) -> Callable[[Any], None]:
    def build(value: Any) -> None:
        arguments: dict[str, Any] = {option: value}
        if option == "delay" and isinstance(value, int | float) and value > 30:
            arguments["max_delay"] = value  # else max_delay < delay refuses it, rightly
        policy = Retry(**arguments) if option != "attempts" else Retry(value)
        attempts = min(policy.attempts, 4)
        for attempt in (2, 3, 1_025, 10**6, 10**400):
            delay = policy.delay_before(attempt, random_unit=0.0)
            assert delay == pytest.approx(exact_delay(policy, attempt)), (attempt, delay)
        waits: list[float] = []
        saga = step(fail, retry=Retry(attempts, delay=policy.delay, max_delay=policy.max_delay))
        assert isinstance(saga.run(SyncInterpreter(sleep=waits.append)), Failure)

        async def wait(seconds: float) -> None:
            # Counted, not slept: even virtual time overflows after two waits of 1e308 s.
            waits.append(seconds)

        async def run() -> object:
            return await saga.run(AsyncInterpreter(sleep=wait))

        assert isinstance(trio_run(run), Failure)
        assert all(math.isfinite(wait) and wait >= 0 for wait in waits)

    return build


def exact_delay(policy: Retry, attempt: int) -> float:
    """``min(max_delay, delay * backoff ** (attempt - 2))`` (no jitter), computed in logs so
    that no power overflows: the reference `Retry.delay_before` must agree with."""
    if policy.delay == 0:
        return 0.0
    if policy.backoff == 1:
        return float(policy.delay)
    steps_to_max = (math.log(policy.max_delay) - math.log(policy.delay)) / math.log(policy.backoff)
    if attempt - 2 >= steps_to_max:  # an int compared with a float: exact at any size
        return float(policy.max_delay)
    return math.exp(math.log(policy.delay) + (attempt - 2) * math.log(policy.backoff))


def max_recovery_attempts(value: Any) -> None:
    journal = MemoryJournal()
    journal.create("s-1", "noop", 1, b"null")
    runs = DurableSagas(journal, _definitions(), max_recovery_attempts=value)
    assert runs.recover() == {"s-1": Success(None)}


def stale_after(value: Any) -> None:
    journal = MemoryJournal()
    runs = DurableSagas(journal, _definitions(), stale_after=value)
    assert runs.start("noop", None, saga_id="s-1") == Success(None)
    assert runs.recover() == {}


def definition_version(value: Any, folder: Path) -> None:
    definitions = SagaDefinitions()
    definitions.saga("noop", version=value)(_noop)
    with SqliteJournal(folder / "journal.db") as journal:
        runs = DurableSagas(journal, definitions)
        assert runs.start("noop", None, saga_id="s-1") == Success(None)


def journal_busy_timeout(value: Any, folder: Path) -> None:
    with SqliteJournal(folder / "journal.db", busy_timeout=value) as journal:
        journal.create("s-1", "noop", 1, b"null")


def store_busy_timeout(value: Any, folder: Path) -> None:
    store: SqliteStore[str, int] = SqliteStore(folder / "store.db", "stock", busy_timeout=value)
    with store:
        store.put("sku", 1)


def laws_max_examples(value: Any) -> None:
    # A saga without a step has one fault plan only: hypothesis stops there, whatever the count.
    assert_compensation_laws(lambda: pure(None), max_examples=value)


def async_laws_max_examples(value: Any) -> None:
    assert_async_compensation_laws(lambda: pure(None), max_examples=value)


def fault_plans_max_failures(value: Any) -> None:
    plan = find(fault_plans(["a", "b"], max_failures=value), lambda plan: bool(plan.actions))
    assert all(1 <= failures <= value for failures in plan.actions.values())


def _noop(_: object) -> Saga[None]:
    return pure(None)


def _definitions() -> SagaDefinitions:
    definitions = SagaDefinitions()
    definitions.saga("noop")(_noop)
    return definitions


OPTIONS: dict[str, Callable[[Any], None]] = {
    "step(timeout=)": step_timeout,
    "step(compensation_timeout=)": compensation_timeout,
    "Saga.timeout()": subtree_timeout,
    "AsyncInterpreter(timeout=)": run_timeout,
    "Retry(attempts)": retry_option("attempts"),
    "Retry(delay=)": retry_option("delay"),
    "Retry(backoff=)": retry_option("backoff"),
    "Retry(max_delay=)": retry_option("max_delay"),
    "Retry(jitter=)": retry_option("jitter"),
    "DurableSagas(max_recovery_attempts=)": max_recovery_attempts,
    "DurableSagas(stale_after=)": stale_after,
}
# These run hypothesis themselves, which cannot nest inside a @given: tried with the edges.
KIT_OPTIONS: dict[str, Callable[[Any], None]] = {
    "assert_compensation_laws(max_examples=)": laws_max_examples,
    "assert_async_compensation_laws(max_examples=)": async_laws_max_examples,
    "fault_plans(max_failures=)": fault_plans_max_failures,
}
FILE_OPTIONS: dict[str, Callable[[Any, Path], None]] = {
    "SagaDefinitions.saga(version=)": definition_version,
    "SqliteJournal(busy_timeout=)": journal_busy_timeout,
    "SqliteStore(busy_timeout=)": store_busy_timeout,
}


def refused_clearly(error: Exception, option: str) -> bool:
    """A construction-time refusal: a TypeError or ValueError whose message names the option."""
    name = option.split("(")[1].rstrip(")=") or option.split("(")[0]
    name = {"": "timeout()", "Saga.timeout": "timeout()"}.get(name, name)
    return type(error) in (TypeError, ValueError) and name in str(error)


@pytest.mark.parametrize("option", sorted(OPTIONS))
@settings(max_examples=60, deadline=None)
@given(value=numbers)
def test_every_number_is_refused_clearly_or_works_in_a_run(option: str, value: Any) -> None:
    try:
        OPTIONS[option](value)
    except (TypeError, ValueError) as error:
        refusal = error
    else:
        return
    assert refused_clearly(refusal, option), (option, value, refusal)


@pytest.mark.parametrize("option", sorted(FILE_OPTIONS))
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=numbers)
def test_every_number_given_to_a_file_is_refused_clearly_or_works(
    option: str, value: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("numbers")
    try:
        FILE_OPTIONS[option](value, folder)
    except (TypeError, ValueError) as error:
        refusal = error
    else:
        return
    assert refused_clearly(refusal, option), (option, value, refusal)


@pytest.mark.parametrize("value", EDGES, ids=lambda value: repr(value)[:24])
@pytest.mark.parametrize("option", sorted(KIT_OPTIONS))
def test_every_number_given_to_the_testing_kit_is_refused_clearly_or_works(
    option: str, value: Any
) -> None:
    try:
        KIT_OPTIONS[option](value)
    except (TypeError, ValueError) as error:
        refusal = error
    else:
        return
    assert refused_clearly(refusal, option), (option, value, refusal)


# -- the instances the outside testing found ---------------------------------------------------


def test_a_zero_delay_stays_zero_however_many_attempts_came_before() -> None:
    """``Retry(delay=0, backoff=2)`` never waits, even past attempt 1,025 (where ``2.0**1024``
    overflows to inf)."""
    policy = Retry(10**9, delay=0.0, backoff=2.0, jitter=0.0)

    assert {policy.delay_before(attempt, random_unit=0.0) for attempt in range(2, 2_000)} == {0.0}
    assert policy.delay_before(10**400, random_unit=0.0) == 0.0


def test_a_constant_delay_stays_constant_however_many_attempts_came_before() -> None:
    policy = Retry(10**9, delay=1.5, backoff=1.0, max_delay=60.0, jitter=0.0)

    assert policy.delay_before(10**400, random_unit=0.0) == 1.5


def test_a_growing_delay_reaches_max_delay_and_stays_there() -> None:
    policy = Retry(10**9, delay=0.5, backoff=2.0, max_delay=10.0, jitter=0.0)
    delays = [policy.delay_before(attempt, random_unit=0.0) for attempt in range(2, 2_000)]

    assert delays[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert set(delays[5:]) == {10.0}
    assert policy.delay_before(10**400, random_unit=0.0) == 10.0


def test_a_huge_run_timeout_is_refused_at_construction_not_at_run_time() -> None:
    """``AsyncInterpreter(timeout=10**400)`` is refused when built, not by every run."""
    with pytest.raises(ValueError, match="AsyncInterpreter: timeout must be a positive, finite"):
        AsyncInterpreter(timeout=10**400)


def test_the_default_sync_sleep_waits_any_finite_time_in_pieces_the_platform_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`time.sleep` refuses a duration past the platform's limit (OverflowError or OSError);
    the sync interpreter's default sleep never hands it one. (A wait of 1e300 s cannot really
    be waited out in a test: the sleeps are counted instead, on a clock that moves with them.)"""
    now = [0.0]
    slept: list[float] = []

    def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds
        if len(slept) == 3:
            now[0] = math.inf  # end the wait after three pieces

    monkeypatch.setattr(time, "sleep", fake_sleep)
    monkeypatch.setattr(time, "monotonic", lambda: now[0])

    sync._wait(1e300)

    assert slept == [86_400.0, 86_400.0, 86_400.0]
