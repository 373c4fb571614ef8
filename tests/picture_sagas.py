"""The sagas and runs that tests/test_pictures.py and tests/test_pictures_page.py draw.

Every run here is deterministic: the recording interpreters' clocks tick one second per reading,
failures come from fault plans or from the effects themselves, and the journal timelines are
written out entry by entry (as a durable run would record them), so each picture is the same on
every machine and its golden file can be compared byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

import anyio

from fsaga import Retry, Saga, par, pure, step, traverse
from fsaga.durable import SagaDefinitions
from fsaga.events import Event
from fsaga.journal import Entry, EntryKind, JsonCodec, SagaRecord, SagaStatus
from fsaga.pictures import RunTrace, trace_of_events, trace_of_journal
from fsaga.testing import (
    AsyncFaultInjectingInterpreter,
    FaultInjectingInterpreter,
    FaultPlan,
    RecordingInterpreter,
)

CODEC = JsonCodec()


class Declined(Exception):
    """The card was refused."""


class NoTruck(Exception):
    """No truck is free."""


def reserve() -> str:
    return "R-1"


def release(reservation: str) -> None:
    pass


def charge() -> int:
    return 4200


def refund(cents: int) -> None:
    pass


def pack() -> str:
    return "box-7"


def unpack(box: str) -> None:
    pass


def label() -> str:
    return "L-9"


def void_label(label_id: str) -> None:
    pass


def ship() -> str:
    raise NoTruck("no truck before Monday")


def notify() -> None:
    pass


def book_courier(box: str) -> Saga[str]:
    return step(lambda: f"courier for {box}", name="courier")


def report_unknown(context: object) -> None:
    pass


# -- plans -----------------------------------------------------------------------------------


def chain_plan() -> Saga[Any]:
    """A `then` chain: compensations, a retry policy, a step with nothing to undo."""
    return (
        step(reserve, release, retry=Retry(3, delay=0.2, backoff=2.0))
        .then(step(charge, refund, name="charge"))
        .then(step(notify))
    )


def shipping() -> Saga[str]:
    return step(pack, unpack).then(step(label, void_label)).named("shipping")


def par_plan() -> Saga[Any]:
    """``par`` with a named step, a branch of two unnamed steps, a named sub-saga and a value."""
    return step(reserve, release).then(
        par(
            step(charge, refund, name="charge"),
            step(lambda: 1).then(step(lambda: 2)),
            shipping(),
            pure("nothing to do"),
        )
    )


def nested_plan() -> Saga[Any]:
    """Named sub-sagas inside named sub-sagas, one holding a ``par``."""
    payment = step(charge, refund, name="charge").then(step(notify, name="receipt"))
    fulfilment = par(shipping(), step(notify, name="tell-warehouse")).named("fulfilment")
    return step(reserve, release).then(payment.named("payment")).then(fulfilment).named("order")


def bind_plan() -> Saga[Any]:
    """A ``bind`` continuation (opaque), ``zip`` and ``traverse`` (known), a ``map`` (left out)."""
    items = traverse(["book", "pen"], lambda sku: step(lambda: sku, release, name=f"pick-{sku}"))
    return (
        step(pack, unpack)
        .bind(book_courier)
        .zip(items)
        .map(lambda pair: pair[0])
        .then(step(notify).bind(lambda _: step(notify, name="again")))
    )


def timeouts_plan() -> Saga[Any]:
    """Deadlines and what steps declare about retries, timeouts and unknown outcomes."""
    careful_charge = step(
        charge,
        refund,
        name="charge",
        timeout=2.5,
        retry=Retry(4, delay=0.5, backoff=1.0),
        idempotent=True,
        compensation_retry=Retry(5),
        compensation_timeout=10.0,
    )
    courier = step(lambda: "C-1", name="courier", timeout=0.25, on_unknown=report_unknown)
    return step(reserve, release).then(careful_charge.then(courier).timeout(30)).timeout(60)


PLANS: dict[str, Callable[[], Saga[Any]]] = {
    "plan_chain": chain_plan,
    "plan_par": par_plan,
    "plan_nested": nested_plan,
    "plan_bind": bind_plan,
    "plan_timeouts": timeouts_plan,
}


# -- durable runs ----------------------------------------------------------------------------

definitions = SagaDefinitions()


async def _yielding(value: object) -> object:
    await anyio.sleep(0)
    await anyio.sleep(0)
    return value


async def _undo(value: object) -> None:
    await anyio.sleep(0)


@definitions.saga("branches")
def branches(fail: bool) -> Saga[object]:
    boxes = (
        step(lambda: _yielding("box"), _undo, name="pack")
        .then(step(lambda: _yielding("label"), _undo, name="label"))
        .named("shipping")
    )
    positional = step(lambda: _yielding(1), _undo).then(step(lambda: _yielding(2), _undo))
    last = step(ship) if fail else step(notify)
    return par(step(lambda: _yielding(42), _undo, name="charge"), boxes, positional).then(last)


@definitions.saga("sync-branches")
def sync_branches(_: int) -> Saga[object]:
    boxes = step(pack, unpack, name="pack").named("shipping")
    positional = step(label).then(step(label))
    return par(step(charge, refund, name="charge"), boxes, positional)


# -- runs ------------------------------------------------------------------------------------


def _recorded(saga: Saga[Any], saga_id: str) -> list[Event]:
    recording = RecordingInterpreter()
    saga.run(recording, saga_id=saga_id)
    return recording.events


def _faulty(saga: Saga[Any], saga_id: str, plan: FaultPlan) -> list[Event]:
    interpreter = FaultInjectingInterpreter(plan)
    saga.run(interpreter, saga_id=saga_id)
    return interpreter.events


def chain_success() -> RunTrace:
    """Every step of a chain completes."""
    return trace_of_events(_recorded(chain_plan(), "order-1"))


def par_success() -> RunTrace:
    """The branches of a ``par`` run, each on its lane, and join."""
    return trace_of_events(_recorded(par_plan().then(step(notify)), "order-2"))


def failure() -> RunTrace:
    """A step fails after a ``par``: every completed step is undone, newest first."""
    return trace_of_events(_recorded(par_plan().then(step(ship)), "order-3"))


def retries() -> RunTrace:
    """An action fails twice and is retried; then a step fails, and a compensation that fails
    once is retried by its policy."""
    saga = (
        step(reserve, release, name="reserve", compensation_retry=Retry(2, delay=1.0))
        .then(step(charge, refund, name="charge", retry=Retry(3, delay=0.5, jitter=0.0)))
        .then(step(ship))
    )
    plan = FaultPlan(actions={"charge": 2}, compensations={"reserve": 1})
    return trace_of_events(_faulty(saga, "order-4", plan))


def partial_failure() -> RunTrace:
    """A compensation fails for good: the run ends in `PartialFailure`, the rest still undone."""
    plan = FaultPlan(actions={"ship": 1}, compensations={"shipping/pack": 1})
    saga = step(reserve, release).then(shipping()).then(step(ship_ok, name="ship"))
    return trace_of_events(_faulty(saga, "order-5", plan))


def ship_ok() -> str:
    return "shipped"


def nested_bind() -> RunTrace:
    """A run through named sub-sagas and a ``bind`` continuation, failing inside the bound saga."""
    saga = nested_plan().bind(lambda _: step(ship).named("dispatch"))
    return trace_of_events(_recorded(saga, "order-6"))


def timeouts() -> RunTrace:
    """Under the async interpreter: an idempotent charge's first attempt hangs past its timeout
    and is retried; the courier's hangs too, its outcome unknown, handed to ``on_unknown``."""
    saga = (
        step(reserve, release)
        .then(step(charge, refund, name="charge", timeout=0.01, idempotent=True))
        .then(step(lambda: "C-1", name="courier", timeout=0.01, on_unknown=report_unknown))
    )
    interpreter = AsyncFaultInjectingInterpreter(FaultPlan(hangs={"charge": 1, "courier": 1}))

    async def run() -> None:
        await saga.run(interpreter, saga_id="order-7")

    anyio.run(run)
    return trace_of_events(interpreter.events)


def _record(saga_id: str, status: SagaStatus, outcome: object | None) -> SagaRecord:
    encoded = None if outcome is None else CODEC.encode(outcome)
    return SagaRecord(saga_id, "order", 1, CODEC.encode({"sku": "book"}), status, encoded, 0, 0, 0)


_NOTHING: Final = object()


def _e(kind: EntryKind, path: str, attempt: int = 1, payload: object = _NOTHING) -> Entry:
    """An entry, numbered 0 until `_timeline` numbers it."""
    data = None if payload is _NOTHING else CODEC.encode(payload)
    return Entry(1, kind, path, attempt, data)


def _timeline(*entries: Entry) -> list[Entry]:
    return [replace(entry, seq=seq) for seq, entry in enumerate(entries, start=1)]


def journal_concurrent_failure() -> RunTrace:
    """A durable run of ``par`` branches under the async interpreter, as its journal recorded
    it: the named branches' steps interleave (so each gets a lane), a positional branch has its
    scope, and one branch fails."""
    entries = _timeline(
        _e("intent", "reserve", 1),
        _e("completed", "reserve", 1, "R-1"),
        _e("intent", "charge", 1),
        _e("intent", "shipping/pack", 1),
        _e("intent", "#2/step", 1),
        _e("intent", "ship", 1),
        _e("completed", "charge", 1, 4200),
        _e("completed", "shipping/pack", 1, "box-7"),
        _e("intent", "shipping/label", 1),
        _e("completed", "#2/step", 1, 1),
        _e("failed", "ship", 1, ["tests:NoTruck", "NoTruck", "no truck before Monday"]),
        _e("completed", "shipping/label", 1, "L-9"),
        _e("compensation_intent", "shipping/label", 1),
        _e("compensated", "shipping/label", 1),
        _e("compensation_intent", "#2/step", 1),
        _e("compensated", "#2/step", 1),
        _e("compensation_intent", "shipping/pack", 1),
        _e("compensated", "shipping/pack", 1),
        _e("compensation_intent", "charge", 1),
        _e("compensated", "charge", 1),
        _e("compensation_intent", "reserve", 1),
        _e("compensated", "reserve", 1),
    )
    outcome = {
        "kind": "failure",
        "error": ["tests:NoTruck", "NoTruck", "no truck before Monday"],
        "compensated": ["shipping/label", "#2/step", "shipping/pack", "charge", "reserve"],
    }
    return trace_of_journal(_record("durable-1", "failed", outcome), entries)


def journal_unfinished() -> RunTrace:
    """A durable run whose process stopped: a retried step, then a step in flight."""
    entries = _timeline(
        _e("intent", "reserve", 1),
        _e("completed", "reserve", 1, "R-1"),
        _e("intent", "charge", 1),
        _e("failed", "charge", 1, ["tests:Declined", "Declined", "try again"]),
        _e("intent", "charge", 2),
        _e("completed", "charge", 2, 4200),
        _e("intent", "ship", 1),
    )
    return trace_of_journal(_record("durable-2", "running", None), entries)


TRACES: dict[str, Callable[[], RunTrace]] = {
    "trace_chain_success": chain_success,
    "trace_par_success": par_success,
    "trace_failure": failure,
    "trace_retries": retries,
    "trace_partial_failure": partial_failure,
    "trace_nested_bind": nested_bind,
    "trace_timeouts": timeouts,
    "journal_concurrent_failure": journal_concurrent_failure,
    "journal_unfinished": journal_unfinished,
}
