"""Laws of `Saga` as a monad, and the derived combinators against their bind definitions.

Two sagas are equivalent (``~``) when running each, in a fresh world, under the same fault
plan and compensation policy, gives the same observable run: the same events (saga ids and
timestamps aside), the same effects with their arguments, results and errors, the same waits,
the same changes to the world, and an outcome of the same shape (kind, value, error type and
message, compensated, failed, skipped and unresolved paths). Fault plans are drawn over the
paths a fault-free run of the left side reaches, so the laws are checked through failures,
retries, failed compensations and interrupts, not only on the happy path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import partial

from hypothesis import given, settings
from hypothesis import strategies as st

from fsaga import (
    Event,
    Failure,
    PartialFailure,
    Saga,
    SagaFinished,
    StepCompleted,
    Success,
    pure,
    sequence,
    traverse,
)
from fsaga.interpreter.settings import CompensationPolicy
from fsaga.outcome import Outcome
from fsaga.testing import FaultInjectingInterpreter, FaultPlan, RecordingInterpreter
from fsaga.testing.strategies import (
    ContinuationSpec,
    Receipt,
    SagaSpec,
    World,
    WorldChange,
    build_continuation,
    build_saga,
    continuation_specs,
    fault_plans,
    saga_specs,
)

LAWS = settings(max_examples=100, deadline=None)
POLICIES: tuple[CompensationPolicy, ...] = ("continue", "stop")
TAGS = st.sampled_from(("f", "g", "h"))

Build = Callable[[World], Saga[object]]
"""One side of a law: builds the saga in the world it is given."""

# Strategies built once (building them per example makes hypothesis re-validate them).
M = saga_specs(namespace="m")
N = saga_specs(namespace="n")
F = continuation_specs(namespace="f")
G = continuation_specs(namespace="g")
ITEMS = [saga_specs(max_leaves=4, namespace=f"m{index}_") for index in range(3)]
SEQUENCES = st.integers(0, len(ITEMS)).flatmap(lambda count: st.tuples(*ITEMS[:count]))


# -- observing a run ------------------------------------------------------------------------------

ErrorShape = tuple[str, str]


def error_shape(error: BaseException) -> ErrorShape:
    return (type(error).__name__, str(error))


def outcome_shape(outcome: Outcome[object]) -> tuple[object, ...]:
    match outcome:
        case Success(value=value):
            return ("Success", value)
        case Failure(error=error, compensated=compensated):
            return ("Failure", error_shape(error), compensated)
        case PartialFailure(error, compensated, failures, skipped, unresolved):
            failed = tuple(
                (failure.path, error_shape(failure.error), failure.attempts) for failure in failures
            )
            return ("PartialFailure", error_shape(error), compensated, failed, skipped, unresolved)


STRIPPED = frozenset({"saga_id", "at", "started_at"})


def event_shape(event: Event) -> tuple[object, ...]:
    shape: list[object] = [type(event).__name__]
    for item in fields(event):
        if item.name in STRIPPED:
            continue
        value = getattr(event, item.name)
        if isinstance(value, BaseException):
            value = error_shape(value)
        elif isinstance(event, SagaFinished):
            value = outcome_shape(event.outcome)
        shape.append((item.name, value))
    return tuple(shape)


@dataclass(frozen=True)
class Observation:
    events: list[tuple[object, ...]]
    effects: list[tuple[object, ...]]
    sleeps: list[float]
    outcome: tuple[object, ...]
    interrupted: bool
    world: list[tuple[WorldChange, Receipt]]


def observe(build: Build, plan: FaultPlan, policy: CompensationPolicy) -> Observation:
    world = World()
    interpreter = FaultInjectingInterpreter(plan, on_compensation_failure=policy)
    interrupted = False
    try:
        outcome = build(world).run(interpreter)
    except KeyboardInterrupt:
        assert plan.interrupt is not None
        interrupted = True
        finished = [event for event in interpreter.events if isinstance(event, SagaFinished)]
        outcome = finished[0].outcome
    return Observation(
        events=[event_shape(event) for event in interpreter.events],
        effects=[
            (
                effect.kind,
                effect.path,
                effect.attempt,
                effect.argument,
                effect.result,
                None if effect.error is None else error_shape(effect.error),
            )
            for effect in interpreter.effects
        ],
        sleeps=list(interpreter.sleeps),
        outcome=outcome_shape(outcome),
        interrupted=interrupted,
        world=list(world.log),
    )


def assert_equivalent(data: st.DataObject, left: Build, right: Build) -> None:
    """`left` ~ `right` under a fault plan drawn over the steps a fault-free run reaches."""
    discovery = RecordingInterpreter()
    left(World()).run(discovery)
    actions = discovery.paths("action")
    compensable = [
        event.path
        for event in discovery.events
        if isinstance(event, StepCompleted) and event.compensable
    ]
    plan = data.draw(fault_plans(actions, compensable=compensable), label="plan")
    policy = data.draw(st.sampled_from(POLICIES), label="policy")
    expected = observe(left, plan, policy)
    actual = observe(right, plan, policy)
    assert actual.outcome == expected.outcome
    assert actual.effects == expected.effects
    assert actual.events == expected.events
    assert actual.sleeps == expected.sleeps
    assert actual.world == expected.world
    assert actual.interrupted == expected.interrupted


def built(spec: SagaSpec) -> Build:
    return partial(build_saga, spec)


def continuation(spec: ContinuationSpec, world: World) -> Callable[[object], Saga[object]]:
    return build_continuation(spec, world)


def tagged(tag: str, value: object) -> tuple[str, object]:
    return (tag, value)


def identity(value: object) -> object:
    return value


# -- monad laws ---------------------------------------------------------------------------------


@LAWS
@given(st.integers(0, 5), F, st.data())
def test_left_identity(value: int, f: ContinuationSpec, data: st.DataObject) -> None:
    """``pure(a).bind(f) ~ f(a)``"""
    assert_equivalent(
        data,
        lambda world: pure(value).bind(continuation(f, world)),
        lambda world: continuation(f, world)(value),
    )


@LAWS
@given(M, st.data())
def test_right_identity(m: SagaSpec, data: st.DataObject) -> None:
    """``m.bind(pure) ~ m``"""
    assert_equivalent(data, lambda world: build_saga(m, world).bind(pure), built(m))


@LAWS
@given(M, F, G, st.data())
def test_associativity(
    m: SagaSpec, f: ContinuationSpec, g: ContinuationSpec, data: st.DataObject
) -> None:
    """``m.bind(f).bind(g) ~ m.bind(lambda x: f(x).bind(g))``"""

    def nested(world: World) -> Saga[object]:
        then_f, then_g = continuation(f, world), continuation(g, world)
        return build_saga(m, world).bind(lambda x: then_f(x).bind(then_g))

    assert_equivalent(
        data,
        lambda world: (
            build_saga(m, world).bind(continuation(f, world)).bind(continuation(g, world))
        ),
        nested,
    )


# -- functor laws ---------------------------------------------------------------------------------


@LAWS
@given(M, st.data())
def test_map_identity(m: SagaSpec, data: st.DataObject) -> None:
    """``m.map(identity) ~ m``"""
    assert_equivalent(data, lambda world: build_saga(m, world).map(identity), built(m))


@LAWS
@given(M, TAGS, TAGS, st.data())
def test_map_composition(m: SagaSpec, first: str, second: str, data: st.DataObject) -> None:
    """``m.map(f).map(g) ~ m.map(lambda x: g(f(x)))``"""
    f, g = partial(tagged, first), partial(tagged, second)
    assert_equivalent(
        data,
        lambda world: build_saga(m, world).map(f).map(g),
        lambda world: build_saga(m, world).map(lambda x: g(f(x))),
    )


@LAWS
@given(M, TAGS, st.data())
def test_map_is_bind_then_pure(m: SagaSpec, tag: str, data: st.DataObject) -> None:
    """``m.map(h) ~ m.bind(lambda x: pure(h(x)))``"""
    h = partial(tagged, tag)
    assert_equivalent(
        data,
        lambda world: build_saga(m, world).map(h),
        lambda world: build_saga(m, world).bind(lambda x: pure(h(x))),
    )


# -- derived combinators against their bind definitions -------------------------------------------


@LAWS
@given(M, N, st.data())
def test_then_is_bind_ignoring_the_value(m: SagaSpec, n: SagaSpec, data: st.DataObject) -> None:
    """``m.then(n) ~ m.bind(lambda _: n)``"""
    assert_equivalent(
        data,
        lambda world: build_saga(m, world).then(build_saga(n, world)),
        lambda world: build_saga(m, world).bind(lambda _: build_saga(n, world)),
    )


@LAWS
@given(M, N, st.data())
def test_zip_is_bind_then_map_to_a_pair(m: SagaSpec, n: SagaSpec, data: st.DataObject) -> None:
    """``m.zip(n) ~ m.bind(lambda a: n.map(lambda b: (a, b)))``"""

    def by_bind(world: World) -> Saga[object]:
        second = build_saga(n, world)
        return build_saga(m, world).bind(lambda a: second.map(lambda b: (a, b)))

    assert_equivalent(data, lambda world: build_saga(m, world).zip(build_saga(n, world)), by_bind)


def sequence_by_bind(sagas: Sequence[Saga[object]]) -> Saga[tuple[object, ...]]:
    """The textbook fold: run each saga in turn, collecting the results."""

    def collect(index: int, results: tuple[object, ...]) -> Saga[tuple[object, ...]]:
        if index == len(sagas):
            return pure(results)
        return sagas[index].bind(lambda value: collect(index + 1, (*results, value)))

    return collect(0, ())


@LAWS
@given(SEQUENCES, st.data())
def test_sequence_is_a_fold_of_binds(specs: tuple[SagaSpec, ...], data: st.DataObject) -> None:
    """``sequence([m1, m2, ...]) ~ m1.bind(lambda a: m2.bind(lambda b: ... pure((a, b, ...))))``"""
    assert_equivalent(
        data,
        lambda world: sequence(build_saga(spec, world) for spec in specs),
        lambda world: sequence_by_bind([build_saga(spec, world) for spec in specs]),
    )


@LAWS
@given(st.lists(st.integers(0, 5), max_size=3, unique=True), F, st.data())
def test_traverse_is_sequence_of_the_mapped_items(
    items: list[int], f: ContinuationSpec, data: st.DataObject
) -> None:
    """``traverse(items, fn) ~ sequence([fn(item) for item in items])``"""

    def each(world: World) -> Callable[[int], Saga[object]]:
        make = continuation(f, world)
        return lambda item: make(item).named(f"item{item}")

    assert_equivalent(
        data,
        lambda world: traverse(items, each(world)),
        lambda world: sequence([each(world)(item) for item in items]),
    )
