"""The engine: the contract of a run (docs/concepts.md), written once for every interpreter.

The engine is a state machine that performs nothing itself. A driver (the sync interpreter, the
async one) repeatedly asks it for the next `Call` with `poll()`, performs that call however it
likes, and reports back with `succeed`, `fail`, `expire` (the call's deadline passed), `cancel`
(a sibling branch failed) or `interrupt`. The engine decides everything else: which step runs
next, what a bind continuation sees, when to retry and how long to wait, which deadline binds
each attempt, what an unknown outcome becomes, when to stop and compensate, in which order, and
what the outcome is. This protocol is internal to fsaga's interpreters (docs/design.md shows it).

Its parts live in modules of their own: walking the tree (`_walk`, on the fibers of
`_fibers`), stretches of plain steps (`_plan`), attempts and deadlines (`_attempts`), unknown
outcomes (`_unknown`) and the undo's schedule (`_undo`). This module holds the state of one run
and the transitions of its calls: every call is in a `Stage`, and `_LEGAL` lists, as data, which
report each stage accepts; any other report is refused with a `ProtocolError`.

Fibers: the root of the saga runs in one fiber; `par` forks a fiber per branch and joins them.
`poll()` hands out work depth-first (a forked branch runs until it has to wait before the next
one starts), which is what a driver that performs one call at a time wants; a concurrent driver
calls `poll()` until it returns ``None`` to collect every call that can run now.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar, final

from fsaga.context import StepContext
from fsaga.errors import (
    BranchCancelledError,
    DuplicateStepNameError,
    NonRetryableError,
    ResultRejectedError,
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
from fsaga.interpreter import _unknown
from fsaga.interpreter._attempts import (
    NotStarted,
    bind_attempt,
    bind_compensation,
    not_started_error,
    timeout_error,
)
from fsaga.interpreter._call import (
    ACTION,
    COMPENSATION,
    SLEEP,
    STRETCH,
    UNDO_STRETCH,
    UNKNOWN,
    Call,
    Stage,
)
from fsaga.interpreter._fibers import Deadline, Fiber, Join, Scope, stopping
from fsaga.interpreter._plan import Stretch, StretchAt, StretchRun, plan_of
from fsaga.interpreter._undo import Undo
from fsaga.interpreter._walk import Failed, Finished, walk
from fsaga.interpreter.protocol import Effect
from fsaga.interpreter.results import PLAIN_TYPES, unwrap_result
from fsaga.interpreter.settings import AroundEffect
from fsaga.interpreter.settings import BranchFailurePolicy as BranchFailurePolicy
from fsaga.interpreter.settings import CompensationPolicy as CompensationPolicy
from fsaga.interpreter.settings import EngineSettings as EngineSettings
from fsaga.outcome import CompensationFailure, Outcome, Success
from fsaga.policy import Retry
from fsaga.saga import BindNode, ParNode, Saga, StepNode, sibling_name

__all__ = [
    "BranchFailurePolicy",
    "CompensationPolicy",
    "Engine",
    "EngineSettings",
    "ProtocolError",
    "Report",
]

logger = logging.getLogger("fsaga.interpreter")

_T = TypeVar("_T")

Phase: TypeAlias = Literal["forward", "compensating", "done"]
"""Where a run is: performing its steps, undoing them, or finished with its outcome."""

Report: TypeAlias = Literal["succeed", "fail", "expire", "cancel", "interrupt"]
"""How a driver reports a call back."""

_HANDED_OUT: Final = frozenset[Stage](
    {
        "attempt",
        "after-unknown",
        "resolving",
        "compensation",
        "unknown",
        "wait",
        "undo-wait",
        "stretch",
        "undo-stretch",
    }
)

_LEGAL: Final[Mapping[Report, frozenset[Stage]]] = {
    # Any call handed out may return, raise or be interrupted (`succeed` and `fail` check
    # against `_HANDED_OUT` directly).
    "succeed": _HANDED_OUT,
    "fail": _HANDED_OUT,
    "interrupt": _HANDED_OUT,
    # Only a call with a deadline is cut off by it, and a stretch never has one.
    "expire": _HANDED_OUT - {"stretch", "undo-stretch"},
    # Only forward work is cancelled for a failed sibling branch; a stretch never runs in one.
    "cancel": frozenset({"attempt", "after-unknown", "wait"}),
}
"""Which stages accept which report: the transitions of a call, as data (see `Stage`)."""


class ProtocolError(RuntimeError):
    """A driver reported a call in a way the engine's protocol does not allow (a call reported
    twice, a compensation cancelled, a call the engine never handed out): a bug in the driver."""


@final
class Engine(Generic[_T]):
    """The state of one run of one saga; see the module docstring for the protocol.

    `stretches`: the driver can perform a stretch of plain steps in one call (kind
    ``"stretch"``), calling sync actions only (``"sync"``) or awaiting async ones too
    (``"async"``); the engine then hands them out when nobody listens to events, nothing else
    is in flight and no deadline binds them (see `fsaga.interpreter._plan`).
    """

    __slots__ = (
        "_completed",
        "_debug",
        "_forks",
        "_handed_over",
        "_in_flight",
        "_joins",
        "_lazy_scopes",
        "_listeners",
        "_outcome",
        "_phase",
        "_runnable",
        "_saga_id",
        "_settings",
        "_stretches",
        "_sync",
        "_undo",
        "branch_failures",
    )

    def __init__(
        self,
        saga: Saga[_T],
        settings: EngineSettings,
        *,
        saga_id: str | None = None,
        stretches: Literal["sync", "async"] | None = None,
    ) -> None:
        if not isinstance(saga, Saga):
            raise TypeError(f"an interpreter runs a Saga, got {saga!r}")
        self._saga_id = saga_id
        self._settings = settings
        self._listeners = settings.listeners
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self._stretches = stretches is not None and not self._listeners and not self._debug
        self._sync = stretches == "sync"
        self._phase: Phase = "forward"
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
        # The undo log: completed steps that have a compensation, and steps whose outcome is
        # unknown, in completion order; a stretch that completed stands for its steps.
        self._completed: list[Call | StretchRun] = []
        self._undo: Undo | None = None
        self._lazy_scopes: list[Scope] | None = None
        self._joins: list[Join] | None = None
        self._outcome: Outcome[_T] | None = None
        self.branch_failures = 0
        """How many `par` branches have failed so far (a driver that cancels siblings watches
        it to know when to look for calls to cancel)."""
        if self._listeners:
            self._emit(SagaStarted(self.saga_id, settings.clock()))
        if self._debug:
            logger.debug("saga %s: started", self.saga_id)

    # -- straight runs: a saga that is one stretch, before any engine is made -----------------

    @staticmethod
    def straight(
        saga: Saga[Any], settings: EngineSettings, stretches: Literal["sync", "async"]
    ) -> Stretch | None:
        """The stretch that is the whole of `saga`, if a run of it under `settings` would hand
        that stretch out as its first call and finish with `Success` of its last result once
        every step of it returned a plain value (None otherwise).

        A driver may then call the stretch's actions before making the engine: what the engine
        decides for such a run is known in advance, and the first thing it would not know (a
        step that raises, returns anything else, or is interrupted) is reported to an engine
        made then, exactly as if it had handed out the stretch (`straight_engine`). The
        conditions are `__init__`'s, `_advance`'s, `_stretch_reached`'s and
        `_stretch_stopped`'s for the root of a run; tests/test_stretches.py holds the two ways
        to the same outcomes and effects.
        """
        if (
            type(saga) is not BindNode
            or not isinstance(saga.continuation, Saga)
            or settings.listeners
            or settings.run_timeout is not None
            or logger.isEnabledFor(logging.DEBUG)
        ):
            return None
        plan = plan_of(saga)
        if len(plan) != 1:
            return None
        (first,) = plan
        if type(first) is not StretchAt or first.start:
            return None
        stretch = first.stretch
        if stretches == "sync" and stretch.async_undo:
            return None
        return stretch

    @staticmethod
    def straight_undo(
        stretch: Stretch, settings: EngineSettings, failed: int, error: Exception
    ) -> list[int] | None:
        """For a straight run whose step `failed` raised `error`: the indexes of the steps the
        undo compensates, newest first, as one undo-stretch, if the engine would fail the run
        with `error` and undo them so (`_stretch_stopped`'s plain failure, `_begin_compensation`
        and `_undo_stretch`); None if it would decide anything else (a retry, an unknown outcome,
        the causal order, a compensation's own timeout)."""
        if (
            stretch.nodes[failed].retry is not None
            or isinstance(error, (ResultRejectedError, UnknownOutcomeError))
            or settings.concurrent_compensation
            or stretch.undo_timeouts
        ):
            return None
        nodes = stretch.nodes
        if stretch.all_compensable:
            return list(range(failed - 1, -1, -1))
        return [index for index in range(failed - 1, -1, -1) if nodes[index].compensate is not None]

    @classmethod
    def straight_engine(
        cls,
        saga: Saga[_T],
        settings: EngineSettings,
        *,
        saga_id: str | None,
        stretches: Literal["sync", "async"],
        results: list[object],
    ) -> tuple[Engine[_T], Call]:
        """The engine of a straight run that needs one now, and the stretch call it hands out
        first, with the results of the steps that returned so far (the driver reports the call
        next, as it would have)."""
        engine: Engine[_T] = cls(saga, settings, saga_id=saga_id, stretches=stretches)
        # As the run was when it started (an effect may have turned debug logging on since).
        engine._debug = False
        engine._stretches = True
        call = engine.poll()
        assert call is not None
        assert call.stretch is not None
        assert not call.stretch.at.start
        call.stretch.results = results
        return engine, call

    def straight_undo_call(self, order: list[int], undone: list[object]) -> Call:
        """After a straight run's plain failure was reported: the undo-stretch call the engine
        hands out next (compensating `order`, as `straight_undo` said), with the results of the
        compensations that returned so far."""
        call = self.poll()
        assert call is not None
        assert call.stretch is not None
        assert call.stretch.undo_order == order
        call.stretch.undone = undone
        return call

    # -- what drivers read ------------------------------------------------------------------

    @property
    def saga_id(self) -> str:
        """The run's id: the one given, or a fresh random one made on first use."""
        if self._saga_id is None:
            import uuid  # here: most runs never need an id, and uuid is slow to import

            self._saga_id = uuid.uuid4().hex
        return self._saga_id

    @property
    def outcome(self) -> Outcome[_T]:
        """The outcome, once the run has finished (`poll()` returned ``None``, nothing in
        flight)."""
        if self._outcome is None:
            raise RuntimeError("the run has not finished: poll() until it returns None")
        return self._outcome

    def take_outcome(self) -> Outcome[_T]:
        """The outcome, for the driver to return; the engine lets go of it and of the run's
        state.

        An error in the outcome keeps the frames it passed through, the driver's among them,
        and those hold this engine: were the engine to hold the outcome too, the run would stay
        alive in that cycle until the garbage collector found it.
        """
        outcome = self.outcome
        if type(outcome) is Success and self._lazy_scopes is None and self._joins is None:
            return outcome  # it holds no error, and the run left nothing holding itself
        self._outcome = None
        self._undo = None
        self._completed = []
        self._runnable = []
        if self._lazy_scopes is not None:
            for scope in self._lazy_scopes:
                scope.pending = None
            self._lazy_scopes = None
        if self._joins is not None:
            # The calls the driver's frames still hold reach their joins, and a join's branch
            # errors are in the outcome.
            for join in self._joins:
                join.errors = []
            self._joins = None
        return outcome

    @property
    def finished(self) -> bool:
        """Whether the run has reached its outcome."""
        return self._phase == "done"

    @property
    def compensating(self) -> bool:
        """Whether the run has failed and is being undone: what `poll()` hands out now are
        compensations (a driver shields them from the cancellation that failed the run)."""
        return self._phase == "compensating"

    @property
    def in_flight(self) -> int:
        """How many calls handed out are not reported yet."""
        return self._in_flight

    @property
    def effect_scopes(self) -> tuple[AroundEffect, ...]:
        """What the driver enters around every effect it performs (see
        `fsaga.events.EffectScope`); empty in most runs."""
        return self._settings.effect_scopes

    def context_of(self, call: Call) -> StepContext:
        """What the effect `call` performs may know about itself (`fsaga.current_context()`)."""
        kind = call.kind
        if kind == "sleep":
            raise ValueError(f"a wait before a retry has no step context: {call!r}")
        if kind == "stretch":
            kind = "action"
        elif kind == "undo-stretch":
            kind = "compensation"
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
        assert kind == "unknown", f"no effect for {call!r}"
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
        return (
            self._settings.on_branch_failure == "cancel"
            and self._phase == "forward"
            and call.stage in _LEGAL["cancel"]
            and call.fiber.join is not None
            and stopping(call.fiber)
        )

    # -- the protocol -----------------------------------------------------------------------

    def poll(self) -> Call | None:
        """The next call to perform, or ``None`` if nothing can start until a call in flight is
        reported (or the run has finished: see `finished`)."""
        while True:
            phase = self._phase
            if phase == "forward":
                if not self._runnable:
                    return None
                fiber, node, value = self._runnable.pop()
                call = self._advance(fiber, node, value)
                if call is not None:
                    return call
            elif phase == "compensating":
                if self._handed_over:
                    return self._handed_over.pop()
                return self._next_compensation()
            else:
                return None

    def succeed(self, call: Call, result: object) -> Call | None:
        """Report that `call` returned `result` (for a sleep: that the wait is over).

        Returns the call that follows directly (the same fiber's next step, say), if any; the
        driver performs it as if `poll()` had returned it.
        """
        stage = call.stage
        if stage not in _HANDED_OUT:
            raise ProtocolError(_illegal("succeed", call))
        call.stage = "settled"
        self._in_flight -= 1
        if stage == "stretch":
            return self._stretch_stopped(call, result, None)
        if stage == "undo-stretch":
            return self._undo_stretch_stopped(call, "succeed", result)
        if stage == "wait" or stage == "undo-wait":
            retried = call.retried
            assert retried is not None
            return self._issue(retried)
        if result is not None and type(result) not in PLAIN_TYPES:
            result, error = unwrap_result(call.path, result)
            if error is not None:
                return self._failed(call, stage, error)
        if stage == "compensation" or stage == "unknown":
            return self._compensation_succeeded(call)
        if stage == "resolving":
            return self._resolved(call, result)
        return self._step_completed(call, result)

    def fail(self, call: Call, error: Exception) -> Call | None:
        """Report that `call` raised `error` (the attempt failed; the engine may retry it).

        Returns the call that follows directly (a retry, say), if any.
        """
        stage = call.stage
        if stage not in _HANDED_OUT:
            raise ProtocolError(_illegal("fail", call))
        call.stage = "settled"
        self._in_flight -= 1
        if stage == "stretch":
            return self._stretch_stopped(call, None, error)
        if stage == "undo-stretch":
            return self._undo_stretch_stopped(call, "fail", error)
        return self._failed(call, stage, error)

    def expire(self, call: Call) -> Call | None:
        """Report that `call` was cancelled because its `deadline` passed.

        An action cut off this way has an unknown outcome (contract rule 3): an idempotent step
        whose own timeout passed is retried; otherwise the step fails with a
        `StepTimeoutError` and is left to the undo (run again if idempotent, else its
        unknown-outcome compensation, else reported unresolved). A compensation that times out
        has failed that attempt.
        """
        stage = self._take(call, "expire")
        error = timeout_error(call)
        if stage == "attempt" or stage == "after-unknown":
            return self._unknown_outcome(call, error, retriable=call.limit is None)
        if stage == "resolving":
            return self._resolution_failed(call, error)
        if stage == "wait" or stage == "undo-wait":
            return self._wait_failed(call, error)
        return self._compensation_failed(call, error)

    def cancel(self, call: Call) -> Call | None:
        """Report that `call` was cancelled because `should_cancel(call)` said so.

        An action cancelled mid-flight has an unknown outcome, left to the undo; its branch ends
        without an error of its own (the outcome carries the sibling's). Only forward work is
        ever cancelled: a compensation that times out is reported with `expire`.
        """
        stage = self._take(call, "cancel")
        error = BranchCancelledError(call.path, call.attempt)
        unknown = stage != "wait" or _waits_after_unknown(call)
        if unknown:
            self._record_unknown(call)  # before the event: a listener may interrupt
        self._emit_step_failed(call, error, unknown=unknown)
        if self._phase == "forward" and call.fiber.join is not None:
            self._branch_settled(call.fiber)
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
        stage = None if call is None else self._take(call, "interrupt")
        if call is not None and stage == "stretch":
            # Record the steps of the stretch that completed before the undo starts from them.
            call = self._stop_stretch(call)
            stage = None if call is None else "attempt"
        elif call is not None and stage == "undo-stretch":
            call = self._stop_undo_stretch(call)
            stage = None if call is None else "compensation"
        if self._phase == "forward":
            self._runnable.clear()
            self._begin_compensation(interruption)
        if call is None or stage is None:
            return  # between calls (or after every step of a stretch completed)
        self._interrupted(call, stage, interruption, started=started)

    # -- reports, by stage --------------------------------------------------------------------

    def _take(self, call: Call, report: Report) -> Stage:
        """Check that `report` is legal for `call` now; settle it and return the stage it was
        in (what the report means depends on it). (`succeed` and `fail`, the common reports,
        do the same inline.)"""
        stage = call.stage
        if stage not in _LEGAL[report]:
            raise ProtocolError(_illegal(report, call))
        call.stage = "settled"
        self._in_flight -= 1
        return stage

    def _failed(self, call: Call, stage: Stage, error: BaseException) -> Call | None:
        """`call`, handed out in `stage`, failed with `error`."""
        if stage == "attempt" or stage == "after-unknown" or stage == "resolving":
            return self._action_failed(call, stage, error)
        if stage == "wait" or stage == "undo-wait":
            # The wait before a retry failed (an injected sleep raised).
            return self._wait_failed(call, error)
        return self._compensation_failed(call, error)

    def _interrupted(
        self, call: Call, stage: Stage, interruption: BaseException, *, started: bool
    ) -> None:
        # A wait before a retry stands for the last attempt that ran (same path, attempt number
        # and start); what it waits to retry tells whether that was an action or a compensation.
        if stage == "undo-wait" or stage == "compensation" or stage == "unknown":
            # Only record it: the driver polls for the next compensation itself.
            self._record_compensation_failure(call, interruption)
            self._release(call)
            return
        if stage == "resolving":
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
            (stage == "attempt" and started)
            or stage == "after-unknown"
            or (stage == "wait" and _waits_after_unknown(call))
        )
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
        if node is None:
            stack = fiber.stack
            if stack and type(stack[-1]) is StepNode:
                # The next step of a `then` chain: what most resumes come to.
                return self._step_reached(fiber, stack.pop())  # type: ignore[arg-type]
        elif type(node) is StepNode:
            return self._step_reached(fiber, node)
        compile_chains = self._stretches and fiber.join is None
        if compile_chains and type(node) is BindNode and isinstance(node.continuation, Saga):
            # A `then` chain: straight to its first stretch, the common start of a run.
            plan = plan_of(node)
            first = plan[0]
            if type(first) is StretchAt:
                stack = fiber.stack
                for index in range(len(plan) - 1, 0, -1):
                    stack.append(plan[index])
                call = self._stretch_reached(fiber, first)
                if call is not None:
                    return call
                node = None
        monotonic = self._settings.monotonic
        while True:
            reached = walk(fiber, node, value, monotonic, compile_chains=compile_chains)
            if type(reached) is StepNode:
                return self._step_reached(fiber, reached)
            if type(reached) is StretchAt:
                call = self._stretch_reached(fiber, reached)
                if call is not None:
                    return call
                node = None  # its steps are on the stack, one by one: go on with them
                continue
            if type(reached) is ParNode:
                self._fork(fiber, reached)
            elif type(reached) is Finished:
                self._fiber_finished(fiber, reached.value)
            else:
                assert type(reached) is Failed
                self._fiber_failed(fiber, reached.error)
                # The error's traceback keeps this frame: it must not keep the error again.
                del reached
            return None

    def _step_reached(self, fiber: Fiber, node: StepNode[Any]) -> Call | None:
        """Claim `node`'s path in the fiber's scope and issue its first attempt."""
        scope = fiber.scope
        counts = scope.counts if scope.pending is None else scope.settle()
        label = node.name
        count = counts.get(label, 0) + 1
        if count > 1 and node.explicit:
            self._fiber_failed(fiber, DuplicateStepNameError(scope.join(label)))
            return None
        counts[label] = count
        call = Call(ACTION, "attempt", node, scope, count, 1, fiber)
        if node.attempt_timeout is None and fiber.deadline is None:
            self._in_flight += 1
            if self._listeners or self._debug:
                self._announce(call)
            return call
        return self._start_attempt(call, fiber.deadline)

    def _fork(self, parent: Fiber, node: ParNode[object]) -> None:
        branches = node.branches
        if not branches:
            self._runnable.append((parent, None, ()))
            return
        join = Join(parent, len(branches))
        if self._joins is None:
            self._joins = [join]
        else:
            self._joins.append(join)
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
            self._finish(Success(value))  # type: ignore[arg-type]  # the root's value is a _T
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

    # -- stretches of plain steps (see `_plan`) ------------------------------------------------

    def _stretch_reached(self, fiber: Fiber, at: StretchAt) -> Call | None:
        """Hand out the stretch `at` as one call if it may run as one (nothing else in flight,
        no deadline, no name it would claim twice); else put its steps on the fiber's stack,
        one by one, for the general path (None)."""
        scope = fiber.scope
        nodes = at.stretch.nodes
        if (
            self._in_flight
            or fiber.deadline is not None
            or (self._sync and at.stretch.async_undo)
            or (
                (scope.counts or scope.pending is not None)
                and _claims_twice(scope, nodes, at.start)
            )
        ):
            stack = fiber.stack
            for index in range(len(nodes) - 1, at.start - 1, -1):
                stack.append(nodes[index])
            return None
        run = StretchRun(at, scope, fiber)
        call = Call(STRETCH, "stretch", run.nodes[0], scope, 0, 1, fiber)
        call.stretch = run
        self._in_flight += 1
        return call

    def _stretch_stopped(self, call: Call, result: object, error: Exception | None) -> Call | None:
        """The driver reported the stretch `call`: every step returned a plain value, or the
        step at ``len(results)`` returned `result` (anything else) or raised `error`."""
        run = call.stretch
        assert run is not None
        results = run.results
        if len(results) == len(run.nodes):
            if self._phase != "forward":
                # It finished after the run had started to fail (an interrupt between calls
                # came while it ran): its steps are undone too, and nothing follows them.
                self._stretch_completed(run)
                return None
            fiber = run.fiber
            if not fiber.stack and fiber.join is None:
                # The saga ends with it: nothing can look at its paths or undo it any more.
                self._finish(Success(results[-1]))  # type: ignore[arg-type]  # the root's is a _T
                return None
            self._stretch_completed(run)
            return self._advance(fiber, None, results[-1])
        if (
            error is not None
            and self._phase == "forward"
            and run.fiber.join is None
            and run.nodes[len(results)].retry is None
            and not isinstance(error, (ResultRejectedError, UnknownOutcomeError))
        ):
            # A plain failure of a step with no retry, on the root's line of control: the run
            # fails with it (what `_action_failed` decides for it), and nothing looks at the
            # step itself (no listener, no retry, no par), so no call of its own is made.
            if results:
                self._record_stretch(run)
            self._begin_compensation(error)
            return None
        step = self._stop_stretch(call)
        assert step is not None
        self._in_flight += 1  # the stretch's place in flight is now the step's
        if error is not None:
            return self.fail(step, error)
        return self.succeed(step, result)

    def _stretch_completed(self, run: StretchRun) -> None:
        """Every step of `run` completed: its steps count in their scope, and it stands in the
        undo log for those that have a compensation (both made only if someone looks)."""
        scope = run.scope
        if scope.pending is None:
            scope.pending = [run]
            # The scope and the run hold each other until it is settled: `take_outcome` lets go.
            if self._lazy_scopes is None:
                self._lazy_scopes = [scope]
            else:
                self._lazy_scopes.append(scope)
        else:
            scope.pending.append(run)
        self._record_stretch(run)

    def _record_stretch(self, run: StretchRun) -> None:
        """Put the steps of `run` that completed in the undo log (as one record, until the
        undo reads it)."""
        if self._phase == "forward":
            self._completed.append(run)
        else:
            self._completed.extend(self._expand([run]))

    def _stop_stretch(self, call: Call) -> Call | None:
        """The stretch `call` stopped at the step at index ``len(results)``: record the steps
        before it, and return that step as a call of its own, in its attempt (counted as a
        completed stretch and None if every step completed)."""
        run = call.stretch
        assert run is not None
        index = len(run.results)
        if index == len(run.nodes):
            self._stretch_completed(run)
            return None
        count = run.count(index)  # counts the steps before it in, too
        if index:
            self._record_stretch(run)
        fiber = run.fiber
        nodes = run.nodes
        if index + 1 < len(nodes):
            # The rest of the stretch, for whatever the general path decides next.
            fiber.stack.append(StretchAt(run.at.stretch, run.at.start + index + 1))
        return Call(ACTION, "attempt", nodes[index], run.scope, count, 1, fiber)

    def _expand(
        self, records: list[Call | StretchRun], *, only: list[int] | None = None
    ) -> list[Call]:
        """The undo log, with each completed stretch replaced by a record per step of it that
        has a compensation (`only` those steps, given in completion order)."""
        expanded: list[Call] = []
        for record in records:
            if type(record) is Call:
                expanded.append(record)
                continue
            assert type(record) is StretchRun
            done = len(record.results)
            if done > record.counted:
                record.count_in(record.scope.settle(), done)
            nodes = record.nodes
            results = record.results
            counts = record.step_counts
            for index in range(done) if only is None else only:
                node = nodes[index]
                if node.compensate is not None:
                    step = Call(
                        ACTION, "completed", node, record.scope, counts[index], 1, record.fiber
                    )
                    step.argument = results[index]
                    expanded.append(step)
        return expanded

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
        bind_attempt(call, limit, now)
        return call

    def _could_not_start(self, call: Call, limit: Deadline) -> None:
        """`limit` passed before `call`'s attempt could start: the step fails with a timeout."""
        error = not_started_error(call, limit)
        if self._debug:
            logger.debug("saga %s: %s", self.saga_id, error)
        self._unstarted(call, error, after_unknown=call.stage == "after-unknown", announced=False)

    def _not_started(self, call: Call, stage: Stage, report: NotStarted) -> None:
        """The driver's `Perform` function says the run it replays never started `call`'s
        attempt (see `NotStarted`): the step fails as it did in that run."""
        limit = call.fiber.deadline if self._phase == "forward" else None
        error = report.error
        if not report.recorded and limit is not None:
            error = not_started_error(call, limit)
        self._unstarted(call, error, after_unknown=stage == "after-unknown", announced=True)

    def _unstarted(
        self, call: Call, error: BaseException, *, after_unknown: bool, announced: bool
    ) -> None:
        """`call`'s attempt did not start (`error` says why): the step fails, without a retry.
        `announced`: a `StepStarted` was emitted for the attempt all the same."""
        fiber = call.fiber
        call.stage = "settled"
        if call.attempt == 1:
            # The step never began: no attempt of it ran, so there is no attempt to report,
            # unless it was announced.
            if announced:
                self._step_failed(call, error)
            else:
                self._fiber_failed(fiber, error)
            return
        # A retry that cannot start: the step fails as its last attempt that ran, as when the
        # wait before the retry outlasts the deadline (`_wait_failed`).
        last = call.derive(ACTION, "settled", call.attempt - 1)
        last.started_at = call.started_at
        if after_unknown:
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
            limit = call.fiber.deadline if self._phase == "forward" else None
            if call.node.attempt_timeout is not None or limit is not None:
                return self._start_attempt(call, limit)
        self._in_flight += 1
        if self._listeners or self._debug:
            self._announce(call)
        if kind is COMPENSATION or kind is UNKNOWN:
            # Counted from after the listeners.
            bind_compensation(call, self._settings.monotonic)
        return call

    def _announce(self, call: Call) -> None:
        if self._listeners:
            call.started_at = at = self._settings.clock()
            event: Event
            if call.kind is ACTION:
                event = StepStarted(self.saga_id, call.path, call.attempt, at, call.fiber.branch)
            else:
                event = CompensationStarted(self.saga_id, call.path, call.attempt, at)
            try:
                self._emit(event)
            except BaseException as interruption:
                # A listener raised an interrupt (`_emit` ignores only Exceptions): this call
                # never reaches the driver, which reports the interruption as coming between
                # calls. Settle the call here so the run can still finish compensating.
                self._in_flight -= 1
                stage = call.stage
                call.stage = "settled"
                if call.kind is not ACTION:
                    self._record_compensation_failure(call, interruption)
                    self._release(call)
                elif stage == "resolving":
                    self._unresolved_by_interrupt(call)
                raise
        if self._debug:
            logger.debug(
                "saga %s: %s %s attempt %d", self.saga_id, call.kind, call.path, call.attempt
            )

    def _action_failed(self, call: Call, stage: Stage, error: BaseException) -> Call | None:
        if isinstance(error, ResultRejectedError):
            return self._result_rejected(call, stage, error)
        if stage == "resolving":
            return self._resolution_failed(call, error)
        if type(error) is NotStarted:
            self._not_started(call, stage, error)
            return None
        if isinstance(error, UnknownOutcomeError):
            # The effect itself says it cannot tell whether it took effect.
            retriable = not isinstance(error, NonRetryableError)
            return self._unknown_outcome(call, error, retriable=retriable)
        if self._phase != "forward":
            # It failed after the run had started to fail: no retry, nothing to undo.
            self._emit_step_failed(call, error, unknown=False)
            return None
        retry = call.node.retry
        if retry is not None and call.attempt < retry.attempts and retry.should_retry(error):
            return self._retry(call, "attempt", retry, error)
        self._step_failed(call, error)
        return None

    def _step_completed(self, call: Call, result: object) -> Call | None:
        compensable = call.node.compensate is not None
        if compensable:
            call.stage = "completed"
            call.argument = result
            self._completed.append(call)
        if self._listeners:
            self._emit_step_completed(call, result, compensable=compensable)
        if self._phase != "forward":
            return None  # it finished after the run had started to fail: it is undone too
        return self._advance(call.fiber, None, result)

    def _result_rejected(
        self, call: Call, stage: Stage, rejected: ResultRejectedError
    ) -> Call | None:
        """The effect took place with `rejected.result`, but the step fails with
        `rejected.error`: it completed (its compensation gets the result), and running it again
        cannot help, so it fails without a retry."""
        result = rejected.result
        if stage == "resolving":
            return self._resolved(call, result)
        compensable = call.node.compensate is not None
        if compensable:
            call.stage = "completed"
            call.argument = result
            self._completed.append(call)
        if self._listeners:
            self._emit_step_completed(call, result, compensable=compensable)
        if self._phase != "forward":
            # A late completion: undone with the rest, as in `succeed`.
            self._emit_step_failed(call, rejected.error, unknown=False)
            return None
        self._step_failed(call, rejected.error)
        return None

    def _step_failed(self, call: Call, error: BaseException) -> None:
        self._emit_step_failed(call, error, unknown=False)
        if self._debug:
            logger.debug("saga %s: step %s failed: %r", self.saga_id, call.path, error)
        self._fiber_failed(call.fiber, error)

    def _retry(self, call: Call, stage: Stage, retry: Retry, error: BaseException) -> Call | None:
        """The next attempt of `call`, in `stage`, or the wait that precedes it."""
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
        retried = call.derive(call.kind, stage, attempt)
        # Until it starts, a retry carries the start of the attempt it follows: a deadline that
        # keeps it from starting fails the step as that attempt (`_could_not_start`).
        retried.started_at = call.started_at
        if delay <= 0:
            return self._issue(retried)
        forward = call.kind is ACTION
        wait = call.derive(SLEEP, "wait" if forward else "undo-wait", call.attempt)
        wait.retried = retried
        wait.started_at = call.started_at
        wait.delay = delay
        deadline = call.fiber.deadline
        if forward and deadline is not None:
            wait.deadline = deadline.at
            wait.limit = deadline
        self._in_flight += 1
        return wait

    # -- unknown outcomes (contract rule 3; the rule itself is in `_unknown`) ------------------

    def _unknown_outcome(self, call: Call, error: BaseException, *, retriable: bool) -> Call | None:
        """An action attempt was cut off: retry it if that is safe, else leave it to the undo."""
        if self._phase == "forward":
            retry = _unknown.forward_retry(call.node, call.attempt, retriable=retriable)
            if retry is not None:
                return self._retry(call, "after-unknown", retry, error)
        self._left_unknown(call, error)
        if self._phase == "forward":
            self._fiber_failed(call.fiber, error)
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
        retried = wait.retried
        assert retried is not None
        if retried.kind is not ACTION:
            return self._compensation_failed_for_good(wait, error)
        if retried.stage == "after-unknown":
            self._left_unknown(wait, error)
            self._fiber_failed(wait.fiber, error)
        else:
            self._step_failed(wait, error)
        return None

    def _record_unknown(self, call: Call) -> None:
        if _unknown.recorded(call.node):
            if call.kind is SLEEP:
                # The record stands for the attempt the wait followed.
                call.kind = ACTION
            call.stage = "outcome-unknown"
            self._completed.append(call)

    def _undo_call(self, record: Call) -> Call | None:
        """The first call of `record`'s undo, issued; None if there is nothing to run (the step
        is then reported unresolved)."""
        if record.stage == "completed":
            # The completed step's record becomes its compensation's first attempt: the driver
            # is done with it, and sparing a new call per undo is measurable on the failure path.
            record.kind = COMPENSATION
            record.stage = "compensation"
            record.attempt = 1
            return self._issue(record)
        assert record.stage == "outcome-unknown", record
        settlement = _unknown.settlement(record.node)
        if settlement == "run-again":
            # Run it again, same idempotency key, to learn the result its compensation needs.
            return self._issue(record.derive(ACTION, "resolving", record.attempt + 1))
        return self._settle_without_result(record, settlement)

    def _unknown_fallback(self, call: Call) -> Call | None:
        return self._settle_without_result(call, _unknown.without_result(call.node))

    def _settle_without_result(self, call: Call, settlement: _unknown.Settlement) -> Call | None:
        if settlement == "on-unknown":
            return self._issue(call.derive(UNKNOWN, "unknown", 1))
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
        call.stage = "compensation"
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
        if self._phase != "forward":
            return
        self._phase = "compensating"
        concurrent = self._settings.concurrent_compensation
        records = self._completed
        if concurrent and self._stretches:
            # The causal order schedules calls, one record per step.
            records = self._completed = self._expand(records)  # type: ignore[assignment]
        self._undo = Undo(error, records, concurrent=concurrent)
        if self._debug:
            logger.debug(
                "saga %s: failed with %r; compensating %d step(s)",
                self.saga_id,
                error,
                len(records),
            )

    def _next_compensation(self) -> Call | None:
        """The next call of the undo, once nothing forward is in flight: the undo log in
        reverse, one record at a time, or (concurrently) any record the causal order lets
        start."""
        undo = self._undo
        assert undo is not None
        if undo.concurrent:
            if undo.order is None and self._in_flight:
                return None
            while (ready := undo.next_ready()) is not None:
                call = self._undo_call(ready)
                if call is not None:
                    return call
                undo.release(ready)
            if not self._in_flight:
                self._finish(undo.outcome())
            return None
        if self._in_flight:
            return None
        while (record := undo.next_newest()) is not None:
            if type(record) is StretchRun:
                call = self._undo_stretch(undo, record)
            else:
                assert type(record) is Call
                call = self._undo_call(record)
            if call is not None:
                return call
        self._finish(undo.outcome())
        return None

    def _undo_stretch(self, undo: Undo, run: StretchRun) -> Call | None:
        """The undo of the stretch `run`'s completed steps as one call, newest first; or, if a
        compensation of it needs more than a plain call (a deadline of its own), its records
        put back in the undo log one by one, and the first of their undo."""
        order = run.compensable()
        if not order:
            return None
        nodes = run.nodes
        if run.at.stretch.undo_timeouts:
            records = self._expand([run])
            undo.put_back(records)
            record = undo.next_newest()
            assert type(record) is Call
            return self._undo_call(record)
        run.undo_order = order
        run.undone = []
        call = Call(UNDO_STRETCH, "undo-stretch", nodes[order[0]], run.scope, 0, 1, run.fiber)
        call.stretch = run
        self._in_flight += 1
        return call

    def _undo_stretch_stopped(
        self, call: Call, report: Literal["succeed", "fail"], value: object
    ) -> Call | None:
        """The driver reported the undo-stretch `call`: every compensation returned a plain
        value, or the one at ``len(undone)`` returned `value` (anything else) or raised it."""
        step = self._stop_undo_stretch(call)
        if step is None:
            return self._next_compensation()
        self._in_flight += 1  # the stretch's place in flight is now the compensation's
        if report == "fail":
            assert isinstance(value, Exception)
            return self.fail(step, value)
        return self.succeed(step, value)

    def _stop_undo_stretch(self, call: Call) -> Call | None:
        """The undo-stretch `call` stopped at its compensation at ``len(undone)``: report the
        ones before it compensated, put the records of the older steps back in the undo log,
        and return that compensation as a call of its own (None if every one ran)."""
        run = call.stretch
        assert run is not None
        undo = self._undo
        assert undo is not None
        order = run.undo_order
        done = len(run.undone)
        if done == len(order):
            undo.compensated.extend(run.paths_of(order))
            return None
        if done:
            undo.compensated.extend(run.paths_of(order[:done]))
        index = order[done]
        rest = order[done + 1 :]
        if rest:
            undo.put_back(self._expand([run], only=rest[::-1]))
        step = Call(
            COMPENSATION,
            "compensation",
            run.nodes[index],
            run.scope,
            run.count(index),
            1,
            run.fiber,
        )
        step.argument = run.results[index]
        return step

    def _undo_done(self, call: Call) -> Call | None:
        """`call`'s record is undone (or given up on): what may run next."""
        self._release(call)
        return self.poll()

    def _release(self, call: Call) -> None:
        """`call`'s record is undone: let the causal order start what waited for it."""
        undo = self._undo
        if undo is not None:
            undo.release(call)

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
        if undo.order is None and not self._in_flight:
            return self._next_compensation()  # the sequential undo's common case, directly
        return self._undo_done(call)

    def _compensation_failed(self, call: Call, error: BaseException) -> Call | None:
        retry = call.node.compensation_retry
        if retry is not None and call.attempt < retry.attempts and retry.should_retry(error):
            stage: Stage = "compensation" if call.kind is COMPENSATION else "unknown"
            return self._retry(call, stage, retry, error)
        return self._compensation_failed_for_good(call, error)

    def _compensation_failed_for_good(self, call: Call, error: BaseException) -> Call | None:
        self._record_compensation_failure(call, error)
        return self._undo_done(call)

    def _record_compensation_failure(self, call: Call, error: BaseException) -> None:
        undo = self._undo
        assert undo is not None
        undo.failures.append(CompensationFailure(call.path, error, call.attempt))
        if self._settings.on_compensation_failure == "stop":
            undo.skip_the_rest()
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

    # -- events and the end -------------------------------------------------------------------

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
                call.fiber.branch,
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
                    branch=call.fiber.branch,
                )
            )

    def _finish(self, outcome: Outcome[_T]) -> None:
        self._phase = "done"
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


def _waits_after_unknown(call: Call) -> bool:
    """Whether `call` is the wait before retrying an attempt whose outcome is unknown."""
    retried = call.retried
    return call.kind is SLEEP and retried is not None and retried.stage == "after-unknown"


def _claims_twice(scope: Scope, nodes: tuple[StepNode[Any], ...], start: int) -> bool:
    """Whether a step of `nodes` from `start` on would claim an explicit name the scope has
    already given out (a stretch never holds one twice itself: see `_plan`)."""
    counts = scope.settle()
    return any(
        nodes[index].explicit and nodes[index].name in counts for index in range(start, len(nodes))
    )


def _illegal(report: Report, call: Call) -> str:
    stage = call.stage
    if stage == "settled" or stage == "completed" or stage == "outcome-unknown":
        why = "it has been reported already (every call is reported exactly once)"
    elif report == "cancel":
        why = "only forward work in a par branch is cancelled; report a deadline with expire()"
    else:
        why = "a stretch has no deadline to pass"
    return f"engine protocol: {report}() of {call!r} refused: {why}"
