"""Run 1 to 4 of the demo: the three in-memory services, the order saga, its scenarios and
their reports."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import partial
from typing import final

import anyio

from fsaga.context import StepContext, current_context
from fsaga.events import Event
from fsaga.interpreter.asynchronous import AsyncInterpreter
from fsaga.interpreter.sync import SyncInterpreter
from fsaga.outcome import Failure, Outcome, PartialFailure
from fsaga.policy import Retry
from fsaga.render import describe_outcome, render_timeline
from fsaga.saga import Saga, step

__all__ = [
    "PAYMENT_TIMEOUT",
    "SCENARIOS",
    "CardDeclined",
    "GatewayTimeout",
    "Inventory",
    "OrderRequest",
    "Orders",
    "Payments",
    "Receipt",
    "Reservation",
    "Scenario",
    "ScenarioRun",
    "ServiceUnavailable",
    "Services",
    "SimulatedClock",
    "place_order",
    "place_order_online",
    "report",
    "run_scenario",
]


class GatewayTimeout(Exception):
    """The payment gateway did not answer in time: worth another attempt."""


class CardDeclined(Exception):
    """The bank refused the payment: retrying will not help."""


class ServiceUnavailable(Exception):
    """A service is down."""


PAYMENT_TIMEOUT = 0.05
"""Seconds an attempt to authorise the payment through the gateway's async API may take."""


@final
class SimulatedClock:
    """A clock that only moves when told: service calls and retry waits advance it."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass (a service call taking that long, or a retry's wait)."""
        self.now = round(self.now + seconds, 6)


@final
@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What the customer asked for."""

    customer: str
    sku: str
    quantity: int
    amount_cents: int


@final
@dataclass(frozen=True, slots=True)
class Reservation:
    """Stock held for an order."""

    id: str
    sku: str
    quantity: int


@final
@dataclass(frozen=True, slots=True)
class Receipt:
    """What a successful order placement returns."""

    order_id: str
    reservation_id: str
    payment_id: str


@final
@dataclass(slots=True)
class Inventory:
    """Stock per SKU and the reservations held against it."""

    clock: SimulatedClock
    stock: dict[str, int]
    reservations: dict[str, Reservation] = field(default_factory=dict)
    releases_failing: bool = False

    def reserve(self, sku: str, quantity: int) -> Reservation:
        self.clock.advance(0.012)
        if self.stock.get(sku, 0) < quantity:
            raise ValueError(f"only {self.stock.get(sku, 0)} of {sku} left")
        self.stock[sku] -= quantity
        reservation = Reservation(f"R-{len(self.reservations) + 1}", sku, quantity)
        self.reservations[reservation.id] = reservation
        return reservation

    def release(self, reservation: Reservation) -> None:
        self.clock.advance(0.010)
        if self.releases_failing:
            raise ServiceUnavailable("inventory service unavailable")
        if self.reservations.pop(reservation.id, None) is not None:  # idempotent
            self.stock[reservation.sku] += reservation.quantity

    def describe(self) -> str:
        held = ", ".join(f"{r.id} ({r.quantity} x {r.sku})" for r in self.reservations.values())
        return f"stock {self.stock}, reservations held: {held or 'none'}"


@final
@dataclass(slots=True)
class Orders:
    """Orders and their status."""

    clock: SimulatedClock
    status: dict[str, str] = field(default_factory=dict)

    def create(self, customer: str, reservation: Reservation) -> str:
        self.clock.advance(0.020)
        order_id = f"O-{len(self.status) + 1}"
        self.status[order_id] = "placed"
        return order_id

    def cancel(self, order_id: str) -> None:
        self.clock.advance(0.015)
        self.status[order_id] = "cancelled"  # idempotent

    def describe(self) -> str:
        return ", ".join(f"{order} {status}" for order, status in self.status.items()) or "none"


@final
@dataclass(slots=True)
class Payments:
    """Authorisations (money held) and captures (money taken).

    The gateway has a sync API (`authorize`) and an async one (`authorize_online`), which files
    each request under the caller's idempotency key (`requests`) and can hang (`hangs`).
    """

    clock: SimulatedClock
    held: dict[str, int] = field(default_factory=dict)
    captured: dict[str, int] = field(default_factory=dict)
    voided: list[str] = field(default_factory=list)
    requests: dict[str, str] = field(default_factory=dict)
    timeouts_left: int = 0
    declines: bool = False
    hangs: bool = False

    def authorize(self, amount_cents: int) -> str:
        self.clock.advance(0.030)
        if self.timeouts_left:
            self.timeouts_left -= 1
            raise GatewayTimeout("payment gateway timed out")
        return self._hold(amount_cents)

    async def authorize_online(self, amount_cents: int) -> str:
        """Hold the amount and answer with the authorisation, or, when the gateway `hangs`,
        hold it and never answer in time."""
        authorization = self._hold(amount_cents)
        self.requests[current_context().idempotency_key] = authorization
        if not self.hangs:
            self.clock.advance(0.030)
            return authorization
        try:
            await anyio.sleep(5.0)  # real time: the caller's timeout cuts the wait short
        except anyio.get_cancelled_exc_class():
            # The caller gave up after PAYMENT_TIMEOUT of real time (give or take a few
            # milliseconds): the simulated clock counts exactly that, so the output never varies.
            self.clock.advance(PAYMENT_TIMEOUT)
            raise
        return authorization

    def authorize_once(self, amount_cents: int, key: str) -> str:
        """Hold the amount under the request's idempotency `key`: a request repeated with the
        same key gets the hold the first one made, and holds nothing more."""
        self.clock.advance(0.030)
        authorization = self.requests.get(key)
        if authorization is None:
            authorization = self._hold(amount_cents)
            self.requests[key] = authorization
        return authorization

    def _hold(self, amount_cents: int) -> str:
        authorization = f"A-{len(self.held) + len(self.captured) + len(self.voided) + 1}"
        self.held[authorization] = amount_cents
        return authorization

    def void(self, authorization: str) -> None:
        self.clock.advance(0.025)
        if self.held.pop(authorization, None) is not None:  # idempotent
            self.voided.append(authorization)

    def void_request(self, context: StepContext) -> None:
        """Void whatever the gateway holds for a request whose answer never came, looked up by
        the request's idempotency key (the unknown-outcome compensation of an authorisation)."""
        authorization = self.requests.get(context.idempotency_key)
        if authorization is None:
            self.clock.advance(0.010)  # the gateway never saw the request: nothing to void
        else:
            self.void(authorization)

    def capture(self, authorization: str) -> str:
        self.clock.advance(0.040)
        if self.declines:
            raise CardDeclined("card declined: insufficient funds")
        payment_id = authorization.replace("A-", "P-")
        self.captured[payment_id] = self.held.pop(authorization)
        return payment_id

    def refund(self, payment_id: str) -> None:
        self.clock.advance(0.030)
        self.captured.pop(payment_id, None)  # idempotent

    def describe(self) -> str:
        voided = ", ".join(self.voided) or "none"
        return f"held {self.held or 'none'}, captured {self.captured or 'none'}, voided {voided}"


@final
@dataclass(frozen=True, slots=True)
class Services:
    """The three services an order touches, sharing one simulated clock."""

    clock: SimulatedClock
    inventory: Inventory
    orders: Orders
    payments: Payments

    @staticmethod
    def fresh() -> Services:
        clock = SimulatedClock()
        return Services(clock, Inventory(clock, {"sku-42": 10}), Orders(clock), Payments(clock))

    def describe(self) -> str:
        return "\n".join(
            [
                f"  inventory: {self.inventory.describe()}",
                f"  orders:    {self.orders.describe()}",
                f"  payments:  {self.payments.describe()}",
            ]
        )


def place_order(services: Services, request: OrderRequest) -> Saga[Receipt]:
    """The order saga. Each step pairs a service call with the call that undoes it.

    Step paths: ``reserve_stock``, ``create_order``, ``payment/authorize``, ``payment/capture``.
    """
    payments = services.payments
    authorize = step(
        partial(payments.authorize, request.amount_cents),
        payments.void,
        name="authorize",
        retry=Retry(3, delay=0.05, jitter=0.2, retry_on=GatewayTimeout),
    )
    return _order(services, request, authorize)


def place_order_online(services: Services, request: OrderRequest) -> Saga[Receipt]:
    """The order saga, authorising the payment through the gateway's async API.

    Each attempt may take `PAYMENT_TIMEOUT` seconds. One cut off has an unknown outcome: the
    gateway may hold the money or not. A second request could hold it twice (the step is not
    idempotent), but the gateway can look a request up by its idempotency key, so the step's
    unknown-outcome compensation voids whatever it holds under that key. Needs an async
    interpreter. Step paths as in `place_order`.
    """
    payments = services.payments
    authorize = step(
        partial(payments.authorize_online, request.amount_cents),
        payments.void,
        name="authorize",
        timeout=PAYMENT_TIMEOUT,
        idempotent=False,
        on_unknown=payments.void_request,
    )
    return _order(services, request, authorize)


def _order(services: Services, request: OrderRequest, authorize: Saga[str]) -> Saga[Receipt]:
    """Reserve the stock, create the order, then authorise (with `authorize`) and capture."""
    inventory, orders, payments = services.inventory, services.orders, services.payments
    # Compensations get a few attempts of their own: an undo that gives up leaves a mess.
    patient = Retry(3, delay=0.1, backoff=2.0, jitter=0.2)

    reserve = step(
        partial(inventory.reserve, request.sku, request.quantity),
        inventory.release,
        name="reserve_stock",
        compensation_retry=patient,
    )

    def capture(authorization: str) -> Saga[str]:
        return step(partial(payments.capture, authorization), payments.refund, name="capture")

    payment = authorize.bind(capture).named("payment")

    def create_order_and_pay(reservation: Reservation) -> Saga[Receipt]:
        create_order = step(
            partial(orders.create, request.customer, reservation),
            orders.cancel,
            name="create_order",
            compensation_retry=patient,
        )
        return create_order.zip(payment).map(
            lambda ids: Receipt(order_id=ids[0], reservation_id=reservation.id, payment_id=ids[1])
        )

    return reserve.bind(create_order_and_pay)


@final
@dataclass(frozen=True, slots=True)
class Scenario:
    """One run of the demo: what goes wrong in it."""

    title: str
    saga_id: str
    gateway_timeouts: int = 0
    card_declined: bool = False
    inventory_down: bool = False
    gateway_hangs: bool = False
    """Only the async interpreter can cut a hanging call off: such a scenario places the order
    with `place_order_online` under `AsyncInterpreter`, on asyncio."""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "Success: the payment gateway times out once, the retry goes through",
        "order-1001",
        gateway_timeouts=1,
    ),
    Scenario(
        "Failure: the card is declined, everything is rolled back",
        "order-1002",
        card_declined=True,
    ),
    Scenario(
        "PartialFailure: the card is declined and the stock cannot be released",
        "order-1003",
        card_declined=True,
        inventory_down=True,
    ),
    Scenario(
        "Timeout: the payment gateway hangs; the hold is voided by idempotency key, "
        "the rest rolled back",
        "order-1004",
        gateway_hangs=True,
    ),
)


@final
@dataclass(frozen=True, slots=True)
class ScenarioRun:
    """What one scenario produced: its events, its outcome, and the services afterwards."""

    scenario: Scenario
    events: tuple[Event, ...]
    outcome: Outcome[Receipt]
    services: Services


def run_scenario(scenario: Scenario) -> ScenarioRun:
    """Run the order saga once, on fresh services, with the scenario's faults."""
    services = Services.fresh()
    services.payments.timeouts_left = scenario.gateway_timeouts
    services.payments.declines = scenario.card_declined
    services.inventory.releases_failing = scenario.inventory_down
    services.payments.hangs = scenario.gateway_hangs
    events: list[Event] = []
    request = OrderRequest("ada", "sku-42", 3, 4_500)
    random_unit = random.Random(scenario.saga_id).random
    outcome: Outcome[Receipt]
    if scenario.gateway_hangs:
        online = AsyncInterpreter(
            listeners=[events.append],
            clock=services.clock,
            sleep=partial(_wait, services.clock),
            random_unit=random_unit,
        )
        run = partial(
            online.run_saga, place_order_online(services, request), saga_id=scenario.saga_id
        )
        outcome = anyio.run(run, backend="asyncio")
    else:
        interpreter = SyncInterpreter(
            listeners=[events.append],
            clock=services.clock,
            sleep=services.clock.advance,
            random_unit=random_unit,
        )
        outcome = place_order(services, request).run(interpreter, saga_id=scenario.saga_id)
    return ScenarioRun(scenario, tuple(events), outcome, services)


async def _wait(clock: SimulatedClock, seconds: float) -> None:
    """A retry's wait under the async interpreter: simulated, like the sync runs' waits."""
    clock.advance(seconds)


def report(run: ScenarioRun, number: int) -> str:
    """A scenario's timeline, outcome and final state, as printed by the demo."""
    outcome = run.outcome
    # The outcome's summary shortens long errors; say in full why the run failed.
    why = [f"  why: {outcome.error}"] if isinstance(outcome, Failure | PartialFailure) else []
    return "\n".join(
        [
            f"== {number}. {run.scenario.title}",
            "",
            render_timeline(run.events),
            "",
            "outcome:",
            "  " + describe_outcome(outcome).replace("\n", "\n  "),
            *why,
            "",
            "state afterwards:",
            run.services.describe(),
            "",
        ]
    )


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else "" for line in text.splitlines())
