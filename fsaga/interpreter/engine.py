"""The engine: the semantics of a run (DESIGN section 3), written once for every interpreter.

The engine is a state machine that performs nothing itself. A driver (the sync interpreter, the
async one, a user's own) repeatedly asks it for the next `Call` with `poll()`, performs that call
however it likes, and reports back with `succeed`, `fail` or `interrupt`. The engine decides
everything else: which step runs next, what a bind continuation sees, when to retry and how long
to wait, when to stop and compensate, in which order, and what the outcome is.

Walking the tree uses explicit stacks (one per fiber of control), never Python recursion, so a
saga of any depth runs in constant Python stack.

Fibers: the root of the saga runs in one fiber; `par` forks a fiber per branch and joins them.
`poll()` hands out work depth-first (a forked branch runs until it has to wait before the next
one starts), which is what a driver that performs one call at a time wants; a concurrent driver
calls `poll()` until it returns ``None`` to collect every call that can run now.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, final

from fsaga.errors import DuplicateStepNameError
from fsaga.events import (
    CompensationCompleted,
    CompensationFailed,
    CompensationRetrying,
    CompensationStarted,
    Event,
    Listener,
    SagaFinished,
    SagaStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
)
from fsaga.interpreter._fibers import Fiber, Join, Scope, ScopeExit, stopping
from fsaga.interpreter.call import ACTION, COMPENSATION, SLEEP, Call
from fsaga.interpreter.results import PLAIN_TYPES, unwrap_result
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
    sibling_name,
)

__all__ = ["CompensationPolicy", "Engine", "EngineSettings"]

logger = logging.getLogger(__name__)

CompensationPolicy = Literal["continue", "stop"]
"""What a compensation that fails for good does to the others: they still run, or are skipped."""

_FORWARD: Final = 0
_COMPENSATING: Final = 1
_DONE: Final = 2


@final
@dataclass(frozen=True, slots=True)
class EngineSettings:
    """What an interpreter configures once and every run of its engine shares.

    Attributes:
        listeners: called with every event (see `fsaga.events`).
        clock: the time stamped on events.
        random_unit: random numbers in ``[0, 1)`` for retry jitter.
        on_compensation_failure: ``"continue"`` runs the remaining compensations when one fails
            for good; ``"stop"`` skips them (the outcome lists them as skipped).
    """

    listeners: tuple[Listener, ...] = ()
    clock: Callable[[], float] = time.time
    random_unit: Callable[[], float] = random.random
    on_compensation_failure: CompensationPolicy = "continue"

    def __post_init__(self) -> None:
        for listener in self.listeners:
            if not callable(listener):
                raise TypeError(f"listener {listener!r} is not callable")
        for label, function in (("clock", self.clock), ("random_unit", self.random_unit)):
            if not callable(function):
                raise TypeError(f"{label} must be callable, got {function!r}")
        if self.on_compensation_failure not in ("continue", "stop"):
            raise ValueError(
                "on_compensation_failure must be 'continue' or 'stop', "
                f"got {self.on_compensation_failure!r}"
            )


@final
class _Undo:
    """The compensation phase's state, made when a run starts failing."""

    __slots__ = ("compensated", "cursor", "error", "failures", "skipped", "unresolved")

    def __init__(self, error: BaseException, cursor: int) -> None:
        self.error = error
        self.cursor = cursor
        self.compensated: list[str] = []
        self.failures: list[CompensationFailure] = []
        self.skipped: list[str] = []
        self.unresolved: list[str] = []


@final
class Engine:
    """The state of one run of one saga; see the module docstring for the protocol."""

    __slots__ = (
        "_completed",
        "_debug",
        "_in_flight",
        "_listeners",
        "_outcome",
        "_phase",
        "_runnable",
        "_saga_id",
        "_settings",
        "_undo",
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
        # Fibers ready to advance, as (fiber, node to start at, value to resume with): a stack,
        # so the most recently readied fiber goes first (depth-first, see the module docstring).
        self._runnable: list[tuple[Fiber, Saga[Any] | None, object]] = [
            (Fiber(Scope(""), None, 0), saga, None)
        ]
        self._in_flight = 0
        # Completed steps that have a compensation, in completion order: the undo log.
        self._completed: list[Call] = []
        self._undo: _Undo | None = None
        self._outcome: Outcome[object] | None = None
        if self._listeners:
            self._emit(SagaStarted(self.saga_id, settings.clock()))
        if self._debug:
            logger.debug("saga %s: started", self.saga_id)

    # -- what drivers read ------------------------------------------------------------------

    @property
    def saga_id(self) -> str:
        """The run's id: the one given, or a fresh random one made on first use."""
        if self._saga_id is None:
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
            compensable = call.node.compensate is not None
            if compensable:
                call.argument = result
                self._completed.append(call)
            if self._listeners:
                self._emit(
                    StepCompleted(
                        self.saga_id,
                        call.path,
                        call.attempt,
                        self._settings.clock(),
                        call.started_at,
                        result,
                        compensable,
                    )
                )
            fiber = call.fiber
            assert fiber is not None
            return self._advance(fiber, None, result)
        if kind is COMPENSATION:
            if result is not None and type(result) not in PLAIN_TYPES:
                _, error = unwrap_result(call.path, result)
                if error is not None:
                    return self._compensation_failed(call, error)
            return self._compensation_succeeded(call)
        retried = call.argument
        assert isinstance(retried, Call)
        return self._issue(retried)

    def fail(self, call: Call, error: Exception) -> Call | None:
        """Report that `call` raised `error` (the attempt failed; the engine may retry it).

        Returns the call that follows directly (a retry, say), if any.
        """
        self._in_flight -= 1
        kind = call.kind
        if kind is ACTION:
            return self._action_failed(call, error)
        if kind is COMPENSATION:
            return self._compensation_failed(call, error)
        # The wait before a retry failed (an injected sleep raised): the retry cannot happen,
        # and the failure is that of the last attempt that ran, which the wait stands for.
        retried = call.argument
        assert isinstance(retried, Call)
        if retried.kind is ACTION:
            self._step_failed(call, error)
            return None
        return self._compensation_failed_for_good(call, error)

    def interrupt(self, call: Call | None, interruption: BaseException) -> None:
        """Report an interruption (``KeyboardInterrupt``, ``SystemExit``, cancellation).

        `call` is the call it cut short, or ``None`` if it came between calls. Forward work
        stops at once and every completed step is compensated. A step cut short mid-flight has
        an unknown outcome: it is not compensated (nobody knows whether it took effect) and the
        outcome reports it unresolved. A compensation cut short counts as failed. The driver
        re-raises the interruption once `poll()` has nothing left.
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
        attempt = call
        if waited_for.kind is COMPENSATION:
            # Only record it: the driver polls for the next compensation itself.
            self._record_compensation_failure(attempt, interruption)
            return
        # An action cut short mid-flight has an unknown outcome; one that was waiting to be
        # retried never started, so its outcome is known: it failed.
        unknown = call.kind is ACTION
        undo = self._undo
        if unknown and attempt.node.compensate is not None and undo is not None:
            undo.unresolved.append(attempt.path)
        if self._listeners:
            self._emit(
                StepFailed(
                    self.saga_id,
                    attempt.path,
                    attempt.attempt,
                    self._settings.clock(),
                    attempt.started_at,
                    interruption,
                    unknown=unknown,
                )
            )

    # -- walking the tree -------------------------------------------------------------------

    def _advance(self, fiber: Fiber, node: Saga[Any] | None, value: object) -> Call | None:
        """Run `fiber`'s pure part (binds, maps, scopes, forks) until it needs an effect.

        Starts at `node`, or, when `node` is None, resumes the fiber's stack with `value`.
        Returns the call to perform, or None if the fiber finished, failed or now waits on a par.
        """
        if fiber.join is not None and stopping(fiber):
            # A sibling branch failed: start nothing new here; this branch is settled.
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
                    try:
                        if isinstance(frame, MapContinuation):
                            value = frame.function(value)
                            continue
                        saga = frame(value)
                    except Exception as error:
                        self._fiber_failed(fiber, error)
                        return None
                    if not isinstance(saga, Saga):
                        self._fiber_failed(fiber, _not_a_saga(frame, saga))
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
                self._in_flight += 1
                if self._listeners or self._debug:
                    self._announce(call)
                return call
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
            elif isinstance(node, ParNode):
                self._fork(fiber, node)
                return None
            else:
                raise TypeError(f"not a saga node: {node!r}")

    def _fork(self, parent: Fiber, node: ParNode[object]) -> None:
        branches = node.branches
        if not branches:
            self._runnable.append((parent, None, ()))
            return
        join = Join(parent, len(branches))
        # Pushed in reverse so branch 0 is popped first.
        for index in range(len(branches) - 1, -1, -1):
            branch = branches[index]
            if sibling_name(branch) is not None:
                scope = parent.scope
            else:
                scope = Scope(parent.scope.join(f"#{index}"))
            self._runnable.append((Fiber(scope, join, index), branch, None))

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

    # -- attempts and retries -----------------------------------------------------------------

    def _issue(self, call: Call) -> Call:
        """Hand `call` to the driver: count it in flight and announce it."""
        self._in_flight += 1
        if self._listeners or self._debug:
            self._announce(call)
        return call

    def _announce(self, call: Call) -> None:
        if self._listeners:
            call.started_at = at = self._settings.clock()
            event: Event
            if call.kind is ACTION:
                event = StepStarted(self.saga_id, call.path, call.attempt, at)
            else:
                event = CompensationStarted(self.saga_id, call.path, call.attempt, at)
            try:
                self._emit(event)
            except BaseException as interruption:
                # A listener raised an interrupt (`_emit` ignores only Exceptions): this call
                # never reaches the driver, which reports the interruption as coming between
                # calls. Settle the call here so the run can still finish compensating.
                self._in_flight -= 1
                if call.kind is COMPENSATION:
                    self._record_compensation_failure(call, interruption)
                raise
        if self._debug:
            logger.debug(
                "saga %s: %s %s attempt %d", self.saga_id, call.kind, call.path, call.attempt
            )

    def _action_failed(self, call: Call, error: BaseException) -> Call | None:
        retry = call.node.retry
        if retry is not None and call.attempt < retry.attempts and retry.should_retry(error):
            return self._retry(call, retry, error)
        self._step_failed(call, error)
        return None

    def _step_failed(self, call: Call, error: BaseException) -> None:
        if self._listeners:
            self._emit(
                StepFailed(
                    self.saga_id,
                    call.path,
                    call.attempt,
                    self._settings.clock(),
                    call.started_at,
                    error,
                )
            )
        if self._debug:
            logger.debug("saga %s: step %s failed: %r", self.saga_id, call.path, error)
        fiber = call.fiber
        assert fiber is not None
        self._fiber_failed(fiber, error)

    def _retry(self, call: Call, retry: Retry, error: BaseException) -> Call:
        """The next attempt of `call`, or the wait that precedes it."""
        attempt = call.attempt + 1
        delay = retry.delay_before(attempt, random_unit=self._settings.random_unit())
        if self._listeners:
            event_type = StepRetrying if call.kind is ACTION else CompensationRetrying
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
        retried = call.derive(call.kind, attempt, call.argument)
        if delay <= 0:
            return self._issue(retried)
        wait = call.derive(SLEEP, call.attempt, retried)
        wait.started_at = call.started_at
        wait.delay = delay
        self._in_flight += 1
        return wait

    # -- compensation -------------------------------------------------------------------------

    def _begin_compensation(self, error: BaseException) -> None:
        if self._phase != _FORWARD:
            return
        self._phase = _COMPENSATING
        self._undo = _Undo(error, len(self._completed) - 1)
        if self._debug:
            logger.debug(
                "saga %s: failed with %r; compensating %d step(s)",
                self.saga_id,
                error,
                len(self._completed),
            )

    def _next_compensation(self) -> Call | None:
        undo = self._undo
        assert undo is not None
        if undo.cursor < 0:
            self._finish_failure(undo)
            return None
        done = self._completed[undo.cursor]
        undo.cursor -= 1
        # The completed step's record becomes its compensation's first attempt: the driver is
        # done with it, and sparing a new call per undo is measurable on the failure path.
        done.kind = COMPENSATION
        done.attempt = 1
        return self._issue(done)

    def _compensation_succeeded(self, call: Call) -> Call | None:
        undo = self._undo
        assert undo is not None
        undo.compensated.append(call.path)
        if self._listeners:
            self._emit(
                CompensationCompleted(
                    self.saga_id, call.path, call.attempt, self._settings.clock(), call.started_at
                )
            )
        return self.poll()

    def _compensation_failed(self, call: Call, error: BaseException) -> Call | None:
        retry = call.node.compensation_retry
        if retry is not None and call.attempt < retry.attempts and retry.should_retry(error):
            return self._retry(call, retry, error)
        return self._compensation_failed_for_good(call, error)

    def _compensation_failed_for_good(self, call: Call, error: BaseException) -> Call | None:
        self._record_compensation_failure(call, error)
        return self.poll()

    def _record_compensation_failure(self, call: Call, error: BaseException) -> None:
        undo = self._undo
        assert undo is not None
        undo.failures.append(CompensationFailure(call.path, error, call.attempt))
        if self._settings.on_compensation_failure == "stop":
            while undo.cursor >= 0:
                undo.skipped.append(self._completed[undo.cursor].path)
                undo.cursor -= 1
        if self._listeners:
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
        if self._debug:
            logger.debug("saga %s: compensation %s failed: %r", self.saga_id, call.path, error)

    # -- the end ------------------------------------------------------------------------------

    def _finish_failure(self, undo: _Undo) -> None:
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


def _not_a_saga(continuation: object, returned: object) -> TypeError:
    return TypeError(
        f"a bind continuation must return a Saga, got {returned!r} (from {continuation!r})"
    )
