"""Effect scopes (fsaga.events.EffectScope): a listener with ``around_effect`` is entered around
every effect, in the task or thread that performs it, and never changes the run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType

import anyio
import anyio.lowlevel
import pytest

from fsaga import (
    AsyncInterpreter,
    Event,
    Failure,
    Retry,
    Saga,
    SagaFinished,
    Success,
    UnknownOutcomeError,
    in_worker_thread,
    par,
    step,
)
from fsaga.context import StepContext
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.interpreter import SyncInterpreter
from fsaga.interpreter.settings import EngineSettings
from fsaga.journal import MemoryJournal
from fsaga.testing import FaultInjectingInterpreter, FaultPlan

current: ContextVar[str] = ContextVar("current", default="-")


class Declined(Exception):
    pass


class Scoped:
    """A listener that sets `current` to ``kind path #attempt`` around every effect, and
    writes down what it entered and left, and the events it heard."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.log: list[str] = []
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    @contextmanager
    def around_effect(self, context: StepContext) -> Iterator[None]:
        name = f"{self.label}{context.kind} {context.path} #{context.attempt}"
        self.log.append(f"enter {name}")
        token = current.set(name)
        try:
            yield
        except BaseException as error:
            self.log.append(f"leave {name} with {type(error).__name__}")
            raise
        finally:
            current.reset(token)
        self.log.append(f"leave {name}")


def seen(log: list[str], value: object = None) -> object:
    """An effect: note what `current` is while it runs, and return `value`."""
    log.append(f"effect sees {current.get()}")
    return value


def test_a_scope_wraps_every_action_compensation_and_unknown_outcome_compensation() -> None:
    scoped = Scoped()
    log = scoped.log

    def unknown() -> None:
        seen(log)
        raise UnknownOutcomeError("no answer")

    saga = (
        step(lambda: seen(log, 1), lambda _: seen(log), name="reserve")
        .then(step(unknown, on_unknown=lambda _: seen(log), name="charge"))
        .then(step(lambda: seen(log), name="ship"))
    )

    outcome = saga.run(SyncInterpreter(listeners=[scoped]))

    assert isinstance(outcome, Failure)
    assert log == [
        "enter action reserve #1",
        "effect sees action reserve #1",
        "leave action reserve #1",
        "enter action charge #1",
        "effect sees action charge #1",
        "leave action charge #1 with UnknownOutcomeError",
        "enter unknown charge #1",
        "effect sees unknown charge #1",
        "leave unknown charge #1",
        "enter compensation reserve #1",
        "effect sees compensation reserve #1",
        "leave compensation reserve #1",
    ]
    assert current.get() == "-"


def test_a_scope_is_entered_after_the_started_event_and_left_before_the_one_that_ends() -> None:
    order: list[str] = []

    class Ordered:
        def __call__(self, event: Event) -> None:
            order.append(type(event).__name__)

        @contextmanager
        def around_effect(self, context: StepContext) -> Iterator[None]:
            order.append("enter")
            yield
            order.append("leave")

    step(lambda: order.append("effect"), name="one").run(SyncInterpreter(listeners=[Ordered()]))

    assert order == [
        "SagaStarted",
        "StepStarted",
        "enter",
        "effect",
        "leave",
        "StepCompleted",
        "SagaFinished",
    ]


def test_retries_are_each_wrapped_and_the_waits_between_them_are_not() -> None:
    scoped = Scoped()
    log = scoped.log
    failures = iter([Declined("busy")])

    def flaky() -> str:
        seen(log)
        for error in failures:
            raise error
        return "ok"

    def sleep(seconds: float) -> None:
        log.append(f"sleep sees {current.get()}")

    saga = step(flaky, name="charge", retry=Retry(2, delay=1.0, jitter=0.0))
    outcome = saga.run(SyncInterpreter(listeners=[scoped], sleep=sleep))

    assert outcome == Success("ok")
    assert log == [
        "enter action charge #1",
        "effect sees action charge #1",
        "leave action charge #1 with Declined",
        "sleep sees -",
        "enter action charge #2",
        "effect sees action charge #2",
        "leave action charge #2",
    ]


def test_scopes_are_entered_in_the_order_given_and_left_in_reverse() -> None:
    first, second = Scoped("1:"), Scoped("2:")
    shared: list[str] = []
    first.log = second.log = shared

    step(lambda: seen(shared), name="one").run(SyncInterpreter(listeners=[first, second]))

    assert shared == [
        "enter 1:action one #1",
        "enter 2:action one #1",
        "effect sees 2:action one #1",
        "leave 2:action one #1",
        "leave 1:action one #1",
    ]


def test_a_listener_without_around_effect_adds_no_scope() -> None:
    assert EngineSettings((print,)).effect_scopes == ()
    scoped = Scoped()
    settings = EngineSettings((print, scoped))
    assert len(settings.effect_scopes) == 1


def test_an_around_effect_that_is_not_callable_is_refused_naming_the_listener() -> None:
    class Broken:
        around_effect = 3

        def __call__(self, event: Event) -> None:
            pass

    with pytest.raises(TypeError, match=r"SyncInterpreter: listener <.*Broken.*> has an "):
        SyncInterpreter(listeners=[Broken()])


class Faulty:
    """A scope that raises where it is told to, and tries to swallow the effect's error."""

    def __init__(self, *, on_enter: bool = False, on_exit: bool = False) -> None:
        self.on_enter = on_enter
        self.on_exit = on_exit

    def __call__(self, event: Event) -> None:
        pass

    def around_effect(self, context: StepContext) -> Faulty:
        return self

    def __enter__(self) -> None:
        if self.on_enter:
            raise RuntimeError("cannot enter")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if self.on_exit:
            raise RuntimeError("cannot leave")
        return True  # would swallow the effect's error, were it heeded


@pytest.mark.parametrize(
    "faulty",
    [Faulty(on_enter=True), Faulty(on_exit=True), Faulty()],
    ids=["raises-entering", "raises-leaving", "swallows"],
)
def test_a_scope_that_raises_or_swallows_never_changes_the_run(
    faulty: Faulty, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    def declined() -> None:
        ran.append("declined")
        raise Declined("no")

    saga = step(lambda: ran.append("reserve"), lambda _: ran.append("undo"), name="reserve").then(
        step(declined, name="charge")
    )
    with caplog.at_level(logging.ERROR, logger="fsaga.interpreter"):
        outcome = saga.run(SyncInterpreter(listeners=[faulty]))

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, Declined)
    assert outcome.compensated == ("reserve",)
    assert ran == ["reserve", "declined", "undo"]
    if faulty.on_enter:
        assert "raised entering action of reserve; ignored" in caplog.text
    elif faulty.on_exit:
        assert "raised leaving; ignored" in caplog.text
    else:
        assert caplog.text == ""


def test_scopes_wrap_effects_performed_through_a_perform_function() -> None:
    scoped = Scoped()
    plan = FaultPlan(actions={"charge": 1})
    saga = step(lambda: seen(scoped.log, 1), lambda _: seen(scoped.log), name="reserve").then(
        step(lambda: seen(scoped.log), name="charge")
    )

    outcome = saga.run(FaultInjectingInterpreter(plan, listeners=[scoped]))

    assert isinstance(outcome, Failure)
    assert scoped.log == [
        "enter action reserve #1",
        "effect sees action reserve #1",
        "leave action reserve #1",
        "enter action charge #1",
        "leave action charge #1 with InjectedFault",
        "enter compensation reserve #1",
        "effect sees compensation reserve #1",
        "leave compensation reserve #1",
    ]


# -- async -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_scopes_wrap_each_concurrent_branch_in_its_own_task() -> None:
    scoped = Scoped()
    log = scoped.log

    async def branch(name: str) -> str:
        log.append(f"{name} starts in {current.get()}")
        await anyio.lowlevel.checkpoint()  # the other branch runs meanwhile
        await anyio.lowlevel.checkpoint()
        log.append(f"{name} ends in {current.get()}")
        return name

    saga = par(step(lambda: branch("a"), name="a"), step(lambda: branch("b"), name="b"))
    outcome = await saga.run(AsyncInterpreter(listeners=[scoped]))

    assert outcome == Success(("a", "b"))
    for name in "ab":
        assert f"{name} starts in action {name} #1" in log
        assert f"{name} ends in action {name} #1" in log
    # Concurrent: both started before either ended.
    assert log.index("b starts in action b #1") < log.index("a ends in action a #1")
    assert current.get() == "-"


@pytest.mark.anyio
async def test_async_scopes_reach_worker_threads_and_see_timeouts() -> None:
    scoped = Scoped()
    log = scoped.log

    async def hang() -> None:
        await anyio.sleep(10)

    saga = step(in_worker_thread(lambda: seen(log, 1)), lambda _: seen(log), name="read").then(
        step(hang, name="slow", timeout=0.01)
    )
    outcome = await saga.run(AsyncInterpreter(listeners=[scoped]))

    assert isinstance(outcome, Failure)
    cut_off = log.pop(4)
    assert log == [
        "enter action read #1",
        "effect sees action read #1",
        "leave action read #1",
        "enter action slow #1",
        "enter compensation read #1",
        "effect sees compensation read #1",
        "leave compensation read #1",
    ]
    # Left with the backend's own cancellation, as the timeout cut the effect off.
    assert cut_off in (
        "leave action slow #1 with Cancelled",
        "leave action slow #1 with CancelledError",
    )


@pytest.mark.anyio
async def test_an_async_scope_that_raises_never_changes_the_run() -> None:
    async def declined() -> None:
        raise Declined("no")

    interpreter = AsyncInterpreter(listeners=[Faulty(on_enter=True), Faulty(on_exit=True)])
    outcome = await step(declined, name="charge").run(interpreter)

    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, Declined)


def test_a_durable_run_enters_its_listeners_scopes_and_gives_them_its_own_last_event() -> None:
    # DurableSagas holds the interpreter's SagaFinished back from its listeners (it emits its
    # own once the outcome is recorded); the scopes of those listeners still wrap every effect.
    scoped = Scoped()
    log = scoped.log
    definitions = SagaDefinitions()

    @definitions.saga("order")
    def order(total: int) -> Saga[object]:
        return step(lambda: seen(log, total), lambda _: seen(log), name="reserve").then(
            step(lambda: seen(log), name="ship")
        )

    outcome = DurableSagas(MemoryJournal(), definitions, listeners=[scoped]).start(
        "order", 3, saga_id="o-1"
    )

    assert outcome == Success(None)
    assert log == [
        "enter action reserve #1",
        "effect sees action reserve #1",
        "leave action reserve #1",
        "enter action ship #1",
        "effect sees action ship #1",
        "leave action ship #1",
    ]
    assert [type(event) for event in scoped.events].count(SagaFinished) == 1
