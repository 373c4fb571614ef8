"""The step context (fsaga.context): what a running effect knows about itself (contract rule 10).

Every interpreter sets it around each effect it performs: actions, compensations and
unknown-outcome compensations, sync or async, in the event loop or a worker thread.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from fsaga import (
    AsyncInterpreter,
    Effect,
    Failure,
    Retry,
    Saga,
    StepContext,
    Success,
    SyncInterpreter,
    current_context,
    in_worker_thread,
    par,
    pure,
    step,
)

OUTSIDE_MESSAGE = (
    "current_context() is only available while an interpreter runs a step's action or compensation"
)

GUARD = 2.0
"""An outer limit for tests that would deadlock if the interpreter were wrong (fails fast)."""


class Declined(Exception):
    pass


def fail() -> str:
    raise Declined("declined")


def recording(contexts: list[StepContext], result: str = "done") -> Callable[[], str]:
    """An action that records its context."""

    def action() -> str:
        contexts.append(current_context())
        return result

    return action


def context_outside_effects() -> str:
    """The message `current_context()` raises with, where no effect runs."""
    with pytest.raises(LookupError) as raised:
        current_context()
    return str(raised.value)


# -- under the sync interpreter -----------------------------------------------------------------


def test_an_action_sees_its_saga_id_path_attempt_and_kind() -> None:
    contexts: list[StepContext] = []

    outcome = step(recording(contexts), name="charge").run(SyncInterpreter(), saga_id="s-1")

    assert outcome == Success("done")
    assert contexts == [StepContext("s-1", "charge", 1, "action")]
    assert contexts[0].idempotency_key == "s-1/charge"


def test_a_compensation_sees_its_own_kind_and_attempt() -> None:
    contexts: list[StepContext] = []

    def refund(value: str) -> None:
        contexts.append(current_context())

    saga = step(recording(contexts, "C-1"), refund, name="charge").then(step(fail, name="ship"))

    outcome = saga.run(SyncInterpreter(), saga_id="s-1")

    assert isinstance(outcome, Failure)
    assert contexts == [
        StepContext("s-1", "charge", 1, "action"),
        StepContext("s-1", "charge", 1, "compensation"),
    ]
    assert {context.idempotency_key for context in contexts} == {"s-1/charge"}


def test_an_unknown_outcome_compensation_sees_kind_unknown() -> None:
    seen: list[tuple[StepContext, StepContext]] = []

    def interrupted() -> str:
        raise KeyboardInterrupt

    def charge_unknown(context: StepContext) -> None:
        seen.append((context, current_context()))

    saga = step(interrupted, name="charge", on_unknown=charge_unknown)

    with pytest.raises(KeyboardInterrupt):
        saga.run(SyncInterpreter(), saga_id="s-1")

    expected = StepContext("s-1", "charge", 1, "unknown")
    assert seen == [(expected, expected)]


def test_attempts_increment_on_retries_and_the_idempotency_key_stays() -> None:
    contexts: list[StepContext] = []

    def flaky() -> str:
        context = current_context()
        contexts.append(context)
        if context.attempt < 3:
            raise Declined(f"attempt {context.attempt}")
        return "ok"

    saga = step(flaky, name="charge", retry=Retry(3, delay=0))

    assert saga.run(SyncInterpreter(), saga_id="s-1") == Success("ok")
    assert [(context.attempt, context.kind) for context in contexts] == [
        (1, "action"),
        (2, "action"),
        (3, "action"),
    ]
    assert {context.idempotency_key for context in contexts} == {"s-1/charge"}


def test_compensation_attempts_increment_on_compensation_retries() -> None:
    contexts: list[StepContext] = []

    def refund(_: str) -> None:
        context = current_context()
        contexts.append(context)
        if context.attempt == 1:
            raise Declined("flaky refund")

    saga = step(lambda: "C-1", refund, name="charge", compensation_retry=Retry(2, delay=0)).then(
        step(fail, name="ship")
    )

    outcome = saga.run(SyncInterpreter(), saga_id="s-1")

    assert isinstance(outcome, Failure)
    assert contexts == [
        StepContext("s-1", "charge", 1, "compensation"),
        StepContext("s-1", "charge", 2, "compensation"),
    ]


def test_the_idempotency_key_is_the_saga_id_and_the_full_path() -> None:
    contexts: list[StepContext] = []

    def charge() -> str:
        contexts.append(current_context())
        return "charged"

    saga = par(pure(0), step(charge).then(step(charge)), step(charge, name="fee")).named("order")

    saga.run(SyncInterpreter(), saga_id="s-1")

    assert [context.path for context in contexts] == [
        "order/#1/charge",
        "order/#1/charge#2",
        "order/fee",
    ]
    assert [context.idempotency_key for context in contexts] == [
        f"s-1/{context.path}" for context in contexts
    ]


def test_a_run_without_a_saga_id_gives_every_effect_the_same_fresh_one() -> None:
    first: list[StepContext] = []
    second: list[StepContext] = []

    def two_steps(contexts: list[StepContext]) -> Saga[str]:
        return step(recording(contexts), name="a").then(step(recording(contexts), name="b"))

    two_steps(first).run(SyncInterpreter())
    two_steps(second).run(SyncInterpreter())

    assert [context.path for context in first] == ["a", "b"]
    assert first[0].saga_id == first[1].saga_id
    assert re.fullmatch(r"[0-9a-f]{32}", first[0].saga_id)
    assert second[0].saga_id == second[1].saga_id
    assert first[0].saga_id != second[0].saga_id


def test_a_perform_function_runs_inside_the_effects_context() -> None:
    seen: list[tuple[str, StepContext]] = []

    def perform(effect: Effect) -> object:
        seen.append((effect.idempotency_key, current_context()))
        return effect.run()

    step(lambda: 1, name="charge").run(SyncInterpreter(perform=perform), saga_id="s-1")

    assert seen == [("s-1/charge", StepContext("s-1", "charge", 1, "action"))]


def test_a_saga_run_inside_an_effect_has_its_own_context_and_restores_the_outer_one() -> None:
    seen: list[StepContext] = []

    def inner() -> str:
        seen.append(current_context())
        return "inner"

    def outer() -> str:
        seen.append(current_context())
        step(inner, name="inner").run(SyncInterpreter(), saga_id="s-inner")
        seen.append(current_context())
        return "outer"

    step(outer, name="outer").run(SyncInterpreter(), saga_id="s-outer")

    assert seen == [
        StepContext("s-outer", "outer", 1, "action"),
        StepContext("s-inner", "inner", 1, "action"),
        StepContext("s-outer", "outer", 1, "action"),
    ]


# -- outside any effect -------------------------------------------------------------------------


def test_outside_any_effect_current_context_raises_a_clear_lookup_error() -> None:
    assert context_outside_effects() == OUTSIDE_MESSAGE


def test_a_bind_continuation_is_not_an_effect_and_has_no_context() -> None:
    messages: list[str] = []

    def continuation(value: int) -> Saga[int]:
        messages.append(context_outside_effects())
        return pure(value + 1)

    outcome = step(lambda: 1, name="one").bind(continuation).run(SyncInterpreter())

    assert outcome == Success(2)
    assert messages == [OUTSIDE_MESSAGE]


def test_no_context_is_left_behind_after_a_run_even_when_effects_raise() -> None:
    def interrupted() -> str:
        raise KeyboardInterrupt

    step(fail, lambda _: None, name="charge").run(SyncInterpreter())
    with pytest.raises(KeyboardInterrupt):
        step(interrupted, name="charge").run(SyncInterpreter())

    assert context_outside_effects() == OUTSIDE_MESSAGE


def test_a_step_context_is_a_frozen_value() -> None:
    context = StepContext("s-1", "order/charge", 2, "action")

    with pytest.raises(dataclasses.FrozenInstanceError):
        context.attempt = 3  # type: ignore[misc]
    assert context == StepContext("s-1", "order/charge", 2, "action")
    assert hash(context) == hash(StepContext("s-1", "order/charge", 2, "action"))
    assert context.idempotency_key == "s-1/order/charge"


# -- under the async interpreter ----------------------------------------------------------------


@pytest.mark.anyio
async def test_async_actions_and_compensations_keep_their_context_across_awaits() -> None:
    seen: list[tuple[str, StepContext]] = []

    async def charge() -> str:
        seen.append(("before await", current_context()))
        await anyio.lowlevel.checkpoint()
        seen.append(("after await", current_context()))
        return "C-1"

    async def refund(_: str) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(("refund", current_context()))

    saga = step(charge, refund, name="charge").then(step(fail, name="ship"))

    outcome = await saga.run(AsyncInterpreter(), saga_id="s-1")

    assert isinstance(outcome, Failure)
    assert seen == [
        ("before await", StepContext("s-1", "charge", 1, "action")),
        ("after await", StepContext("s-1", "charge", 1, "action")),
        ("refund", StepContext("s-1", "charge", 1, "compensation")),
    ]
    assert context_outside_effects() == OUTSIDE_MESSAGE


@pytest.mark.anyio
async def test_async_attempts_increment_on_retries() -> None:
    attempts: list[int] = []

    async def flaky() -> str:
        await anyio.lowlevel.checkpoint()
        attempt = current_context().attempt
        attempts.append(attempt)
        if attempt < 3:
            raise Declined("flaky")
        return "ok"

    saga = step(flaky, name="charge", retry=Retry(3, delay=0))

    assert await saga.run(AsyncInterpreter()) == Success("ok")
    assert attempts == [1, 2, 3]


@pytest.mark.anyio
async def test_an_async_unknown_outcome_compensation_sees_kind_unknown() -> None:
    seen: list[StepContext] = []

    async def stuck() -> str:
        await anyio.sleep_forever()
        return "never"

    async def charge_unknown(_: StepContext) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(current_context())

    saga = step(stuck, name="charge", timeout=0.005, on_unknown=charge_unknown)

    outcome = await saga.run(AsyncInterpreter(), saga_id="s-1")

    assert isinstance(outcome, Failure)
    assert seen == [StepContext("s-1", "charge", 1, "unknown")]


@pytest.mark.anyio
async def test_concurrent_par_branches_each_see_their_own_context() -> None:
    left_started = anyio.Event()
    right_started = anyio.Event()
    seen: dict[str, list[str]] = {"left": [], "right": []}

    def branch(name: str, mine: anyio.Event, other: anyio.Event) -> Saga[str]:
        async def action() -> str:
            seen[name].append(current_context().path)
            mine.set()
            await other.wait()  # the other branch runs its effect meanwhile
            seen[name].append(current_context().path)
            await anyio.lowlevel.checkpoint()
            seen[name].append(current_context().path)
            return name

        return step(action, name=name)

    saga = par(
        branch("left", left_started, right_started).named("l"),
        branch("right", right_started, left_started).named("r"),
    )

    with anyio.fail_after(GUARD):
        outcome = await saga.run(AsyncInterpreter(), saga_id="s-1")

    assert outcome == Success(("left", "right"))
    assert seen == {"left": ["l/left"] * 3, "right": ["r/right"] * 3}
    assert context_outside_effects() == OUTSIDE_MESSAGE


@pytest.mark.anyio
async def test_a_worker_thread_sees_its_own_steps_context() -> None:
    seen: list[tuple[str, StepContext]] = []

    def blocking_charge() -> str:
        seen.append(("charge", current_context()))
        return "C-1"

    def blocking_refund(_: str) -> None:
        seen.append(("refund", current_context()))

    saga = step(
        in_worker_thread(blocking_charge), in_worker_thread(blocking_refund), name="charge"
    ).then(step(fail, name="ship"))

    await saga.run(AsyncInterpreter(), saga_id="s-1")

    assert seen == [
        ("charge", StepContext("s-1", "charge", 1, "action")),
        ("refund", StepContext("s-1", "charge", 1, "compensation")),
    ]


@pytest.mark.anyio
async def test_an_abandoned_worker_thread_never_sees_another_steps_context() -> None:
    """`in_worker_thread(..., abandon_on_cancel=True)` leaves the function running after its
    attempt was cancelled; while the run goes on to compensate another step, the thread must
    not take that step's context (and its idempotency key) for its own.

    The attempt is cancelled by a sibling branch that fails once the thread is running (not by
    a timeout, which could fire before the worker thread picked the job up, and anyio never
    starts an abandoned job)."""
    started = threading.Event()
    go = threading.Event()
    read = threading.Event()
    seen: list[str] = []

    def blocking_charge() -> str:
        started.set()
        go.wait(GUARD)
        try:
            seen.append(current_context().idempotency_key)
        except LookupError:
            seen.append("no context")
        read.set()
        return "C-1"

    async def decline() -> None:
        await anyio.to_thread.run_sync(started.wait, GUARD)  # the charge's thread is running
        raise Declined("declined")

    async def unreserve(_: str) -> None:
        go.set()  # the charge's thread reads its context while this compensation runs
        await anyio.to_thread.run_sync(read.wait, GUARD)

    saga = step(lambda: "R-1", unreserve, name="reserve").then(
        par(
            step(in_worker_thread(blocking_charge, abandon_on_cancel=True), name="charge"),
            step(decline, name="decline"),
        )
    )

    outcome = await saga.run(AsyncInterpreter(on_branch_failure="cancel"), saga_id="s-1")

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("reserve",)
    assert seen == ["s-1/charge"]
