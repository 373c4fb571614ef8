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
    DATABASE,
    REQUEST,
    OrderRequest,
    Payments,
    Receipt,
    ShopState,
    SimulatedClock,
    _indent,
    open_stores,
    order_id_for,
    order_saga,
    payment_saga,
    read_state,
    stock_up,
)
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.journal.cli import describe_saga
from fsaga.journal.sqlite import SqliteJournal
from fsaga.outcome import Outcome
from fsaga.render import describe_outcome
from fsaga.saga import Saga, step
from fsaga.stores import Store

__all__ = [
    "CRASH_SAGA_ID",
    "CRASH_TITLE",
    "ORDER_DEFINITION",
    "CrashRecovery",
    "PaymentsFile",
    "durable_definitions",
    "report_crash_recovery",
    "run_crash_recovery",
]


# -- run 5: durable, killed mid-saga, recovered from the journal -------------------------------

CRASH_SAGA_ID = "order-1005"
"""The id of run 5's durable saga."""

ORDER_DEFINITION = "place-order"
"""The name run 5's saga is registered under (see `durable_definitions`)."""

_PAYMENTS_FILE = "payments.json"
_JOURNAL_FILE = "journal.db"


@final
class PaymentsFile:
    """The payment gateway with its state in a JSON file, so that it outlives a process (the
    stores need no such help: they are SQLite tables already).

    Each call loads the state, makes the gateway call, and saves the state before it returns:
    what a call did is in the file even if its process dies right after. Results are ids
    (``"A-1"``, ``"P-1"``), which a journal can store. With `crash_in_authorize`, the process
    kills itself (SIGKILL) inside `authorize`, once the gateway holds the money.
    """

    __slots__ = ("crash_in_authorize", "path")

    def __init__(self, path: Path, *, crash_in_authorize: bool = False) -> None:
        self.path = path
        self.crash_in_authorize = crash_in_authorize

    def create(self) -> None:
        """Write a fresh gateway's state to the file."""
        self._save(Payments(SimulatedClock()))

    def load(self) -> Payments:
        """The gateway as the file has it."""
        state: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        return Payments(
            SimulatedClock(),
            held=state["held"],
            captured=state["captured"],
            voided=state["voided"],
            requests=state["requests"],
        )

    def _save(self, payments: Payments) -> None:
        state = {
            "held": payments.held,
            "captured": payments.captured,
            "voided": payments.voided,
            "requests": payments.requests,
        }
        written = self.path.with_suffix(".tmp")
        written.write_text(json.dumps(state), encoding="utf-8")
        os.replace(written, self.path)

    @contextlib.contextmanager
    def _payments(self) -> Iterator[Payments]:
        payments = self.load()
        yield payments
        self._save(payments)

    def authorize(self, amount_cents: int) -> str:
        """Hold the amount under the step's idempotency key (see `Payments.authorize_once`)."""
        with self._payments() as payments:
            key = current_context().idempotency_key
            authorization = payments.authorize_once(amount_cents, key)
        if self.crash_in_authorize:
            # The gateway holds the money; the answer never reaches the journal.
            os.kill(os.getpid(), signal.SIGKILL)
        return authorization

    def void(self, authorization: str) -> None:
        with self._payments() as payments:
            payments.void(authorization)

    def capture(self, authorization: str) -> str:
        with self._payments() as payments:
            return payments.capture(authorization)

    def refund(self, payment_id: str) -> None:
        with self._payments() as payments:
            payments.refund(payment_id)


def durable_definitions(
    stock: Store[str, int], orders: Store[str, dict[str, object]], payments: PaymentsFile
) -> SagaDefinitions:
    """The order saga, registered as `ORDER_DEFINITION` for durable runs over the stores and
    `payments`.

    Its input is an `OrderRequest` as a dict, with the ``order_id`` to write; its steps are
    `order_saga`'s (same paths), and its result the `Receipt` as a dict. The store steps record
    JSON receipts and are idempotent (each write carries its step's idempotency key as its
    write id); so is the authorisation: the gateway files each hold under the request's
    idempotency key, so running it again with the same key is safe.
    """
    definitions = SagaDefinitions()

    @definitions.saga(ORDER_DEFINITION)
    def place(request: dict[str, Any]) -> Saga[dict[str, str]]:
        authorize = step(
            partial(payments.authorize, request["amount_cents"]),
            payments.void,
            name="authorize",
            idempotent=True,
        )
        payment = payment_saga(authorize, payments.capture, payments.refund)
        order = OrderRequest(
            request["customer"], request["sku"], request["quantity"], request["amount_cents"]
        )
        return order_saga(stock, orders, order, request["order_id"], payment).map(_as_dict)

    return definitions


def _as_dict(receipt: Receipt) -> dict[str, str]:
    return {"order_id": receipt.order_id, "payment_id": receipt.payment_id}


def _durable_child(folder: str) -> None:
    """Run 5's doomed process: start the order durably; it dies inside the authorisation."""
    payments = PaymentsFile(Path(folder) / _PAYMENTS_FILE, crash_in_authorize=True)
    request = {**asdict(REQUEST), "order_id": order_id_for(CRASH_SAGA_ID)}
    stock, orders = open_stores(Path(folder) / DATABASE)
    with stock, orders, SqliteJournal(Path(folder) / _JOURNAL_FILE) as journal:
        runs = DurableSagas(journal, durable_definitions(stock, orders, payments))
        runs.start(ORDER_DEFINITION, request, saga_id=CRASH_SAGA_ID)
    raise RuntimeError("the process was meant to die inside payment/authorize")


@final
@dataclass(frozen=True, slots=True)
class CrashRecovery:
    """What run 5 saw: the journal and the shop's state after the crash, then after recovery."""

    journal_at_crash: str
    state_at_crash: ShopState
    outcome: Outcome[object]
    journal_after: str
    state_after: ShopState


def run_crash_recovery(folder: Path | None = None) -> CrashRecovery:
    """Start the order durably in a child process that is killed mid-payment, then recover it.

    The shop's database, the gateway's file and the journal are created in `folder` (which
    must not hold them yet), or by default in a temporary directory removed afterwards.

    Raises:
        RuntimeError: the child process did not die of SIGKILL (its error output says why).
    """
    with contextlib.ExitStack() as cleanup:
        if folder is None:
            folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="fsaga-demo-")))
        database = folder / DATABASE
        stock, orders = open_stores(database)
        with stock, orders:
            stock_up(stock)
        payments = PaymentsFile(folder / _PAYMENTS_FILE)
        payments.create()
        child = subprocess.run(
            [sys.executable, "-c", f"{_CHILD_IMPORT}; _durable_child({str(folder)!r})"],
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
        with SqliteJournal(folder / _JOURNAL_FILE) as journal:
            at_crash = _journal_show(journal)
            state_at_crash = read_state(database, payments.load())
            stock, orders = open_stores(database)
            with stock, orders:
                runs = DurableSagas(journal, durable_definitions(stock, orders, payments))
                outcome = runs.recover()[CRASH_SAGA_ID]
            if isinstance(outcome, BaseException):
                raise outcome
            after = _journal_show(journal)
        state_after = read_state(database, payments.load())
        return CrashRecovery(at_crash, state_at_crash, outcome, after, state_after)


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
    """Run 5's report: the journal and state at the crash, the recovery, its outcome, the
    journal and state afterwards."""
    key = f"{CRASH_SAGA_ID}/payment/authorize"
    rows = f"the rows of {DATABASE}: key, version, value as stored"
    return "\n".join(
        [
            f"== {number}. {CRASH_TITLE}",
            "",
            f"A child process starts saga {CRASH_SAGA_ID} with DurableSagas over a SqliteJournal",
            f"file, the stores in {DATABASE}, and is killed with SIGKILL inside payment/authorize,",
            "just after the gateway put the money on hold.",
            "",
            f"what the journal holds (fsaga journal show {CRASH_SAGA_ID}):",
            _indent(run.journal_at_crash),
            "",
            f"state when the process died ({rows}):",
            run.state_at_crash.describe(),
            "",
            "recovery (DurableSagas.recover()): the completed steps do not run again; the saga",
            "gets their recorded results, the stores' receipts included, so neither store is",
            "written twice. payment/authorize was in flight, so its outcome is unknown, and it is",
            "settled by rule 3 in docs/concepts.md. The step is idempotent: the gateway files each",
            f"hold under the request's idempotency key, {key}, so recovery",
            "runs it again with the same key, and the gateway answers with the hold it already",
            "made instead of holding the money twice.",
            "",
            "outcome:",
            _indent(describe_outcome(run.outcome)),
            "",
            "the journal afterwards:",
            _indent(run.journal_after),
            "",
            f"state afterwards ({rows}):",
            run.state_after.describe(),
            f"  gateway:   holds requested by key: {run.state_after.payments.requests}",
            "",
        ]
    )
