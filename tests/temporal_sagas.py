"""Sagas, activities and the worker of the Temporal tests (tests/test_temporal*.py).

Every effect is a module-level function run as an activity (`fsaga.temporal.activity`) and
records itself in `effects`, by saga id, as ``(kind, path, attempt, argument, result)``, where
``kind`` and the rest come from `fsaga.current_context()`: the same record whether the saga runs
under `SyncInterpreter` in the test's thread or on Temporal in a worker. The worker the tests run
in their own process sends every event to `events`, by saga id.

The generated sagas of the property test are built from the kit's specs
(`fsaga.testing.specs`) with activities (`build_spec`); `plans` holds, per saga id, the
`fsaga.testing.FaultPlan` their activities obey.

Run as a script, it is a worker process of the end-to-end test on the development server::

    python tests/temporal_sagas.py ADDRESS TASK_QUEUE

It prints ``ready`` once it polls, and runs until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, is_dataclass
from dataclasses import fields as dataclass_fields
from itertools import count
from pathlib import Path
from typing import Any, Final

from fsaga import Retry, Saga, StepContext, current_context, par, pure, sequence, step
from fsaga.context import StepContextKind
from fsaga.durable import SagaDefinitions
from fsaga.errors import UnknownOutcomeError
from fsaga.events import Event
from fsaga.temporal import activity
from fsaga.testing import FaultPlan, InjectedFault
from fsaga.testing.specs import (
    RETRY_DELAY,
    STEP_TIMEOUT,
    SUBTREE_TIMEOUT,
    BindSpec,
    ContinuationSpec,
    MapSpec,
    NamedSpec,
    ParSpec,
    PureSpec,
    SagaSpec,
    SequenceSpec,
    StepSpec,
    ThenSpec,
    TimeoutSpec,
)

Record = tuple[StepContextKind, str, int, object, object]
"""An effect that ran: kind, path, attempt, argument (a compensation's), result (or the name of
the error it raised)."""

effects: defaultdict[str, list[Record]] = defaultdict(list)
events: defaultdict[str, list[Event]] = defaultdict(list)
plans: dict[str, FaultPlan] = {}
started: defaultdict[str, threading.Event] = defaultdict(threading.Event)
"""Per saga id, set when its `hold` activity is running."""
attempts: defaultdict[str, int] = defaultdict(int)
"""Per idempotency key, how many times `flaky` and `slow_once` ran."""
serials: defaultdict[str, count[int]] = defaultdict(lambda: count(1))
"""Per saga id, the serial numbers of the generated steps' results: the same in every run of
the same saga, whatever ran before."""

definitions = SagaDefinitions()


class Declined(Exception):
    pass


def listen(event: Event) -> None:
    events[event.saga_id].append(event)


def _record(result: object, argument: object = None) -> None:
    context = current_context()
    effects[context.saga_id].append((context.kind, context.path, context.attempt, argument, result))


# -- activities ----------------------------------------------------------------------------------


def reserve(sku: str, count: int) -> str:
    result = f"R-{sku}-{count}"
    _record(result)
    return result


def release(reservation: str) -> None:
    _record(None, reservation)


def charge(order: str, cents: int, decline: bool) -> str:
    if decline:
        _record("Declined")
        raise Declined(f"card declined for {order}")
    result = f"P-{order}-{cents}"
    _record(result)
    return result


def refund(payment: str) -> None:
    _record(None, payment)


def refuse_refund(payment: str) -> None:
    """A compensation that always fails."""
    _record("ConnectionError", payment)
    raise ConnectionError(f"the bank is down: {payment} not refunded")


def ship(order: str, fail: bool) -> str:
    if fail:
        _record("ConnectionError")
        raise ConnectionError(f"no courier for {order}")
    result = f"S-{order}"
    _record(result)
    return result


def flaky(label: str, failures: int) -> str:
    """Fails its first `failures` attempts (counted by idempotency key)."""
    key = current_context().idempotency_key
    attempts[key] += 1
    if attempts[key] <= failures:
        _record("ConnectionError")
        raise ConnectionError(f"{label}: attempt {attempts[key]} failed")
    result = f"{label}@{attempts[key]}"
    _record(result)
    return result


def note(label: str) -> str:
    _record(label)
    return label


def forget(value: str) -> None:
    _record(None, value)


def void(label: str, context: StepContext) -> None:
    """An unknown-outcome compensation: records the key it was given."""
    _record(context.idempotency_key, label)


async def hold(label: str) -> str:
    """Runs until cancelled (it heartbeats, so a cancellation reaches it)."""
    _record("started")
    started[current_context().saga_id].set()
    await asyncio.Event().wait()
    return label


async def slow_once(label: str) -> str:
    """Its first run (per idempotency key) never returns; later runs return at once."""
    key = current_context().idempotency_key
    attempts[key] += 1
    _record(f"run {attempts[key]}")
    if attempts[key] == 1:
        await asyncio.Event().wait()
    return f"{label} (key {key})"


def unknown(label: str) -> str:
    _record("UnknownOutcomeError")
    raise UnknownOutcomeError(f"{label}: no answer")


def act(label: str) -> str:
    """A generated step's action: fails as the saga's plan says, else returns a fresh value."""
    context = current_context()
    plan = plans.get(context.saga_id, FaultPlan())
    if plan.actions.get(context.path, 0) >= context.attempt:
        _record("InjectedFault")
        raise InjectedFault("action", context.path, context.attempt)
    result = f"{label}:{next(serials[context.saga_id])}"
    _record(result)
    return result


# A generated unnamed step takes its label from its action, as under `build_saga`: one
# activity per label the kit's strategies give unnamed steps (`IMPLICIT_LABELS`).


def a(label: str) -> str:
    return act(label)


def b(label: str) -> str:
    return act(label)


def c(label: str) -> str:
    return act(label)


def undo(received: str) -> None:
    """A generated step's compensation: fails as the saga's plan says."""
    context = current_context()
    plan = plans.get(context.saga_id, FaultPlan())
    if plan.compensations.get(context.path, 0) >= context.attempt:
        _record("InjectedFault", received)
        raise InjectedFault("compensation", context.path, context.attempt)
    _record(None, received)


def void_generated(context: StepContext) -> None:
    _record(None, context.idempotency_key)


def evidence(path: str, label: str) -> str:
    """An effect of the end-to-end test: a line in the evidence file, shared by processes."""
    context = current_context()
    with Path(path).open("a", encoding="utf-8") as file:
        file.write(json.dumps([context.kind, context.path, context.idempotency_key, label]) + "\n")
    return label


async def stall(path: str, label: str) -> str:
    """The end-to-end test's long effect: its first run (per key) leaves evidence and never
    returns, so the worker running it can be killed mid-activity; a later run returns."""
    key = current_context().idempotency_key
    lines = Path(path).read_text(encoding="utf-8").splitlines() if Path(path).exists() else []
    first = not any(json.loads(line)[2] == key for line in lines)
    evidence(path, f"{label} {'started' if first else 'again'}")
    if first:
        await asyncio.Event().wait()
    return label


ACTIVITIES: Final[list[Callable[..., object]]] = [
    reserve,
    release,
    charge,
    refund,
    refuse_refund,
    ship,
    flaky,
    note,
    forget,
    void,
    hold,
    slow_once,
    unknown,
    act,
    a,
    b,
    c,
    undo,
    void_generated,
    evidence,
    stall,
]


# -- sagas -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    order_id: str
    sku: str
    count: int
    cents: int
    decline: bool = False
    no_courier: bool = False


@definitions.saga("order")
def order_saga(order: Order) -> Saga[str]:
    """Reserve, charge, ship: each undone in reverse when a later one fails."""
    return (
        step(activity(reserve, order.sku, order.count), activity(release), name="reserve")
        .then(
            step(
                activity(charge, order.order_id, order.cents, order.decline),
                activity(refund),
                name="charge",
            )
        )
        .then(step(activity(ship, order.order_id, order.no_courier), name="ship"))
    )


@definitions.saga("stubborn")
def stubborn_saga(order: Order) -> Saga[str]:
    """The order saga whose refund always fails, retried on timers, before shipping fails."""
    return (
        step(activity(reserve, order.sku, order.count), activity(release), name="reserve")
        .then(
            step(
                activity(charge, order.order_id, order.cents, False),
                activity(refuse_refund),
                name="charge",
                compensation_retry=Retry(3, delay=30.0, jitter=0.0),
            )
        )
        .then(step(activity(ship, order.order_id, True), name="ship"))
    )


@definitions.saga("parcel")
def parcel_saga(fail: bool) -> Saga[tuple[str, str, str]]:
    """Three branches side by side, then a step that may fail."""
    packed = par(
        step(activity(note, "box"), activity(forget), name="box"),
        step(activity(note, "label"), activity(forget), name="label").then(
            step(activity(note, "stamp"), activity(forget), name="stamp")
        ),
        step(activity(note, "invoice"), activity(forget), name="invoice"),
    )
    return packed.bind(
        lambda parts: step(activity(ship, "parcel", fail), name="send").map(lambda _: parts)
    )


@definitions.saga("retries")
def retries_saga(failures: int) -> Saga[str]:
    """A step that fails `failures` times before it succeeds, retried with backoff."""
    retry = Retry(5, delay=10.0, backoff=2.0, max_delay=600.0, jitter=0.0)
    return step(activity(note, "first"), activity(forget), name="first").then(
        step(activity(flaky, "flaky", failures), retry=retry, name="flaky")
    )


@definitions.saga("timeout")
def timeout_saga(seconds: float) -> Saga[str]:
    """A step whose attempt never returns, bound by a timeout of `seconds`."""
    return step(activity(note, "before"), activity(forget), name="before").then(
        step(activity(hold, "stuck"), activity(forget), name="stuck", timeout=seconds)
    )


@definitions.saga("held")
def held_saga(_: None) -> Saga[str]:
    """Two steps, then one that runs until the workflow is cancelled."""
    return (
        step(activity(note, "a"), activity(forget), name="a")
        .then(step(activity(note, "b"), activity(forget), name="b"))
        .then(step(activity(hold, "c"), activity(forget), name="c", on_unknown=activity(void, "c")))
        .then(step(activity(note, "d"), activity(forget), name="d"))
    )


@definitions.saga("lost")
def lost_saga(_: None) -> Saga[str]:
    """An idempotent step whose first attempt is lost (it outlives the activity timeout)."""
    return step(activity(note, "a"), activity(forget), name="a").then(
        step(activity(slow_once, "b"), activity(forget), name="b", idempotent=True)
    )


@definitions.saga("unanswered")
def unanswered_saga(_: None) -> Saga[str]:
    """A step that cannot tell whether it took effect, handed to its `on_unknown`."""
    return step(activity(note, "a"), activity(forget), name="a").then(
        step(activity(unknown, "b"), activity(forget), name="b", on_unknown=activity(void, "b"))
    )


@definitions.saga("late-lambda")
def late_lambda_saga(_: None) -> Saga[str]:
    """A bind that builds a step whose action is not an activity: refused when reached."""
    return step(activity(note, "a"), activity(forget), name="a").bind(
        lambda value: step(lambda: value.upper(), name="shout")
    )


@definitions.saga("generated")
def generated_saga(spec: str) -> Saga[object]:
    """A saga the property test generated, its spec given as JSON (see `spec_json`)."""
    return build_spec(spec_from_json(spec))


@definitions.saga("siblings")
def siblings_saga(_: None) -> Saga[tuple[str, str, str]]:
    """Three branches: one done at once, one that runs until cancelled, one that fails."""
    return par(
        step(activity(note, "done"), activity(forget), name="done"),
        step(
            activity(hold, "held"), activity(forget), name="held", on_unknown=activity(void, "held")
        ),
        step(activity(ship, "parcel", True), name="send"),
    )


@definitions.saga("killed")
def killed_saga(path: str) -> Saga[str]:
    """The end-to-end test's saga: its middle step stalls until its worker is killed."""
    return (
        step(activity(evidence, path, "reserve"), activity(evidence, path), name="reserve")
        .then(step(activity(stall, path, "charge"), name="charge", idempotent=True))
        .then(step(activity(evidence, path, "ship"), name="ship"))
    )


# -- specs with activities -------------------------------------------------------------------------


def build_spec(spec: SagaSpec) -> Saga[object]:
    """The saga `spec` describes, as `fsaga.testing.specs.build_saga` builds it, but with
    activities (`act`, `undo`, `void_generated`) for its effects."""
    match spec:
        case StepSpec():
            return _step(spec)
        case PureSpec(value=value):
            return pure(value)
        case ThenSpec(first=first, second=second):
            return build_spec(first).then(build_spec(second))
        case SequenceSpec(items=items):
            return sequence(build_spec(item) for item in items)
        case BindSpec(source=source, continuation=continuation):
            return build_spec(source).bind(lambda value: _continue(continuation, value))
        case MapSpec(source=source, tag=tag):
            return build_spec(source).map(lambda value: (tag, value))
        case NamedSpec(name=name, inner=inner):
            return build_spec(inner).named(name)
        case ParSpec(branches=branches):
            return par(*(build_spec(branch) for branch in branches))
        case TimeoutSpec(inner=inner):
            return build_spec(inner).timeout(SUBTREE_TIMEOUT)


def _continue(continuation: ContinuationSpec, value: object) -> Saga[object]:
    return build_spec(continuation.choose(value))


def _step(spec: StepSpec) -> Saga[object]:
    undoable = spec.compensable or spec.on_unknown
    return step(
        activity(_ACTIONS.get(spec.label, act), spec.label),
        activity(undo) if spec.compensable else None,
        name=spec.label if spec.explicit else None,
        retry=_retry(spec.attempts),
        compensation_retry=_retry(spec.compensation_attempts) if undoable else None,
        timeout=STEP_TIMEOUT if spec.timeout else None,
        idempotent=spec.idempotent,
        on_unknown=activity(void_generated) if spec.on_unknown else None,
    )


_ACTIONS: Final = {"a": a, "b": b, "c": c}


def _retry(attempts: int) -> Retry | None:
    if attempts == 1:
        return None
    return Retry(attempts, delay=RETRY_DELAY, backoff=2.0, max_delay=1e6, jitter=0.0)


_SPECS: Final = {
    cls.__name__: cls
    for cls in (
        StepSpec,
        PureSpec,
        ThenSpec,
        SequenceSpec,
        BindSpec,
        ContinuationSpec,
        MapSpec,
        NamedSpec,
        ParSpec,
        TimeoutSpec,
    )
}


def spec_json(spec: object) -> str:
    """A spec as JSON, for the workflow's input."""
    return json.dumps(_plain(spec))


def _plain(value: object) -> object:
    if is_dataclass(value) and type(value).__name__ in _SPECS:
        fields = {item.name: _plain(getattr(value, item.name)) for item in dataclass_fields(value)}
        return {"spec": type(value).__name__, **fields}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def spec_from_json(text: str) -> SagaSpec:
    built = _built(json.loads(text))
    assert not isinstance(built, ContinuationSpec)
    return built  # type: ignore[return-value]


def _built(value: object) -> object:
    if isinstance(value, dict) and "spec" in value:
        cls: Any = _SPECS[value["spec"]]
        fields = {
            name: tuple(_built(item) for item in item_value)
            if isinstance(item_value, list)
            else _built(item_value)
            for name, item_value in value.items()
            if name != "spec"
        }
        return cls(**fields)
    return value


def reset(saga_id: str) -> None:
    serials.pop(saga_id, None)
    effects.pop(saga_id, None)
    events.pop(saga_id, None)
    plans.pop(saga_id, None)


async def _serve(address: str, task_queue: str) -> None:
    from temporalio.client import Client

    from fsaga.temporal import worker

    client = await Client.connect(address)
    running = worker(
        client,
        definitions,
        task_queue=task_queue,
        activities=ACTIVITIES,
        # Without a sticky queue, the next worker gets a dead worker's saga at once.
        config={"max_cached_workflows": 0},
    )
    async with running:
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    address, queue = sys.argv[1:3]
    asyncio.run(_serve(address, queue))
