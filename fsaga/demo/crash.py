"""Run 5 of the demo: the order placed durably in a process killed mid-saga, then recovered
from its journal."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, final

from fsaga.context import current_context
from fsaga.demo.shop import (
    OrderRequest,
    Reservation,
    Services,
    _indent,
)
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.journal.cli import describe_saga
from fsaga.journal.sqlite import SqliteJournal
from fsaga.outcome import Outcome
from fsaga.render import describe_outcome
from fsaga.saga import Saga, step

__all__ = [
    "CRASH_SAGA_ID",
    "CRASH_TITLE",
    "ORDER_DEFINITION",
    "CrashRecovery",
    "ServicesFile",
    "durable_definitions",
    "report_crash_recovery",
    "run_crash_recovery",
]


# -- run 5: durable, killed mid-saga, recovered from the journal -------------------------------

CRASH_SAGA_ID = "order-1005"
"""The id of run 5's durable saga."""

ORDER_DEFINITION = "place-order"
"""The name run 5's saga is registered under (see `durable_definitions`)."""


@final
class ServicesFile:
    """The three services with their state in a JSON file, so that it outlives a process.

    Each call loads the state, makes the service call, and saves the state before it returns:
    what a call did is in the file even if its process dies right after. Results are ids
    (``"R-1"``, ``"A-1"``), which a journal can store. With `crash_in_authorize`, the process
    kills itself (SIGKILL) inside `authorize`, once the gateway holds the money.
    """

    __slots__ = ("crash_in_authorize", "path")

    def __init__(self, path: Path, *, crash_in_authorize: bool = False) -> None:
        self.path = path
        self.crash_in_authorize = crash_in_authorize

    def create(self) -> None:
        """Write fresh services' state to the file."""
        self._save(Services.fresh())

    def load(self) -> Services:
        """The services as the file has them."""
        state: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        services = Services.fresh()
        services.inventory.stock = state["stock"]
        services.inventory.reservations = {
            id: Reservation(id, sku, quantity) for id, (sku, quantity) in state["reserved"].items()
        }
        services.orders.status = state["orders"]
        payments = services.payments
        payments.held, payments.captured = state["held"], state["captured"]
        payments.voided, payments.requests = state["voided"], state["requests"]
        return services

    def _save(self, services: Services) -> None:
        payments = services.payments
        state = {
            "stock": services.inventory.stock,
            "reserved": {
                id: [reservation.sku, reservation.quantity]
                for id, reservation in services.inventory.reservations.items()
            },
            "orders": services.orders.status,
            "held": payments.held,
            "captured": payments.captured,
            "voided": payments.voided,
            "requests": payments.requests,
        }
        written = self.path.with_suffix(".tmp")
        written.write_text(json.dumps(state), encoding="utf-8")
        os.replace(written, self.path)

    @contextlib.contextmanager
    def _services(self) -> Iterator[Services]:
        services = self.load()
        yield services
        self._save(services)

    def reserve_stock(self, sku: str, quantity: int) -> str:
        with self._services() as services:
            return services.inventory.reserve(sku, quantity).id

    def release_stock(self, reservation_id: str) -> None:
        with self._services() as services:
            reservation = services.inventory.reservations.get(reservation_id)
            if reservation is not None:
                services.inventory.release(reservation)

    def create_order(self, customer: str, reservation_id: str) -> str:
        with self._services() as services:
            reservation = services.inventory.reservations[reservation_id]
            return services.orders.create(customer, reservation)

    def cancel_order(self, order_id: str) -> None:
        with self._services() as services:
            services.orders.cancel(order_id)

    def authorize(self, amount_cents: int) -> str:
        """Hold the amount under the step's idempotency key (see `Payments.authorize_once`)."""
        with self._services() as services:
            key = current_context().idempotency_key
            authorization = services.payments.authorize_once(amount_cents, key)
        if self.crash_in_authorize:
            # The gateway holds the money; the answer never reaches the journal.
            os.kill(os.getpid(), signal.SIGKILL)
        return authorization

    def void(self, authorization: str) -> None:
        with self._services() as services:
            services.payments.void(authorization)

    def capture(self, authorization: str) -> str:
        with self._services() as services:
            return services.payments.capture(authorization)

    def refund(self, payment_id: str) -> None:
        with self._services() as services:
            services.payments.refund(payment_id)


def durable_definitions(services: ServicesFile) -> SagaDefinitions:
    """The order saga, registered as `ORDER_DEFINITION` for durable runs over `services`.

    Its input is an `OrderRequest` as a dict; its steps are `place_order`'s (same paths), with
    JSON-shaped results, and an authorisation that is idempotent: the gateway files each hold
    under the request's idempotency key, so running it again with the same key is safe.
    """
    definitions = SagaDefinitions()

    @definitions.saga(ORDER_DEFINITION)
    def place(request: dict[str, Any]) -> Saga[dict[str, str]]:
        reserve = step(
            partial(services.reserve_stock, request["sku"], request["quantity"]),
            services.release_stock,
            name="reserve_stock",
        )
        authorize = step(
            partial(services.authorize, request["amount_cents"]),
            services.void,
            name="authorize",
            idempotent=True,
        )

        def capture(authorization: str) -> Saga[str]:
            return step(partial(services.capture, authorization), services.refund, name="capture")

        def create_order_and_pay(reservation_id: str) -> Saga[dict[str, str]]:
            create_order = step(
                partial(services.create_order, request["customer"], reservation_id),
                services.cancel_order,
                name="create_order",
            )
            return create_order.zip(authorize.bind(capture).named("payment")).map(
                lambda ids: {"order": ids[0], "reservation": reservation_id, "payment": ids[1]}
            )

        return reserve.bind(create_order_and_pay)

    return definitions


def _durable_child(folder: str) -> None:
    """Run 5's doomed process: start the order durably; it dies inside the authorisation."""
    services = ServicesFile(Path(folder) / "services.json", crash_in_authorize=True)
    request = asdict(OrderRequest("ada", "sku-42", 3, 4_500))
    with SqliteJournal(Path(folder) / "journal.db") as journal:
        runs = DurableSagas(journal, durable_definitions(services))
        runs.start(ORDER_DEFINITION, request, saga_id=CRASH_SAGA_ID)
    raise RuntimeError("the process was meant to die inside payment/authorize")


@final
@dataclass(frozen=True, slots=True)
class CrashRecovery:
    """What run 5 saw: the journal and the services after the crash, then after recovery."""

    journal_at_crash: str
    services_at_crash: Services
    outcome: Outcome[object]
    journal_after: str
    services_after: Services


def run_crash_recovery() -> CrashRecovery:
    """Start the order durably in a child process that is killed mid-payment, then recover it.

    Raises:
        RuntimeError: the child process did not die of SIGKILL (its error output says why).
    """
    with tempfile.TemporaryDirectory(prefix="fsaga-demo-") as folder:
        services = ServicesFile(Path(folder) / "services.json")
        services.create()
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from fsaga.demo.crash import _durable_child; _durable_child({folder!r})",
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONPATH": _import_path()},
        )
        if child.returncode != -signal.SIGKILL:
            raise RuntimeError(
                f"run 5's child process exited with {child.returncode}, not SIGKILL:\n"
                f"{child.stderr}"
            )
        with SqliteJournal(Path(folder) / "journal.db") as journal:
            at_crash = _journal_show(journal)
            services_at_crash = services.load()
            outcome = DurableSagas(journal, durable_definitions(services)).recover()[CRASH_SAGA_ID]
            if isinstance(outcome, BaseException):
                raise outcome
            after = _journal_show(journal)
        return CrashRecovery(at_crash, services_at_crash, outcome, after, services.load())


_CHILD_IMPORT = "from fsaga.demo.crash import _durable_child"


def _import_path() -> str:
    """``PYTHONPATH`` for a child process that must import this very fsaga."""
    here = str(Path(__file__).resolve().parent.parent.parent)
    inherited = os.environ.get("PYTHONPATH")
    return here if not inherited else os.pathsep.join([here, inherited])


def _journal_show(journal: SqliteJournal) -> str:
    record = journal.get(CRASH_SAGA_ID)
    assert record is not None
    return describe_saga(record, journal.entries(CRASH_SAGA_ID))


CRASH_TITLE = "Durable: the process is killed mid-payment; recovery from the journal finishes it"
"""The title of run 5."""


def report_crash_recovery(run: CrashRecovery, number: int) -> str:
    """Run 5's report: the journal and state at the crash, the recovery, its outcome, the state
    afterwards."""
    key = f"{CRASH_SAGA_ID}/payment/authorize"
    return "\n".join(
        [
            f"== {number}. {CRASH_TITLE}",
            "",
            f"A child process starts saga {CRASH_SAGA_ID} with DurableSagas over a SqliteJournal",
            "file, and is killed with SIGKILL inside payment/authorize, just after the gateway",
            "put the money on hold.",
            "",
            f"what the journal holds (fsaga journal show {CRASH_SAGA_ID}):",
            _indent(run.journal_at_crash),
            "",
            "state when the process died:",
            run.services_at_crash.describe(),
            "",
            "recovery (DurableSagas.recover()): the completed steps do not run again; the saga",
            "gets their recorded results. payment/authorize was in flight, so its outcome is",
            "unknown (DESIGN rule 3). The step is idempotent: the gateway files each hold under",
            f"the request's idempotency key, {key}, so recovery runs it",
            "again with the same key, and the gateway answers with the hold it already made",
            "instead of holding the money twice.",
            "",
            "outcome:",
            _indent(describe_outcome(run.outcome)),
            "",
            "the journal afterwards:",
            _indent(run.journal_after),
            "",
            "state afterwards:",
            run.services_after.describe(),
            f"  gateway:   holds requested by key: {run.services_after.payments.requests}",
            "",
        ]
    )
