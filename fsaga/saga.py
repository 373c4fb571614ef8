"""Sagas as values: `step`, `pure`, `par`, `sequence`, `traverse` and the `Saga` methods.

Building a saga runs nothing: it builds an immutable tree that an interpreter walks later. The same
value can run many times, under any interpreter.

>>> from fsaga.interpreter import SyncInterpreter
>>> undone: list[str] = []
>>> def fail() -> int:
...     raise RuntimeError("card declined")
>>> order = (
...     step(lambda: "sku-1", undone.append, name="reserve")
...     .then(step(fail, name="charge"))
... )
>>> order.run(SyncInterpreter())
Failure(error=RuntimeError('card declined'), compensated=('reserve',))
>>> undone
['sku-1']
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import FrozenInstanceError, dataclass
from functools import partial
from inspect import CO_COROUTINE, iscoroutinefunction
from types import FunctionType
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, final, overload

from fsaga._numbers import check_seconds
from fsaga._signatures import call_problem
from fsaga.errors import DuplicateStepNameError
from fsaga.policy import Retry

if TYPE_CHECKING:
    from returns.io import IOResult
    from returns.result import Result

    from fsaga.context import StepContext
    from fsaga.interpreter.protocol import AsyncInterpreterProtocol, Interpreter
    from fsaga.outcome import Outcome

__all__ = [
    "BindContinuation",
    "BindNode",
    "MapContinuation",
    "NamedNode",
    "ParNode",
    "PureNode",
    "Saga",
    "StepNode",
    "StepOptions",
    "TimeoutNode",
    "par",
    "pure",
    "sequence",
    "step",
    "traverse",
]

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)
_U = TypeVar("_U")
_A = TypeVar("_A")
_B = TypeVar("_B")
_C = TypeVar("_C")
_D = TypeVar("_D")
_E = TypeVar("_E")
_F = TypeVar("_F")


class Saga(Generic[_T_co]):
    """An immutable description of a saga whose result is a `T`.

    Build one with `step`, `pure`, `par`, `sequence` or `traverse`, and compose with the methods
    below; run it with `run(interpreter)`. A saga is a tree: every `Saga` is one of the final
    node classes below (`StepNode`, `PureNode`, `BindNode`, `ParNode`, `NamedNode`), a closed
    set that interpreters and renderers `match` over. Users never build nodes directly.
    """

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        if cls.__module__ != __name__:
            raise TypeError("Saga is a closed set of node kinds; build sagas with step() & co.")
        super().__init_subclass__(**kwargs)

    def then(self, next: Saga[_U]) -> Saga[_U]:
        """Run `next` after this saga; its result becomes the result.

        >>> from fsaga.interpreter import SyncInterpreter
        >>> pure(1).then(pure("two")).run(SyncInterpreter())
        Success(value='two')
        """
        if not isinstance(next, Saga):
            raise TypeError(f"then() needs a Saga, got {next!r}; wrap a function with step()")
        return _BindNodeDraft(self, next)

    def bind(self, continuation: Callable[[_T_co], Saga[_U]]) -> Saga[_U]:
        """Feed this saga's result to `continuation`, then run the saga it returns.

        The continuation runs while the saga runs (not now), once, with the result; it must only
        build a saga, not perform effects itself.

        >>> from fsaga.interpreter import SyncInterpreter
        >>> pure(20).bind(lambda n: step(lambda: n + 1)).run(SyncInterpreter())
        Success(value=21)
        """
        if not _is_function(continuation):
            raise TypeError(f"bind() needs a callable returning a Saga, got {continuation!r}")
        _check_function(continuation, 1, what="bind(): the continuation", called=_WITH_VALUE)
        return BindNode(self, BindContinuation(continuation))

    def map(self, function: Callable[[_T_co], _U]) -> Saga[_U]:
        """Transform the result with a pure function.

        >>> from fsaga.interpreter import SyncInterpreter
        >>> pure(2).map(str).run(SyncInterpreter())
        Success(value='2')
        """
        if not callable(function):
            raise TypeError(f"map() needs a callable, got {function!r}")
        _check_function(function, 1, what="map(): the function", called=_WITH_VALUE)
        return BindNode(self, MapContinuation(function))

    def zip(self, other: Saga[_U]) -> Saga[tuple[_T_co, _U]]:
        """Run this saga, then `other`; the result is the pair of both results.

        >>> from fsaga.interpreter import SyncInterpreter
        >>> pure(1).zip(pure("a")).run(SyncInterpreter())
        Success(value=(1, 'a'))
        """
        if not isinstance(other, Saga):
            raise TypeError(f"zip() needs a Saga, got {other!r}")
        _check_sibling_names((self, other), where="zip()")
        return self.bind(partial(_zip_right, other))

    def named(self, name: str) -> Saga[_T_co]:
        """Make this saga a named sub-saga: one unit to its parent, and a scope for step paths.

        Its steps' paths become ``name/...``. If the parent fails later, the sub-saga's completed
        steps are compensated in reverse at its place in the order.

        >>> from fsaga.testing import RecordingInterpreter
        >>> recording = RecordingInterpreter()
        >>> _ = step(lambda: 1, name="charge").named("payment").run(recording)
        >>> recording.paths("action")
        ['payment/charge']
        """
        _check_name(name, what="named()")
        return NamedNode(name, self)

    def timeout(self, seconds: float) -> Saga[_T_co]:
        """Give this sub-tree a deadline: every attempt in it must finish within `seconds` of the
        moment the sub-tree starts.

        When the deadline passes, the running attempts are cancelled (their outcomes are
        unknown, contract rule 3), no further step of the sub-tree starts, and the run fails with
        a `StepTimeoutError` naming the step and this deadline, then compensates. Compensations
        are not bound by it. `SyncInterpreter` cannot pre-empt a running function, so it
        enforces this deadline between steps only: nothing starts once it has passed, and the
        step that was running when it passed completes and counts.

        >>> from fsaga.interpreter import SyncInterpreter
        >>> step(lambda: "ok").timeout(5.0).run(SyncInterpreter())
        Success(value='ok')
        """
        return TimeoutNode(check_seconds(seconds, what="timeout()"), self)

    @overload
    def run(self, interpreter: Interpreter, /, *, saga_id: str | None = None) -> Outcome[_T_co]: ...
    @overload
    def run(
        self, interpreter: AsyncInterpreterProtocol, /, *, saga_id: str | None = None
    ) -> Awaitable[Outcome[_T_co]]: ...
    def run(
        self,
        interpreter: Interpreter | AsyncInterpreterProtocol,
        /,
        *,
        saga_id: str | None = None,
    ) -> Outcome[_T_co] | Awaitable[Outcome[_T_co]]:
        """Run the saga with `interpreter` and return its outcome (an awaitable of it, with an
        async interpreter: ``await saga.run(AsyncInterpreter())``).

        Args:
            interpreter: what performs the effects (see `fsaga.interpreter`).
            saga_id: identity of this run, used in events and idempotency keys; a fresh one is
                made when omitted.
        """
        if isinstance(interpreter, type) or not callable(getattr(interpreter, "run_saga", None)):
            raise TypeError(_not_an_interpreter(interpreter))
        return interpreter.run_saga(self, saga_id=saga_id)


def _refuse_assignment(node: object, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_deletion(node: object, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _slot_setter(cls: type, slot: str) -> Callable[[object, object], None]:
    """A function that writes `slot` of a `cls`, past the `__setattr__` that refuses it.

    The slot's own descriptor writes it faster than ``object.__setattr__``, which looks the
    slot up by name on every call (and which a frozen dataclass's ``__init__`` calls).
    """
    setter: Callable[[object, object], None] = cls.__dict__[slot].__set__
    return setter


@final
class StepNode(Saga[_T_co]):
    """A leaf that performs an effect and knows how to undo it (built by `step`).

    `name` is the step's label: the explicit name if one was given, otherwise derived from the
    action (`explicit` tells which). A run builds the step's path from it.
    """

    # Written by hand rather than as a frozen dataclass, whose __init__ costs twice as much: a
    # saga may be built from a million steps (see _slot_setter, and _StepNodeDraft for the
    # cheaper still way step's common call builds one).
    __slots__ = ("action", "attempt_timeout", "compensate", "explicit", "name", "options")
    __match_args__ = ("action", "compensate", "name", "explicit", "attempt_timeout", "options")

    action: Callable[[], Any]
    compensate: Callable[[Any], object] | None
    name: str
    explicit: bool
    attempt_timeout: float | None
    options: StepOptions

    def __init__(
        self,
        action: Callable[[], Any],
        compensate: Callable[[Any], object] | None,
        name: str,
        explicit: bool,
        attempt_timeout: float | None,
        options: StepOptions,
    ) -> None:
        _set_action(self, action)
        _set_compensate(self, compensate)
        _set_name(self, name)
        _set_explicit(self, explicit)
        _set_attempt_timeout(self, attempt_timeout)
        _set_options(self, options)

    __setattr__ = _refuse_assignment
    __delattr__ = _refuse_deletion

    def __reduce__(self) -> tuple[type[StepNode[Any]], tuple[object, ...]]:
        fields = (self.action, self.compensate, self.name, self.explicit, self.attempt_timeout)
        return (StepNode, (*fields, self.options))

    @property
    def retry(self) -> Retry | None:
        """How the action is retried when it fails."""
        return self.options.retry

    @property
    def compensation_retry(self) -> Retry | None:
        """How the compensation is retried when it fails."""
        return self.options.compensation_retry

    @property
    def compensation_timeout(self) -> float | None:
        """Seconds each attempt of the compensation (or of `on_unknown`) may take."""
        return self.options.compensation_timeout

    @property
    def idempotent(self) -> bool:
        """Whether the action may safely run again with the same idempotency key."""
        return self.options.idempotent

    @property
    def on_unknown(self) -> Callable[[StepContext], object] | None:
        """The unknown-outcome compensation, if any."""
        return self.options.on_unknown

    def __repr__(self) -> str:
        return f"<Saga: step {self.name!r}>"


_set_action = _slot_setter(StepNode, "action")
_set_compensate = _slot_setter(StepNode, "compensate")
_set_name = _slot_setter(StepNode, "name")
_set_explicit = _slot_setter(StepNode, "explicit")
_set_attempt_timeout = _slot_setter(StepNode, "attempt_timeout")
_set_options = _slot_setter(StepNode, "options")


class _StepNodeDraft(Saga[Any]):
    """A `StepNode` being built by `step`'s common call: the same slots, written with plain
    assignments, then made a StepNode (Python allows a class assignment between classes with
    the same slots). StepNode's own ``__init__`` writes past the ``__setattr__`` that refuses
    assignments, a call per field, which costs more than the class assignment."""

    __slots__ = ("action", "attempt_timeout", "compensate", "explicit", "name", "options")

    action: Callable[[], Any]
    compensate: Callable[[Any], object] | None
    name: str
    explicit: bool
    attempt_timeout: float | None
    options: StepOptions

    def __init__(
        self,
        action: Callable[[], Any],
        compensate: Callable[[Any], object] | None,
        name: str,
        explicit: bool,
        attempt_timeout: float | None,
        options: StepOptions,
    ) -> None:
        self.action = action
        self.compensate = compensate
        self.name = name
        self.explicit = explicit
        self.attempt_timeout = attempt_timeout
        self.options = options
        self.__class__ = StepNode  # type: ignore[assignment]


@final
@dataclass(frozen=True, slots=True)
class StepOptions:
    """A step's less common options, kept apart so the many steps that use none share one
    value (building a step is then cheaper, and a step smaller)."""

    retry: Retry | None = None
    compensation_retry: Retry | None = None
    compensation_timeout: float | None = None
    idempotent: bool = False
    on_unknown: Callable[[StepContext], object] | None = None
    async_undo: bool = False
    """Whether the compensation or the unknown-outcome compensation is an ``async`` function,
    which a sync interpreter cannot run."""


_NO_OPTIONS: Final = StepOptions()


@final
@dataclass(frozen=True, slots=True, eq=False, repr=False)
class PureNode(Saga[_T_co]):
    """A leaf holding a value; running it performs nothing (built by `pure`)."""

    value: _T_co

    def __repr__(self) -> str:
        return f"<Saga: pure {self.value!r}>"


@final
class BindNode(Saga[_T_co]):
    """Run `source`, then continue with `continuation` (built by `then`, `bind` and `map`).

    The continuation is the next saga itself (`then`), a `MapContinuation` (`map`), or a
    `BindContinuation` (`bind`): three classes the engine tells apart with one `match`.
    """

    # Written by hand, like StepNode, for the cost of building a long chain (then() builds one
    # through _BindNodeDraft).
    __slots__ = ("_plan", "continuation", "source")
    __match_args__ = ("source", "continuation")

    source: Saga[Any]
    continuation: Saga[_T_co] | MapContinuation | BindContinuation
    _plan: object
    """What the engine compiled this node into the first time it ran it (see
    `fsaga.interpreter._plan`), ``None`` until then: a saga is immutable, so one compilation
    serves every run. The engine writes it with `object.__setattr__`."""

    def __init__(
        self, source: Saga[Any], continuation: Saga[_T_co] | MapContinuation | BindContinuation
    ) -> None:
        _set_source(self, source)
        _set_continuation(self, continuation)
        _set_plan(self, None)

    __setattr__ = _refuse_assignment
    __delattr__ = _refuse_deletion

    def __reduce__(self) -> tuple[type[BindNode[Any]], tuple[object, ...]]:
        return (BindNode, (self.source, self.continuation))

    def __repr__(self) -> str:
        kind = (
            "then"
            if isinstance(self.continuation, Saga)
            else "map"
            if isinstance(self.continuation, MapContinuation)
            else "bind"
        )
        return f"<Saga: {kind}>"


_set_source = _slot_setter(BindNode, "source")
_set_continuation = _slot_setter(BindNode, "continuation")
_set_plan = _slot_setter(BindNode, "_plan")


class _BindNodeDraft(Saga[Any]):
    """A `BindNode` being built by `then`, made a BindNode once written, like `_StepNodeDraft`."""

    __slots__ = ("_plan", "continuation", "source")

    source: Saga[Any]
    continuation: Saga[Any]
    _plan: object

    def __init__(self, source: Saga[Any], continuation: Saga[Any]) -> None:
        self.source = source
        self.continuation = continuation
        self._plan = None
        self.__class__ = BindNode  # type: ignore[assignment]


@final
@dataclass(frozen=True, slots=True, eq=False, repr=False)
class ParNode(Saga[_T_co]):
    """Independent branches; the result is the tuple of their results (built by `par`)."""

    branches: tuple[Saga[Any], ...]

    def __repr__(self) -> str:
        return f"<Saga: par of {len(self.branches)}>"


@final
@dataclass(frozen=True, slots=True, eq=False, repr=False)
class NamedNode(Saga[_T_co]):
    """A sub-saga: one unit to its parent, and a scope for its steps' paths (built by `named`)."""

    name: str
    inner: Saga[_T_co]

    def __repr__(self) -> str:
        return f"<Saga: named {self.name!r}>"


@final
@dataclass(frozen=True, slots=True, eq=False, repr=False)
class TimeoutNode(Saga[_T_co]):
    """A sub-tree with a deadline, `seconds` after it starts (built by `Saga.timeout`)."""

    seconds: float
    inner: Saga[_T_co]

    def __repr__(self) -> str:
        return f"<Saga: timeout {self.seconds:g} s>"


@final
@dataclass(frozen=True, slots=True, eq=False)
class MapContinuation:
    """The continuation `Saga.map` builds: the value becomes ``function(value)``."""

    function: Callable[[Any], object]


@final
@dataclass(frozen=True, slots=True, eq=False)
class BindContinuation:
    """The continuation `Saga.bind` builds: the saga ``function(value)`` runs next."""

    function: Callable[[Any], Saga[Any]]


def _not_an_interpreter(interpreter: object) -> str:
    wanted = (
        "run() needs an interpreter: an object with a run_saga(saga, *, saga_id) method, such "
        "as fsaga.SyncInterpreter() or fsaga.AsyncInterpreter()"
    )
    if isinstance(interpreter, type) and callable(getattr(interpreter, "run_saga", None)):
        return f"{wanted}; got the class {interpreter.__qualname__}: call it to make one"
    return f"{wanted}; got {interpreter!r}"


def _zip_right(other: Saga[_U], left: _T) -> Saga[tuple[_T, _U]]:
    return other.map(partial(_pair, left))


def _pair(left: _T, right: _U) -> tuple[_T, _U]:
    return (left, right)


def pure(value: _T) -> Saga[_T]:
    """A saga that performs nothing and results in `value`.

    >>> from fsaga.interpreter import SyncInterpreter
    >>> pure("ready").run(SyncInterpreter())
    Success(value='ready')
    """
    return PureNode(value)


@overload
def step(
    action: Callable[[], Awaitable[Result[_T, object]]],
    compensate: Callable[[_T], object] | None = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    compensation_retry: Retry | None = None,
    compensation_timeout: float | None = None,
    idempotent: bool = False,
    on_unknown: Callable[[StepContext], object] | None = None,
) -> Saga[_T]: ...
@overload
def step(
    action: Callable[[], Awaitable[IOResult[_T, object]]],
    compensate: Callable[[_T], object] | None = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    compensation_retry: Retry | None = None,
    compensation_timeout: float | None = None,
    idempotent: bool = False,
    on_unknown: Callable[[StepContext], object] | None = None,
) -> Saga[_T]: ...
@overload
def step(
    action: Callable[[], Awaitable[_T]],
    compensate: Callable[[_T], object] | None = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    compensation_retry: Retry | None = None,
    compensation_timeout: float | None = None,
    idempotent: bool = False,
    on_unknown: Callable[[StepContext], object] | None = None,
) -> Saga[_T]: ...
@overload
def step(
    action: Callable[[], Result[_T, object]],
    compensate: Callable[[_T], object] | None = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    compensation_retry: Retry | None = None,
    compensation_timeout: float | None = None,
    idempotent: bool = False,
    on_unknown: Callable[[StepContext], object] | None = None,
) -> Saga[_T]: ...
@overload
def step(
    action: Callable[[], IOResult[_T, object]],
    compensate: Callable[[_T], object] | None = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    compensation_retry: Retry | None = None,
    compensation_timeout: float | None = None,
    idempotent: bool = False,
    on_unknown: Callable[[StepContext], object] | None = None,
) -> Saga[_T]: ...
@overload
def step(
    action: Callable[[], _T],
    compensate: Callable[[_T], object] | None = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    compensation_retry: Retry | None = None,
    compensation_timeout: float | None = None,
    idempotent: bool = False,
    on_unknown: Callable[[StepContext], object] | None = None,
) -> Saga[_T]: ...
def step(
    action: Callable[[], Any],
    compensate: Callable[[Any], object] | None = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    compensation_retry: Retry | None = None,
    compensation_timeout: float | None = None,
    idempotent: bool = False,
    on_unknown: Callable[[StepContext], object] | None = None,
) -> Saga[Any]:
    """A step: an action (no argument) paired with the compensation that undoes it.

    The compensation receives the action's result. An action may return a plain value or a
    `returns` container (`Result`, `IOResult`): a failure there fails the step, with no exception
    needed, and the compensation later receives the unwrapped success value. Under an async
    interpreter the action and the compensation may also be ``async`` (or return any awaitable,
    a `FutureResult` included); the interpreter awaits them.

    Args:
        action: performs the effect; called with no argument.
        compensate: undoes the effect given the action's result; ``None`` for a step with
            nothing to undo (a read, a notification). Compensations may run more than once
            (retries, recovery), so they must be idempotent.
        name: the step's name in paths, events and errors; derived from the action's
            ``__name__`` when omitted. Explicit names must be unique within their scope and may
            not contain ``/`` or ``#``.
        timeout: seconds each attempt may take. Only an interpreter that can cut a running
            effect off enforces it (`AsyncInterpreter`); an attempt cut off has an unknown
            outcome. `SyncInterpreter` does not enforce it: a running sync function cannot be
            pre-empted, so the attempt runs to its end and its result counts, with no error and
            no warning. (`Saga.timeout` is enforced by both, between steps under the sync one.)
        retry: how the action is retried when it fails.
        compensation_retry: how the compensation is retried when it fails.
        compensation_timeout: seconds each attempt of the compensation (or of `on_unknown`)
            may take; compensations are never bound by the deadline that failed the saga. Like
            `timeout`, enforced by `AsyncInterpreter` and not by `SyncInterpreter`.
        idempotent: the action may safely run again with the same idempotency key
            (`fsaga.context.current_context`). An attempt its own timeout cut off is then
            retried (as many attempts as `retry` allows, whatever its `retry_on`; once when
            there is no policy), and, when the saga is being undone with its outcome still
            unknown, run once more to learn the result its compensation needs.
        on_unknown: the unknown-outcome compensation: called with the step's
            `fsaga.context.StepContext` when the action's outcome is unknown (it was cut off by
            a timeout, a cancellation or an interrupt) and cannot be settled by running it again.
            Without one, such a step is reported in `PartialFailure.unresolved`.

    Raises:
        TypeError: an argument has the wrong type (a non-callable action, say).
        ValueError: an argument has a bad value (a non-positive timeout, a bad name).

    >>> from fsaga.interpreter import SyncInterpreter
    >>> step(lambda: 42, name="answer").run(SyncInterpreter())
    Success(value=42)
    >>> step(42)
    Traceback (most recent call last):
    ...
    TypeError: step 'step': action must be callable, got 42
    """
    if (
        timeout is None
        and retry is None
        and compensation_retry is None
        and compensation_timeout is None
        and idempotent is False
        and on_unknown is None
        and type(action) is FunctionType
        and not action.__code__.co_argcount
        and not action.__code__.co_kwonlyargcount
        and (compensate is None or _plain_compensation(compensate))
    ):
        # The common call, told with a few attribute reads: a plain function taking no argument,
        # a plain compensation or none, and no option. A name that is an identifier needs no
        # other check (it is non-empty, without spaces, '/' or '#'). Whatever this does not
        # accept takes the full checks of _checked_step, which word the errors.
        if name is None:
            label = action.__name__
            if label.isidentifier():
                return _StepNodeDraft(action, compensate, label, False, None, _NO_OPTIONS)
        elif type(name) is str and name.isidentifier():
            return _StepNodeDraft(action, compensate, name, True, None, _NO_OPTIONS)
    return _checked_step(
        action,
        compensate,
        name,
        timeout,
        retry,
        compensation_retry,
        compensation_timeout,
        idempotent,
        on_unknown,
    )


def _checked_step(
    action: Callable[[], Any],
    compensate: Callable[[Any], object] | None,
    name: str | None,
    timeout: float | None,
    retry: Retry | None,
    compensation_retry: Retry | None,
    compensation_timeout: float | None,
    idempotent: bool,
    on_unknown: Callable[[StepContext], object] | None,
) -> StepNode[Any]:
    """`step` with every check: what its common call skips, and the error messages."""
    label = _label_of(action) if name is None else name
    if name is not None:
        _check_name(name, what="step()")
    what = f"step {label!r}"
    _check_function(action, 0, what=f"{what}: action", called="with no argument")
    if compensate is not None:
        _check_function(
            compensate, 1, what=f"{what}: compensate", called=_WITH_RESULT, optional=True
        )
    attempt_timeout = None if timeout is None else check_seconds(timeout, what=f"{what}: timeout")
    if compensation_timeout is not None:
        compensation_timeout = check_seconds(
            compensation_timeout, what=f"{what}: compensation_timeout"
        )
        if compensate is None and on_unknown is None:
            raise ValueError(
                f"{what}: compensation_timeout is given but the step has no compensation"
            )
    if not isinstance(idempotent, bool):
        raise TypeError(f"{what}: idempotent must be a bool, got {idempotent!r}")
    if on_unknown is not None:
        _check_function(
            on_unknown,
            1,
            what=f"{what}: on_unknown",
            called="with one argument (the step's context)",
            optional=True,
        )
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"{what}: retry must be a Retry, got {retry!r}")
    if compensation_retry is not None:
        if not isinstance(compensation_retry, Retry):
            raise TypeError(
                f"{what}: compensation_retry must be a Retry, got {compensation_retry!r}"
            )
        if compensate is None and on_unknown is None:
            raise ValueError(
                f"{what}: compensation_retry is given but the step has no compensation"
            )
    # A sync interpreter cannot undo with an async function: it refuses the step before its
    # action runs, rather than find out in the middle of an undo.
    async_undo = (compensate is not None and iscoroutinefunction(compensate)) or (
        on_unknown is not None and iscoroutinefunction(on_unknown)
    )
    if (
        retry is None
        and compensation_retry is None
        and compensation_timeout is None
        and not idempotent
        and on_unknown is None
        and not async_undo
    ):
        options = _NO_OPTIONS
    else:
        options = StepOptions(
            retry, compensation_retry, compensation_timeout, idempotent, on_unknown, async_undo
        )
    return StepNode(action, compensate, label, name is not None, attempt_timeout, options)


@overload
def par() -> Saga[tuple[()]]: ...
@overload
def par(a: Saga[_A], /) -> Saga[tuple[_A]]: ...
@overload
def par(a: Saga[_A], b: Saga[_B], /) -> Saga[tuple[_A, _B]]: ...
@overload
def par(a: Saga[_A], b: Saga[_B], c: Saga[_C], /) -> Saga[tuple[_A, _B, _C]]: ...
@overload
def par(a: Saga[_A], b: Saga[_B], c: Saga[_C], d: Saga[_D], /) -> Saga[tuple[_A, _B, _C, _D]]: ...
@overload
def par(
    a: Saga[_A], b: Saga[_B], c: Saga[_C], d: Saga[_D], e: Saga[_E], /
) -> Saga[tuple[_A, _B, _C, _D, _E]]: ...
@overload
def par(
    a: Saga[_A], b: Saga[_B], c: Saga[_C], d: Saga[_D], e: Saga[_E], f: Saga[_F], /
) -> Saga[tuple[_A, _B, _C, _D, _E, _F]]: ...
@overload
def par(*branches: Saga[_T]) -> Saga[tuple[_T, ...]]: ...
def par(*branches: Saga[Any]) -> Saga[tuple[Any, ...]]:
    """Independent branches; the result is the tuple of their results, in argument order.

    An async interpreter runs the branches concurrently, the sync interpreter one after another;
    the outcome is the same. If a branch fails, no new step starts in the others; what completed
    in every branch is compensated.

    A branch that is a single named step or a named sub-saga keeps its name in paths
    (``charge``, ``payment/charge``); any other branch is scoped by its position (``#1/charge``),
    so concurrent branches never compete for a path. A later `par` in the same scope numbers its
    positions like repeated labels (``#1#2/charge``), so no two steps of a run share a path.

    >>> from fsaga.interpreter import SyncInterpreter
    >>> par(pure(1), pure("a")).run(SyncInterpreter())
    Success(value=(1, 'a'))
    """
    for index, branch in enumerate(branches):
        if not isinstance(branch, Saga):
            raise TypeError(f"par(): branch {index} is not a Saga, got {branch!r}")
    _check_sibling_names(branches, where="par()")
    return ParNode(branches)


def sequence(sagas: Iterable[Saga[_T]]) -> Saga[tuple[_T, ...]]:
    """Run sagas one after another; the result is the tuple of their results.

    >>> from fsaga.interpreter import SyncInterpreter
    >>> sequence([pure(1), pure(2), pure(3)]).run(SyncInterpreter())
    Success(value=(1, 2, 3))
    """
    items = tuple(sagas)
    for index, item in enumerate(items):
        if not isinstance(item, Saga):
            raise TypeError(f"sequence(): item {index} is not a Saga, got {item!r}")
    _check_sibling_names(items, where="sequence()")
    # Results accumulate in a cons list ((value, rest) pairs) so the whole fold stays linear.
    accumulated: Saga[_Cons[_T]] = pure(None)
    for item in items:
        accumulated = BindNode(accumulated, BindContinuation(partial(_push, item)))
    return BindNode(accumulated, MapContinuation(_cons_to_tuple))


def traverse(items: Iterable[_A], function: Callable[[_A], Saga[_B]]) -> Saga[tuple[_B, ...]]:
    """Build a saga for every item with `function`, then run them one after another.

    >>> from fsaga.interpreter import SyncInterpreter
    >>> traverse([1, 2], lambda n: pure(n * 10)).run(SyncInterpreter())
    Success(value=(10, 20))
    """
    if not callable(function):
        raise TypeError(f"traverse() needs a callable returning a Saga, got {function!r}")
    _check_function(
        function, 1, what="traverse(): the function", called="with one argument (an item)"
    )
    return sequence(function(item) for item in items)


_Cons = tuple[_T, "_Cons[_T]"] | None


def _push(item: Saga[_T], rest: _Cons[_T]) -> Saga[_Cons[_T]]:
    return BindNode(item, MapContinuation(partial(_cons, rest=rest)))


def _cons(value: _T, *, rest: _Cons[_T]) -> _Cons[_T]:
    return (value, rest)


def _cons_to_tuple(cons: _Cons[_T]) -> tuple[_T, ...]:
    values: list[_T] = []
    while cons is not None:
        value, cons = cons
        values.append(value)
    values.reverse()
    return tuple(values)


def _plain_compensation(compensate: object) -> bool:
    """Whether `compensate` is a plain function, not async, taking exactly one positional
    argument: a compensation `step` accepts with no further check."""
    if type(compensate) is not FunctionType:
        return False
    code = compensate.__code__
    return (
        code.co_argcount == 1
        and not code.co_kwonlyargcount
        and not code.co_flags & CO_COROUTINE
        and (_ASYNC_BY_CODE_ONLY or not iscoroutinefunction(compensate))
    )


_ASYNC_BY_CODE_ONLY: Final = sys.version_info < (3, 12)
"""Whether a plain function is async only when its code says so: from Python 3.12 on,
`inspect.markcoroutinefunction` can mark any function as one."""


def _is_function(candidate: object) -> bool:
    """Callable, and not a saga (a saga is a value to run, not a continuation)."""
    return callable(candidate) and not isinstance(candidate, Saga)


def _label_of(action: object) -> str:
    """A step's default name: the action's ``__name__`` (lambdas and nameless callables: "step")."""
    while isinstance(action, partial):
        action = action.func
    label = getattr(action, "__name__", None)
    if not isinstance(label, str):
        label = type(action).__name__ if callable(action) else None
    if not label or label.startswith("<") or "/" in label or "#" in label:
        return "step"
    return label


_WITH_RESULT: Final = "with one argument (the action's result)"
_WITH_VALUE: Final = "with one argument (the result before it)"


def _check_function(
    function: object, given: int, *, what: str, called: str, optional: bool = False
) -> None:
    """Refuse a non-callable, or a function that cannot take the arguments it will be given."""
    if not callable(function):
        alternative = " or None" if optional else ""
        raise TypeError(f"{what} must be callable{alternative}, got {function!r}")
    problem = call_problem(function, given)
    if problem is not None:
        raise TypeError(f"{what} is called {called}, but {problem}")


def _check_name(name: object, *, what: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{what}: name must be a str, got {name!r}")
    if not name or name.strip() != name:
        raise ValueError(f"{what}: name must be non-empty, without surrounding spaces: {name!r}")
    if "/" in name or "#" in name:
        raise ValueError(f"{what}: name {name!r} may not contain '/' or '#'")


def sibling_name(saga: Saga[Any]) -> str | None:
    """The name a saga claims in its parent's scope, when that is known without running it."""
    while isinstance(saga, TimeoutNode):
        saga = saga.inner
    if isinstance(saga, NamedNode):
        return saga.name
    if isinstance(saga, StepNode) and saga.explicit:
        return saga.name
    return None


def _check_sibling_names(sagas: Iterable[Saga[Any]], *, where: str) -> None:
    seen: set[str] = set()
    for saga in sagas:
        name = sibling_name(saga)
        if name is None:
            continue
        if name in seen:
            raise DuplicateStepNameError(name, where=where)
        seen.add(name)


def known_continuation(continuation: BindContinuation) -> Saga[Any] | None:
    """The saga a continuation fsaga built itself runs, known without running it: `zip`'s
    right side, `sequence`'s next item; ``None`` for a user's `bind` function."""
    function = continuation.function
    if isinstance(function, partial) and function.func in (_zip_right, _push) and function.args:
        saga = function.args[0]
        if isinstance(saga, Saga):
            return saga
    return None
