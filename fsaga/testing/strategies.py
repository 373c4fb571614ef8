"""Hypothesis strategies for sagas and fault plans, and the compensation laws as one call.

This module needs hypothesis (``pip install fsaga[testing]``); the rest of `fsaga.testing` does
not. It offers three things:

- **Saga specs**: `saga_specs()` and `continuation_specs()` generate the plain-data saga trees
  of `fsaga.testing.specs` (whose names this module re-exports: `StepSpec`, `ThenSpec`, ...,
  `World`, `build_saga`); `build_saga` turns them into real sagas that act on a toy `World`.
- **Fault plans**: `fault_plans(paths)` draws which actions and compensations fail, how often,
  which actions hang, and where an interrupt lands, for the fault-injecting interpreters.
- **Laws for your own sagas**: `assert_compensation_laws(make_saga)` (sync) and
  `assert_async_compensation_laws(make_saga)` (async) run a saga under many fault plans and
  check every run with `fsaga.testing.check_run`.

>>> from hypothesis import find
>>> from fsaga import Success
>>> from fsaga.interpreter import SyncInterpreter
>>> spec = find(saga_specs(max_leaves=3), lambda spec: isinstance(spec, ParSpec))
>>> isinstance(build_saga(spec, World()).run(SyncInterpreter()), Success)
True
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache, partial
from itertools import count, pairwise
from typing import final

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from fsaga.testing.laws import assert_async_compensation_laws as assert_async_compensation_laws
from fsaga.testing.laws import assert_compensation_laws as assert_compensation_laws
from fsaga.testing.laws import fault_plans as fault_plans
from fsaga.testing.specs import RETRY_DELAY as RETRY_DELAY
from fsaga.testing.specs import STEP_TIMEOUT as STEP_TIMEOUT
from fsaga.testing.specs import SUBTREE_TIMEOUT as SUBTREE_TIMEOUT
from fsaga.testing.specs import BindSpec as BindSpec
from fsaga.testing.specs import ContinuationSpec as ContinuationSpec
from fsaga.testing.specs import MapSpec as MapSpec
from fsaga.testing.specs import NamedSpec as NamedSpec
from fsaga.testing.specs import ParSpec as ParSpec
from fsaga.testing.specs import PureSpec as PureSpec
from fsaga.testing.specs import Receipt as Receipt
from fsaga.testing.specs import SagaSpec as SagaSpec
from fsaga.testing.specs import SequenceSpec as SequenceSpec
from fsaga.testing.specs import StepSpec as StepSpec
from fsaga.testing.specs import ThenSpec as ThenSpec
from fsaga.testing.specs import TimeoutSpec as TimeoutSpec
from fsaga.testing.specs import World as World
from fsaga.testing.specs import WorldChange as WorldChange
from fsaga.testing.specs import build_continuation as build_continuation
from fsaga.testing.specs import build_saga as build_saga

__all__ = [
    "IMPLICIT_LABELS",
    "RETRY_DELAY",
    "STEP_TIMEOUT",
    "SUBTREE_TIMEOUT",
    "BindSpec",
    "ContinuationSpec",
    "MapSpec",
    "NamedSpec",
    "ParSpec",
    "PureSpec",
    "Receipt",
    "SagaSpec",
    "SequenceSpec",
    "StepSpec",
    "ThenSpec",
    "TimeoutSpec",
    "World",
    "WorldChange",
    "assert_async_compensation_laws",
    "assert_compensation_laws",
    "build_continuation",
    "build_saga",
    "continuation_specs",
    "fault_plans",
    "saga_specs",
]


IMPLICIT_LABELS = ("a", "b", "c")
"""The labels generated unnamed steps take: few, so repeats (``a``, ``a#2``) are common."""

# -- generating specs ---------------------------------------------------------------------------


_NODE_KINDS = ("then", "sequence", "bind", "par", "map", "named")


@st.composite
def _sized_specs(draw: st.DrawFn, max_leaves: int) -> SagaSpec:
    return _draw_tree(draw, draw(st.integers(1, max_leaves)), wrappable=True)


def _draw_tree(draw: st.DrawFn, leaves: int, *, wrappable: bool) -> SagaSpec:
    """A tree with `leaves` leaves (a bind counts the leaves of one of its two alternatives).

    Sizes are drawn first and split between children, so large trees are as common as small
    ones (plain `st.recursive` mostly makes tiny ones). `map` and `named` wrap a child without
    using up leaves; `wrappable` keeps them from wrapping each other without end.
    """
    if leaves == 1:
        return _draw_leaf(draw, wrappable=wrappable)
    kinds = _NODE_KINDS if wrappable else _NODE_KINDS[:4]
    match draw(st.sampled_from(kinds)):
        case "then":
            first = draw(st.integers(1, leaves - 1))
            return ThenSpec(
                _draw_tree(draw, first, wrappable=True),
                _draw_tree(draw, leaves - first, wrappable=True),
            )
        case "sequence":
            return SequenceSpec(_draw_forest(draw, leaves))
        case "bind":
            source = draw(st.integers(1, leaves - 1))
            return BindSpec(
                _draw_tree(draw, source, wrappable=True),
                ContinuationSpec(
                    _draw_tree(draw, leaves - source, wrappable=True),
                    _draw_tree(draw, leaves - source, wrappable=True),
                ),
            )
        case "par":
            return ParSpec(_draw_forest(draw, leaves))
        case "map":
            return MapSpec(_draw_tree(draw, leaves, wrappable=False), draw(_TAGS))
        case _:
            return NamedSpec("sub", _draw_tree(draw, leaves, wrappable=False))


def _draw_forest(draw: st.DrawFn, leaves: int) -> tuple[SagaSpec, ...]:
    """Up to 4 trees sharing `leaves` leaves."""
    parts = draw(st.integers(1, min(leaves, 4)))
    cuts = sorted(
        draw(
            st.lists(
                st.integers(1, leaves - 1), min_size=parts - 1, max_size=parts - 1, unique=True
            )
        )
    )
    bounds = [0, *cuts, leaves]
    return tuple(_draw_tree(draw, high - low, wrappable=True) for low, high in pairwise(bounds))


_TAGS = st.sampled_from(("left", "right"))


def _draw_leaf(draw: st.DrawFn, *, wrappable: bool) -> SagaSpec:
    choice = draw(st.integers(0, 9))
    if choice <= 6:
        return draw(_STEP_SPECS)
    if choice == 7:
        return PureSpec(draw(st.integers(0, 3)))
    if choice == 8 or not wrappable:
        empty: tuple[SagaSpec, ...] = (ParSpec(()), SequenceSpec(()))
        return draw(st.sampled_from(empty))
    inner = _draw_leaf(draw, wrappable=False)
    wrapped: tuple[SagaSpec, ...] = (MapSpec(inner, "left"), NamedSpec("sub", inner))
    return draw(st.sampled_from(wrapped))


def _make_step(
    *, label: str, compensable: bool, attempts: int, compensation_attempts: int, explicit: bool
) -> StepSpec:
    return StepSpec(
        label, compensable, attempts, compensation_attempts if compensable else 1, explicit
    )


_STEP_SPECS = st.builds(
    _make_step,
    label=st.sampled_from(IMPLICIT_LABELS),
    # Mostly compensable and implicitly named: those make the interesting runs.
    compensable=st.sampled_from((True, True, True, False)),
    attempts=st.integers(1, 3),
    compensation_attempts=st.integers(1, 2),
    explicit=st.sampled_from((False, False, False, True)),
)


def saga_specs(
    *,
    max_leaves: int = 8,
    namespace: str = "",
    timeouts: bool = False,
    unknown_outcomes: bool = False,
) -> SearchStrategy[SagaSpec]:
    """Saga trees of 1 to `max_leaves` leaves, every node kind included.

    Unnamed steps take labels from `IMPLICIT_LABELS`; explicit step names (``s1``, ``s2``, ...)
    and sub-saga names (``n1``, ...) are unique in the tree and start with `namespace`, so
    specs drawn with different namespaces can be composed without clashing names.

    With `unknown_outcomes`, steps are also declared idempotent (`StepSpec.idempotent`) and
    given an unknown-outcome compensation (`StepSpec.on_unknown`), about one in three each,
    independently of having a compensation: what settles a step whose outcome an interrupt
    made unknown (contract rule 3), under any interpreter.

    With `timeouts`, trees also get what unknown outcomes are made of (for async
    interpreters): steps with a timeout and sub-trees with a deadline (`TimeoutSpec`), and,
    as with `unknown_outcomes`, idempotent steps and unknown-outcome compensations.

    >>> from hypothesis import given, settings
    >>> from fsaga import Success
    >>> from fsaga.interpreter import SyncInterpreter
    >>> @settings(max_examples=20)
    ... @given(saga_specs(max_leaves=4))
    ... def runs_to_success(spec: SagaSpec) -> None:
    ...     assert isinstance(build_saga(spec, World()).run(SyncInterpreter()), Success)
    >>> runs_to_success()
    >>> from hypothesis import find
    >>> def settles_unknowns(spec: SagaSpec) -> bool:
    ...     return isinstance(spec, StepSpec) and spec.idempotent and spec.on_unknown
    >>> found = find(saga_specs(max_leaves=1, unknown_outcomes=True), settles_unknowns)
    >>> found.idempotent, found.on_unknown, found.timeout
    (True, True, False)
    """
    _check_namespace(namespace)
    _check_max_leaves(max_leaves)
    if timeouts or unknown_outcomes:
        return _specs_with_unknown_outcomes(max_leaves, namespace, timeouts=timeouts)
    return _uniquely_named_specs(max_leaves, namespace)


def continuation_specs(
    *, max_leaves: int = 6, namespace: str = ""
) -> SearchStrategy[ContinuationSpec]:
    """Bind continuations (see `ContinuationSpec`), named as `saga_specs` names its trees."""
    _check_namespace(namespace)
    _check_max_leaves(max_leaves)
    return _uniquely_named_continuations(max_leaves, namespace)


# Strategies are immutable values; building each once spares hypothesis re-validating them.
@cache
def _uniquely_named_specs(max_leaves: int, namespace: str) -> SearchStrategy[SagaSpec]:
    return _sized_specs(max_leaves).map(partial(_named_uniquely, namespace=namespace))


@cache
def _uniquely_named_continuations(
    max_leaves: int, namespace: str
) -> SearchStrategy[ContinuationSpec]:
    raw = _sized_specs(max_leaves)
    return st.builds(ContinuationSpec, raw, raw).map(
        partial(_continuation_named_uniquely, namespace=namespace)
    )


@cache
def _specs_with_unknown_outcomes(
    max_leaves: int, namespace: str, *, timeouts: bool
) -> SearchStrategy[SagaSpec]:
    return _with_unknown_outcomes(_uniquely_named_specs(max_leaves, namespace), timeouts=timeouts)


@st.composite
def _with_unknown_outcomes(
    draw: st.DrawFn, specs: SearchStrategy[SagaSpec], *, timeouts: bool
) -> SagaSpec:
    return _UnknownOutcomeDrawer(draw, timeouts=timeouts).spec(draw(specs))


@final
class _UnknownOutcomeDrawer:
    """Gives a tree's steps idempotence and unknown-outcome compensations and, with `timeouts`,
    timeouts, and wraps some sub-trees in deadlines."""

    __slots__ = ("_draw", "_timeouts")

    def __init__(self, draw: st.DrawFn, *, timeouts: bool) -> None:
        self._draw = draw
        self._timeouts = timeouts

    def _chance(self, one_in: int) -> bool:
        return self._draw(st.integers(1, one_in)) == 1

    def continuation(self, continuation: ContinuationSpec) -> ContinuationSpec:
        return ContinuationSpec(self.spec(continuation.on_even), self.spec(continuation.on_odd))

    def spec(self, spec: SagaSpec) -> SagaSpec:
        decorated = self._inner(spec)
        return TimeoutSpec(decorated) if self._timeouts and self._chance(8) else decorated

    def _inner(self, spec: SagaSpec) -> SagaSpec:
        match spec:
            case StepSpec():
                return replace(
                    spec,
                    timeout=self._timeouts and self._chance(2),
                    idempotent=self._chance(3),
                    on_unknown=self._chance(3),
                )
            case PureSpec():
                return spec
            case ThenSpec(first=first, second=second):
                return ThenSpec(self.spec(first), self.spec(second))
            case SequenceSpec(items=items):
                return SequenceSpec(tuple(self.spec(item) for item in items))
            case BindSpec(source=source, continuation=continuation):
                return BindSpec(self.spec(source), self.continuation(continuation))
            case MapSpec(source=source, tag=tag):
                return MapSpec(self.spec(source), tag)
            case NamedSpec(name=name, inner=inner):
                return NamedSpec(name, self.spec(inner))
            case ParSpec(branches=branches):
                return ParSpec(tuple(self.spec(branch) for branch in branches))
            case TimeoutSpec(inner=inner):
                return TimeoutSpec(self.spec(inner))


def _check_max_leaves(max_leaves: int) -> None:
    if max_leaves < 1:
        raise ValueError(f"max_leaves must be at least 1, got {max_leaves!r}")


def _check_namespace(namespace: str) -> None:
    if "/" in namespace or "#" in namespace or namespace.strip() != namespace:
        raise ValueError(f"namespace {namespace!r} may not contain '/', '#' or outer spaces")


def _named_uniquely(spec: SagaSpec, *, namespace: str) -> SagaSpec:
    return _Renamer(namespace).spec(spec)


def _continuation_named_uniquely(
    continuation: ContinuationSpec, *, namespace: str
) -> ContinuationSpec:
    return _Renamer(namespace).continuation(continuation)


@final
class _Renamer:
    """Gives every explicit step and sub-saga of a tree its own name."""

    __slots__ = ("_namespace", "_serials")

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._serials = count(1)

    def _fresh(self, kind: str) -> str:
        return f"{self._namespace}{kind}{next(self._serials)}"

    def continuation(self, continuation: ContinuationSpec) -> ContinuationSpec:
        return ContinuationSpec(self.spec(continuation.on_even), self.spec(continuation.on_odd))

    def spec(self, spec: SagaSpec) -> SagaSpec:
        match spec:
            case StepSpec(explicit=explicit):
                return replace(spec, label=self._fresh("s")) if explicit else spec
            case PureSpec():
                return spec
            case ThenSpec(first=first, second=second):
                return ThenSpec(self.spec(first), self.spec(second))
            case SequenceSpec(items=items):
                return SequenceSpec(tuple(self.spec(item) for item in items))
            case BindSpec(source=source, continuation=continuation):
                return BindSpec(self.spec(source), self.continuation(continuation))
            case MapSpec(source=source, tag=tag):
                return MapSpec(self.spec(source), tag)
            case NamedSpec(inner=inner):
                return NamedSpec(self._fresh("n"), self.spec(inner))
            case ParSpec(branches=branches):
                return ParSpec(tuple(self.spec(branch) for branch in branches))
            case TimeoutSpec(inner=inner):
                return TimeoutSpec(self.spec(inner))
