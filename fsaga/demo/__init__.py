"""The demo behind ``python -m fsaga demo``: one order placed across three in-memory services.

Placing an order reserves stock (inventory), creates the order (orders), then authorises and
captures the payment (payments, a named sub-saga). The saga runs five times, on fresh
services each time:

1. everything works (the payment gateway times out once; the retry goes through): `Success`;
2. the capture is declined: every completed step is undone, in reverse order: `Failure`;
3. the capture is declined and the inventory cannot release the stock, even after retries:
   `PartialFailure`, which names the compensation that failed;
4. the payment gateway's async API hangs: under `AsyncInterpreter` (asyncio), the
   authorisation is cut off by its 50 ms timeout, its unknown outcome is settled by voiding
   whatever the gateway holds under the request's idempotency key, and the rest is undone:
   `Failure`;
5. durably, in a child process that is killed (SIGKILL) while the gateway authorises the
   payment: the demo shows what the journal holds, then recovers the saga from it. The
   authorisation was in flight, so its outcome is unknown (DESIGN rule 3); the step is
   idempotent (the gateway files each hold under the request's idempotency key), so recovery
   runs it again with the same key, gets the hold the dead process made, and completes:
   `Success` (see `run_crash_recovery`).

Time is simulated: every service call advances a fake clock by a fixed latency, and retry
waits advance it instead of sleeping, so the output is the same on every run. The one real
wait is run 4's payment timeout (50 ms), which the fake clock counts as exactly that.

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
from fsaga.demo.crash import ServicesFile as ServicesFile
from fsaga.demo.crash import durable_definitions as durable_definitions
from fsaga.demo.crash import report_crash_recovery as report_crash_recovery
from fsaga.demo.crash import run_crash_recovery as run_crash_recovery
from fsaga.demo.shop import PAYMENT_TIMEOUT as PAYMENT_TIMEOUT
from fsaga.demo.shop import SCENARIOS as SCENARIOS
from fsaga.demo.shop import CardDeclined as CardDeclined
from fsaga.demo.shop import GatewayTimeout as GatewayTimeout
from fsaga.demo.shop import Inventory as Inventory
from fsaga.demo.shop import OrderRequest as OrderRequest
from fsaga.demo.shop import Orders as Orders
from fsaga.demo.shop import Payments as Payments
from fsaga.demo.shop import Receipt as Receipt
from fsaga.demo.shop import Reservation as Reservation
from fsaga.demo.shop import Scenario as Scenario
from fsaga.demo.shop import ScenarioRun as ScenarioRun
from fsaga.demo.shop import Services as Services
from fsaga.demo.shop import ServiceUnavailable as ServiceUnavailable
from fsaga.demo.shop import SimulatedClock as SimulatedClock
from fsaga.demo.shop import place_order as place_order
from fsaga.demo.shop import place_order_online as place_order_online
from fsaga.demo.shop import report as report
from fsaga.demo.shop import run_scenario as run_scenario

__all__ = [
    "CRASH_SAGA_ID",
    "CRASH_TITLE",
    "HEADER",
    "ORDER_DEFINITION",
    "PAYMENT_TIMEOUT",
    "SCENARIOS",
    "CardDeclined",
    "CrashRecovery",
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
    "ServicesFile",
    "SimulatedClock",
    "durable_definitions",
    "place_order",
    "place_order_online",
    "report",
    "report_crash_recovery",
    "run_crash_recovery",
    "run_demo",
    "run_scenario",
]


HEADER = (
    "fsaga demo: one order (3 x sku-42, 45.00) placed across three in-memory services,\n"
    "four times, on fresh services each time: three runs with SyncInterpreter, then one with\n"
    "AsyncInterpreter (asyncio). Time is simulated, so every run prints the same; run 4 really\n"
    "waits for its 50 ms payment timeout, which the simulated clock counts as exactly 50 ms.\n"
    "Run 5 places it durably, in a process killed mid-saga, and recovers it from its journal.\n"
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
