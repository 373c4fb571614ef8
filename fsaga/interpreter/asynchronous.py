"""The async interpreter: real concurrency, deadlines and cancellation, on anyio.

It drives the same `Engine` as the sync interpreter; only how an effect is performed differs.
While a saga runs one step at a time it performs each effect inline in the awaiting task, which
keeps the per-step cost close to a hand-written loop. When the engine has several calls ready
(a `par`), it opens a task group and gives each its own task until nothing is in flight.

Every attempt runs under a cancel scope whose deadline is the engine's (the step's own timeout,
an enclosing ``saga.timeout(...)``, or the run's), measured on anyio's clock so a test's mock
clock moves them. Compensations run shielded from the deadline that failed the run and from
outside cancellation; each has only its own ``compensation_timeout``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from inspect import isawaitable
from typing import TYPE_CHECKING, ParamSpec, TypeVar, cast, final

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from fsaga.context import _running_effect, _RunningEffect
from fsaga.events import Listener
from fsaga.interpreter.call import ACTION, COMPENSATION, NO_DEADLINE, SLEEP, Call
from fsaga.interpreter.engine import (
    BranchFailurePolicy,
    CompensationPolicy,
    Engine,
    EngineSettings,
)
from fsaga.interpreter.results import PLAIN_TYPES
from fsaga.outcome import Outcome, Success, describe_failure
from fsaga.saga import Saga

if TYPE_CHECKING:
    from fsaga.interpreter.protocol import Perform

__all__ = ["AsyncInterpreter", "in_worker_thread"]

_T = TypeVar("_T")
_P = ParamSpec("_P")


@final
class AsyncInterpreter:
    """Runs sagas on anyio (asyncio or trio): ``outcome = await saga.run(AsyncInterpreter())``.

    Actions and compensations may be plain functions or ``async`` ones (anything returning an
    awaitable is awaited). A plain function runs in the event loop's thread and blocks it while
    it runs; wrap a blocking one with `in_worker_thread` to run it in a worker thread instead.

    Args:
        listeners: called with every event of every run (see `fsaga.events`).
        perform: performs each effect instead of calling it directly (see
            `fsaga.interpreter.protocol.Perform`); it may be ``async``.
        timeout: seconds every run's forward steps may take in all (the per-run deadline);
            compensations are not bound by it.
        on_branch_failure: when a `par` branch fails, ``"settle"`` (default) lets its siblings
            finish what they have in flight and start nothing new; ``"cancel"`` cancels what
            they have in flight (those steps' outcomes become unknown, DESIGN rule 3).
        concurrent_compensation: undo independent `par` branches concurrently, in reverse
            causal order, instead of one step at a time in reverse completion order.
        sleep: waits between retry attempts (default `anyio.sleep`, which follows a test's mock
            clock under trio).
        clock: the time stamped on events.
        random_unit: random numbers in ``[0, 1)`` for retry jitter.
        on_compensation_failure: ``"continue"`` (default) runs the remaining compensations when
            one fails for good; ``"stop"`` skips them, and the outcome lists them as skipped.

    Cancelling the task that awaits a run (or a ``KeyboardInterrupt``) stops the forward steps;
    every completed step is compensated, shielded, and then the cancellation propagates, with a
    note describing the undo.

    >>> import anyio
    >>> from fsaga import step
    >>> async def charge() -> str:
    ...     return "charged"
    >>> anyio.run(AsyncInterpreter().run_saga, step(charge))
    Success(value='charged')
    """

    __slots__ = ("_perform", "_settings", "_sleep")

    def __init__(
        self,
        *,
        listeners: Iterable[Listener] = (),
        perform: Perform | None = None,
        timeout: float | None = None,
        on_branch_failure: BranchFailurePolicy = "settle",
        concurrent_compensation: bool = False,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
        clock: Callable[[], float] = time.time,
        random_unit: Callable[[], float] = random.random,
        on_compensation_failure: CompensationPolicy = "continue",
    ) -> None:
        if perform is not None and not callable(perform):
            raise TypeError(f"AsyncInterpreter: perform must be callable, got {perform!r}")
        if not callable(sleep):
            raise TypeError(f"AsyncInterpreter: sleep must be callable, got {sleep!r}")
        try:
            self._settings = EngineSettings(
                tuple(listeners),
                clock,
                random_unit,
                on_compensation_failure,
                anyio.current_time,
                timeout,
                on_branch_failure,
                concurrent_compensation,
            )
        except (TypeError, ValueError) as error:
            raise type(error)(f"AsyncInterpreter: {error}") from None
        self._perform = perform
        self._sleep = sleep

    async def run_saga(self, saga: Saga[_T], /, *, saga_id: str | None = None) -> Outcome[_T]:
        """Run `saga` to its outcome (`Saga.run` calls this)."""
        engine = Engine(saga, self._settings, saga_id=saga_id)
        run = _Run(engine, self._perform, self._sleep)
        token = _running_effect.set(run.running)
        try:
            await run.drive()
        except Exception:
            raise  # the engine's own errors are bugs, never a step's failure
        except BaseException as interruption:
            # Cancelled from outside, or interrupted: every call in flight has been reported
            # (and if it landed between calls, this tells the engine); undo what completed, out
            # of reach of the cancellation, then let it propagate.
            engine.interrupt(None, interruption)
            with anyio.CancelScope(shield=True):
                await run.drive()
            interruption.add_note(
                f"fsaga: saga {engine.saga_id} interrupted; {_note(engine.outcome)}"
            )
            raise
        finally:
            _running_effect.reset(token)
        return cast("Outcome[_T]", engine.outcome)


@final
class _Run:
    """One run's driver: performs the engine's calls, inline or in a task group."""

    __slots__ = (
        "cancelled",
        "cancels",
        "engine",
        "failures_seen",
        "group",
        "perform",
        "running",
        "scopes",
        "sleep",
    )

    def __init__(
        self,
        engine: Engine,
        perform: Perform | None,
        sleep: Callable[[float], Awaitable[object]],
    ) -> None:
        self.engine = engine
        self.perform = perform
        self.sleep = sleep
        self.running = _RunningEffect(engine)
        self.group: TaskGroup | None = None
        # Whether siblings of a failed branch are cancelled; if so, the calls in flight in the
        # task group with their cancel scopes, and those cancelled for that reason.
        self.cancels = engine.cancels_siblings
        self.scopes: dict[Call, anyio.CancelScope] = {}
        self.cancelled: set[Call] = set()
        self.failures_seen = 0

    async def drive(self) -> None:
        """Perform calls until the engine has nothing left to hand out.

        One call at a time, inline, while the engine has one call ready; in a task group, a
        task per call, while it has several.
        """
        engine = self.engine
        running = self.running
        direct = self.perform is None
        call = engine.poll()
        while call is not None:
            more = engine.poll()
            if more is not None:
                await self.fan_out(call, more)
                call = engine.poll()
            elif direct and call.kind is ACTION and call.deadline == NO_DEADLINE:
                # The common case, kept free of further coroutine layers: an action without a
                # deadline, called directly.
                running.call = call
                try:
                    result = call.node.action()
                    if result is not None and type(result) not in PLAIN_TYPES:
                        while isawaitable(result):
                            result = await result
                except Exception as error:
                    running.call = None
                    call = engine.fail(call, error) or engine.poll()
                    continue
                except BaseException as interruption:
                    running.call = None
                    engine.interrupt(call, interruption)
                    raise
                running.call = None
                call = engine.succeed(call, result) or engine.poll()
            else:
                call = await self.perform_call(call, running) or engine.poll()

    async def fan_out(self, first: Call, second: Call) -> None:
        """Run every call the engine hands out, a task each, until none is in flight."""
        engine = self.engine
        async with anyio.create_task_group() as group:
            self.group = group
            group.start_soon(self.chain, first)
            more: Call | None = second
            while more is not None:
                group.start_soon(self.chain, more)
                more = engine.poll()
        self.group = None

    async def chain(self, call: Call | None) -> None:
        """A task of the group: perform `call` and whatever follows it directly."""
        assert call is not None
        engine = self.engine
        try:
            # A task started in a group already cancelled must not begin its effect at all.
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException as interruption:
            engine.interrupt(call, interruption, started=False)
            raise
        running = _RunningEffect(engine)
        _running_effect.set(running)  # this task's own context: undone when the task ends
        group = self.group
        assert group is not None
        while call is not None:
            call = await self.perform_call(call, running, track=self.cancels)
            spawned = engine.poll()
            while spawned is not None:
                group.start_soon(self.chain, spawned)
                spawned = engine.poll()
            if self.cancels and engine.branch_failures != self.failures_seen:
                self.failures_seen = engine.branch_failures
                self.cancel_doomed()

    def cancel_doomed(self) -> None:
        """Cancel the calls in flight whose `par` has a failed branch."""
        engine = self.engine
        for call, scope in self.scopes.items():
            if call not in self.cancelled and engine.should_cancel(call):
                self.cancelled.add(call)
                scope.cancel()

    async def perform_call(
        self, call: Call, running: _RunningEffect, *, track: bool = False
    ) -> Call | None:
        """Perform `call`, report it to the engine, and return the call that follows directly."""
        engine = self.engine
        if call.deadline == NO_DEADLINE and not track:
            try:
                result = await self.invoke(call, running)
            except Exception as error:
                return engine.fail(call, error)
            except BaseException as interruption:
                engine.interrupt(call, interruption)
                raise
            return engine.succeed(call, result)
        failure: Exception | None = None
        result = None
        try:
            with anyio.CancelScope(deadline=call.deadline) as scope:
                if track:
                    self.scopes[call] = scope
                try:
                    result = await self.invoke(call, running)
                except Exception as raised:
                    failure = raised
        except BaseException as interruption:
            self.scopes.pop(call, None)
            engine.interrupt(call, interruption)
            raise
        if track:
            del self.scopes[call]
        if scope.cancelled_caught:
            if call in self.cancelled:
                self.cancelled.discard(call)
                return engine.cancel(call)
            return engine.expire(call)
        if failure is not None:
            return engine.fail(call, failure)
        return engine.succeed(call, result)

    async def invoke(self, call: Call, running: _RunningEffect) -> object:
        """Perform the effect `call` stands for and return its result, awaited."""
        kind = call.kind
        if kind is SLEEP:
            await self.sleep(call.delay)
            return None
        engine = self.engine
        perform = self.perform
        running.call = call
        try:
            if perform is not None:
                result = perform(engine.effect_of(call))
            elif kind is ACTION:
                result = call.node.action()
            elif kind is COMPENSATION:
                compensate = call.node.compensate
                assert compensate is not None
                result = compensate(call.argument)
            else:
                on_unknown = call.node.on_unknown
                assert on_unknown is not None
                result = on_unknown(engine.context_of(call))
            while result is not None and type(result) not in PLAIN_TYPES and isawaitable(result):
                result = await result
        finally:
            running.call = None
        return result


def in_worker_thread(
    function: Callable[_P, _T], *, abandon_on_cancel: bool = False
) -> Callable[_P, Awaitable[_T]]:
    """Wrap a blocking function so an async interpreter runs it in a worker thread.

    The event loop stays free while it runs, and `fsaga.context.current_context()` still works
    inside it. A thread cannot be interrupted: when a deadline or a cancellation arrives, the
    interpreter waits for the function to return (default), or, with
    ``abandon_on_cancel=True``, stops waiting and leaves it running; either way the attempt's
    outcome is unknown (DESIGN rule 3).

    >>> import anyio, time
    >>> from fsaga import step
    >>> slow_write = step(in_worker_thread(lambda: time.sleep(0.001) or "written"))
    >>> anyio.run(AsyncInterpreter().run_saga, slow_write)
    Success(value='written')
    """
    if not callable(function):
        raise TypeError(f"in_worker_thread needs a callable, got {function!r}")

    async def run_in_worker_thread(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await anyio.to_thread.run_sync(
            partial(function, *args, **kwargs), abandon_on_cancel=abandon_on_cancel
        )

    run_in_worker_thread.__name__ = getattr(function, "__name__", "run_in_worker_thread")
    run_in_worker_thread.__qualname__ = getattr(function, "__qualname__", "run_in_worker_thread")
    return run_in_worker_thread


def _note(outcome: Outcome[object]) -> str:
    if isinstance(outcome, Success):
        return "every step had completed"
    return describe_failure(outcome)
