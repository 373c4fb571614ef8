"""The engine's driver protocol, driven by random legal reports (a hypothesis state machine).

A driver asks the engine for calls with `poll()` and reports each one back exactly once:
`succeed`, `fail`, `expire` (its deadline passed), `cancel` (when `should_cancel` says so) or
`interrupt`; a report may return the call that follows, which the driver holds as if `poll()`
had returned it (docs/design.md, "The engine"). `EngineProtocol` is such a driver, over one
generated saga after another: it holds every call the engine hands out, reports any of them,
in any order, in any way the protocol allows, collects several at once (`par` branches), lets
time pass and interrupts between calls. It checks that:

- every call handed out is reported exactly once, in a stage that matches its kind, and the
  engine hands a call out again only as the compensation of the step it completed;
- `in_flight` counts the calls the driver holds (and those the engine issued for its next
  `poll()` to hand out), and never goes negative;
- when nothing is in flight and `poll()` returns ``None``, the run has finished; driven by
  successes alone it always finishes, within a bounded number of reports;
- the outcome is a `Success`, `Failure` or `PartialFailure`: never a `Success` once a step
  failed for good or the run was interrupted, and always one when every report was a success
  and no deadline could pass;
- a call reported already (whatever the report), a cancelled compensation and an expired
  stretch are refused with a `ProtocolError` that names the call, and change nothing.

The engine performs nothing, so no effect runs: results are made up. No listener is set, so
nothing but a `ProtocolError` may ever come out of the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Final, Literal

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from hypothesis.strategies import SearchStrategy
from returns.result import Failure as ReturnsFailure
from returns.result import Success as ReturnsSuccess

from fsaga import (
    Failure,
    NonRetryableError,
    PartialFailure,
    Success,
    UnknownOutcomeError,
    step,
)
from fsaga.errors import ResultRejectedError
from fsaga.interpreter._call import NO_DEADLINE, Call, CallKind, Stage
from fsaga.interpreter._engine import Engine, ProtocolError, Report
from fsaga.interpreter.settings import BranchFailurePolicy, CompensationPolicy, EngineSettings
from fsaga.testing.strategies import ParSpec, SagaSpec, ThenSpec, World, build_saga, saga_specs

# -- what the protocol says, written out here rather than read from the engine -----------------

_KIND_OF: Final[dict[Stage, CallKind]] = {
    "attempt": "action",
    "after-unknown": "action",
    "resolving": "action",
    "compensation": "compensation",
    "unknown": "unknown",
    "wait": "sleep",
    "undo-wait": "sleep",
    "stretch": "stretch",
    "undo-stretch": "undo-stretch",
}
"""The stages a call is handed out in, and the kind of call each one is."""

_FORWARD: Final = frozenset[Stage]({"attempt", "after-unknown", "wait", "stretch"})
"""Stages of the forward run: an error reported in one of them fails that attempt of a step."""

_UNDO: Final = frozenset[Stage](
    {"resolving", "compensation", "unknown", "undo-wait", "undo-stretch"}
)
"""Stages of the undo, which is never cancelled."""

_REPORTED: Final = frozenset[Stage]({"settled", "completed", "outcome-unknown"})
"""Stages a call is in once reported, unless the undo hands it out again."""

_MAX_REPORTS_TO_FINISH: Final = 2_000
"""Reports a run driven by successes alone must finish within (generated sagas are small)."""

# -- what a driver reports ----------------------------------------------------------------------


class _UnretriableUnknownOutcome(UnknownOutcomeError, NonRetryableError):
    """An unknown outcome the effect says must not be retried."""


_ERRORS: Final = st.sampled_from(
    (
        ValueError("declined"),
        NonRetryableError("declined for good"),
        UnknownOutcomeError("no answer"),
        _UnretriableUnknownOutcome("no answer, do not ask again"),
        ResultRejectedError(7, ValueError("rejected")),
    )
)
"""What an effect raises (reported with `fail`)."""

_RETURNED_FAILURES: Final = st.sampled_from(
    (
        ReturnsFailure(ValueError("refused")),
        ReturnsFailure("refused"),
        ReturnsFailure(ResultRejectedError(8, ValueError("rejected"))),
    )
)
"""What an effect returns to say it failed (reported with `succeed`)."""

_PLAIN_RESULTS: Final = st.integers(0, 3)
"""Plain results: their parity picks a generated bind continuation's branch."""

# -- what runs ----------------------------------------------------------------------------------


def _chain(specs: tuple[SagaSpec, ...]) -> SagaSpec:
    chain = specs[0]
    for spec in specs[1:]:
        chain = ThenSpec(chain, spec)
    return chain


def _parts(max_leaves: int) -> SearchStrategy[tuple[SagaSpec, ...]]:
    """2 to 6 small sagas, each naming its steps apart from the others'."""
    parts = tuple(
        saga_specs(max_leaves=max_leaves, namespace=f"part{index}-", unknown_outcomes=True)
        for index in range(6)
    )
    return st.integers(2, len(parts)).flatmap(lambda count: st.tuples(*parts[:count]))


_CHAINS: Final = _parts(max_leaves=1).map(_chain)

_SPECS: Final = st.one_of(
    saga_specs(max_leaves=8, timeouts=True),
    saga_specs(max_leaves=8, unknown_outcomes=True),
    saga_specs(max_leaves=8),
    # `then` chains of (mostly) plain steps: what an engine with stretches runs as one call
    # (drawn twice as often as the others: they are what makes stretches).
    _CHAINS,
    _CHAINS,
    # `par` branches side by side: calls in flight together, cancelled when a sibling fails.
    _parts(max_leaves=2).map(ParSpec),
)


@dataclass(frozen=True)
class RunPlan:
    """What one run is made of: a saga and its engine's settings."""

    spec: SagaSpec
    stretches: Literal["sync", "async"] | None
    on_compensation_failure: CompensationPolicy
    concurrent_compensation: bool
    on_branch_failure: BranchFailurePolicy
    run_timeout: float | None


_RUN_PLANS: Final = st.builds(
    RunPlan,
    spec=_SPECS,
    stretches=st.sampled_from(("sync", None, "async")),
    on_compensation_failure=st.sampled_from(("continue", "stop")),
    concurrent_compensation=st.booleans(),
    on_branch_failure=st.sampled_from(("settle", "cancel")),
    run_timeout=st.sampled_from((None, 30.0, 3.0)),
)


@dataclass
class _Clock:
    """The engine's monotonic clock: it moves only when the driver lets time pass."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(eq=False)
class HandOut:
    """One call the engine handed out (the same `Call` may be handed out again later, as a
    compensation), and how the driver reported it."""

    call: Call
    stage: Stage
    report: Report | None = None


@dataclass
class _Run:
    """What the driver knows about the run so far."""

    hand_outs: list[HandOut] = field(default_factory=list)
    held: list[HandOut] = field(default_factory=list)
    # How the last forward call of each step that ran ended (True: with an error), by the ids
    # of its node and fiber, both kept alive in `keep_alive` so their ids stay theirs.
    failing: dict[tuple[int, int], bool] = field(default_factory=dict)
    keep_alive: list[object] = field(default_factory=list)
    errors_reported: bool = False
    interrupted: bool = False
    time_passed: bool = False


# -- the state machine ----------------------------------------------------------------------------


class EngineProtocol(RuleBasedStateMachine):
    """A driver that reports the calls it holds in random, legal ways (see the module)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = _Clock()
        self.run = _Run()
        self.engine: Engine[object] | None = None

    @property
    def _engine(self) -> Engine[object]:
        assert self.engine is not None
        return self.engine

    @initialize(plan=_RUN_PLANS)
    def start(self, plan: RunPlan) -> None:
        self._start(plan)

    @precondition(lambda self: self._engine.finished)
    @rule(plan=_RUN_PLANS)
    def start_another_run(self, plan: RunPlan) -> None:
        """The run has its outcome: the driver goes on with another."""
        self._check_outcome()
        self._start(plan)

    def _start(self, plan: RunPlan) -> None:
        self.clock = _Clock()
        self.run = _Run()
        engine_settings = EngineSettings(
            monotonic=self.clock,
            clock=self.clock,
            random_unit=lambda: 0.0,
            on_compensation_failure=plan.on_compensation_failure,
            concurrent_compensation=plan.concurrent_compensation,
            on_branch_failure=plan.on_branch_failure,
            run_timeout=plan.run_timeout,
        )
        saga = build_saga(plan.spec, World())
        self.engine = Engine(saga, engine_settings, stretches=plan.stretches)

    # -- the driver's moves ---------------------------------------------------------------------

    @precondition(lambda self: not self._engine.finished)
    @rule(data=st.data())
    def drive(self, data: st.DataObject) -> None:
        """The driver's next move: mostly a report of a call it holds (which may hand it the
        next one), else a poll, time passing, or an interrupt between calls."""
        held = self.run.held
        moves = ["report"] * 4 if held else []
        # A driver that cancels siblings looks for calls to cancel once a branch has failed.
        doomed = [hand_out for hand_out in held if self._engine.should_cancel(hand_out.call)]
        if doomed:
            moves = ["cancel"] * 4 + moves
        moves += ["poll every call", "poll"] * 2 + ["time passes", "interrupt between calls"]
        move = data.draw(st.sampled_from(moves), label="move")
        if move == "report":
            hand_out = data.draw(st.sampled_from(held), label="call")
            if hand_out.stage == "stretch":
                self._report_a_stretch(data, hand_out)
            elif hand_out.stage == "undo-stretch":
                self._report_an_undo_stretch(data, hand_out)
            else:
                self._report_a_call(data, hand_out)
        elif move == "cancel":
            self._cancel(data.draw(st.sampled_from(doomed), label="call"))
        elif move == "time passes":
            self.clock.now += data.draw(st.sampled_from((0.5, 2.0, 10.0)), label="seconds")
            self.run.time_passed = True
        elif move == "interrupt between calls":
            self.run.interrupted = True
            self._engine.interrupt(None, KeyboardInterrupt())
        else:
            self._poll(every_call=move == "poll every call")

    def _poll(self, *, every_call: bool) -> None:
        """Ask for the next call, or (as a concurrent driver does) for every call that can
        run now."""
        while (call := self._engine.poll()) is not None:
            self._handed(call)
            if not every_call:
                break
        if not self.run.held:
            self._assert_finished_when_idle()

    def _report_a_call(self, data: st.DataObject, hand_out: HandOut) -> None:
        """Report a call (not a stretch) in a way the protocol allows."""
        call = hand_out.call
        # Mostly successes, so that runs get far before they fail (if they do at all).
        reports = ["succeed"] * 4 + ["fail", "returned failure", "interrupt"]
        if call.deadline != NO_DEADLINE:
            reports += ["expire"] * 2
        if self._engine.should_cancel(call):
            assert hand_out.stage not in _UNDO, f"{call!r}: the undo is never cancelled"
            reports.append("cancel")
        report = data.draw(st.sampled_from(reports), label="report")
        if report == "succeed":
            result = data.draw(_PLAIN_RESULTS | _PLAIN_RESULTS.map(ReturnsSuccess), label="result")
            self._succeed(hand_out, result)
        elif report == "returned failure":
            self._succeed(hand_out, data.draw(_RETURNED_FAILURES, label="result"))
        elif report == "fail":
            self._fail(hand_out, data.draw(_ERRORS, label="error"))
        elif report == "expire":
            self._step_ended(hand_out, error=True)
            self._settle(hand_out, "expire")
            self._handed(self._engine.expire(call))
        elif report == "cancel":
            self._cancel(hand_out)
        else:
            self._interrupt(hand_out, started=data.draw(st.booleans(), label="started"))

    def _report_a_stretch(self, data: st.DataObject, hand_out: HandOut) -> None:
        """Run some of a stretch's steps with plain results, then report where it stopped."""
        stretch = hand_out.call.stretch
        assert stretch is not None
        assert not stretch.results, "a stretch handed out with results already"
        size = len(stretch.nodes)
        ran = data.draw(st.integers(0, size), label="steps that returned plain values")
        stretch.results.extend(data.draw(_PLAIN_RESULTS) for _ in range(ran))
        report = data.draw(st.sampled_from(("succeed", "fail", "interrupt")), label="report")
        if report == "interrupt":
            self._interrupt(hand_out, started=data.draw(st.booleans(), label="started"))
        elif ran == size:
            self._succeed(hand_out, None)  # every step ran
        elif report == "fail":
            self._fail(hand_out, data.draw(_ERRORS, label="error"))
        else:
            # It stopped at a step that returned something not plain: a `returns` container.
            returned = _PLAIN_RESULTS.map(ReturnsSuccess) | _RETURNED_FAILURES
            self._succeed(hand_out, data.draw(returned, label="result"))

    def _report_an_undo_stretch(self, data: st.DataObject, hand_out: HandOut) -> None:
        """Run some of an undo-stretch's compensations with plain results, then report where it
        stopped."""
        stretch = hand_out.call.stretch
        assert stretch is not None
        assert not stretch.undone, "an undo-stretch handed out with results already"
        size = len(stretch.undo_order)
        ran = data.draw(st.integers(0, size), label="compensations that returned plain values")
        stretch.undone.extend(data.draw(_PLAIN_RESULTS) for _ in range(ran))
        report = data.draw(st.sampled_from(("succeed", "fail", "interrupt")), label="report")
        if report == "interrupt":
            self._interrupt(hand_out, started=data.draw(st.booleans(), label="started"))
        elif ran == size:
            self._succeed(hand_out, None)  # every compensation ran
        elif report == "fail":
            self._fail(hand_out, data.draw(_ERRORS, label="error"))
        else:
            self._succeed(hand_out, data.draw(_RETURNED_FAILURES, label="result"))

    # -- reports the protocol allows ----------------------------------------------------------

    def _succeed(self, hand_out: HandOut, result: object) -> None:
        self._step_ended(hand_out, error=isinstance(result, ReturnsFailure))
        self._settle(hand_out, "succeed")
        self._handed(self._engine.succeed(hand_out.call, result))

    def _fail(self, hand_out: HandOut, error: Exception) -> None:
        self._step_ended(hand_out, error=True)
        self._settle(hand_out, "fail")
        self._handed(self._engine.fail(hand_out.call, error))

    def _cancel(self, hand_out: HandOut) -> None:
        self._step_ended(hand_out, error=True)
        self._settle(hand_out, "cancel")
        self._handed(self._engine.cancel(hand_out.call))

    def _interrupt(self, hand_out: HandOut, *, started: bool) -> None:
        self.run.interrupted = True
        self._settle(hand_out, "interrupt")
        self._engine.interrupt(hand_out.call, KeyboardInterrupt(), started=started)

    def _handed(self, call: Call | None) -> None:
        """The engine handed out `call` (from `poll()` or a report), if any."""
        if call is None:
            return
        assert not self._engine.finished, f"{call!r} handed out after the run finished"
        assert call.stage in _KIND_OF, f"{call!r} handed out in a stage not to be reported"
        assert call.kind == _KIND_OF[call.stage], f"{call!r}: a {call.kind} in this stage"
        before = [hand_out for hand_out in self.run.hand_outs if hand_out.call is call]
        if before:
            # Only a completed step's record comes back, as its compensation's first attempt.
            assert all(hand_out.report is not None for hand_out in before), (
                f"{call!r} handed out again while in flight"
            )
            assert call.stage == "compensation", f"{call!r} handed out again"
        hand_out = HandOut(call, call.stage)
        self.run.hand_outs.append(hand_out)
        self.run.held.append(hand_out)

    def _settle(self, hand_out: HandOut, report: Report) -> None:
        assert hand_out.report is None, f"{hand_out.call!r} is reported once, by the driver"
        hand_out.report = report
        self.run.held.remove(hand_out)

    def _step_ended(self, hand_out: HandOut, *, error: bool) -> None:
        """Note how a forward call of a step ended, before it is reported (for a stretch: the
        step it stopped at, if any)."""
        if error:
            self.run.errors_reported = True
        if hand_out.stage not in _FORWARD:
            return
        call = hand_out.call
        node: object = call.node
        if call.stretch is not None:
            stopped_at = len(call.stretch.results)
            if stopped_at == len(call.stretch.nodes):
                return  # every step of it returned a plain value
            node = call.stretch.nodes[stopped_at]
        self.run.keep_alive += (node, call.fiber)
        self.run.failing[id(node), id(call.fiber)] = error

    # -- what the engine refuses ----------------------------------------------------------------

    @precondition(lambda self: any(hand_out.report for hand_out in self.run.hand_outs))
    @rule(
        data=st.data(),
        report=st.sampled_from(("succeed", "fail", "expire", "cancel", "interrupt")),
    )
    def report_again(self, data: st.DataObject, report: Report) -> None:
        """A call reported already (and not handed out since) is refused, whatever the report."""
        held = [hand_out.call for hand_out in self.run.held]
        again = [
            hand_out
            for hand_out in self.run.hand_outs
            if hand_out.report is not None and all(hand_out.call is not call for call in held)
        ]
        if not again:
            return
        call = data.draw(st.sampled_from(again), label="reported call").call
        assert call.stage in _REPORTED, f"{call!r} reported, not handed out, yet in that stage"
        message = self._refused(report, call)
        assert "reported already" in message

    @precondition(
        lambda self: any(
            hand_out.stage in _UNDO or hand_out.stage == "stretch" for hand_out in self.run.held
        )
    )
    @rule(data=st.data())
    def cancel_the_undo_or_expire_a_stretch(self, data: st.DataObject) -> None:
        """The undo is never cancelled, and a stretch has no deadline to pass."""
        candidates = [
            hand_out
            for hand_out in self.run.held
            if hand_out.stage in _UNDO or hand_out.stage == "stretch"
        ]
        call = data.draw(st.sampled_from(candidates), label="call").call
        stage = call.stage
        if stage == "stretch":
            assert "a stretch has no deadline" in self._refused("expire", call)
        elif stage == "undo-stretch":
            assert "a stretch has no deadline" in self._refused("expire", call)
            assert "only forward work" in self._refused("cancel", call)
        else:
            assert "only forward work" in self._refused("cancel", call)
        assert call.stage == stage

    def _refused(self, report: Report, call: Call) -> str:
        """Make the illegal `report` of `call`: it must be refused, naming the call, and change
        nothing. Returns the refusal's message."""
        engine = self._engine
        before = (engine.in_flight, engine.finished, engine.compensating)
        name = repr(call)
        reports: dict[Report, Callable[[], object]] = {
            "succeed": partial(engine.succeed, call, 1),
            "fail": partial(engine.fail, call, ValueError("again")),
            "expire": partial(engine.expire, call),
            "cancel": partial(engine.cancel, call),
            "interrupt": partial(engine.interrupt, call, KeyboardInterrupt()),
        }
        with pytest.raises(ProtocolError) as refused:
            reports[report]()
        message = str(refused.value)
        assert f"{report}() of {name} refused" in message
        assert (engine.in_flight, engine.finished, engine.compensating) == before
        return message

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def in_flight_counts_what_the_driver_holds(self) -> None:
        if self.engine is None:
            return
        # Issued and counted, for the next poll() to hand out: the fallback of a run-again an
        # interrupt cut short.
        issued = len(self.engine._handed_over)
        assert self.engine.in_flight >= 0
        assert self.engine.in_flight == len(self.run.held) + issued

    @invariant()
    def a_finished_run_has_an_outcome_and_nothing_in_flight(self) -> None:
        if self.engine is None or not self.engine.finished:
            return
        assert not self.run.held
        assert self.engine.in_flight == 0
        assert self.engine.poll() is None
        self._check_outcome()

    def teardown(self) -> None:
        """Drive the run to its end with successes alone: it must finish, within a bound, with
        every call handed out reported."""
        if self.engine is None:
            return
        engine = self.engine
        for _ in range(_MAX_REPORTS_TO_FINISH):
            if self.run.held:
                hand_out = self.run.held[0]
                stretch = hand_out.call.stretch
                if hand_out.stage == "undo-stretch":
                    assert stretch is not None
                    stretch.undone.extend(0 for _ in stretch.undo_order)
                elif stretch is not None:
                    stretch.results.extend(0 for _ in stretch.nodes)
                self._succeed(hand_out, 0)
            else:
                call = engine.poll()
                if call is None:
                    self._assert_finished_when_idle()
                    break
                self._handed(call)
            self.in_flight_counts_what_the_driver_holds()
        else:
            pytest.fail(f"the run did not finish within {_MAX_REPORTS_TO_FINISH} reports")
        assert all(hand_out.report is not None for hand_out in self.run.hand_outs)
        self._check_outcome()

    # -- checks ---------------------------------------------------------------------------------

    def _assert_finished_when_idle(self) -> None:
        engine = self._engine
        assert engine.in_flight == 0, "poll() returned None with calls to hand out"
        assert engine.finished, "nothing in flight, nothing to poll, and no outcome"

    def _check_outcome(self) -> None:
        outcome = self._engine.outcome
        assert isinstance(outcome, Success | Failure | PartialFailure)
        if isinstance(outcome, Success):
            assert not self.run.interrupted, f"{outcome} after an interrupt"
            assert not any(self.run.failing.values()), f"{outcome} after a step failed for good"
        elif not (self.run.errors_reported or self.run.interrupted or self.run.time_passed):
            pytest.fail(f"every report was a success, yet the run ended in {outcome}")


EngineProtocol.TestCase.settings = settings(max_examples=150, stateful_step_count=30)
test_engine_protocol = EngineProtocol.TestCase


# -- one refusal each, by hand ----------------------------------------------------------------


def test_a_call_reported_twice_is_refused_naming_it() -> None:
    engine: Engine[object] = Engine(step(lambda: 1, name="reserve"), EngineSettings())
    call = engine.poll()
    assert call is not None
    assert engine.succeed(call, 1) is None

    with pytest.raises(ProtocolError, match="reported already") as refused:
        engine.fail(call, ValueError("late"))

    assert "fail() of <Call action 'reserve' attempt 1 (settled)>" in str(refused.value)
    assert engine.in_flight == 0
    assert engine.outcome == Success(1)


def test_a_compensation_reported_as_cancelled_is_refused_naming_it() -> None:
    saga = step(lambda: "R-1", lambda receipt: None, name="reserve").then(
        step(lambda: 1 / 0, name="charge")
    )
    engine: Engine[object] = Engine(saga, EngineSettings(on_branch_failure="cancel"))
    reserve = engine.poll()
    assert reserve is not None
    charge = engine.succeed(reserve, "R-1")
    assert charge is not None
    compensation = engine.fail(charge, ZeroDivisionError("division by zero")) or engine.poll()
    assert compensation is not None
    assert compensation.kind == "compensation"

    with pytest.raises(ProtocolError, match="only forward work") as refused:
        engine.cancel(compensation)

    assert "cancel() of <Call compensation 'reserve' attempt 1 (compensation)>" in str(
        refused.value
    )
    assert engine.in_flight == 1
    assert engine.succeed(compensation, None) is None
    assert engine.poll() is None
    assert isinstance(engine.outcome, Failure)
    assert engine.outcome.compensated == ("reserve",)


def test_a_stretch_reported_as_expired_is_refused_naming_it() -> None:
    saga = step(lambda: 1, name="reserve").then(step(lambda: 2, name="charge"))
    engine: Engine[object] = Engine(saga, EngineSettings(), stretches="sync")
    stretch = engine.poll()
    assert stretch is not None
    assert stretch.kind == "stretch"

    with pytest.raises(ProtocolError, match="a stretch has no deadline") as refused:
        engine.expire(stretch)

    assert "expire() of <Call stretch 'reserve' attempt 1 (stretch)>" in str(refused.value)
    assert engine.in_flight == 1
    assert stretch.stretch is not None
    stretch.stretch.results.extend([1, 2])
    assert engine.succeed(stretch, None) is None
    assert engine.outcome == Success(2)


def test_a_stretch_reported_twice_is_refused_naming_its_last_step() -> None:
    saga = step(lambda: 1, name="reserve").then(step(lambda: 2, name="charge"))
    engine: Engine[object] = Engine(saga, EngineSettings(), stretches="sync")
    stretch = engine.poll()
    assert stretch is not None
    assert stretch.stretch is not None
    stretch.stretch.results.extend([1, 2])
    assert engine.succeed(stretch, None) is None

    with pytest.raises(ProtocolError, match="reported already") as refused:
        engine.succeed(stretch, None)

    assert "succeed() of <Call stretch 'charge' attempt 1 (settled)>" in str(refused.value)


# -- found by the state machine -----------------------------------------------------------------


@pytest.mark.parametrize("goes_on", [False, True], ids=["saga ends with it", "saga goes on"])
def test_a_stretch_that_ends_after_an_interrupt_between_calls_is_undone(goes_on: bool) -> None:
    undone: list[object] = []
    saga = step(lambda: 1, undone.append, name="reserve").then(
        step(lambda: 2, undone.append, name="charge")
    )
    if goes_on:
        # A step with a timeout of its own is no plain step: it follows the stretch.
        saga = saga.then(step(lambda: 3, name="ship", timeout=5.0))
    engine: Engine[object] = Engine(saga, EngineSettings(), stretches="sync")
    stretch = engine.poll()
    assert stretch is not None
    assert stretch.stretch is not None
    interruption = KeyboardInterrupt()

    engine.interrupt(None, interruption)
    stretch.stretch.results.extend([1, 2])
    # The run has started to fail: nothing follows the stretch, and its steps are undone.
    assert engine.succeed(stretch, None) is None
    compensations = []
    call = engine.poll()
    while call is not None:
        compensations.append((call.kind, call.path, call.argument))
        call = engine.succeed(call, None) or engine.poll()

    assert compensations == [("compensation", "charge", 2), ("compensation", "reserve", 1)]
    assert engine.outcome == Failure(interruption, compensated=("charge", "reserve"))
