"""Type-level tests: checked by mypy (strict, `warn_unused_ignores`), never run by pytest.

Each `assert_type` proves what mypy infers without plugins. Each ``# type: ignore[code]`` line
proves mypy rejects a wrong composition: were the error gone, the ignore would be unused and
mypy would fail.
"""

from __future__ import annotations

from collections.abc import Awaitable
from functools import partial
from typing import assert_never, assert_type

from returns.future import FutureResult
from returns.io import IOResult
from returns.result import Result

import fsaga
import fsaga.interpreter
from fsaga import (
    AsyncInterpreter,
    Failure,
    Outcome,
    PartialFailure,
    Retry,
    Saga,
    StepContext,
    Success,
    current_context,
    in_worker_thread,
    par,
    pure,
    sequence,
    step,
    traverse,
)
from fsaga.interpreter import SyncInterpreter
from fsaga.testing import RecordingInterpreter


class A:
    pass


class B:
    pass


class C:
    pass


class D:
    pass


class E:
    pass


class F:
    pass


class Declined(Exception):
    pass


a: Saga[A] = pure(A())
b: Saga[B] = pure(B())
c: Saga[C] = pure(C())
d: Saga[D] = pure(D())
e: Saga[E] = pure(E())
f: Saga[F] = pure(F())
number: Saga[int] = pure(1)


def charge() -> int:
    return 1


def refund(receipt: int) -> None:
    return None


def shout(receipt: str) -> None:
    return None


def checked_charge() -> Result[int, str]:
    raise NotImplementedError


def checked_refund() -> IOResult[int, Declined]:
    raise NotImplementedError


def to_saga(value: int) -> Saga[str]:
    return pure(str(value))


# -- steps and pure -----------------------------------------------------------------------------

assert_type(step(lambda: 1), Saga[int])
assert_type(step(lambda: 1).map(str), Saga[str])
assert_type(step(charge, refund, name="charge", timeout=2.0, retry=Retry(3)), Saga[int])
assert_type(step(checked_charge), Saga[int])
assert_type(step(checked_refund), Saga[int])
assert_type(step(checked_charge, refund), Saga[int])
assert_type(pure("x"), Saga[str])

# -- composition keeps types --------------------------------------------------------------------

assert_type(number.then(pure("x")), Saga[str])
assert_type(number.bind(to_saga), Saga[str])
assert_type(number.bind(lambda n: pure(n * 2.0)), Saga[float])
assert_type(number.map(lambda n: [n]), Saga[list[int]])
assert_type(number.zip(pure("x")), Saga[tuple[int, str]])
assert_type(number.named("one"), Saga[int])
assert_type(sequence([number, number]), Saga[tuple[int, ...]])
assert_type(traverse([1, 2], to_saga), Saga[tuple[str, ...]])

# -- par: fixed arity up to six, then homogeneous -----------------------------------------------

assert_type(par(), Saga[tuple[()]])
assert_type(par(a), Saga[tuple[A]])
assert_type(par(a, b), Saga[tuple[A, B]])
assert_type(par(a, b, c), Saga[tuple[A, B, C]])
assert_type(par(a, b, c, d), Saga[tuple[A, B, C, D]])
assert_type(par(a, b, c, d, e), Saga[tuple[A, B, C, D, E]])
assert_type(par(a, b, c, d, e, f), Saga[tuple[A, B, C, D, E, F]])
assert_type(par(number, number, number, number, number, number, number), Saga[tuple[int, ...]])
assert_type(par(*[number, number]), Saga[tuple[int, ...]])

# -- a saga is covariant ------------------------------------------------------------------------

as_object: Saga[object] = number
as_float: Saga[float] = number

# -- running and outcomes -----------------------------------------------------------------------

outcome = number.run(SyncInterpreter())
assert_type(outcome, Success[int] | Failure | PartialFailure)
assert_type(outcome, Outcome[int])
assert_type(number.run(RecordingInterpreter(), saga_id="id"), Outcome[int])

assert_type(
    outcome.when(success=str, failure=lambda _: "failed", partial_failure=lambda _: "partly"),
    str,
)
assert_type(outcome.unwrap(), int)
assert_type(Success(1).to_result(), Result[int, Failure | PartialFailure])


def describe(outcome: Outcome[int]) -> str:
    match outcome:
        case Success(value):
            assert_type(value, int)
            return str(value)
        case Failure(error, compensated):
            assert_type(error, BaseException)
            assert_type(compensated, tuple[str, ...])
            return "failed"
        case PartialFailure(error, failed_compensations=failed):
            assert_type(failed[0].attempts, int)
            return "partly failed"
        case _:
            assert_never(outcome)


def forgets_partial_failure(outcome: Outcome[int]) -> str:
    match outcome:
        case Success(value):
            return str(value)
        case Failure():
            return "failed"
        case _:
            assert_never(outcome)  # type: ignore[arg-type]


# -- mypy rejects wrong compositions ------------------------------------------------------------

step(1)  # type: ignore[call-overload]
step(charge, 1)  # type: ignore[call-overload]
step(charge, name=3)  # type: ignore[call-overload]
step(charge, timeout="1s")  # type: ignore[call-overload]
step(charge, retry=3)  # type: ignore[call-overload]
step(charge, shout)  # type: ignore[arg-type]
number.then(1)  # type: ignore[arg-type]
number.then(charge)  # type: ignore[arg-type]
number.bind(lambda n: n + 1)  # type: ignore[arg-type, return-value]
number.map(len)  # type: ignore[arg-type]
number.zip(1)  # type: ignore[arg-type]
number.named(1)  # type: ignore[arg-type]
par(number, 1)  # type: ignore[call-overload]
sequence([number, 1])  # type: ignore[arg-type]
traverse([1], str)  # type: ignore[arg-type]
wrong_par: Saga[tuple[int, int]] = par(number, pure("x"))  # type: ignore[assignment]
wrong_result: Saga[str] = step(checked_charge)  # type: ignore[arg-type]
wrong_run: Outcome[str] = number.run(SyncInterpreter())  # type: ignore[assignment]
number.run(object())  # type: ignore[call-overload]
number.run(SyncInterpreter(), "id")  # type: ignore[call-overload]


# -- async: effects, interpreters, context ---------------------------------------------------


async def fetch_quote() -> float:
    return 9.5


async def refund_quote(quote: float) -> None:
    return None


async def checked_async() -> Result[int, Declined]:
    return Result.from_value(1)


def void_charge(context: StepContext) -> None:
    assert_type(context.idempotency_key, str)


def blocking_read(table: str, *, limit: int) -> list[str]:
    return [table] * limit


async_quote = step(fetch_quote, refund_quote, timeout=1.0, idempotent=True, on_unknown=void_charge)
assert_type(async_quote, Saga[float])
assert_type(step(checked_async), Saga[int])


def future_charge() -> FutureResult[int, Declined]:
    return FutureResult.from_value(1)


assert_type(step(future_charge), Saga[int])
assert_type(async_quote.timeout(5.0), Saga[float])
assert_type(par(async_quote, number).timeout(2), Saga[tuple[float, int]])
read_in_thread = in_worker_thread(blocking_read)
assert_type(step(partial(read_in_thread, "orders", limit=2)), Saga[list[str]])
step(partial(read_in_thread, "orders", limit="2"))  # type: ignore[arg-type]
assert_type(current_context(), StepContext)


async def run_async() -> None:
    interpreter = AsyncInterpreter(timeout=10.0, on_branch_failure="cancel")
    assert_type(await async_quote.run(interpreter), Outcome[float])
    assert_type(await number.run(interpreter, saga_id="id"), Outcome[int])
    pending = async_quote.run(interpreter)
    _ = assert_type(pending, Awaitable[Outcome[float]])
    await pending
    wrong_async: Outcome[float] = async_quote.run(interpreter)  # type: ignore[assignment]
    del wrong_async
    AsyncInterpreter(on_branch_failure="abandon")  # type: ignore[arg-type]


async_quote.timeout("5")  # type: ignore[arg-type]
step(fetch_quote, lambda quote: quote.upper())  # type: ignore[arg-type]


def void_without_context() -> None:
    return None


step(fetch_quote, on_unknown=void_without_context)  # type: ignore[arg-type]


# `AsyncInterpreter` and `in_worker_thread` are imported on first use at run time; type checkers
# see them as plain re-exports, through either facade, and still reject names fsaga lacks.
assert_type(fsaga.AsyncInterpreter(), AsyncInterpreter)
assert_type(fsaga.interpreter.AsyncInterpreter(timeout=1.0), AsyncInterpreter)
read_lazily = fsaga.interpreter.in_worker_thread(blocking_read)
assert_type(step(partial(read_lazily, "orders", limit=2)), Saga[list[str]])
fsaga.AsyncInterpreterr()  # type: ignore[attr-defined]
fsaga.interpreter.in_worker_threads(blocking_read)  # type: ignore[attr-defined]
