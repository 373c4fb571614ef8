"""Results rejected after their effect took place (`fsaga.errors.ResultRejectedError`).

The engine hook, under `SyncInterpreter`, `AsyncInterpreter` and driven by hand: the step is
completed with its result, fails without a retry, and is compensated with that result; in the
undo (an unknown outcome resolved by running the step again) and after the run started to
fail (a late completion), it is compensated like any completed step.

Then what a durable run makes of it: a step whose result the codec cannot encode ran its effect
three times (an unknown outcome retried, then run again in the undo); now it runs once, fails
with a `CodecError` naming the step, and is compensated in-process with its result. The journal
records the rejection, so a replay makes the same decisions; a compensation whose result was
never recorded is refused after a crash, never run with a guess.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import anyio.lowlevel
import pytest
from crashing_journal import Crash, CrashingJournal

from fsaga import (
    AsyncInterpreter,
    Failure,
    PartialFailure,
    Retry,
    Saga,
    StepCompleted,
    StepFailed,
    Success,
    SyncInterpreter,
    UnknownOutcomeError,
    current_context,
    step,
)
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.errors import ResultRejectedError
from fsaga.events import Event
from fsaga.interpreter._engine import Engine, EngineSettings
from fsaga.journal import CodecError, Entry, JsonCodec, MemoryJournal

NO_WAIT = Retry(3, delay=0.0, jitter=0.0)


class WrongDay(Exception):
    pass


# -- the engine hook ---------------------------------------------------------------------------


def rejecting_order(ran: Counter[str], undone: list[object]) -> Saga[object]:
    """reserve, then book (which takes effect but rejects its result), then notify."""

    def book() -> str:
        ran["book"] += 1
        raise ResultRejectedError("B-1", WrongDay("booked for the wrong day"))

    return (
        step(lambda: "R-1", undone.append, name="reserve")
        .then(step(book, undone.append, name="book", retry=NO_WAIT))
        .then(step(lambda: ran.update(["notify"]), name="notify"))
    )


def test_a_rejected_result_completes_the_step_fails_it_without_a_retry_and_compensates_it() -> None:
    ran: Counter[str] = Counter()
    undone: list[object] = []
    events: list[Event] = []

    outcome = rejecting_order(ran, undone).run(SyncInterpreter(listeners=[events.append]))

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, WrongDay)
    assert outcome.compensated == ("book", "reserve")
    assert undone == ["B-1", "R-1"]  # the rejected step's compensation got its result
    assert ran == Counter({"book": 1})  # one attempt of three: no retry
    about_book = [
        (type(event).__name__, getattr(event, "result", None) or getattr(event, "error", None))
        for event in events
        if isinstance(event, StepCompleted | StepFailed) and event.path == "book"
    ]
    assert about_book == [("StepCompleted", "B-1"), ("StepFailed", outcome.error)]


@pytest.mark.anyio
async def test_a_rejected_result_is_handled_alike_under_the_async_interpreter() -> None:
    ran: Counter[str] = Counter()
    undone: list[object] = []

    async def book() -> str:
        await anyio.lowlevel.checkpoint()
        ran["book"] += 1
        raise ResultRejectedError("B-1", WrongDay("booked for the wrong day"))

    saga = step(lambda: "R-1", undone.append, name="reserve").then(
        step(book, undone.append, name="book", retry=NO_WAIT)
    )

    outcome = await saga.run(AsyncInterpreter())

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, WrongDay)
    assert outcome.compensated == ("book", "reserve")
    assert undone == ["B-1", "R-1"]
    assert ran == Counter({"book": 1})


def test_a_rejected_result_while_resolving_an_unknown_outcome_is_compensated_with_it() -> None:
    """An idempotent step whose outcome stayed unknown is run again in the undo to learn its
    result; if that run rejects its result, the step is still compensated with it."""
    undone: list[object] = []

    def charge() -> str:
        attempt = current_context().attempt
        if attempt <= 2:
            raise UnknownOutcomeError(f"no answer to attempt {attempt}")
        raise ResultRejectedError("C-3", WrongDay("charged on the wrong day"))

    saga = step(charge, undone.append, name="charge", idempotent=True)

    outcome = saga.run(SyncInterpreter())

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, UnknownOutcomeError)
    assert outcome.compensated == ("charge",)
    assert undone == ["C-3"]


def test_a_rejected_result_after_the_run_started_to_fail_joins_the_undo() -> None:
    """A late completion (the run failed while the step was in flight) that rejects its result
    is undone like any late completion: driven by hand, the interruption comes while the
    action is in flight, and the rejection is reported after it."""
    undone: list[object] = []
    engine = Engine(step(lambda: "never called", undone.append, name="a"), EngineSettings())
    call = engine.poll()
    assert call is not None

    engine.interrupt(None, KeyboardInterrupt())
    follow = engine.fail(call, ResultRejectedError("A-1", WrongDay("late")))

    compensation = follow or engine.poll()
    assert compensation is not None
    assert (compensation.kind, engine.effect_of(compensation).argument) == ("compensation", "A-1")
    engine.succeed(compensation, None)
    assert engine.poll() is None
    outcome = engine.outcome
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, KeyboardInterrupt)
    assert outcome.compensated == ("a",)


# -- durable runs: a result the codec cannot encode --------------------------------------------


@dataclass(frozen=True)
class Tag:
    """A result JsonCodec cannot store (it is not registered)."""

    name: str


class Shop:
    def __init__(self) -> None:
        self.ran: Counter[str] = Counter()
        self.undone: list[tuple[str, object]] = []

    def act(self, name: str, result: object) -> object:
        self.ran[name] += 1
        return result

    def undo(self, name: str, result: object) -> None:
        self.undone.append((name, result))


def tagging(shop: Shop, *, raise_rejection: bool = False, undo_attempts: int = 1) -> Saga[object]:
    """reserve, then tag (its result cannot be encoded, or, with `raise_rejection`, it rejects
    an encodable result itself), then notify; reserve and tag are idempotent, so a recovery
    runs the one in flight again."""

    def tag() -> object:
        if raise_rejection:
            shop.act("tag", None)
            raise ResultRejectedError("T-1", WrongDay("tagged on the wrong day"))
        return shop.act("tag", Tag("fragile"))

    return (
        step(
            lambda: shop.act("reserve", "R-1"),
            lambda r: shop.undo("reserve", r),
            name="reserve",
            idempotent=True,
        )
        .then(
            step(
                tag,
                lambda r: shop.undo("tag", r),
                name="tag",
                idempotent=True,
                compensation_retry=Retry(undo_attempts, delay=0.0, jitter=0.0),
            )
        )
        .then(step(lambda: shop.act("notify", "N-1"), name="notify"))
    )


def definitions_for(shop: Shop, **options: bool | int) -> SagaDefinitions:
    definitions = SagaDefinitions()
    definitions.saga("tagging")(lambda _: tagging(shop, **options))  # type: ignore[arg-type]
    return definitions


def test_an_idempotent_step_whose_result_cannot_be_encoded_runs_once_and_is_compensated() -> None:
    shop = Shop()
    journal = MemoryJournal()
    runs = DurableSagas(journal, definitions_for(shop))

    outcome = runs.start("tagging", None, saga_id="t-1")

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, CodecError)
    assert "step 'tag' of saga 't-1'" in str(outcome.error)
    assert "cannot encode a value of type Tag" in str(outcome.error)
    assert outcome.compensated == ("tag", "reserve")
    assert shop.ran == Counter({"reserve": 1, "tag": 1})  # three times before: retried, rerun
    assert shop.undone == [("tag", Tag("fragile")), ("reserve", "R-1")]
    kinds = [(entry.kind, entry.path) for entry in journal.entries("t-1")]
    assert ("rejected", "tag") in kinds
    assert ("unknown", "tag") not in kinds
    # What a second start reads back is what the first reported.
    again = runs.start("tagging", None, saga_id="t-1")
    assert isinstance(again, Failure)
    assert isinstance(again.error, CodecError)
    assert again.compensated == outcome.compensated
    assert shop.ran == Counter({"reserve": 1, "tag": 1})


def full_journal(**options: bool | int) -> list[Entry]:
    journal = MemoryJournal()
    DurableSagas(journal, definitions_for(Shop(), **options)).start("tagging", None, saga_id="t")
    return journal.entries("t")


@pytest.mark.parametrize("raise_rejection", [False, True], ids=["unencodable", "raised"])
def test_a_rejection_replays_to_the_same_decisions_from_every_crash_point(
    raise_rejection: bool,
) -> None:
    """Every write of the run is a crash point (before and after it): the recovery reaches the
    same failure, never runs a recorded step again, and compensates the rejected step with its
    result, or, when that result was never recorded and its compensation had not finished,
    refuses that compensation (a `PartialFailure` naming it) rather than run it on a guess."""
    writes = CrashingJournal(MemoryJournal())
    DurableSagas(writes, definitions_for(Shop(), raise_rejection=raise_rejection)).start(
        "tagging", None, saga_id="t-1"
    )
    seen: set[str] = set()
    for crash_at in range(writes.writes):
        for after in (False, True):
            journal = MemoryJournal()
            first = Shop()
            dying = CrashingJournal(journal, crash_at=crash_at, after=after)
            with pytest.raises(Crash):
                DurableSagas(dying, definitions_for(first, raise_rejection=raise_rejection)).start(
                    "tagging", None, saga_id="t-1"
                )
            record = journal.get("t-1")
            at_crash = journal.entries("t-1") if record is not None else []
            shop = Shop()

            recovered = DurableSagas(
                journal, definitions_for(shop, raise_rejection=raise_rejection)
            ).recover()

            if record is None or record.finished:
                assert recovered == {}
                continue
            outcome = recovered["t-1"]
            kinds = [(entry.kind, entry.path) for entry in at_crash]
            rejected = ("rejected", "tag") in kinds
            tag_undone = ("compensated", "tag") in kinds
            assert ("completed", "reserve") not in kinds or shop.ran["reserve"] == 0
            if rejected:
                assert shop.ran["tag"] == 0, (crash_at, after)  # recorded: never run again
            if raise_rejection or not rejected or tag_undone:
                # Compensated with the result (the decoded one, after a crash), or already.
                assert isinstance(outcome, Failure), (crash_at, after, outcome)
                assert outcome.compensated == ("tag", "reserve")
                if not tag_undone:
                    result = "T-1" if raise_rejection else Tag("fragile")
                    assert ("tag", result) in shop.undone
                seen.add("compensated")
            else:
                # Rejected, the result never recorded, its compensation not finished: refused.
                assert isinstance(outcome, PartialFailure), (crash_at, after, outcome)
                (refused,) = outcome.failed_compensations
                assert refused.path == "tag"
                assert "cannot run" in str(refused.error)
                assert "undo that step by hand" in str(refused.error)
                assert outcome.compensated == ("reserve",)
                assert all(name != "tag" for name, _ in shop.undone)
                seen.add("refused")
            assert isinstance(outcome.error, WrongDay if raise_rejection else CodecError)
    assert seen == ({"compensated"} if raise_rejection else {"compensated", "refused"})


def test_a_compensation_whose_result_was_never_recorded_is_refused_every_attempt() -> None:
    """After a crash while the rejected step's compensation ran, every attempt of that
    compensation is refused without running it (and recorded as such)."""
    entries = full_journal(undo_attempts=3)
    end = next(i for i, e in enumerate(entries) if e.kind == "compensation_intent")
    journal = MemoryJournal()
    journal.create("t-1", "tagging", 1, b"null", entries=entries[: end + 1])
    shop = Shop()

    outcome = DurableSagas(journal, definitions_for(shop, undo_attempts=3)).recover()["t-1"]

    assert isinstance(outcome, PartialFailure)
    (refused,) = outcome.failed_compensations
    assert (refused.path, refused.attempts) == ("tag", 3)
    assert shop.undone == [("reserve", "R-1")]
    failures = [e for e in journal.entries("t-1") if e.kind == "compensation_failed"]
    assert [(e.path, e.attempt) for e in failures] == [("tag", 1), ("tag", 2), ("tag", 3)]


def test_the_journal_records_an_encodable_rejected_result_for_the_replay() -> None:
    entries = full_journal(raise_rejection=True)
    (rejection,) = [entry for entry in entries if entry.kind == "rejected"]
    assert rejection.payload is not None
    document = JsonCodec().decode(rejection.payload)

    assert isinstance(document, dict)
    assert document["result"] == "T-1"
    assert document["error"][1:] == ["WrongDay", "tagged on the wrong day"]


def test_a_successful_durable_run_is_unchanged_by_the_hook() -> None:
    shop = Shop()
    definitions = SagaDefinitions()
    definitions.saga("plain")(
        lambda _: step(lambda: shop.act("a", "A"), lambda r: shop.undo("a", r), name="a")
    )

    assert DurableSagas(MemoryJournal(), definitions).start("plain", None, saga_id="p") == (
        Success("A")
    )
