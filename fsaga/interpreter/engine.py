"""The engine: the contract of a run (docs/concepts.md), written once for every interpreter.

The engine is a state machine that performs nothing itself. A driver (the sync interpreter, the
async one, a user's own) repeatedly asks it for the next `Call` with `poll()`, performs that call
however it likes, and reports back with `succeed`, `fail`, `expire` (the call's deadline
passed), `cancel` (a sibling branch failed) or `interrupt`. The engine decides everything else:
which step runs next, what a bind continuation sees, when to retry and how long to wait, which
deadline binds each attempt, what an unknown outcome becomes, when to stop and compensate, in
which order, and what the outcome is.

Walking the tree uses explicit stacks (one per fiber of control), never Python recursion, so a
saga of any depth runs in constant Python stack.

Fibers: the root of the saga runs in one fiber; `par` forks a fiber per branch and joins them.
`poll()` hands out work depth-first (a forked branch runs until it has to wait before the next
one starts), which is what a driver that performs one call at a time wants; a concurrent driver
calls `poll()` until it returns ``None`` to collect every call that can run now.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, Final, final

from fsaga.context import StepContext
from fsaga.errors import (
    BranchCancelledError,
    DuplicateStepNameError,
    NonRetryableError,
    ResultRejectedError,
    StepTimeoutError,
    UnknownOutcomeError,
)
from fsaga.events import (
    CompensationCompleted,
    CompensationFailed,
    CompensationRetrying,
    CompensationStarted,
    Event,
    SagaFinished,
    SagaStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
)
from fsaga.interpreter._fibers import (
    Deadline,
    DeadlineExit,
    Fiber,
    Join,
    Scope,
    ScopeExit,
    stopping,
)
from fsaga.interpreter._undo import CausalOrder, Undo
from fsaga.interpreter.call import ACTION, COMPENSATION, NO_DEADLINE, SLEEP, UNKNOWN, Call
from fsaga.interpreter.protocol import Effect
from fsaga.interpreter.results import PLAIN_TYPES, unwrap_result
from fsaga.interpreter.settings import BranchFailurePolicy as BranchFailurePolicy
from fsaga.interpreter.settings import CompensationPolicy as CompensationPolicy
from fsaga.interpreter.settings import EngineSettings as EngineSettings
from fsaga.outcome import CompensationFailure, Failure, Outcome, PartialFailure, Success
from fsaga.policy import Retry
from fsaga.saga import (
    BindNode,
    MapContinuation,
    NamedNode,
    ParNode,
    PureNode,
    Saga,
    StepNode,
    TimeoutNode,
    sibling_name,
)

__all__ = ["BranchFailurePolicy", "CompensationPolicy", "Engine", "EngineSettings"]

# The settings live in their own module; they are re-exported here, where drivers look first.

logger = logging.getLogger(__name__)

_FORWARD: Final = 0
_COMPENSATING: Final = 1
_DONE: Final = 2

# Marks an undo-log record whose action's outcome is unknown (it holds no result).
_UNKNOWN_RESULT: Final = object()
# Marks an action run again during the undo to learn the result of an unknown outcome.
_RESOLVING: Final = object()
# Marks the retry of an idempotent step whose previous attempt's outcome is unknown: if the
# retry cannot happen, that outcome stays unknown.
_AFTER_UNKNOWN: Final = object()
# How an idempotent step without a retry policy retries an unknown outcome: once, at once.
_ONE_MORE: Final = Retry(2, delay=0.0, jitter=0.0)


@final
class Engine:
    """The state of one run of one saga; see the module docstring for the protocol."""

    __slots__ = (
        "_completed",
        "_debug",
        "_forks",
        "_handed_over",
        "_in_flight",
        "_listeners",
        "_order",
        "_outcome",
        "_phase",
        "_ready",
        "_runnable",
        "_saga_id",
        "_settings",
        "_undo",
        "branch_failures",
        "compensating",
    )

    def __init__(
        self, saga: Saga[object], settings: EngineSettings, *, saga_id: str | None = None
    ) -> None:
        if not isinstance(saga, Saga):
            raise TypeError(f"an interpreter runs a Saga, got {saga!r}")
        self._saga_id = saga_id
        self._settings = settings
        self._listeners = settings.listeners
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self._phase = _FORWARD
        deadline = None
        if settings.run_timeout is not None:
            seconds = settings.run_timeout
            deadline = Deadline(settings.monotonic() + seconds, seconds, None)
        # Fibers ready to advance, as (fiber, node to start at, value to resume with): a stack,
        # so the most recently readied fiber goes first (depth-first, see the module docstring).
        self._runnable: list[tuple[Fiber, Saga[Any] | None, object]] = [
            (Fiber(Scope(""), None, 0, deadline), saga, None)
        ]
        self._in_flight = 0
        # Calls issued (counted in flight) outside a report that could return them, for the
        # next poll() to hand out: the fallback of a run-again an interrupt cut short.
        self._handed_over: list[Call] = []
        self._forks = 0
        # Completed steps that have a compensation, and steps whose outcome is unknown, in
        # completion order: the undo log.
        self._completed: list[Call] = []
        self._undo: Undo | None = None
        # With concurrent compensation: the causal order, and the records it let start.
        self._order: CausalOrder | None = None
        self._ready: list[Call] = []
        self._outcome: Outcome[object] | None = None
        self.branch_failures = 0
        """How many `par` branches have failed so far (a driver that cancels siblings watches
        it to know when to look for calls to cancel)."""
        self.compensating = False
        """Whether the run has failed and is being undone: what `poll()` hands out now are
        compensations (a driver shields them from the cancellation that failed the run)."""
        if self._listeners:
            self._emit(SagaStarted(self.saga_id, settings.clock()))
        if self._debug:
            logger.debug("saga %s: started", self.saga_id)

    # -- what drivers read ------------------------------------------------------------------

    @property
    def saga_id(self) -> str:
        """The run's id: the one given, or a fresh random one made on first use."""
        if self._saga_id is None:
            import uuid  # here: most runs never need an id, and uuid is slow to import

            self._saga_id = uuid.uuid4().hex
        return self._saga_id

    @property
    def outcome(self) -> Outcome[object]:
        """The outcome, once the run has finished (`poll()` returned ``None``, nothing in
        flight)."""
        if self._outcome is None:
            raise RuntimeError("the run has not finished: poll() until it returns None")
        return self._outcome

    @property
    def finished(self) -> bool:
        """Whether the run has reached its outcome."""
        return self._outcome is not None

    def context_of(self, call: Call) -> StepContext:
        """What the effect `call` performs may know about itself (`fsaga.current_context()`)."""
        kind = call.kind
        if kind == "sleep":
            raise ValueError(f"a wait before a retry has no step context: {call!r}")
        return StepContext(self.saga_id, call.path, call.attempt, kind)

    def effect_of(self, call: Call) -> Effect:
        """The `Effect` a driver hands to a `Perform` function for `call` (not a sleep)."""
        node = call.node
        kind = call.kind
        if kind == "action":
            return Effect("action", self.saga_id, call.path, call.attempt, None, node.action)
        if kind == "compensation":
            compensate = node.compensate
            assert compensate is not None
            return Effect(
                "compensation",
                self.saga_id,
                call.path,
                call.attempt,
                call.argument,
                partial(compensate, call.argument),
            )
        on_unknown = node.on_unknown
        assert on_unknown is not None
        assert kind == "unknown"
        context = self.context_of(call)
        return Effect(
            "unknown", self.saga_id, call.path, call.attempt, context, partial(on_unknown, context)
        )

    @property
    def cancels_siblings(self) -> bool:
        """Whether the driver should cancel the calls in flight on the siblings of a failed
        `par` branch (see `should_cancel`)."""
        return self._settings.on_branch_failure == "cancel"

    def should_cancel(self, call: Call) -> bool:
        """Whether the driver should cancel `call`, in flight: a sibling branch of a `par`
        enclosing it failed and the interpreter cancels siblings (report it with `cancel`)."""
        fiber = call.fiber
        return (
            self._settings.on_branch_failure == "cancel"
            and self._phase == _FORWARD
            and (call.kind is ACTION or call.kind is SLEEP)
            and fiber is not None
            and fiber.join is not None
            and stopping(fiber)
        )

    # -- the protocol -----------------------------------------------------------------------

    def poll(self) -> Call | None:
        """The next call to perform, or ``None`` if nothing can start until a call in flight is
        reported (or the run has finished: see `finished`)."""
        while True:
            if self._phase == _FORWARD:
                if not self._runnable:
                    return None
                fiber, node, value = self._runnable.pop()
                call = self._advance(fiber, node, value)
                if call is not None:
                    return call
            elif self._phase == _COMPENSATING:
                if self._handed_over:
                    return self._handed_over.pop()
                if self._settings.concurrent_compensation:
                    return self._next_concurrent_compensation()
                return None if self._in_flight else self._next_compensation()
            else:
                return None

    def succeed(self, call: Call, result: object) -> Call | None:
        """Report that `call` returned `result` (for a sleep: that the wait is over).

        Returns the call that follows directly (the same fiber's next step, say), if any; the
        driver performs it as if `poll()` had returned it.
        """
        self._in_flight -= 1
        kind = call.kind
        if kind is ACTION:
            if result is not None and type(result) not in PLAIN_TYPES:
                result, error = unwrap_result(call.path, result)
                if error is not None:
                    return self._action_failed(call, error)
            if call.argument is _RESOLVING:
                return self._resolved(call, result)
            compensable = call.node.compensate is not None
            if compensable:
                call.argument = result
                self._completed.append(call)
            if self._listeners:
                self._emit_step_completed(call, result, compensable=compensable)
            if self._phase != _FORWARD:
                return None  # it finished after the run had started to fail: it is undone too
            fiber = call.fiber
            assert fiber is not None
            return self._advance(fiber, None, result)
        if kind is SLEEP:
            retried = call.argument
            assert isinstance(retried, Call)
            return self._issue(retried)
        if result is not None and type(result) not in PLAIN_TYPES:
            _, error = unwrap_result(call.path, result)
            if error is not None:
                return self._compensation_failed(call, error)
        return self._compensation_succeeded(call)

    def fail(self, call: Call, error: Exception) -> Call | None:
        """Report that `call` raised `error` (the attempt failed; the engine may retry it).

        Returns the call that follows directly (a retry, say), if any.
        """
        self._in_flight -= 1
        kind = call.kind
        if kind is ACTION:
            return self._action_failed(call, error)
        if kind is SLEEP:
            # The wait before a retry failed (an injected sleep raised).
            return self._wait_failed(call, error)
        return self._compensation_failed(call, error)

    def expire(self, call: Call) -> Call | None:
        """Report that `call` was cancelled because its `deadline` passed.

        An action cut off this way has an unknown outcome (contract rule 3): an idempotent step
        whose own timeout passed is retried; otherwise the step fails with a
        `StepTimeoutError` and is left to the undo (run again if idempotent, else its
        unknown-outcome compensation, else reported unresolved). A compensation that times out
        has failed that attempt.
        """
        self._in_flight -= 1
        error = self._timeout_error(call)
        kind = call.kind
        if kind is ACTION:
            if call.argument is _RESOLVING:
                return self._resolution_failed(call, error)
            return self._unknown_outcome(call, error, retriable=call.limit is None)
        if kind is SLEEP:
            return self._wait_failed(call, error)
        return self._compensation_failed(call, error)

    def cancel(self, call: Call) -> Call | None:
        """Report that `call` was cancelled because `should_cancel(call)` said so.

        An action cancelled mid-flight has an unknown outcome, left to the undo; its branch ends
        without an error of its own (the outcome carries the sibling's). Only forward work is
        ever cancelled: a compensation that times out is reported with `expire`.
        """
        kind = call.kind
        assert kind is ACTION or kind is SLEEP, f"only forward work is cancelled, not {call!r}"
        self._in_flight -= 1
        error = BranchCancelledError(call.path, call.attempt)
        unknown = kind is ACTION or _waits_after_unknown(call)
        if unknown:
            self._record_unknown(call)  # before the event: a listener may interrupt
        self._emit_step_failed(call, error, unknown=unknown)
        fiber = call.fiber
        assert fiber is not None
        if self._phase == _FORWARD and fiber.join is not None:
            self._branch_settled(fiber)
        return None

    def interrupt(
        self, call: Call | None, interruption: BaseException, *, started: bool = True
    ) -> None:
        """Report an interruption (``KeyboardInterrupt``, ``SystemExit``, cancellation).

        `call` is the call it cut short, or ``None`` if it came between calls; `started` is
        ``False`` when the driver had not begun to perform `call`. Forward work stops at once
        and every completed step is compensated. A step cut short mid-flight has an unknown
        outcome, settled by the undo like any other (contract rule 3). A compensation cut short
        counts as failed. The driver re-raises the interruption once `poll()` has nothing left.
        """
        if self._phase == _FORWARD:
            self._runnable.clear()
            self._begin_compensation(interruption)
        if call is None:
            return
        self._in_flight -= 1
        # A wait before a retry stands for the last attempt that ran (same path, attempt number
        # and start); what it waits to retry tells whether that was an action or a compensation.
        waited_for = call.argument if call.kind is SLEEP else call
        assert isinstance(waited_for, Call)
        if waited_for.kind is COMPENSATION or waited_for.kind is UNKNOWN:
            # Only record it: the driver polls for the next compensation itself.
            self._record_compensation_failure(call, interruption)
            self._release(call)
            return
        if call.argument is _RESOLVING:
            # Running it again did not settle it: fall through to its unknown-outcome
            # compensation, if any, else it is unresolved (contract rule 3).
            try:
                self._emit_step_failed(call, interruption, unknown=started)
            except BaseException:
                self._unresolved_by_interrupt(call)
                raise
            fallback = self._unknown_fallback(call)
            if fallback is None:
                self._release(call)
            else:
                self._handed_over.append(fallback)
            return
        # An action cut short mid-flight has an unknown outcome; one that was waiting to be
        # retried (or never began) did not run this attempt, so its outcome is known: it failed.
        unknown = (
            call.kind is ACTION and (started or call.argument is _AFTER_UNKNOWN)
        ) or _waits_after_unknown(call)
        if unknown:
            self._record_unknown(call)  # before the event: a listener may interrupt
        self._emit_step_failed(call, interruption, unknown=unknown)

    # -- walking the tree -------------------------------------------------------------------

    def _advance(self, fiber: Fiber, node: Saga[Any] | None, value: object) -> Call | None:
        """Run `fiber`'s pure part (binds, maps, scopes, forks) until it needs an effect.

        Starts at `node`, or, when `node` is None, resumes the fiber's stack with `value`.
        Returns the call to perform, or None if the fiber finished, failed or now waits on a par.
        """
        if self.branch_failures and fiber.join is not None and stopping(fiber):
            # A sibling branch failed: start nothing new here; this branch is settled. (No
            # branch has failed in most runs, which then skip the walk up the joins.)
            self._branch_settled(fiber)
            return None
        stack = fiber.stack
        while True:
            if node is None:
                # Resume: unwind continuations with `value` until one yields a saga to run.
                while stack:
                    frame = stack.pop()
                    if isinstance(frame, Saga):
                        node = frame  # a `then`
                        break
                    if isinstance(frame, ScopeExit):
                        fiber.scope = frame.scope
                        continue
                    if isinstance(frame, DeadlineExit):
                        fiber.deadline = frame.deadline
                        continue
                    try:
                        if isinstance(frame, MapContinuation):
                            value = frame.function(value)
                            continue
                        saga = frame.function(value)
                    except Exception as error:
                        self._fiber_failed(fiber, error)
                        return None
                    if not isinstance(saga, Saga):
                        self._fiber_failed(fiber, _not_a_saga(frame.function, saga))
                        return None
                    node = saga
                    break
                else:
                    self._fiber_finished(fiber, value)
                    return None
            if isinstance(node, StepNode):
                scope = fiber.scope
                counts = scope.counts
                label = node.name
                count = counts.get(label, 0) + 1
                if count > 1 and node.explicit:
                    self._fiber_failed(fiber, DuplicateStepNameError(scope.join(label)))
                    return None
                counts[label] = count
                call = Call(ACTION, node, scope, count, 1, None, fiber)
                if node.attempt_timeout is None and fiber.deadline is None:
                    self._in_flight += 1
                    if self._listeners or self._debug:
                        self._announce(call)
                    return call
                return self._start_attempt(call, fiber.deadline)
            if isinstance(node, BindNode):
                stack.append(node.continuation)
                node = node.source
            elif isinstance(node, PureNode):
                value = node.value
                node = None
            elif isinstance(node, NamedNode):
                try:
                    path = fiber.scope.claim(node.name, explicit=True)
                except DuplicateStepNameError as error:
                    self._fiber_failed(fiber, error)
                    return None
                stack.append(ScopeExit(fiber.scope))
                fiber.scope = Scope(path)
                node = node.inner
            elif isinstance(node, TimeoutNode):
                self._enter_deadline(fiber, node)
                node = node.inner
            elif isinstance(node, ParNode):
                self._fork(fiber, node)
                return None
            else:
                raise TypeError(f"not a saga node: {node!r}")

    def _enter_deadline(self, fiber: Fiber, node: TimeoutNode[object]) -> None:
        fiber.stack.append(DeadlineExit(fiber.deadline))
        at = self._settings.monotonic() + node.seconds
        enclosing = fiber.deadline
        if enclosing is None or at < enclosing.at:
            inner = node.inner
            scope = fiber.scope
            named = isinstance(inner, NamedNode)
            where = scope.join(inner.name) if isinstance(inner, NamedNode) else scope.prefix
            fiber.deadline = Deadline(at, node.seconds, where, named=named)

    def _fork(self, parent: Fiber, node: ParNode[object]) -> None:
        branches = node.branches
        if not branches:
            self._runnable.append((parent, None, ()))
            return
        join = Join(parent, len(branches))
        deadline = parent.deadline
        self._forks += 1
        prefix = f"{parent.branch}/{self._forks}:" if parent.branch else f"{self._forks}:"
        # Pushed in reverse so branch 0 is popped first.
        for index in range(len(branches) - 1, -1, -1):
            branch = branches[index]
            if sibling_name(branch) is not None:
                scope = parent.scope
            else:
                # Claimed like a label, so the branches of a second par in the same scope get
                # paths of their own (``#0#2/...``) and no two steps ever share a path.
                scope = Scope(parent.scope.claim(f"#{index}", explicit=False))
            fiber = Fiber(scope, join, index, deadline, f"{prefix}{index}")
            self._runnable.append((fiber, branch, None))

    def _fiber_finished(self, fiber: Fiber, value: object) -> None:
        join = fiber.join
        if join is None:
            self._finish(Success(value))
            return
        join.results[fiber.index] = value
        self._branch_settled(fiber)

    def _fiber_failed(self, fiber: Fiber, error: BaseException) -> None:
        join = fiber.join
        if join is None:
            self._begin_compensation(error)
            return
        join.errors.append(error)
        join.failing = True
        self.branch_failures += 1
        self._branch_settled(fiber)

    def _branch_settled(self, fiber: Fiber) -> None:
        join = fiber.join
        assert join is not None
        join.pending -= 1
        if join.pending:
            return
        if not join.errors:
            self._runnable.append((join.parent, None, tuple(join.results)))
        elif len(join.errors) == 1:
            self._fiber_failed(join.parent, join.errors[0])
        else:
            self._fiber_failed(
                join.parent, BaseExceptionGroup("several par branches failed", join.errors)
            )

    # -- attempts, deadlines and retries -----------------------------------------------------

    def _start_attempt(self, call: Call, limit: Deadline | None) -> Call | None:
        """Hand out an action's attempt bound by its own timeout, `limit` (a sub-tree's or the
        run's deadline), or both: None, with the step failed, if `limit` has passed (the attempt
        cannot start)."""
        now = self._settings.monotonic()
        if limit is not None and now >= limit.at:
            self._could_not_start(call, limit)
            return None
        self._in_flight += 1
        if self._listeners or self._debug:
            self._announce(call)
            # The listeners took their time: the attempt's own timeout starts after them.
            now = self._settings.monotonic()
        timeout = call.node.attempt_timeout
        # At equal ends the step's own timeout wins: the error names the step, not the scope.
        if timeout is not None and (limit is None or now + timeout <= limit.at):
            call.deadline = now + timeout
            call.limit = None
        elif limit is not None:
            call.deadline = limit.at
            call.limit = limit
        return call

    def _could_not_start(self, call: Call, limit: Deadline) -> None:
        """`limit` passed before `call`'s attempt could start: the step fails with a timeout."""
        fiber = call.fiber
        assert fiber is not None
        error = StepTimeoutError(
            call.path,
            call.attempt,
            limit.seconds,
            "run" if limit.scope is None else "sub-tree",
            scope=limit.scope,
            named=limit.named,
            started=False,
        )
        if self._debug:
            logger.debug("saga %s: %s", self.saga_id, error)
        if call.attempt == 1:
            # The step never began: no attempt of it ran, so there is no attempt to report.
            self._fiber_failed(fiber, error)
            return
        # A retry that cannot start: the step fails as its last attempt that ran, as when the
        # wait before the retry outlasts the deadline (`_wait_failed`).
        last = call.derive(ACTION, call.attempt - 1, call.argument)
        last.started_at = call.started_at
        if call.argument is _AFTER_UNKNOWN:
            # The retry of an unknown outcome: that outcome stays unknown, left to the undo.
            self._left_unknown(last, error)
            self._fiber_failed(fiber, error)
        else:
            self._step_failed(last, error)

    def _issue(self, call: Call) -> Call | None:
        """Hand `call` to the driver: give it its deadline, count it in flight, announce it.

        None if a deadline that had passed kept it from starting (the step has failed)."""
        kind = call.kind
        if kind is ACTION:
            fiber = call.fiber
            limit = fiber.deadline if fiber is not None and self._phase == _FORWARD else None
            if call.node.attempt_timeout is not None or limit is not None:
                return self._start_attempt(call, limit)
        self._in_flight += 1
        if self._listeners or self._debug:
            self._announce(call)
        if kind is not ACTION and kind is not SLEEP:
            # Compensations are bound by their own timeout only (a completed step's record may
            # still carry its action's deadline), counted from after the listeners.
            timeout = call.node.compensation_timeout
            call.deadline = NO_DEADLINE if timeout is None else self._settings.monotonic() + timeout
            call.limit = None
        return call

    def _announce(self, call: Call) -> None:
        if self._listeners:
            call.started_at = at = self._settings.clock()
            event: Event
            if call.kind is ACTION:
                event = StepStarted(self.saga_id, call.path, call.attempt, at, _branch(call))
            else:
                event = CompensationStarted(self.saga_id, call.path, call.attempt, at)
            try:
                self._emit(event)
            except BaseException as interruption:
                # A listener raised an interrupt (`_emit` ignores only Exceptions): this call
                # never reaches the driver, which reports the interruption as coming between
                # calls. Settle the call here so the run can still finish compensating.
                self._in_flight -= 1
                if call.kind is not ACTION:
                    self._record_compensation_failure(call, interruption)
                    self._release(call)
                elif call.argument is _RESOLVING:
                    self._unresolved_by_interrupt(call)
                raise
        if self._debug:
            logger.debug(
                "saga %s: %s %s attempt %d", self.saga_id, call.kind, call.path, call.attempt
            )

    def _timeout_error(self, call: Call) -> StepTimeoutError:
        limit = call.limit
        node = call.node
        if limit is not None:
            waited_for = call.argument if call.kind is SLEEP else call
            assert isinstance(waited_for, Call)
            return StepTimeoutError(
                call.path,
                waited_for.attempt,
                limit.seconds,
                "run" if limit.scope is None else "sub-tree",
                scope=limit.scope,
                named=limit.named,
                started=call.kind is not SLEEP,
            )
        if call.kind is ACTION:
            assert node.attempt_timeout is not None
            return StepTimeoutError(call.path, call.attempt, node.attempt_timeout, "step")
        assert node.compensation_timeout is not None
        return StepTimeoutError(call.path, call.attempt, node.compensation_timeout, "compensation")

    def _action_failed(self, call: Call, error: BaseException) -> Call | None:
        if isinstance(error, ResultRejectedError):
            return self._result_rejected(call, error)
        if call.argument is _RESOLVING:
            return self._resolution_failed(call, error)
        if isinstance(error, UnknownOutcomeError):
            # The effect itself says it cannot tell whether it took effect.
            retriable = not isinstance(error, NonRetryableError)
            return self._unknown_outcome(call, error, retriable=retriable)
        if self._phase != _FORWARD:
            # It failed after the run had started to fail: no retry, nothing to undo.
            self._emit_step_failed(call, error, unknown=False)
            return None
        retry = call.node.retry
        if retry is not None and call.attempt < retry.attempts and retry.should_retry(error):
            return self._retry(call, retry, error)
        self._step_failed(call, error)
        return None

    def _result_rejected(self, call: Call, rejected: ResultRejectedError) -> Call | None:
        """The effect took place with `rejected.result`, but the step fails with
        `rejected.error`: it completed (its compensation gets the result), and running it again
        cannot help, so it fails without a retry."""
        result = rejected.result
        if call.argument is _RESOLVING:
            return self._resolved(call, result)
        compensable = call.node.compensate is not None
        if compensable:
            call.argument = result
            self._completed.append(call)
        if self._listeners:
            self._emit_step_completed(call, result, compensable=compensable)
        if self._phase != _FORWARD:
            # A late completion: undone with the rest, as in `succeed`.
            self._emit_step_failed(call, rejected.error, unknown=False)
            return None
        self._step_failed(call, rejected.error)
        return None

    def _step_failed(self, call: Call, error: BaseException) -> None:
        self._emit_step_failed(call, error, unknown=False)
        if self._debug:
            logger.debug("saga %s: step %s failed: %r", self.saga_id, call.path, error)
        fiber = call.fiber
        assert fiber is not None
        self._fiber_failed(fiber, error)

    def _emit_step_completed(self, call: Call, result: object, *, compensable: bool) -> None:
        self._emit(
            StepCompleted(
                self.saga_id,
                call.path,
                call.attempt,
                self._settings.clock(),
                call.started_at,
                result,
                compensable,
                _branch(call),
            )
        )

    def _emit_step_failed(self, call: Call, error: BaseException, *, unknown: bool) -> None:
        if self._listeners:
            self._emit(
                StepFailed(
                    self.saga_id,
                    call.path,
                    call.attempt,
                    self._settings.clock(),
                    call.started_at,
                    error,
                    unknown=unknown,
                    branch=_branch(call),
                )
            )

    def _retry(self, call: Call, retry: Retry, error: BaseException) -> Call | None:
        """The next attempt of `call`, or the wait that precedes it."""
        attempt = call.attempt + 1
        delay = retry.delay_before(attempt, random_unit=self._settings.random_unit())
        if self._listeners:
            event_type = StepRetrying if call.kind is ACTION else CompensationRetrying
            try:
                self._emit(
                    event_type(
                        self.saga_id,
                        call.path,
                        call.attempt,
                        self._settings.clock(),
                        call.started_at,
                        error,
                        delay,
                    )
                )
            except BaseException as interruption:
                if call.kind is not ACTION:
                    # Interrupted before its retry: that compensation has failed for good.
                    self._record_compensation_failure(call, interruption)
                    self._release(call)
                raise
        retried = call.derive(call.kind, attempt, call.argument)
        # Until it starts, a retry carries the start of the attempt it follows: a deadline that
        # keeps it from starting fails the step as that attempt (`_could_not_start`).
        retried.started_at = call.started_at
        if delay <= 0:
            return self._issue(retried)
        wait = call.derive(SLEEP, call.attempt, retried)
        wait.started_at = call.started_at
        wait.delay = delay
        fiber = call.fiber
        if call.kind is ACTION and fiber is not None and fiber.deadline is not None:
            wait.deadline = fiber.deadline.at
            wait.limit = fiber.deadline
        self._in_flight += 1
        return wait

    # -- unknown outcomes (contract rule 3) ----------------------------------------------------

    def _unknown_outcome(self, call: Call, error: BaseException, *, retriable: bool) -> Call | None:
        """An action attempt was cut off: retry it if that is safe, else leave it to the undo."""
        node = call.node
        if retriable and node.idempotent and self._phase == _FORWARD:
            retry = node.retry or _ONE_MORE
            if call.attempt < retry.attempts:
                call.argument = _AFTER_UNKNOWN
                return self._retry(call, retry, error)
        self._left_unknown(call, error)
        if self._phase == _FORWARD:
            fiber = call.fiber
            assert fiber is not None
            self._fiber_failed(fiber, error)
        return None

    def _left_unknown(self, call: Call, error: BaseException) -> None:
        """`call`'s attempt (or the one its wait or retry stands for) has an unknown outcome
        that the run no longer tries to settle forward: the undo will (recorded first, so a
        listener that interrupts on the event cannot make the undo forget it)."""
        self._record_unknown(call)
        self._emit_step_failed(call, error, unknown=True)
        if self._debug:
            logger.debug("saga %s: step %s outcome unknown: %r", self.saga_id, call.path, error)

    def _wait_failed(self, wait: Call, error: BaseException) -> Call | None:
        """The wait before a retry ended in `error`: the retry will not happen, and the failure
        is that of the last attempt that ran, which the wait stands for (same path, attempt
        number and start)."""
        retried = wait.argument
        assert isinstance(retried, Call)
        if retried.kind is not ACTION:
            return self._compensation_failed_for_good(wait, error)
        if retried.argument is _AFTER_UNKNOWN:
            self._left_unknown(wait, error)
            fiber = wait.fiber
            assert fiber is not None
            self._fiber_failed(fiber, error)
        else:
            self._step_failed(wait, error)
        return None

    def _record_unknown(self, call: Call) -> None:
        node = call.node
        if node.compensate is not None or node.on_unknown is not None:
            call.argument = _UNKNOWN_RESULT
            self._completed.append(call)

    def _undo_call(self, record: Call) -> Call | None:
        """The first call of `record`'s undo, issued; None if there is nothing to run (the step
        is then reported unresolved)."""
        if record.argument is not _UNKNOWN_RESULT:
            # The completed step's record becomes its compensation's first attempt: the driver
            # is done with it, and sparing a new call per undo is measurable on the failure path.
            record.kind = COMPENSATION
            record.attempt = 1
            return self._issue(record)
        node = record.node
        if node.idempotent and node.compensate is not None:
            # Run it again, same idempotency key, to learn the result its compensation needs.
            return self._issue(record.derive(ACTION, record.attempt + 1, _RESOLVING))
        return self._unknown_fallback(record)

    def _unknown_fallback(self, call: Call) -> Call | None:
        if call.node.on_unknown is not None:
            return self._issue(call.derive(UNKNOWN, 1, None))
        undo = self._undo
        assert undo is not None
        undo.unresolved.append(call.path)
        return None

    def _resolved(self, call: Call, result: object) -> Call | None:
        """The run-again of an unknown outcome completed: now compensate it with its result."""
        if self._listeners:
            try:
                self._emit_step_completed(call, result, compensable=True)
            except BaseException as interruption:
                # Interrupted before its compensation could start: as if it had (`_announce`).
                call.kind = COMPENSATION
                call.attempt = 1
                self._record_compensation_failure(call, interruption)
                self._release(call)
                raise
        call.kind = COMPENSATION
        call.attempt = 1
        call.argument = result
        return self._issue(call)

    def _resolution_failed(self, call: Call, error: BaseException) -> Call | None:
        try:
            self._emit_step_failed(call, error, unknown=True)
        except BaseException:
            self._unresolved_by_interrupt(call)
            raise
        return self._unknown_fallback(call) or self._undo_done(call)

    def _unresolved_by_interrupt(self, call: Call) -> None:
        """An interrupt cut short the run-again that was to settle `call`'s unknown outcome (or
        a listener interrupted as it started or failed): the outcome stays unknown."""
        undo = self._undo
        assert undo is not None
        undo.unresolved.append(call.path)
        self._release(call)

    # -- compensation -------------------------------------------------------------------------

    def _begin_compensation(self, error: BaseException) -> None:
        if self._phase != _FORWARD:
            return
        self._phase = _COMPENSATING
        self.compensating = True
        self._undo = Undo(error)
        if self._debug:
            logger.debug(
                "saga %s: failed with %r; compensating %d step(s)",
                self.saga_id,
                error,
                len(self._completed),
            )

    def _next_compensation(self) -> Call | None:
        """Sequential undo: the undo log in reverse, one record at a time."""
        undo = self._undo
        assert undo is not None
        if undo.cursor is None:
            undo.cursor = len(self._completed) - 1
        while undo.cursor >= 0:
            record = self._completed[undo.cursor]
            undo.cursor -= 1
            call = self._undo_call(record)
            if call is not None:
                return call
        self._finish_failure(undo)
        return None

    def _next_concurrent_compensation(self) -> Call | None:
        """Concurrent undo: any record the causal order lets start."""
        order = self._order
        if order is None:
            if self._in_flight:
                return None
            order = self._order = CausalOrder(self._completed)
            self._ready = order.start()
        ready = self._ready
        while ready:
            record = ready.pop()
            call = self._undo_call(record)
            if call is not None:
                return call
            ready.extend(order.done(record))
        if not self._in_flight:
            undo = self._undo
            assert undo is not None
            self._finish_failure(undo)
        return None

    def _undo_done(self, call: Call) -> Call | None:
        """`call`'s record is undone (or given up on): what may run next."""
        self._release(call)
        return self.poll()

    def _release(self, call: Call) -> None:
        """`call`'s record is undone: let the causal order start what waited for it."""
        if self._order is not None:
            self._ready.extend(self._order.done(call))

    def _compensation_succeeded(self, call: Call) -> Call | None:
        undo = self._undo
        assert undo is not None
        undo.compensated.append(call.path)
        if self._listeners:
            try:
                self._emit(
                    CompensationCompleted(
                        self.saga_id,
                        call.path,
                        call.attempt,
                        self._settings.clock(),
                        call.started_at,
                    )
                )
            except BaseException:
                self._release(call)  # see _record_compensation_failure
                raise
        if self._order is None and not self._in_flight:
            return self._next_compensation()  # the sequential undo's common case, directly
        return self._undo_done(call)

    def _compensation_failed(self, call: Call, error: BaseException) -> Call | None:
        retry = call.node.compensation_retry
        if retry is not None and call.attempt < retry.attempts and retry.should_retry(error):
            return self._retry(call, retry, error)
        return self._compensation_failed_for_good(call, error)

    def _compensation_failed_for_good(self, call: Call, error: BaseException) -> Call | None:
        self._record_compensation_failure(call, error)
        return self._undo_done(call)

    def _record_compensation_failure(self, call: Call, error: BaseException) -> None:
        undo = self._undo
        assert undo is not None
        undo.failures.append(CompensationFailure(call.path, error, call.attempt))
        if self._settings.on_compensation_failure == "stop":
            self._skip_the_rest(undo)
        if self._listeners:
            try:
                self._emit(
                    CompensationFailed(
                        self.saga_id,
                        call.path,
                        call.attempt,
                        self._settings.clock(),
                        call.started_at,
                        error,
                    )
                )
            except BaseException:
                # A listener interrupted (`_emit` lets only those through), so the caller never
                # gets to release `call`'s record: do it here, or the concurrent undo would
                # never start the records waiting for it (contract rule 8).
                self._release(call)
                raise
        if self._debug:
            logger.debug("saga %s: compensation %s failed: %r", self.saga_id, call.path, error)

    def _skip_the_rest(self, undo: Undo) -> None:
        if self._settings.concurrent_compensation:
            order = self._order
            waiting = list(reversed(self._ready))
            self._ready.clear()
            if order is not None:
                waiting.extend(order.drain())
            undo.skipped.extend(record.path for record in waiting)
            return
        cursor = undo.cursor
        if cursor is None:
            cursor = len(self._completed) - 1
        while cursor >= 0:
            undo.skipped.append(self._completed[cursor].path)
            cursor -= 1
        undo.cursor = cursor

    # -- the end ------------------------------------------------------------------------------

    def _finish_failure(self, undo: Undo) -> None:
        if undo.failures or undo.skipped or undo.unresolved:
            self._finish(
                PartialFailure(
                    undo.error,
                    tuple(undo.compensated),
                    tuple(undo.failures),
                    tuple(undo.skipped),
                    tuple(undo.unresolved),
                )
            )
        else:
            self._finish(Failure(undo.error, tuple(undo.compensated)))

    def _finish(self, outcome: Outcome[object]) -> None:
        self._phase = _DONE
        self.compensating = False
        self._outcome = outcome
        self._completed = []
        if self._listeners:
            self._emit(SagaFinished(self.saga_id, self._settings.clock(), outcome))
        if self._debug:
            logger.debug("saga %s: finished: %s", self.saga_id, type(outcome).__name__)

    def _emit(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception(
                    "saga %s: listener %r raised on %s; ignored",
                    event.saga_id,
                    listener,
                    type(event).__name__,
                )


def _branch(call: Call) -> str:
    fiber = call.fiber
    return "" if fiber is None else fiber.branch


def _waits_after_unknown(call: Call) -> bool:
    """Whether `call` is the wait before retrying an attempt whose outcome is unknown."""
    retried = call.argument
    return call.kind is SLEEP and isinstance(retried, Call) and retried.argument is _AFTER_UNKNOWN


def _not_a_saga(continuation: object, returned: object) -> TypeError:
    return TypeError(
        f"a bind continuation must return a Saga, got {returned!r} (from {continuation!r})"
    )
