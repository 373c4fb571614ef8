"""`fsaga.pipeline`: the `Saga` methods as functions of one saga, checked against the methods.

The laws use the equivalence of tests/test_laws.py (``~``: the same events, effects, waits,
world changes and outcome under a fault plan drawn over the saga's steps): a pipeline built
from the functions, applied by hand, by `toolz.pipe` or by `returns.pipeline.flow`, runs as the
method chain it names; `traverse` over n items runs as the chain of their sagas.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial, reduce
from pathlib import Path

import pytest
import toolz
from hypothesis import given
from hypothesis import strategies as st
from returns.future import FutureResult
from returns.io import IOSuccess
from returns.pipeline import flow, is_successful
from returns.result import Failure as ResultFailure
from returns.result import Success as ResultSuccess
from returns.unsafe import unsafe_perform_io
from test_laws import (
    LAWS,
    assert_equivalent,
    continuation,
    outcome_shape,
    tagged,
)

from fsaga import AsyncInterpreter, Failure, Saga, Success, pure, step
from fsaga import traverse as traverse_items
from fsaga.interpreter import SyncInterpreter
from fsaga.pipeline import (
    bind,
    map_,
    named,
    run,
    run_to_result,
    then,
    timeout,
    to_result,
    traverse,
)
from fsaga.testing import FaultInjectingInterpreter, RecordingInterpreter
from fsaga.testing.strategies import (
    ContinuationSpec,
    SagaSpec,
    World,
    build_saga,
    continuation_specs,
    fault_plans,
    saga_specs,
)

# -- what the functions do ------------------------------------------------------------------------


def declined() -> str:
    raise ValueError("card declined")


def pad(width: int) -> Saga[str]:
    return step(lambda: "x" * width, name="pad")


def doubled(number: int) -> Saga[int]:
    return pure(number * 2)


def test_each_function_builds_what_its_method_builds() -> None:
    interpreter = RecordingInterpreter()
    built = map_(len)(bind(pad)(then(pure(3))(pure(1))))
    saga = named("padding")(timeout(5)(built))

    assert saga.run(interpreter, saga_id="s") == Success(3)
    assert interpreter.paths() == ["padding/pad"]
    assert traverse(doubled)([1, 2, 3]).run(interpreter) == Success((2, 4, 6))


def test_run_is_the_method_with_its_saga_id() -> None:
    interpreter = RecordingInterpreter()

    assert run(interpreter, saga_id="order-7")(pure(1)) == Success(1)
    assert {event.saga_id for event in interpreter.events} == {"order-7"}


def test_run_to_result_gives_the_value_or_the_whole_failed_outcome() -> None:
    undone: list[str] = []
    reserve = step(lambda: "R-1", undone.append, name="reserve")
    failing = reserve.then(step(declined, name="charge"))

    assert run_to_result(SyncInterpreter())(reserve) == ResultSuccess("R-1")
    result = run_to_result(SyncInterpreter())(failing)
    assert not is_successful(result)
    failure = result.failure()
    assert isinstance(failure, Failure)
    assert failure.compensated == ("reserve",)
    assert undone == ["R-1"]


def test_to_result_is_the_outcome_method() -> None:
    assert to_result(Success(2)) == ResultSuccess(2)
    failed = Failure(ValueError("no"), ("reserve",))
    assert to_result(failed) == ResultFailure(failed)


@pytest.mark.anyio
async def test_run_to_result_with_an_async_interpreter_gives_a_future_result() -> None:
    ran: list[str] = []

    async def reserve() -> str:
        ran.append("reserve")
        return "R-1"

    future = run_to_result(AsyncInterpreter())(step(reserve, name="reserve"))
    assert isinstance(future, FutureResult)
    assert ran == []  # nothing runs until the future is awaited
    assert await future.map(len) == IOSuccess(3)
    assert ran == ["reserve"]

    failed = await run_to_result(AsyncInterpreter())(step(declined, name="charge"))
    assert not is_successful(failed)
    outcome = unsafe_perform_io(failed.failure())
    assert isinstance(outcome, Failure)
    assert str(outcome.error) == "card declined"


def test_a_pipeline_runs_under_toolz_pipe_and_returns_flow_alike() -> None:
    steps = (then(step(lambda: 20, name="charge")), map_(str), run_to_result(SyncInterpreter()))
    reserve = step(lambda: 1, name="reserve")

    assert toolz.pipe(reserve, *steps) == ResultSuccess("20")
    assert flow(reserve, *steps) == ResultSuccess("20")
    assert toolz.compose_left(*steps)(reserve) == ResultSuccess("20")


def test_options_are_checked_when_the_function_is_made() -> None:
    with pytest.raises(TypeError, match=r"then\(\) needs a Saga, got 1; wrap a function"):
        then(1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"bind\(\) needs a callable returning a Saga"):
        bind(pure(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"bind\(\): the continuation is called with one arg"):
        bind(lambda: pure(1))  # type: ignore[arg-type, misc]
    with pytest.raises(TypeError, match=r"map\(\) needs a callable, got 'str'"):
        map_("str")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"named\(\): name 'a/b' may not contain"):
        named("a/b")
    with pytest.raises(ValueError, match=r"timeout\(\)"):
        timeout(-1)
    with pytest.raises(TypeError, match=r"traverse\(\) needs a callable returning a Saga"):
        traverse(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got the class SyncInterpreter: call it to make one"):
        run(SyncInterpreter)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"run\(\) needs an interpreter"):
        run_to_result(object())  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"to_result\(\) needs an outcome of a run, got 1"):
        to_result(1)  # type: ignore[arg-type]


def test_a_function_applied_to_what_is_not_a_saga_names_itself() -> None:
    charge = then(step(lambda: 1, name="charge"))

    assert repr(charge) == "fsaga.pipeline.then(<Saga: step 'charge'>)"
    with pytest.raises(
        TypeError, match=r"fsaga.pipeline.then\(<Saga: step 'charge'>\) applies to a Saga, got 5"
    ):
        charge(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"then\(\) needs a Saga, got fsaga.pipeline.then"):
        pure(1).then(charge)  # type: ignore[arg-type]
    assert repr(map_(str)) == "fsaga.pipeline.map_(<class 'str'>)"
    assert repr(timeout(2)) == "fsaga.pipeline.timeout(2)"
    assert repr(named("payment")) == "fsaga.pipeline.named('payment')"


# -- laws: the functions are the methods ----------------------------------------------------------


@dataclass(frozen=True)
class Then:
    spec: SagaSpec


@dataclass(frozen=True)
class Bind:
    spec: ContinuationSpec


@dataclass(frozen=True)
class Map:
    tag: str


@dataclass(frozen=True)
class Named:
    name: str


@dataclass(frozen=True)
class Timeout:
    seconds: float


Op = Then | Bind | Map | Named | Timeout
"""One method call of a chain, as data; drawn fresh for each position so that the explicit
step names of different positions never clash."""


def op_at(position: int) -> st.SearchStrategy[Op]:
    namespace = f"p{position}_"
    return st.one_of(
        st.builds(Then, saga_specs(max_leaves=3, namespace=namespace)),
        st.builds(Bind, continuation_specs(max_leaves=3, namespace=namespace)),
        st.builds(Map, st.sampled_from(("f", "g"))),
        st.just(Named(f"sub{position}")),
        st.just(Timeout(1_000.0)),
    )


POSITIONS = [op_at(position) for position in range(4)]
CHAINS = st.integers(0, len(POSITIONS)).flatmap(lambda count: st.tuples(*POSITIONS[:count]))
M = saga_specs(max_leaves=4, namespace="m")


def by_method(op: Op, world: World, saga: Saga[object]) -> Saga[object]:
    match op:
        case Then(spec):
            return saga.then(build_saga(spec, world))
        case Bind(spec):
            return saga.bind(continuation(spec, world))
        case Map(tag):
            return saga.map(partial(tagged, tag))
        case Named(name):
            return saga.named(name)
        case Timeout(seconds):
            return saga.timeout(seconds)


def as_function(op: Op, world: World) -> Callable[[Saga[object]], Saga[object]]:
    match op:
        case Then(spec):
            return then(build_saga(spec, world))
        case Bind(spec):
            return bind(continuation(spec, world))
        case Map(tag):
            return map_(partial(tagged, tag))
        case Named(name):
            return named(name)
        case Timeout(seconds):
            return timeout(seconds)


def method_chain(m: SagaSpec, ops: tuple[Op, ...], world: World) -> Saga[object]:
    saga = build_saga(m, world)
    for op in ops:
        saga = by_method(op, world, saga)
    return saga


@LAWS
@given(M, CHAINS, st.data())
def test_functions_applied_by_hand_are_the_method_chain(
    m: SagaSpec, ops: tuple[Op, ...], data: st.DataObject
) -> None:
    """``f_n(...f_2(f_1(m))) ~ m.f_1().f_2()...f_n()`` for every function of the module"""

    def by_hand(world: World) -> Saga[object]:
        functions = [as_function(op, world) for op in ops]
        return reduce(lambda saga, function: function(saga), functions, build_saga(m, world))

    assert_equivalent(data, partial(method_chain, m, ops), by_hand)


@LAWS
@given(M, CHAINS, st.sampled_from(("toolz.pipe", "returns.flow")), st.data())
def test_a_pipeline_of_functions_is_the_method_chain(
    m: SagaSpec, ops: tuple[Op, ...], composer: str, data: st.DataObject
) -> None:
    """``pipe(m, f_1, ..., f_n) ~ m.f_1()...f_n()``, with toolz's pipe and returns' flow"""
    compose = toolz.pipe if composer == "toolz.pipe" else flow

    def piped(world: World) -> Saga[object]:
        saga: Saga[object] = compose(build_saga(m, world), *(as_function(op, world) for op in ops))
        return saga

    assert_equivalent(data, partial(method_chain, m, ops), piped)


ITEMS = st.lists(st.integers(0, 5), min_size=1, max_size=4, unique=True)
F = continuation_specs(max_leaves=3, namespace="f")


def each_item(f: ContinuationSpec, world: World) -> Callable[[int], Saga[object]]:
    """The saga of one item, named by the item so that items' explicit step names never clash."""
    make = continuation(f, world)
    return lambda item: make(item).named(f"item{item}")


@LAWS
@given(ITEMS, F, st.data())
def test_traverse_of_items_is_the_then_chain_of_their_sagas(
    items: list[int], f: ContinuationSpec, data: st.DataObject
) -> None:
    """``traverse(fn)(items).map(last) ~ fn(x1).then(fn(x2))...then(fn(xn))``"""

    def chain(world: World) -> Saga[object]:
        sagas = [each_item(f, world)(item) for item in items]
        return reduce(lambda saga, next: saga.then(next), sagas[1:], sagas[0])

    def traversed(world: World) -> Saga[object]:
        return traverse(each_item(f, world))(items).map(lambda results: results[-1])

    assert_equivalent(data, chain, traversed)


@LAWS
@given(st.lists(st.integers(0, 5), max_size=4, unique=True), F, st.data())
def test_traverse_with_the_items_last_is_traverse(
    items: list[int], f: ContinuationSpec, data: st.DataObject
) -> None:
    """``traverse(fn)(items) ~ fsaga.traverse(items, fn)``"""
    assert_equivalent(
        data,
        lambda world: traverse_items(items, each_item(f, world)),
        lambda world: traverse(each_item(f, world))(items),
    )


def test_traverse_of_no_items_is_pure_of_the_empty_tuple() -> None:
    interpreter = RecordingInterpreter()

    assert traverse(lambda n: step(lambda: n))([]).run(interpreter) == Success(())
    assert interpreter.effects == []


@LAWS
@given(M, st.data())
def test_run_to_result_is_to_result_of_the_outcome(m: SagaSpec, data: st.DataObject) -> None:
    """``run_to_result(i)(m) == to_result(m.run(i))``, through failures and failed undos"""
    discovery = RecordingInterpreter()
    build_saga(m, World()).run(discovery)
    plan = data.draw(fault_plans(discovery.paths("action"), interrupts=False))
    by_method = build_saga(m, World()).run(FaultInjectingInterpreter(plan))
    result = run_to_result(FaultInjectingInterpreter(plan))(build_saga(m, World()))

    if isinstance(by_method, Success):
        assert result == ResultSuccess(by_method.value)
    else:
        assert outcome_shape(result.failure()) == outcome_shape(by_method)


# -- what the returns mypy plugin is needed for ---------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
FLOW = """
from collections.abc import Callable

from returns.pipeline import flow, pipe

from fsaga import Saga, pure
from fsaga.interpreter import SyncInterpreter
from fsaga.pipeline import map_, run_to_result, then


def cents(euros: int) -> int:
    return euros * 100


reveal_type(flow(pure(1), then(pure(2)), map_(cents), run_to_result(SyncInterpreter())))
wrong: Saga[str] = flow(pure(1), map_(cents))
unannotated = flow(pure(1), map_(cents))
composed: Callable[[Saga[int]], Saga[int]] = pipe(map_(cents), map_(cents))
"""


def mypy_messages(tmp_path: Path, *, plugin: bool) -> list[str]:
    """What mypy --strict, configured as the project is, says about `FLOW`, with or without the
    returns plugin."""
    config = (ROOT / "mypy.ini").read_text(encoding="utf-8").replace("\nfiles = ", "\n# files = ")
    if plugin:
        config = config.replace(
            "[mypy]\n", "[mypy]\nplugins = returns.contrib.mypy.returns_plugin\n"
        )
    (tmp_path / "mypy.ini").write_text(config, encoding="utf-8")
    (tmp_path / "flow.py").write_text(FLOW, encoding="utf-8")
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(tmp_path / "mypy.ini"),
            "--cache-dir",
            str(ROOT / ".mypy_cache" / ("returns-plugin" if plugin else "no-plugin")),
            "--no-error-summary",
            "--hide-error-context",
            str(tmp_path / "flow.py"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert not checked.stderr, checked.stderr
    return [line.split(" ", 1)[1] for line in checked.stdout.splitlines()]


@pytest.mark.static
def test_returns_flow_is_typed_only_with_the_returns_plugin(tmp_path: Path) -> None:
    """fsaga's pipeline functions are plain callables, but returns' `flow` and `pipe` only
    learn the type of a composition from returns' mypy plugin: without it, a flow's type is
    whatever the annotation says, or an error asking for one, and a pipe is no typed callable
    at all."""
    without = mypy_messages(tmp_path, plugin=False)
    assert without[:2] == [
        'note: Revealed type is "Never"',
        'error: Need type annotation for "unannotated"  [var-annotated]',
    ]
    assert without[2].startswith("error: Incompatible types in assignment (expression has type")
    assert 'variable has type "Callable[[Saga[int]], Saga[int]]")  [assignment]' in without[2]
    assert mypy_messages(tmp_path, plugin=True) == [
        'note: Revealed type is "returns.result.Result[int, fsaga.outcome.Failure | '
        'fsaga.outcome.PartialFailure]"',
        'error: Incompatible types in assignment (expression has type "Saga[int]", variable has '
        'type "Saga[str]")  [assignment]',
    ]
