"""Saga definitions for the journal command line's tests (tests/test_journal_cli.py).

``fsaga journal recover --definitions journal_cli_definitions:definitions`` imports this module
by name: pytest puts tests/ on ``sys.path``. The effects count their runs in `ran`, and the
idempotent charge keeps the idempotency key of each of its runs in `charge_keys`, so a test
can tell what a recovery ran again.

The ``relay`` saga's actions pause where the environment variable ``FSAGA_TEST_PAUSE_IN``
names them (the first time they run in the process): they print ``in-effect NAME`` and wait
for a line on stdin, so that a test can make two processes race at a chosen point.
"""

from __future__ import annotations

import os
import sys
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


@definitions.saga("tagging")
def tagging(label: str) -> Saga[object]:
    """tag, whose result (a set) the journal's codec cannot encode: the step fails, and is
    compensated with it."""
    return step(lambda: {label}, lambda _: undo("tag", ""), name="tag")


PAUSE_IN = "FSAGA_TEST_PAUSE_IN"
paused: set[str] = set()


def relay_act(name: str) -> str:
    if os.environ.get(PAUSE_IN) == name and name not in paused:
        paused.add(name)
        print(f"in-effect {name}", flush=True)
        sys.stdin.readline()
    return f"{name}-{current_context().attempt}"


@definitions.saga("relay")
def relay(_input: object) -> Saga[str]:
    """first, then second: idempotent, so a recovery runs the one in flight again."""
    return step(lambda: relay_act("first"), name="first", idempotent=True).then(
        step(lambda: relay_act("second"), name="second", idempotent=True)
    )


order_version_2 = SagaDefinitions()
order_version_2.saga("order", version=2)(order)

without_order = SagaDefinitions()
without_order.saga("fragile", version=2)(fragile)

not_definitions = {"order": order}
