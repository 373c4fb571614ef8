"""Stack safety: deep and long sagas run in constant Python stack.

Python's default recursion limit is 1,000 frames, so each saga here, nested tens of thousands
deep, would raise `RecursionError` if building or running it recursed once per level. No timing
is asserted; each test stays within a few seconds.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import TypeVar

import pytest

from fsaga import Failure, Saga, Success, par, pure, sequence, step
from fsaga.interpreter import AsyncInterpreter, SyncInterpreter

LONG_CHAIN = 1_000_000
# Compensating is several times dearer per step than running forward, so the failing chain is
# shorter: still 250 times deeper than the recursion limit, and done in about a second.
FAILING_CHAIN = 250_000
LEFT_NESTED_BINDS = 50_000
RIGHT_NESTED_BINDS = 20_000

_T = TypeVar("_T")


class Declined(Exception):
    pass


def noop() -> None:
    return None


def declined() -> None:
    raise Declined("the last step fails")


def increment(value: int) -> Saga[int]:
    return pure(value + 1)


def test_the_recursion_limit_is_far_below_the_depths_used_here() -> None:
    assert sys.getrecursionlimit() < RIGHT_NESTED_BINDS


def test_a_million_step_then_chain_runs_to_success() -> None:
    counter = [0]

    def count() -> int:
        counter[0] += 1
        return counter[0]

    link = step(count)
    saga: Saga[int] = link
    for _ in range(LONG_CHAIN - 1):
        saga = saga.then(link)

    outcome = saga.run(SyncInterpreter())

    assert outcome == Success(LONG_CHAIN)
    assert counter[0] == LONG_CHAIN


def test_a_long_failing_chain_compensates_every_step() -> None:
    undone: list[int] = []
    link = step(noop, lambda _: undone.append(1))
    saga: Saga[None] = link
    for _ in range(FAILING_CHAIN - 2):
        saga = saga.then(link)
    saga = saga.then(step(declined, name="last"))

    outcome = saga.run(SyncInterpreter())

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, Declined)
    assert len(undone) == FAILING_CHAIN - 1
    assert len(outcome.compensated) == FAILING_CHAIN - 1
    assert outcome.compensated[0] == f"noop#{FAILING_CHAIN - 1}"
    assert outcome.compensated[-1] == "noop"


def test_left_nested_binds_run_to_success() -> None:
    saga = pure(0)
    for _ in range(LEFT_NESTED_BINDS):
        saga = saga.bind(increment)

    assert saga.run(SyncInterpreter()) == Success(LEFT_NESTED_BINDS)


def test_left_nested_maps_run_to_success() -> None:
    saga = pure(0)
    for _ in range(LEFT_NESTED_BINDS):
        saga = saga.map(lambda value: value + 1)

    assert saga.run(SyncInterpreter()) == Success(LEFT_NESTED_BINDS)


def _return(saga: Saga[_T], _: object) -> Saga[_T]:
    return saga


def test_right_nested_binds_built_eagerly_run_to_success() -> None:
    # step.bind(lambda _: step.bind(lambda _: ... pure(n))), built from the inside out.
    saga: Saga[int] = pure(RIGHT_NESTED_BINDS)
    for _ in range(RIGHT_NESTED_BINDS):
        saga = step(noop).bind(partial(_return, saga))

    assert saga.run(SyncInterpreter()) == Success(RIGHT_NESTED_BINDS)


def test_right_nested_binds_built_while_running_run_to_success() -> None:
    def countdown(remaining: int) -> Saga[int]:
        if remaining == 0:
            return pure(RIGHT_NESTED_BINDS)
        return step(noop).bind(lambda _: countdown(remaining - 1))

    assert countdown(RIGHT_NESTED_BINDS).run(SyncInterpreter()) == Success(RIGHT_NESTED_BINDS)


def test_right_nested_thens_run_to_success() -> None:
    saga: Saga[int] = pure(-1)
    for index in range(RIGHT_NESTED_BINDS):
        saga = pure(index).then(saga)

    assert saga.run(SyncInterpreter()) == Success(-1)


def test_right_nested_binds_that_fail_at_the_bottom_compensate_every_step() -> None:
    undone: list[int] = []
    saga: Saga[None] = step(declined)
    for index in range(RIGHT_NESTED_BINDS):
        saga = step(partial(int, index), undone.append).bind(partial(_return, saga))

    outcome = saga.run(SyncInterpreter())

    assert isinstance(outcome, Failure)
    assert undone == list(range(RIGHT_NESTED_BINDS))


def test_deeply_nested_named_subsagas_run() -> None:
    saga: Saga[str] = step(lambda: "deep", name="leaf")
    for index in range(2_000):
        saga = saga.named(f"n{index}")

    assert saga.run(SyncInterpreter()) == Success("deep")


def test_a_long_sequence_runs_and_keeps_every_result() -> None:
    saga = sequence(pure(index) for index in range(100_000))

    assert saga.run(SyncInterpreter()) == Success(tuple(range(100_000)))


ASYNC_CHAIN = 50_000
NESTED_PARS = 1_500  # deeper than the recursion limit; each level a task and a join


@pytest.mark.anyio
async def test_a_long_failing_chain_runs_and_compensates_under_the_async_interpreter() -> None:
    saga: Saga[None] = step(noop, lambda _: None)
    for _ in range(ASYNC_CHAIN - 1):
        saga = saga.then(step(noop, lambda _: None))

    outcome = await saga.then(step(declined)).run(AsyncInterpreter())

    assert isinstance(outcome, Failure)
    assert len(outcome.compensated) == ASYNC_CHAIN


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent_compensation", [False, True])
async def test_deeply_nested_pars_are_undone_under_the_async_interpreter(
    concurrent_compensation: bool,
) -> None:
    nested: Saga[object] = pure(0)
    for _ in range(NESTED_PARS):
        nested = par(nested, step(noop, lambda _: None))

    interpreter = AsyncInterpreter(concurrent_compensation=concurrent_compensation)
    outcome = await nested.then(step(declined)).run(interpreter)

    assert isinstance(outcome, Failure)
    assert len(outcome.compensated) == NESTED_PARS
