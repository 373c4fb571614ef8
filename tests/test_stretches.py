"""Stretches of plain steps (the engine's fast instruction) against the general path.

The engine runs a `then` chain of plain steps as one stretch when nobody listens to events; a
listener makes it take every step one call at a time. A differential property runs every
generated saga and fault plan both ways, under `SyncInterpreter` and `AsyncInterpreter`, and
requires the same outcome (or the same interruption, with the same note), the same effects in the
same order, each seeing the same argument and the same `current_context()`. Faults are the
effects' own, so both runs meet them at the same effect: raised errors, `returns` failures,
unknown outcomes, rejected results, results of types the engine has not seen, awaitables under
the sync interpreter, and interrupts in actions and compensations.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeAlias

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure as ReturnsFailure
from returns.result import Success as ReturnsSuccess

from fsaga import (
    Failure,
    NonRetryableError,
    Outcome,
    PartialFailure,
    Retry,
    Saga,
    StepContext,
    Success,
    UnknownOutcomeError,
    current_context,
    par,
    pure,
    step,
)
from fsaga.errors import ResultRejectedError
from fsaga.events import Event
from fsaga.interpreter import AsyncInterpreter, SyncInterpreter
from fsaga.interpreter._engine import Engine
from fsaga.interpreter._plan import Stretch, StretchAt, plan_of
from fsaga.interpreter.settings import EngineSettings
from fsaga.saga import BindNode

# -- generated sagas ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepShape:
    label: str
    explicit: bool
    compensable: bool
    attempts: int
    idempotent: bool
    on_unknown: bool
    timeout: bool
    asynchronous: bool
    undo_timeout: bool = False


@dataclass(frozen=True)
class Then:
    parts: tuple[Shape, ...]


@dataclass(frozen=True)
class Bind:
    source: Shape
    then: Shape


@dataclass(frozen=True)
class Map:
    inner: Shape
    raises: bool = False


@dataclass(frozen=True)
class Named:
    name: str
    inner: Shape


@dataclass(frozen=True)
class Par:
    branches: tuple[Shape, ...]


@dataclass(frozen=True)
class Pure:
    value: int


Shape: TypeAlias = StepShape | Then | Bind | Map | Named | Par | Pure

steps = st.builds(
    StepShape,
    label=st.sampled_from(("a", "b", "c")),
    explicit=st.sampled_from((False, False, False, True)),
    compensable=st.sampled_from((True, True, True, False)),
    attempts=st.sampled_from((1, 1, 1, 2)),
    idempotent=st.sampled_from((False, False, True)),
    on_unknown=st.sampled_from((False, False, True)),
    timeout=st.sampled_from((False, False, False, False, True)),
    asynchronous=st.booleans(),
)


plain_steps = st.builds(
    StepShape,
    label=st.sampled_from(("a", "b", "c")),
    explicit=st.sampled_from((False, False, False, True)),
    compensable=st.sampled_from((True, True, True, False)),
    attempts=st.just(1),
    idempotent=st.just(False),
    on_unknown=st.just(False),
    timeout=st.just(False),
    asynchronous=st.booleans(),
)


def _extend(children: st.SearchStrategy[Shape]) -> st.SearchStrategy[Shape]:
    # Mostly `then` chains, where stretches are made, each most often of plain steps.
    chains = st.lists(st.one_of(plain_steps, plain_steps, children), min_size=2, max_size=8)
    return st.one_of(
        chains.map(lambda parts: Then(tuple(parts))),
        chains.map(lambda parts: Then(tuple(parts))),
        chains.map(lambda parts: Then(tuple(parts))),
        st.builds(Bind, children, children),
        st.builds(Map, children, st.booleans()),
        st.builds(Named, st.sampled_from(("n", "m")), children),
        st.lists(children, min_size=1, max_size=3).map(lambda parts: Par(tuple(parts))),
    )


shapes = st.recursive(
    st.one_of(steps, steps, steps, st.builds(Pure, st.integers(0, 3))), _extend, max_leaves=14
)

Fault: TypeAlias = Literal[
    "raise",
    "returns-failure",
    "returns-success",
    "unseen-type",
    "unknown",
    "unknown-final",
    "rejected",
    "awaitable",
    "interrupt",
]
action_faults = st.dictionaries(
    st.integers(1, 12),
    st.sampled_from(
        (
            "raise",
            "raise",
            "returns-failure",
            "returns-success",
            "unseen-type",
            "unknown",
            "unknown-final",
            "rejected",
            "awaitable",
            "interrupt",
        )
    ),
    max_size=3,
)
undo_faults = st.dictionaries(
    st.integers(1, 8),
    st.sampled_from(("raise", "raise", "interrupt", "returns-failure", "unseen-type")),
    max_size=2,
)


class Unseen:
    """A result type the engine has never seen (it learns whether such results are plain)."""

    def __init__(self, serial: int) -> None:
        self.serial = serial

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unseen) and other.serial == self.serial

    def __hash__(self) -> int:
        return self.serial

    def __repr__(self) -> str:
        return f"Unseen({self.serial})"


class Declined(Exception):
    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.args == self.args

    def __hash__(self) -> int:
        return hash(self.args)


@dataclass
class Effects:
    """What a run's effects did, and the faults they meet, counted in the order they run."""

    actions: dict[int, Fault]
    undos: dict[int, str]
    asynchronous_allowed: bool
    trace: list[tuple[Any, ...]] = field(default_factory=list)
    action_calls: int = 0
    undo_calls: int = 0

    def act(self, label: str) -> object:
        self.action_calls += 1
        serial = self.action_calls
        # Steps labelled "c" never ask for their context: nothing makes their paths but the run.
        seen = None if label.startswith("c") else _seen(current_context())
        self.trace.append(("act", label, seen))
        fault = self.actions.get(serial)
        value = f"{label}-{serial}"
        match fault:
            case None:
                return value
            case "raise":
                raise Declined(serial)
            case "returns-failure":
                return ReturnsFailure(Declined(serial))
            case "returns-success":
                return ReturnsSuccess(value)
            case "unseen-type":
                return Unseen(serial)
            case "unknown":
                raise UnknownOutcomeError(f"lost {serial}")
            case "unknown-final":
                raise _FinalUnknown(f"lost for good {serial}")
            case "rejected":
                raise ResultRejectedError(value, Declined(serial))
            case "awaitable":
                return _answer(value)
            case "interrupt":
                raise KeyboardInterrupt(f"stop {serial}")

    def undo(self, label: str, result: object) -> None:
        self.undo_calls += 1
        serial = self.undo_calls
        seen = None if label.startswith("c") else _seen(current_context())
        self.trace.append(("undo", label, result, seen))
        fault = self.undos.get(serial)
        if fault == "raise":
            raise Declined(-serial)
        if fault == "interrupt":
            raise KeyboardInterrupt(f"stop undo {serial}")
        if fault == "returns-failure":
            return ReturnsFailure(Declined(-serial))  # type: ignore[return-value]
        if fault == "unseen-type":
            return Unseen(-serial)  # type: ignore[return-value]
        return None

    def void(self, label: str, context: StepContext) -> None:
        self.trace.append(("void", label, _seen(context)))


class _FinalUnknown(UnknownOutcomeError, NonRetryableError):
    pass


def _refuse(value: object) -> object:
    raise Declined(f"map of {value!r}")


async def _answer(value: str) -> str:
    return value


def _seen(context: StepContext) -> tuple[str, str, int, str]:
    return (context.path, context.kind, context.attempt, context.idempotency_key)


def build(shape: Shape, effects: Effects, *, asynchronous: bool) -> Saga[object]:
    match shape:
        case StepShape():
            return _step(shape, effects, asynchronous=asynchronous)
        case Then(parts=parts):
            saga = build(parts[0], effects, asynchronous=asynchronous)
            for part in parts[1:]:
                saga = saga.then(build(part, effects, asynchronous=asynchronous))
            return saga
        case Bind(source=source, then=then):
            rest = build(then, effects, asynchronous=asynchronous)
            return build(source, effects, asynchronous=asynchronous).bind(lambda _: rest)
        case Map(inner=inner, raises=raises):
            return build(inner, effects, asynchronous=asynchronous).map(_refuse if raises else repr)
        case Named(name=name, inner=inner):
            return build(inner, effects, asynchronous=asynchronous).named(name)
        case Par(branches=branches):
            try:
                return par(*(build(b, effects, asynchronous=asynchronous) for b in branches))
            except Exception:
                # Branches that claim one name twice: refused when built, so run them in turn.
                chain: Saga[object] = pure(None)
                for branch in branches:
                    chain = chain.then(build(branch, effects, asynchronous=asynchronous))
                return chain
        case Pure(value=value):
            return pure(value)


def _step(shape: StepShape, effects: Effects, *, asynchronous: bool) -> Saga[object]:
    label = shape.label
    action: Callable[[], object]
    if asynchronous and shape.asynchronous:

        async def act_async() -> object:
            return effects.act(label)

        action = act_async
    else:

        def act() -> object:
            return effects.act(label)

        action = act
    action.__name__ = label
    compensate: Callable[[object], object] | None = None
    if shape.compensable and asynchronous and shape.asynchronous:

        async def undo_async(result: object) -> object:
            return effects.undo(label, result)  # type: ignore[func-returns-value]

        compensate = undo_async
    elif shape.compensable:
        compensate = partial(effects.undo, label)
    return step(
        action,
        compensate,
        name=f"{label}x" if shape.explicit else None,
        retry=Retry(shape.attempts, delay=0.0, jitter=0.0) if shape.attempts > 1 else None,
        idempotent=shape.idempotent,
        on_unknown=partial(effects.void, label) if shape.on_unknown else None,
        timeout=60.0 if shape.timeout else None,
        compensation_timeout=(
            60.0 if shape.undo_timeout and (shape.compensable or shape.on_unknown) else None
        ),
    )


# -- the two paths --------------------------------------------------------------------------------


Result: TypeAlias = tuple[str, object]


def _summary(outcome: Outcome[object]) -> tuple[object, ...]:
    match outcome:
        case Success(value=value):
            return ("success", value)
        case Failure(error=error, compensated=compensated):
            return ("failure", repr(error), compensated)
        case PartialFailure():
            failures = tuple(
                (f.path, repr(f.error), f.attempts) for f in outcome.failed_compensations
            )
            return (
                "partial",
                repr(outcome.error),
                outcome.compensated,
                failures,
                outcome.skipped,
                outcome.unresolved,
            )


def run_sync(shape: Shape, faults: tuple[dict[int, Fault], dict[int, str]], *, fast: bool) -> Any:
    effects = Effects(*faults, asynchronous_allowed=False)
    saga = build(shape, effects, asynchronous=False)
    events: list[Event] = []
    interpreter = SyncInterpreter() if fast else SyncInterpreter(listeners=[events.append])
    try:
        outcome: object = _summary(saga.run(interpreter, saga_id="s-1"))
    except KeyboardInterrupt as interruption:
        outcome = ("interrupted", repr(interruption), tuple(interruption.__notes__))
    return outcome, effects.trace


def run_async(shape: Shape, faults: tuple[dict[int, Fault], dict[int, str]], *, fast: bool) -> Any:
    effects = Effects(*faults, asynchronous_allowed=True)
    saga = build(shape, effects, asynchronous=True)
    events: list[Event] = []
    interpreter = AsyncInterpreter() if fast else AsyncInterpreter(listeners=[events.append])
    try:
        outcome: object = _summary(asyncio.run(interpreter.run_saga(saga, saga_id="s-1")))
    except KeyboardInterrupt as interruption:
        outcome = ("interrupted", repr(interruption), tuple(interruption.__notes__))
    return outcome, effects.trace


faults = st.tuples(action_faults, undo_faults)


@settings(max_examples=400, deadline=None)
@given(shapes, faults)
def test_a_stretch_runs_exactly_as_its_steps_one_at_a_time_under_the_sync_interpreter(
    shape: Shape, plan: tuple[dict[int, Fault], dict[int, str]]
) -> None:
    assert run_sync(shape, plan, fast=True) == run_sync(shape, plan, fast=False)


@settings(max_examples=200, deadline=None)
@given(shapes, faults)
def test_a_stretch_runs_exactly_as_its_steps_one_at_a_time_under_the_async_interpreter(
    shape: Shape, plan: tuple[dict[int, Fault], dict[int, str]]
) -> None:
    assert run_async(shape, plan, fast=True) == run_async(shape, plan, fast=False)


straight_steps = st.builds(
    StepShape,
    label=st.sampled_from(("a", "b", "c")),
    explicit=st.sampled_from((False, False, False, True)),
    compensable=st.sampled_from((True, True, True, False)),
    attempts=st.sampled_from((1, 1, 1, 2)),
    idempotent=st.sampled_from((False, False, True)),
    on_unknown=st.sampled_from((False, False, True)),
    timeout=st.just(False),
    asynchronous=st.booleans(),
    undo_timeout=st.sampled_from((False, False, False, True)),
)
straight_shapes = st.lists(straight_steps, min_size=2, max_size=8).map(
    lambda parts: Then(tuple(parts))
)


@settings(max_examples=400, deadline=None)
@given(straight_shapes, faults)
def test_a_saga_that_is_one_stretch_runs_as_its_steps_one_at_a_time(
    shape: Shape, plan: tuple[dict[int, Fault], dict[int, str]]
) -> None:
    """A saga that is all one stretch runs before any engine is made (`Engine.straight`), the
    engine made only when a step or a compensation does something it must decide: whatever
    that is (a retry, an unknown outcome, a rejected result, a compensation that fails, times
    out or returns something else, an interrupt), the run is the general path's."""
    assert run_sync(shape, plan, fast=True) == run_sync(shape, plan, fast=False)
    assert run_async(shape, plan, fast=True) == run_async(shape, plan, fast=False)


def _run_state_left_in_cycles(run: Callable[[], object]) -> list[str] | None:
    """The engine's and drivers' objects that `run()` leaves in reference cycles once its outcome
    is dropped: what a failed outcome would keep alive (the whole run) until the garbage
    collector found it. ``None`` if the run was interrupted: a propagating interrupt's traceback
    holds the frames it left, as any exception raised from a variable does in Python, until the
    caller drops it."""
    # Everything there is before the run is frozen (the collector skips it), so the collection
    # after it looks only at what the run made: cheap however big the test process has grown.
    gc.disable()
    gc.freeze()
    try:
        try:
            run()
        except KeyboardInterrupt:
            return None
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        return sorted(
            type(thing).__qualname__
            for thing in gc.garbage
            if type(thing).__module__.startswith("fsaga.interpreter")
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.unfreeze()
        gc.enable()


@settings(max_examples=100, deadline=None)
@given(shapes, faults, st.booleans())
def test_an_outcome_does_not_keep_its_run_alive(
    shape: Shape, plan: tuple[dict[int, Fault], dict[int, str]], listening: bool
) -> None:
    listeners: list[Callable[[Event], None]] = [lambda _: None] if listening else []
    for asynchronous in (False, True):
        effects = Effects(*plan, asynchronous_allowed=asynchronous)
        saga = build(shape, effects, asynchronous=asynchronous)

        def run(saga: Saga[object] = saga, asynchronous: bool = asynchronous) -> object:
            if asynchronous:
                interpreter = AsyncInterpreter(listeners=listeners)
                return asyncio.run(interpreter.run_saga(saga, saga_id="s-1"))
            return saga.run(SyncInterpreter(listeners=listeners), saga_id="s-1")

        assert _run_state_left_in_cycles(run) in ([], None)


# -- the stretches really run ------------------------------------------------------------------


def _chain(length: int, effects: Effects) -> Saga[object]:
    saga: Saga[object] = step(partial(effects.act, "s0"), partial(effects.undo, "s0"), name="s0")
    for index in range(1, length):
        label = f"s{index}"
        saga = saga.then(
            step(partial(effects.act, label), partial(effects.undo, label), name=label)
        )
    return saga


def _kinds(saga: Saga[object], **options: Any) -> Iterator[str]:
    engine: Engine[object] = Engine(saga, EngineSettings(**options), stretches="sync")
    call = engine.poll()
    while call is not None:
        yield call.kind
        stretch = call.stretch
        if stretch is not None:
            stretch.results.extend([None] * len(stretch.actions))
        call = engine.succeed(call, None) or engine.poll()


def test_a_chain_of_plain_steps_is_one_stretch_made_once_per_saga_value() -> None:
    saga = _chain(5, Effects({}, {}, asynchronous_allowed=False))
    assert isinstance(saga, BindNode)

    plan = plan_of(saga)

    assert len(plan) == 1
    assert isinstance(plan[0], StretchAt)
    assert isinstance(plan[0].stretch, Stretch)
    assert plan_of(saga) is plan
    assert list(_kinds(saga)) == ["stretch"]


@pytest.mark.parametrize("fault", [None, "raise", "unknown", "returns-failure", "interrupt"])
def test_a_saga_that_is_one_stretch_makes_an_engine_only_when_one_must_decide(
    monkeypatch: pytest.MonkeyPatch, fault: Fault | None
) -> None:
    """Success, and a plain failure undone by plain compensations, run with no engine; an
    unknown outcome, a result that is not plain or an interrupt make one."""
    made: list[object] = []
    init = Engine.__init__

    def counting(engine: Engine[object], *args: Any, **kwargs: Any) -> None:
        made.append(engine)
        init(engine, *args, **kwargs)

    monkeypatch.setattr(Engine, "__init__", counting)
    effects = Effects({} if fault is None else {3: fault}, {}, asynchronous_allowed=False)
    with contextlib.suppress(KeyboardInterrupt):
        _chain(4, effects).run(SyncInterpreter())
    assert len(made) == (0 if fault in (None, "raise") else 1)
    straight = Engine.straight(_chain(4, effects), EngineSettings(), "sync")
    assert straight is not None
    assert Engine.straight(_chain(4, effects), EngineSettings(run_timeout=5.0), "sync") is None
    listening = EngineSettings(listeners=(lambda _: None,))
    assert Engine.straight(_chain(4, effects), listening, "sync") is None


def test_a_listener_a_deadline_or_a_step_timeout_takes_the_general_path() -> None:
    effects = Effects({}, {}, asynchronous_allowed=False)
    saga = _chain(3, effects)
    timed = saga.then(step(lambda: None, timeout=5.0)).then(_chain(2, effects).named("more"))

    assert list(_kinds(saga, listeners=(lambda event: None,))) == ["action"] * 3
    assert list(_kinds(saga, run_timeout=5.0)) == ["action"] * 3
    assert list(_kinds(timed)) == ["stretch", "action", "stretch"]


def test_current_context_in_a_stretch_names_the_step_running_now() -> None:
    effects = Effects({}, {}, asynchronous_allowed=False)
    saga = _chain(3, effects).then(_chain(2, effects).named("sub"))

    assert saga.run(SyncInterpreter(), saga_id="s-1") == Success("s1-5")
    assert [entry[2] for entry in effects.trace] == [
        ("s0", "action", 1, "s-1/s0"),
        ("s1", "action", 1, "s-1/s1"),
        ("s2", "action", 1, "s-1/s2"),
        ("sub/s0", "action", 1, "s-1/sub/s0"),
        ("sub/s1", "action", 1, "s-1/sub/s1"),
    ]


def test_a_failure_in_a_stretch_compensates_with_paths_counted_as_the_steps_ran() -> None:
    effects = Effects({5: "raise"}, {}, asynchronous_allowed=False)
    shape = Then(
        tuple(StepShape("a", False, True, 1, False, False, False, False) for _ in range(5))
    )
    saga = build(shape, effects, asynchronous=False)

    outcome = saga.run(SyncInterpreter())

    assert outcome == Failure(Declined(5), ("a#4", "a#3", "a#2", "a"))


@pytest.mark.parametrize("where", [1, 3])
def test_an_interrupt_in_a_stretch_leaves_the_cut_step_unknown_and_undoes_the_rest(
    where: int,
) -> None:
    effects = Effects({where: "interrupt"}, {}, asynchronous_allowed=False)
    saga = _chain(4, effects)

    with pytest.raises(KeyboardInterrupt) as raised:
        saga.run(SyncInterpreter())

    undone = [entry[1] for entry in effects.trace if entry[0] == "undo"]
    assert undone == [f"s{index}" for index in range(where - 2, -1, -1)]
    assert f"s{where - 1}" in raised.value.__notes__[0]  # unresolved: the cut step
