"""Walking a saga tree: a fiber's pure part, from one effect to the next.

Private to the engine. `walk` runs binds, maps, scopes and deadlines on a fiber's explicit stack
(never Python recursion, so a saga of any depth runs in constant Python stack) until it reaches
something the engine must decide on: a step to perform, a stretch of plain steps, a `par` to
fork, the fiber's end, or a failure of the pure part (a bind continuation that raised).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, assert_never, final

from fsaga.errors import DuplicateStepNameError
from fsaga.interpreter._fibers import Deadline, DeadlineExit, Fiber, Scope, ScopeExit
from fsaga.interpreter._plan import StretchAt, plan_of
from fsaga.saga import (
    BindContinuation,
    BindNode,
    MapContinuation,
    NamedNode,
    ParNode,
    PureNode,
    Saga,
    StepNode,
    TimeoutNode,
)

__all__ = ["Failed", "Finished", "Reached", "walk"]


@final
class Finished:
    """The fiber's stack is empty: `value` is its result."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


@final
class Failed:
    """The fiber's pure part failed with `error` (a continuation raised or returned no saga, a
    name was claimed twice)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


Reached: TypeAlias = "StepNode[Any] | StretchAt | ParNode[Any] | Finished | Failed"
"""What `walk` stops at."""

Node: TypeAlias = (
    "StepNode[Any] | BindNode[Any] | PureNode[Any] | NamedNode[Any] | TimeoutNode[Any]"
    " | ParNode[Any]"
)


def walk(
    fiber: Fiber,
    node: Saga[Any] | None,
    value: object,
    monotonic: Callable[[], float],
    *,
    compile_chains: bool,
) -> Reached:
    """Advance `fiber` from `node` (or, when `node` is None, by resuming its stack with `value`)
    to the next thing the engine decides on.

    With `compile_chains`, a `then` chain runs from its compiled plan (`plan_of`): its plain
    steps come as stretches.
    """
    stack = fiber.stack
    while True:
        if node is None:
            # Resume: unwind continuations with `value` until one yields something to run.
            if not stack:
                return Finished(value)
            frame = stack.pop()
            match frame:
                case Saga():
                    node = frame  # a `then`
                case StretchAt():
                    return frame
                case MapContinuation():
                    try:
                        value = frame.function(value)
                    except Exception as error:
                        return Failed(error)
                    continue
                case BindContinuation():
                    try:
                        saga: object = frame.function(value)
                    except Exception as error:
                        return Failed(error)
                    if not isinstance(saga, Saga):
                        return Failed(_not_a_saga(frame.function, saga))
                    node = saga
                case ScopeExit():
                    fiber.scope = frame.scope
                    continue
                case DeadlineExit():
                    fiber.deadline = frame.deadline
                    continue
                case _:
                    assert_never(frame)
        current: Node = node  # type: ignore[assignment]  # Saga is a closed set of these
        match current:
            case StepNode():
                return current
            case BindNode():
                continuation = current.continuation
                if compile_chains and isinstance(continuation, Saga):
                    plan = plan_of(current)
                    for index in range(len(plan) - 1, -1, -1):
                        stack.append(plan[index])
                    node = None
                else:
                    stack.append(continuation)
                    node = current.source
            case PureNode():
                value = current.value
                node = None
            case NamedNode():
                try:
                    path = fiber.scope.claim(current.name, explicit=True)
                except DuplicateStepNameError as error:
                    return Failed(error)
                stack.append(ScopeExit(fiber.scope))
                fiber.scope = Scope(path)
                node = current.inner
            case TimeoutNode():
                _enter_deadline(fiber, current, monotonic)
                node = current.inner
            case ParNode():
                return current
            case _:
                assert_never(current)


def _enter_deadline(
    fiber: Fiber, node: TimeoutNode[object], monotonic: Callable[[], float]
) -> None:
    """Give `fiber` the deadline of the sub-tree `node` wraps, if it is earlier than the one it
    has; a frame restores the enclosing one when the sub-tree ends."""
    fiber.stack.append(DeadlineExit(fiber.deadline))
    at = monotonic() + node.seconds
    enclosing = fiber.deadline
    if enclosing is None or at < enclosing.at:
        inner = node.inner
        scope = fiber.scope
        named = isinstance(inner, NamedNode)
        where = scope.join(inner.name) if isinstance(inner, NamedNode) else scope.prefix
        fiber.deadline = Deadline(at, node.seconds, where, named=named)


def _not_a_saga(continuation: object, returned: object) -> TypeError:
    return TypeError(
        f"a bind continuation must return a Saga, got {returned!r} (from {continuation!r})"
    )
