"""The synchronous interpreter: performs each effect in the calling thread, one at a time."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from inspect import isawaitable, iscoroutinefunction
from typing import Any, Final, TypeVar, final

from fsaga._signatures import function_name
from fsaga.context import _running_effect
from fsaga.events import Listener
from fsaga.interpreter._call import ACTION, COMPENSATION, Call
from fsaga.interpreter._effects import in_scopes, released, start_effect
from fsaga.interpreter._engine import CompensationPolicy, Engine, EngineSettings
from fsaga.interpreter._plan import Straight, Stretch
from fsaga.interpreter.protocol import Perform
from fsaga.interpreter.results import PLAIN_TYPES
from fsaga.outcome import Failure, Outcome, Success, describe_failure
from fsaga.saga import Saga

__all__ = ["SyncInterpreter"]

_T = TypeVar("_T")


_LONGEST_SLEEP: Final = 86_400.0
"""The longest single `time.sleep`: longer waits are made of several, since the platform's
sleep refuses a duration past its own limit (``OverflowError`` or ``OSError``)."""


def _wait(seconds: float) -> None:
    """Sleep `seconds` in the calling thread: `time.sleep`, for any finite duration.

    The default `sleep` of `SyncInterpreter`: a retry policy may ask for a wait longer than
    the platform's sleep accepts in one call, and a run must not fail for it.

    >>> _wait(0.0)
    """
    deadline = time.monotonic() + seconds
    remaining = seconds
    while remaining > 0:
        time.sleep(min(remaining, _LONGEST_SLEEP))
        remaining = deadline - time.monotonic()


@final
class SyncInterpreter:
    """Runs sagas in the calling thread; `par` branches run one after another.

    Args:
        listeners: called with every event of every run (see `fsaga.events`).
        perform: performs each effect instead of calling it directly (see
            `fsaga.interpreter.protocol.Perform`); the recording, scripted and fault-injecting
            interpreters in `fsaga.testing` are built on it.
        sleep: waits between retry attempts (default: `time.sleep`, for waits of any length);
            inject a fake in tests so nothing really waits.
        clock: the time stamped on events.
        random_unit: random numbers in ``[0, 1)`` for retry jitter; inject one for repeatable
            delays.
        on_compensation_failure: ``"continue"`` (default) runs the remaining compensations when
            one fails for good; ``"stop"`` skips them, and the outcome lists them as skipped.

    A `KeyboardInterrupt` or `SystemExit` raised by an effect stops the forward steps; every
    completed step is still compensated, and then the interruption is re-raised, with a note
    describing the undo (the full outcome goes to listeners in `SagaFinished`). A sync function
    cannot be pre-empted, so per-step timeouts are enforced only by interpreters that can
    interrupt an effect.

    >>> from fsaga import step
    >>> SyncInterpreter().run_saga(step(lambda: "ok"))
    Success(value='ok')
    """

    __slots__ = ("_perform", "_performs", "_settings", "_sleep")

    def __init__(
        self,
        *,
        listeners: Iterable[Listener] = (),
        perform: Perform | None = None,
        sleep: Callable[[float], object] = _wait,
        clock: Callable[[], float] = time.time,
        random_unit: Callable[[], float] = random.random,
        on_compensation_failure: CompensationPolicy = "continue",
    ) -> None:
        if perform is not None and not callable(perform):
            raise TypeError(f"SyncInterpreter: perform must be callable, got {perform!r}")
        if not callable(sleep):
            raise TypeError(f"SyncInterpreter: sleep must be callable, got {sleep!r}")
        try:
            self._settings = EngineSettings(
                tuple(listeners), clock, random_unit, on_compensation_failure
            )
        except (TypeError, ValueError) as error:
            raise type(error)(f"SyncInterpreter: {error}") from None
        self._perform = perform
        # How the driver performs effects: through the listeners' effect scopes, if any
        # (`fsaga.events.EffectScope`); a run without them pays nothing for them.
        scopes = self._settings.effect_scopes
        self._performs = perform if not scopes else in_scopes(scopes, perform)
        self._sleep = sleep

    def run_saga(self, saga: Saga[_T], /, *, saga_id: str | None = None) -> Outcome[_T]:
        """Run `saga` to its outcome (`Saga.run` calls this)."""
        if self._perform is None:
            stretch = Engine.straight(saga, self._settings, "sync")
            if stretch is not None:
                return self._run_straight(saga, stretch, saga_id)
        return released(self._run(saga, saga_id))

    def _run(self, saga: Saga[_T], saga_id: str | None) -> Outcome[_T]:
        engine = Engine(
            saga,
            self._settings,
            saga_id=saga_id,
            stretches="sync" if self._perform is None else None,
        )
        return self._finish(engine, self._drive(engine, engine.poll(), None))

    def _finish(self, engine: Engine[_T], interruption: BaseException | None) -> Outcome[_T]:
        if interruption is not None:
            note = _note(engine.outcome)
            interruption.add_note(f"fsaga: saga {engine.saga_id} interrupted; {note}")
            raise interruption
        # Straight out, never held in a variable of this frame: an error in the outcome keeps
        # this frame (see `Engine.take_outcome`).
        return engine.take_outcome()

    def _run_straight(self, saga: Saga[_T], stretch: Stretch, saga_id: str | None) -> Outcome[_T]:
        """Run `saga`, which is all one stretch (`Engine.straight`), calling its actions, and on
        a plain failure its compensations, before any engine is made; make the engine only if
        something happens that it must decide, and report it what happened so far.

        What a step raises is handed on in a list, emptied again, never in a variable of this
        frame: the error's traceback keeps the frame, which must not keep the error in turn.
        """
        run = Straight(stretch, saga_id)
        results = run.results
        append = results.append
        result: object = None
        failed: list[Exception] = []
        stopped: list[BaseException] = []
        token = _running_effect.set((run, run, ACTION, 1))
        try:
            for action in stretch.actions:
                result = action()
                if result is not None and type(result) not in PLAIN_TYPES:
                    break
                append(result)
            else:
                return Success(result)  # type: ignore[arg-type]  # the last step's result: a _T
        except Exception as raised:
            failed.append(raised)
        except BaseException as raised:
            stopped.append(raised)
        finally:
            _running_effect.reset(token)
        # What follows runs outside the handlers above, as it would in `_drive`: an error raised
        # from here on has no implicit `__context__` of the step's.
        if failed:
            return self._straight_failed(saga, run, failed.pop())
        engine, call = self._straight_engine(saga, run)
        if stopped:
            return released(self._finish(engine, self._interrupted(engine, call, stopped.pop())))
        # A step returned something other than a plain value: the engine takes it from there.
        return released(self._finish(engine, self._drive(engine, *_reported(engine, call, result))))

    def _straight_failed(self, saga: Saga[_T], run: Straight, error: Exception) -> Outcome[_T]:
        """A step of the straight `run` raised `error`: its plain failure, undone here, or the
        engine's to decide."""
        order = Engine.straight_undo(run.stretch, self._settings, len(run.results), error)
        if order is not None:
            return self._undo_straight(saga, run, order, error)
        engine, call = self._straight_engine(saga, run)
        return released(
            self._finish(
                engine, self._drive(engine, engine.fail(call, error) or engine.poll(), None)
            )
        )

    def _undo_straight(
        self, saga: Saga[_T], run: Straight, order: list[int], error: Exception
    ) -> Outcome[_T]:
        """The plain failure of a straight run: compensate the steps in `order` (newest first);
        make the engine only if a compensation does anything but return a plain value."""
        stretch = run.stretch
        nodes = stretch.nodes
        results = run.results
        run.undo_order = order
        append = run.undone.append
        result: object = None
        failed: list[Exception] = []
        stopped: list[BaseException] = []
        token = _running_effect.set((run, run, COMPENSATION, 1))
        try:
            for index in order:
                compensate = nodes[index].compensate
                assert compensate is not None
                result = compensate(results[index])
                if result is not None and type(result) not in PLAIN_TYPES:
                    break
                append(result)
            else:
                labels = stretch.local().labels
                return Failure(error, tuple([labels[index] for index in order]))
        except Exception as raised:
            failed.append(raised)
        except BaseException as raised:
            stopped.append(raised)
        finally:
            _running_effect.reset(token)
        engine, call = self._straight_undo_engine(saga, run, order, error)
        if failed:
            follows = engine.fail(call, failed.pop()) or engine.poll()
            return released(self._finish(engine, self._drive(engine, follows, None)))
        if stopped:
            return released(self._finish(engine, self._interrupted(engine, call, stopped.pop())))
        return released(self._finish(engine, self._drive(engine, *_reported(engine, call, result))))

    def _interrupted(
        self, engine: Engine[Any], call: Call, stop: BaseException
    ) -> BaseException | None:
        """Report that `stop` interrupted `call`, and drive the undo that follows."""
        return self._drive(engine, _take_in(engine, call, stop), stop)

    def _straight_engine(self, saga: Saga[_T], run: Straight) -> tuple[Engine[_T], Call]:
        return Engine.straight_engine(
            saga, self._settings, saga_id=run.given_id, stretches="sync", results=run.results
        )

    def _straight_undo_engine(
        self, saga: Saga[_T], run: Straight, order: list[int], error: Exception
    ) -> tuple[Engine[_T], Call]:
        engine, call = self._straight_engine(saga, run)
        follows = engine.fail(call, error)
        assert follows is None  # the plain failure: the undo starts
        return engine, engine.straight_undo_call(order, run.undone)

    def _drive(
        self, engine: Engine[Any], call: Call | None, interruption: BaseException | None
    ) -> BaseException | None:
        """Perform the engine's calls one at a time, from `call` on, until the run has its
        outcome; return the interruption to re-raise, if one came (or had come already)."""
        perform = self._performs
        sleep = self._sleep
        while call is not None:
            # The call handed out and not yet reported back, if an interruption lands now.
            pending: Call | None = call
            try:
                try:
                    kind = call.kind
                    if kind == "stretch":
                        result = _run_stretch(engine, call)
                    elif kind == "undo-stretch":
                        result = _run_undo_stretch(engine, call)
                    elif kind == "sleep":
                        sleep(call.delay)
                        result = None
                    else:
                        token = _running_effect.set((engine, call, kind, call.attempt))
                        try:
                            if kind is not ACTION:
                                result = start_effect(engine, call, perform)
                            elif call.node.options.async_undo:
                                result = _refuse_async_undo(engine, call, perform)
                            elif perform is None:
                                result = call.node.action()  # the common case, directly
                            else:
                                result = start_effect(engine, call, perform)
                        finally:
                            _running_effect.reset(token)
                except Exception as error:
                    pending = None
                    call = engine.fail(call, error) or engine.poll()
                    continue
                pending = None
                if result is not None and type(result) not in PLAIN_TYPES and isawaitable(result):
                    _close(result)
                    call = engine.fail(call, _awaitable_error(call)) or engine.poll()
                else:
                    call = engine.succeed(call, result) or engine.poll()
            except Exception:
                raise  # the engine's own errors are bugs, never a step's failure
            except BaseException as stop:
                # KeyboardInterrupt, SystemExit: compensate, then let it propagate.
                if interruption is None:
                    interruption = stop
                call = _take_in(engine, pending, stop)
        return interruption


def _run_stretch(engine: Engine[Any], call: Call) -> object:
    """Call the actions of the stretch `call` in order, appending each plain result to its
    results; return the first result that is not plain (the engine takes that step from there),
    or the last one. What an action raises propagates, for the engine to take in."""
    run = call.stretch
    assert run is not None
    append = run.results.append
    result: object = None
    # One context for the whole stretch: `current_context()` reads the step running now.
    token = _running_effect.set((engine, call, ACTION, 1))
    try:
        for action in run.actions:
            result = action()
            if result is not None and type(result) not in PLAIN_TYPES:
                break
            append(result)
    finally:
        _running_effect.reset(token)
    return result


def _run_undo_stretch(engine: Engine[Any], call: Call) -> object:
    """Call the compensations of the undo-stretch `call` in its order, appending each plain
    result; return the first result that is not plain, or the last one."""
    run = call.stretch
    assert run is not None
    nodes = run.nodes
    results = run.results
    append = run.undone.append
    result: object = None
    token = _running_effect.set((engine, call, COMPENSATION, 1))
    try:
        for index in run.undo_order:
            compensate = nodes[index].compensate
            assert compensate is not None
            result = compensate(results[index])
            if result is not None and type(result) not in PLAIN_TYPES:
                break
            append(result)
    finally:
        _running_effect.reset(token)
    return result


def _reported(engine: Engine[Any], call: Call, result: object) -> tuple[Call | None, None]:
    """Report that `call` returned `result`, which is not a plain value, as `_drive` does; the
    call that follows and no interruption."""
    if isawaitable(result):
        _close(result)
        return engine.fail(call, _awaitable_error(call)) or engine.poll(), None
    return engine.succeed(call, result) or engine.poll(), None


def _take_in(engine: Engine[Any], pending: Call | None, stop: BaseException) -> Call | None:
    """Report `stop` to the engine and return the next call of the undo.

    A listener may raise another interrupt while the engine takes this one in (the engine has
    then settled what it was reporting): it counts as coming between calls, like any other.
    """
    while True:
        try:
            engine.interrupt(pending, stop)
            return engine.poll()
        except Exception:
            raise  # the engine's own errors are bugs
        except BaseException as again:
            pending, stop = None, again


def _refuse_async_undo(engine: Engine[Any], call: Call, perform: Perform | None) -> object:
    """Fail the action of a step this interpreter could not undo, before the action runs.

    Through a `perform` function the refusal takes the place of the real effect, so a
    function that never performs real effects (a scripted test run) is not refused.
    """
    node = call.node
    function: object
    if node.compensate is not None and iscoroutinefunction(node.compensate):
        function, which = node.compensate, "compensation"
    else:
        function, which = node.on_unknown, "unknown-outcome compensation"
    error = TypeError(
        f"the {which} of step {call.path!r} ({function_name(function)}) is async, so a sync "
        "interpreter could not undo the step: run async effects with an async interpreter "
        "(the step's action was not run)"
    )
    if perform is None:
        raise error

    def refuse() -> object:
        raise error

    return perform(replace(engine.effect_of(call), run=refuse))


def _awaitable_error(call: Call) -> TypeError:
    kind = (
        "action"
        if call.kind == "stretch"
        else "compensation"
        if call.kind == "undo-stretch"
        else call.kind
    )
    return TypeError(
        f"the {kind} of step {call.path!r} returned an awaitable; "
        "run async effects with an async interpreter"
    )


def _close(awaitable: object) -> None:
    """Close a coroutine nobody will await, so Python does not warn that it never ran."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


def _note(outcome: Outcome[object]) -> str:
    if isinstance(outcome, Success):
        return "every step had completed"
    return describe_failure(outcome)
