"""The `Saga` methods as functions of one saga, for pipelines: `then`, `bind`, `map_`, `named`,
`timeout`, `traverse`, `run`, `run_to_result` and `to_result`.

Each takes its options first and the saga (or the items, or the outcome) last, so it slots
into any function pipeline: `returns.pipeline.flow` and `pipe`, `toolz.pipe` and
`toolz.compose_left`, or plain calls. ``then(b)(a)`` builds exactly ``a.then(b)``, and so on
for each method; the options are checked when the function is made, as the method checks them.
They are typed without a mypy plugin: each returns an ordinary `Callable`.

>>> from returns.pipeline import flow
>>> from fsaga import pure, step
>>> from fsaga.interpreter import SyncInterpreter
>>> flow(
...     step(lambda: 20, name="reserve"),
...     then(step(lambda: 21, name="charge")),
...     map_(lambda total: total * 2),
...     run_to_result(SyncInterpreter()),
... )
<Success: 42>
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Generic, TypeVar, final, overload

from fsaga._numbers import check_seconds
from fsaga.saga import Saga, _check_function, _check_name, _is_function
from fsaga.saga import traverse as _traverse

if TYPE_CHECKING:
    from returns.future import FutureResult
    from returns.result import Result

    from fsaga.interpreter.protocol import AsyncInterpreterProtocol, Interpreter
    from fsaga.outcome import Failure, Outcome, PartialFailure

__all__ = [
    "bind",
    "map_",
    "named",
    "run",
    "run_to_result",
    "then",
    "timeout",
    "to_result",
    "traverse",
]

_T = TypeVar("_T")
_U = TypeVar("_U")
_A = TypeVar("_A")
_B = TypeVar("_B")
_In = TypeVar("_In", contravariant=True)
_Out = TypeVar("_Out", covariant=True)


@final
class _Applied(Generic[_In, _Out]):
    """A function of one saga made by this module: it names itself as it was made
    (``fsaga.pipeline.then(<Saga: step 'charge'>)``), so a misplaced one is easy to spot."""

    __slots__ = ("_description", "_function", "_wants_saga")

    def __init__(
        self, description: str, function: Callable[[_In], _Out], *, wants_saga: bool = True
    ) -> None:
        self._description = description
        self._function = function
        self._wants_saga = wants_saga

    def __call__(self, argument: _In, /) -> _Out:
        if self._wants_saga and not isinstance(argument, Saga):
            raise TypeError(f"{self._description} applies to a Saga, got {argument!r}")
        return self._function(argument)

    def __repr__(self) -> str:
        return self._description


def then(next: Saga[_U], /) -> Callable[[Saga[object]], Saga[_U]]:
    """``then(next)(saga)`` is ``saga.then(next)``: run `next` after the saga; its result
    becomes the result.

    >>> from fsaga import pure
    >>> from fsaga.interpreter import SyncInterpreter
    >>> then(pure("two"))(pure(1)).run(SyncInterpreter())
    Success(value='two')
    """
    if not isinstance(next, Saga):
        raise TypeError(f"then() needs a Saga, got {next!r}; wrap a function with step()")
    return _Applied(f"fsaga.pipeline.then({next!r})", partial(_then, next))


def bind(continuation: Callable[[_T], Saga[_U]], /) -> Callable[[Saga[_T]], Saga[_U]]:
    """``bind(continuation)(saga)`` is ``saga.bind(continuation)``: feed the saga's result to
    `continuation` while the saga runs, then run the saga it returns.

    >>> from fsaga import pure, step
    >>> from fsaga.interpreter import SyncInterpreter
    >>> def charge(amount: int) -> Saga[str]:
    ...     return step(lambda: f"charged {amount}", name="charge")
    >>> bind(charge)(pure(20)).run(SyncInterpreter())
    Success(value='charged 20')
    """
    if not _is_function(continuation):
        raise TypeError(f"bind() needs a callable returning a Saga, got {continuation!r}")
    _check_function(
        continuation,
        1,
        what="bind(): the continuation",
        called="with one argument (the result before it)",
    )
    return _Applied(f"fsaga.pipeline.bind({continuation!r})", partial(_bind, continuation))


def map_(function: Callable[[_T], _U], /) -> Callable[[Saga[_T]], Saga[_U]]:
    """``map_(function)(saga)`` is ``saga.map(function)``: transform the result with a pure
    function. (Named like `returns.pointfree.map_`, so it does not hide the built-in `map`.)

    >>> from fsaga import pure
    >>> from fsaga.interpreter import SyncInterpreter
    >>> map_(str)(pure(2)).run(SyncInterpreter())
    Success(value='2')
    """
    if not callable(function):
        raise TypeError(f"map() needs a callable, got {function!r}")
    _check_function(
        function, 1, what="map(): the function", called="with one argument (the result before it)"
    )
    return _Applied(f"fsaga.pipeline.map_({function!r})", partial(_map, function))


def named(name: str, /) -> Callable[[Saga[_T]], Saga[_T]]:
    """``named(name)(saga)`` is ``saga.named(name)``: make the saga a named sub-saga.

    >>> from fsaga import step
    >>> named("payment")(step(lambda: 1, name="charge"))
    <Saga: named 'payment'>
    """
    _check_name(name, what="named()")
    return _Applied(f"fsaga.pipeline.named({name!r})", partial(_named, name))


def timeout(seconds: float, /) -> Callable[[Saga[_T]], Saga[_T]]:
    """``timeout(seconds)(saga)`` is ``saga.timeout(seconds)``: give the saga a deadline
    (`Saga.timeout` says what it means under each interpreter).

    >>> from fsaga import pure
    >>> timeout(5)(pure(1))
    <Saga: timeout 5 s>
    """
    checked = check_seconds(seconds, what="timeout()")
    return _Applied(f"fsaga.pipeline.timeout({checked:g})", partial(_timeout, checked))


def traverse(
    function: Callable[[_A], Saga[_B]], /
) -> Callable[[Iterable[_A]], Saga[tuple[_B, ...]]]:
    """``traverse(function)(items)`` is ``fsaga.traverse(items, function)``: a saga for every
    item, run one after another; the result is the tuple of their results.

    The function comes first and the items last, so a pipeline over data can end in a saga.

    >>> from fsaga import pure
    >>> from fsaga.interpreter import SyncInterpreter
    >>> traverse(lambda n: pure(n * 10))([1, 2]).run(SyncInterpreter())
    Success(value=(10, 20))
    """
    if not callable(function):
        raise TypeError(f"traverse() needs a callable returning a Saga, got {function!r}")
    _check_function(
        function, 1, what="traverse(): the function", called="with one argument (an item)"
    )
    return _Applied(
        f"fsaga.pipeline.traverse({function!r})",
        partial(_traverse_with, function),
        wants_saga=False,
    )


@overload
def run(
    interpreter: Interpreter, /, *, saga_id: str | None = None
) -> Callable[[Saga[_T]], Outcome[_T]]: ...
@overload
def run(
    interpreter: AsyncInterpreterProtocol, /, *, saga_id: str | None = None
) -> Callable[[Saga[_T]], Awaitable[Outcome[_T]]]: ...
def run(
    interpreter: Interpreter | AsyncInterpreterProtocol, /, *, saga_id: str | None = None
) -> Callable[[Saga[_T]], Outcome[_T] | Awaitable[Outcome[_T]]]:
    """``run(interpreter)(saga)`` is ``saga.run(interpreter)``: the outcome (an awaitable of
    it, with an async interpreter).

    >>> from fsaga import pure
    >>> from fsaga.interpreter import SyncInterpreter
    >>> run(SyncInterpreter())(pure(1))
    Success(value=1)
    """
    _check_interpreter(interpreter)
    return _Applied(
        f"fsaga.pipeline.run({interpreter!r})", partial(_run, interpreter, saga_id=saga_id)
    )


@overload
def run_to_result(
    interpreter: Interpreter, /, *, saga_id: str | None = None
) -> Callable[[Saga[_T]], Result[_T, Failure | PartialFailure]]: ...
@overload
def run_to_result(
    interpreter: AsyncInterpreterProtocol, /, *, saga_id: str | None = None
) -> Callable[[Saga[_T]], FutureResult[_T, Failure | PartialFailure]]: ...
def run_to_result(
    interpreter: Interpreter | AsyncInterpreterProtocol, /, *, saga_id: str | None = None
) -> Callable[
    [Saga[_T]],
    Result[_T, Failure | PartialFailure] | FutureResult[_T, Failure | PartialFailure],
]:
    """``run_to_result(interpreter)(saga)`` is ``to_result(saga.run(interpreter))``: the
    outcome as a `returns` result, for pipelines built on `returns`.

    A success becomes `returns.result.Success` of the value; a `Failure` or `PartialFailure`
    becomes `returns.result.Failure` carrying that outcome, the whole report. With an async
    interpreter the result is a `returns.future.FutureResult`, which `returns`'s future
    methods keep composing; awaiting it runs the saga and gives a `returns.io.IOResult` (how
    `returns` marks a result that came from I/O).

    >>> from fsaga import pure
    >>> from fsaga.interpreter import SyncInterpreter
    >>> run_to_result(SyncInterpreter())(pure(1))
    <Success: 1>
    """
    _check_interpreter(interpreter)
    return _Applied(
        f"fsaga.pipeline.run_to_result({interpreter!r})",
        partial(_run_to_result, interpreter, saga_id=saga_id),
    )


def to_result(outcome: Outcome[_T], /) -> Result[_T, Failure | PartialFailure]:
    """``outcome.to_result()`` as a function, for the step of a pipeline after `run`.

    >>> from fsaga import Success
    >>> to_result(Success(3))
    <Success: 3>
    """
    from fsaga.outcome import Failure, PartialFailure, Success

    if not isinstance(outcome, Success | Failure | PartialFailure):
        raise TypeError(f"to_result() needs an outcome of a run, got {outcome!r}")
    return outcome.to_result()


def _then(next: Saga[_U], saga: Saga[object]) -> Saga[_U]:
    return saga.then(next)


def _bind(continuation: Callable[[_T], Saga[_U]], saga: Saga[_T]) -> Saga[_U]:
    return saga.bind(continuation)


def _map(function: Callable[[_T], _U], saga: Saga[_T]) -> Saga[_U]:
    return saga.map(function)


def _named(name: str, saga: Saga[_T]) -> Saga[_T]:
    return saga.named(name)


def _timeout(seconds: float, saga: Saga[_T]) -> Saga[_T]:
    return saga.timeout(seconds)


def _traverse_with(function: Callable[[_A], Saga[_B]], items: Iterable[_A]) -> Saga[tuple[_B, ...]]:
    return _traverse(items, function)


def _run(
    interpreter: Interpreter | AsyncInterpreterProtocol, saga: Saga[_T], *, saga_id: str | None
) -> Outcome[_T] | Awaitable[Outcome[_T]]:
    return saga.run(interpreter, saga_id=saga_id)


def _run_to_result(
    interpreter: Interpreter | AsyncInterpreterProtocol, saga: Saga[_T], *, saga_id: str | None
) -> Result[_T, Failure | PartialFailure] | FutureResult[_T, Failure | PartialFailure]:
    ran = saga.run(interpreter, saga_id=saga_id)
    if isinstance(ran, Awaitable):
        from returns.future import FutureResult

        return FutureResult(_awaited_result(ran))
    return to_result(ran)


async def _awaited_result(ran: Awaitable[Outcome[_T]]) -> Result[_T, Failure | PartialFailure]:
    return to_result(await ran)


def _check_interpreter(interpreter: object) -> None:
    if isinstance(interpreter, type) or not callable(getattr(interpreter, "run_saga", None)):
        from fsaga.saga import _not_an_interpreter

        raise TypeError(_not_an_interpreter(interpreter))
