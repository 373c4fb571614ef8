"""Sagas as values (fsaga.saga): construction, validation, step paths and composition."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from fsaga import (
    DuplicateStepNameError,
    Failure,
    Retry,
    Saga,
    Success,
    par,
    pure,
    sequence,
    step,
    traverse,
)
from fsaga.interpreter import SyncInterpreter
from fsaga.saga import BindNode, NamedNode, ParNode, PureNode, StepNode, TimeoutNode
from fsaga.testing import RecordingInterpreter


def charge() -> str:
    return "charged"


def refund(_: object) -> None:
    return None


def fail() -> str:
    raise RuntimeError("declined")


def appending(log: list[str], label: str) -> Callable[[], str]:
    """An action that records `label` in `log` and returns it."""

    def action() -> str:
        log.append(label)
        return label

    return action


def tag(log: list[str], value: object) -> object:
    log.append("map")
    return value


def run(saga: Saga[object]) -> object:
    return saga.run(SyncInterpreter())


def action_paths(saga: Saga[object]) -> list[str]:
    recording = RecordingInterpreter()
    saga.run(recording)
    return recording.paths("action")


# -- building runs nothing ----------------------------------------------------------------------


def test_building_a_saga_runs_no_effect_and_no_continuation() -> None:
    ran: list[str] = []

    def effect(label: str) -> Saga[str]:
        return step(appending(ran, label), ran.append, name=label)

    def continuation(value: object) -> Saga[str]:
        ran.append("continuation")
        return effect("after")

    saga = (
        effect("a")
        .then(effect("b"))
        .bind(continuation)
        .map(partial(tag, ran))
        .zip(par(effect("c"), effect("d")))
        .then(sequence([effect("e"), effect("f")]))
        .then(traverse(["g", "h"], effect))
        .named("order")
    )

    assert isinstance(saga, Saga)
    assert ran == []


def test_the_same_saga_value_runs_many_times() -> None:
    counter = iter(range(10))
    saga = step(lambda: next(counter)).map(lambda n: n * 10)

    assert run(saga) == Success(0)
    assert run(saga) == Success(10)


def test_saga_is_a_closed_set_of_node_kinds() -> None:
    with pytest.raises(TypeError, match="closed set"):

        class MySaga(Saga[int]):
            pass


def test_node_reprs_say_what_they_are() -> None:
    assert repr(step(charge)) == "<Saga: step 'charge'>"
    assert repr(pure(1)) == "<Saga: pure 1>"
    assert repr(pure(1).then(pure(2))) == "<Saga: then>"
    assert repr(pure(1).map(str)) == "<Saga: map>"
    assert repr(pure(1).bind(pure)) == "<Saga: bind>"
    assert repr(par(pure(1), pure(2))) == "<Saga: par of 2>"
    assert repr(pure(1).named("one")) == "<Saga: named 'one'>"


def test_step_keeps_its_options() -> None:
    retry = Retry(2)
    compensation_retry = Retry(3)
    saga = step(
        charge,
        refund,
        name="charge",
        timeout=1.5,
        retry=retry,
        compensation_retry=compensation_retry,
    )

    assert isinstance(saga, StepNode)
    assert (saga.action, saga.compensate, saga.name, saga.explicit) == (
        charge,
        refund,
        "charge",
        True,
    )
    assert (saga.attempt_timeout, saga.retry, saga.compensation_retry) == (
        1.5,
        retry,
        compensation_retry,
    )


def test_integer_timeout_is_accepted() -> None:
    saga = step(charge, timeout=3)

    assert isinstance(saga, StepNode)
    assert saga.attempt_timeout == 3


def test_compositions_build_the_documented_nodes() -> None:
    assert isinstance(pure(1), PureNode)
    assert isinstance(pure(1).then(pure(2)), BindNode)
    assert isinstance(pure(1).map(str), BindNode)
    assert isinstance(pure(1).zip(pure(2)), BindNode)
    assert isinstance(par(pure(1)), ParNode)
    assert isinstance(pure(1).named("n"), NamedNode)


# -- validation: bad step options ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "options", "error", "message"),
    [
        pytest.param((42,), {}, TypeError, "action must be callable", id="action-not-callable"),
        pytest.param((None,), {}, TypeError, "action must be callable", id="action-none"),
        pytest.param(
            (charge, "undo"), {}, TypeError, "compensate must be callable", id="compensate"
        ),
        pytest.param((charge,), {"timeout": "1"}, TypeError, "timeout", id="timeout-str"),
        pytest.param((charge,), {"timeout": True}, TypeError, "timeout", id="timeout-bool"),
        pytest.param((charge,), {"timeout": 0}, ValueError, "timeout", id="timeout-zero"),
        pytest.param((charge,), {"timeout": -1.0}, ValueError, "timeout", id="timeout-negative"),
        pytest.param((charge,), {"timeout": math.inf}, ValueError, "timeout", id="timeout-inf"),
        pytest.param((charge,), {"timeout": math.nan}, ValueError, "timeout", id="timeout-nan"),
        pytest.param((charge,), {"retry": 3}, TypeError, "retry must be a Retry", id="retry"),
        pytest.param(
            (charge, refund),
            {"compensation_retry": 3},
            TypeError,
            "compensation_retry must be a Retry",
            id="compensation-retry-type",
        ),
        pytest.param(
            (charge,),
            {"compensation_retry": Retry(2)},
            ValueError,
            "no compensation",
            id="compensation-retry-without-compensation",
        ),
    ],
)
def test_bad_step_options_fail_at_construction_naming_the_step(
    arguments: tuple[Any, ...], options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        step(*arguments, name="pay", **options)

    assert "step 'pay'" in str(raised.value)


def test_a_bad_option_names_the_derived_label_when_no_name_is_given() -> None:
    with pytest.raises(ValueError, match="step 'charge': timeout") as raised:
        step(charge, timeout=-1)

    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        pytest.param("timeout", 10**400, id="timeout-huge-int"),
        pytest.param("compensation_timeout", 10**400, id="compensation-timeout-huge-int"),
        pytest.param("timeout", -(10**400), id="timeout-huge-negative-int"),
    ],
)
def test_a_timeout_too_large_for_a_float_is_a_value_error_at_construction(
    option: str, value: int
) -> None:
    """``step(f, timeout=10**400)`` is a ValueError, not an OverflowError."""
    with pytest.raises(ValueError, match=f"step 'pay': {option} must be a positive, finite"):
        unchecked_step(charge, refund, name="pay", **{option: value})


def test_a_subtree_timeout_too_large_for_a_float_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"timeout\(\) must be a positive, finite number"):
        pure(1).timeout(10**400)


def release_stock(sku: str, count: int) -> None:
    return None


# mypy rejects these calls already; the run-time check is for code mypy does not see.
unchecked_step: Any = step
unchecked_traverse: Any = traverse


def unchecked(saga: Saga[object]) -> Any:
    return saga


class Gateway:
    def charge(self, amount: int) -> str:
        return f"charged {amount}"

    def refund(self) -> None:
        return None


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(
            lambda: unchecked_step(release_stock, name="pay"),
            "step 'pay': action is called with no argument, but release_stock() cannot be "
            "called with no argument: its signature is (sku, count)",
            id="action-needs-arguments",
        ),
        pytest.param(
            lambda: unchecked_step(charge, lambda: None, name="pay"),
            "step 'pay': compensate is called with one argument (the action's result), but "
            "<lambda>() cannot be called with one argument: its signature is ()",
            id="compensation-takes-none",
        ),
        pytest.param(
            lambda: unchecked_step(charge, release_stock, name="pay"),
            "step 'pay': compensate is called with one argument (the action's result), but "
            "release_stock() cannot be called with one argument: its signature is (sku, count)",
            id="compensation-takes-two",
        ),
        pytest.param(
            lambda: unchecked_step(charge, partial(release_stock, "sku-1", 3), name="pay"),
            "step 'pay': compensate is called with one argument (the action's result), but "
            "functools.partial(release_stock, ...) cannot be called with one argument: its "
            "signature is ()",
            id="compensation-partial-bound-fully",
        ),
        pytest.param(
            lambda: unchecked_step(Gateway().charge, name="pay"),
            "step 'pay': action is called with no argument, but Gateway.charge() cannot be "
            "called with no argument: its signature is (amount)",
            id="bound-method-action",
        ),
        pytest.param(
            lambda: unchecked_step(charge, Gateway().refund, name="pay"),
            "step 'pay': compensate is called with one argument (the action's result), but "
            "Gateway.refund() cannot be called with one argument: its signature is ()",
            id="bound-method-compensation",
        ),
        pytest.param(
            lambda: unchecked_step(charge, refund, name="pay", on_unknown=lambda: None),
            "step 'pay': on_unknown is called with one argument (the step's context), but "
            "<lambda>() cannot be called with one argument: its signature is ()",
            id="on-unknown",
        ),
        pytest.param(
            lambda: unchecked(pure(1)).bind(lambda: pure(2)),
            "bind(): the continuation is called with one argument (the result before it), but "
            "<lambda>() cannot be called with one argument: its signature is ()",
            id="bind",
        ),
        pytest.param(
            lambda: unchecked(pure(1)).map(release_stock),
            "map(): the function is called with one argument (the result before it), but "
            "release_stock() cannot be called with one argument: its signature is (sku, count)",
            id="map",
        ),
        pytest.param(
            lambda: unchecked_traverse([1], lambda: pure(2)),
            "traverse(): the function is called with one argument (an item), but <lambda>() "
            "cannot be called with one argument: its signature is ()",
            id="traverse",
        ),
    ],
)
def test_a_function_that_cannot_take_its_arguments_is_refused_at_construction(
    build: Callable[[], object], message: str
) -> None:
    """Wrong arities are refused when the saga is built, naming the step, not at run time
    with Python's raw message."""
    with pytest.raises(TypeError) as raised:
        build()

    assert str(raised.value) == message


@pytest.mark.parametrize(
    "compensate",
    [
        pytest.param(lambda *results: None, id="varargs"),
        pytest.param(lambda result, extra=None: None, id="default"),
        pytest.param(lambda result, *, extra=None: None, id="keyword-only-default"),
        pytest.param(partial(release_stock, "sku-1"), id="partial"),
        pytest.param(partial(release_stock, count=3), id="partial-keyword"),
        pytest.param(print, id="builtin-not-read"),
        pytest.param(list, id="class-not-read"),
        pytest.param(Gateway().charge, id="bound-method"),
    ],
)
def test_functions_that_can_take_their_arguments_are_accepted(
    compensate: Callable[[Any], object],
) -> None:
    step(charge, compensate)


@pytest.mark.parametrize(
    ("interpreter", "message"),
    [
        pytest.param(None, "got None", id="none"),
        pytest.param(
            SyncInterpreter, "got the class SyncInterpreter: call it to make one", id="class"
        ),
        pytest.param(42, "got 42", id="int"),
    ],
)
def test_running_with_something_that_is_not_an_interpreter_says_what_one_is(
    interpreter: Any, message: str
) -> None:
    """``saga.run(None)`` is a TypeError saying what an interpreter is, not an
    AttributeError."""
    with pytest.raises(TypeError) as raised:
        pure(1).run(interpreter)

    assert str(raised.value).startswith(
        "run() needs an interpreter: an object with a run_saga(saga, *, saga_id) method, such "
        "as fsaga.SyncInterpreter() or fsaga.AsyncInterpreter(); "
    )
    assert str(raised.value).endswith(message)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        pytest.param(3, TypeError, id="not-a-str"),
        pytest.param(b"pay", TypeError, id="bytes"),
        pytest.param("", ValueError, id="empty"),
        pytest.param(" pay", ValueError, id="leading-space"),
        pytest.param("pay ", ValueError, id="trailing-space"),
        pytest.param("order/pay", ValueError, id="slash"),
        pytest.param("pay#2", ValueError, id="hash"),
    ],
)
def test_bad_names_are_rejected_naming_the_name(name: Any, error: type[Exception]) -> None:
    with pytest.raises(error) as from_step:
        step(charge, name=name)
    with pytest.raises(error) as from_named:
        pure(1).named(name)

    assert repr(name) in str(from_step.value)
    assert "step()" in str(from_step.value)
    assert repr(name) in str(from_named.value)
    assert "named()" in str(from_named.value)


# -- validation: bad compositions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "bad", "message"),
    [
        pytest.param(
            lambda bad: pure(1).then(bad), 42, r"then\(\) needs a Saga, got 42", id="then"
        ),
        pytest.param(lambda bad: pure(1).then(bad), charge, r"then\(\) needs a Saga", id="then-fn"),
        pytest.param(lambda bad: pure(1).zip(bad), "x", r"zip\(\) needs a Saga, got 'x'", id="zip"),
        pytest.param(
            lambda bad: par(pure(1), bad), 42, r"par\(\): branch 1 is not a Saga, got 42", id="par"
        ),
        pytest.param(
            lambda bad: sequence([pure(1), bad]),
            None,
            r"sequence\(\): item 1 is not a Saga, got None",
            id="sequence",
        ),
        pytest.param(lambda bad: pure(1).bind(bad), 42, r"bind\(\) needs a callable", id="bind"),
        pytest.param(
            lambda bad: pure(1).bind(bad), pure(2), r"bind\(\) needs a callable", id="bind-saga"
        ),
        pytest.param(lambda bad: pure(1).map(bad), "str", r"map\(\) needs a callable", id="map"),
        pytest.param(
            lambda bad: traverse([1, 2], bad), 42, r"traverse\(\) needs a callable", id="traverse"
        ),
    ],
)
def test_bad_compositions_raise_type_error_naming_the_combinator(
    build: Callable[[Any], object], bad: Any, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        build(bad)


@pytest.mark.parametrize(
    ("build", "where"),
    [
        pytest.param(
            lambda: par(step(charge, name="pay"), step(fail, name="pay")), "par()", id="par"
        ),
        pytest.param(
            lambda: sequence([step(charge, name="pay"), pure(0), step(fail, name="pay")]),
            "sequence()",
            id="sequence",
        ),
        pytest.param(
            lambda: step(charge, name="pay").zip(step(fail, name="pay")), "zip()", id="zip"
        ),
        pytest.param(
            lambda: par(pure(1).named("pay"), pure(2).named("pay")), "par()", id="named-subsagas"
        ),
        pytest.param(
            lambda: par(step(charge, name="pay"), pure(2).named("pay")),
            "par()",
            id="step-and-subsaga",
        ),
    ],
)
def test_duplicate_explicit_sibling_names_fail_at_construction(build: Any, where: str) -> None:
    with pytest.raises(DuplicateStepNameError) as raised:
        build()

    assert isinstance(raised.value, ValueError)
    assert raised.value.path == "pay"
    assert "'pay'" in str(raised.value)
    assert where in str(raised.value)


def test_implicit_sibling_names_may_repeat() -> None:
    saga = par(step(charge), step(charge), step(charge))

    assert action_paths(saga) == ["#0/charge", "#1/charge", "#2/charge"]


# -- labels and paths (rule 10) -----------------------------------------------------------------


class Refunder:
    def __call__(self) -> str:
        return "refunded"


@pytest.mark.parametrize(
    ("action", "label"),
    [
        pytest.param(charge, "charge", id="function"),
        pytest.param(lambda: 1, "step", id="lambda"),
        pytest.param(partial(charge), "charge", id="partial"),
        pytest.param(partial(partial(charge)), "charge", id="nested-partial"),
        pytest.param(Refunder(), "Refunder", id="callable-object"),
    ],
)
def test_label_comes_from_the_action(action: Any, label: str) -> None:
    saga = step(action)

    assert isinstance(saga, StepNode)
    assert (saga.name, saga.explicit) == (label, False)
    assert action_paths(saga) == [label]


def test_an_explicit_name_beats_the_action_name() -> None:
    assert action_paths(step(charge, name="pay")) == ["pay"]


def test_repeated_implicit_labels_are_numbered_in_run_order() -> None:
    saga = step(charge).then(step(lambda: 1)).then(step(charge)).then(step(charge))

    assert action_paths(saga) == ["charge", "step", "charge#2", "charge#3"]


def test_a_reused_explicit_name_fails_the_run_before_that_step_starts() -> None:
    undone: list[str] = []
    started: list[str] = []
    saga = (
        step(appending(started, "first"), undone.append, name="pay")
        .then(step(appending(started, "other"), undone.append))
        .then(step(appending(started, "second"), undone.append, name="pay"))
    )

    outcome = run(saga)

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, DuplicateStepNameError)
    assert outcome.error.path == "pay"
    assert outcome.compensated == ("action", "pay")
    assert started == ["first", "other"]
    assert undone == ["other", "first"]


def test_a_reused_explicit_name_inside_a_named_scope_reports_its_full_path() -> None:
    saga = step(charge, name="pay").then(step(charge, name="pay")).named("order")

    outcome = run(saga)

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, DuplicateStepNameError)
    assert outcome.error.path == "order/pay"


def test_a_named_subsaga_reused_in_one_scope_fails_the_run() -> None:
    payment = step(charge, refund, name="charge").named("payment")
    recording = RecordingInterpreter()

    outcome = payment.then(payment).run(recording)

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, DuplicateStepNameError)
    assert outcome.error.path == "payment"
    assert recording.paths() == ["payment/charge", "payment/charge"]
    assert [effect.kind for effect in recording.effects] == ["action", "compensation"]


def test_the_same_explicit_name_may_appear_in_different_scopes() -> None:
    saga = step(charge, name="charge").named("a").then(step(charge, name="charge").named("b"))

    assert action_paths(saga) == ["a/charge", "b/charge"]


def test_named_scopes_nest() -> None:
    saga = (
        step(charge, name="reserve")
        .then(step(charge, name="charge").named("payment"))
        .then(step(charge, name="ship"))
        .named("order")
    )

    assert action_paths(saga) == ["order/reserve", "order/payment/charge", "order/ship"]


def test_a_named_scope_ends_with_its_subsaga() -> None:
    saga = step(charge).named("payment").then(step(charge))

    assert action_paths(saga) == ["payment/charge", "charge"]


def test_par_branches_that_name_themselves_stay_in_the_parent_scope() -> None:
    saga = par(
        step(charge, name="pay"),
        step(charge),
        step(charge, name="charge").named("payment"),
        step(charge, name="first").then(step(charge, name="second")),
    )

    assert action_paths(saga) == [
        "pay",
        "#1/charge",
        "payment/charge",
        "#3/first",
        "#3/second",
    ]


def test_par_branch_paths_nest_under_named_scopes() -> None:
    saga = par(step(charge), step(charge, name="pay")).named("order")

    assert action_paths(saga) == ["order/#0/charge", "order/pay"]


def test_a_named_par_branch_claims_its_name_in_the_parent_scope() -> None:
    saga = par(step(charge, name="pay"), pure(0)).then(step(charge, name="pay"))

    outcome = run(saga)

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, DuplicateStepNameError)
    assert outcome.error.path == "pay"


def test_the_same_saga_gets_the_same_paths_on_every_run() -> None:
    saga = par(step(charge), step(charge).then(step(charge))).then(step(charge)).named("order")
    recording = RecordingInterpreter()

    saga.run(recording)
    first = recording.paths()
    recording.clear()
    saga.run(recording)

    assert recording.paths() == first
    assert first == ["order/#0/charge", "order/#1/charge", "order/#1/charge#2", "order/charge"]


# -- composition (rule 1) -----------------------------------------------------------------------


def test_then_runs_in_order_and_keeps_the_last_result() -> None:
    order: list[str] = []
    saga = step(appending(order, "a")).then(step(appending(order, "b")))

    assert run(saga) == Success("b")
    assert order == ["a", "b"]


def test_bind_continuation_sees_the_previous_result() -> None:
    seen: list[int] = []

    def next_step(value: int) -> Saga[int]:
        seen.append(value)
        return step(lambda: value + 1)

    saga = step(lambda: 41).bind(next_step)

    assert run(saga) == Success(42)
    assert seen == [41]


def test_map_transforms_the_result() -> None:
    assert run(step(lambda: 21).map(lambda n: n * 2).map(str)) == Success("42")


def test_zip_pairs_both_results() -> None:
    assert run(step(lambda: 1).zip(step(lambda: "a"))) == Success((1, "a"))


def test_pure_results_in_its_value() -> None:
    marker = object()

    assert run(pure(marker)) == Success(marker)


def test_sequence_collects_results_in_order() -> None:
    order: list[str] = []
    saga = sequence(step(appending(order, label)) for label in "abcde")

    assert run(saga) == Success(("a", "b", "c", "d", "e"))
    assert order == ["a", "b", "c", "d", "e"]


def test_empty_sequence_traverse_and_par_result_in_empty_tuples() -> None:
    assert run(sequence([])) == Success(())
    assert run(traverse([], pure)) == Success(())
    assert run(par()) == Success(())


def test_traverse_builds_a_saga_per_item() -> None:
    saga = traverse(["a", "b", "c"], lambda item: step(lambda: item.upper()))

    assert run(saga) == Success(("A", "B", "C"))


def test_par_results_come_in_argument_order() -> None:
    assert run(par(step(lambda: 1), pure("b"), step(lambda: 3.0))) == Success((1, "b", 3.0))


def test_nested_compositions() -> None:
    saga = par(
        sequence([pure(1), pure(2)]),
        pure("x").zip(pure("y")).named("pair"),
    ).map(lambda pair: (sum(pair[0]), pair[1]))

    assert run(saga) == Success((3, ("x", "y")))


# -- the options of unknown outcomes and deadlines ----------------------------------------------


def on_unknown_charge(_: object) -> None:
    return None


def test_step_keeps_its_unknown_outcome_options() -> None:
    saga = step(
        charge,
        refund,
        name="charge",
        compensation_timeout=2,
        idempotent=True,
        on_unknown=on_unknown_charge,
    )

    assert isinstance(saga, StepNode)
    assert (saga.compensation_timeout, saga.idempotent, saga.on_unknown) == (
        2.0,
        True,
        on_unknown_charge,
    )
    assert isinstance(saga.compensation_timeout, float)


def test_a_step_is_neither_idempotent_nor_has_on_unknown_by_default() -> None:
    saga = step(charge)

    assert isinstance(saga, StepNode)
    assert (saga.compensation_timeout, saga.idempotent, saga.on_unknown) == (None, False, None)


@pytest.mark.parametrize(
    ("arguments", "options", "error", "message"),
    [
        pytest.param(
            (charge,), {"idempotent": "yes"}, TypeError, "idempotent must be a bool", id="idem-str"
        ),
        pytest.param(
            (charge,), {"idempotent": 1}, TypeError, "idempotent must be a bool", id="idem-int"
        ),
        pytest.param(
            (charge,),
            {"on_unknown": "log"},
            TypeError,
            "on_unknown must be callable or None, got 'log'",
            id="on-unknown",
        ),
        pytest.param(
            (charge,),
            {"compensation_timeout": 1.0},
            ValueError,
            "compensation_timeout is given but the step has no compensation",
            id="compensation-timeout-without-compensation",
        ),
        pytest.param(
            (charge, refund),
            {"compensation_timeout": "1"},
            TypeError,
            "compensation_timeout must be a number of seconds",
            id="compensation-timeout-str",
        ),
        pytest.param(
            (charge, refund),
            {"compensation_timeout": 0},
            ValueError,
            "compensation_timeout must be a positive, finite number",
            id="compensation-timeout-zero",
        ),
        pytest.param(
            (charge, refund),
            {"compensation_timeout": math.inf},
            ValueError,
            "compensation_timeout must be a positive, finite number",
            id="compensation-timeout-inf",
        ),
    ],
)
def test_bad_unknown_outcome_options_fail_at_construction_naming_the_step(
    arguments: tuple[Any, ...], options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        step(*arguments, name="pay", **options)

    assert str(raised.value).startswith("step 'pay': ")


def test_on_unknown_counts_as_a_compensation_for_the_compensation_options() -> None:
    saga = step(
        charge,
        on_unknown=on_unknown_charge,
        compensation_timeout=1.0,
        compensation_retry=Retry(2),
    )

    assert isinstance(saga, StepNode)
    assert (saga.compensate, saga.compensation_timeout) == (None, 1.0)


@pytest.mark.parametrize(
    ("seconds", "error"),
    [
        pytest.param("1", TypeError, id="str"),
        pytest.param(None, TypeError, id="none"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param(0, ValueError, id="zero"),
        pytest.param(-0.5, ValueError, id="negative"),
        pytest.param(math.inf, ValueError, id="inf"),
        pytest.param(math.nan, ValueError, id="nan"),
    ],
)
def test_bad_subtree_timeouts_are_rejected_naming_timeout(
    seconds: Any, error: type[Exception]
) -> None:
    with pytest.raises(error) as raised:
        step(charge).timeout(seconds)

    message = str(raised.value)
    assert message.startswith("timeout() must be a ")
    assert repr(seconds) in message


def test_a_subtree_timeout_builds_a_timeout_node_around_the_saga() -> None:
    inner = step(charge, name="pay")

    saga = inner.timeout(3)

    assert isinstance(saga, TimeoutNode)
    assert (saga.seconds, saga.inner) == (3.0, inner)
    assert isinstance(saga.seconds, float)
    assert repr(saga) == "<Saga: timeout 3 s>"
    assert repr(inner.timeout(0.25)) == "<Saga: timeout 0.25 s>"


def test_a_subtree_timeout_changes_no_path() -> None:
    saga = par(
        step(charge, name="pay").timeout(1),
        step(charge).timeout(1),
        pure(1).then(step(charge, name="fee")).named("fees").timeout(1),
    ).timeout(5)

    assert action_paths(saga) == ["pay", "#1/charge", "fees/fee"]


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(
            lambda: par(step(charge, name="a").timeout(1), step(fail, name="a")), id="step-first"
        ),
        pytest.param(
            lambda: par(step(charge, name="a"), step(fail, name="a").timeout(1).timeout(2)),
            id="nested-timeouts",
        ),
        pytest.param(
            lambda: par(pure(1).named("a").timeout(1), pure(2).named("a")), id="named-subsagas"
        ),
        pytest.param(
            lambda: sequence([step(charge, name="a").timeout(1), step(fail, name="a")]),
            id="sequence",
        ),
    ],
)
def test_a_subtree_timeout_keeps_its_sagas_sibling_name(build: Callable[[], object]) -> None:
    with pytest.raises(DuplicateStepNameError) as raised:
        build()

    assert raised.value.path == "a"
