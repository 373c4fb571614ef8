"""The async interpreter: real concurrency, deadlines and cancellation, on anyio.

It drives the same `Engine` as the sync interpreter; only how an effect is performed differs.
While a saga runs one step at a time it performs each effect inline in the awaiting task, which
keeps the per-step cost close to a hand-written loop. When the engine has several calls ready
(a `par`), it opens a task group and gives each its own task until nothing is in flight.

Every attempt runs under a cancel scope whose deadline is the engine's (the step's own timeout,
an enclosing ``saga.timeout(...)``, or the run's), measured on anyio's clock so a test's mock
clock moves them. Compensations run shielded from the deadline that failed the run and from
outside cancellation; each has only its own ``compensation_timeout``.

An interruption (the caller's cancellation, a ``KeyboardInterrupt``, a cancellation raised inside
an effect) stops forward work at once, in every `par` branch; during the undo it fails only the
compensation it hit, never one running beside it. The first one propagates, as itself, once the
undo is done (contract rule 8).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from inspect import isawaitable
from types import CoroutineType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, final

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from fsaga.context import _running_effect
from fsaga.events import Listener
from fsaga.interpreter._call import (
    ACTION,
    COMPENSATION,
    NO_DEADLINE,
    STRETCH,
    UNDO_STRETCH,
    Call,
)
from fsaga.interpreter._effects import in_scopes_async, start_effect
from fsaga.interpreter._engine import (
    BranchFailurePolicy,
    CompensationPolicy,
    Engine,
    EngineSettings,
)
from fsaga.interpreter._plan import Straight, Stretch
from fsaga.interpreter.results import PLAIN_TYPES
from fsaga.outcome import Failure, Outcome, Success, describe_failure
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
            they have in flight (those steps' outcomes become unknown, contract rule 3).
        concurrent_compensation: undo independent `par` branches concurrently, in reverse
            causal order, instead of one step at a time in reverse completion order.
        concurrent_branches: run `par` branches concurrently (default); ``False`` runs them one
            after another in the order `SyncInterpreter` does, so the order of effects is the
            same in every run.
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

    __slots__ = ("_concurrent", "_perform", "_settings", "_sleep")

    def __init__(
        self,
        *,
        listeners: Iterable[Listener] = (),
        perform: Perform | None = None,
        timeout: float | None = None,
        on_branch_failure: BranchFailurePolicy = "settle",
        concurrent_compensation: bool = False,
        concurrent_branches: bool = True,
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
        if not isinstance(concurrent_branches, bool):
            raise TypeError(
                f"AsyncInterpreter: concurrent_branches must be a bool, got {concurrent_branches!r}"
            )
        self._concurrent = concurrent_branches
        self._perform = perform
        self._sleep = sleep

    async def run_saga(self, saga: Saga[_T], /, *, saga_id: str | None = None) -> Outcome[_T]:
        """Run `saga` to its outcome (`Saga.run` calls this)."""
        if self._perform is None:
            stretch = Engine.straight(saga, self._settings, "async")
            if stretch is not None:
                return await self._run_straight(saga, stretch, saga_id)
        engine = Engine(
            saga,
            self._settings,
            saga_id=saga_id,
            stretches="async" if self._perform is None else None,
        )
        run = _Run(engine, self._perform, self._sleep, concurrent=self._concurrent)
        await run.drive()
        return _finish(run)

    async def _run_straight(
        self, saga: Saga[_T], stretch: Stretch, saga_id: str | None
    ) -> Outcome[_T]:
        """Run `saga`, which is all one stretch (`Engine.straight`), calling its actions before
        any engine is made, as `_Run.perform_stretch` would; make the engine when something
        happens that it must decide (a step raises, returns anything else, or is interrupted),
        report it what happened so far, and drive the run from there."""
        straight = Straight(stretch, saga_id)
        results = straight.results
        append = results.append
        result: object = None
        unchecked = False
        started = False
        order: list[int] | None = None
        failed: list[Exception] = []
        run: _Run | None
        token = _running_effect.set((straight, straight, ACTION, 1))
        try:
            for action in stretch.actions:
                if unchecked:
                    # A cancellation may be waiting to be noticed: before the step starts.
                    started = False
                    await anyio.lowlevel.checkpoint_if_cancelled()
                started = True
                result = action()
                if type(result) is CoroutineType:
                    unchecked = False
                    result = await result
                else:
                    unchecked = True
                if result is not None and type(result) not in PLAIN_TYPES:
                    while isawaitable(result):
                        unchecked = False
                        result = await result
                    if result is not None and type(result) not in PLAIN_TYPES:
                        break
                append(result)
            else:
                return Success(result)  # type: ignore[arg-type]  # the last step's result: a _T
        except Exception as error:
            order = Engine.straight_undo(stretch, self._settings, len(results), error)
            if order is not None:
                # A plain failure, undone below (outside this handler). The error goes on in a
                # list, emptied again, never in a variable of this frame: its traceback keeps
                # the frame, which must not keep the error in turn.
                failed.append(error)
                run = None
                follow = None
                forward = False
            else:
                run, call = self._straight_run(saga, straight)
                follow = run.engine.fail(call, error)
                forward = True
        except BaseException as interruption:
            run, call = self._straight_run(saga, straight)
            run.engine.interrupt(call, interruption, started=started)
            run.interrupted(interruption)
            follow = None
            forward = False
        else:
            run, call = self._straight_run(saga, straight)
            follow = run.engine.succeed(call, result)
            forward = True
        finally:
            _running_effect.reset(token)
        if run is None:
            assert order is not None
            return await self._undo_straight(saga, straight, order, failed.pop())
        await run.drive(follow, unchecked=unchecked, forward=forward)
        return _finish(run)

    async def _undo_straight(
        self, saga: Saga[_T], straight: Straight, order: list[int], error: Exception
    ) -> Outcome[_T]:
        """The plain failure of a straight run: compensate the steps in `order` (newest first),
        shielded from cancellation as the undo always is, then let a cancellation that came
        meanwhile propagate; make the engine only if a compensation does anything but return
        a plain value (or is interrupted), and finish the undo with it."""
        stretch = straight.stretch
        nodes = stretch.nodes
        results = straight.results
        straight.undo_order = order
        undone = straight.undone
        append = undone.append
        result: object = None
        failed: list[Exception] = []
        stopped: list[BaseException] = []
        token = _running_effect.set((straight, straight, COMPENSATION, 1))
        try:
            # Compensations that return at once cannot be cancelled (nothing is awaited): the
            # shield, costly to set up, is raised at the first one that must be awaited.
            remaining = iter(order)
            awaiting: object = None
            for index in remaining:
                compensate = nodes[index].compensate
                assert compensate is not None
                result = compensate(results[index])
                if result is not None and type(result) not in PLAIN_TYPES:
                    if isawaitable(result):
                        awaiting = result
                    break
                append(result)
            if awaiting is not None:
                with anyio.CancelScope(shield=True):
                    result = await _settled(awaiting)
                    awaiting = None
                    if result is None or type(result) in PLAIN_TYPES:
                        append(result)
                        for index in remaining:
                            compensate = nodes[index].compensate
                            assert compensate is not None
                            result = await _settled(compensate(results[index]))
                            if result is not None and type(result) not in PLAIN_TYPES:
                                break
                            append(result)
        except Exception as raised:
            failed.append(raised)
        except BaseException as raised:
            stopped.append(raised)
        finally:
            _running_effect.reset(token)
        if not failed and not stopped and len(undone) == len(order):
            labels = stretch.local().labels
            outcome = Failure(error, tuple([labels[index] for index in order]))
            try:
                await anyio.lowlevel.checkpoint_if_cancelled()
            except BaseException as interruption:
                # Cancelled meanwhile: the undo is done; now let it propagate (rule 8).
                note = f"fsaga: saga {straight.saga_id} interrupted; {_note(outcome)}"
                interruption.add_note(note)
                raise
            return outcome
        run, call = self._straight_run(saga, straight)
        engine = run.engine
        follows = engine.fail(call, error)
        assert follows is None  # the plain failure: the undo starts
        call = engine.straight_undo_call(order, undone)
        first: Call | None = None
        if failed:
            first = engine.fail(call, failed.pop())
        elif stopped:
            engine.interrupt(call, stopped[0])
            run.interrupted(stopped.pop())
        else:
            first = engine.succeed(call, result)
        await run.finish_undo(first)
        return _finish(run)

    def _straight_run(self, saga: Saga[_T], straight: Straight) -> tuple[_Run, Call]:
        engine, call = Engine.straight_engine(
            saga,
            self._settings,
            saga_id=straight.given_id,
            stretches="async",
            results=straight.results,
        )
        return _Run(engine, self._perform, self._sleep, concurrent=self._concurrent), call


async def _settled(result: object) -> object:
    """`result`, awaited for as long as it is awaitable."""
    while isawaitable(result):
        result = await result
    return result


def _finish(run: _Run) -> Outcome[Any]:
    """The outcome of `run`, once driven; or, if it was interrupted, the interruption raised."""
    engine = run.engine
    interruption = run.interruption
    if interruption is not None:
        # Cancelled from outside, or interrupted: what completed has been undone, out of reach
        # of the interruption; now let it propagate (contract rule 8).
        interruption.add_note(f"fsaga: saga {engine.saga_id} interrupted; {_note(engine.outcome)}")
        raise interruption
    # Straight out, never held in a variable of a driver's frame: an error in the outcome keeps
    # the frames it passed through (see `Engine.take_outcome`).
    return engine.take_outcome()


@final
class _Run:
    """One run's driver: performs the engine's calls, inline or in a task group."""

    __slots__ = (
        "cancelled",
        "cancels",
        "concurrent",
        "engine",
        "failures_seen",
        "group",
        "interruption",
        "perform",
        "scopes",
        "sleep",
        "until_undo",
    )

    def __init__(
        self,
        engine: Engine[Any],
        perform: Perform | None,
        sleep: Callable[[float], Awaitable[object]],
        *,
        concurrent: bool,
    ) -> None:
        self.engine = engine
        self.concurrent = concurrent
        # Through the listeners' effect scopes, if any (`fsaga.events.EffectScope`): entered in
        # the task that performs the effect, left once its result has been awaited.
        scopes = engine.effect_scopes
        self.perform = perform if not scopes else in_scopes_async(scopes, perform)
        self.sleep = sleep
        self.group: TaskGroup | None = None
        # Whether siblings of a failed branch are cancelled; if so, the calls in flight in the
        # task group with their cancel scopes, and those cancelled for that reason.
        self.cancels = engine.cancels_siblings
        self.scopes: dict[Call, anyio.CancelScope] = {}
        self.cancelled: set[Call] = set()
        self.failures_seen = 0
        self.until_undo = True
        self.interruption: BaseException | None = None
        """The run's first interruption (cancellation, ``KeyboardInterrupt``...): raised once
        the undo is done; any later one only ends the call it cut short."""

    async def drive(
        self, first: Call | None = None, *, unchecked: bool = False, forward: bool = True
    ) -> None:
        """Perform calls until the run has its outcome, from `first` on if given (a call the
        engine returned from a report; `unchecked`: whether the action before it never yielded
        to the event loop), or from the undo if an interruption ended `forward` work already.

        Forward work is open to cancellation; once the run fails, the undo runs shielded from
        the deadline or cancellation that failed it (each compensation bound by its own
        timeout only), and a cancellation that arrived meanwhile is kept to be raised once it
        is done.
        """
        engine = self.engine
        if forward:
            try:
                await self.perform_calls(until_undo=True, first=first, unchecked=unchecked)
            except Exception:
                raise  # the engine's own errors are bugs, never a step's failure
            except BaseException as interruption:
                # Every call in flight has been reported; if it landed between calls, this
                # tells the engine, which stops forward work and starts the undo.
                self.interrupted(interruption)
        if engine.finished:
            return
        await self.finish_undo(None)

    async def finish_undo(self, first: Call | None) -> None:
        """Perform the undo, from `first` on if given, shielded from the deadline or
        cancellation that failed the run; then keep a cancellation that arrived meanwhile, to be
        raised once it is done."""
        with anyio.CancelScope(shield=True):
            await self.undo(first)
        if self.interruption is None:
            try:
                await anyio.lowlevel.checkpoint_if_cancelled()
            except BaseException as interruption:
                self.interruption = interruption

    async def undo(self, first: Call | None = None) -> None:
        """Perform the undo's calls to the end, from `first` on if given. An interruption
        during one of them ends only that one (it has failed for good), never the others: the
        rest still run, each to its own end, as the compensation policy says (contract rule
        8)."""
        while True:
            try:
                await self.perform_calls(until_undo=False, first=first)
            except Exception:
                raise
            except BaseException as interruption:
                self.interrupted(interruption)
                first = None
            else:
                return

    def interrupted(self, interruption: BaseException) -> None:
        """Keep the run's first interruption, and make sure the engine knows that forward work
        is over (the call it cut short, if any, has been reported already)."""
        if self.interruption is None:
            self.interruption = interruption
        self.engine.interrupt(None, interruption)

    async def perform_calls(
        self, *, until_undo: bool, first: Call | None = None, unchecked: bool = False
    ) -> None:
        """Perform the engine's calls until it has none (or, with `until_undo`, until the run
        starts to fail): one at a time, inline, while the engine has one call ready; a task
        per call, in a task group, while it has several."""
        engine = self.engine
        self.until_undo = until_undo
        direct = self.perform is None
        # `unchecked`: whether the last action was a plain function: it never yielded to the
        # event loop, so a cancellation may be waiting to be noticed before the next one starts.
        call = first or self.next_call()
        while call is not None:
            more = (
                None
                if not self.concurrent or (until_undo and engine.compensating)
                else self.poll_beside(call)
            )
            if more is not None:
                await self.fan_out(call, more)
                call = self.next_call()
            elif direct and call.kind is ACTION and call.deadline == NO_DEADLINE:
                # The common case, kept free of further coroutine layers: an action without a
                # deadline, called directly.
                if unchecked:
                    try:
                        await anyio.lowlevel.checkpoint_if_cancelled()
                    except BaseException as interruption:
                        engine.interrupt(call, interruption, started=False)
                        raise
                token = _running_effect.set((engine, call, ACTION, call.attempt))
                try:
                    result = call.node.action()
                    if type(result) is CoroutineType:
                        unchecked = False
                        result = await result
                    else:
                        unchecked = True
                    if result is not None and type(result) not in PLAIN_TYPES:
                        while isawaitable(result):
                            unchecked = False
                            result = await result
                except Exception as error:
                    call = engine.fail(call, error) or self.next_call()
                    continue
                except BaseException as interruption:
                    engine.interrupt(call, interruption)
                    raise
                finally:
                    _running_effect.reset(token)
                call = engine.succeed(call, result) or self.next_call()
            elif call.kind is STRETCH:
                unchecked, follow = await self.perform_stretch(call, unchecked=unchecked)
                call = follow or self.next_call()
            elif call.kind is UNDO_STRETCH:
                unchecked = False
                call = await self.perform_undo_stretch(call) or self.next_call()
            else:
                unchecked = False
                call = await self.perform_call(call) or self.next_call()

    async def perform_undo_stretch(self, call: Call) -> Call | None:
        """Perform the undo-stretch `call` (see `Call`), report it, and return the call that
        follows directly. It runs in the shielded undo, so nothing cancels it midway."""
        engine = self.engine
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
                    while isawaitable(result):
                        result = await result
                    if result is not None and type(result) not in PLAIN_TYPES:
                        break
                append(result)
        except Exception as error:
            return engine.fail(call, error)
        except BaseException as interruption:
            engine.interrupt(call, interruption)
            raise
        finally:
            _running_effect.reset(token)
        return engine.succeed(call, result)

    async def perform_stretch(self, call: Call, *, unchecked: bool) -> tuple[bool, Call | None]:
        """Perform the stretch `call` inline (see `Call`), report it, and return whether the
        last action never yielded to the event loop, and the call that follows directly."""
        engine = self.engine
        run = call.stretch
        assert run is not None
        append = run.results.append
        result: object = None
        started = False
        # One context for the whole stretch: `current_context()` reads the step running now.
        token = _running_effect.set((engine, call, ACTION, 1))
        try:
            for action in run.actions:
                if unchecked:
                    # A cancellation may be waiting to be noticed: before the step starts.
                    started = False
                    await anyio.lowlevel.checkpoint_if_cancelled()
                started = True
                result = action()
                if type(result) is CoroutineType:
                    unchecked = False
                    result = await result
                else:
                    unchecked = True
                if result is not None and type(result) not in PLAIN_TYPES:
                    while isawaitable(result):
                        unchecked = False
                        result = await result
                    if result is not None and type(result) not in PLAIN_TYPES:
                        break
                append(result)
        except Exception as error:
            return unchecked, engine.fail(call, error)
        except BaseException as interruption:
            engine.interrupt(call, interruption, started=started)
            raise
        finally:
            _running_effect.reset(token)
        return unchecked, engine.succeed(call, result)

    def poll_beside(self, call: Call) -> Call | None:
        """Another call to perform beside `call`, if the engine has one ready now.

        A listener may interrupt as that call starts (the engine settles it): in forward work
        `call` then never starts; in the undo it still runs, like every other compensation.
        """
        while True:
            try:
                return self.engine.poll()
            except Exception:
                raise
            except BaseException as interruption:
                if self.until_undo:
                    self.engine.interrupt(call, interruption, started=False)
                    raise
                self.interrupted(interruption)

    def next_call(self) -> Call | None:
        """The engine's next call, unless the run has started to fail and the undo is for the
        shielded pass (a report that starts the undo never returns an undo call directly)."""
        engine = self.engine
        if self.until_undo and engine.compensating:
            return None
        return engine.poll()

    async def fan_out(self, first: Call, second: Call) -> None:
        """Run every call the engine hands out, a task each, until none is in flight.

        No interruption escapes a task: the first is kept for `drive` to raise as it is (never
        wrapped in an exception group, never lost with its task), and the engine is told. In
        forward work it also cancels the group, so the calls in flight stop at once; in the
        undo it cancels nothing, and every other compensation runs to its end.
        """
        async with anyio.create_task_group() as group:
            self.group = group
            group.start_soon(self.chain, first)
            self.spawn(second)
        self.group = None

    def spawn(self, call: Call | None) -> None:
        """Start a task for `call` (if any), then one for each further call the engine has
        ready now."""
        group = self.group
        assert group is not None
        while True:
            if call is not None:
                group.start_soon(self.chain, call)
                call = None
            try:
                call = self.next_call()
            except Exception:
                raise
            except BaseException as interruption:
                # A listener interrupted as a call started; the engine settled that call.
                self.interrupted_in_group(interruption)
                continue
            if call is None:
                return

    def interrupted_in_group(self, interruption: BaseException) -> None:
        """An interruption reached a task of the group (the call it cut short is reported): keep
        it, and in forward work stop the other tasks' calls at once."""
        self.interrupted(interruption)
        group = self.group
        if self.until_undo and group is not None:
            group.cancel_scope.cancel()

    async def chain(self, call: Call | None) -> None:
        """A task of the group: perform `call` and whatever follows it directly."""
        assert call is not None
        engine = self.engine
        try:
            # A task started in a group already cancelled must not begin its effect at all.
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException as interruption:
            engine.interrupt(call, interruption, started=False)
            self.interrupted_in_group(interruption)
            return
        try:
            while call is not None:
                call = await self.perform_call(call, track=self.cancels)
                self.spawn(None)
                if self.cancels and engine.branch_failures != self.failures_seen:
                    self.failures_seen = engine.branch_failures
                    self.cancel_doomed()
        except Exception:
            raise
        except BaseException as interruption:
            self.interrupted_in_group(interruption)

    def cancel_doomed(self) -> None:
        """Cancel the calls in flight whose `par` has a failed branch."""
        engine = self.engine
        for call, scope in self.scopes.items():
            if call not in self.cancelled and engine.should_cancel(call):
                self.cancelled.add(call)
                scope.cancel()

    async def perform_call(self, call: Call, *, track: bool = False) -> Call | None:
        """Perform `call`, report it to the engine, and return the call that follows directly."""
        engine = self.engine
        if call.kind is STRETCH:
            # A `par` just joined in this task: the stretch after it is all that runs now.
            return (await self.perform_stretch(call, unchecked=False))[1]
        if call.kind is UNDO_STRETCH:
            return await self.perform_undo_stretch(call)
        if call.deadline == NO_DEADLINE and not track:
            try:
                result = await self.invoke(call)
            except Exception as error:
                return engine.fail(call, error)
            except BaseException as interruption:
                engine.interrupt(call, interruption)
                raise
            return engine.succeed(call, result)
        # What the effect raised, kept in a list that is empty again once it is reported: the
        # error's traceback keeps this frame, which must not keep the error in turn.
        failure: list[Exception] = []
        result = None
        try:
            with anyio.CancelScope(deadline=call.deadline) as scope:
                if track:
                    self.scopes[call] = scope
                try:
                    result = await self.invoke(call)
                except Exception as raised:
                    failure.append(raised)
        except BaseException as interruption:
            engine.interrupt(call, interruption)
            raise
        finally:
            self.scopes.pop(call, None)
            # The mark goes with this attempt: the engine may hand the same `Call` out again
            # (a completed step's record becomes its compensation), and that one's timeout is
            # its own, not a sibling's failure.
            by_sibling = call in self.cancelled
            self.cancelled.discard(call)
        if scope.cancelled_caught:
            return engine.cancel(call) if by_sibling else engine.expire(call)
        if failure:
            return engine.fail(call, failure.pop())
        return engine.succeed(call, result)

    async def invoke(self, call: Call) -> object:
        """Perform the effect `call` stands for and return its result, awaited."""
        kind = call.kind
        if kind == "sleep":
            await self.sleep(call.delay)
            return None
        assert kind != "stretch", "a stretch is performed by perform_stretch"
        assert kind != "undo-stretch", "an undo stretch is performed by perform_undo_stretch"
        engine = self.engine
        perform = self.perform
        token = _running_effect.set((engine, call, kind, call.attempt))
        try:
            result = start_effect(engine, call, perform)
            while result is not None and type(result) not in PLAIN_TYPES and isawaitable(result):
                result = await result
        finally:
            _running_effect.reset(token)
        return result


def in_worker_thread(
    function: Callable[_P, _T], *, abandon_on_cancel: bool = False
) -> Callable[_P, Awaitable[_T]]:
    """Wrap a blocking function so an async interpreter runs it in a worker thread.

    The event loop stays free while it runs, and `fsaga.context.current_context()` still works
    inside it. A thread cannot be interrupted: when a deadline or a cancellation arrives, the
    interpreter by default waits for the function to return, and its result counts (the step
    completed, late); with ``abandon_on_cancel=True`` it stops waiting and leaves the thread
    running, and the attempt's outcome is unknown (contract rule 3).

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
