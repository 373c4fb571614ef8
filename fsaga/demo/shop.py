"""Run 1 to 4 of the demo: the shop's two SQLite stores and its payment gateway, the order
saga, its scenarios and their reports."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Final, final

import anyio

from fsaga.context import StepContext, current_context
from fsaga.events import Event
from fsaga.interpreter.asynchronous import AsyncInterpreter
from fsaga.interpreter.sync import SyncInterpreter
from fsaga.outcome import Failure, Outcome, PartialFailure
from fsaga.policy import Retry
from fsaga.render import describe_outcome, render_timeline
from fsaga.saga import Saga, step
from fsaga.stores import ABSENT, SqliteStore, Store, transaction

__all__ = [
    "DATABASE",
    "INITIAL_STOCK",
    "PAYMENT_TIMEOUT",
    "REQUEST",
    "SCENARIOS",
    "CardDeclined",
    "GatewayTimeout",
    "OrderRequest",
    "OutOfStock",
    "Payments",
    "Receipt",
    "Row",
    "Scenario",
    "ScenarioRun",
    "Shop",
    "ShopState",
    "SimulatedClock",
    "open_stores",
    "order_id_for",
    "order_saga",
    "paid",
    "payment_saga",
    "place_order",
    "place_order_online",
    "read_state",
    "report",
    "run_scenario",
    "stock_up",
    "take",
]


class GatewayTimeout(Exception):
    """The payment gateway did not answer in time: worth another attempt."""


class CardDeclined(Exception):
    """The bank refused the payment: retrying will not help."""


class OutOfStock(Exception):
    """Fewer items are left than the order wants: retrying will not help."""


PAYMENT_TIMEOUT = 0.05
"""Seconds an attempt to authorise the payment through the gateway's async API may take."""

DATABASE = "shop.db"
"""The name of the SQLite file that holds the shop's stores, ``stock`` and ``orders``."""

INITIAL_STOCK: Final = {"sku-42": 10}
"""What `stock_up` puts on the shelves: count per SKU."""


@final
class SimulatedClock:
    """A clock that only moves when told: payment calls and retry waits advance it."""

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

    def order(self) -> dict[str, object]:
        """The order row this request creates (status ``placed``)."""
        return {
            "customer": self.customer,
            "sku": self.sku,
            "quantity": self.quantity,
            "amount_cents": self.amount_cents,
            "status": "placed",
        }


@final
@dataclass(frozen=True, slots=True)
class Receipt:
    """What a successful order placement returns."""

    order_id: str
    payment_id: str


def order_id_for(saga_id: str) -> str:
    """The id of the order that saga `saga_id` places: the same saga id, the same order, so a
    saga run again (or recovered) writes the order it wrote before, never a second one.

    >>> order_id_for("order-1001")
    'O-1001'
    """
    return f"O-{saga_id.removeprefix('order-')}"


def take(quantity: int) -> Callable[[int], int]:
    """The update that takes `quantity` items from a stock count; it raises `OutOfStock` when
    fewer are left (the stock step fails, and nothing is written).

    >>> take(3)(10)
    7
    >>> take(3)(2)
    Traceback (most recent call last):
    ...
    fsaga.demo.shop.OutOfStock: only 2 left, 3 wanted
    """

    def take_from(count: int) -> int:
        if count < quantity:
            raise OutOfStock(f"only {count} left, {quantity} wanted")
        return count - quantity

    return take_from


def paid(payment_id: str) -> Callable[[dict[str, object]], dict[str, object]]:
    """The update that marks an order paid by `payment_id`."""

    def mark_paid(order: dict[str, object]) -> dict[str, object]:
        return {**order, "status": "paid", "payment": payment_id}

    return mark_paid


@final
@dataclass(slots=True)
class Payments:
    """The payment gateway, an external service: authorisations (money held) and captures
    (money taken).

    The gateway has a sync API (`authorize`) and an async one (`authorize_online`), which files
    each request under the caller's idempotency key (`requests`) and can hang (`hangs`).
    `while_capturing`, when set, is called during each capture (the demo lets a clerk edit the
    order then).
    """

    clock: SimulatedClock
    held: dict[str, int] = field(default_factory=dict)
    captured: dict[str, int] = field(default_factory=dict)
    voided: list[str] = field(default_factory=list)
    requests: dict[str, str] = field(default_factory=dict)
    timeouts_left: int = 0
    declines: bool = False
    hangs: bool = False
    while_capturing: Callable[[], object] | None = None

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
        if self.while_capturing is not None:
            self.while_capturing()
        if self.declines:
            raise CardDeclined("card declined: insufficient funds")
        payment_id = authorization.replace("A-", "P-")
        self.captured[payment_id] = self.held.pop(authorization)
        return payment_id

    def refund(self, payment_id: str) -> None:
        self.clock.advance(0.030)
        self.captured.pop(payment_id, None)  # idempotent

    def snapshot(self) -> Payments:
        """A copy of the gateway's state that later calls do not change."""
        return replace(
            self,
            held=dict(self.held),
            captured=dict(self.captured),
            voided=list(self.voided),
            requests=dict(self.requests),
            while_capturing=None,
        )

    def describe(self) -> str:
        voided = ", ".join(self.voided) or "none"
        return f"held {self.held or 'none'}, captured {self.captured or 'none'}, voided {voided}"


def open_stores(
    database: Path,
) -> tuple[SqliteStore[str, int], SqliteStore[str, dict[str, object]]]:
    """The shop's stores, two tables of the SQLite file `database` (created on first use):
    ``stock`` (SKU -> count) and ``orders`` (order id -> order)."""
    stock: SqliteStore[str, int] = SqliteStore(database, "stock")
    try:
        orders: SqliteStore[str, dict[str, object]] = SqliteStore(database, "orders")
    except BaseException:
        stock.close()
        raise
    return stock, orders


def stock_up(stock: Store[str, int]) -> None:
    """Put `INITIAL_STOCK` on the shelves of a new stock store (each SKU gets version 1 in a
    fresh store); a store that holds one of its SKUs already fails with `VersionConflictError`.
    """
    for sku, count in INITIAL_STOCK.items():
        stock.put(sku, count, expected=ABSENT)


@final
@dataclass(frozen=True, slots=True)
class Row:
    """One row of a store's table, as SQLite holds it.

    Attributes:
        key: the key.
        data: the value's bytes (its JSON, keys sorted, no spaces).
        version: the value's version.
    """

    key: str
    data: bytes
    version: int

    @property
    def value(self) -> object:
        """The value, decoded."""
        return json.loads(self.data)

    def describe(self) -> str:
        return f"{self.key}  version {self.version}  {self.data.decode('utf-8')}"


@final
@dataclass(frozen=True, slots=True)
class ShopState:
    """The rows of the shop's stores, and the payment gateway's state, at one moment."""

    stock: tuple[Row, ...]
    orders: tuple[Row, ...]
    payments: Payments

    def describe(self) -> str:
        return "\n".join(
            [
                f"  stock:     {_rows(self.stock)}",
                f"  orders:    {_rows(self.orders)}",
                f"  payments:  {self.payments.describe()}",
            ]
        )


def read_state(database: Path, payments: Payments) -> ShopState:
    """The rows of the stores in `database`, read straight from their tables with `sqlite3`
    (as any SQLite tool would), and a snapshot of `payments`."""
    with contextlib.closing(sqlite3.connect(database)) as db:

        def rows(table: str) -> tuple[Row, ...]:
            query = f'SELECT key, value, version FROM "{table}" ORDER BY key'
            return tuple(Row(key, data, version) for key, data, version in db.execute(query))

        return ShopState(rows("stock"), rows("orders"), payments.snapshot())


def _rows(rows: tuple[Row, ...]) -> str:
    return "\n             ".join(row.describe() for row in rows) or "no rows"


@final
@dataclass(frozen=True, slots=True)
class Shop:
    """The shop one run places its order in: the stock and orders stores (tables of one SQLite
    file) and the payment gateway, sharing one simulated clock.

    Store writes take no simulated time; every payment call takes a fixed simulated latency.
    """

    clock: SimulatedClock
    database: Path
    stock: SqliteStore[str, int]
    orders: SqliteStore[str, dict[str, object]]
    payments: Payments

    @staticmethod
    def open(folder: Path) -> Shop:
        """A new shop in `folder`: its stores in a new `DATABASE` file there, stocked with
        `INITIAL_STOCK`, and a fresh payment gateway. `close` it when done."""
        database = folder / DATABASE
        stock, orders = open_stores(database)
        try:
            stock_up(stock)
        except BaseException:
            stock.close()
            orders.close()
            raise
        clock = SimulatedClock()
        return Shop(clock, database, stock, orders, Payments(clock))

    def close(self) -> None:
        """Close the stores' connections."""
        self.stock.close()
        self.orders.close()

    def state(self) -> ShopState:
        """The stores' rows and the gateway's state, now."""
        return read_state(self.database, self.payments)

    def clerk_edits_order(self, order_id: str) -> None:
        """A clerk adds a note to an order from another process: through a second connection to
        the database, not the saga's, as another program would."""
        clerk: SqliteStore[str, dict[str, object]] = SqliteStore(self.database, "orders")
        with clerk:
            clerk.update(order_id, lambda order: {**order, "note": "call before delivery"})


def payment_saga(
    authorize: Saga[str], capture: Callable[[str], str], refund: Callable[[str], object]
) -> Saga[str]:
    """The ``payment`` sub-saga: authorise with `authorize`, then capture the authorisation
    (undone by a refund); its result is the payment id. Step paths: ``payment/authorize``,
    ``payment/capture``."""

    def capture_step(authorization: str) -> Saga[str]:
        return step(partial(capture, authorization), refund, name="capture")

    return authorize.bind(capture_step).named("payment")


def order_saga(
    stock: Store[str, int],
    orders: Store[str, dict[str, object]],
    request: OrderRequest,
    order_id: str,
    payment: Saga[str],
) -> Saga[Receipt]:
    """The order saga: take the stock, create the order, pay (`payment`, external calls between
    the store writes), mark the order paid.

    The store steps come from `fsaga.stores`, with their compensations generated: the stock's
    undo puts back the count it replaced (with its version), the order's undo deletes the order
    it created, unless someone else changed either since. Step paths:
    ``update:stock:SKU``, ``save:orders:ORDER``, ``payment/...``, ``update:orders:ORDER``.
    """
    return transaction(
        lambda tx: (
            tx.update(stock, request.sku, take(request.quantity))
            .then(tx.save(orders, order_id, request.order(), expected=ABSENT))
            .then(payment)
            .bind(
                lambda payment_id: tx.update(orders, order_id, paid(payment_id)).map(
                    lambda _: Receipt(order_id, payment_id)
                )
            )
        )
    )


def place_order(shop: Shop, request: OrderRequest, order_id: str) -> Saga[Receipt]:
    """The order saga over `shop`, authorising the payment through the gateway's sync API,
    retried when the gateway times out."""
    payments = shop.payments
    authorize = step(
        partial(payments.authorize, request.amount_cents),
        payments.void,
        name="authorize",
        retry=Retry(3, delay=0.05, jitter=0.2, retry_on=GatewayTimeout),
    )
    payment = payment_saga(authorize, payments.capture, payments.refund)
    return order_saga(shop.stock, shop.orders, request, order_id, payment)


def place_order_online(shop: Shop, request: OrderRequest, order_id: str) -> Saga[Receipt]:
    """The order saga over `shop`, authorising the payment through the gateway's async API.

    Each attempt may take `PAYMENT_TIMEOUT` seconds. One cut off has an unknown outcome: the
    gateway may hold the money or not. A second request could hold it twice (the step is not
    idempotent), but the gateway can look a request up by its idempotency key, so the step's
    unknown-outcome compensation voids whatever it holds under that key. Needs an async
    interpreter. Step paths as in `order_saga`.
    """
    payments = shop.payments
    authorize = step(
        partial(payments.authorize_online, request.amount_cents),
        payments.void,
        name="authorize",
        timeout=PAYMENT_TIMEOUT,
        idempotent=False,
        on_unknown=payments.void_request,
    )
    payment = payment_saga(authorize, payments.capture, payments.refund)
    return order_saga(shop.stock, shop.orders, request, order_id, payment)


@final
@dataclass(frozen=True, slots=True)
class Scenario:
    """One run of the demo: what goes wrong in it."""

    title: str
    saga_id: str
    gateway_timeouts: int = 0
    card_declined: bool = False
    clerk_edits_order: bool = False
    """A clerk edits the order (from another connection to the database) while the payment is
    being captured."""
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
        "Failure: the card is declined, every store write is undone",
        "order-1002",
        card_declined=True,
    ),
    Scenario(
        "PartialFailure: a clerk edits the order during the capture, the card is declined, "
        "and the order's undo keeps the clerk's edit",
        "order-1003",
        card_declined=True,
        clerk_edits_order=True,
    ),
    Scenario(
        "Timeout: the payment gateway hangs; the hold is voided by idempotency key, "
        "the store writes undone",
        "order-1004",
        gateway_hangs=True,
    ),
)

REQUEST: Final = OrderRequest("ada", "sku-42", 3, 4_500)
"""The order every run places."""


@final
@dataclass(frozen=True, slots=True)
class ScenarioRun:
    """What one scenario produced: its events, its outcome, and the shop's state before the
    saga ran and afterwards."""

    scenario: Scenario
    events: tuple[Event, ...]
    outcome: Outcome[Receipt]
    before: ShopState
    after: ShopState


def run_scenario(scenario: Scenario, folder: Path | None = None) -> ScenarioRun:
    """Run the order saga once, in a new shop, with the scenario's faults.

    The shop's database is created in `folder` (which must not hold one yet), or by default in
    a temporary directory removed afterwards.
    """
    with contextlib.ExitStack() as cleanup:
        if folder is None:
            folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="fsaga-demo-")))
        shop = Shop.open(folder)
        cleanup.callback(shop.close)
        order_id = order_id_for(scenario.saga_id)
        payments = shop.payments
        payments.timeouts_left = scenario.gateway_timeouts
        payments.declines = scenario.card_declined
        payments.hangs = scenario.gateway_hangs
        if scenario.clerk_edits_order:
            payments.while_capturing = partial(shop.clerk_edits_order, order_id)
        before = shop.state()
        events: list[Event] = []
        random_unit = random.Random(scenario.saga_id).random
        outcome: Outcome[Receipt]
        if scenario.gateway_hangs:
            online = AsyncInterpreter(
                listeners=[events.append],
                clock=shop.clock,
                sleep=partial(_wait, shop.clock),
                random_unit=random_unit,
            )
            saga = place_order_online(shop, REQUEST, order_id)
            run = partial(online.run_saga, saga, saga_id=scenario.saga_id)
            outcome = anyio.run(run, backend="asyncio")
        else:
            interpreter = SyncInterpreter(
                listeners=[events.append],
                clock=shop.clock,
                sleep=shop.clock.advance,
                random_unit=random_unit,
            )
            saga = place_order(shop, REQUEST, order_id)
            outcome = saga.run(interpreter, saga_id=scenario.saga_id)
        return ScenarioRun(scenario, tuple(events), outcome, before, shop.state())


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
            f"state afterwards (the rows of {DATABASE}: key, version, value as stored):",
            run.after.describe(),
            "",
        ]
    )


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else "" for line in text.splitlines())
