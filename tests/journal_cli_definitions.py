"""Saga definitions for the journal command line's tests (tests/test_journal_cli.py).

``fsaga journal recover --definitions journal_cli_definitions:definitions`` imports this module
by name: pytest puts tests/ on ``sys.path``. The effects count their runs in `ran`, and the
idempotent charge keeps the idempotency key of each of its runs in `charge_keys`, so a test
can tell what a recovery ran again.
"""

from __future__ import annotations

from collections import Counter

from fsaga import Saga, current_context, step
from fsaga.durable import SagaDefinitions

ran: Counter[str] = Counter()
charge_keys: list[str] = []


class Declined(Exception):
    """The card was refused."""


class Unavailable(Exception):
    """A service is down."""


def act(name: str) -> str:
    ran[name] += 1
    return f"{name}-done"


def undo(name: str, result: str) -> None:
    ran[f"undo {name}"] += 1


def charge(amount: int) -> int:
    ran["charge"] += 1
    charge_keys.append(current_context().idempotency_key)
    if amount > 100:
        raise Declined(f"card declined for {amount}")
    return amount


def release_failing(result: str) -> None:
    ran["undo reserve"] += 1
    raise Unavailable("inventory down")


def reset() -> None:
    ran.clear()
    charge_keys.clear()


definitions = SagaDefinitions()


@definitions.saga("order")
def order(amount: int) -> Saga[str]:
    """reserve, then charge (idempotent), then notify; a charge over 100 is declined."""
    return (
        step(lambda: act("reserve"), lambda result: undo("reserve", result), name="reserve")
        .then(
            step(
                lambda: charge(amount), lambda _: undo("charge", ""), name="charge", idempotent=True
            )
        )
        .then(step(lambda: act("notify"), name="notify"))
    )


@definitions.saga("fragile", version=2)
def fragile(amount: int) -> Saga[int]:
    """reserve, whose release fails, then charge: a declined charge is a partial failure."""
    return step(lambda: act("reserve"), release_failing, name="reserve").then(
        step(lambda: charge(amount), name="charge")
    )


order_version_2 = SagaDefinitions()
order_version_2.saga("order", version=2)(order)

without_order = SagaDefinitions()
without_order.saga("fragile", version=2)(fragile)

not_definitions = {"order": order}
