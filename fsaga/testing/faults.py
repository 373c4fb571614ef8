"""Fault-injecting interpreters for tests: real effects, except those a `FaultPlan` makes
fail, interrupt or hang.

`FaultInjectingInterpreter` drives the same engine as `SyncInterpreter` and records like
`fsaga.testing.RecordingInterpreter`; `AsyncFaultInjectingInterpreter` does the same over
`AsyncInterpreter`, and can also make effects hang and cancel the run from outside.

>>> from fsaga import step
>>> plan = FaultPlan(actions={"charge": 1})
>>> reserve = step(lambda: "R-1", lambda _: None, name="reserve")
>>> outcome = reserve.then(step(lambda: 0, name="charge")).run(FaultInjectingInterpreter(plan))
>>> outcome.error, outcome.compensated
(InjectedFault("injected fault: action of 'charge', attempt 1"), ('reserve',))

PYTEST_DONT_REWRITE: its checks' assertion messages say what is wrong, so pytest, which
loads fsaga as a plugin, leaves them as written.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from inspect import isawaitable
from typing import Literal, TypeAlias, TypeVar, cast, final, get_args

import anyio
import anyio.lowlevel

from fsaga.events import Event, Listener, SagaFinished
from fsaga.interpreter.asynchronous import AsyncInterpreter
from fsaga.interpreter.protocol import Effect, EffectKind
from fsaga.interpreter.settings import BranchFailurePolicy, CompensationPolicy
from fsaga.outcome import Outcome
from fsaga.saga import Saga
from fsaga.testing.interpreters import (
    RecordedEffect,
    RecordingInterpreter,
    _checking,
    _RecordedRuns,
    _RunChecks,
    _Ticks,
)

__all__ = [
    "AsyncFaultInjectingInterpreter",
    "FaultInjectingInterpreter",
    "FaultPlan",
    "InjectedFault",
    "Interruption",
]

_T = TypeVar("_T")


class InjectedFault(Exception):
    """The failure a `FaultPlan` injected in place of an effect (which therefore did not run)."""

    def __init__(self, kind: EffectKind, path: str, attempt: int) -> None:
        super().__init__(f"injected fault: {kind} of {path!r}, attempt {attempt}")
        self.kind = kind
        self.path = path
        self.attempt = attempt


Interruption: TypeAlias = Literal["keyboard_interrupt", "cancelled"]
"""What a `FaultPlan` raises in place of a compensation it interrupts: ``"keyboard_interrupt"``
a `KeyboardInterrupt`; ``"cancelled"`` the event loop's cancellation exception
(``asyncio.CancelledError``, ``trio.Cancelled``), raised from inside the compensation as when
something it awaits is cancelled (`AsyncFaultInjectingInterpreter` only)."""


@final
@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Which effects fail, and how often, in a fault-injecting run.

    Attributes:
        actions: per step path, how many attempts of its action fail (each raises `InjectedFault`
            instead of running); later attempts run for real.
        compensations: the same for compensations.
        interrupt: the path of a step whose first attempt is interrupted: under
            `FaultInjectingInterpreter` its action raises `KeyboardInterrupt` instead of
            running; under `AsyncFaultInjectingInterpreter` the action runs, then the task
            awaiting the run is cancelled before the action's result comes back.
        hangs: per step path, how many attempts of its action run and then never return
            (only a deadline or a cancellation ends them), so their outcome is unknown. Only
            `AsyncFaultInjectingInterpreter` can run such a plan.
        interrupt_compensations: the paths of steps whose compensation (or unknown-outcome
            compensation) is interrupted on its first attempt: it raises `interrupt_with`
            instead of running, under either interpreter (before `compensations` applies).
            That compensation has failed for good; the others still run (as the compensation
            policy says), then the run re-raises the interruption (contract rule 8), which
            the test catches: the outcome is in the run's `fsaga.events.SagaFinished` event.
        interrupt_with: what `interrupt_compensations` raise (see `Interruption`).

    >>> from fsaga import step
    >>> saga = step(lambda: "R-1", lambda receipt: None, name="reserve").then(
    ...     step(lambda: "C-1", lambda charge: None, name="charge")
    ... ).then(step(lambda: 0, name="ship"))
    >>> interpreter = FaultInjectingInterpreter(
    ...     FaultPlan(actions={"ship": 1}, interrupt_compensations={"charge"})
    ... )
    >>> try:
    ...     saga.run(interpreter)
    ... except KeyboardInterrupt:
    ...     print(interpreter.events[-1].outcome.compensated)
    ('reserve',)
    """

    actions: Mapping[str, int] = field(default_factory=dict)
    compensations: Mapping[str, int] = field(default_factory=dict)
    interrupt: str | None = None
    hangs: Mapping[str, int] = field(default_factory=dict)
    interrupt_compensations: Collection[str] = frozenset()
    interrupt_with: Interruption = "keyboard_interrupt"

    def __post_init__(self) -> None:
        for label, plan in (
            ("actions", self.actions),
            ("compensations", self.compensations),
            ("hangs", self.hangs),
        ):
            for path, count in plan.items():
                if not _is_count(count):
                    raise ValueError(
                        f"FaultPlan: {label}[{path!r}] must be a count >= 0, got {count!r}"
                    )
        paths: object = self.interrupt_compensations  # callers may pass anything: check it
        if (
            isinstance(paths, str | bytes)
            or not isinstance(paths, Collection)
            or not all(isinstance(path, str) for path in paths)
        ):
            raise TypeError(
                "FaultPlan: interrupt_compensations must be a collection of step paths, such "
                f"as {{'charge'}}, got {paths!r}"
            )
        if self.interrupt_with not in get_args(Interruption):
            raise ValueError(
                f"FaultPlan: interrupt_with must be one of {get_args(Interruption)}, got "
                f"{self.interrupt_with!r}"
            )


def _interrupted(plan: FaultPlan, effect: Effect) -> bool:
    """Whether `plan` interrupts this attempt of a compensation in its place."""
    return effect.attempt == 1 and effect.path in plan.interrupt_compensations


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@final
class FaultInjectingInterpreter(_RecordedRuns):
    """Performs effects for real, except those a `FaultPlan` makes fail.

    Records like `RecordingInterpreter` (`events`, `effects`, `sleeps`, `paths()`); an injected
    fault is recorded as an effect that raised `InjectedFault`. With `check`, each run is
    checked against the contract as it finishes (see `RecordingInterpreter`), an interrupted
    one included.
    """

    __slots__ = ("plan",)

    def __init__(
        self,
        plan: FaultPlan,
        *,
        listeners: Iterable[Listener] = (),
        on_compensation_failure: CompensationPolicy = "continue",
        check: bool = False,
    ) -> None:
        if not isinstance(plan, FaultPlan):
            raise TypeError(f"FaultInjectingInterpreter needs a FaultPlan, got {plan!r}")
        if any(plan.hangs.values()):
            raise ValueError(
                "FaultInjectingInterpreter cannot make an effect hang (a sync run cannot be "
                "pre-empted); run plans with hangs under AsyncFaultInjectingInterpreter"
            )
        if plan.interrupt_compensations and plan.interrupt_with == "cancelled":
            raise ValueError(
                "FaultInjectingInterpreter cannot raise a cancellation (a sync run has no event "
                "loop to cancel it); run plans with interrupt_with='cancelled' under "
                "AsyncFaultInjectingInterpreter"
            )
        self.plan = plan
        self._recording = RecordingInterpreter(
            perform=self._perform,
            listeners=listeners,
            on_compensation_failure=on_compensation_failure,
            check=_checking(check, "FaultInjectingInterpreter"),
        )

    def _perform(self, effect: Effect) -> object:
        plan = self.plan
        if effect.kind == "action":
            if effect.path == plan.interrupt and effect.attempt == 1:
                raise KeyboardInterrupt(f"injected interrupt at {effect.path!r}")
            failing = plan.actions.get(effect.path, 0)
        elif _interrupted(plan, effect):
            raise KeyboardInterrupt(f"injected interrupt at the {effect.kind} of {effect.path!r}")
        else:
            failing = plan.compensations.get(effect.path, 0)
        if effect.attempt <= failing:
            raise InjectedFault(effect.kind, effect.path, effect.attempt)
        return effect.run()


@final
class AsyncFaultInjectingInterpreter:
    """`FaultInjectingInterpreter` for async runs: `AsyncInterpreter` under a `FaultPlan`.

    Every effect yields to the event loop once before it runs (as a real async effect would),
    so `par` branches interleave. Besides the failures of `FaultPlan.actions` and
    `FaultPlan.compensations`, actions may hang (`FaultPlan.hangs`) and the run may be cancelled
    from outside (`FaultPlan.interrupt`): the run is awaited inside a cancel scope that the plan
    cancels. The cancellation must come out of the run (a run never swallows one); the scope
    then absorbs it, `interrupted` becomes ``True``, and `run_saga` returns the outcome the run
    reported in its `SagaFinished` event. A compensation interrupted by the plan
    (`FaultPlan.interrupt_compensations`) raises a `KeyboardInterrupt` or a cancellation of its
    own instead; the run re-raises that one, and it comes out of `run_saga` too.

    Args:
        plan: which effects fail, hang, or cancel the run.
        listeners: further listeners, called after the recording one.
        timeout: as for `AsyncInterpreter`.
        on_branch_failure: as for `AsyncInterpreter`.
        concurrent_compensation: as for `AsyncInterpreter`.
        on_compensation_failure: as for `AsyncInterpreter`.
        check: check each run against the contract as it finishes (`check_run` on its own
            trace, in the reverse causal order with `concurrent_compensation`): a broken rule
            raises `AssertionError` out of `run_saga`. Runs are then checked one at a time.

    Attributes:
        events, effects, sleeps: the trace, as `RecordingInterpreter` keeps it (an effect cut
            off by a deadline or cancellation is recorded with that cancellation as its error).
        cancelled: whether the plan's interrupt cancelled the last run from outside.
        interrupted: whether that cancellation came out of the run (it always must).
    """

    __slots__ = (
        "_checks",
        "_inner",
        "_scope",
        "cancelled",
        "effects",
        "events",
        "interrupted",
        "plan",
        "sleeps",
    )

    def __init__(
        self,
        plan: FaultPlan,
        *,
        listeners: Iterable[Listener] = (),
        timeout: float | None = None,
        on_branch_failure: BranchFailurePolicy = "settle",
        concurrent_compensation: bool = False,
        on_compensation_failure: CompensationPolicy = "continue",
        check: bool = False,
    ) -> None:
        if not isinstance(plan, FaultPlan):
            raise TypeError(f"AsyncFaultInjectingInterpreter needs a FaultPlan, got {plan!r}")
        self.plan = plan
        self.events: list[Event] = []
        self.effects: list[RecordedEffect] = []
        self.sleeps: list[float] = []
        self.interrupted = False
        self.cancelled = False
        self._scope: anyio.CancelScope | None = None
        self._checks = (
            _RunChecks(self, concurrent_compensation=concurrent_compensation)
            if _checking(check, "AsyncFaultInjectingInterpreter")
            else None
        )
        self._inner = AsyncInterpreter(
            listeners=(self.events.append, *listeners),
            perform=self._perform,
            timeout=timeout,
            on_branch_failure=on_branch_failure,
            concurrent_compensation=concurrent_compensation,
            sleep=self._sleep,
            clock=_Ticks(),
            random_unit=lambda: 0.0,
            on_compensation_failure=on_compensation_failure,
        )

    def paths(self, kind: EffectKind | None = None) -> list[str]:
        """Paths of the performed effects (of one kind, if given), in order."""
        return [record.path for record in self.effects if kind is None or record.kind == kind]

    async def run_saga(self, saga: Saga[_T], /, *, saga_id: str | None = None) -> Outcome[_T]:
        """Run `saga` under the plan, recording it (see the class docstring on cancellation)."""
        if self._checks is None:
            return await self._run(saga, saga_id)
        return await self._checks.checked_async(partial(self._run, saga, saga_id))

    async def _run(self, saga: Saga[_T], saga_id: str | None) -> Outcome[_T]:
        self.interrupted = False
        self.cancelled = False
        with anyio.CancelScope() as scope:
            self._scope = scope
            return await self._inner.run_saga(saga, saga_id=saga_id)
        self.interrupted = True
        finished = [event for event in self.events if isinstance(event, SagaFinished)]
        if not finished:
            raise RuntimeError("the run was cancelled but never reported SagaFinished")
        return cast("Outcome[_T]", finished[-1].outcome)

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await anyio.lowlevel.checkpoint()

    async def _perform(self, effect: Effect) -> object:
        plan = self.plan
        try:
            await anyio.lowlevel.checkpoint()
            if effect.kind == "action":
                if effect.attempt <= plan.actions.get(effect.path, 0):
                    raise InjectedFault(effect.kind, effect.path, effect.attempt)
                result = await _awaited(effect.run())
                if effect.path == plan.interrupt and effect.attempt == 1:
                    scope = self._scope
                    assert scope is not None
                    self.cancelled = True
                    scope.cancel()
                    await anyio.sleep_forever()
                if effect.attempt <= plan.hangs.get(effect.path, 0):
                    await anyio.sleep_forever()
            else:
                if _interrupted(plan, effect):
                    raise await _interruption(plan.interrupt_with, effect)
                if effect.attempt <= plan.compensations.get(effect.path, 0):
                    raise InjectedFault(effect.kind, effect.path, effect.attempt)
                result = await _awaited(effect.run())
        except BaseException as error:
            self.effects.append(
                RecordedEffect(
                    effect.kind, effect.path, effect.attempt, effect.argument, error=error
                )
            )
            raise
        self.effects.append(
            RecordedEffect(effect.kind, effect.path, effect.attempt, effect.argument, result)
        )
        return result


async def _interruption(interruption: Interruption, effect: Effect) -> BaseException:
    """What a plan raises in place of `effect`: a `KeyboardInterrupt`, or the event loop's own
    cancellation exception, caught where it was delivered (trio's has no public constructor)."""
    if interruption == "keyboard_interrupt":
        return KeyboardInterrupt(f"injected interrupt at the {effect.kind} of {effect.path!r}")
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.lowlevel.checkpoint()
        except anyio.get_cancelled_exc_class() as cancelled:
            return cancelled
    raise AssertionError("a cancelled scope delivered no cancellation")


async def _awaited(result: object) -> object:
    while isawaitable(result):
        result = await result
    return result
