"""How a driver starts the effect a call stands for: one place for both interpreters."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from inspect import isawaitable
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from fsaga.context import StepContext
from fsaga.interpreter._call import ACTION, COMPENSATION, Call
from fsaga.interpreter.results import PLAIN_TYPES
from fsaga.outcome import Outcome, PartialFailure, Success

if TYPE_CHECKING:
    from fsaga.interpreter._engine import Engine
    from fsaga.interpreter.protocol import Effect, Perform
    from fsaga.interpreter.settings import AroundEffect

__all__ = ["in_scopes", "in_scopes_async", "released", "start_effect"]

logger = logging.getLogger("fsaga.interpreter")

_T = TypeVar("_T")

_SUSPENDABLE: Final = 0x20 | 0x80 | 0x100 | 0x200
"""`co_flags` of generators and coroutines (CO_GENERATOR, CO_COROUTINE,
CO_ITERABLE_COROUTINE, CO_ASYNC_GENERATOR): their frames are never cleared here, since clearing
a suspended one would end it."""


def start_effect(engine: Engine[Any], call: Call, perform: Perform | None) -> object:
    """Call the action, compensation or unknown-outcome compensation `call` stands for (not a
    wait), through `perform` when one is given, and return what it returned: a value, or, for
    an async effect, the awaitable the driver awaits."""
    if perform is not None:
        return perform(engine.effect_of(call))
    kind = call.kind
    if kind is ACTION:
        return call.node.action()
    if kind is COMPENSATION:
        compensate = call.node.compensate
        assert compensate is not None
        return compensate(call.argument)
    on_unknown = call.node.on_unknown
    assert on_unknown is not None
    return on_unknown(engine.context_of(call))


def in_scopes(scopes: tuple[AroundEffect, ...], perform: Perform | None) -> Perform:
    """A `Perform` function that performs each effect as `perform` would (or calls it, without
    one) inside the listeners' effect scopes (`fsaga.events.EffectScope`): what a sync driver
    performs through when a listener has one, so that a run without them pays nothing."""

    def perform_in_scopes(effect: Effect) -> object:
        entered = _enter(scopes, effect)
        try:
            result = effect.run() if perform is None else perform(effect)
        except BaseException as error:
            _leave(entered, error)
            raise
        _leave(entered, None)
        return result

    return perform_in_scopes


def in_scopes_async(
    scopes: tuple[AroundEffect, ...], perform: Perform | None
) -> Callable[[Effect], Awaitable[object]]:
    """`in_scopes` for an async driver: the scopes are left once the effect's result has been
    awaited, in the task that awaited it."""

    async def perform_in_scopes(effect: Effect) -> object:
        entered = _enter(scopes, effect)
        try:
            result = effect.run() if perform is None else perform(effect)
            while result is not None and type(result) not in PLAIN_TYPES and isawaitable(result):
                result = await result
        except BaseException as error:
            _leave(entered, error)
            raise
        _leave(entered, None)
        return result

    return perform_in_scopes


def _enter(
    scopes: tuple[AroundEffect, ...], effect: Effect
) -> list[AbstractContextManager[object]]:
    """Enter every effect scope for `effect`, in order, and return those entered, for `_leave`.
    One that raises entering is logged and left out: like a listener, it never changes the
    run."""
    context = StepContext(effect.saga_id, effect.path, effect.attempt, effect.kind)
    entered: list[AbstractContextManager[object]] = []
    for scope in scopes:
        try:
            manager = scope(context)
            manager.__enter__()
        except Exception:
            logger.exception(
                "saga %s: effect scope %r raised entering %s of %s; ignored",
                context.saga_id,
                scope,
                context.kind,
                context.path,
            )
            continue
        entered.append(manager)
    return entered


def _leave(entered: list[AbstractContextManager[object]], error: BaseException | None) -> None:
    """Leave the scopes `_enter` entered, newest first, telling each the effect's `error` (if
    it raised). What a scope returns is ignored, so none can swallow the error; one that raises
    leaving is logged and ignored."""
    while entered:
        manager = entered.pop()
        try:
            if error is None:
                manager.__exit__(None, None, None)
            else:
                manager.__exit__(type(error), error, error.__traceback__)
        except Exception:
            logger.exception("effect scope %r raised leaving; ignored", manager)


def released(outcome: Outcome[_T]) -> Outcome[_T]:
    """`outcome`, its errors no longer holding the run's state (a sync driver returns through
    this, from a frame that does not hold the outcome).

    An error keeps the frames it passed through, and each frame its caller's, with their
    variables: the engine's and the driver's frames hold the run's state, some of which holds
    the error again (`Engine.take_outcome` lets go of most). That cycle would keep the run alive
    until the garbage collector found it. Clearing the interpreter's own finished frames (their
    variables only: the traceback still shows every line) lets it go with its outcome; the
    effects' frames are left as they are, for a debugger to look into.
    """
    if type(outcome) is Success:
        return outcome
    errors: list[BaseException] = [outcome.error]
    if type(outcome) is PartialFailure:
        errors.extend(failure.error for failure in outcome.failed_compensations)
    for error in errors:
        trace = error.__traceback__
        while trace is not None:
            frame: FrameType | None = trace.tb_frame
            while frame is not None and _is_ours(frame):
                try:
                    frame.clear()
                except RuntimeError:
                    break  # still running: an enclosing run's, say
                frame = frame.f_back
            trace = trace.tb_next
    return outcome


def _is_ours(frame: FrameType) -> bool:
    return not frame.f_code.co_flags & _SUSPENDABLE and str(
        frame.f_globals.get("__name__", "")
    ).startswith("fsaga.interpreter.")
