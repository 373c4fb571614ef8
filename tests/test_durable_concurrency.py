"""Durable runs whose `par` branches run concurrently, under `DurableSagas.start_async`.

Their branches overlap in time (rule 5 of the contract, docs/concepts.md), so the journal holds
their entries interleaved in the order they happened. A recovery (`recover_async`, or `recover`,
which replays such a journal under `AsyncInterpreter` when one effect at a time cannot follow
it) finds each effect's entries by its path, hands the recorded results back in the order they
were recorded (so the engine decides as the recorded run did), settles every effect the crash
left in flight (rule 3), and still refuses, writing nothing, a saga that diverges (rule 12).

The actions here let the other tasks run a set number of times before they act
(`anyio.lowlevel.checkpoint`), so branches finish in another order than they were declared in,
the same order on every run. tests/test_durable_properties.py and tests/test_durable_crashes.py
check the same rules on generated sagas and across real processes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial

import anyio
import anyio.lowlevel
import pytest
from test_durable_properties import assert_undone_in_reverse_completion_order, message

from fsaga import (
    Event,
    Failure,
    PartialFailure,
    Saga,
    SagaFinished,
    StepStarted,
    Success,
    current_context,
    par,
    step,
)
from fsaga.durable import DurableSagas, NonDeterminismError, RecordedError, SagaDefinitions
from fsaga.journal import Entry, JsonCodec, MemoryJournal

SAGA_ID = "p-1"


class Declined(Exception):
    pass


class World:
    """Counts what each action and compensation did, by path."""

    def __init__(self) -> None:
        self.ran: Counter[str] = Counter()
        self.order: list[str] = []

    def action(
        self, label: str, *, pauses: int = 0, fails: bool = False, asynchronous: bool = True
    ) -> Callable[[], object]:
        """The action of step `label`: async, letting other tasks run `pauses` times before it
        acts; or, without `asynchronous`, the same as a plain function."""

        def act() -> str:
            path = current_context().path
            self.ran[path] += 1
            self.order.append(path)
            if fails:
                raise Declined(label)
            return f"{label}-done"

        async def act_later() -> str:
            for _ in range(pauses):
                await anyio.lowlevel.checkpoint()
            return act()

        return act_later if asynchronous else act

    def undo(self, result: object) -> None:
        self.ran[f"undo {current_context().path}"] += 1
        self.order.append(f"undo {current_context().path}")

    def void(self, _context: object) -> None:
        self.ran[f"void {current_context().path}"] += 1


def definitions(
    build: Callable[[World, bool], Saga[object]], world: World, *, asynchronous: bool = True
) -> SagaDefinitions:
    registered = SagaDefinitions()
    registered.saga("saga")(lambda _input: build(world, asynchronous))
    return registered


def unfinished(entries: list[Entry]) -> MemoryJournal:
    """A journal holding an unfinished saga with `entries`: what a crash left."""
    journal = MemoryJournal()
    journal.create(SAGA_ID, "saga", 1, JsonCodec().encode(None), entries=entries)
    return journal


async def start(runs: DurableSagas) -> object:
    return await runs.start_async("saga", None, saga_id=SAGA_ID)


# -- the branches overlap -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_durable_async_run_overlaps_its_par_branches() -> None:
    """Each branch waits for what the other does: run one after another, they would wait for
    ever (the deadline turns that into a failure)."""
    first_in, second_in = anyio.Event(), anyio.Event()

    async def first() -> str:
        first_in.set()
        await second_in.wait()
        return "first"

    async def second() -> str:
        second_in.set()
        await first_in.wait()
        return "second"

    registered = SagaDefinitions()
    registered.saga("both")(lambda _: par(step(first, name="first"), step(second, name="second")))
    runs = DurableSagas(MemoryJournal(), registered)

    with anyio.fail_after(5):
        outcome = await runs.start_async("both", None, saga_id="b-1")

    assert outcome == Success(("first", "second"))


def two_branches(world: World, asynchronous: bool) -> Saga[object]:
    """``#0``: a then b, b slow; ``#1``: c, slower than a, then d. Every step idempotent."""

    def undoable(label: str, pauses: int = 0) -> Saga[object]:
        action = world.action(label, pauses=pauses, asynchronous=asynchronous)
        return step(action, world.undo, name=label, idempotent=True)

    return par(
        undoable("a").then(undoable("b", pauses=3)),
        undoable("c", pauses=1).then(undoable("d")),
    )


def test_concurrent_branches_interleave_in_the_journal_and_commit_once_per_step() -> None:
    world = World()
    journal = MemoryJournal()
    writes: list[str] = []
    original_append = journal.append

    def counting_append(saga_id: str, entries: object) -> None:
        writes.append("append")
        original_append(saga_id, entries)  # type: ignore[arg-type]

    journal.append = counting_append  # type: ignore[method-assign]
    runs = DurableSagas(journal, definitions(two_branches, world))

    outcome = anyio.run(start, runs)

    assert outcome == Success(("b-done", "d-done"))
    assert [(entry.kind, entry.path) for entry in journal.entries(SAGA_ID)] == [
        ("intent", "#0/a"),  # created with the saga
        ("completed", "#0/a"),
        ("intent", "#0/b"),
        ("intent", "#1/c"),
        ("completed", "#1/c"),
        ("intent", "#1/d"),
        ("completed", "#1/d"),
        ("completed", "#0/b"),  # written with the outcome
    ]
    # Four steps: the creation, three appends (one per further intent), and the outcome.
    assert writes == ["append"] * 3
    assert world.ran == Counter({"#0/a": 1, "#0/b": 1, "#1/c": 1, "#1/d": 1})


@pytest.mark.parametrize("recovery", ["recover", "recover_async"])
def test_an_interleaved_journal_recovers_from_every_point_without_running_a_step_twice(
    recovery: str,
) -> None:
    """Cut the journal of a run whose ``#0/b`` fails after ``#1/d`` completed at each entry:
    the recovery replays what was recorded, runs again what was in flight (every step is
    idempotent) and what was not recorded, and compensates every completed step, in the
    reverse of the order the journal recorded their results in."""

    def failing(world: World, asynchronous: bool) -> Saga[object]:
        def undoable(label: str, pauses: int = 0, *, fails: bool = False) -> Saga[object]:
            action = world.action(label, pauses=pauses, fails=fails, asynchronous=asynchronous)
            return step(action, world.undo, name=label, idempotent=True)

        return par(
            undoable("a").then(undoable("b", pauses=3, fails=True)),
            undoable("c", pauses=1).then(undoable("d")),
        )

    full = DurableSagas(MemoryJournal(), definitions(failing, World()))
    first = anyio.run(start, full)
    assert isinstance(first, Failure)
    assert (repr(first.error), first.compensated) == ("Declined('b')", ("#1/d", "#1/c", "#0/a"))
    entries = full._journal.entries(SAGA_ID)

    for cut in range(1, len(entries) + 1):
        world = World()
        journal = unfinished(entries[:cut])
        asynchronous = recovery == "recover_async"
        runs = DurableSagas(journal, definitions(failing, world, asynchronous=asynchronous))

        outcome = anyio.run(runs.recover_async) if asynchronous else runs.recover()

        result = outcome[SAGA_ID]
        assert isinstance(result, Failure), (cut, result)
        assert message(result.error) == ("Declined", "b")
        after = journal.entries(SAGA_ID)
        assert after[:cut] == entries[:cut]
        completed = {entry.path for entry in after if entry.kind == "completed"}
        assert set(result.compensated) == completed, (cut, result)
        assert_undone_in_reverse_completion_order(after)
        done = {entry.path for entry in entries[:cut] if entry.kind == "completed"}
        assert all(world.ran[path] == 0 for path in done), (cut, world.ran)
        undone = {entry.path for entry in entries[:cut] if entry.kind == "compensated"}
        assert all(world.ran[f"undo {path}"] == 0 for path in undone), (cut, world.ran)


def test_a_branch_failure_is_replayed_before_the_results_recorded_after_it() -> None:
    """``b`` failed before ``#0/a`` completed, so ``#0/a``'s branch never started ``#0/next``:
    handed back in the recorded order, the results lead the replay to the same decision. (In
    declaration order, ``#0/a`` first, ``#0/next`` would have started, a divergence.)"""

    def saga(world: World, asynchronous: bool) -> Saga[object]:
        act = partial(world.action, asynchronous=asynchronous)
        return par(
            step(act("a", pauses=1), world.undo, name="a").then(step(act("next"), name="next")),
            step(act("b", fails=True), name="b"),
        )

    full = DurableSagas(MemoryJournal(), definitions(saga, World()))
    first = anyio.run(start, full)
    assert isinstance(first, Failure)
    assert (repr(first.error), first.compensated) == ("Declined('b')", ("#0/a",))
    entries = full._journal.entries(SAGA_ID)
    assert [(entry.kind, entry.path) for entry in entries] == [
        ("intent", "#0/a"),
        ("intent", "b"),
        ("failed", "b"),
        ("completed", "#0/a"),
        ("compensation_intent", "#0/a"),
        ("compensated", "#0/a"),
    ]

    for asynchronous in (True, False):
        world = World()
        runs = DurableSagas(
            unfinished(entries[:5]), definitions(saga, world, asynchronous=asynchronous)
        )

        outcome = (anyio.run(runs.recover_async) if asynchronous else runs.recover())[SAGA_ID]

        assert isinstance(outcome, Failure), outcome
        assert message(outcome.error) == ("Declined", "b")
        assert outcome.compensated == ("#0/a",)
        assert world.ran == Counter({"undo #0/a": 1})


def test_branches_that_fail_together_record_an_outcome_that_reads_back() -> None:
    """Two branches fail while both are in flight: the run fails with an `ExceptionGroup`
    (rule 5), which the journal records by its type and message; starting the id again reads
    it back as a `RecordedError` saying the same (the group's own errors are not kept)."""

    def saga(world: World, asynchronous: bool) -> Saga[object]:
        return par(
            step(world.action("left", pauses=1, fails=True), name="left"),
            step(world.action("right", pauses=1, fails=True), name="right"),
        )

    runs = DurableSagas(MemoryJournal(), definitions(saga, World()))

    first = anyio.run(start, runs)
    again = anyio.run(start, runs)

    assert isinstance(first, Failure)
    assert isinstance(first.error, ExceptionGroup)
    assert isinstance(again, Failure)
    assert isinstance(again.error, RecordedError)
    assert message(again.error) == message(first.error)
    assert message(again.error) == (
        "ExceptionGroup",
        "several par branches failed (2 sub-exceptions)",
    )


# -- what the crash left in flight ----------------------------------------------------------------


def three_in_flight(world: World, asynchronous: bool) -> Saga[object]:
    act = partial(world.action, asynchronous=asynchronous)
    return step(act("first"), world.undo, name="first").then(
        par(
            step(act("again", pauses=2), world.undo, name="again", idempotent=True),
            step(act("voided", pauses=2), world.undo, name="voided", on_unknown=world.void),
            step(act("unsure", pauses=2), world.undo, name="unsure"),
            step(act("declined", pauses=3, fails=True), name="declined"),
        )
    )


@pytest.mark.parametrize("recovery", ["recover", "recover_async"])
def test_every_effect_a_crash_left_in_flight_is_settled(recovery: str) -> None:
    """Three branches were in flight when the process died: the idempotent one runs again with
    its key; the other two fail with their outcome unknown, so does the fourth branch, and the
    saga compensates: the one with an unknown-outcome compensation is voided, the third is
    reported unresolved (contract rule 3)."""
    entries = [
        Entry(1, "intent", "first", 1),
        Entry(2, "completed", "first", 1, b'"first-done"'),
        Entry(3, "intent", "again", 1),
        Entry(4, "intent", "voided", 1),
        Entry(5, "intent", "unsure", 1),
    ]
    world = World()
    asynchronous = recovery == "recover_async"
    runs = DurableSagas(
        unfinished(entries), definitions(three_in_flight, world, asynchronous=asynchronous)
    )

    outcome = (anyio.run(runs.recover_async) if asynchronous else runs.recover())[SAGA_ID]

    assert isinstance(outcome, PartialFailure), outcome
    assert isinstance(outcome.error, ExceptionGroup)
    assert sorted(repr(error) for error in outcome.error.exceptions) == [
        "Declined('declined')",
        "UnknownOutcomeError(\"step 'unsure' was running when its process stopped\")",
        "UnknownOutcomeError(\"step 'voided' was running when its process stopped\")",
    ]
    assert outcome.unresolved == ("unsure",)
    assert set(outcome.compensated) == {"again", "voided", "first"}
    assert outcome.compensated[-1] == "first"
    assert world.ran == Counter(
        {
            "again": 1,
            "declined": 1,
            "undo again": 1,
            "void voided": 1,
            "undo first": 1,
        }
    )
    kinds = {(entry.kind, entry.path) for entry in runs._journal.entries(SAGA_ID)[5:]}
    assert {("unknown", "voided"), ("unknown", "unsure"), ("unknown", "again")} <= kinds


def test_a_step_the_recorded_run_never_started_before_its_undo_does_not_start_on_replay() -> None:
    """An interrupt cut ``#0/cut`` short before the task of branch ``later`` began its step,
    and the run went on to its undo; the replay starts ``later`` (its engine does not know of
    the interrupt), but the journal shows forward work had ended: it never runs."""

    def saga(world: World, asynchronous: bool) -> Saga[object]:
        act = partial(world.action, asynchronous=asynchronous)
        return step(act("z"), world.undo, name="z").then(
            par(step(act("cut"), world.undo, name="cut"), step(act("later"), name="later"))
        )

    entries = [
        Entry(1, "intent", "z", 1),
        Entry(2, "completed", "z", 1, b'"z-done"'),
        Entry(3, "intent", "cut", 1),  # cut short by the interrupt: no result
        Entry(4, "compensation_intent", "z", 1),  # the process died here
    ]
    world = World()
    runs = DurableSagas(unfinished(entries), definitions(saga, world))

    outcome = anyio.run(runs.recover_async)[SAGA_ID]

    assert isinstance(outcome, PartialFailure), outcome
    assert outcome.compensated == ("z",)
    assert outcome.unresolved == ("cut",)
    assert world.ran == Counter({"undo z": 1})


@pytest.mark.parametrize("recovery", ["recover", "recover_async"])
def test_effects_an_interrupt_cut_off_together_are_undone_in_the_order_recorded(
    recovery: str,
) -> None:
    """``#2/d`` raised `KeyboardInterrupt` while ``#0/a`` and ``c`` were in flight: none of the
    three left a result. The undo began by running ``c`` again (to learn its result), not with
    a compensation, and the process died as it came to ``z``. The recovery must see that the
    three were cut off before that undo, in the order the undo shows (the last undone first),
    so it replays the rest of the undo and only runs ``z``'s compensation again."""

    def saga(world: World, asynchronous: bool) -> Saga[object]:
        def undoable(label: str) -> Saga[object]:
            action = world.action(label, asynchronous=asynchronous)
            return step(action, world.undo, name=label, idempotent=True)

        return undoable("z").then(
            par(
                undoable("a").then(undoable("b")),
                undoable("c"),
                undoable("d").then(undoable("e")),
            )
        )

    def entry(seq: int, kind: str, path: str, attempt: int, done: bool = False) -> Entry:
        payload = JsonCodec().encode(f"{path.rsplit('/', 1)[-1]}-done") if done else None
        return Entry(seq, kind, path, attempt, payload)  # type: ignore[arg-type]

    entries = [
        entry(1, "intent", "z", 1),
        entry(2, "completed", "z", 1, done=True),
        entry(3, "intent", "#0/a", 1),
        entry(4, "intent", "c", 1),
        entry(5, "intent", "#2/d", 1),  # raised the interrupt
        entry(6, "intent", "c", 2),  # the undo begins: c reported last, run again first
        entry(7, "completed", "c", 2, done=True),
        entry(8, "compensation_intent", "c", 1),
        entry(9, "compensated", "c", 1),
        entry(10, "intent", "#0/a", 2),
        entry(11, "completed", "#0/a", 2, done=True),
        entry(12, "compensation_intent", "#0/a", 1),
        entry(13, "compensated", "#0/a", 1),
        entry(14, "intent", "#2/d", 2),
        entry(15, "completed", "#2/d", 2, done=True),
        entry(16, "compensation_intent", "#2/d", 1),
        entry(17, "compensated", "#2/d", 1),
        entry(18, "compensation_intent", "z", 1),  # the process died here
    ]
    world = World()
    asynchronous = recovery == "recover_async"
    runs = DurableSagas(unfinished(entries), definitions(saga, world, asynchronous=asynchronous))

    outcome = (anyio.run(runs.recover_async) if asynchronous else runs.recover())[SAGA_ID]

    assert isinstance(outcome, Failure), outcome
    assert outcome.compensated == ("c", "#0/a", "#2/d", "z")
    assert world.ran == Counter({"undo z": 1})


# -- divergence ----------------------------------------------------------------------------------


@pytest.mark.parametrize("recovery", ["recover", "recover_async"])
def test_a_changed_branch_is_refused_and_nothing_is_written(recovery: str) -> None:
    """The second branch's first step was renamed: the recovery never asks for what the
    journal recorded of it, names both steps, runs nothing and writes nothing."""
    full = DurableSagas(MemoryJournal(), definitions(two_branches, World()))
    anyio.run(start, full)
    entries = full._journal.entries(SAGA_ID)[:6]  # up to d's intent: d in flight

    def renamed(world: World, asynchronous: bool) -> Saga[object]:
        act = partial(world.action, asynchronous=asynchronous)
        return par(
            step(act("a"), world.undo, name="a").then(step(act("b", pauses=3), name="b")),
            step(act("c2", pauses=1), name="c2").then(step(act("d"), name="d")),
        )

    world = World()
    journal = unfinished(entries)
    before = journal.get(SAGA_ID)
    asynchronous = recovery == "recover_async"
    runs = DurableSagas(journal, definitions(renamed, world, asynchronous=asynchronous))

    error = (anyio.run(runs.recover_async) if asynchronous else runs.recover())[SAGA_ID]

    assert isinstance(error, NonDeterminismError)
    assert str(error) == (
        f"saga {SAGA_ID!r}: the replay asked for the action of step '#1/c2' (attempt 1); the "
        "journal recorded intent of '#1/c' (attempt 1) at #4"
    )
    assert journal.entries(SAGA_ID) == entries
    assert journal.get(SAGA_ID) == before
    assert world.ran == Counter()


@pytest.mark.parametrize("recovery", ["recover", "recover_async"])
def test_a_step_asked_for_with_another_attempt_than_recorded_is_refused(recovery: str) -> None:
    """The journal holds ``#1/c``, but as a second attempt: a divergence at a path it holds."""
    entries = [
        Entry(1, "intent", "#0/a", 1),
        Entry(2, "intent", "#1/c", 2),
    ]
    world = World()
    journal = unfinished(entries)
    asynchronous = recovery == "recover_async"
    runs = DurableSagas(journal, definitions(two_branches, world, asynchronous=asynchronous))

    error = (anyio.run(runs.recover_async) if asynchronous else runs.recover())[SAGA_ID]

    assert isinstance(error, NonDeterminismError)
    assert str(error) == (
        f"saga {SAGA_ID!r}: the replay asked for the action of step '#1/c' (attempt 1); the "
        "journal recorded intent of '#1/c' (attempt 2) at #2"
    )
    assert journal.entries(SAGA_ID) == entries
    assert world.ran == Counter()


# -- recovering one effect at a time ------------------------------------------------------------


def test_recover_replays_an_interleaved_journal_concurrently_and_its_listeners_see_one_run() -> (
    None
):
    """`recover` cannot follow the journal one effect at a time (``#1/c`` completed before
    ``#0/b``): it finds that out without a listener hearing of it, and runs the recovery under
    `AsyncInterpreter` (with these plain-function actions), whose events the listeners get."""
    full = DurableSagas(MemoryJournal(), definitions(two_branches, World()))
    anyio.run(start, full)
    entries = full._journal.entries(SAGA_ID)[:5]  # c completed, b in flight
    heard: list[Event] = []
    world = World()
    runs = DurableSagas(
        unfinished(entries),
        definitions(two_branches, world, asynchronous=False),
        listeners=[heard.append],
    )

    outcome = runs.recover()

    assert outcome == {SAGA_ID: Success(("b-done", "d-done"))}
    assert world.ran == Counter({"#0/b": 1, "#1/d": 1})  # b was in flight: run again
    assert [type(event).__name__ for event in heard].count("SagaStarted") == 1
    assert sum(isinstance(event, SagaFinished) for event in heard) == 1
    started = [event.path for event in heard if isinstance(event, StepStarted)]
    assert sorted(started) == ["#0/a", "#0/b", "#0/b", "#1/c", "#1/d"]  # b: twice


def test_recover_replays_a_journal_it_can_follow_one_effect_at_a_time() -> None:
    """Cut where one effect at a time follows the journal (only ``#0/a`` recorded), `recover`
    runs under `SyncInterpreter`: the branches one after another."""
    full = DurableSagas(MemoryJournal(), definitions(two_branches, World()))
    anyio.run(start, full)
    entries = full._journal.entries(SAGA_ID)[:2]
    world = World()
    runs = DurableSagas(unfinished(entries), definitions(two_branches, world, asynchronous=False))

    assert runs.recover() == {SAGA_ID: Success(("b-done", "d-done"))}
    assert world.order == ["#0/b", "#1/c", "#1/d"]
