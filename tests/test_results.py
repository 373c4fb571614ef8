"""What an effect's return value means (fsaga.interpreter.results), whatever ran before.

Interpreters keep a process-wide set of result types known to be plain (a fast path). Whether a
result is awaited, unwrapped or taken as it is must never depend on which results earlier steps
returned: each kind of result is handled the same in every order of a generated history, under
the sync and the async interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.io import IOFailure, IOSuccess
from returns.result import Failure as ResultFailure
from returns.result import Success as ResultSuccess

import fsaga
from fsaga import AsyncInterpreter, Failure, Outcome, Success, SyncInterpreter, step


class Declined(Exception):
    pass


@dataclass(frozen=True)
class Receipt:
    number: int


class Ticket:
    """An awaitable that is not a coroutine."""

    def __await__(self) -> Generator[None, None, str]:
        yield from ()
        return "ticket"


def plain_generator() -> Generator[int, None, None]:
    yield 1


@types.coroutine
def generator_based_coroutine() -> Generator[None, None, str]:
    yield from ()
    return "generated"


async def native_coroutine() -> str:
    return "native"


DECLINED = Declined("no")


@dataclass(frozen=True)
class Kind:
    """One kind of result: the action returning it, and how each interpreter must handle it."""

    action: Callable[[], object]
    under_sync: Callable[[Outcome[object]], bool]
    under_async: Callable[[Outcome[object]], bool]


def awaitable_refused(outcome: Outcome[object]) -> bool:
    return isinstance(outcome, Failure) and "returned an awaitable" in str(outcome.error)


def generator(outcome: Outcome[object]) -> bool:
    return isinstance(outcome, Success) and isinstance(outcome.value, types.GeneratorType)


def is_success(value: object) -> Callable[[Outcome[object]], bool]:
    return lambda outcome: outcome == Success(value)


def declined(outcome: Outcome[object]) -> bool:
    return outcome == Failure(DECLINED, ())


KINDS: dict[str, Kind] = {
    "int": Kind(lambda: 7, is_success(7), is_success(7)),
    "none": Kind(lambda: None, is_success(None), is_success(None)),
    "dataclass": Kind(lambda: Receipt(1), is_success(Receipt(1)), is_success(Receipt(1))),
    "plain generator": Kind(plain_generator, generator, generator),
    "generator-based coroutine": Kind(
        generator_based_coroutine, awaitable_refused, is_success("generated")
    ),
    "coroutine": Kind(native_coroutine, awaitable_refused, is_success("native")),
    "awaitable object": Kind(Ticket, awaitable_refused, is_success("ticket")),
    "Result success": Kind(lambda: ResultSuccess(3), is_success(3), is_success(3)),
    "Result failure": Kind(lambda: ResultFailure(DECLINED), declined, declined),
    "IOResult success": Kind(lambda: IOSuccess(4), is_success(4), is_success(4)),
    "IOResult failure": Kind(lambda: IOFailure(DECLINED), declined, declined),
}


def run_async(action: Callable[[], Any]) -> Outcome[object]:
    async def run() -> Outcome[object]:
        outcome: Awaitable[Outcome[object]] = step(action, name="effect").run(AsyncInterpreter())
        return await outcome

    return anyio.run(run)


@settings(max_examples=60, deadline=None)
@given(history=st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=12))
def test_each_kind_of_result_is_handled_the_same_whatever_came_before(history: list[str]) -> None:
    """Whether a result is awaited depends on that result alone: a ``@types.coroutine``
    action is awaited (its effect runs) even after a step returned a plain generator."""
    for name in history:
        kind = KINDS[name]
        with_sync = step(kind.action, name="effect").run(SyncInterpreter())
        assert kind.under_sync(with_sync), (name, history, with_sync)
        with_async = run_async(kind.action)
        assert kind.under_async(with_async), (name, history, with_async)


def test_a_generator_based_coroutine_runs_after_a_plain_generator() -> None:
    ran: list[str] = []

    @types.coroutine
    def charge() -> Generator[None, None, str]:
        ran.append("charge")
        yield from ()
        return "charged"

    run_async(plain_generator)
    outcome = run_async(charge)

    assert outcome == Success("charged")
    assert ran == ["charge"]


RETURNS_FIRST_IMPORTED_MID_PROCESS = """
import sys

import fsaga
from fsaga.errors import ReturnedFailure


class Receipt:
    pass


interpreter = fsaga.SyncInterpreter()
for action in (lambda: 7, Receipt, lambda: (1, 2)):
    assert isinstance(fsaga.step(action).run(interpreter), fsaga.Success)
assert not any(name.startswith("returns") for name in sys.modules)

from returns.io import IOFailure, IOSuccess
from returns.result import Failure, Success

assert fsaga.step(lambda: Success(3)).run(interpreter) == fsaga.Success(3)
assert fsaga.step(lambda: IOSuccess(4)).run(interpreter) == fsaga.Success(4)
declined = fsaga.step(lambda: Failure("no"), name="charge").run(interpreter)
assert isinstance(declined, fsaga.Failure), declined
assert isinstance(declined.error, ReturnedFailure) and declined.error.value == "no"
missing = KeyError("k")
assert fsaga.step(lambda: IOFailure(missing)).run(interpreter) == fsaga.Failure(missing)
"""


def test_returns_containers_are_unwrapped_when_returns_is_imported_after_the_first_runs() -> None:
    """fsaga imports `returns` only once something else has (a container cannot exist before):
    steps that returned plain values first do not keep later containers from being unwrapped."""
    completed = subprocess.run(
        [sys.executable, "-B", "-c", RETURNS_FIRST_IMPORTED_MID_PROCESS],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(fsaga.__file__).parent.parent,
    )

    assert completed.returncode == 0, completed.stderr


def test_an_outcome_turns_into_a_returns_result_without_returns_imported_beforehand() -> None:
    code = (
        "import sys, fsaga\n"
        "assert 'returns' not in sys.modules\n"
        "assert repr(fsaga.Success(3).to_result()) == '<Success: 3>'\n"
        "error = ValueError('no')\n"
        "assert repr(fsaga.Failure(error).to_result()) == f'<Failure: {fsaga.Failure(error)}>'\n"
    )
    completed = subprocess.run(
        [sys.executable, "-B", "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(fsaga.__file__).parent.parent,
    )

    assert completed.returncode == 0, completed.stderr
