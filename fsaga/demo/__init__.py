"""The demo behind ``python -m fsaga demo``: one order placed across two SQLite stores and a
payment gateway.

Stock (SKU -> count) and orders (order id -> order) are `fsaga.stores.SqliteStore` tables of one
SQLite file, new for each run; the payment gateway is an external service. Placing an order
is one `fsaga.stores.transaction`: take the stock (`update` with `take`), create the order
(`save`, create only, under an id derived from the saga id), authorise and capture the payment
(a named sub-saga of external calls), mark the order paid (`update`). The store steps'
compensations are generated. The saga runs five times:

1. everything works (the payment gateway times out once; the retry goes through): `Success`;
2. the capture is declined: every completed step is undone, in reverse order, and each store
   row is back as it was, version included: `Failure`;
3. while the payment is being captured, a clerk edits the order through another connection
   to the file, and the card is declined: the order's generated undo finds a version it did
   not write, keeps the clerk's edit and reports a `VersionConflictError` naming the key and
   both versions; the stock is restored: `PartialFailure`;
4. the payment gateway's async API hangs: under `AsyncInterpreter` (asyncio), the
   authorisation is cut off by its 50 ms timeout, its unknown outcome is settled by voiding
   whatever the gateway holds under the request's idempotency key, and the store writes are
   undone: `Failure`;
5. durably, in a child process that is killed (SIGKILL) while the gateway authorises the
   payment: the demo shows what the journal and the stores hold, then recovers the saga. The
   store writes are in the journal with their receipts and are not applied again; the
   authorisation was in flight, so its outcome is unknown (contract rule 3); the step is
   idempotent (the gateway files each hold under the request's idempotency key), so recovery
   runs it again with the same key, gets the hold the dead process made, and completes:
   `Success` (see `run_crash_recovery`).

Time is simulated: every payment call advances a fake clock by a fixed latency (store writes
take none), and retry waits advance it instead of sleeping, so the output is the same on every
run. The one real wait is run 4's payment timeout (50 ms), which the fake clock counts as
exactly that.

>>> runs = run_demo(write=lambda text: None)
>>> [type(run.outcome).__name__ for run in runs]
['Success', 'Failure', 'PartialFailure', 'Failure']
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from fsaga.demo.crash import CRASH_SAGA_ID as CRASH_SAGA_ID
from fsaga.demo.crash import CRASH_TITLE as CRASH_TITLE
from fsaga.demo.crash import ORDER_DEFINITION as ORDER_DEFINITION
from fsaga.demo.crash import CrashRecovery as CrashRecovery
from fsaga.demo.crash import PaymentsFile as PaymentsFile
from fsaga.demo.crash import durable_definitions as durable_definitions
from fsaga.demo.crash import report_crash_recovery as report_crash_recovery
from fsaga.demo.crash import run_crash_recovery as run_crash_recovery
from fsaga.demo.shop import DATABASE as DATABASE
from fsaga.demo.shop import INITIAL_STOCK as INITIAL_STOCK
from fsaga.demo.shop import PAYMENT_TIMEOUT as PAYMENT_TIMEOUT
from fsaga.demo.shop import REQUEST as REQUEST
from fsaga.demo.shop import SCENARIOS as SCENARIOS
from fsaga.demo.shop import CardDeclined as CardDeclined
from fsaga.demo.shop import GatewayTimeout as GatewayTimeout
from fsaga.demo.shop import OrderRequest as OrderRequest
from fsaga.demo.shop import OutOfStock as OutOfStock
from fsaga.demo.shop import Payments as Payments
from fsaga.demo.shop import Receipt as Receipt
from fsaga.demo.shop import Row as Row
from fsaga.demo.shop import Scenario as Scenario
from fsaga.demo.shop import ScenarioRun as ScenarioRun
from fsaga.demo.shop import Shop as Shop
from fsaga.demo.shop import ShopState as ShopState
from fsaga.demo.shop import SimulatedClock as SimulatedClock
from fsaga.demo.shop import open_stores as open_stores
from fsaga.demo.shop import order_id_for as order_id_for
from fsaga.demo.shop import order_saga as order_saga
from fsaga.demo.shop import paid as paid
from fsaga.demo.shop import payment_saga as payment_saga
from fsaga.demo.shop import place_order as place_order
from fsaga.demo.shop import place_order_online as place_order_online
from fsaga.demo.shop import read_state as read_state
from fsaga.demo.shop import report as report
from fsaga.demo.shop import run_scenario as run_scenario
from fsaga.demo.shop import stock_up as stock_up
from fsaga.demo.shop import take as take

__all__ = [
    "CRASH_SAGA_ID",
    "CRASH_TITLE",
    "DATABASE",
    "HEADER",
    "INITIAL_STOCK",
    "ORDER_DEFINITION",
    "PAYMENT_TIMEOUT",
    "REQUEST",
    "SCENARIOS",
    "CardDeclined",
    "CrashRecovery",
    "GatewayTimeout",
    "OrderRequest",
    "OutOfStock",
    "Payments",
    "PaymentsFile",
    "Receipt",
    "Row",
    "Scenario",
    "ScenarioRun",
    "Shop",
    "ShopState",
    "SimulatedClock",
    "durable_definitions",
    "open_stores",
    "order_id_for",
    "order_saga",
    "paid",
    "payment_saga",
    "place_order",
    "place_order_online",
    "read_state",
    "report",
    "report_crash_recovery",
    "run_crash_recovery",
    "run_demo",
    "run_scenario",
    "stock_up",
    "take",
]


HEADER = (
    "fsaga demo: one order (3 x sku-42, 45.00) placed five times. Stock and orders are\n"
    "SqliteStores, two tables of one SQLite file made fresh for each run (stock starts at\n"
    "sku-42 = 10, version 1); their steps' compensations are generated. The payment gateway\n"
    "is an external service, called between the store writes. Runs 1 to 3 use\n"
    "SyncInterpreter, run 4 AsyncInterpreter (asyncio). Time is simulated (payment calls take\n"
    "a fixed time, store writes none), so every run prints the same; run 4 really waits for\n"
    "its 50 ms payment timeout, which the simulated clock counts as exactly 50 ms. Run 5\n"
    "places the order durably, in a process killed mid-saga, and recovers it from its journal.\n"
)


def run_demo(write: Callable[[str], object] = print) -> list[ScenarioRun]:
    """Run every scenario and the crash recovery, `write` the header and each report, and
    return the scenarios' runs.

    Where processes cannot be killed with SIGKILL (Windows), the crash recovery is skipped
    with a note.
    """
    runs = [run_scenario(scenario) for scenario in SCENARIOS]
    crash_number = len(runs) + 1
    crash = run_crash_recovery() if hasattr(signal, "SIGKILL") else None
    write(HEADER)
    for number, run in enumerate(runs, start=1):
        write(report(run, number))
    if crash is None:
        write(f"== {crash_number}. {CRASH_TITLE}\n\nskipped: this platform has no SIGKILL\n")
    else:
        write(report_crash_recovery(crash, crash_number))
    return runs
