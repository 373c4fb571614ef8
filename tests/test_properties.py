"""The contract of a run (docs/concepts.md), as properties over generated sagas and fault plans.

Sagas come from the shipped strategies (`fsaga.testing.strategies`); every run is checked twice:
against the invariants any run must keep (`check_run` and the properties below), and against a
reference model, a plain recursive interpreter of the spec written here, which predicts the whole
effect trace, the waits, and the outcome.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsaga import (
    CompensationStarted,
    Failure,
    PartialFailure,
    Retry,
    Saga,
    SagaFinished,
    StepCompleted,
    StepFailed,
    StepStarted,
    Success,
    pure,
    step,
)
from fsaga.interpreter.settings import CompensationPolicy
from fsaga.outcome import Outcome
from fsaga.saga import par
from fsaga.testing import FaultInjectingInterpreter, FaultPlan, RecordingInterpreter, check_run
from fsaga.testing.strategies import (
    RETRY_DELAY,
    BindSpec,
    ContinuationSpec,
    MapSpec,
    NamedSpec,
    ParSpec,
    PureSpec,
    Receipt,
    SagaSpec,
    SequenceSpec,
    StepSpec,
    ThenSpec,
    TimeoutSpec,
    World,
    assert_compensation_laws,
    build_saga,
    continuation_specs,
    fault_plans,
    saga_specs,
)

POLICIES: tuple[CompensationPolicy, ...] = ("continue", "stop")
EXAMPLES = settings(max_examples=150, deadline=None)
SPECS = saga_specs()

ErrorShape = tuple[str, str]
EffectShape = tuple[str, str, int, object, object, ErrorShape | None]


def error_shape(error: BaseException) -> ErrorShape:
    return (type(error).__name__, str(error))


# -- the reference model --------------------------------------------------------------------------


class Scope:
    """Paths: ``label``, ``label#2`` for repeated implicit labels; ``prefix/`` inside a scope."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.counts: Counter[str] = Counter()

    def join(self, segment: str) -> str:
        return f"{self.prefix}/{segment}" if self.prefix else segment

    def claim(self, label: str, *, explicit: bool) -> str:
        self.counts[label] += 1
        number = self.counts[label]
        assert not (explicit and number > 1), "the strategies never repeat an explicit name"
        return self.join(label if number == 1 else f"{label}#{number}")


class Stop(Exception):
    """The forward part of the modelled run ended early."""

    def __init__(self, error: ErrorShape, *, interrupted: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.interrupted = interrupted


@dataclass
class Prediction:
    """What the model says a run does."""

    effects: list[EffectShape] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    kind: type = Success
    value: object = None
    error: ErrorShape | None = None
    compensated: list[str] = field(default_factory=list)
    failed: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    interrupted: str | None = None
    completed: list[str] = field(default_factory=list)  # compensable steps, completion order


def injected(kind: str, path: str, attempt: int) -> ErrorShape:
    return ("InjectedFault", f"injected fault: {kind} of {path!r}, attempt {attempt}")


class Model:
    """Runs a spec sequentially and recursively, the way the contract describes a run."""

    def __init__(self, plan: FaultPlan, policy: CompensationPolicy) -> None:
        self.plan = plan
        self.policy = policy
        self.serial = 0
        self.undo_log: list[tuple[str, Receipt, int]] = []
        self.prediction = Prediction()

    def predict(self, spec: SagaSpec) -> Prediction:
        prediction = self.prediction
        try:
            prediction.value = self.run(spec, Scope(""), None)
        except Stop as stop:
            prediction.error = stop.error
            prediction.interrupted = stop.interrupted
            self.compensate()
            partial = prediction.failed or prediction.skipped or prediction.unresolved
            prediction.kind = PartialFailure if partial else Failure
        prediction.completed = [path for path, _, _ in self.undo_log]
        return prediction

    def run(self, spec: SagaSpec, scope: Scope, seen: object) -> object:
        match spec:
            case StepSpec():
                return self.step(spec, scope, seen)
            case PureSpec():
                return spec.value
            case ThenSpec(first=first, second=second):
                self.run(first, scope, seen)
                return self.run(second, scope, seen)
            case SequenceSpec(items=items):
                return tuple(self.run(item, scope, seen) for item in items)
            case BindSpec(source=source, continuation=continuation):
                received = self.run(source, scope, seen)
                return self.run(continuation.choose(received), scope, received)
            case MapSpec(source=source, tag=tag):
                return (tag, self.run(source, scope, seen))
            case NamedSpec(name=name, inner=inner):
                return self.run(inner, Scope(scope.claim(name, explicit=True)), seen)
            case ParSpec(branches=branches):
                # Sync: one branch after the other, depth first; a failure stops the rest.
                return tuple(
                    self.run(branch, branch_scope(scope, index, branch), seen)
                    for index, branch in enumerate(branches)
                )
            case TimeoutSpec(inner=inner):
                # The sync strategies draw no deadlines; one would never pass in a model run.
                return self.run(inner, scope, seen)

    def step(self, spec: StepSpec, scope: Scope, seen: object) -> Receipt:
        path = scope.claim(spec.label, explicit=spec.explicit)
        effects = self.prediction.effects
        if self.plan.interrupt == path:
            interrupt = ("KeyboardInterrupt", f"injected interrupt at {path!r}")
            effects.append(("action", path, 1, None, None, interrupt))
            if spec.compensable:
                self.prediction.unresolved.append(path)
            raise Stop(interrupt, interrupted=path)
        failing = self.plan.actions.get(path, 0)
        for attempt in range(1, spec.attempts + 1):
            if attempt <= failing:
                error = injected("action", path, attempt)
                effects.append(("action", path, attempt, None, None, error))
                if attempt == spec.attempts:
                    raise Stop(error)
                self.prediction.sleeps.append(RETRY_DELAY * 2.0 ** (attempt - 1))
                continue
            self.serial += 1
            receipt = Receipt(spec.label, self.serial, seen)
            effects.append(("action", path, attempt, None, receipt, None))
            if spec.compensable:
                self.undo_log.append((path, receipt, spec.compensation_attempts))
            return receipt
        raise AssertionError("unreachable: the last attempt returns or raises")

    def compensate(self) -> None:
        prediction = self.prediction
        pending = list(reversed(self.undo_log))
        while pending:
            path, receipt, attempts = pending.pop(0)
            failing = self.plan.compensations.get(path, 0)
            for attempt in range(1, attempts + 1):
                if attempt > failing:
                    prediction.effects.append(("compensation", path, attempt, receipt, None, None))
                    prediction.compensated.append(path)
                    break
                error = injected("compensation", path, attempt)
                prediction.effects.append(("compensation", path, attempt, receipt, None, error))
                if attempt < attempts:
                    prediction.sleeps.append(RETRY_DELAY * 2.0 ** (attempt - 1))
                    continue
                prediction.failed.append((path, attempt))
                if self.policy == "stop":
                    prediction.skipped = [path for path, _, _ in pending]
                    return


def branch_scope(parent: Scope, index: int, branch: SagaSpec) -> Scope:
    stays = isinstance(branch, NamedSpec) or (isinstance(branch, StepSpec) and branch.explicit)
    return parent if stays else Scope(parent.claim(f"#{index}", explicit=False))


def action_paths(spec: SagaSpec) -> list[str]:
    """The paths a fault-free run reaches, in order (from the model)."""
    return [effect[1] for effect in Model(FaultPlan(), "continue").predict(spec).effects]


def compensable_paths(spec: SagaSpec) -> list[str]:
    return Model(FaultPlan(), "continue").predict(spec).completed


# -- running for real -----------------------------------------------------------------------------


@dataclass
class Observed:
    interpreter: FaultInjectingInterpreter
    world: World
    outcome: Outcome[object]
    interrupted: bool


def run_spec(spec: SagaSpec, plan: FaultPlan, policy: CompensationPolicy) -> Observed:
    world = World()
    saga = build_saga(spec, world)
    interpreter = FaultInjectingInterpreter(plan, on_compensation_failure=policy)
    try:
        outcome = saga.run(interpreter)
    except KeyboardInterrupt:
        assert plan.interrupt is not None, "an interrupt nobody planned"
        finished = [event for event in interpreter.events if isinstance(event, SagaFinished)]
        assert len(finished) == 1
        return Observed(interpreter, world, finished[0].outcome, interrupted=True)
    return Observed(interpreter, world, outcome, interrupted=False)


def effect_shapes(observed: Observed) -> list[EffectShape]:
    return [
        (
            effect.kind,
            effect.path,
            effect.attempt,
            effect.argument,
            effect.result,
            None if effect.error is None else error_shape(effect.error),
        )
        for effect in observed.interpreter.effects
    ]


def completed_compensable(observed: Observed) -> list[tuple[str, object]]:
    return [
        (event.path, event.result)
        for event in observed.interpreter.events
        if isinstance(event, StepCompleted) and event.compensable
    ]


def compensation_order(observed: Observed) -> list[str]:
    return [
        event.path
        for event in observed.interpreter.events
        if isinstance(event, CompensationStarted) and event.attempt == 1
    ]


@st.composite
def scenarios(
    draw: st.DrawFn, *, interrupts: bool = True
) -> tuple[SagaSpec, FaultPlan, CompensationPolicy]:
    spec = draw(SPECS)
    plan = draw(
        fault_plans(action_paths(spec), compensable=compensable_paths(spec), interrupts=interrupts)
    )
    return spec, plan, draw(st.sampled_from(POLICIES))


# -- (d) the whole trace is the one the model predicts ---------------------------------------------


@EXAMPLES
@given(scenarios())
def test_run_matches_the_reference_model(
    scenario: tuple[SagaSpec, FaultPlan, CompensationPolicy],
) -> None:
    spec, plan, policy = scenario
    observed = run_spec(spec, plan, policy)
    check_run(observed.interpreter, observed.outcome)
    expected = Model(plan, policy).predict(spec)

    assert effect_shapes(observed) == expected.effects
    assert observed.interpreter.sleeps == expected.sleeps
    assert observed.interrupted == (expected.interrupted is not None)
    outcome = observed.outcome
    assert type(outcome) is expected.kind
    match outcome:
        case Success(value=value):
            assert value == expected.value
        case Failure(error=error, compensated=compensated):
            assert error_shape(error) == expected.error
            assert list(compensated) == expected.compensated
        case PartialFailure(error, compensated, failures, skipped, unresolved):
            assert error_shape(error) == expected.error
            assert list(compensated) == expected.compensated
            assert [(failure.path, failure.attempts) for failure in failures] == expected.failed
            for failure in failures:
                assert error_shape(failure.error) == injected(
                    "compensation", failure.path, failure.attempts
                )
            assert list(skipped) == expected.skipped
            assert list(unresolved) == expected.unresolved
    # The world saw exactly the effects that ran, each compensation undoing its own receipt.
    ran = [
        ("did", result) if kind == "action" else ("undid", argument)
        for kind, _, _, argument, result, error in expected.effects
        if error is None
    ]
    assert observed.world.log == ran


# -- (a), (b), (c): compensation order, results, and accounting -----------------------------------


@EXAMPLES
@given(scenarios())
def test_compensations_run_in_reverse_completion_order_with_their_own_results(
    scenario: tuple[SagaSpec, FaultPlan, CompensationPolicy],
) -> None:
    spec, plan, policy = scenario
    observed = run_spec(spec, plan, policy)
    check_run(observed.interpreter, observed.outcome)
    completed = completed_compensable(observed)
    undone = [
        (effect.path, effect.argument)
        for effect in observed.interpreter.effects
        if effect.kind == "compensation" and effect.attempt == 1
    ]
    # A prefix of the reverse completion order (all of it unless a stop policy cut it short).
    assert undone == list(reversed(completed))[: len(undone)]
    if not isinstance(observed.outcome, Success) and policy == "continue":
        assert len(undone) == len(completed)
    results = dict(completed)
    for effect in observed.interpreter.effects:
        if effect.kind == "compensation":
            assert effect.argument is results[effect.path]
    undone_receipts = [receipt for change, receipt in observed.world.log if change == "undid"]
    done_receipts = [receipt for change, receipt in observed.world.log if change == "did"]
    assert all(receipt in done_receipts for receipt in undone_receipts)


@EXAMPLES
@given(scenarios())
def test_unstarted_and_failed_steps_are_never_compensated(
    scenario: tuple[SagaSpec, FaultPlan, CompensationPolicy],
) -> None:
    spec, plan, policy = scenario
    observed = run_spec(spec, plan, policy)
    check_run(observed.interpreter, observed.outcome)
    events = observed.interpreter.events
    started = {event.path for event in events if isinstance(event, StepStarted)}
    completed = {event.path for event in events if isinstance(event, StepCompleted)}
    failed = {event.path for event in events if isinstance(event, StepFailed)}
    compensated = set(compensation_order(observed))
    assert compensated <= started
    assert compensated <= completed
    assert not compensated & failed
    never_started = set(action_paths(spec)) - started
    assert not compensated & never_started
    if not isinstance(observed.outcome, Success):
        assert not set(observed.outcome.compensated) & (failed | never_started)


@EXAMPLES
@given(scenarios())
def test_every_completed_compensable_step_is_compensated_or_reported(
    scenario: tuple[SagaSpec, FaultPlan, CompensationPolicy],
) -> None:
    spec, plan, policy = scenario
    observed = run_spec(spec, plan, policy)
    check_run(observed.interpreter, observed.outcome)
    completed = [path for path, _ in completed_compensable(observed)]
    outcome = observed.outcome
    if isinstance(outcome, Success):
        assert compensation_order(observed) == []
        return
    reported = list(outcome.compensated)
    if isinstance(outcome, PartialFailure):
        reported += [failure.path for failure in outcome.failed_compensations]
        reported += list(outcome.skipped)
    assert sorted(reported) == sorted(completed)
    if isinstance(outcome, Failure):
        assert list(outcome.compensated) == list(reversed(completed))


# -- (e) bind continuations see the previous result --------------------------------------------


def receipts_in(value: object) -> list[Receipt]:
    if isinstance(value, Receipt):
        return [value]
    if isinstance(value, tuple):
        return [receipt for item in value for receipt in receipts_in(item)]
    return []


@EXAMPLES
@given(saga_specs(namespace="m"), continuation_specs(namespace="f"))
def test_bind_continuations_see_the_previous_result(
    source: SagaSpec, continuation: ContinuationSpec
) -> None:
    alone = build_saga(source, World()).run(RecordingInterpreter())
    assert isinstance(alone, Success)

    world = World()
    received: list[object] = []

    def spy(value: object) -> Saga[object]:
        received.append(value)
        return build_saga(continuation.choose(value), world, seen=value)

    recording = RecordingInterpreter()
    outcome = build_saga(source, world).bind(spy).run(recording)
    assert isinstance(outcome, Success)
    # The continuation ran once, after the source's steps, with the source's result: the very
    # receipts the source's steps returned, not copies.
    assert received == [alone.value]
    results = [event.result for event in recording.events if isinstance(event, StepCompleted)]
    source_steps = len(action_paths(source))
    for receipt in receipts_in(received[0]):
        assert any(receipt is result for result in results[:source_steps])
    # What the continuation built ran next, and saw the value (the model says where).
    expected = Model(FaultPlan(), "continue").predict(BindSpec(source, continuation))
    assert outcome.value == expected.value
    assert [effect.result for effect in recording.effects] == [
        effect[4] for effect in expected.effects
    ]


@EXAMPLES
@given(st.sampled_from(("a", "b")), st.booleans())
def test_a_continuation_receives_the_very_object_the_step_returned(
    label: str, compensable: bool
) -> None:
    received: list[object] = []

    def spy(value: object) -> Saga[object]:
        received.append(value)
        return pure(value)

    recording = RecordingInterpreter()
    outcome = build_saga(StepSpec(label, compensable), World()).bind(spy).run(recording)
    completed = [event for event in recording.events if isinstance(event, StepCompleted)]
    assert len(received) == 1
    assert received[0] is completed[0].result
    assert isinstance(outcome, Success)
    assert outcome.value is received[0]


# -- (f) a stop policy skips exactly the rest ------------------------------------------------------


@st.composite
def failing_undo_scenarios(draw: st.DrawFn) -> tuple[SagaSpec, FaultPlan]:
    """A run that fails at its last step, and an undo in which one compensation fails for good."""
    spec = draw(SPECS.filter(lambda spec: len(compensable_paths(spec)) >= 2))
    paths = action_paths(spec)
    completed = [path for path in compensable_paths(spec) if path != paths[-1]]
    broken = draw(st.sampled_from(completed))
    more = draw(fault_plans(paths, compensable=completed, interrupts=False)).compensations
    # Three failing attempts fail any generated step (at most three attempts) for good.
    return spec, FaultPlan({paths[-1]: 3}, {**more, broken: 3})


@EXAMPLES
@given(failing_undo_scenarios())
def test_stop_policy_skips_exactly_the_compensations_after_the_failed_one(
    scenario: tuple[SagaSpec, FaultPlan],
) -> None:
    spec, plan = scenario
    observed = run_spec(spec, plan, "stop")
    check_run(observed.interpreter, observed.outcome)
    outcome = observed.outcome
    undo_order = [path for path, _ in reversed(completed_compensable(observed))]
    assert isinstance(outcome, PartialFailure)
    assert len(outcome.failed_compensations) == 1
    failed = outcome.failed_compensations[0].path
    cut = undo_order.index(failed)
    assert list(outcome.compensated) == undo_order[:cut]
    assert list(outcome.skipped) == undo_order[cut + 1 :]
    last = observed.interpreter.effects[-1]
    assert (last.kind, last.path, last.error is not None) == ("compensation", failed, True)
    # Under the default policy the same plan runs every compensation.
    continued = run_spec(spec, plan, "continue").outcome
    assert isinstance(continued, PartialFailure)
    assert not continued.skipped
    reported = [
        *continued.compensated,
        *(failure.path for failure in continued.failed_compensations),
    ]
    assert sorted(reported) == sorted(undo_order)


# -- (g) interrupts --------------------------------------------------------------------------------


@st.composite
def interrupted_scenarios(draw: st.DrawFn) -> tuple[SagaSpec, FaultPlan, CompensationPolicy]:
    spec = draw(SPECS.filter(lambda spec: bool(action_paths(spec))))
    paths = action_paths(spec)
    interrupt = draw(st.sampled_from(paths))
    compensations = draw(fault_plans(paths, compensable=compensable_paths(spec))).compensations
    return (
        spec,
        FaultPlan(compensations=compensations, interrupt=interrupt),
        draw(st.sampled_from(POLICIES)),
    )


@EXAMPLES
@given(interrupted_scenarios())
def test_an_interrupt_compensates_everything_completed_then_propagates(
    scenario: tuple[SagaSpec, FaultPlan, CompensationPolicy],
) -> None:
    spec, plan, policy = scenario
    assert plan.interrupt is not None
    with pytest.raises(KeyboardInterrupt, match="injected interrupt"):
        build_saga(spec, World()).run(FaultInjectingInterpreter(plan))

    observed = run_spec(spec, plan, policy)
    assert observed.interrupted
    check_run(observed.interpreter, observed.outcome)
    outcome = observed.outcome
    assert isinstance(outcome, Failure | PartialFailure)
    assert isinstance(outcome.error, KeyboardInterrupt)
    compensable = plan.interrupt in compensable_paths(spec)
    unresolved = outcome.unresolved if isinstance(outcome, PartialFailure) else ()
    assert unresolved == ((plan.interrupt,) if compensable else ())
    effects = observed.interpreter.effects
    cut = next(index for index, effect in enumerate(effects) if effect.path == plan.interrupt)
    assert isinstance(effects[cut].error, KeyboardInterrupt)
    # Forward work stopped; every step completed before is compensated (or reported failed).
    assert all(effect.kind == "compensation" for effect in effects[cut + 1 :])
    assert plan.interrupt not in compensation_order(observed)
    completed = [path for path, _ in completed_compensable(observed)]
    if not plan.compensations:
        assert list(outcome.compensated) == list(reversed(completed))
    failed_step = [event for event in observed.interpreter.events if isinstance(event, StepFailed)]
    assert [(event.path, event.unknown) for event in failed_step] == [(plan.interrupt, True)]


# -- the shipped helper ----------------------------------------------------------------------------


def test_assert_compensation_laws_passes_on_a_saga_with_par_named_and_retries() -> None:
    undone: list[str] = []

    def make_saga() -> Saga[object]:
        reserve = step(lambda: "R", undone.append, name="reserve")
        charge = step(lambda: "C", undone.append, name="charge").named("payment")
        ship = step(lambda: "S", undone.append, name="ship", retry=Retry(2, delay=0.5))
        return reserve.then(par(charge, ship, step(lambda: "N"))).map(len)

    assert_compensation_laws(make_saga, max_examples=40)


@pytest.mark.parametrize(
    "spec",
    [
        StepSpec("a"),
        SequenceSpec((StepSpec("a"), StepSpec("a", attempts=2), StepSpec("b", compensable=False))),
        ParSpec(
            (StepSpec("a"), NamedSpec("n", ThenSpec(StepSpec("a"), StepSpec("s", explicit=True))))
        ),
        BindSpec(
            ParSpec((StepSpec("a"), StepSpec("b", compensation_attempts=2))),
            ContinuationSpec(MapSpec(StepSpec("c"), "left"), SequenceSpec((StepSpec("a"),))),
        ),
    ],
)
def test_assert_compensation_laws_passes_on_built_specs(spec: SagaSpec) -> None:
    assert_compensation_laws(lambda: build_saga(spec, World()), max_examples=30)


def test_the_testing_package_does_not_import_hypothesis() -> None:
    script = "import sys, fsaga.testing; assert 'hypothesis' not in sys.modules"
    subprocess.run([sys.executable, "-c", script], check=True)
