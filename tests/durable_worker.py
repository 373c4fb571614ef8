"""A process that runs durable sagas for the crash and race tests, and dies where it is told to.

Run it from the project root; it prints one JSON line, the outcome of ``start`` or the outcomes
of ``recover`` by saga id (an error in place of an outcome is ``{"type": ErrorName, ...}``)::

    python tests/durable_worker.py start --db J.db --evidence E.jsonl [--saga-id o-1] [--decline]
    python tests/durable_worker.py recover --db J.db --evidence E.jsonl

``--dsn DSN --schema SCHEMA`` in place of ``--db`` runs on a `PostgresJournal` (migrated).

``start-async`` and ``recover-async`` do the same with `DurableSagas.start_async` and
`DurableSagas.recover_async`; ``--saga parcel`` starts the saga whose ``par`` branches overlap
(`parcel_saga`) instead of ``order``.

What the parent test counts lives outside the journal, in the evidence file: every run of an
action or a compensation appends a line with its idempotency key (from `current_context()`),
and every `finish` that recorded an outcome appends one, so executions can be counted across
processes, crashes included.

Options:

- ``--crash WHEN:KIND:PATH`` kills the process with SIGKILL at one point: ``before`` or
  ``after`` the journal write that carries an entry of KIND for step PATH (``intent``,
  ``compensation_intent``, ...; ``finish:-`` is the write of the outcome), or ``in`` the
  effect (``in:action:create``, ``in:compensation:create``) once it left its evidence and
  before its result reaches the journal;
- ``--fail-once KIND:PATH`` makes that journal write fail once with `JournalError`, as a
  commit that SQLite rolled back does, before anything is written;
- ``--wait``: open the journal, print ``ready``, and wait for a line on stdin before starting,
  so that the parent can release several processes at once;
- ``--pause-in PATH``: the action of step PATH prints ``in-effect`` and waits for a line on
  stdin before it returns;
- ``--stale-after SECONDS``: `DurableSagas(stale_after=...)`;
- ``--clock SECONDS``: the journal's clock stands still at SECONDS (reproducible files).

The test modules import it for the same saga definition and journal proxy.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final, final

import anyio
import anyio.lowlevel

from fsaga import Failure, Outcome, PartialFailure, Saga, Success, current_context, par, step
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.journal import (
    Entry,
    FinishedStatus,
    Journal,
    JournalError,
    PostgresJournal,
    SagaRecord,
    SagaStatus,
    SqliteJournal,
)

COMPENSABLE: Final = ("reserve", "create", "charge")
"""The steps of the ``order`` saga that have a compensation; ``notify`` (last) has none."""


class Declined(Exception):
    """The card was declined: step ``charge`` fails and the saga compensates."""


def die() -> None:
    """Stop the process the way a crash does: no cleanup, no flush, no `finally`."""
    os.kill(os.getpid(), signal.SIGKILL)


def write_evidence(evidence: Path, **fields: object) -> None:
    """Append one JSON line to the evidence file in one `write` (atomic with ``O_APPEND``, so
    processes never interleave lines); once written, the kernel keeps it whatever happens to
    the process."""
    line = json.dumps({"pid": os.getpid(), **fields}) + "\n"
    descriptor = os.open(evidence, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


def read_evidence(evidence: Path) -> list[dict[str, Any]]:
    """Every line written to the evidence file so far, in order."""
    if not evidence.exists():
        return []
    return [json.loads(line) for line in evidence.read_text().splitlines()]


@final
@dataclass(frozen=True, slots=True)
class CrashPoint:
    """Where to die: `when` is ``before``, ``after`` or ``in``; `kind` an entry kind or
    ``finish`` (for ``in``: ``action`` or ``compensation``); `path` a step path or ``-``."""

    when: str
    kind: str
    path: str

    @classmethod
    def parse(cls, text: str) -> CrashPoint:
        when, kind, path = text.split(":")
        if when not in ("before", "after", "in"):
            raise ValueError(f"a crash point starts with before, after or in, got {text!r}")
        return cls(when, kind, path)

    def matches(self, when: str, writes: Sequence[tuple[str, str]]) -> bool:
        """Whether a journal write of `writes` (``(kind, path)`` pairs) is this point, `when`
        it is about to happen or has just happened."""
        return self.when == when and (self.kind, self.path) in writes


@final
class Shop:
    """The effects of the ``order`` saga: each run leaves a line of evidence.

    Args:
        evidence: the evidence file.
        crash: dies inside the effect this names (``in:...``), after its evidence.
        pause: called with the step's path in every action, after its evidence.
    """

    def __init__(
        self,
        evidence: Path,
        *,
        crash: CrashPoint | None = None,
        pause: Callable[[str], None] | None = None,
    ) -> None:
        self.evidence = evidence
        self.crash = crash
        self.pause = pause

    def act(self, path: str, *, decline: bool = False) -> str:
        self._ran("action")
        if self.pause is not None:
            self.pause(path)
        if decline:
            raise Declined("card declined")
        return f"{path}-done"

    def undo(self, path: str, result: str) -> None:
        assert result == f"{path}-done", (path, result)
        self._ran("compensation")

    def _ran(self, kind: str) -> None:
        context = current_context()
        write_evidence(
            self.evidence,
            kind=kind,
            path=context.path,
            key=context.idempotency_key,
            attempt=context.attempt,
        )
        if self.crash == CrashPoint("in", kind, context.path):
            die()


def order_definitions(shop: Shop) -> SagaDefinitions:
    """The ``order`` saga, version 1: reserve, create, charge (declined when the input says
    so), notify; the result is the input's ``sku``. Every step is idempotent, so a step that a
    crash cut off runs again with the same key instead of being reported unresolved.

    The golden journals in tests/fixtures/journals were recorded with this definition:
    changing it means regenerating them.
    """
    definitions = SagaDefinitions()

    @definitions.saga("order")
    def order(input: dict[str, Any]) -> Saga[str]:
        def undoable(path: str, *, decline: bool = False) -> Saga[str]:
            return step(
                lambda: shop.act(path, decline=decline),
                lambda result: shop.undo(path, result),
                name=path,
                idempotent=True,
            )

        return (
            undoable("reserve")
            .then(undoable("create"))
            .then(undoable("charge", decline=bool(input["decline"])))
            .then(step(lambda: shop.act("notify"), name="notify", idempotent=True))
            .map(lambda _: str(input["sku"]))
        )

    return definitions


PARCEL_COMPENSABLE: Final = ("reserve", "charge", "ship")
"""The steps of the ``parcel`` saga that have a compensation; ``notify`` (last) has none."""

CHARGE_PAUSES: Final = 2
"""How often ``charge`` of the ``parcel`` saga lets other tasks run before it acts (async)."""


def parcel_saga(shop: Shop, input: dict[str, Any], *, asynchronous: bool) -> Saga[str]:
    """The ``parcel`` saga: reserve, then charge and ship in `par` branches, then notify; the
    result is the input's ``sku``. Every step is idempotent.

    With `asynchronous` its actions are async, and ``charge`` lets the other tasks run
    `CHARGE_PAUSES` times before it acts: under `DurableSagas.start_async` the branches
    overlap, ``ship`` finishes first, and the journal interleaves their entries. Without, the
    same steps are plain functions (for a recovery by `DurableSagas.recover`).
    """

    def undoable(path: str, *, decline: bool = False, pauses: int = 0) -> Saga[str]:
        def act() -> str:
            return shop.act(path, decline=decline)

        async def act_later() -> str:
            for _ in range(pauses):
                await anyio.lowlevel.checkpoint()
            return act()

        return step(
            act_later if asynchronous else act,
            lambda result: shop.undo(path, result),
            name=path,
            idempotent=True,
        )

    return (
        undoable("reserve")
        .then(
            par(
                undoable("charge", decline=bool(input["decline"]), pauses=CHARGE_PAUSES),
                undoable("ship"),
            )
        )
        .then(step(lambda: shop.act("notify"), name="notify", idempotent=True))
        .map(lambda _: str(input["sku"]))
    )


def worker_definitions(shop: Shop, *, asynchronous: bool = False) -> SagaDefinitions:
    """The ``order`` saga (`order_definitions`) and the ``parcel`` saga (`parcel_saga`)."""
    definitions = order_definitions(shop)

    @definitions.saga("parcel")
    def parcel(input: dict[str, Any]) -> Saga[str]:
        return parcel_saga(shop, input, asynchronous=asynchronous)

    return definitions


@final
class EvidenceJournal(Journal):
    """A `Journal` that forwards to another, leaves evidence of every outcome it records, and
    can die at a crash point or fail one write."""

    def __init__(
        self,
        inner: Journal,
        evidence: Path,
        *,
        crash: CrashPoint | None = None,
        fail_once: tuple[str, str] | None = None,
    ) -> None:
        self.inner = inner
        self.evidence = evidence
        self.crash = crash
        self.fail_once = fail_once

    def create(
        self,
        saga_id: str,
        name: str,
        version: int,
        input: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> tuple[SagaRecord, bool]:
        return self.inner.create(saga_id, name, version, input, entries=entries)

    def append(self, saga_id: str, entries: Sequence[Entry]) -> None:
        writes = _writes(entries)
        self._before(writes)
        self.inner.append(saga_id, entries)
        self._after(writes)

    def entries(self, saga_id: str) -> list[Entry]:
        return self.inner.entries(saga_id)

    def finish(
        self,
        saga_id: str,
        status: FinishedStatus,
        outcome: bytes,
        *,
        entries: Sequence[Entry] = (),
    ) -> bool:
        writes = [*_writes(entries), ("finish", "-")]
        self._before(writes)
        finished = self.inner.finish(saga_id, status, outcome, entries=entries)
        if finished:
            write_evidence(self.evidence, kind="outcome", path="-", key=saga_id, status=status)
        self._after(writes)
        return finished

    def get(self, saga_id: str) -> SagaRecord | None:
        return self.inner.get(saga_id)

    def sagas(self, status: SagaStatus | None = None) -> list[SagaRecord]:
        return self.inner.sagas(status)

    def claim_for_recovery(
        self, saga_id: str, *, max_attempts: int, stale_before: float | None = None
    ) -> bool:
        return self.inner.claim_for_recovery(
            saga_id, max_attempts=max_attempts, stale_before=stale_before
        )

    def record_recovery_error(self, saga_id: str, error: bytes) -> bool:
        return self.inner.record_recovery_error(saga_id, error)

    def release(self, saga_id: str) -> SagaRecord:
        return self.inner.release(saga_id)

    def close(self) -> None:
        self.inner.close()

    def _before(self, writes: Sequence[tuple[str, str]]) -> None:
        if self.crash is not None and self.crash.matches("before", writes):
            die()
        if self.fail_once is not None and self.fail_once in writes:
            self.fail_once = None
            raise JournalError("disk I/O error (injected: the commit was rolled back)")

    def _after(self, writes: Sequence[tuple[str, str]]) -> None:
        if self.crash is not None and self.crash.matches("after", writes):
            die()


def _writes(entries: Sequence[Entry]) -> list[tuple[str, str]]:
    return [(entry.kind, entry.path) for entry in entries]


def describe(outcome: Outcome[object] | BaseException) -> dict[str, Any]:
    """`outcome` (or the error returned or raised in its place) as JSON-ready data."""
    match outcome:
        case Success(value=value):
            return {"type": "Success", "value": value}
        case Failure(error=error, compensated=compensated):
            return {"type": "Failure", "error": str(error), "compensated": list(compensated)}
        case PartialFailure():
            return {
                "type": "PartialFailure",
                "error": str(outcome.error),
                "compensated": list(outcome.compensated),
                "failed": [failure.path for failure in outcome.failed_compensations],
                "skipped": list(outcome.skipped),
                "unresolved": list(outcome.unresolved),
            }
        case BaseException():
            return {"type": type(outcome).__name__, "error": str(outcome)}


def _write_label(text: str) -> tuple[str, str]:
    kind, path = text.split(":")
    return kind, path


def _pause_in(path: str) -> Callable[[str], None]:
    def pause(current: str) -> None:
        if current == path:
            print("in-effect", flush=True)
            sys.stdin.readline()

    return pause


def main(arguments: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run durable order sagas; die where told.")
    parser.add_argument("command", choices=("start", "recover", "start-async", "recover-async"))
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", type=Path)
    where.add_argument("--dsn")
    parser.add_argument("--schema", default="fsaga")
    parser.add_argument("--evidence", type=Path, required=True)
    parser.add_argument("--saga-id", default="o-1")
    parser.add_argument("--saga", choices=("order", "parcel"), default="order")
    parser.add_argument("--sku", default="sku-1")
    parser.add_argument("--decline", action="store_true")
    parser.add_argument("--crash", type=CrashPoint.parse)
    parser.add_argument("--fail-once", type=_write_label)
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--pause-in")
    parser.add_argument("--stale-after", type=float, default=0.0)
    parser.add_argument("--clock", type=float)
    options = parser.parse_args(arguments)

    crash: CrashPoint | None = options.crash
    pause = None if options.pause_in is None else _pause_in(options.pause_in)
    shop = Shop(options.evidence, crash=crash, pause=pause)
    fixed: float | None = options.clock
    clock = None if fixed is None else lambda: fixed
    durable: Journal
    if options.dsn is not None:
        durable = PostgresJournal(options.dsn, schema=options.schema, clock=clock)
    elif clock is None:
        durable = SqliteJournal(options.db)
    else:
        durable = SqliteJournal(options.db, clock=clock)
    journal = EvidenceJournal(durable, options.evidence, crash=crash, fail_once=options.fail_once)
    asynchronous = options.command.endswith("-async")
    definitions = worker_definitions(shop, asynchronous=asynchronous)
    runs = DurableSagas(journal, definitions, stale_after=options.stale_after)
    if options.wait:
        print("ready", flush=True)
        sys.stdin.readline()
    with journal:
        result: dict[str, Any]
        if options.command.startswith("start"):
            input = {"sku": options.sku, "decline": options.decline}
            saga_id = options.saga_id
            try:
                outcome = (
                    anyio.run(partial(runs.start_async, options.saga, input, saga_id=saga_id))
                    if asynchronous
                    else runs.start(options.saga, input, saga_id=saga_id)
                )
                result = describe(outcome)
            except Exception as error:  # the parent asserts on it
                result = describe(error)
        else:
            recovered = anyio.run(runs.recover_async) if asynchronous else runs.recover()
            result = {saga_id: describe(outcome) for saga_id, outcome in recovered.items()}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    # Run as the module `durable_worker`, not as `__main__`: the journal records an error's
    # type as module:qualname, and a recovery in another process imports it by that name.
    import durable_worker

    durable_worker.main()
