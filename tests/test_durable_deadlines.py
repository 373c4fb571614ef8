"""Durable runs whose attempts a deadline cuts off, or keeps from starting, recovered by replay.

A deadline decides by the clock, which a replay cannot consult: the recovery reads the
decision from the journal instead (docs/durability.md, "Attempts a deadline cuts off"). Each
example runs a saga durably on virtual time (`tests/virtual_time.py`) under asyncio and trio,
kills it at a journal write (`CrashingJournal`), recovers it, and compares the recovery's
outcome with the outcome of the same run left alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import anyio
import pytest
from crashing_journal import Crash, CrashingJournal
from test_durable_properties import said, shape
from virtual_time import Backend, run_on_virtual_time

from fsaga import (
    Failure,
    PartialFailure,
    Retry,
    Saga,
    StepContext,
    Success,
    current_context,
    par,
    step,
)
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.durable.deadlines import RUN_AGAIN
from fsaga.durable.replay import Replay
from fsaga.journal import Entry, JsonCodec, MemoryJournal
from fsaga.outcome import Outcome

SAGA_ID = "deadline-1"
DEFINITION = "deadline"
BACKENDS: list[Backend] = ["asyncio", "trio"]


class Declined(Exception):
    pass


@dataclass
class Till:
    """What the sagas of this file act on: every effect counted by kind and path
    (``"action:charge"``, ``"undo:reserve"``), and a plan of what goes wrong.

    Attributes:
        hangs: per step path, how many attempts of its action take effect and then never
            return (only a deadline ends them).
        undo_hangs: the same for compensations (which take effect too).
        fails: per step path, how many attempts of its action fail (`Declined`) without
            taking effect.
        takes: per step path, the seconds its action takes (on virtual time), so that
            concurrent branches finish in the same order on every run.
    """

    hangs: dict[str, int] = field(default_factory=dict)
    undo_hangs: dict[str, int] = field(default_factory=dict)
    fails: dict[str, int] = field(default_factory=dict)
    takes: dict[str, float] = field(default_factory=dict)
    ran: Counter[str] = field(default_factory=Counter)

    async def act(self) -> str:
        context = current_context()
        if context.path in self.takes:
            await anyio.sleep(self.takes[context.path])
        if context.attempt <= self.fails.get(context.path, 0):
            raise Declined(f"{context.path} declined")
        self.ran[f"action:{context.path}"] += 1
        if context.attempt <= self.hangs.get(context.path, 0):
            await anyio.sleep_forever()
        return f"{context.path}-done"

    async def undo(self, result: object) -> None:
        context = current_context()
        self.ran[f"undo:{context.path}"] += 1
        if context.attempt <= self.undo_hangs.get(context.path, 0):
            await anyio.sleep_forever()

    def void(self, _context: StepContext) -> None:
        self.ran[f"void:{current_context().path}"] += 1


def step_of(
    till: Till,
    name: str,
    *,
    timeout: float | None = None,
    retry: Retry | None = None,
    idempotent: bool = False,
    compensation_timeout: float | None = None,
    compensation_retry: Retry | None = None,
    on_unknown: bool = False,
    compensable: bool = True,
) -> Saga[str]:
    """A `Till` step: its action and compensation (unless not `compensable`; and, with
    `on_unknown`, its unknown-outcome compensation) act on `till`."""
    return step(
        till.act,
        till.undo if compensable else None,
        name=name,
        timeout=timeout,
        retry=retry,
        idempotent=idempotent,
        compensation_timeout=compensation_timeout,
        compensation_retry=compensation_retry,
        on_unknown=till.void if on_unknown else None,
    )


@dataclass(frozen=True)
class Example:
    """A saga of `Till` steps and the plan it runs under."""

    build: Callable[[Till], Saga[object]]
    hangs: dict[str, int] = field(default_factory=dict)
    undo_hangs: dict[str, int] = field(default_factory=dict)
    fails: dict[str, int] = field(default_factory=dict)
    takes: dict[str, float] = field(default_factory=dict)

    def till(self) -> Till:
        return Till(dict(self.hangs), dict(self.undo_hangs), dict(self.fails), dict(self.takes))

    def definitions(self, till: Till) -> SagaDefinitions:
        definitions = SagaDefinitions()
        definitions.saga(DEFINITION)(lambda _input: self.build(till))
        return definitions


def start(backend: Backend, runs: DurableSagas) -> Outcome[object]:
    return run_on_virtual_time(
        backend, partial(runs.start_async, DEFINITION, None, saga_id=SAGA_ID)
    )


def recover(backend: Backend, runs: DurableSagas) -> dict[str, Outcome[object] | BaseException]:
    return run_on_virtual_time(backend, runs.recover_async)


def live_run(example: Example, backend: Backend) -> tuple[Outcome[object], list[Entry], int]:
    """The example run durably without a crash: its outcome, its journal, and how many
    journal writes it made."""
    journal = CrashingJournal(MemoryJournal())
    outcome = start(backend, DurableSagas(journal, example.definitions(example.till())))
    return outcome, journal.entries(SAGA_ID), journal.writes


def crashed(
    example: Example, backend: Backend, write: int, *, after: bool
) -> tuple[MemoryJournal, Till]:
    """The example's journal and world, its run killed at journal write `write` (just after
    it, or just before)."""
    journal = MemoryJournal()
    till = example.till()
    dying = CrashingJournal(journal, crash_at=write, after=after)
    with pytest.raises(Crash):
        start(backend, DurableSagas(dying, example.definitions(till)))
    return journal, till


def recovered_before_its_outcome(
    example: Example, backend: Backend
) -> tuple[Outcome[object], Outcome[object], list[Entry], Till]:
    """The example run left alone, and the same run killed just before it wrote its outcome,
    then recovered: the two outcomes, the journal the crash left and the world after the
    recovery."""
    outcome, _, writes = live_run(example, backend)
    journal, till = crashed(example, backend, writes - 1, after=False)
    at_crash = journal.entries(SAGA_ID)
    recovered = recover(backend, DurableSagas(journal, example.definitions(till)))[SAGA_ID]
    assert not isinstance(recovered, BaseException), recovered
    return outcome, recovered, at_crash, till


def kinds(entries: list[Entry]) -> list[tuple[str, str, int]]:
    return [(entry.kind, entry.path, entry.attempt) for entry in entries]


# -- actions a deadline cuts off ----------------------------------------------------------------


def idempotent_charge_retried_after_its_timeout(till: Till) -> Saga[object]:
    return step_of(till, "reserve").then(
        step_of(till, "charge", timeout=1.0, idempotent=True, retry=Retry(3, delay=0.0))
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_idempotent_step_its_timeout_cut_off_and_the_run_retried_is_retried_on_replay(
    backend: Backend,
) -> None:
    """The first attempt of ``charge`` hangs and its own timeout cuts it off; the run retries
    it and succeeds. Killed before its outcome is written, the recovery retries it as the run
    did (the journal records the cut-off attempt as an unknown outcome), rather than take the
    retry for the undo running the step again."""
    example = Example(idempotent_charge_retried_after_its_timeout, hangs={"charge": 1})

    outcome, recovered, at_crash, till = recovered_before_its_outcome(example, backend)

    assert said(outcome) == ("succeeded", "charge-done")
    assert said(recovered) == said(outcome)
    assert ("unknown", "charge", 1) in kinds(at_crash)
    assert till.ran["undo:reserve"] == 0


def charge_cut_off_by_its_timeout(till: Till) -> Saga[object]:
    return step_of(till, "reserve").then(step_of(till, "charge", timeout=1.0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_its_timeout_cut_off_is_recovered_with_the_timeout_as_its_error(
    backend: Backend,
) -> None:
    example = Example(charge_cut_off_by_its_timeout, hangs={"charge": 1})

    outcome, recovered, at_crash, till = recovered_before_its_outcome(example, backend)

    assert said(outcome) == (
        "partially_failed",
        (
            "StepTimeoutError",
            "step 'charge' timed out on attempt 1: it ran past its 1 s step timeout",
        ),
        ("reserve",),
        (),
        (),
        ("charge",),
    )
    assert said(recovered) == said(outcome)
    assert ("unknown", "charge", 1) in kinds(at_crash)
    assert till.ran["action:charge"] == 1  # never run again: not idempotent


def charge_cut_off_by_its_subtree(till: Till) -> Saga[object]:
    return (
        step_of(till, "reserve", idempotent=True)
        .then(step_of(till, "charge", idempotent=True, retry=Retry(3, delay=0.0)))
        .named("order")
        .timeout(5.0)
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_its_subtree_deadline_cut_off_is_not_retried_forward_on_replay(
    backend: Backend,
) -> None:
    """A sub-tree's deadline cuts ``charge`` off: the run does not retry it (the deadline has
    passed for every attempt), and the undo runs it again to learn the result its compensation
    needs. The recovery does the same, though the retry policy would allow another attempt."""
    example = Example(charge_cut_off_by_its_subtree, hangs={"order/charge": 1})

    outcome, recovered, at_crash, till = recovered_before_its_outcome(example, backend)

    assert said(outcome) == (
        "failed",
        (
            "StepTimeoutError",
            "step 'order/charge' timed out on attempt 1: it ran past the 5 s timeout of "
            "sub-tree 'order'",
        ),
        ("order/charge", "order/reserve"),
    )
    assert said(recovered) == said(outcome)
    assert ("unknown", "order/charge", 1) in kinds(at_crash)
    assert till.ran["action:order/charge"] == 2  # the cut-off attempt, then the undo's


# -- compensations a deadline cuts off -------------------------------------------------------


def reserve_whose_release_times_out(attempts: int) -> Callable[[Till], Saga[object]]:
    def build(till: Till) -> Saga[object]:
        retry = Retry(attempts, delay=0.0) if attempts > 1 else None
        return (
            step_of(till, "hold")
            .then(step_of(till, "reserve", compensation_timeout=1.0, compensation_retry=retry))
            .then(step_of(till, "charge"))
        )

    return build


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_compensation_its_timeout_cut_off_and_the_run_retried_is_retried_on_replay(
    backend: Backend,
) -> None:
    example = Example(
        reserve_whose_release_times_out(2), undo_hangs={"reserve": 1}, fails={"charge": 1}
    )

    outcome, recovered, at_crash, till = recovered_before_its_outcome(example, backend)

    assert said(outcome) == ("failed", ("Declined", "charge declined"), ("reserve", "hold"))
    assert said(recovered) == said(outcome)
    assert ("compensation_failed", "reserve", 1) in kinds(at_crash)
    assert till.ran["undo:reserve"] == 2  # the cut-off attempt and the retry, never again


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_compensation_its_timeout_cut_off_for_good_is_recovered_as_failed_by_it(
    backend: Backend,
) -> None:
    example = Example(
        reserve_whose_release_times_out(1), undo_hangs={"reserve": 1}, fails={"charge": 1}
    )

    outcome, recovered, at_crash, till = recovered_before_its_outcome(example, backend)

    assert said(outcome) == (
        "partially_failed",
        ("Declined", "charge declined"),
        ("hold",),
        (
            (
                "reserve",
                (
                    "StepTimeoutError",
                    "the compensation of step 'reserve' timed out on attempt 1: it ran past "
                    "its 1 s compensation timeout",
                ),
                1,
            ),
        ),
        (),
        (),
    )
    assert said(recovered) == said(outcome)
    assert ("compensation_failed", "reserve", 1) in kinds(at_crash)
    assert till.ran["undo:reserve"] == 1


# -- attempts a deadline kept from starting -------------------------------------------------------


def charge_whose_retry_outlasts_the_subtree(*, idempotent: bool) -> Callable[[Till], Saga[object]]:
    def build(till: Till) -> Saga[object]:
        return (
            step_of(till, "reserve")
            .then(
                step_of(
                    till,
                    "charge",
                    timeout=1.0,
                    idempotent=idempotent,
                    retry=Retry(3, delay=10.0, jitter=0.0),
                )
            )
            .timeout(5.0)
        )

    return build


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_retry_whose_wait_outlasts_the_subtree_deadline_is_recovered_as_that_deadline(
    backend: Backend,
) -> None:
    """``charge`` fails; its retry waits 10 s, and the sub-tree's 5 s deadline passes meanwhile:
    the step fails with the deadline, not with its own error."""
    example = Example(
        charge_whose_retry_outlasts_the_subtree(idempotent=False), fails={"charge": 1}
    )

    outcome, recovered, _, till = recovered_before_its_outcome(example, backend)

    assert said(outcome) == (
        "failed",
        (
            "StepTimeoutError",
            "step 'charge' could not start attempt 2: a 5 s sub-tree timeout set at the saga's "
            "root had passed",
        ),
        ("reserve",),
    )
    assert said(recovered) == said(outcome)
    assert till.ran["action:charge"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cut_off_step_whose_retry_outlasts_the_subtree_deadline_stays_unknown(
    backend: Backend,
) -> None:
    """``charge``'s own timeout cuts its first attempt off; the wait before its retry outlasts
    the sub-tree's deadline, so its outcome stays unknown, and the undo runs it again (it is
    idempotent) to compensate it. The recovery decides the same, without a forward retry."""
    example = Example(charge_whose_retry_outlasts_the_subtree(idempotent=True), hangs={"charge": 1})

    outcome, recovered, _, till = recovered_before_its_outcome(example, backend)

    assert said(outcome) == (
        "failed",
        (
            "StepTimeoutError",
            "step 'charge' could not start attempt 2: a 5 s sub-tree timeout set at the saga's "
            "root had passed",
        ),
        ("charge", "reserve"),
    )
    assert said(recovered) == said(outcome)
    assert till.ran["action:charge"] == 2  # the cut-off attempt and the undo's run-again


def reserve_that_outlasts_the_subtree(till: Till) -> Saga[object]:
    async def slow() -> str:
        with anyio.CancelScope(shield=True):  # no deadline cuts it off: it completes, late
            await anyio.sleep(10.0)
        return "reserve-done"

    return (
        step(slow, till.undo, name="reserve")
        .then(step_of(till, "charge"))
        .named("order")
        .timeout(5.0)
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_that_could_not_start_for_its_subtree_deadline_is_recovered_as_that_deadline(
    backend: Backend,
) -> None:
    example = Example(reserve_that_outlasts_the_subtree)

    outcome, recovered, _, till = recovered_before_its_outcome(example, backend)

    assert said(outcome) == (
        "failed",
        (
            "StepTimeoutError",
            "step 'order/charge' could not start attempt 1: the 5 s timeout of sub-tree "
            "'order' had passed",
        ),
        ("order/reserve",),
    )
    assert said(recovered) == said(outcome)
    assert till.ran["action:order/charge"] == 0


# -- journals written before these records ---------------------------------------------------------


def recover_entries(
    example: Example, backend: Backend, entries: list[Entry]
) -> tuple[Outcome[object] | BaseException, Till, list[Entry]]:
    """Recover a saga whose journal holds `entries` (as an earlier fsaga wrote them)."""
    journal = MemoryJournal()
    journal.create(SAGA_ID, DEFINITION, 1, b"null", entries=entries)
    till = example.till()
    outcome = recover(backend, DurableSagas(journal, example.definitions(till)))[SAGA_ID]
    return outcome, till, journal.entries(SAGA_ID)


def earlier(*entries: tuple[str, str, int] | tuple[str, str, int, bytes]) -> list[Entry]:
    return [Entry(seq, *entry) for seq, entry in enumerate(entries, start=1)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_earlier_journal_whose_cut_off_step_left_no_result_reads_as_it_did(
    backend: Backend,
) -> None:
    """Before cut-off attempts were recorded, one left its intent without a result; the undo
    that followed shows the run moved on. The replay reads it as an unknown outcome left to the
    undo, as it always did, and runs nothing recorded again."""
    entries = earlier(
        ("intent", "reserve", 1),
        ("completed", "reserve", 1, b'"reserve-done"'),
        ("intent", "charge", 1),
        ("compensation_intent", "reserve", 1),
        ("compensated", "reserve", 1),
    )

    outcome, till, after = recover_entries(Example(charge_cut_off_by_its_timeout), backend, entries)

    assert not isinstance(outcome, BaseException), outcome
    assert said(outcome) == (
        "partially_failed",
        ("UnknownOutcomeError", "step 'charge' was cut short by an interrupt"),
        ("reserve",),
        (),
        (),
        ("charge",),
    )
    assert till.ran == Counter()
    assert after == entries


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_earlier_journal_whose_cut_off_step_was_run_again_in_the_undo_reads_as_it_did(
    backend: Backend,
) -> None:
    """An idempotent step cut off without a recorded result, then run again (the next intent
    of its step follows the resultless one): the replay takes that for the undo running it
    again to learn its result, as it always did."""
    entries = earlier(
        ("intent", "order/reserve", 1),
        ("completed", "order/reserve", 1, b'"order/reserve-done"'),
        ("intent", "order/charge", 1),
        ("intent", "order/charge", 2),
        ("completed", "order/charge", 2, b'"order/charge-done"'),
        ("compensation_intent", "order/charge", 1),
    )

    outcome, till, _ = recover_entries(Example(charge_cut_off_by_its_subtree), backend, entries)

    assert not isinstance(outcome, BaseException), outcome
    assert said(outcome) == (
        "failed",
        ("UnknownOutcomeError", "step 'order/charge' was cut short by an interrupt"),
        ("order/charge", "order/reserve"),
    )
    # The compensation in flight ran again; nothing recorded as completed did.
    assert till.ran == Counter({"undo:order/charge": 1, "undo:order/reserve": 1})


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_earlier_journal_whose_compensation_was_cut_off_and_retried_is_replayed(
    backend: Backend,
) -> None:
    """A compensation its own timeout cut off left its intent without a result, and the next
    attempt's intent follows: only a deadline cuts a compensation off and lets it be retried
    (an interrupt fails it for good), so the replay retries it too."""
    entries = earlier(
        ("intent", "hold", 1),
        ("completed", "hold", 1, b'"hold-done"'),
        ("intent", "reserve", 1),
        ("completed", "reserve", 1, b'"reserve-done"'),
        ("intent", "charge", 1),
        (
            "failed",
            "charge",
            1,
            b'["test_durable_deadlines:Declined","Declined","charge declined"]',
        ),
        ("compensation_intent", "reserve", 1),
        ("compensation_intent", "reserve", 2),
        ("compensated", "reserve", 2),
        ("compensation_intent", "hold", 1),
    )

    outcome, till, _ = recover_entries(
        Example(reserve_whose_release_times_out(2), fails={"charge": 1}), backend, entries
    )

    assert not isinstance(outcome, BaseException), outcome
    assert said(outcome) == ("failed", ("Declined", "charge declined"), ("reserve", "hold"))
    assert till.ran == Counter({"undo:hold": 1})


# -- retry waits a replay has been through ---------------------------------------------------------


class FakeTime:
    """`time` as the sync interpreter's default sleep sees it: sleeps are recorded, and the
    clock jumps by them (nothing really waits)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_sync_replay_does_not_wait_again_the_retry_delays_its_run_waited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two attempts of ``charge`` failed, each followed by an hour's wait; the process died in
    the second wait. The recovery replays both attempts without waiting the first hour again
    (the journal holds the attempt that followed it); the second wait, which the journal does
    not show was over, it waits in full before the third attempt."""
    import fsaga.interpreter.sync

    fake = FakeTime()
    monkeypatch.setattr(fsaga.interpreter.sync, "time", fake)
    attempts: list[int] = []

    def charge() -> str:
        attempts.append(current_context().attempt)
        return "charged"

    definitions = SagaDefinitions()
    definitions.saga(DEFINITION)(
        lambda _input: step(
            charge,
            name="charge",
            retry=Retry(3, delay=3600.0, backoff=1.0, max_delay=3600.0, jitter=0.0),
        )
    )
    declined = b'["test_durable_deadlines:Declined","Declined","charge declined"]'
    entries = earlier(
        ("intent", "charge", 1),
        ("failed", "charge", 1, declined),
        ("intent", "charge", 2),
        ("failed", "charge", 2, declined),
    )
    journal = MemoryJournal()
    journal.create(SAGA_ID, DEFINITION, 1, b"null", entries=entries)

    outcome = DurableSagas(journal, definitions).recover()[SAGA_ID]

    assert outcome == Success("charged")
    assert attempts == [3]
    assert fake.slept == [3600.0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_async_replay_does_not_wait_again_the_retry_delays_its_run_waited(
    backend: Backend,
) -> None:
    till = Till(fails={"charge": 2})
    definitions = SagaDefinitions()
    definitions.saga(DEFINITION)(
        lambda _input: step(
            till.act,
            name="charge",
            retry=Retry(3, delay=3600.0, backoff=1.0, max_delay=3600.0, jitter=0.0),
        )
    )
    declined = b'["test_durable_deadlines:Declined","Declined","charge declined"]'
    entries = earlier(
        ("intent", "charge", 1),
        ("failed", "charge", 1, declined),
        ("intent", "charge", 2),
        ("failed", "charge", 2, declined),
    )
    journal = MemoryJournal()
    journal.create(SAGA_ID, DEFINITION, 1, b"null", entries=entries)
    runs = DurableSagas(journal, definitions)

    async def recover_and_read_the_clock() -> tuple[object, float]:
        outcome = (await runs.recover_async())[SAGA_ID]
        return outcome, anyio.current_time()

    outcome, now = run_on_virtual_time(backend, recover_and_read_the_clock)

    assert outcome == Success("charge-done")
    assert now == 3600.0  # the third attempt's wait, and only it


# -- the crash matrix ----------------------------------------------------------------------------


def retried_then_declined(till: Till) -> Saga[object]:
    return (
        step_of(till, "hold", idempotent=True)
        .then(step_of(till, "charge", timeout=1.0, idempotent=True, retry=Retry(4, delay=0.0)))
        .then(step_of(till, "ship", idempotent=True, retry=Retry(3, delay=0.0), compensable=False))
    )


def voided_after_its_timeout(till: Till) -> Saga[object]:
    return step_of(till, "hold").then(step_of(till, "charge", timeout=1.0, on_unknown=True))


def branches_with_deadlines(till: Till) -> Saga[object]:
    first = step_of(till, "a1").then(
        step_of(till, "a2", timeout=1.0, idempotent=True, retry=Retry(3, delay=0.0))
    )
    second = step_of(till, "b1").then(step_of(till, "b2", on_unknown=True)).named("b").timeout(3.0)
    return par(first, second)


@dataclass(frozen=True)
class Matrix:
    """A crash-matrix example: its saga and plan; `settles_alike` when a crash that leaves an
    action in flight still recovers to the outcome of the run left alone (every step
    idempotent, with retries to spare, and no deadline but its own timeouts), so that every
    crash point must."""

    example: Example
    settles_alike: bool = False


MATRIX: dict[str, Matrix] = {
    "an own timeout, retried": Matrix(
        Example(retried_then_declined, hangs={"charge": 1}, fails={"ship": 9}),
        settles_alike=True,
    ),
    "an own timeout, voided": Matrix(Example(voided_after_its_timeout, hangs={"charge": 1})),
    "an own timeout, unresolved": Matrix(
        Example(charge_cut_off_by_its_timeout, hangs={"charge": 1})
    ),
    "a sub-tree deadline, run again in the undo": Matrix(
        Example(charge_cut_off_by_its_subtree, hangs={"order/charge": 1})
    ),
    "a compensation timeout, retried": Matrix(
        Example(reserve_whose_release_times_out(2), undo_hangs={"reserve": 1}, fails={"charge": 1})
    ),
    "a compensation timeout, for good": Matrix(
        Example(reserve_whose_release_times_out(1), undo_hangs={"reserve": 1}, fails={"charge": 1})
    ),
    "a retry's wait past a sub-tree deadline": Matrix(
        Example(charge_whose_retry_outlasts_the_subtree(idempotent=False), fails={"charge": 1})
    ),
    "a retry's wait past a sub-tree deadline, after an unknown outcome": Matrix(
        Example(charge_whose_retry_outlasts_the_subtree(idempotent=True), hangs={"charge": 1})
    ),
    "a step that could not start": Matrix(Example(reserve_that_outlasts_the_subtree)),
    "concurrent branches, each with a deadline": Matrix(
        Example(branches_with_deadlines, hangs={"#0/a2": 1, "b/b2": 1}, takes={"b/b1": 0.5})
    ),
}


def in_flight(entries: list[Entry]) -> list[Entry]:
    """The actions whose intent ends their step's timeline: they were running at the crash."""
    last = {entry.path: entry for entry in entries}
    return [entry for entry in last.values() if entry.kind == "intent"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MATRIX))
def test_a_run_killed_at_any_journal_write_recovers_to_the_outcome_it_would_have_had(
    name: str, backend: Backend
) -> None:
    """The run dies at each of its journal writes in turn, just before it or just after, and a
    fresh process recovers it. Wherever the journal held how every action that had started
    ended (the crash cut none off), the recovery reaches the very outcome the run left alone
    reached: what the deadlines decided was replayed, not decided afresh. Where the crash cut
    an action off, that action's outcome is unknown, and rule 3 of the contract settles it
    (docs/concepts.md#rule-3): it may be reported unresolved, or, run again, meet deadlines
    that count afresh in the recovery. At every crash point: one outcome is recorded, and it is
    the one reported; no step whose completion was recorded runs again; an action the crash cut
    off runs again only if it is idempotent; and everything that took effect is undone, or the
    outcome names it."""
    matrix = MATRIX[name]
    example = matrix.example
    outcome, _, writes = live_run(example, backend)
    checked: Counter[str] = Counter()
    for write in range(writes):
        for after in (False, True):
            where = f"write {write}, {'after' if after else 'before'}"
            journal, till = crashed(example, backend, write, after=after)
            record = journal.get(SAGA_ID)
            at_crash = journal.entries(SAGA_ID) if record is not None else []
            ran_at_crash = till.ran.copy()
            definitions = example.definitions(till)

            recovered = recover(backend, DurableSagas(journal, definitions))

            if record is None:
                assert recovered == {}, where
                assert till.ran == Counter(), where
                continue
            if record.finished:
                assert recovered == {}, where
                final = start(backend, DurableSagas(journal, definitions))
                assert said(final) == said(outcome), where
                continue
            resumed = recovered[SAGA_ID]
            assert not isinstance(resumed, BaseException), (where, resumed)
            # One recorded outcome, the one reported; asking again runs nothing.
            ran = till.ran.copy()
            again = start(backend, DurableSagas(journal, definitions))
            assert said(again) == said(resumed), where
            assert till.ran == ran, where
            after_recovery = journal.entries(SAGA_ID)
            assert after_recovery[: len(at_crash)] == at_crash, where
            # The outcome the run would have had.
            cut_off = in_flight(at_crash)
            if not cut_off:
                assert said(resumed) == said(outcome), where
                checked["no action in flight"] += 1
            elif matrix.settles_alike:
                assert shape(resumed, errors=False) == shape(outcome, errors=False), where
                checked["an action in flight"] += 1
            # Nothing recorded as completed ran again; what the crash cut off, only if idempotent.
            for entry in at_crash:
                if entry.kind == "completed":
                    assert till.ran[f"action:{entry.path}"] == ran_at_crash[f"action:{entry.path}"]
            for entry in cut_off:
                if not any(
                    later.kind == "intent" and later.path == entry.path
                    for later in after_recovery[len(at_crash) :]
                ):
                    assert till.ran[f"action:{entry.path}"] == ran_at_crash[f"action:{entry.path}"]
            # Everything that took effect is undone, or the outcome names it.
            took_effect = {key.split(":", 1)[1] for key in till.ran if key.startswith("action:")}
            undone = {
                key.split(":", 1)[1] for key in till.ran if key.startswith(("undo:", "void:"))
            }
            if isinstance(resumed, Success):
                assert not undone, where
            else:
                assert took_effect - undone <= reported(resumed), (where, resumed)
    # The matrix reached the points it promises something about.
    assert checked["no action in flight"] or matrix.settles_alike, checked
    assert checked["an action in flight"] or not matrix.settles_alike, checked


def reported(outcome: Outcome[object]) -> set[str]:
    """The paths an outcome names as not undone."""
    if not isinstance(outcome, PartialFailure):
        return set()
    failed = {failure.path for failure in outcome.failed_compensations}
    return {*outcome.unresolved, *outcome.skipped, *failed}


# -- an interrupt after a deadline ---------------------------------------------------------------


def cancelled_at(seconds: float, runs: DurableSagas) -> Callable[[], Awaitable[None]]:
    """`start_async` of the saga, cancelled from outside `seconds` after it starts."""

    async def run() -> None:
        with anyio.move_on_after(seconds):
            await runs.start_async(DEFINITION, None, saga_id=SAGA_ID)

    return run


def hold_then_charge_retried_after_a_long_wait(till: Till) -> Saga[object]:
    return step_of(till, "hold").then(
        step_of(
            till,
            "charge",
            timeout=1.0,
            idempotent=True,
            retry=Retry(3, delay=10.0, backoff=1.0, max_delay=10.0, jitter=0.0),
        )
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_retry_an_interrupt_called_off_after_a_deadline_cut_its_attempt_is_not_replayed(
    backend: Backend,
) -> None:
    """``charge``'s timeout cuts its first attempt off, and the run waits to retry it; the run
    is cancelled during the wait, so the retry never comes, and the undo runs ``charge`` again
    (idempotent) to compensate it. The journal says that attempt is the undo's: the recovery
    does not take it for the retry the run had announced."""
    example = Example(hold_then_charge_retried_after_a_long_wait, hangs={"charge": 1})
    journal = CrashingJournal(MemoryJournal())
    run_on_virtual_time(
        backend, cancelled_at(5.0, DurableSagas(journal, example.definitions(example.till())))
    )
    entries = journal.entries(SAGA_ID)
    assert ("intent", "charge", 2) in kinds(entries)
    (again,) = [entry for entry in entries if (entry.kind, entry.attempt) == ("intent", 2)]
    assert again.payload is not None  # says it runs the step again

    dying = CrashingJournal(MemoryJournal(), crash_at=journal.writes - 1)
    till = example.till()
    with pytest.raises(Crash):
        run_on_virtual_time(
            backend, cancelled_at(5.0, DurableSagas(dying, example.definitions(till)))
        )
    recovered = recover(backend, DurableSagas(dying.journal, example.definitions(till)))[SAGA_ID]

    assert not isinstance(recovered, BaseException), recovered
    assert isinstance(recovered, Failure)
    assert recovered.compensated == ("charge", "hold")
    assert till.ran["action:charge"] == 2  # the cut-off attempt and the undo's, never again


def test_only_the_run_again_mark_makes_an_intent_the_undos_other_payloads_do_not() -> None:
    # An intent's payload is either the undo's run-again mark or what the run's listeners keep
    # with its first intent (a trace context, fsaga.durable.carrier); a forward retry that
    # carries the latter must not be taken for the undo running the step again.
    codec = JsonCodec()
    mark = codec.encode(RUN_AGAIN)
    carried = codec.encode({"carrier": {"traceparent": "00-0af7-b7ad-01"}})
    entries = [
        Entry(1, "intent", "a", 1),
        Entry(2, "failed", "a", 1, codec.encode("declined")),
        Entry(3, "intent", "a", 2, carried),
        Entry(4, "unknown", "a", 2),
        Entry(5, "intent", "a", 3, mark),
    ]
    replay = Replay(entries, run_again=mark)
    assert [replay.runs_again(index) for index in range(len(entries))] == [
        False,
        False,
        False,
        False,
        True,
    ]
