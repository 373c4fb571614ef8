"""Type-level tests of `fsaga.pipeline`: checked by mypy without plugins, never run by pytest
(see test_types.py).

What a pipeline function returns is an ordinary `Callable`, so mypy types each step on its own
and at its use; a lambda passed to `map_` or `bind` has nothing to learn its argument's type
from (unlike in the method forms), which is why the pipelines here pass named functions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import assert_type

from returns.future import FutureResult
from returns.io import IOResult
from returns.result import Result

from fsaga import AsyncInterpreter, Failure, Outcome, PartialFailure, Saga, pure, step
from fsaga.interpreter import SyncInterpreter
from fsaga.pipeline import (
    bind,
    map_,
    named,
    run,
    run_to_result,
    then,
    timeout,
    to_result,
    traverse,
)
from fsaga.testing import RecordingInterpreter

number: Saga[int] = pure(1)
word: Saga[str] = pure("x")
Failed = Failure | PartialFailure


def charge(amount: int) -> Saga[str]:
    return step(lambda: f"P-{amount}")


def reserve(sku: str) -> Saga[int]:
    return step(lambda: len(sku))


def cents(euros: int) -> int:
    return euros * 100


# -- each form is the method it names, as a function of the saga --------------------------------

assert_type(then(word), Callable[[Saga[object]], Saga[str]])
assert_type(then(word)(number), Saga[str])
assert_type(bind(charge), Callable[[Saga[int]], Saga[str]])
assert_type(bind(charge)(number), Saga[str])
assert_type(map_(cents), Callable[[Saga[int]], Saga[int]])
assert_type(map_(str)(number), Saga[str])
assert_type(named("payment")(number), Saga[int])
assert_type(timeout(5.0)(word), Saga[str])
assert_type(traverse(reserve), Callable[[Iterable[str]], Saga[tuple[int, ...]]])
assert_type(traverse(reserve)(["a", "b"]), Saga[tuple[int, ...]])

# -- nested by hand, the types flow through every step ------------------------------------------

assert_type(map_(str)(bind(charge)(map_(cents)(number))), Saga[str])

# -- running: the interpreter decides between an outcome and an awaitable of one ---------------

assert_type(run(SyncInterpreter())(number), Outcome[int])
assert_type(run(RecordingInterpreter(), saga_id="id")(word), Outcome[str])
assert_type(run_to_result(SyncInterpreter())(number), Result[int, Failed])
assert_type(to_result(run(SyncInterpreter())(word)), Result[str, Failed])
assert_type(to_result(number.run(SyncInterpreter())), Result[int, Failed])
# One `run(...)` serves sagas of any result type: the returned function is generic.
run_sync = run(SyncInterpreter())
assert_type(run_sync(number), Outcome[int])
assert_type(run_sync(word), Outcome[str])


async def run_async() -> None:
    interpreter = AsyncInterpreter()
    pending = run(interpreter)(number)
    _ = assert_type(pending, Awaitable[Outcome[int]])
    assert_type(await pending, Outcome[int])
    future = run_to_result(interpreter)(word)
    _ = assert_type(future, FutureResult[str, Failed])
    # Awaiting a returns future gives an `IOResult`: returns marks what came from I/O.
    assert_type(await future, IOResult[str, Failed])
    # returns' own methods keep composing the future before it is awaited.
    assert_type(await run_to_result(interpreter)(word).map(len), IOResult[int, Failed])


# -- the result pipeline is returns' own: its methods need no plugin ----------------------------

result = run_to_result(SyncInterpreter())(number)
assert_type(result.map(str), Result[str, Failed])
assert_type(result.alt(lambda failed: failed.error), Result[int, BaseException])
assert_type(result.value_or(0), int)

# -- mypy rejects wrong pipelines ---------------------------------------------------------------

then(1)  # type: ignore[arg-type]
then(word)(1)  # type: ignore[arg-type]
bind(charge)(word)  # type: ignore[arg-type]
bind(cents)  # type: ignore[arg-type]
map_(cents)(word)  # type: ignore[arg-type]
named(1)  # type: ignore[arg-type]
timeout("5")  # type: ignore[arg-type]
traverse(reserve)([1, 2])  # type: ignore[list-item]
run(object())  # type: ignore[call-overload]
run_to_result(SyncInterpreter)  # type: ignore[call-overload]
to_result(number)  # type: ignore[arg-type]
wrong_outcome: Outcome[str] = run(SyncInterpreter())(number)  # type: ignore[arg-type]
wrong_result: Result[str, Failed] = run_to_result(SyncInterpreter())(number)  # type: ignore[arg-type]
