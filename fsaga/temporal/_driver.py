"""The Temporal driver of fsaga's one engine: it performs the engine's calls inside a workflow.
Private to `fsaga.temporal` (the workflow of `fsaga.temporal.worker` runs it).

The engine (`fsaga.interpreter._engine`) decides everything about a run and performs nothing;
this driver performs what it asks with Temporal's deterministic primitives, as the async
interpreter does with anyio's:

- each action, compensation and ``on_unknown`` call is one activity execution, with Temporal's
  own retries off (one attempt): retries are the engine's decision, as everywhere;
- each wait before a retry is a durable timer;
- the calls the engine has ready at once (the branches of a `par`) run concurrently, one
  workflow task each;
- a call's deadline (the step's timeout, a sub-tree's or the run's) is its activity's
  schedule-to-close timeout, or ends its timer early; the engine's clock is the workflow's;
- an activity that times out otherwise (its heartbeat stopped: the worker running it died; or the
  run's ``activity_timeout`` passed) has an unknown outcome, settled by contract rule 3;
- cancelling the workflow stops forward work: the activities in flight are asked to stop (an
  activity hears it at its next heartbeat) and waited for; one that stopped has an unknown
  outcome, one that completed all the same is compensated with its result. Then everything
  completed is compensated, shielded (a compensation is never cut short), and the cancellation
  ends the workflow (contract rule 8). Waiting for the activities to confirm also keeps a
  cancelled activity from reporting to a workflow that has already closed.

Everything the engine is told comes from the workflow's history in the order Temporal delivers
it, so a replay (a new worker taking over, a query, `temporalio.worker.Replayer`) makes the same
calls in the same order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final, final

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutType
from temporalio.exceptions import (
    CancelledError as ActivityCancelledError,
)
from temporalio.exceptions import TimeoutError as ActivityTimeoutError
from temporalio.workflow import ActivityCancellationType

from fsaga._signatures import function_name
from fsaga.errors import UnknownOutcomeError
from fsaga.interpreter._call import ACTION, COMPENSATION, NO_DEADLINE, SLEEP, Call
from fsaga.interpreter._engine import Engine
from fsaga.temporal._wire import RunOptions, decode, header, hints_of, revived
from fsaga.temporal.activities import Activity

__all__ = ["NotAnActivityError", "WorkflowRun"]

_ONE_ATTEMPT: Final = RetryPolicy(maximum_attempts=1)

_DEADLINE_TIMEOUTS: Final = frozenset({TimeoutType.SCHEDULE_TO_CLOSE, TimeoutType.START_TO_CLOSE})

_FORWARD: Final = frozenset({"attempt", "after-unknown", "wait"})
"""The stages of forward work: what a cancellation of the workflow cuts short."""


class NotAnActivityError(TypeError):
    """A step's effect is not an `fsaga.temporal.activity`, so it cannot run on Temporal."""


@final
class WorkflowRun:
    """One saga run driven inside a workflow; `drive` returns once the engine has its outcome,
    and raises the workflow's cancellation after compensating if there was one."""

    __slots__ = (
        "_bug",
        "_by_sibling",
        "_cut",
        "_failures_seen",
        "_running",
        "_tasks",
        "engine",
        "interruption",
        "options",
    )

    def __init__(self, engine: Engine[Any], options: RunOptions) -> None:
        self.engine = engine
        self.options = options
        self.interruption: BaseException | None = None
        """The workflow's cancellation, once it came: raised once the undo is done."""
        self._running = 0
        # The tasks running calls: the event loop keeps only weak references to tasks.
        self._tasks: set[asyncio.Task[None]] = set()
        self._bug: BaseException | None = None
        # Forward calls in flight, each with how to cut it short (a cancellation of the
        # workflow, or of a failed sibling branch under on_branch_failure="cancel").
        self._cut: dict[Call, Callable[[], object]] = {}
        self._by_sibling: set[Call] = set()
        self._failures_seen = 0

    async def drive(self) -> None:
        """Perform the engine's calls until the run has its outcome."""
        self._spawn(None)
        try:
            await workflow.wait_condition(self._settled)
        except asyncio.CancelledError as cancellation:
            # Cancelled from outside: forward work stops, the undo begins (rule 8).
            self.interruption = cancellation
            self.engine.interrupt(None, cancellation)
            for cut in list(self._cut.values()):
                cut()
            self._spawn(None)
            while not self._settled():
                try:
                    await workflow.wait_condition(self._settled)
                except asyncio.CancelledError:
                    continue  # the undo is not cut short by a cancellation
        if self._bug is not None:
            raise self._bug

    def _settled(self) -> bool:
        if self._bug is not None:
            return self._running == 0
        return self._running == 0 and (self.engine.finished or self._stuck())

    def _stuck(self) -> bool:
        """Nothing runs and the engine is not done: only a bug in this driver does that."""
        self._bug = RuntimeError(f"fsaga: the engine of saga {self.engine.saga_id} is stuck")
        return True

    def _spawn(self, call: Call | None) -> None:
        """Start a task for `call`, if any, and one for every further call ready now."""
        engine = self.engine
        while True:
            if call is not None:
                self._running += 1
                task = asyncio.get_running_loop().create_task(self._chain(call))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            call = engine.poll()
            if call is None:
                return

    async def _chain(self, call: Call | None) -> None:
        """A task: perform `call` and whatever follows it directly, then start what the engine
        has ready."""
        try:
            while call is not None:
                call = await self._perform(call)
                self._spawn(None)
                if self.engine.branch_failures != self._failures_seen:
                    self._failures_seen = self.engine.branch_failures
                    self._cancel_doomed()
        except BaseException as bug:
            # The engine's own errors and this driver's are bugs: they fail the workflow task.
            if self._bug is None:
                self._bug = bug
        finally:
            self._running -= 1

    def _cancel_doomed(self) -> None:
        """Cut short the calls in flight whose `par` has a failed branch (under
        ``on_branch_failure="cancel"``)."""
        engine = self.engine
        if not engine.cancels_siblings:
            return
        for call, cut in list(self._cut.items()):
            if call not in self._by_sibling and engine.should_cancel(call):
                self._by_sibling.add(call)
                cut()

    def _cut_short(self, call: Call) -> bool:
        return self.interruption is not None or call in self._by_sibling

    def _report_cut(self, call: Call, *, started: bool) -> Call | None:
        """Report `call` as cut short by the workflow's cancellation or a sibling's failure."""
        if call in self._by_sibling:
            self._by_sibling.discard(call)
            return self.engine.cancel(call)
        interruption = self.interruption
        assert interruption is not None
        self.engine.interrupt(call, interruption, started=started)
        return None

    async def _perform(self, call: Call) -> Call | None:
        """Perform `call`, report it, and return the call that follows directly."""
        forward = call.stage in _FORWARD
        if forward and self._cut_short(call):
            return self._report_cut(call, started=False)
        if call.kind is SLEEP:
            return await self._wait(call, forward=forward)
        return await self._run_activity(call, forward=forward)

    async def _wait(self, call: Call, *, forward: bool) -> Call | None:
        """The wait before a retry: a durable timer, ended early by the call's deadline (or, in
        forward work, by a cancellation)."""
        engine = self.engine
        delay = call.delay
        expires = False
        if call.deadline != NO_DEADLINE:
            remaining = call.deadline - workflow.time()
            if remaining < delay:
                delay, expires = remaining, True
        if delay > 0:
            if forward:
                self._cut[call] = _nothing
                cut = True
                try:
                    await workflow.wait_condition(
                        lambda: self._cut_short(call), timeout=timedelta(seconds=delay)
                    )
                except TimeoutError:
                    cut = False
                finally:
                    del self._cut[call]
                if cut:
                    return self._report_cut(call, started=True)
            else:
                await workflow.sleep(delay)
        return engine.expire(call) if expires else engine.succeed(call, None)

    async def _run_activity(self, call: Call, *, forward: bool) -> Call | None:
        """One attempt of an action or a compensation, as one activity execution."""
        engine = self.engine
        effect, arguments = _effect_of(call)
        if not isinstance(effect, Activity):
            return engine.fail(call, _not_an_activity(call, effect))
        context = engine.context_of(call)
        converter = workflow.payload_converter()
        try:
            payloads = [
                RawValue(converter.to_payload(value))
                for value in (header(context), *effect.args, *arguments)
            ]
        except Exception as error:
            return engine.fail(
                call,
                TypeError(
                    f"step {call.path!r}: the arguments of activity {effect.activity_name} "
                    f"cannot be encoded by the workflow's payload converter: {error}"
                ),
            )
        options = self.options
        deadline = call.deadline
        schedule_to_close = None
        start_to_close = None
        if deadline != NO_DEADLINE:
            remaining = deadline - workflow.time()
            if remaining <= 0:
                return engine.expire(call)
            schedule_to_close = timedelta(seconds=remaining)
        else:
            start_to_close = timedelta(seconds=options.activity_timeout)
        heartbeat = options.heartbeat_timeout
        handle = workflow.start_activity(
            effect.activity_name,
            args=payloads,
            result_type=RawValue,
            schedule_to_close_timeout=schedule_to_close,
            start_to_close_timeout=start_to_close,
            heartbeat_timeout=None if heartbeat is None else timedelta(seconds=heartbeat),
            retry_policy=_ONE_ATTEMPT,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            activity_id=f"{call.path}:{context.kind}:{call.attempt}",
            summary=f"{call.path} ({context.kind}, attempt {call.attempt})",
        )
        if forward:
            self._cut[call] = handle.cancel
        try:
            raw = await handle
        except ActivityError as failure:
            return self._activity_failed(call, effect, failure, forward=forward)
        except asyncio.CancelledError:
            if forward and self._cut_short(call):
                return self._report_cut(call, started=True)
            raise
        finally:
            if forward:
                self._cut.pop(call, None)
        if call.kind is not ACTION:
            return engine.succeed(call, None)  # a compensation's result means nothing
        _, hint = hints_of(effect.func)
        try:
            result = decode(converter, raw.payload, hint)
        except Exception as error:
            return engine.fail(
                call,
                UnknownOutcomeError(
                    f"step {call.path!r}: the result of activity {effect.activity_name} cannot "
                    f"be decoded as {getattr(hint, '__name__', hint)}: {error}"
                ),
            )
        return engine.succeed(call, result)

    def _activity_failed(
        self, call: Call, effect: Activity[object], failure: ActivityError, *, forward: bool
    ) -> Call | None:
        engine = self.engine
        cause = failure.cause
        if isinstance(cause, ActivityCancelledError) and forward and self._cut_short(call):
            return self._report_cut(call, started=True)
        if isinstance(cause, ApplicationError):
            return engine.fail(call, revived(cause))
        if isinstance(cause, ActivityTimeoutError):
            if call.deadline != NO_DEADLINE and cause.type in _DEADLINE_TIMEOUTS:
                # The engine's deadline, the activity's schedule-to-close timeout (which the
                # server also makes its start-to-close one): rule 7.
                return engine.expire(call)
            if cause.type == TimeoutType.HEARTBEAT:
                what = "stopped heartbeating (the worker running it may be lost)"
            elif cause.type == TimeoutType.START_TO_CLOSE:
                what = f"ran past the run's activity_timeout of {self.options.activity_timeout} s"
            else:
                what = f"timed out ({cause.type})"
            return engine.fail(
                call,
                UnknownOutcomeError(
                    f"step {call.path!r}: activity {effect.activity_name}, attempt "
                    f"{call.attempt}, {what}: its outcome is unknown"
                ),
            )
        return engine.fail(
            call,
            UnknownOutcomeError(
                f"step {call.path!r}: activity {effect.activity_name}, attempt {call.attempt}, "
                f"ended without a result: {failure.message or cause!r}"
            ),
        )


def _effect_of(call: Call) -> tuple[object, tuple[object, ...]]:
    """The effect `call` stands for, and the arguments the step passes it (besides its own)."""
    node = call.node
    if call.kind is ACTION:
        return node.action, ()
    if call.kind is COMPENSATION:
        return node.compensate, (call.argument,)
    # An `on_unknown` compensation: the activity adds the step's context itself.
    return node.on_unknown, ()


_WHAT: Final = {
    "action": "action",
    "compensation": "compensation",
    "unknown": "on_unknown compensation",
}


def _not_an_activity(call: Call, effect: object) -> NotAnActivityError:
    what = _WHAT[call.kind]
    return NotAnActivityError(
        f"step {call.path!r}: its {what} {function_name(effect)} is not an "
        "fsaga.temporal.activity: on Temporal every effect runs as an activity; write it as "
        "activity(function, *args), with a module-level function registered with "
        "fsaga.temporal.worker(..., activities=[...])"
    )


def _nothing() -> None:
    """A wait in flight is cut short by its condition, not by a call."""
