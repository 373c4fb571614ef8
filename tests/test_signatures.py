"""Whether a function can take the arguments a saga will give it (fsaga._signatures), checked
against real calls over generated signatures: the fast reading of code objects must agree with
Python's own binding rules on every function it reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fsaga._signatures import call_problem

KINDS = ("positional-only", "positional", "keyword-only")


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str
    default: bool


@dataclass(frozen=True)
class Shape:
    """A generated signature, how a partial binds it, and whether it is a bound method."""

    parameters: tuple[Parameter, ...]
    varargs: bool
    varkeywords: bool
    bound_positional: int
    bound_keywords: tuple[str, ...]
    nested_partial: bool
    method: bool
    instance: bool

    def source(self) -> str:
        # Python requires: positional-only, then positional, then keyword-only; defaults of
        # the positional ones trailing. Order the generated parameters that way.
        ordered = sorted(self.parameters, key=lambda parameter: KINDS.index(parameter.kind))
        parts: list[str] = []
        seen_default = False
        for index, parameter in enumerate(ordered):
            if parameter.kind == "keyword-only" and (
                index == 0 or ordered[index - 1].kind != "keyword-only"
            ):
                parts.append("*args" if self.varargs else "*")
            default = parameter.default or (seen_default and parameter.kind != "keyword-only")
            seen_default = seen_default or (default and parameter.kind != "keyword-only")
            parts.append(f"{parameter.name}=None" if default else parameter.name)
            if parameter.kind == "positional-only" and (
                index + 1 == len(ordered) or ordered[index + 1].kind != "positional-only"
            ):
                parts.append("/")
        if self.varargs and not any(p.kind == "keyword-only" for p in ordered):
            parts.append("*args")
        if self.varkeywords:
            parts.append("**kwargs")
        if self.method:
            parts.insert(0, "self")
        return f"def function({', '.join(parts)}):\n    return None\n"


names = st.sampled_from(["a", "b", "c", "d", "e"])


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    chosen = draw(st.lists(names, unique=True, max_size=4))
    parameters = tuple(
        Parameter(name, draw(st.sampled_from(KINDS)), draw(st.booleans())) for name in chosen
    )
    return Shape(
        parameters,
        varargs=draw(st.booleans()),
        varkeywords=draw(st.booleans()),
        bound_positional=draw(st.integers(0, 3)),
        bound_keywords=tuple(draw(st.lists(st.sampled_from(["a", "b", "c", "x"]), unique=True))),
        nested_partial=draw(st.booleans()),
        method=draw(st.booleans()),
        instance=draw(st.booleans()),
    )


def build(shape: Shape) -> Callable[..., object]:
    namespace: dict[str, Any] = {}
    exec(shape.source(), namespace)
    function: Callable[..., object] = namespace["function"]
    if shape.method:
        owner = type("Owner", (), {"__call__" if shape.instance else "method": function})
        function = owner() if shape.instance else owner().method
    args = [None] * shape.bound_positional
    keywords = dict.fromkeys(shape.bound_keywords)
    if shape.bound_positional or keywords:
        if shape.nested_partial and args:
            function = partial(partial(function, *args[:1]), *args[1:], **keywords)
        else:
            function = partial(function, *args, **keywords)
    return function


def binds(function: Callable[..., object], given: int) -> bool:
    """The oracle: call it (the generated functions do nothing). `inspect.Signature.bind` is
    not one: it refuses a partial that passes a positional-only name into ``**kwargs``, which
    Python accepts."""
    try:
        function(*[None] * given)
    except TypeError:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(shape=shapes(), given_arguments=st.integers(0, 3))
def test_the_fast_reading_agrees_with_inspect_on_every_generated_signature(
    shape: Shape, given_arguments: int
) -> None:
    try:
        function = build(shape)
    except TypeError:
        return  # a partial that binds a parameter twice: Python refuses to make it at all
    expected = binds(function, given_arguments)

    problem = call_problem(function, given_arguments)

    assert (problem is None) == expected, (shape.source(), shape, problem)
    if problem is not None:
        assert "cannot be called with" in problem


def test_a_partial_that_gives_a_parameter_twice_is_refused() -> None:
    def charge(amount: int, currency: str) -> None:
        return None

    # partial binds `amount` by keyword; the run's argument would land on `amount` again.
    assert call_problem(partial(charge, amount=3), 1) is not None
    assert call_problem(partial(charge, currency="EUR"), 1) is None


def test_a_keyword_only_parameter_without_default_is_refused() -> None:
    def release(result: object, *, reason: str) -> None:
        return None

    assert call_problem(release, 1) == (
        "release() cannot be called with one argument: its signature is (result, *, reason)"
    )
    assert call_problem(partial(release, reason="cancelled"), 1) is None


def test_callables_whose_signature_is_not_read_are_let_through() -> None:
    assert call_problem(len, 0) is None  # a builtin: the run will say
    assert call_problem(dict, 3) is None  # a class
