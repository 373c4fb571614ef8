"""Durable runs: start once, record every transition, recover by replay from any crash point.

A crash is simulated by state surgery: a run's full journal is recorded, then every prefix of
it (what a crash after that entry leaves behind) is copied into a fresh journal as an
unfinished saga and recovered there.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from journal_stores import BACKENDS, JournalStore, journal_store

from fsaga import (
    Failure,
    PartialFailure,
    Retry,
    Saga,
    Success,
    UnknownOutcomeError,
    current_context,
    par,
    step,
)
from fsaga.durable import (
    DefinitionConflictError,
    DurableSagas,
    NonDeterminismError,
    RecordedError,
    SagaDefinitions,
    UnknownDefinitionError,
)
from fsaga.journal import Entry, JsonCodec, MemoryJournal
from fsaga.render import describe_outcome


class Declined(Exception):
    pass


class Shop:
    """Effects that count how often each one ran, and an idempotent payment."""

    def __init__(self, *, decline: bool = False) -> None:
        self.decline = decline
        self.ran: Counter[str] = Counter()
        self.undone: list[str] = []

    def act(self, name: str) -> str:
        self.ran[name] += 1
        return f"{name}-done"

    def undo(self, name: str, result: str) -> None:
        assert result == f"{name}-done"
        self.undone.append(name)

    def charge(self) -> str:
        self.ran["charge"] += 1
        if self.decline:
            raise Declined("card declined")
        return "charged"


def order(shop: Shop, sku: str) -> Saga[str]:
    def undoable(name: str) -> Saga[str]:
        return step(lambda: shop.act(name), lambda result: shop.undo(name, result), name=name)

    return (
        undoable("reserve")
        .then(undoable("create"))
        .then(step(shop.charge, lambda _: shop.undo("charge", "charge-done"), name="charge"))
        .then(step(lambda: shop.act("notify"), name="notify"))
        .map(lambda _: sku)
    )


def make(shop: Shop, *, version: int = 1) -> tuple[SagaDefinitions, DurableSagas]:
    definitions = SagaDefinitions()
    definitions.saga("order", version=version)(partial(order, shop))
    return definitions, DurableSagas(MemoryJournal(), definitions)


def test_a_durable_run_records_every_transition_and_its_outcome() -> None:
    shop = Shop()
    _, runs = make(shop)

    assert runs.start("order", "sku-1", saga_id="o-1") == Success("sku-1")
    journal = runs._journal
    entries = journal.entries("o-1")
    assert [(entry.kind, entry.path) for entry in entries] == [
        (kind, path)
        for path in ("reserve", "create", "charge", "notify")
        for kind in ("intent", "completed")
    ]
    record = journal.get("o-1")
    assert record is not None
    assert record.status == "succeeded"


def test_starting_an_id_again_returns_its_outcome_and_runs_nothing() -> None:
    shop = Shop(decline=True)
    _, runs = make(shop)

    first = runs.start("order", "sku-1", saga_id="o-1")
    again = runs.start("order", "sku-1", saga_id="o-1")

    assert isinstance(first, Failure)
    assert first.compensated == ("create", "reserve")
    assert again == Failure(RecordedError("Declined", "card declined"), ("create", "reserve"))
    assert shop.ran == Counter({"reserve": 1, "create": 1, "charge": 1})


def test_the_same_id_with_other_input_or_definition_is_a_conflict() -> None:
    _, runs = make(Shop())
    runs.start("order", "sku-1", saga_id="o-1")

    with pytest.raises(DefinitionConflictError, match="'o-1'"):
        runs.start("order", "sku-2", saga_id="o-1")


def test_an_unknown_definition_is_refused_before_anything_is_written() -> None:
    _, runs = make(Shop())

    with pytest.raises(UnknownDefinitionError, match="'refund'"):
        runs.start("refund", "x", saga_id="r-1")
    assert runs._journal.get("r-1") is None


def crash_points(decline: bool) -> list[list[Entry]]:
    """Every prefix of a full run's journal: what a crash after each entry leaves."""
    _, runs = make(Shop(decline=decline))
    runs.start("order", "sku-1", saga_id="o-1")
    entries = runs._journal.entries("o-1")
    return [entries[:cut] for cut in range(len(entries) + 1)]


@pytest.mark.parametrize("decline", [False, True], ids=["succeeds", "declined"])
def test_recovery_from_every_crash_point_keeps_the_rules(decline: bool) -> None:
    codec = JsonCodec()
    for prefix in crash_points(decline):
        shop = Shop(decline=decline)
        definitions, _ = make(shop)
        journal = MemoryJournal()
        journal.create("o-1", "order", 1, codec.encode("sku-1"), entries=prefix)
        recorded = {entry.path for entry in prefix if entry.kind == "completed"}
        in_flight = prefix[-1].path if prefix and prefix[-1].kind in ("intent",) else None

        outcomes = DurableSagas(journal, definitions).recover()

        outcome = outcomes["o-1"]
        assert not isinstance(outcome, BaseException), outcome
        # No completed step ran again; the one in flight ran at most once more.
        for path in recorded:
            assert shop.ran[path] == 0, f"{path} ran again after {len(prefix)} entries"
        if in_flight is not None:
            assert shop.ran[in_flight] <= 1
        # Exactly one outcome, and what completed was undone unless the saga succeeded.
        record = journal.get("o-1")
        assert record is not None
        assert record.finished
        if isinstance(outcome, Success):
            assert not decline
            assert shop.undone == []
        else:
            assert decline or in_flight is not None
            assert isinstance(outcome, Failure | PartialFailure)
            reported = set(outcome.compensated)
            if isinstance(outcome, PartialFailure):
                reported |= set(outcome.unresolved)
            completed_compensable = {
                entry.path
                for entry in journal.entries("o-1")
                if entry.kind == "completed" and entry.path != "notify"
            }
            assert completed_compensable <= reported


def test_a_step_in_flight_at_the_crash_is_an_unknown_outcome() -> None:
    codec = JsonCodec()
    shop = Shop()
    definitions, _ = make(shop)
    journal = MemoryJournal()
    prefix = [
        Entry(1, "intent", "reserve", 1),
        Entry(2, "completed", "reserve", 1, codec.encode("reserve-done")),
        Entry(3, "intent", "create", 1),
    ]
    journal.create("o-1", "order", 1, codec.encode("sku-1"), entries=prefix)

    outcome = DurableSagas(journal, definitions).recover()["o-1"]

    assert isinstance(outcome, PartialFailure)
    assert outcome.unresolved == ("create",)
    assert outcome.compensated == ("reserve",)
    assert shop.ran["create"] == 0


def test_an_idempotent_step_in_flight_is_run_again_with_the_same_key() -> None:
    codec = JsonCodec()
    keys: list[str] = []

    def charge() -> str:
        keys.append(current_context().idempotency_key)
        return "charged"

    definitions = SagaDefinitions()
    definitions.saga("pay")(lambda _: step(charge, lambda _: None, name="charge", idempotent=True))
    journal = MemoryJournal()
    journal.create("p-1", "pay", 1, codec.encode(None), entries=[Entry(1, "intent", "charge", 1)])

    outcome = DurableSagas(journal, definitions).recover()["p-1"]

    assert outcome == Success("charged")
    assert keys == ["p-1/charge"]


def test_a_changed_definition_raises_non_determinism_and_writes_nothing() -> None:
    _, runs = make(Shop())
    runs.start("order", "sku-1", saga_id="o-1")
    full = runs._journal.entries("o-1")
    codec = JsonCodec()
    journal = MemoryJournal()
    journal.create("o-1", "order", 1, codec.encode("sku-1"), entries=full[:4])
    changed = SagaDefinitions()
    shop = Shop()
    changed.saga("order")(
        lambda _: step(lambda: shop.act("reserve"), name="reserve").then(
            step(lambda: shop.act("audit"), name="audit")
        )
    )

    outcome = DurableSagas(journal, changed).recover()["o-1"]

    assert isinstance(outcome, NonDeterminismError)
    assert "audit" in str(outcome)
    assert journal.entries("o-1") == full[:4]
    assert shop.ran == Counter()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JournalStore:
    """A durable journal's store: an SQLite file, or a PostgreSQL schema."""
    return journal_store(request.param, request, tmp_path)


def test_durable_runs_survive_reopening_a_durable_journal(store: JournalStore) -> None:
    shop = Shop()
    definitions = SagaDefinitions()
    definitions.saga("order")(partial(order, shop))
    with store.open() as journal:
        assert DurableSagas(journal, definitions).start("order", "sku-1", saga_id="o-1") == (
            Success("sku-1")
        )
    with store.open() as journal:
        assert DurableSagas(journal, definitions).start("order", "sku-1", saga_id="o-1") == (
            Success("sku-1")
        )
    assert shop.ran["reserve"] == 1


# -- durable runs under the async interpreter --------------------------------------------------


def async_order(shop: Shop, sku: str) -> Saga[str]:
    async def reserve() -> str:
        await anyio.lowlevel.checkpoint()
        return shop.act("reserve")

    async def release(result: str) -> None:
        await anyio.lowlevel.checkpoint()
        shop.undo("reserve", result)

    async def charge() -> str:
        await anyio.lowlevel.checkpoint()
        return shop.charge()

    return (
        step(reserve, release, name="reserve")
        .then(par(step(lambda: shop.act("pack"), name="pack"), step(charge, name="charge")))
        .map(lambda _: sku)
    )


@pytest.mark.anyio
async def test_an_async_durable_run_records_and_replays_like_a_sync_one() -> None:
    shop = Shop()
    definitions = SagaDefinitions()
    definitions.saga("order")(partial(async_order, shop))
    runs = DurableSagas(MemoryJournal(), definitions)

    first = await runs.start_async("order", "sku-1", saga_id="a-1")
    again = await runs.start_async("order", "sku-1", saga_id="a-1")

    assert first == again == Success("sku-1")
    assert shop.ran == Counter({"reserve": 1, "pack": 1, "charge": 1})
    paths = [entry.path for entry in runs._journal.entries("a-1") if entry.kind == "intent"]
    # The branches run concurrently: in whatever order their tasks start.
    assert paths[0] == "reserve"
    assert sorted(paths[1:]) == ["charge", "pack"]


@pytest.mark.anyio
async def test_async_recovery_from_every_crash_point_never_reruns_a_completed_step() -> None:
    codec = JsonCodec()
    seed = Shop(decline=True)
    definitions = SagaDefinitions()
    definitions.saga("order")(partial(async_order, seed))
    full_run = DurableSagas(MemoryJournal(), definitions)
    await full_run.start_async("order", "sku-1", saga_id="a-1")
    entries = full_run._journal.entries("a-1")

    for cut in range(len(entries) + 1):
        shop = Shop(decline=True)
        recovering = SagaDefinitions()
        recovering.saga("order")(partial(async_order, shop))
        journal = MemoryJournal()
        journal.create("a-1", "order", 1, codec.encode("sku-1"), entries=entries[:cut])
        done = {entry.path for entry in entries[:cut] if entry.kind == "completed"}

        outcome = (await DurableSagas(journal, recovering).recover_async())["a-1"]

        assert isinstance(outcome, Failure | PartialFailure), outcome
        assert all(shop.ran[path] == 0 for path in done), (cut, shop.ran)
        record = journal.get("a-1")
        assert record is not None
        assert record.finished


def test_a_replayed_failure_is_still_its_type_so_typed_retries_decide_alike() -> None:
    codec = JsonCodec()
    attempts: list[int] = []

    def charge() -> str:
        attempts.append(current_context().attempt)
        return "charged"

    definitions = SagaDefinitions()
    definitions.saga("pay")(
        lambda _: step(
            charge, name="charge", retry=Retry(2, delay=0.0, jitter=0.0, retry_on=Declined)
        )
    )
    failed = codec.encode([f"{Declined.__module__}:Declined", "Declined", "card declined"])
    journal = MemoryJournal()
    journal.create(
        "p-1",
        "pay",
        1,
        codec.encode(None),
        entries=[Entry(1, "intent", "charge", 1), Entry(2, "failed", "charge", 1, failed)],
    )

    outcome = DurableSagas(journal, definitions).recover()["p-1"]

    assert outcome == Success("charged")
    assert attempts == [2]


def test_recorded_errors_of_types_that_cannot_be_imported_stay_recorded_errors() -> None:
    codec = JsonCodec()
    definitions = SagaDefinitions()
    definitions.saga("pay")(lambda _: step(lambda: "charged", name="charge"))
    failed = codec.encode(["nowhere.module:Gone", "Gone", "vanished"])
    journal = MemoryJournal()
    journal.create(
        "p-1",
        "pay",
        1,
        codec.encode(None),
        entries=[Entry(1, "intent", "charge", 1), Entry(2, "failed", "charge", 1, failed)],
    )

    outcome = DurableSagas(journal, definitions).recover()["p-1"]

    assert isinstance(outcome, Failure)
    assert type(outcome.error) is RecordedError
    assert str(outcome.error) == "Gone: vanished"


def test_an_undo_intent_after_an_in_flight_step_is_not_read_as_its_result() -> None:
    # Written by a recovery that started voiding the in-flight `b`, then died: the entry after
    # b's intent is the intent of b's own undo, with the same path and attempt.
    codec = JsonCodec()
    ran: list[str] = []
    voided: list[str] = []

    def act(name: str) -> str:
        ran.append(name)
        return name

    definitions = SagaDefinitions()
    definitions.saga("pair")(
        lambda _: step(partial(act, "a"), lambda _: None, name="a").then(
            step(
                partial(act, "b"),
                name="b",
                retry=Retry(2, delay=0.0, jitter=0.0),
                on_unknown=lambda context: voided.append(context.path),
            )
        )
    )
    journal = MemoryJournal()
    journal.create(
        "o-1",
        "pair",
        1,
        codec.encode(None),
        entries=[
            Entry(1, "intent", "a", 1),
            Entry(2, "completed", "a", 1, codec.encode("a")),
            Entry(3, "intent", "b", 1),
            Entry(4, "compensation_intent", "b", 1),
        ],
    )

    outcome = DurableSagas(journal, definitions).recover()["o-1"]

    assert isinstance(outcome, Failure)
    assert outcome.compensated == ("b", "a")
    assert ran == []
    assert voided == ["b"]


# -- what a replay feeds the engine ------------------------------------------------------------


def test_a_compensation_whose_outcome_was_never_journaled_is_replayed_as_interrupted() -> None:
    """A compensation's intent followed by another step's undo (the run was interrupted while
    it ran, and went on): the replay fails that compensation with a recorded "Interrupted"
    error, never runs it, and goes on to the next one."""
    codec = JsonCodec()
    shop = Shop()
    definitions, _ = make(shop)
    journal = MemoryJournal()
    journal.create(
        "o-1",
        "order",
        1,
        codec.encode("sku-1"),
        entries=[
            Entry(1, "intent", "reserve", 1),
            Entry(2, "completed", "reserve", 1, codec.encode("reserve-done")),
            Entry(3, "intent", "create", 1),
            Entry(4, "completed", "create", 1, codec.encode("create-done")),
            Entry(5, "intent", "charge", 1),
            Entry(6, "failed", "charge", 1, codec.encode(["test:Declined", "Declined", "no"])),
            Entry(7, "compensation_intent", "create", 1),
            Entry(8, "compensation_intent", "reserve", 1),
        ],
    )

    outcome = DurableSagas(journal, definitions).recover()["o-1"]

    assert isinstance(outcome, PartialFailure)
    (cut_off,) = outcome.failed_compensations
    assert (cut_off.path, cut_off.attempts) == ("create", 1)
    assert cut_off.error == RecordedError("Interrupted", "the compensation of 'create' was cut off")
    assert str(cut_off.error) == "Interrupted: the compensation of 'create' was cut off"
    assert outcome.compensated == ("reserve",)  # in flight at the crash: run again
    assert shop.undone == ["reserve"]
    assert shop.ran == Counter()


def test_a_recovered_unknown_outcome_reads_once_as_its_type() -> None:
    """An ``unknown`` entry comes back as the unknown-outcome error it recorded, not wrapped in
    a second one (it read ``UnknownOutcomeError('UnknownOutcomeError: step ...')``)."""
    codec = JsonCodec()
    definitions = SagaDefinitions()
    definitions.saga("pay")(lambda _: step(lambda: "charged", lambda _: None, name="charge"))
    unknown = ["fsaga.errors:UnknownOutcomeError", "UnknownOutcomeError", "no answer"]
    journal = MemoryJournal()
    journal.create(
        "p-1",
        "pay",
        1,
        codec.encode(None),
        entries=[
            Entry(1, "intent", "charge", 1),
            Entry(2, "unknown", "charge", 1, codec.encode(unknown)),
        ],
    )

    outcome = DurableSagas(journal, definitions).recover()["p-1"]

    assert isinstance(outcome, PartialFailure)
    assert outcome.unresolved == ("charge",)
    assert isinstance(outcome.error, UnknownOutcomeError)
    assert repr(outcome.error) == "UnknownOutcomeError('no answer')"
    assert describe_outcome(outcome).splitlines()[0] == (
        "PartialFailure: UnknownOutcomeError('no answer')"
    )
    assert "UnknownOutcomeError: UnknownOutcomeError" not in str(outcome.error)


def test_an_unknown_definition_names_the_registered_ones() -> None:
    _, runs = make(Shop())

    with pytest.raises(UnknownDefinitionError, match=r"'refund' \(registered: 'order'\)") as raised:
        runs.start("refund", "x", saga_id="r-1")

    assert raised.value.registered == ("order",)
    with pytest.raises(UnknownDefinitionError, match=r"\(registered: none\)"):
        SagaDefinitions().lookup("order")
