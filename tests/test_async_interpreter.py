"""The async interpreter (fsaga.interpreter.asynchronous) on anyio: concurrency, deadlines,
cancellation and shielded compensation.

Rules as numbered in docs/concepts.md. Every test runs under asyncio and under trio (trio with a
mock clock, so deadlines pass at once). An effect that must "hang" waits until it is cancelled and
is cut off by a tiny timeout; concurrent branches are sequenced with events, never with time.
The few tests that need two deadlines to fall on the very same instant run on virtual time under
both backends (`ON_VIRTUAL_TIME`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from returns.future import FutureResult
from returns.io import IOFailure, IOSuccess
from returns.result import Failure as ResultFailure
from returns.result import Success as ResultSuccess
from virtual_time import Backend, run_on_virtual_time

from fsaga import (
    AsyncInterpreter,
    BranchCancelledError,
    CompensationCompleted,
    CompensationFailed,
    CompensationFailure,
    CompensationRetrying,
    CompensationStarted,
    Effect,
    Event,
    Failure,
    Outcome,
    PartialFailure,
    Retry,
    ReturnedFailure,
    Saga,
    SagaFinished,
    SagaStarted,
    StepCompleted,
    StepContext,
    StepFailed,
    StepRetrying,
    StepStarted,
    StepTimeoutError,
    Success,
    UnknownOutcomeError,
    current_context,
    in_worker_thread,
    par,
    pure,
    step,
)

ENGINE_LOGGER = "fsaga.interpreter"

TINY = 0.005
"""Cuts off an effect that hangs: 5 ms of real time under asyncio, none under trio."""

ROOMY = 0.05
"""A deadline that steps which should finish first meet comfortably, even on a loaded machine."""

GUARD = 2.0
"""An outer limit for tests that would deadlock if the interpreter were wrong (fails fast)."""

ON_VIRTUAL_TIME = pytest.mark.parametrize("backend", ["asyncio", "trio"])
"""For a test that runs its saga with `on_virtual_time`: time moves only when every task waits,
so a deadline passes at exactly the instant it names."""


class Declined(Exception):
    pass


async def hang() -> NoReturn:
    """Wait until cancelled: an effect that never finishes on its own."""
    await anyio.sleep_forever()
    raise AssertionError("sleep_forever returned")


class Ledger:
    """Builds async steps that record what they did and what was undone, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.undone: list[tuple[str, object]] = []

    def step(
        self,
        name: str,
        result: object = None,
        *,
        raises: BaseException | None = None,
        hangs: bool = False,
        compensable: bool = True,
        **options: Any,
    ) -> Saga[object]:
        async def action() -> object:
            self.log.append(name)
            await anyio.lowlevel.checkpoint()
            if hangs:
                await hang()
            if raises is not None:
                raise raises
            return name if result is None else result

        async def compensate(value: object) -> None:
            self.log.append(f"undo {name}")
            await anyio.lowlevel.checkpoint()
            self.undone.append((name, value))

        return step(action, compensate if compensable else None, name=name, **options)

    def undone_names(self) -> list[str]:
        return [name for name, _ in self.undone]


async def run(saga: Saga[object], **options: Any) -> Outcome[object]:
    return await saga.run(AsyncInterpreter(**options))


def timeout_fields(error: BaseException) -> tuple[object, ...]:
    """What a `StepTimeoutError` says, as a tuple to compare in one assert."""
    assert isinstance(error, StepTimeoutError), repr(error)
    return (error.path, error.attempt, error.seconds, error.deadline, error.scope, error.started)


def shape(events: list[Event]) -> list[tuple[str, str, int]]:
    """Events as (kind, path, attempt); saga events have an empty path and attempt 0."""
    return [
        (type(event).__name__, getattr(event, "path", ""), getattr(event, "attempt", 0))
        for event in events
    ]


def on_virtual_time(
    backend: Backend, saga: Saga[object], events: list[Event], **options: Any
) -> Outcome[object]:
    """Run `saga` (as saga ``s-1``) on virtual time starting at 0, its events stamped with that
    time."""

    async def run_saga() -> Outcome[object]:
        interpreter = AsyncInterpreter(
            listeners=[events.append], clock=anyio.current_time, **options
        )
        return await saga.run(interpreter, saga_id="s-1")

    return run_on_virtual_time(backend, run_saga)


async def past_the_deadline(seconds: float) -> None:
    """Let `seconds` pass where no deadline can cut the effect off (as a blocking call would)."""
    with anyio.CancelScope(shield=True):
        await anyio.sleep(seconds)


def failing_after_checkpoint(error: Exception) -> Callable[[], Any]:
    async def fail() -> NoReturn:
        await anyio.lowlevel.checkpoint()
        raise error

    return fail


# -- running a saga (rules 1 and 2) -------------------------------------------------------------


@pytest.mark.anyio
async def test_awaiting_a_run_returns_success_with_the_result() -> None:
    async def reserve() -> str:
        await anyio.lowlevel.checkpoint()
        return "R-1"

    saga = step(reserve).map(str.lower)

    assert await saga.run(AsyncInterpreter()) == Success("r-1")


@pytest.mark.anyio
async def test_sync_and_async_effects_mix_and_bind_continuations_see_results() -> None:
    log: list[str] = []

    async def count() -> int:
        log.append("async count")
        await anyio.lowlevel.checkpoint()
        return 2

    def price(items: int) -> Saga[int]:
        def total() -> int:
            log.append("sync price")
            return items * 10

        return step(total)

    def pay(amount: int) -> Saga[str]:
        async def charge() -> str:
            log.append("async charge")
            await anyio.lowlevel.checkpoint()
            return f"paid {amount}"

        return step(charge)

    saga = step(count).bind(price).bind(pay)

    assert await run(saga) == Success("paid 20")
    assert log == ["async count", "sync price", "async charge"]


@pytest.mark.anyio
async def test_compensations_sync_or_async_receive_their_actions_results_in_reverse() -> None:
    ledger = Ledger()
    undone: list[object] = []
    error = Declined("card declined")

    def hold() -> str:
        return "H-7"

    async def reserve() -> str:
        await anyio.lowlevel.checkpoint()
        return "R-1"

    async def unreserve(reservation: str) -> None:
        await anyio.lowlevel.checkpoint()
        undone.append(("unreserve", reservation))

    saga = (
        step(reserve, unreserve, name="reserve")
        .then(step(hold, lambda held: undone.append(("unhold", held)), name="hold"))
        .then(ledger.step("charge", raises=error))
        .then(ledger.step("ship"))
    )

    outcome = await run(saga)

    assert outcome == Failure(error, ("hold", "reserve"))
    assert undone == [("unhold", "H-7"), ("unreserve", "R-1")]
    assert ledger.log == ["charge"]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: ResultSuccess("R-1"), id="result"),
        pytest.param(lambda: IOSuccess("R-1"), id="io-result"),
        pytest.param(lambda: FutureResult.from_value("R-1"), id="future-result"),
    ],
)
@pytest.mark.anyio
async def test_a_returns_success_from_an_async_effect_is_unwrapped(
    make: Callable[[], object],
) -> None:
    received: list[object] = []
    error = Declined()

    async def reserve() -> object:
        await anyio.lowlevel.checkpoint()
        return make()

    saga = step(reserve, received.append, name="reserve")

    assert await run(saga) == Success("R-1")
    assert await run(saga.then(step(failing_after_checkpoint(error)))) == Failure(
        error, ("reserve",)
    )
    assert received == ["R-1"]


@pytest.mark.anyio
async def test_a_future_result_returned_by_a_sync_action_is_awaited_and_unwrapped() -> None:
    saga = step(lambda: FutureResult.from_value(7))

    assert await run(saga) == Success(7)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda error: ResultFailure(error), id="result"),
        pytest.param(lambda error: IOFailure(error), id="io-result"),
        pytest.param(lambda error: FutureResult.from_failure(error), id="future-result"),
    ],
)
@pytest.mark.anyio
async def test_a_returns_failure_from_an_async_effect_fails_the_step_with_its_error(
    make: Callable[[Exception], object],
) -> None:
    ledger = Ledger()
    error = Declined("no funds")

    async def charge() -> object:
        await anyio.lowlevel.checkpoint()
        return make(error)

    saga = ledger.step("reserve").then(step(charge, name="charge")).then(ledger.step("ship"))

    assert await run(saga) == Failure(error, ("reserve",))
    assert ledger.log == ["reserve", "undo reserve"]


@pytest.mark.anyio
async def test_a_future_result_failure_of_a_plain_value_fails_with_returned_failure() -> None:
    async def charge() -> object:
        await anyio.lowlevel.checkpoint()
        return FutureResult.from_failure("no funds")

    outcome = await run(step(charge, name="charge"))

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, ReturnedFailure)
    assert (outcome.error.path, outcome.error.value) == ("charge", "no funds")


@pytest.mark.anyio
async def test_in_worker_thread_runs_blocking_effects_in_another_thread_with_their_context() -> (
    None
):
    loop_thread = threading.get_ident()
    seen: list[tuple[int, StepContext]] = []
    error = Declined()

    def blocking_charge() -> str:
        seen.append((threading.get_ident(), current_context()))
        return "C-1"

    def blocking_refund(charge: str) -> None:
        seen.append((threading.get_ident(), current_context()))
        assert charge == "C-1"

    saga = step(in_worker_thread(blocking_charge), in_worker_thread(blocking_refund)).then(
        step(failing_after_checkpoint(error), name="ship")
    )

    outcome = await saga.run(AsyncInterpreter(), saga_id="s-1")

    assert outcome == Failure(error, ("blocking_charge",))
    assert [context for _, context in seen] == [
        StepContext("s-1", "blocking_charge", 1, "action"),
        StepContext("s-1", "blocking_charge", 1, "compensation"),
    ]
    assert all(thread != loop_thread for thread, _ in seen)


@pytest.mark.anyio
async def test_in_worker_thread_passes_arguments_through() -> None:
    def add(left: int, right: int) -> int:
        return left + right

    assert await in_worker_thread(add)(2, right=3) == 5


def test_in_worker_thread_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="in_worker_thread needs a callable, got 42"):
        in_worker_thread(42)  # type: ignore[arg-type]


# -- rule 5: par runs branches concurrently -----------------------------------------------------


@pytest.mark.anyio
async def test_par_branches_run_concurrently() -> None:
    left_ready = anyio.Event()
    right_ready = anyio.Event()

    async def left() -> str:
        left_ready.set()
        await right_ready.wait()  # deadlocks unless the right branch runs meanwhile
        return "L"

    async def right() -> int:
        right_ready.set()
        await left_ready.wait()
        return 2

    with anyio.fail_after(GUARD):
        outcome = await run(par(step(left), step(right), pure("p")))

    assert outcome == Success(("L", 2, "p"))


@pytest.mark.anyio
async def test_par_results_keep_argument_order_when_later_branches_finish_first() -> None:
    finished: list[str] = []
    second_done = anyio.Event()
    third_done = anyio.Event()

    async def first() -> str:
        await second_done.wait()
        finished.append("first")
        return "a"

    async def second() -> str:
        await third_done.wait()
        finished.append("second")
        second_done.set()
        return "b"

    async def third() -> str:
        await anyio.lowlevel.checkpoint()
        finished.append("third")
        third_done.set()
        return "c"

    with anyio.fail_after(GUARD):
        outcome = await run(par(step(first), step(second), step(third)).map("".join))

    assert outcome == Success("abc")
    assert finished == ["third", "second", "first"]


@pytest.mark.anyio
async def test_each_branch_runs_its_steps_in_order_and_a_step_after_par_sees_the_tuple() -> None:
    ledger = Ledger()
    saga = par(
        ledger.step("a1", 1).then(ledger.step("a2", 2)).named("left"),
        ledger.step("b1", "x").named("right"),
    ).bind(lambda pair: step(lambda: pair, name="after"))

    assert await run(saga) == Success((2, "x"))
    assert ledger.log.index("a1") < ledger.log.index("a2")
    assert sorted(ledger.log) == ["a1", "a2", "b1"]


# -- rule 5: a failing branch, "settle" (default) -----------------------------------------------


@pytest.mark.anyio
async def test_settle_lets_an_in_flight_sibling_finish_compensates_it_and_starts_nothing_new() -> (
    None
):
    log: list[str] = []
    packing = anyio.Event()
    declined = anyio.Event()
    error = Declined("card declined")

    def reserve() -> str:
        log.append("reserve")
        return "R-1"

    async def charge() -> str:
        await packing.wait()
        log.append("charge declined")
        declined.set()
        raise error

    async def pack() -> str:
        log.append("pack started")
        packing.set()
        await declined.wait()
        log.append("pack finished")
        return "parcel"

    def label() -> str:
        log.append("label")
        return "label"

    async def unpack(parcel: str) -> None:
        await anyio.lowlevel.checkpoint()
        log.append(f"unpack {parcel}")

    shipping = step(pack, unpack, name="pack").then(step(label, name="label")).named("shipping")
    saga = step(reserve, lambda r: log.append(f"unreserve {r}"), name="reserve").then(
        par(step(charge, name="charge"), shipping)
    )

    with anyio.fail_after(GUARD):
        outcome = await run(saga)

    assert outcome == Failure(error, ("shipping/pack", "reserve"))
    assert log == [
        "reserve",
        "pack started",
        "charge declined",
        "pack finished",
        "unpack parcel",
        "unreserve R-1",
    ]


@pytest.mark.anyio
async def test_two_failing_branches_fail_with_an_exception_group_of_both_errors() -> None:
    ledger = Ledger()
    first = Declined("first")
    second = Declined("second")
    first_failed = anyio.Event()

    async def fail_first() -> str:
        await anyio.lowlevel.checkpoint()
        first_failed.set()
        raise first

    async def fail_second() -> str:
        await first_failed.wait()
        raise second

    saga = ledger.step("reserve").then(par(step(fail_first, name="a"), step(fail_second, name="b")))

    with anyio.fail_after(GUARD):
        outcome = await run(saga)

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, ExceptionGroup)
    assert outcome.error.exceptions == (first, second)
    assert outcome.error.message == "several par branches failed"
    assert outcome.compensated == ("reserve",)


# -- rule 5 + rule 3: a failing branch, "cancel" ------------------------------------------------


class CancelScenario:
    """reserve, then par(charge fails once pack is in flight, shipping: pack then label)."""

    def __init__(self, **pack_options: Any) -> None:
        self.log: list[str] = []
        self.contexts: list[StepContext] = []
        self.error = Declined("card declined")
        self.packing = anyio.Event()
        self.pack_options = pack_options

    async def charge(self) -> str:
        await self.packing.wait()
        self.log.append("charge declined")
        raise self.error

    async def pack(self) -> str:
        context = current_context()
        self.contexts.append(context)
        self.log.append(f"pack {context.attempt}")
        if context.attempt == 1:
            self.packing.set()
            await hang()
        await anyio.lowlevel.checkpoint()
        return f"parcel-{context.attempt}"

    async def unpack(self, parcel: str) -> None:
        await anyio.lowlevel.checkpoint()
        self.log.append(f"unpack {parcel}")

    def label(self) -> str:
        self.log.append("label")
        return "label"

    def saga(self, *, compensable: bool = True) -> Saga[object]:
        shipping = (
            step(self.pack, self.unpack if compensable else None, name="pack", **self.pack_options)
            .then(step(self.label, name="label"))
            .named("shipping")
        )
        return step(
            lambda: "R-1", lambda r: self.log.append(f"unreserve {r}"), name="reserve"
        ).then(par(step(self.charge, name="charge"), shipping))


@pytest.mark.anyio
async def test_cancel_cuts_an_in_flight_sibling_step_and_reports_it_unresolved() -> None:
    scenario = CancelScenario()
    events: list[Event] = []
    interpreter = AsyncInterpreter(on_branch_failure="cancel", listeners=[events.append])

    with anyio.fail_after(GUARD):
        outcome = await scenario.saga().run(interpreter, saga_id="s-1")

    assert outcome == PartialFailure(scenario.error, ("reserve",), unresolved=("shipping/pack",))
    assert scenario.log == ["pack 1", "charge declined", "unreserve R-1"]
    failed = [event for event in events if isinstance(event, StepFailed)]
    assert [(event.path, event.attempt, event.unknown) for event in failed] == [
        ("charge", 1, False),
        ("shipping/pack", 1, True),
    ]
    assert failed[0].error is scenario.error
    cancelled = failed[1].error
    assert isinstance(cancelled, BranchCancelledError)
    assert (cancelled.path, cancelled.attempt) == ("shipping/pack", 1)
    assert str(cancelled) == (
        "step 'shipping/pack' attempt 1 was cancelled: a sibling branch of its par failed"
    )


@pytest.mark.anyio
async def test_cancel_leaves_a_cancelled_step_without_compensation_out_of_the_report() -> None:
    scenario = CancelScenario()

    with anyio.fail_after(GUARD):
        outcome = await run(scenario.saga(compensable=False), on_branch_failure="cancel")

    assert outcome == Failure(scenario.error, ("reserve",))


@pytest.mark.anyio
async def test_cancel_reruns_a_cancelled_idempotent_step_in_the_undo_and_compensates_it() -> None:
    scenario = CancelScenario(idempotent=True)
    events: list[Event] = []
    interpreter = AsyncInterpreter(on_branch_failure="cancel", listeners=[events.append])

    with anyio.fail_after(GUARD):
        outcome = await scenario.saga().run(interpreter, saga_id="s-1")

    assert outcome == Failure(scenario.error, ("shipping/pack", "reserve"))
    assert scenario.log == [
        "pack 1",
        "charge declined",
        "pack 2",
        "unpack parcel-2",
        "unreserve R-1",
    ]
    assert scenario.contexts == [
        StepContext("s-1", "shipping/pack", 1, "action"),
        StepContext("s-1", "shipping/pack", 2, "action"),
    ]
    assert {context.idempotency_key for context in scenario.contexts} == {"s-1/shipping/pack"}
    pack_events = [event for event in shape(events) if event[1] == "shipping/pack"]
    assert pack_events == [
        ("StepStarted", "shipping/pack", 1),
        ("StepFailed", "shipping/pack", 1),
        ("StepStarted", "shipping/pack", 2),
        ("StepCompleted", "shipping/pack", 2),
        ("CompensationStarted", "shipping/pack", 1),
        ("CompensationCompleted", "shipping/pack", 1),
    ]


@pytest.mark.anyio
async def test_cancel_hands_a_cancelled_step_to_its_unknown_outcome_compensation() -> None:
    received: list[StepContext] = []

    async def unknown_pack(context: StepContext) -> None:
        await anyio.lowlevel.checkpoint()
        received.append(context)

    scenario = CancelScenario(on_unknown=unknown_pack)

    with anyio.fail_after(GUARD):
        outcome = await scenario.saga().run(
            AsyncInterpreter(on_branch_failure="cancel"), saga_id="s-1"
        )

    assert outcome == Failure(scenario.error, ("shipping/pack", "reserve"))
    assert received == [StepContext("s-1", "shipping/pack", 1, "unknown")]
    assert received[0].idempotency_key == "s-1/shipping/pack"
    assert scenario.log == ["pack 1", "charge declined", "unreserve R-1"]  # no unpack


@pytest.mark.anyio
async def test_cancel_stops_a_sibling_waiting_to_retry_without_an_unknown_outcome() -> None:
    """A sibling cut off while it waits before a retry did not run that attempt: it failed."""
    log: list[str] = []
    events: list[Event] = []
    error = Declined("card declined")
    pack_failed = anyio.Event()

    async def charge() -> str:
        await pack_failed.wait()
        raise error

    async def pack() -> str:
        log.append(f"pack {current_context().attempt}")
        await anyio.lowlevel.checkpoint()
        pack_failed.set()
        raise Declined("printer jam")

    saga = step(lambda: "R-1", lambda r: log.append(f"unreserve {r}"), name="reserve").then(
        par(
            step(charge, name="charge"),
            step(
                pack,
                lambda p: log.append(f"unpack {p}"),
                name="pack",
                retry=Retry(2, delay=20.0, jitter=0.0),
            ),
        )
    )

    # No fail_after: trio's mock clock would jump to it while a worker thread runs.
    outcome = await saga.run(
        AsyncInterpreter(on_branch_failure="cancel", listeners=[events.append])
    )

    assert outcome == Failure(error, ("reserve",))
    assert log == ["pack 1", "unreserve R-1"]
    [retrying] = [event for event in events if isinstance(event, StepRetrying)]
    assert (retrying.path, retrying.attempt, retrying.delay) == ("pack", 1, 20.0)
    pack_failures = [
        event for event in events if isinstance(event, StepFailed) and event.path == "pack"
    ]
    assert [(event.attempt, event.unknown) for event in pack_failures] == [(1, False)]
    assert isinstance(pack_failures[0].error, BranchCancelledError)


@pytest.mark.anyio
async def test_settle_never_cancels_a_sibling() -> None:
    """The same scenario under "settle": the hanging sibling is only cut off by its timeout."""
    scenario = CancelScenario(timeout=TINY)
    events: list[Event] = []

    with anyio.fail_after(GUARD):
        outcome = await scenario.saga().run(AsyncInterpreter(listeners=[events.append]))

    # The sibling failed on its own (its timeout), so both branch errors are reported.
    assert isinstance(outcome, PartialFailure)
    assert isinstance(outcome.error, ExceptionGroup)
    # (which branch failed first depends on timing: compare them in a fixed order)
    declined, timed_out = sorted(outcome.error.exceptions, key=lambda error: type(error).__name__)
    assert declined is scenario.error
    assert timeout_fields(timed_out) == ("shipping/pack", 1, TINY, "step", None, True)
    assert (outcome.compensated, outcome.unresolved) == (("reserve",), ("shipping/pack",))
    assert not any(
        isinstance(event.error, BranchCancelledError)
        for event in events
        if isinstance(event, StepFailed)
    )


# -- rule 5: compensation order, concurrent or sequential ---------------------------------------


class UndoScenario:
    """before, then par(stock: a1 then a2, b1), then charge fails.

    The forward steps complete in the order before, a1, b1, a2 (sequenced with events).
    """

    def __init__(self) -> None:
        self.log: list[str] = []
        self.error = Declined("card declined")
        self.a1_done = anyio.Event()
        self.b1_done = anyio.Event()
        self.undoing: dict[str, anyio.Event] = {"a2": anyio.Event(), "b1": anyio.Event()}

    def saga(self, *, overlap: bool) -> Saga[object]:
        def forward(name: str, waits: anyio.Event | None, sets: anyio.Event | None) -> Saga[str]:
            async def action() -> str:
                if waits is not None:
                    await waits.wait()
                await anyio.lowlevel.checkpoint()
                self.log.append(name)
                if sets is not None:
                    sets.set()
                return name.upper()

            async def compensate(value: str) -> None:
                self.log.append(f"start undo {name}")
                await anyio.lowlevel.checkpoint()
                if overlap and name in self.undoing:
                    # a2's and b1's compensations each wait for the other to have started:
                    # they finish only if they overlap.
                    self.undoing[name].set()
                    other = self.undoing["b1" if name == "a2" else "a2"]
                    await other.wait()
                self.log.append(f"end undo {name} {value}")

            return step(action, compensate, name=name)

        stock = forward("a1", None, self.a1_done).then(forward("a2", self.b1_done, None))
        return (
            forward("before", None, None)
            .then(par(stock.named("stock"), forward("b1", self.a1_done, self.b1_done)))
            .then(step(failing_after_checkpoint(self.error), name="charge"))
        )


@pytest.mark.anyio
async def test_concurrent_compensation_overlaps_branches_in_reverse_causal_order() -> None:
    scenario = UndoScenario()

    with anyio.fail_after(GUARD):
        outcome = await run(scenario.saga(overlap=True), concurrent_compensation=True)

    assert isinstance(outcome, Failure)
    assert outcome.error is scenario.error
    assert sorted(outcome.compensated) == ["b1", "before", "stock/a1", "stock/a2"]
    assert outcome.compensated.index("stock/a2") < outcome.compensated.index("stock/a1")
    assert outcome.compensated[-1] == "before"
    log = scenario.log
    assert log[:4] == ["before", "a1", "b1", "a2"]
    undo = log[4:]
    # within the stock branch: a2 is undone before a1 starts; before is undone last of all
    assert undo.index("end undo a2 A2") < undo.index("start undo a1")
    assert undo[-2:] == ["start undo before", "end undo before BEFORE"]
    assert undo.index("end undo b1 B1") < undo.index("start undo before")
    assert undo.index("end undo a1 A1") < undo.index("start undo before")


@pytest.mark.anyio
async def test_sequential_compensation_runs_one_at_a_time_in_reverse_completion_order() -> None:
    scenario = UndoScenario()

    with anyio.fail_after(GUARD):
        outcome = await run(scenario.saga(overlap=False))

    assert outcome == Failure(scenario.error, ("stock/a2", "b1", "stock/a1", "before"))
    assert scenario.log == [
        "before",
        "a1",
        "b1",
        "a2",
        "start undo a2",
        "end undo a2 A2",
        "start undo b1",
        "end undo b1 B1",
        "start undo a1",
        "end undo a1 A1",
        "start undo before",
        "end undo before BEFORE",
    ]


@pytest.mark.anyio
async def test_concurrent_compensation_without_par_is_the_reverse_order() -> None:
    ledger = Ledger()
    error = Declined()
    saga = ledger.step("a").then(ledger.step("b")).then(ledger.step("c", raises=error))

    outcome = await run(saga, concurrent_compensation=True)

    assert outcome == Failure(error, ("b", "a"))
    assert ledger.log == ["a", "b", "c", "undo b", "undo a"]


# -- rule 7: timeouts ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_step_timeout_cuts_the_attempt_compensates_and_reports_it_unresolved() -> None:
    ledger = Ledger()
    events: list[Event] = []
    saga = (
        ledger.step("reserve")
        .then(ledger.step("charge", hangs=True, timeout=TINY))
        .then(ledger.step("ship"))
    )

    outcome = await run(saga, listeners=[events.append])

    assert isinstance(outcome, PartialFailure)
    assert timeout_fields(outcome.error) == ("charge", 1, TINY, "step", None, True)
    assert str(outcome.error) == (
        "step 'charge' timed out on attempt 1: it ran past its 0.005 s step timeout"
    )
    assert isinstance(outcome.error, TimeoutError)
    assert (outcome.compensated, outcome.failed_compensations, outcome.skipped) == (
        ("reserve",),
        (),
        (),
    )
    assert outcome.unresolved == ("charge",)
    assert ledger.log == ["reserve", "charge", "undo reserve"]
    [failed] = [event for event in events if isinstance(event, StepFailed)]
    assert (failed.path, failed.unknown, failed.error) == ("charge", True, outcome.error)


@pytest.mark.anyio
async def test_a_timed_out_step_without_compensation_is_not_unresolved() -> None:
    ledger = Ledger()
    saga = ledger.step("reserve").then(
        ledger.step("notify", hangs=True, compensable=False, timeout=TINY)
    )

    outcome = await run(saga)

    assert isinstance(outcome, Failure)
    assert timeout_fields(outcome.error) == ("notify", 1, TINY, "step", None, True)
    assert outcome.compensated == ("reserve",)


@pytest.mark.anyio
async def test_a_step_finishing_within_its_timeout_succeeds() -> None:
    ledger = Ledger()

    assert await run(ledger.step("charge", "C-1", timeout=10.0)) == Success("C-1")


@pytest.mark.anyio
async def test_a_subtree_timeout_around_a_named_subsaga_names_it_as_the_scope() -> None:
    ledger = Ledger()
    payment = ledger.step("authorize").then(ledger.step("charge", hangs=True)).named("payment")
    saga = ledger.step("reserve").then(payment.timeout(ROOMY)).then(ledger.step("ship"))

    outcome = await run(saga)

    assert isinstance(outcome, PartialFailure)
    assert timeout_fields(outcome.error) == (
        "payment/charge",
        1,
        ROOMY,
        "sub-tree",
        "payment",
        True,
    )
    assert str(outcome.error) == (
        "step 'payment/charge' timed out on attempt 1: it ran past the 0.05 s timeout of "
        "sub-tree 'payment'"
    )
    assert outcome.compensated == ("payment/authorize", "reserve")
    assert outcome.unresolved == ("payment/charge",)
    assert "ship" not in ledger.log


@pytest.mark.anyio
async def test_a_subtree_timeout_at_the_root_names_the_root() -> None:
    ledger = Ledger()
    saga = ledger.step("reserve").then(ledger.step("charge", hangs=True)).timeout(ROOMY)

    outcome = await run(saga)

    assert isinstance(outcome, PartialFailure)
    assert timeout_fields(outcome.error) == ("charge", 1, ROOMY, "sub-tree", "", True)
    assert str(outcome.error) == (
        "step 'charge' timed out on attempt 1: "
        "it ran past a 0.05 s sub-tree timeout set at the saga's root"
    )
    assert (outcome.compensated, outcome.unresolved) == (("reserve",), ("charge",))


@pytest.mark.anyio
async def test_a_subtree_timeout_inside_a_named_scope_names_that_scope() -> None:
    ledger = Ledger()
    saga = ledger.step("charge", hangs=True).timeout(TINY).named("order")

    outcome = await run(saga)

    assert isinstance(outcome, PartialFailure)
    assert timeout_fields(outcome.error) == ("order/charge", 1, TINY, "sub-tree", "order", True)


@pytest.mark.anyio
async def test_a_subtree_deadline_ends_with_its_subtree() -> None:
    """Steps after a timed sub-tree are no longer bound by its deadline."""
    log: list[str] = []

    async def slow_after() -> str:
        await anyio.sleep(2 * TINY)  # past the sub-tree's deadline, which no longer applies
        log.append("after")
        return "after"

    saga = step(lambda: "inside").timeout(TINY).then(step(slow_after))

    assert await run(saga) == Success("after")
    assert log == ["after"]


@pytest.mark.anyio
async def test_the_tighter_of_step_and_subtree_deadlines_applies() -> None:
    ledger = Ledger()
    step_wins = ledger.step("a", hangs=True, timeout=TINY).timeout(10.0)
    subtree_wins = ledger.step("b", hangs=True, timeout=10.0).timeout(TINY)

    first = await run(step_wins)
    second = await run(subtree_wins)

    assert isinstance(first, PartialFailure)
    assert isinstance(second, PartialFailure)
    assert timeout_fields(first.error) == ("a", 1, TINY, "step", None, True)
    assert timeout_fields(second.error) == ("b", 1, TINY, "sub-tree", "", True)


@ON_VIRTUAL_TIME
def test_a_step_timeout_ending_with_its_subtree_deadline_is_reported_as_the_steps_own(
    backend: Backend,
) -> None:
    """Both deadlines pass at the same instant: the step's own timeout wins, so the error names
    the step's timeout, not the sub-tree's."""
    events: list[Event] = []
    saga = step(hang, lambda _: None, name="charge", timeout=1.0).timeout(1.0)

    outcome = on_virtual_time(backend, saga, events)

    assert isinstance(outcome, PartialFailure)
    assert timeout_fields(outcome.error) == ("charge", 1, 1.0, "step", None, True)
    assert str(outcome.error) == (
        "step 'charge' timed out on attempt 1: it ran past its 1 s step timeout"
    )
    [failed] = [event for event in events if isinstance(event, StepFailed)]
    assert (failed.at, failed.error, failed.unknown) == (1.0, outcome.error, True)


@ON_VIRTUAL_TIME
def test_a_step_due_to_start_exactly_at_its_subtree_deadline_does_not_start(
    backend: Backend,
) -> None:
    """The first step ends exactly at the sub-tree's deadline: no time is left, so the second
    never starts (even though, being a plain function, it could not have been cut off)."""
    log: list[str] = []

    async def pack() -> str:
        await past_the_deadline(1.0)
        return "P-1"

    def label() -> str:
        log.append("label")
        return "L-1"

    saga = (
        step(pack, lambda p: log.append(f"unpack {p}"), name="pack")
        .then(step(label, name="label"))
        .timeout(1.0)
    )

    outcome = on_virtual_time(backend, saga, [])

    assert isinstance(outcome, Failure)
    assert timeout_fields(outcome.error) == ("label", 1, 1.0, "sub-tree", "", False)
    assert outcome.compensated == ("pack",)
    assert log == ["unpack P-1"]


@pytest.mark.anyio
async def test_a_run_timeout_cuts_the_running_step_and_compensates() -> None:
    ledger = Ledger()
    saga = (
        ledger.step("reserve")
        .then(ledger.step("charge", hangs=True, timeout=10.0))
        .then(ledger.step("ship"))
    )

    outcome = await run(saga.timeout(10.0), timeout=ROOMY)

    assert isinstance(outcome, PartialFailure)
    assert timeout_fields(outcome.error) == ("charge", 1, ROOMY, "run", None, True)
    assert str(outcome.error) == (
        "step 'charge' timed out on attempt 1: it ran past the run's 0.05 s timeout"
    )
    assert (outcome.compensated, outcome.unresolved) == (("reserve",), ("charge",))
    assert ledger.log == ["reserve", "charge", "undo reserve"]


@pytest.mark.anyio
async def test_a_step_does_not_start_once_its_subtree_deadline_has_passed() -> None:
    log: list[str] = []

    async def slow() -> str:
        # Runs past the sub-tree's deadline but cannot be cut off (shielded), so it completes.
        with anyio.CancelScope(shield=True):
            await anyio.sleep(4 * TINY)
        log.append("slow")
        return "S"

    def second() -> str:
        log.append("second")
        return "never"

    saga = (
        step(slow, lambda s: log.append(f"undo slow {s}"), name="slow")
        .then(step(second, name="second"))
        .timeout(TINY)
    )

    outcome = await run(saga)

    assert isinstance(outcome, Failure)
    assert timeout_fields(outcome.error) == ("second", 1, TINY, "sub-tree", "", False)
    assert str(outcome.error) == (
        "step 'second' could not start attempt 1: "
        "a 0.005 s sub-tree timeout set at the saga's root had passed"
    )
    assert outcome.compensated == ("slow",)
    assert log == ["slow", "undo slow S"]


@pytest.mark.anyio
async def test_a_retry_whose_wait_outlasts_the_subtree_deadline_never_starts() -> None:
    attempts: list[int] = []

    def charge() -> str:
        attempts.append(current_context().attempt)
        raise Declined("flaky")

    saga = step(charge, name="charge", retry=Retry(3, delay=1.0, jitter=0.0)).timeout(TINY)

    outcome = await run(saga)

    assert isinstance(outcome, Failure)
    assert timeout_fields(outcome.error) == ("charge", 2, TINY, "sub-tree", "", False)
    assert attempts == [1]


@ON_VIRTUAL_TIME
def test_a_retry_due_after_the_subtree_deadline_fails_the_step_as_its_last_attempt(
    backend: Backend,
) -> None:
    """Attempt 1 fails once the sub-tree's deadline has passed, so its immediate retry cannot
    start: the step fails for good as attempt 1 (its start, the error of the retry that could
    not start), as when the wait before a retry outlasts the deadline. No `StepFailed` used to
    follow the `StepRetrying` at all."""
    events: list[Event] = []
    busy = Declined("gateway busy")

    async def reserve() -> str:
        await anyio.sleep(0.5)
        return "R-1"

    async def charge() -> str:
        await past_the_deadline(2.0)
        raise busy

    saga = step(reserve, name="reserve").then(
        step(charge, name="charge", retry=Retry(2, delay=0.0)).timeout(1.0)
    )

    outcome = on_virtual_time(backend, saga, events)

    assert isinstance(outcome, Failure)
    assert timeout_fields(outcome.error) == ("charge", 2, 1.0, "sub-tree", "", False)
    # charge's attempt 1 started at 0.5 and failed at 2.5, past the deadline at 1.5
    assert [event for event in events if getattr(event, "path", "") == "charge"] == [
        StepStarted("s-1", "charge", 1, 0.5),
        StepRetrying("s-1", "charge", 1, 2.5, 0.5, busy, 0.0),
        StepFailed("s-1", "charge", 1, 2.5, 0.5, outcome.error, unknown=False),
    ]


@pytest.mark.anyio
async def test_an_idempotent_step_whose_attempt_times_out_is_retried_with_the_same_key() -> None:
    contexts: list[StepContext] = []

    async def charge() -> str:
        context = current_context()
        contexts.append(context)
        if context.attempt == 1:
            await hang()
        return f"charged on attempt {context.attempt}"

    saga = step(charge, name="charge", timeout=TINY, idempotent=True)

    outcome = await saga.run(AsyncInterpreter(), saga_id="s-1")

    assert outcome == Success("charged on attempt 2")
    assert [(context.attempt, context.idempotency_key) for context in contexts] == [
        (1, "s-1/charge"),
        (2, "s-1/charge"),
    ]


@pytest.mark.anyio
async def test_an_idempotent_step_with_a_retry_policy_gets_that_many_attempts_on_timeouts() -> None:
    attempts: list[int] = []
    events: list[Event] = []

    async def charge() -> str:
        attempt = current_context().attempt
        attempts.append(attempt)
        if attempt < 3:
            await hang()
        return "charged"

    saga = step(charge, name="charge", timeout=TINY, idempotent=True, retry=Retry(3, delay=0))

    outcome = await run(saga, listeners=[events.append])

    assert outcome == Success("charged")
    assert attempts == [1, 2, 3]
    retrying = [event for event in events if isinstance(event, StepRetrying)]
    assert [(event.attempt, event.delay) for event in retrying] == [(1, 0.0), (2, 0.0)]
    assert [timeout_fields(event.error) for event in retrying] == [
        ("charge", 1, TINY, "step", None, True),
        ("charge", 2, TINY, "step", None, True),
    ]


@pytest.mark.anyio
async def test_retry_waits_go_through_the_injected_sleep() -> None:
    delays: list[float] = []
    attempts: list[int] = []

    async def no_wait(seconds: float) -> None:
        delays.append(seconds)
        await anyio.lowlevel.checkpoint()

    async def charge() -> str:
        attempt = current_context().attempt
        attempts.append(attempt)
        if attempt < 3:
            await hang()
        return "charged"

    retry = Retry(3, delay=0.5, jitter=0.0, backoff=2.0)
    saga = step(charge, name="charge", timeout=TINY, idempotent=True, retry=retry)

    outcome = await run(saga, sleep=no_wait)

    assert outcome == Success("charged")
    assert delays == [0.5, 1.0]
    assert attempts == [1, 2, 3]


@pytest.mark.anyio
async def test_an_idempotent_step_timing_out_every_attempt_fails_with_the_last_attempt() -> None:
    ledger = Ledger()
    attempts: list[int] = []

    async def charge() -> str:
        attempts.append(current_context().attempt)
        await hang()

    saga = ledger.step("reserve").then(
        step(charge, name="charge", timeout=TINY, idempotent=True, retry=Retry(3, delay=0))
    )

    outcome = await run(saga)

    assert isinstance(outcome, Failure)
    assert timeout_fields(outcome.error) == ("charge", 3, TINY, "step", None, True)
    assert outcome.compensated == ("reserve",)
    assert attempts == [1, 2, 3]


@pytest.mark.anyio
async def test_an_idempotent_step_is_run_once_more_in_the_undo_to_learn_its_result() -> None:
    ledger = Ledger()
    attempts: list[int] = []
    refunded: list[str] = []

    async def charge() -> str:
        attempt = current_context().attempt
        attempts.append(attempt)
        if attempt <= 2:
            await hang()
        return f"C-{attempt}"

    saga = ledger.step("reserve").then(
        step(
            charge,
            refunded.append,
            name="charge",
            timeout=TINY,
            idempotent=True,
            retry=Retry(2, delay=0),
        )
    )

    outcome = await run(saga)

    assert isinstance(outcome, Failure)
    assert timeout_fields(outcome.error) == ("charge", 2, TINY, "step", None, True)
    assert outcome.compensated == ("charge", "reserve")
    assert attempts == [1, 2, 3]
    assert refunded == ["C-3"]


@pytest.mark.anyio
async def test_a_run_again_in_the_undo_that_times_out_reports_its_own_timeout() -> None:
    """The undo runs an unknown outcome again to learn its result; that attempt is bound by the
    step's own timeout too, and when it passes the step stays unresolved, its `StepFailed`
    naming that attempt and that timeout."""
    ledger = Ledger()
    events: list[Event] = []
    attempts: list[int] = []
    refunded: list[str] = []

    async def charge() -> str:
        attempts.append(current_context().attempt)
        await hang()

    saga = ledger.step("reserve").then(
        step(charge, refunded.append, name="charge", timeout=TINY, idempotent=True)
    )

    outcome = await run(saga, listeners=[events.append])

    assert isinstance(outcome, PartialFailure)
    assert timeout_fields(outcome.error) == ("charge", 2, TINY, "step", None, True)
    assert (outcome.compensated, outcome.unresolved) == (("reserve",), ("charge",))
    failed = [event for event in events if isinstance(event, StepFailed)]
    assert [(event.path, event.attempt, event.unknown) for event in failed] == [
        ("charge", 2, True),
        ("charge", 3, True),
    ]
    assert failed[0].error is outcome.error
    again = failed[1].error
    assert timeout_fields(again) == ("charge", 3, TINY, "step", None, True)
    assert str(again) == (
        "step 'charge' timed out on attempt 3: it ran past its 0.005 s step timeout"
    )
    assert attempts == [1, 2, 3]
    assert refunded == []


@pytest.mark.anyio
async def test_a_subtree_deadline_is_not_retried_even_for_an_idempotent_step() -> None:
    attempts: list[int] = []

    async def charge() -> str:
        attempts.append(current_context().attempt)
        await hang()

    saga = step(charge, name="charge", idempotent=True, retry=Retry(3, delay=0)).timeout(TINY)

    outcome = await run(saga)

    assert isinstance(outcome, Failure)
    assert timeout_fields(outcome.error) == ("charge", 1, TINY, "sub-tree", "", True)
    assert attempts == [1]


@ON_VIRTUAL_TIME
def test_an_unknown_outcome_whose_retry_cannot_start_is_left_to_the_undo(
    backend: Backend,
) -> None:
    """An idempotent step's attempt says its outcome is unknown once the sub-tree's deadline has
    passed: the retry cannot start, so the step fails for good, still unknown, with the error of
    the retry that could not start; the undo runs it again to learn what to compensate."""
    events: list[Event] = []
    attempts: list[int] = []
    refunded: list[str] = []

    async def reserve() -> str:
        await anyio.sleep(0.5)
        return "R-1"

    async def charge() -> str:
        attempt = current_context().attempt
        attempts.append(attempt)
        if attempt == 1:
            await past_the_deadline(2.0)
            raise UnknownOutcomeError("no answer from the gateway")
        return f"C-{attempt}"

    saga = step(reserve, name="reserve").then(
        step(charge, refunded.append, name="charge", idempotent=True).timeout(1.0)
    )

    outcome = on_virtual_time(backend, saga, events)

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("charge",)
    [failed] = [event for event in events if isinstance(event, StepFailed)]
    assert failed.error is outcome.error
    assert timeout_fields(failed.error) == ("charge", 2, 1.0, "sub-tree", "", False)
    assert str(failed.error) == (
        "step 'charge' could not start attempt 2: "
        "a 1 s sub-tree timeout set at the saga's root had passed"
    )
    # reported as attempt 1, the last that ran (started at 0.5), as when a retry's wait fails
    assert (failed.attempt, failed.at, failed.started_at, failed.unknown) == (1, 2.5, 0.5, True)
    assert attempts == [1, 2]  # the undo's run-again is attempt 2: attempt 2 never ran
    assert refunded == ["C-2"]


@ON_VIRTUAL_TIME
def test_debug_logging_says_why_an_unknown_outcome_was_left_to_the_undo(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """The debug log names the saga, the step and the error where a retry could not start and
    where an outcome was left unknown."""

    async def reserve() -> str:
        await anyio.sleep(0.5)
        return "R-1"

    async def charge() -> str:
        if current_context().attempt == 1:
            await past_the_deadline(2.0)
            raise UnknownOutcomeError("no answer")
        return "C-2"

    saga = step(reserve, name="reserve").then(
        step(charge, lambda _: None, name="charge", idempotent=True).timeout(1.0)
    )

    with caplog.at_level(logging.DEBUG, logger="fsaga"):
        on_virtual_time(backend, saga, [])

    messages = [
        record.getMessage()
        for record in caplog.records
        if record.name == "fsaga.interpreter" and "charge" in record.getMessage()
    ]
    deadline = "a 1 s sub-tree timeout set at the saga's root had passed"
    assert messages == [
        "saga s-1: action charge attempt 1",
        f"saga s-1: step 'charge' could not start attempt 2: {deadline}",
        "saga s-1: step charge outcome unknown: StepTimeoutError(\"step 'charge' could not "
        f'start attempt 2: {deadline}")',
        "saga s-1: failed with StepTimeoutError(\"step 'charge' could not start attempt 2: "
        f'{deadline}"); compensating 1 step(s)',
        "saga s-1: action charge attempt 2",  # run again to settle the unknown outcome
        "saga s-1: compensation charge attempt 1",
    ]


@ON_VIRTUAL_TIME
def test_an_unknown_outcome_whose_wait_to_retry_outlasts_the_deadline_is_left_to_the_undo(
    backend: Backend,
) -> None:
    """As above, but the retry is due after a wait that the sub-tree's deadline cuts short: the
    step fails for good as its attempt 1, still unknown, with the deadline's error, and the undo
    runs it again to learn what to compensate."""
    events: list[Event] = []
    attempts: list[int] = []
    refunded: list[str] = []

    async def reserve() -> str:
        await anyio.sleep(0.5)
        return "R-1"

    async def charge() -> str:
        attempt = current_context().attempt
        attempts.append(attempt)
        if attempt == 1:
            await anyio.sleep(0.25)
            raise UnknownOutcomeError("no answer from the gateway")
        return f"C-{attempt}"

    saga = step(reserve, name="reserve").then(
        step(
            charge,
            refunded.append,
            name="charge",
            idempotent=True,
            retry=Retry(2, delay=5.0, jitter=0.0),
        ).timeout(1.0)
    )

    outcome = on_virtual_time(backend, saga, events)

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("charge",)
    [failed] = [event for event in events if isinstance(event, StepFailed)]
    assert failed.error is outcome.error
    assert timeout_fields(outcome.error) == ("charge", 2, 1.0, "sub-tree", "", False)
    # attempt 1 started at 0.5 and its wait to retry was cut off at the deadline, at 1.5
    assert (failed.attempt, failed.at, failed.started_at, failed.unknown) == (1, 1.5, 0.5, True)
    assert attempts == [1, 2]  # the undo's run-again
    assert refunded == ["C-2"]


@pytest.mark.anyio
async def test_the_undo_reruns_an_idempotent_step_free_of_the_deadline_that_failed_the_run() -> (
    None
):
    ledger = Ledger()
    attempts: list[int] = []
    refunded: list[str] = []

    async def charge() -> str:
        attempt = current_context().attempt
        attempts.append(attempt)
        if attempt == 1:
            await hang()
        await anyio.lowlevel.checkpoint()
        return f"C-{attempt}"

    saga = ledger.step("reserve").then(
        step(charge, refunded.append, name="charge", idempotent=True)
    )

    outcome = await run(saga, timeout=ROOMY)

    assert isinstance(outcome, Failure)
    assert timeout_fields(outcome.error) == ("charge", 1, ROOMY, "run", None, True)
    assert outcome.compensated == ("charge", "reserve")
    assert attempts == [1, 2]  # a run deadline is not retried; the undo runs it once more
    assert refunded == ["C-2"]


@pytest.mark.anyio
async def test_a_subtree_deadline_cuts_every_branch_of_a_par_inside_it() -> None:
    ledger = Ledger()
    saga = ledger.step("reserve").then(
        par(ledger.step("left", hangs=True), ledger.step("right", hangs=True)).timeout(TINY)
    )

    with anyio.fail_after(GUARD):
        outcome = await run(saga)

    assert isinstance(outcome, PartialFailure)
    assert isinstance(outcome.error, ExceptionGroup)
    assert sorted(timeout_fields(error) for error in outcome.error.exceptions) == [
        ("left", 1, TINY, "sub-tree", "", True),
        ("right", 1, TINY, "sub-tree", "", True),
    ]
    assert outcome.compensated == ("reserve",)
    assert sorted(outcome.unresolved) == ["left", "right"]


@pytest.mark.anyio
async def test_a_timed_out_step_with_on_unknown_hands_it_its_context() -> None:
    ledger = Ledger()
    received: list[StepContext] = []

    async def unknown_charge(context: StepContext) -> None:
        await anyio.lowlevel.checkpoint()
        received.append(context)

    saga = ledger.step("reserve").then(
        ledger.step("charge", hangs=True, timeout=TINY, on_unknown=unknown_charge)
    )

    outcome = await saga.run(AsyncInterpreter(), saga_id="s-1")

    assert isinstance(outcome, Failure)
    assert timeout_fields(outcome.error) == ("charge", 1, TINY, "step", None, True)
    assert outcome.compensated == ("charge", "reserve")
    assert received == [StepContext("s-1", "charge", 1, "unknown")]
    assert ledger.undone_names() == ["reserve"]  # charge's own compensation never ran


# -- rule 7: compensations are shielded, each under its own timeout -----------------------------


class SlowUndo:
    """A step whose compensation really waits before it finishes."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def step(self, name: str) -> Saga[str]:
        async def compensate(value: str) -> None:
            self.log.append(f"undo {name} started")
            await anyio.sleep(0.001)
            await anyio.lowlevel.checkpoint()
            self.log.append(f"undo {name} finished")

        return step(lambda: name, compensate, name=name)


@pytest.mark.anyio
async def test_a_compensation_that_waits_completes_after_a_step_timeout() -> None:
    slow = SlowUndo()
    saga: Saga[object] = slow.step("reserve").then(step(hang, name="charge", timeout=TINY))

    outcome = await run(saga)

    assert isinstance(outcome, Failure)
    assert timeout_fields(outcome.error) == ("charge", 1, TINY, "step", None, True)
    assert outcome.compensated == ("reserve",)
    assert slow.log == ["undo reserve started", "undo reserve finished"]


@pytest.mark.anyio
async def test_a_compensation_that_waits_completes_after_a_run_timeout() -> None:
    slow = SlowUndo()
    saga: Saga[object] = (
        slow.step("reserve").then(slow.step("hold")).then(step(hang, name="charge"))
    )

    outcome = await run(saga, timeout=ROOMY)

    assert isinstance(outcome, Failure)
    assert timeout_fields(outcome.error) == ("charge", 1, ROOMY, "run", None, True)
    assert outcome.compensated == ("hold", "reserve")
    assert slow.log == [
        "undo hold started",
        "undo hold finished",
        "undo reserve started",
        "undo reserve finished",
    ]


@pytest.mark.anyio
async def test_a_compensation_past_its_timeout_fails_and_the_rest_still_run() -> None:
    ledger = Ledger()
    error = Declined()

    async def stuck_refund(_: str) -> None:
        await hang()

    saga = (
        ledger.step("reserve")
        .then(step(lambda: "C-1", stuck_refund, name="charge", compensation_timeout=TINY))
        .then(ledger.step("ship", raises=error))
    )

    outcome = await run(saga)

    assert isinstance(outcome, PartialFailure)
    assert outcome.error is error
    assert outcome.compensated == ("reserve",)
    [failure] = outcome.failed_compensations
    assert (failure.path, failure.attempts) == ("charge", 1)
    assert timeout_fields(failure.error) == ("charge", 1, TINY, "compensation", None, True)
    assert str(failure.error) == (
        "the compensation of step 'charge' timed out on attempt 1: it ran past its 0.005 s "
        "compensation timeout"
    )
    assert (outcome.skipped, outcome.unresolved) == ((), ())
    assert ledger.log == ["reserve", "ship", "undo reserve"]


@pytest.mark.anyio
async def test_compensation_retry_retries_a_compensation_that_timed_out() -> None:
    attempts: list[int] = []
    error = Declined()

    async def refund(_: str) -> None:
        attempt = current_context().attempt
        attempts.append(attempt)
        if attempt == 1:
            await hang()

    saga = step(
        lambda: "C-1",
        refund,
        name="charge",
        compensation_timeout=TINY,
        compensation_retry=Retry(2, delay=0),
    ).then(step(failing_after_checkpoint(error), name="ship"))

    outcome = await run(saga)

    assert outcome == Failure(error, ("charge",))
    assert attempts == [1, 2]


@pytest.mark.anyio
async def test_a_compensation_timing_out_every_retry_reports_its_attempts() -> None:
    error = Declined()

    async def refund(_: str) -> None:
        await hang()

    saga = step(
        lambda: "C-1",
        refund,
        name="charge",
        compensation_timeout=TINY,
        compensation_retry=Retry(3, delay=0),
    ).then(step(failing_after_checkpoint(error), name="ship"))

    outcome = await run(saga)

    assert isinstance(outcome, PartialFailure)
    [failure] = outcome.failed_compensations
    assert (failure.path, failure.attempts) == ("charge", 3)
    assert timeout_fields(failure.error) == ("charge", 3, TINY, "compensation", None, True)


@pytest.mark.anyio
async def test_an_unknown_outcome_compensation_is_bound_by_the_compensation_timeout() -> None:
    async def stuck_unknown(_: StepContext) -> None:
        await hang()

    saga: Saga[object] = step(
        hang, name="charge", timeout=TINY, on_unknown=stuck_unknown, compensation_timeout=TINY
    )

    outcome = await run(saga)

    assert isinstance(outcome, PartialFailure)
    assert timeout_fields(outcome.error) == ("charge", 1, TINY, "step", None, True)
    [failure] = outcome.failed_compensations
    assert (failure.path, failure.attempts) == ("charge", 1)
    assert timeout_fields(failure.error) == ("charge", 1, TINY, "compensation", None, True)


# -- rule 8: cancellation from outside ----------------------------------------------------------


@pytest.mark.anyio
async def test_outside_cancellation_compensates_shielded_then_propagates_with_a_note() -> None:
    slow = SlowUndo()
    events: list[Event] = []
    reached: list[str] = []
    caught: list[BaseException] = []
    cancelled_class = anyio.get_cancelled_exc_class()
    shipped: list[str] = []

    with anyio.CancelScope() as scope:

        async def charge() -> str:
            scope.cancel()
            await hang()

        saga = (
            slow.step("reserve")
            .then(slow.step("hold"))
            .then(step(charge, lambda _: None, name="charge"))
            .then(step(lambda: shipped.append("ship"), name="ship"))
        )
        try:
            await saga.run(AsyncInterpreter(listeners=[events.append]), saga_id="order-1")
        except cancelled_class as interruption:
            caught.append(interruption)
            raise
        reached.append("after the run")

    assert scope.cancelled_caught
    assert reached == []
    assert shipped == []
    [cancelled] = caught
    [note] = cancelled.__notes__
    assert note.startswith("fsaga: saga order-1 interrupted; ")
    assert "compensated: hold, reserve" in note
    assert "unresolved: charge" in note
    assert slow.log == [
        "undo hold started",
        "undo hold finished",
        "undo reserve started",
        "undo reserve finished",
    ]
    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    assert finished.outcome == PartialFailure(
        cancelled, ("hold", "reserve"), unresolved=("charge",)
    )
    [failed] = [event for event in events if isinstance(event, StepFailed)]
    assert (failed.path, failed.unknown, failed.error) == ("charge", True, cancelled)


@pytest.mark.anyio
async def test_a_step_an_outside_cancellation_keeps_from_starting_failed_and_is_not_unknown() -> (
    None
):
    """A plain (sync) action cancels the run's scope: nothing yields to the event loop until
    the next step is due, so the cancellation is noticed before that step starts. It never ran,
    so its outcome is known (it failed): not unresolved, nothing to compensate."""
    events: list[Event] = []
    ran: list[str] = []

    with anyio.CancelScope() as scope:

        def reserve() -> str:
            ran.append("reserve")
            scope.cancel()  # noticed at the next checkpoint
            return "R-1"

        saga = step(reserve, lambda _: ran.append("undo reserve"), name="reserve").then(
            step(lambda: ran.append("charge"), lambda _: ran.append("refund"), name="charge")
        )
        await saga.run(AsyncInterpreter(listeners=[events.append]))

    assert scope.cancelled_caught
    assert ran == ["reserve", "undo reserve"]
    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    assert isinstance(finished.outcome, Failure)
    assert finished.outcome.compensated == ("reserve",)
    [failed] = [event for event in events if isinstance(event, StepFailed)]
    assert (failed.path, failed.unknown) == ("charge", False)


@pytest.mark.anyio
async def test_outside_cancellation_from_another_task_compensates_then_propagates() -> None:
    slow = SlowUndo()
    events: list[Event] = []
    reached: list[str] = []
    charging = anyio.Event()

    async def charge() -> str:
        charging.set()
        await hang()

    saga = slow.step("reserve").then(step(charge, name="charge"))

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:

            async def cancel_once_charging() -> None:
                await charging.wait()
                scope.cancel()

            group.start_soon(cancel_once_charging)
            await saga.run(AsyncInterpreter(listeners=[events.append]))
            reached.append("after the run")

    assert scope.cancelled_caught
    assert reached == []
    assert slow.log == ["undo reserve started", "undo reserve finished"]
    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    assert isinstance(finished.outcome, Failure)  # charge has no compensation: nothing unknown
    assert finished.outcome.compensated == ("reserve",)
    assert isinstance(finished.outcome.error, anyio.get_cancelled_exc_class())


@pytest.mark.anyio
async def test_outside_cancellation_while_par_branches_are_in_flight() -> None:
    slow = SlowUndo()
    events: list[Event] = []
    reached: list[str] = []
    fast_done = anyio.Event()
    slow_started = anyio.Event()
    cancelled_class = anyio.get_cancelled_exc_class()

    async def fast() -> str:
        await slow_started.wait()
        fast_done.set()
        return "F"

    async def stuck() -> str:
        slow_started.set()
        await hang()

    saga = (
        slow.step("reserve")
        .then(
            par(
                step(fast, lambda _: slow.log.append("undo fast"), name="fast"),
                step(stuck, lambda _: None, name="stuck"),
            )
        )
        .then(step(lambda: reached.append("after par"), name="after"))
    )

    with anyio.fail_after(GUARD), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:

            async def cancel_once_fast_is_done() -> None:
                await fast_done.wait()
                scope.cancel()

            group.start_soon(cancel_once_fast_is_done)
            await saga.run(AsyncInterpreter(listeners=[events.append]))
            reached.append("after the run")

    assert scope.cancelled_caught
    assert reached == []
    assert slow.log == ["undo fast", "undo reserve started", "undo reserve finished"]
    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    outcome = finished.outcome
    assert isinstance(outcome, PartialFailure)
    assert isinstance(outcome.error, cancelled_class)
    assert (outcome.compensated, outcome.failed_compensations, outcome.unresolved) == (
        ("fast", "reserve"),
        (),
        ("stuck",),
    )


@pytest.mark.anyio
async def test_outside_cancellation_during_a_compensation_lets_it_finish() -> None:
    """The run is already undoing a failure when the caller is cancelled: the compensation in
    flight is not cut short, the rest still run (rule 8: compensate, shielded)."""
    log: list[str] = []
    undoing = anyio.Event()
    error = Declined()

    async def refund(charge: str) -> None:
        log.append(f"refund {charge} started")
        undoing.set()
        await anyio.sleep(0.001)
        await anyio.lowlevel.checkpoint()
        log.append(f"refund {charge} finished")

    saga = (
        step(lambda: "R-1", lambda r: log.append(f"unreserve {r}"), name="reserve")
        .then(step(lambda: "C-1", refund, name="charge"))
        .then(step(failing_after_checkpoint(error), name="ship"))
    )
    events: list[Event] = []

    with anyio.fail_after(GUARD), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:

            async def cancel_while_undoing() -> None:
                await undoing.wait()
                scope.cancel()

            group.start_soon(cancel_while_undoing)
            await saga.run(AsyncInterpreter(listeners=[events.append]))
            log.append("after the run")

    assert scope.cancelled_caught
    assert log == ["refund C-1 started", "refund C-1 finished", "unreserve R-1"]
    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    assert finished.outcome == Failure(error, ("charge", "reserve"))


@pytest.mark.anyio
async def test_outside_cancellation_during_the_undo_of_a_one_chain_saga_lets_it_finish() -> None:
    """The same, for a saga that is one chain of plain steps run with nobody listening (which
    runs before any engine is made): shielded to the end, then the cancellation propagates
    with a note naming the outcome."""
    log: list[str] = []
    undoing = anyio.Event()
    error = Declined()

    async def refund(charge: str) -> None:
        log.append(f"refund {charge} started")
        undoing.set()
        await anyio.sleep(0.001)
        await anyio.lowlevel.checkpoint()
        log.append(f"refund {charge} finished")

    saga = (
        step(lambda: "R-1", lambda r: log.append(f"unreserve {r}"), name="reserve")
        .then(step(lambda: "C-1", refund, name="charge"))
        .then(step(failing_after_checkpoint(error), name="ship"))
    )
    notes: list[str] = []

    with anyio.fail_after(GUARD), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:

            async def cancel_while_undoing() -> None:
                await undoing.wait()
                scope.cancel()

            group.start_soon(cancel_while_undoing)
            try:
                await saga.run(AsyncInterpreter())
            except BaseException as cancelled:
                notes.extend(getattr(cancelled, "__notes__", ()))
                raise
            log.append("after the run")

    assert scope.cancelled_caught
    assert log == ["refund C-1 started", "refund C-1 finished", "unreserve R-1"]
    assert len(notes) == 1
    assert "interrupted" in notes[0]
    assert "charge" in notes[0]
    assert "reserve" in notes[0]


@pytest.mark.anyio
async def test_a_keyboard_interrupt_in_an_effect_compensates_then_propagates() -> None:
    slow = SlowUndo()
    events: list[Event] = []

    def charge() -> str:
        raise KeyboardInterrupt

    saga = slow.step("reserve").then(step(charge, lambda _: None, name="charge"))

    with pytest.raises(KeyboardInterrupt) as raised:
        await saga.run(AsyncInterpreter(listeners=[events.append]), saga_id="order-1")

    assert slow.log == ["undo reserve started", "undo reserve finished"]
    [note] = raised.value.__notes__
    assert note == (
        "fsaga: saga order-1 interrupted; saga failed: KeyboardInterrupt(); "
        "compensated: reserve; unknown outcome, unresolved: charge"
    )
    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    assert finished.outcome == PartialFailure(raised.value, ("reserve",), unresolved=("charge",))


# -- rule 8: interrupts in par branches and during the undo -------------------------------------


async def a_cancellation() -> BaseException:
    """The event loop's own cancellation exception, caught where it was delivered: what an effect
    sees when something it awaits is cancelled (raised by the effect, not by the run's caller)."""
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.lowlevel.checkpoint()
        except anyio.get_cancelled_exc_class() as cancelled:
            return cancelled
    raise AssertionError("the cancelled scope delivered no cancellation")


async def an_interruption(kind: str) -> BaseException:
    return (
        KeyboardInterrupt("interrupted") if kind == "KeyboardInterrupt" else await a_cancellation()
    )


INTERRUPTIONS = ["KeyboardInterrupt", "cancellation"]
UNDO_MODES = pytest.mark.parametrize(
    "concurrent_compensation", [False, True], ids=["sequential undo", "concurrent undo"]
)


class InterruptScenario:
    """reserve, then par(pay, pack), then ship. pack completes first; pay waits for it. One
    effect or listener raises `interruption` (`where`); pack's compensation waits on the clock,
    so under concurrent undo it is still running when pay's is interrupted."""

    def __init__(self, interruption: BaseException, where: str) -> None:
        self.interruption = interruption
        self.where = where
        self.log: list[str] = []
        self.events: list[Event] = []
        self.packed = anyio.Event()
        self.attempts = 0

    def undo(self, name: str) -> Callable[[str], Any]:
        async def compensate(_: str) -> None:
            self.log.append(f"undo {name} started")
            await anyio.sleep(0.001)
            await anyio.lowlevel.checkpoint()
            self.log.append(f"undo {name} finished")

        return compensate

    async def pack(self) -> str:
        await anyio.lowlevel.checkpoint()
        self.packed.set()
        return "P-1"

    async def pay(self) -> str:
        await self.packed.wait()
        self.attempts += 1
        if self.where == "action":
            raise self.interruption
        if self.where == "retry wait" and self.attempts == 1:
            raise Declined("try again")
        return "C-1"

    async def refund(self, _: str) -> None:
        self.log.append("undo pay started")
        await anyio.lowlevel.checkpoint()
        if self.where == "compensation":
            raise self.interruption
        self.log.append("undo pay finished")

    async def sleep(self, _: float) -> None:
        if self.where == "retry wait":
            raise self.interruption

    def listen(self, event: Event) -> None:
        self.events.append(event)
        path = getattr(event, "path", "")
        if path == "pay" and (
            (self.where == "listener" and isinstance(event, StepCompleted))
            or (self.where == "undo listener" and isinstance(event, CompensationStarted))
        ):
            raise self.interruption

    def saga(self, *, ship_fails: bool) -> Saga[object]:
        async def ship() -> str:
            await anyio.lowlevel.checkpoint()
            if ship_fails:
                raise Declined("no courier")
            return "shipped"

        return (
            step(lambda: "R-1", self.undo("reserve"), name="reserve")
            .then(
                par(
                    step(self.pay, self.refund, name="pay", retry=Retry(2, delay=1.0)),
                    step(self.pack, self.undo("pack"), name="pack"),
                )
            )
            .then(step(ship, name="ship"))
        )

    async def run(self, *, ship_fails: bool, concurrent_compensation: bool) -> BaseException:
        """Run the saga; return what came out of it (it must raise the interruption)."""
        interpreter = AsyncInterpreter(
            listeners=[self.listen],
            sleep=self.sleep,
            concurrent_compensation=concurrent_compensation,
        )
        with anyio.fail_after(GUARD):
            try:
                await self.saga(ship_fails=ship_fails).run(interpreter, saga_id="order-1")
            except BaseException as raised:
                return raised
        raise AssertionError("the run returned though it was interrupted")

    def outcome(self) -> Outcome[object]:
        [finished] = [event for event in self.events if isinstance(event, SagaFinished)]
        return finished.outcome


@UNDO_MODES
@pytest.mark.parametrize("interruption_kind", INTERRUPTIONS)
@pytest.mark.parametrize("where", ["compensation", "undo listener"])
@pytest.mark.anyio
async def test_an_interrupted_compensation_cuts_no_other_short_and_then_propagates_itself(
    concurrent_compensation: bool, interruption_kind: str, where: str
) -> None:
    """Pay's compensation (or a listener as it starts) is interrupted while pack's runs: pay's
    has failed for good, pack's and reserve's run to their end, in both undo modes, and the
    interruption itself comes out of the run, with its note (rule 8). Concurrent undo used to
    cancel pack's compensation halfway and report it failed; on asyncio it let a
    CancelledError vanish and returned normally, and let a KeyboardInterrupt escape the loop."""
    interruption = await an_interruption(interruption_kind)
    scenario = InterruptScenario(interruption, where)

    raised = await scenario.run(ship_fails=True, concurrent_compensation=concurrent_compensation)

    assert raised is interruption
    assert raised.__notes__[-1].startswith("fsaga: saga order-1 interrupted; saga failed: ")
    outcome = scenario.outcome()
    assert isinstance(outcome, PartialFailure)
    assert isinstance(outcome.error, Declined)
    assert sorted(outcome.compensated) == ["pack", "reserve"]
    assert outcome.failed_compensations == (CompensationFailure("pay", interruption, 1),)
    for name in ("pack", "reserve"):
        assert f"undo {name} finished" in scenario.log
    assert "undo pay finished" not in scenario.log


@UNDO_MODES
@pytest.mark.parametrize("interruption_kind", INTERRUPTIONS)
@pytest.mark.parametrize(
    ("where", "compensated", "unresolved"),
    [
        ("action", ["pack", "reserve"], ("pay",)),
        ("retry wait", ["pack", "reserve"], ()),
        ("listener", ["pack", "pay", "reserve"], ()),
    ],
)
@pytest.mark.anyio
async def test_an_interruption_in_a_par_branch_propagates_itself_not_an_exception_group(
    concurrent_compensation: bool,
    interruption_kind: str,
    where: str,
    compensated: list[str],
    unresolved: tuple[str, ...],
) -> None:
    """An interruption raised in a `par` branch (by the action, by the wait before its retry, by
    a listener as it completes) comes out of the run as itself, with its note, after the undo:
    under trio it used to come out wrapped in a BaseExceptionGroup (missed by ``except
    KeyboardInterrupt``), under asyncio a KeyboardInterrupt escaped the event loop and a
    CancelledError vanished with its task (the run returned normally)."""
    interruption = await an_interruption(interruption_kind)
    scenario = InterruptScenario(interruption, where)

    raised = await scenario.run(ship_fails=False, concurrent_compensation=concurrent_compensation)

    assert raised is interruption
    assert raised.__notes__[-1].startswith("fsaga: saga order-1 interrupted; saga failed: ")
    outcome = scenario.outcome()
    assert not isinstance(outcome, Success)
    assert outcome.error is interruption
    assert sorted(outcome.compensated) == compensated
    assert (outcome.unresolved if isinstance(outcome, PartialFailure) else ()) == unresolved
    assert not any(
        isinstance(event, StepStarted) and event.path == "ship" for event in scenario.events
    )


@UNDO_MODES
@pytest.mark.anyio
async def test_a_second_interruption_in_the_undo_fails_its_compensation_and_the_first_propagates(
    concurrent_compensation: bool,
) -> None:
    """Two compensations interrupted: both have failed for good, reserve's still runs, and the
    first interruption propagates. Sequential undo used to let the second escape, leaving
    reserve's compensation unrun and no SagaFinished."""
    first, second = KeyboardInterrupt("first"), KeyboardInterrupt("second")
    interruptions = {"pay": first, "pack": second}
    log: list[str] = []
    events: list[Event] = []

    def interrupted(name: str) -> Callable[[str], Any]:
        async def compensate(_: str) -> None:
            await anyio.lowlevel.checkpoint()
            raise interruptions[name]

        return compensate

    saga = (
        step(lambda: "R-1", lambda _: log.append("unreserve"), name="reserve")
        .then(
            par(
                step(lambda: "C-1", interrupted("pay"), name="pay"),
                step(lambda: "P-1", interrupted("pack"), name="pack"),
            )
        )
        .then(step(failing_after_checkpoint(Declined()), name="ship"))
    )
    interpreter = AsyncInterpreter(
        listeners=[events.append], concurrent_compensation=concurrent_compensation
    )

    with pytest.raises(KeyboardInterrupt) as raised:
        await saga.run(interpreter)

    assert raised.value in (first, second)
    assert log == ["unreserve"]
    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    outcome = finished.outcome
    assert isinstance(outcome, PartialFailure)
    assert outcome.compensated == ("reserve",)
    assert sorted(outcome.failed_compensations, key=lambda failure: failure.path) == [
        CompensationFailure("pack", second, 1),
        CompensationFailure("pay", first, 1),
    ]
    assert raised.value is outcome.failed_compensations[0].error


class ListenerInterruptsTheUndo:
    """reserve, then par(pay, charge): charge fails once pay has gone (`paid` is set). A
    listener raises a KeyboardInterrupt on one event of pay's undo (`event`, at `attempt`).
    reserve's compensation waits for pay's record in the reverse causal order, so it runs only
    if that record is settled."""

    def __init__(self, event: type[Event], attempt: int) -> None:
        self.event = event
        self.attempt = attempt
        self.interruption = KeyboardInterrupt("listener")
        self.events: list[Event] = []
        self.undone: list[str] = []
        self.paid = anyio.Event()

    async def charge(self) -> str:
        await self.paid.wait()
        await anyio.lowlevel.checkpoint()
        raise Declined("card declined")

    def listen(self, event: Event) -> None:
        self.events.append(event)
        if (
            isinstance(event, self.event)
            and getattr(event, "path", None) == "pay"
            and getattr(event, "attempt", None) == self.attempt
        ):
            raise self.interruption

    async def run(self, saga: Saga[object], *, concurrent_compensation: bool) -> Outcome[object]:
        interpreter = AsyncInterpreter(
            listeners=[self.listen],
            concurrent_compensation=concurrent_compensation,
            on_branch_failure="cancel",
        )
        with anyio.fail_after(GUARD), pytest.raises(KeyboardInterrupt) as raised:
            await saga.run(interpreter)
        assert raised.value is self.interruption
        assert self.undone[-1:] == ["reserve"]
        finished = self.events[-1]
        assert isinstance(finished, SagaFinished)
        return finished.outcome

    def saga(self, pay: Saga[object]) -> Saga[object]:
        return step(lambda: "R-1", lambda _: self.undone.append("reserve"), name="reserve").then(
            par(pay, step(self.charge, name="charge"))
        )


@UNDO_MODES
@pytest.mark.parametrize(
    ("event", "refund_fails", "failed_with"),
    [
        (CompensationCompleted, 0, None),
        (CompensationFailed, 2, Declined),
        (CompensationRetrying, 1, KeyboardInterrupt),
    ],
)
@pytest.mark.anyio
async def test_a_listener_interrupting_as_a_compensation_ends_strands_none_waiting_for_it(
    concurrent_compensation: bool,
    event: type[Event],
    refund_fails: int,
    failed_with: type[BaseException] | None,
) -> None:
    """A listener interrupts as pay's compensation is reported (completed, failed, about to be
    retried): pay's record is settled all the same, and reserve's compensation, which waits for
    it, still runs. Concurrent undo used to leave reserve's compensation never run and never
    reported; a compensation interrupted before its retry used to vanish from the outcome."""
    scenario = ListenerInterruptsTheUndo(event, 2 if event is CompensationFailed else 1)
    attempts = 0

    def refund(_: str) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= refund_fails:
            raise Declined(f"refund attempt {attempts}")
        scenario.undone.append("pay")

    async def pay() -> str:
        await anyio.lowlevel.checkpoint()
        scenario.paid.set()
        return "C-1"

    paying = step(pay, refund, name="pay", compensation_retry=Retry(2, delay=0))
    outcome = await scenario.run(
        scenario.saga(paying), concurrent_compensation=concurrent_compensation
    )

    assert not isinstance(outcome, Success)
    assert "reserve" in outcome.compensated
    failures = outcome.failed_compensations if isinstance(outcome, PartialFailure) else ()
    if failed_with is None:
        assert set(outcome.compensated) == {"pay", "reserve"}
        assert failures == ()
    else:
        [failure] = failures
        assert (failure.path, type(failure.error)) == ("pay", failed_with)


@UNDO_MODES
@pytest.mark.parametrize(
    ("event", "run_again_fails", "reported"),
    [
        (StepStarted, False, "unresolved"),
        (StepCompleted, False, "failed"),
        (StepFailed, True, "unresolved"),
    ],
)
@pytest.mark.anyio
async def test_a_listener_interrupting_the_run_again_of_an_unknown_outcome_reports_it(
    concurrent_compensation: bool, event: type[Event], run_again_fails: bool, reported: str
) -> None:
    """pay is cancelled when charge fails, so its outcome is unknown; being idempotent, it is
    run again during the undo. A listener interrupts as that run-again starts, completes or
    fails: pay is reported (unresolved, or its compensation failed with the interrupt), and
    reserve's compensation still runs. Both used to be lost: pay vanished from the outcome, and
    under concurrent undo reserve's compensation never ran."""
    scenario = ListenerInterruptsTheUndo(event, 2)

    async def pay() -> str:
        attempt = current_context().attempt
        if attempt == 1:
            scenario.paid.set()
            await hang()  # until charge's failure cancels it
        await anyio.lowlevel.checkpoint()
        if run_again_fails:
            raise Declined("gateway down")
        return "C-1"

    saga = scenario.saga(
        step(pay, lambda _: scenario.undone.append("pay"), name="pay", idempotent=True)
    )

    outcome = await scenario.run(saga, concurrent_compensation=concurrent_compensation)

    assert isinstance(outcome, PartialFailure)
    assert outcome.compensated == ("reserve",)
    if reported == "unresolved":
        assert (outcome.unresolved, outcome.failed_compensations) == (("pay",), ())
    else:
        assert outcome.unresolved == ()
        assert outcome.failed_compensations == (
            CompensationFailure("pay", scenario.interruption, 1),
        )


@pytest.mark.parametrize(
    "cut_off_by", ["UnknownOutcomeError", "its timeout", "a failed sibling", "an interrupt"]
)
@pytest.mark.anyio
async def test_a_listener_interrupting_as_a_step_is_left_unknown_keeps_it_in_the_undo(
    cut_off_by: str,
) -> None:
    """charge's outcome becomes unknown, and a listener interrupts on that StepFailed event:
    charge is still reported unresolved. The engine used to record the unknown outcome after the
    event, so the interrupt made the undo forget it (under SyncInterpreter too)."""
    events: list[Event] = []
    started = anyio.Event()

    def listen(event: Event) -> None:
        events.append(event)
        if isinstance(event, StepFailed) and event.path == "charge" and event.unknown:
            raise KeyboardInterrupt("listener")

    async def charge() -> str:
        started.set()
        await anyio.lowlevel.checkpoint()
        if cut_off_by == "UnknownOutcomeError":
            raise UnknownOutcomeError("no answer from the gateway")
        if cut_off_by == "an interrupt":
            raise KeyboardInterrupt("Ctrl-C")
        await hang()

    async def ship() -> str:
        await started.wait()
        await anyio.lowlevel.checkpoint()
        raise Declined("no courier")

    timeout = TINY if cut_off_by == "its timeout" else None
    charging = step(charge, lambda _: None, name="charge", timeout=timeout)
    if cut_off_by == "a failed sibling":
        charging = par(charging, step(ship, name="ship"))
    saga = step(lambda: "R-1", lambda _: None, name="reserve").then(charging)

    with anyio.fail_after(GUARD), pytest.raises(KeyboardInterrupt):
        await saga.run(AsyncInterpreter(listeners=[listen], on_branch_failure="cancel"))

    finished = events[-1]
    assert isinstance(finished, SagaFinished)
    outcome = finished.outcome
    assert isinstance(outcome, PartialFailure)
    assert (outcome.compensated, outcome.unresolved) == (("reserve",), ("charge",))


@pytest.mark.anyio
async def test_a_cancelled_sibling_completing_anyway_reports_its_compensations_own_timeout() -> (
    None
):
    """With ``on_branch_failure="cancel"``, pack (in a worker thread, which cannot be interrupted)
    is cancelled when charge fails but completes anyway, so it is compensated. Its compensation
    then runs past its own ``compensation_timeout``: that is a StepTimeoutError naming the
    compensation timeout, not a BranchCancelledError (the cancellation mark of pack's action
    used to stay on the call the engine reuses for its compensation)."""
    packing = threading.Event()
    charge_failed = threading.Event()
    events: list[Event] = []

    def pack() -> str:
        packing.set()
        charge_failed.wait(GUARD)  # a backstop only: charge sets it at once
        return "parcel"

    async def unpack(_: str) -> None:
        await hang()

    async def charge() -> str:
        await anyio.to_thread.run_sync(packing.wait, GUARD)
        charge_failed.set()  # pack's task cannot resume before this task has cancelled it
        raise Declined("card declined")

    saga = par(
        step(charge, name="charge"),
        step(in_worker_thread(pack), unpack, name="pack", compensation_timeout=TINY),
    )

    # No fail_after: trio's mock clock would jump to it while a worker thread runs.
    outcome = await saga.run(
        AsyncInterpreter(on_branch_failure="cancel", listeners=[events.append])
    )

    assert isinstance(outcome, PartialFailure)
    assert isinstance(outcome.error, Declined)
    [completed] = [event for event in events if isinstance(event, StepCompleted)]
    assert (completed.path, completed.result) == ("pack", "parcel")
    [failure] = outcome.failed_compensations
    assert (failure.path, failure.attempts) == ("pack", 1)
    assert timeout_fields(failure.error) == ("pack", 1, TINY, "compensation", None, True)


# -- rule 9: events -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_timed_out_run_emits_every_transition_in_order() -> None:
    ledger = Ledger()
    events: list[Event] = []
    saga = ledger.step("reserve").then(ledger.step("charge", hangs=True, timeout=TINY))

    outcome = await saga.run(AsyncInterpreter(listeners=[events.append]), saga_id="s-1")

    assert shape(events) == [
        ("SagaStarted", "", 0),
        ("StepStarted", "reserve", 1),
        ("StepCompleted", "reserve", 1),
        ("StepStarted", "charge", 1),
        ("StepFailed", "charge", 1),
        ("CompensationStarted", "reserve", 1),
        ("CompensationCompleted", "reserve", 1),
        ("SagaFinished", "", 0),
    ]
    assert {event.saga_id for event in events} == {"s-1"}
    started, finished = events[0], events[-1]
    assert isinstance(started, SagaStarted)
    assert isinstance(finished, SagaFinished)
    assert finished.outcome == outcome
    completed = events[2]
    assert isinstance(completed, StepCompleted)
    assert (completed.result, completed.compensable) == ("reserve", True)
    failed = events[4]
    assert isinstance(failed, StepFailed)
    assert failed.unknown is True
    assert isinstance(outcome, PartialFailure)
    assert failed.error is outcome.error
    assert isinstance(events[5], CompensationStarted)
    assert isinstance(events[6], CompensationCompleted)


@pytest.mark.anyio
async def test_an_ordinary_failure_is_not_unknown() -> None:
    events: list[Event] = []
    error = Declined()

    await run(step(failing_after_checkpoint(error), name="charge"), listeners=[events.append])

    [failed] = [event for event in events if isinstance(event, StepFailed)]
    assert (failed.path, failed.error, failed.unknown) == ("charge", error, False)


@pytest.mark.anyio
async def test_listeners_that_raise_are_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = Ledger()
    heard: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    saga = ledger.step("reserve").then(ledger.step("charge", hangs=True, timeout=TINY))

    with caplog.at_level(logging.ERROR, logger=ENGINE_LOGGER):
        outcome = await run(saga, listeners=[broken, heard.append])

    assert isinstance(outcome, PartialFailure)
    assert (outcome.compensated, outcome.unresolved) == (("reserve",), ("charge",))
    assert ledger.log == ["reserve", "charge", "undo reserve"]
    assert len(heard) == 8
    records = [record for record in caplog.records if record.name == ENGINE_LOGGER]
    assert len(records) == len(heard)
    assert all("listener" in record.getMessage() for record in records)


# -- custom perform functions -------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_async_perform_receives_effects_and_may_fake_their_results() -> None:
    seen: list[tuple[str, str, int, str, object]] = []
    really_ran: list[str] = []
    error = Declined("charge refused")

    async def perform(effect: Effect) -> object:
        await anyio.lowlevel.checkpoint()
        seen.append(
            (effect.kind, effect.path, effect.attempt, effect.idempotency_key, effect.argument)
        )
        if effect.kind == "action" and effect.path == "reserve":
            return "R-fake"
        if effect.kind == "action" and effect.path == "charge":
            raise error
        return effect.run()

    def reserve() -> str:
        really_ran.append("reserve")
        return "R-1"

    def charge() -> str:
        really_ran.append("charge")
        return "C-1"

    saga = step(reserve, lambda r: really_ran.append(f"unreserve {r}")).then(step(charge))

    outcome = await saga.run(AsyncInterpreter(perform=perform), saga_id="s-1")

    assert outcome == Failure(error, ("reserve",))
    assert seen == [
        ("action", "reserve", 1, "s-1/reserve", None),
        ("action", "charge", 1, "s-1/charge", None),
        ("compensation", "reserve", 1, "s-1/reserve", "R-fake"),
    ]
    assert really_ran == ["unreserve R-fake"]


@pytest.mark.anyio
async def test_perform_may_await_the_real_async_effect_and_sees_retries() -> None:
    seen: list[tuple[str, int]] = []

    async def charge() -> str:
        await anyio.lowlevel.checkpoint()
        if current_context().attempt == 1:
            raise Declined("flaky")
        return "charged"

    async def perform(effect: Effect) -> object:
        seen.append((effect.path, effect.attempt))
        return effect.run()  # an awaitable: the interpreter awaits it

    saga = step(charge, name="charge", retry=Retry(2, delay=0))

    assert await run(saga, perform=perform) == Success("charged")
    assert seen == [("charge", 1), ("charge", 2)]


@pytest.mark.anyio
async def test_perform_receives_the_step_context_for_an_unknown_outcome() -> None:
    seen: list[Effect] = []

    async def perform(effect: Effect) -> object:
        seen.append(effect)
        if effect.kind == "action":
            await hang()
        return None

    saga: Saga[object] = step(hang, name="charge", timeout=TINY, on_unknown=lambda _: None)

    outcome = await saga.run(AsyncInterpreter(perform=perform), saga_id="s-1")

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("charge",)
    assert [(effect.kind, effect.path, effect.attempt) for effect in seen] == [
        ("action", "charge", 1),
        ("unknown", "charge", 1),
    ]
    assert seen[1].argument == StepContext("s-1", "charge", 1, "unknown")


# -- the interpreter itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        pytest.param({"timeout": 0}, ValueError, "timeout", id="timeout-zero"),
        pytest.param({"timeout": -1.0}, ValueError, "timeout", id="timeout-negative"),
        pytest.param({"timeout": True}, TypeError, "timeout", id="timeout-bool"),
        pytest.param({"timeout": float("inf")}, ValueError, "timeout", id="timeout-inf"),
        pytest.param({"on_branch_failure": "abandon"}, ValueError, "on_branch_failure", id="obf"),
        pytest.param(
            {"concurrent_compensation": 1}, TypeError, "concurrent_compensation", id="cc-int"
        ),
        pytest.param({"perform": 3}, TypeError, "perform must be callable", id="perform"),
        pytest.param({"sleep": 3}, TypeError, "sleep must be callable", id="sleep"),
        pytest.param({"listeners": [3]}, TypeError, "listener", id="listener"),
    ],
)
def test_bad_interpreter_options_are_rejected_naming_the_interpreter(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        AsyncInterpreter(**options)

    assert str(raised.value).startswith("AsyncInterpreter: ")


@pytest.mark.anyio
async def test_one_interpreter_runs_many_sagas_concurrently_and_independently() -> None:
    first_ready = anyio.Event()
    second_ready = anyio.Event()
    interpreter = AsyncInterpreter()
    results: dict[str, Outcome[object]] = {}

    async def first() -> str:
        first_ready.set()
        await second_ready.wait()
        return current_context().idempotency_key

    async def second() -> str:
        second_ready.set()
        await first_ready.wait()
        return current_context().idempotency_key

    async def run_one(saga: Saga[object], saga_id: str) -> None:
        results[saga_id] = await saga.run(interpreter, saga_id=saga_id)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as group:
            group.start_soon(run_one, step(first, name="x"), "one")
            group.start_soon(run_one, step(second, name="x"), "two")

    assert results == {"one": Success("one/x"), "two": Success("two/x")}


@pytest.mark.anyio
async def test_a_failed_compensation_under_async_is_reported_like_under_sync() -> None:
    error = Declined()
    broken = RuntimeError("refund service down")

    async def refund(_: str) -> None:
        await anyio.lowlevel.checkpoint()
        raise broken

    saga = (
        step(lambda: "R-1", lambda _: None, name="reserve")
        .then(step(lambda: "C-1", refund, name="charge"))
        .then(step(failing_after_checkpoint(error), name="ship"))
    )

    outcome = await run(saga)

    assert outcome == PartialFailure(
        error, ("reserve",), (CompensationFailure("charge", broken, 1),)
    )
