"""Building steps and nodes (fsaga.saga): `step`'s common call takes a short path that must
accept nothing the full checks refuse and build the same node; the nodes are immutable."""

from __future__ import annotations

import copy
import inspect
import itertools
import pickle
import sys
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from functools import partial
from typing import Any

import pytest

from fsaga import Failure, pure, step
from fsaga.interpreter import SyncInterpreter
from fsaga.saga import BindNode, StepNode, _BindNodeDraft, _checked_step, _StepNodeDraft


def charge() -> str:
    return "charged"


def refund(_: object) -> None:
    return None


async def charge_async() -> str:
    return "charged"


async def refund_async(_: object) -> None:
    return None


def release_stock(sku: str, count: int) -> None:
    return None


class Gateway:
    def charge(self, amount: int) -> str:
        return f"charged {amount}"

    def refund(self) -> None:
        return None


class Refunder:
    def __call__(self) -> str:
        return "refunded"


class Name(str):
    """A str subclass: a valid name that is not exactly a `str`."""


def renamed(name: str) -> Callable[[], None]:
    """A plain function taking no argument, whose ``__name__`` is `name`."""

    def action() -> None:
        return None

    action.__name__ = name
    return action


def keyword_only_action(*, k: object) -> None:
    return None


def refund_keyword_only(result: object, *, k: object) -> None:
    return None


ACTIONS: list[Any] = [
    charge,
    charge_async,
    lambda: 1,
    lambda *args: None,
    lambda x=1: None,
    lambda *, k=1: None,
    keyword_only_action,
    lambda x: None,
    release_stock,
    partial(charge),
    Gateway().refund,
    Gateway().charge,
    Refunder(),
    print,
    int,
    42,
    None,
    *(renamed(name) for name in ["", "<x>", "a/b", "a#b", "x y", "é", "pay", " pay", "s1"]),
]

COMPENSATIONS: list[Any] = [
    None,
    refund,
    refund_async,
    lambda result: None,
    lambda: None,
    lambda *results: None,
    lambda result, extra=None: None,
    lambda result, *, extra=None: None,
    refund_keyword_only,
    release_stock,
    partial(release_stock, "sku-1"),
    partial(release_stock, "sku-1", 3),
    Gateway().charge,
    Gateway().refund,
    print,
    42,
    "refund",
]

NAMES: list[Any] = [
    None,
    "pay",
    "s1",
    "_pay",
    "é",
    "s-1",
    "pay card",
    "",
    " pay",
    "pay ",
    "pay\u00a0",
    "\u2003pay",
    "\t",
    "order/pay",
    "pay#2",
    "<pay>",
    Name("pay"),
    Name(" pay"),
    3,
    b"pay",
]


def built(build: Callable[[], object]) -> tuple[object, ...]:
    """What building gives: the node's fields, or the error's type and message."""
    try:
        node = build()
    except Exception as error:
        return (type(error), str(error))
    assert type(node) is StepNode
    fields = (node.action, node.compensate, node.name, type(node.name), node.explicit)
    return (*fields, node.attempt_timeout, node.options)


def test_the_common_call_builds_what_the_full_checks_build_or_refuses_what_they_refuse() -> None:
    """Every action, compensation and name of the lists above, the good and the bad: `step`
    (which takes a short path for the common call) agrees with the full checks, node for node
    and message for message."""
    unchecked_step: Any = step
    for action, compensate, name in itertools.product(ACTIONS, COMPENSATIONS, NAMES):
        expected = built(
            partial(_checked_step, action, compensate, name, None, None, None, None, False, None)
        )

        assert built(partial(unchecked_step, action, compensate, name=name)) == expected, (
            action,
            compensate,
            name,
        )


# mypy rejects these calls already; the run-time check is for code mypy does not see.
unchecked_step: Any = step


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        pytest.param(
            lambda: unchecked_step(charge, refund, name="order/pay"),
            ValueError,
            "step(): name 'order/pay' may not contain '/' or '#'",
            id="slash",
        ),
        pytest.param(
            lambda: unchecked_step(charge, refund, name="pay "),
            ValueError,
            "step(): name must be non-empty, without surrounding spaces: 'pay '",
            id="trailing-space",
        ),
        pytest.param(
            lambda: unchecked_step(charge, refund, name=3),
            TypeError,
            "step(): name must be a str, got 3",
            id="not-a-str",
        ),
        pytest.param(
            lambda: unchecked_step(42, refund, name="pay"),
            TypeError,
            "step 'pay': action must be callable, got 42",
            id="action-not-callable",
        ),
        pytest.param(
            lambda: unchecked_step(charge, "refund", name="pay"),
            TypeError,
            "step 'pay': compensate must be callable or None, got 'refund'",
            id="compensation-not-callable",
        ),
        pytest.param(
            lambda: unchecked_step(lambda sku: None, refund, name="pay"),
            TypeError,
            "step 'pay': action is called with no argument, but <lambda>() cannot be called "
            "with no argument: its signature is (sku)",
            id="action-takes-one",
        ),
        pytest.param(
            lambda: unchecked_step(charge, release_stock, name="pay"),
            TypeError,
            "step 'pay': compensate is called with one argument (the action's result), but "
            "release_stock() cannot be called with one argument: its signature is (sku, count)",
            id="compensation-takes-two",
        ),
        pytest.param(
            lambda: unchecked_step(charge, lambda: None, name="pay"),
            TypeError,
            "step 'pay': compensate is called with one argument (the action's result), but "
            "<lambda>() cannot be called with one argument: its signature is ()",
            id="compensation-takes-none",
        ),
        pytest.param(
            lambda: unchecked_step(charge, refund_keyword_only, name="pay"),
            TypeError,
            "step 'pay': compensate is called with one argument (the action's result), but "
            "refund_keyword_only() cannot be called with one argument: its signature is "
            "(result, *, k)",
            id="compensation-needs-a-keyword",
        ),
        pytest.param(
            lambda: unchecked_step(keyword_only_action, refund, name="pay"),
            TypeError,
            "step 'pay': action is called with no argument, but keyword_only_action() cannot "
            "be called with no argument: its signature is (*, k)",
            id="action-needs-a-keyword",
        ),
    ],
)
def test_the_common_call_still_refuses_bad_input_with_the_same_message(
    build: Callable[[], object], error: type[Exception], message: str
) -> None:
    """A plain action, a plain compensation and a name, nothing else: the call `step` makes
    cheap still refuses a bad name, a non-callable, and a function of the wrong arity."""
    with pytest.raises(error) as raised:
        build()

    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("action", "label"),
    [
        pytest.param(charge, "charge", id="function"),
        pytest.param(lambda: 1, "step", id="lambda"),
        pytest.param(renamed("a/b"), "step", id="slash"),
        pytest.param(renamed("a#b"), "step", id="hash"),
        pytest.param(renamed(""), "step", id="empty"),
        pytest.param(renamed("x y"), "x y", id="space-inside"),
        pytest.param(renamed("é"), "é", id="not-ascii"),
    ],
)
def test_the_common_call_derives_the_label_from_the_action(
    action: Callable[[], object], label: str
) -> None:
    saga = step(action, refund)

    assert isinstance(saga, StepNode)
    assert (saga.name, saga.explicit) == (label, False)


def test_a_name_that_is_a_str_subclass_is_kept_as_given() -> None:
    name = Name("pay")
    saga = step(charge, refund, name=name)

    assert isinstance(saga, StepNode)
    assert saga.name is name


def test_an_async_compensation_is_told_through_the_common_call() -> None:
    """The sync interpreter refuses a step it could not undo; the common call must still
    notice that the compensation is async."""
    saga = step(charge, refund_async, name="pay")
    plain = step(charge, refund, name="pay")

    assert isinstance(saga, StepNode)
    assert isinstance(plain, StepNode)
    assert (saga.options.async_undo, plain.options.async_undo) == (True, False)
    outcome = saga.run(SyncInterpreter())
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, TypeError)
    assert "refund_async) is async" in str(outcome.error)


@pytest.mark.skipif(
    sys.version_info < (3, 12), reason="inspect.markcoroutinefunction is new in Python 3.12"
)
def test_a_compensation_marked_as_a_coroutine_function_is_async() -> None:
    def refund_later(_: object) -> object:
        return None

    mark: Callable[[Callable[[object], object]], Callable[[object], object]] = vars(inspect)[
        "markcoroutinefunction"
    ]
    saga = step(charge, mark(refund_later), name="pay")

    assert isinstance(saga, StepNode)
    assert saga.options.async_undo


# -- nodes are immutable values -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "field"),
    [
        pytest.param(step(charge, refund, name="pay"), "name", id="step"),
        pytest.param(step(charge, refund, name="pay"), "compensate", id="step-compensate"),
        pytest.param(pure(1).then(pure(2)), "source", id="bind"),
        pytest.param(pure(1).then(pure(2)), "_plan", id="bind-plan"),
    ],
)
def test_a_node_refuses_assignment_and_deletion(node: object, field: str) -> None:
    with pytest.raises(FrozenInstanceError, match=f"cannot assign to field '{field}'"):
        setattr(node, field, None)
    with pytest.raises(FrozenInstanceError, match=f"cannot delete field '{field}'"):
        delattr(node, field)
    with pytest.raises(AttributeError):
        node.extra = 1  # type: ignore[attr-defined]


def test_nodes_have_no_instance_dict_and_keep_their_fields() -> None:
    node = step(charge, refund, name="pay")
    bound = node.then(pure(2))

    assert not hasattr(node, "__dict__")
    assert not hasattr(bound, "__dict__")
    assert isinstance(bound, BindNode)
    assert (bound.source, bound.continuation, bound._plan) == (node, bound.continuation, None)
    assert StepNode.__match_args__ == (
        "action",
        "compensate",
        "name",
        "explicit",
        "attempt_timeout",
        "options",
    )
    assert BindNode.__match_args__ == ("source", "continuation")


def test_the_common_call_and_then_build_the_node_classes_themselves() -> None:
    """`step` and `then` build through drafts of the nodes, which become the nodes: nothing
    else ever escapes, and the drafts have exactly the nodes' slots."""
    single = step(charge, refund, name="pay")
    chained = single.then(step(charge))

    assert (type(single), type(chained)) == (StepNode, BindNode)
    assert isinstance(chained, BindNode)
    assert type(chained.continuation) is StepNode
    assert _StepNodeDraft.__slots__ == StepNode.__slots__
    assert _BindNodeDraft.__slots__ == BindNode.__slots__
    with pytest.raises(FrozenInstanceError):
        single.name = "other"  # type: ignore[attr-defined]
    with pytest.raises(FrozenInstanceError):
        chained.source = single


def test_the_engine_can_write_a_bind_nodes_plan() -> None:
    bound = pure(1).then(pure(2))
    assert isinstance(bound, BindNode)

    object.__setattr__(bound, "_plan", "compiled")

    assert bound._plan == "compiled"


def test_nodes_copy_and_pickle_with_their_fields() -> None:
    saga = step(int, print, name="pay", timeout=2.0).then(pure(3))

    for again in (copy.copy(saga), pickle.loads(pickle.dumps(saga))):
        assert isinstance(again, BindNode)
        assert isinstance(again.source, StepNode)
        assert (again.source.action, again.source.compensate, again.source.name) == (
            int,
            print,
            "pay",
        )
        assert (again.source.explicit, again.source.attempt_timeout) == (True, 2.0)
        assert again._plan is None
