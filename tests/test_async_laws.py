"""`assert_async_compensation_laws`: the compensation laws on a user's async saga, in one call.

It must pass on well-behaved sagas (the engine keeps the rules), under asyncio and trio, and it
must report a broken rule: since a legitimate saga cannot make the engine break one, the broken
rules here are planted by replacing the check the function relies on.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Literal

import anyio
import pytest

import fsaga.testing.laws as laws
from fsaga import Outcome, Retry, Saga, StepContext, current_context, par, pure, step
from fsaga.testing import AsyncFaultInjectingInterpreter, check_run
from fsaga.testing.properties import Trace
from fsaga.testing.strategies import assert_async_compensation_laws

Backend = Literal["asyncio", "trio"]
BACKENDS: tuple[Backend, ...] = ("asyncio", "trio")


class Warehouse:
    """In-memory stock and payments, fresh for every run."""

    def __init__(self) -> None:
        self.stock = 10
        self.payments: dict[str, int] = {}
        self.parcels: list[str] = []

    async def reserve(self) -> int:
        await anyio.sleep(0)
        self.stock -= 1
        return 1

    async def release(self, quantity: int) -> None:
        await anyio.sleep(0)
        self.stock += quantity

    async def charge(self) -> str:
        key = current_context().idempotency_key
        self.payments[key] = 5
        return key

    def refund(self, key: str) -> None:
        self.payments.pop(key, None)

    def void(self, context: StepContext) -> None:
        self.payments.pop(context.idempotency_key, None)

    def pack(self) -> str:
        self.parcels.append("parcel")
        return "parcel"

    def unpack(self, parcel: str) -> None:
        self.parcels.remove(parcel)


def make_order() -> Saga[object]:
    """Positional `par` branches (paths ``#0/...``, ``#1/...``): concurrent undo is checkable."""
    warehouse = Warehouse()
    payment = step(
        warehouse.charge,
        warehouse.refund,
        name="charge",
        timeout=5.0,
        retry=Retry(2, delay=0.5, jitter=0.0),
        idempotent=True,
        on_unknown=warehouse.void,
    )
    return (
        par(step(warehouse.reserve, warehouse.release), pure(0).then(payment))
        .then(step(warehouse.pack, warehouse.unpack, name="pack"))
        .then(step(lambda: "sent", name="notify"))
    )


def make_named_order() -> Saga[object]:
    """Named `par` branches: their paths do not show that they run side by side."""
    warehouse = Warehouse()
    return (
        par(
            step(warehouse.reserve, warehouse.release, name="reserve"),
            step(warehouse.charge, warehouse.refund, name="charge", timeout=5.0),
        )
        .named("order")
        .then(step(warehouse.pack, warehouse.unpack, name="pack"))
    )


class CheckedRuns:
    """Stands in for `check_run`: checks for real, and remembers what each run exercised."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()

    def __call__(
        self, trace: Trace, outcome: Outcome[object], *, concurrent_compensation: bool = False
    ) -> None:
        check_run(trace, outcome, concurrent_compensation=concurrent_compensation)
        assert isinstance(trace, AsyncFaultInjectingInterpreter)
        self.runs["all"] += 1
        self.runs["concurrent undo" if concurrent_compensation else "sequential undo"] += 1
        if trace.plan.hangs:
            self.runs["hangs"] += 1
        if trace.interrupted:
            self.runs["interrupted"] += 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_laws_hold_for_an_async_saga_with_par(backend: Backend) -> None:
    assert_async_compensation_laws(make_order, max_examples=60, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_laws_hold_for_named_par_branches(backend: Backend) -> None:
    assert_async_compensation_laws(make_named_order, max_examples=40, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_runs_exercise_every_option_hangs_only_on_virtual_time(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = CheckedRuns()
    monkeypatch.setattr(laws, "check_run", checked)

    assert_async_compensation_laws(make_order, max_examples=150, backend=backend)

    assert checked.runs["all"] == 150
    assert checked.runs["concurrent undo"] > 0
    assert checked.runs["sequential undo"] > 0
    assert checked.runs["interrupted"] > 0
    if backend == "trio":
        assert checked.runs["hangs"] > 0
    else:
        assert checked.runs["hangs"] == 0


def test_named_par_branches_are_undone_concurrently_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Named branches do not show in paths, but the events' branches tell them apart, so the
    # causal order is checked exactly for them too.
    checked = CheckedRuns()
    monkeypatch.setattr(laws, "check_run", checked)

    assert_async_compensation_laws(make_named_order, max_examples=30)

    assert checked.runs["concurrent undo"] > 0
    assert checked.runs["sequential undo"] > 0


def test_a_broken_rule_surfaces_as_an_assertion_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def nothing_may_be_compensated(
        trace: Trace, outcome: Outcome[object], *, concurrent_compensation: bool = False
    ) -> None:
        compensated = [effect.path for effect in trace.effects if effect.kind == "compensation"]
        assert not compensated, f"planted rule broken: {compensated} compensated"

    monkeypatch.setattr(laws, "check_run", nothing_may_be_compensated)

    with pytest.raises(AssertionError, match="planted rule broken"):
        assert_async_compensation_laws(make_order, max_examples=50)


def test_a_swallowed_cancellation_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend every plan cancelled its run: the runs that were not cancelled then look like
    # runs that swallowed the cancellation.
    monkeypatch.setattr(laws, "_plan_cancelled", lambda interpreter: True)

    with pytest.raises(AssertionError, match="the cancellation did not come out"):
        assert_async_compensation_laws(make_order, max_examples=20)


@pytest.mark.parametrize("backend", BACKENDS)
def test_make_saga_is_called_inside_the_event_loop(backend: Backend) -> None:
    def make_in_a_task() -> Saga[object]:
        anyio.get_current_task()  # raises outside a running event loop
        return make_order()

    assert_async_compensation_laws(make_in_a_task, max_examples=5, backend=backend)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"backend": "curio"}, ValueError, "backend must be 'asyncio' or 'trio', got 'curio'"),
        ({"max_examples": 0}, ValueError, "max_examples must be at least 1, got 0"),
        ({"max_examples": 2.5}, TypeError, "max_examples must be an int, got 2.5"),
        ({"max_examples": True}, TypeError, "max_examples must be an int, got True"),
    ],
)
def test_bad_arguments_are_rejected_before_anything_runs(
    arguments: dict[str, object], error: type[Exception], message: str
) -> None:
    made: list[Saga[object]] = []

    def make_saga() -> Saga[object]:
        made.append(make_order())
        return made[-1]

    with pytest.raises(error, match=message):
        assert_async_compensation_laws(make_saga, **arguments)  # type: ignore[arg-type]
    assert made == []


def test_make_saga_must_be_callable() -> None:
    with pytest.raises(TypeError, match="make_saga must be callable"):
        assert_async_compensation_laws(make_order())  # type: ignore[arg-type]


def test_trio_is_asked_for_only_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trio.testing", None)  # as if trio were not installed

    assert_async_compensation_laws(make_order, max_examples=3)
    with pytest.raises(ImportError, match=r"needs trio: pip install 'fsaga\[trio\]'"):
        assert_async_compensation_laws(make_order, max_examples=3, backend="trio")
