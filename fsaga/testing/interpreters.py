"""Interpreters for tests: recording, scripted and fault-injecting.

The first three drive the same engine as `SyncInterpreter` (so every rule of a run holds under
them), keep the whole trace (`events`, `effects`, `sleeps`) and never really sleep: the waits a
retry asks for are recorded in `sleeps` instead. `AsyncFaultInjectingInterpreter` does the same
over `AsyncInterpreter`, and can also make effects hang and cancel the run from outside.

>>> from fsaga import step
>>> scripted = ScriptedInterpreter({"reserve": Return("R-1"), "charge": Raise(RuntimeError("no"))})
>>> saga = step(lambda: "real", print, name="reserve").then(step(lambda: 0, name="charge"))
>>> saga.run(scripted)
Failure(error=RuntimeError('no'), compensated=('reserve',))
>>> [(record.kind, record.path, record.argument) for record in scripted.effects]
[('action', 'reserve', None), ('action', 'charge', None), ('compensation', 'reserve', 'R-1')]
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Literal, TypeAlias, TypeVar, cast, final, get_args

import anyio
import anyio.lowlevel

from fsaga.events import Event, Listener, SagaFinished
from fsaga.interpreter.asynchronous import AsyncInterpreter
from fsaga.interpreter.engine import BranchFailurePolicy, CompensationPolicy
from fsaga.interpreter.protocol import Effect, EffectKind, Perform
from fsaga.interpreter.sync import SyncInterpreter
from fsaga.outcome import Outcome
from fsaga.saga import Saga

__all__ = [
    "AsyncFaultInjectingInterpreter",
    "FaultInjectingInterpreter",
    "FaultPlan",
    "InjectedFault",
    "Interruption",
    "Raise",
    "RecordedEffect",
    "RecordingInterpreter",
    "Return",
    "Script",
    "ScriptedInterpreter",
    "UnscriptedStepError",
]

_T = TypeVar("_T")


@final
@dataclass(frozen=True, slots=True)
class RecordedEffect:
    """One performed effect and how it ended: `result` if it returned, `error` if it raised."""

    kind: EffectKind
    path: str
    attempt: int
    argument: object
    result: object = None
    error: BaseException | None = None


@final
class RecordingInterpreter:
    """Runs sagas like `SyncInterpreter` and keeps the trace of every run.

    Args:
        perform: how effects are performed (default: for real); every effect goes through it
            and is recorded with its result or error.
        listeners: further listeners, called after the recording one.
        clock: the time stamped on events (default: a counter, so traces are repeatable).
        on_compensation_failure: as for `SyncInterpreter`.

    Attributes:
        events: every event, in order.
        effects: every performed effect, in order, with its result or error.
        sleeps: every wait a retry asked for, in seconds (nothing really waits).
    """

    __slots__ = ("_inner", "_perform", "effects", "events", "sleeps")

    def __init__(
        self,
        *,
        perform: Perform | None = None,
        listeners: Iterable[Listener] = (),
        clock: Callable[[], float] | None = None,
        random_unit: Callable[[], float] = lambda: 0.0,
        on_compensation_failure: CompensationPolicy = "continue",
    ) -> None:
        self.events: list[Event] = []
        self.effects: list[RecordedEffect] = []
        self.sleeps: list[float] = []
        self._perform = perform
        self._inner = SyncInterpreter(
            listeners=(self.events.append, *listeners),
            perform=self._record,
            sleep=self.sleeps.append,
            clock=clock if clock is not None else _Ticks(),
            random_unit=random_unit,
            on_compensation_failure=on_compensation_failure,
        )

    def run_saga(self, saga: Saga[_T], /, *, saga_id: str | None = None) -> Outcome[_T]:
        """Run `saga`, appending its trace to `events`, `effects` and `sleeps`."""
        return self._inner.run_saga(saga, saga_id=saga_id)

    def paths(self, kind: EffectKind | None = None) -> list[str]:
        """Paths of the performed effects (of one kind, if given), in order, retries included."""
        return [record.path for record in self.effects if kind is None or record.kind == kind]

    def clear(self) -> None:
        """Forget the trace recorded so far."""
        self.events.clear()
        self.effects.clear()
        self.sleeps.clear()

    def _record(self, effect: Effect) -> object:
        try:
            result = effect.run() if self._perform is None else self._perform(effect)
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


@final
class _Ticks:
    """A clock that advances by one on every reading: repeatable timestamps for tests."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@final
@dataclass(frozen=True, slots=True)
class Return:
    """Scripted: the effect returns `value`."""

    value: object = None


@final
@dataclass(frozen=True, slots=True)
class Raise:
    """Scripted: the effect raises `error`."""

    error: Exception

    def __post_init__(self) -> None:
        if not isinstance(self.error, Exception):
            raise TypeError(f"Raise needs an Exception instance, got {self.error!r}")


Script: TypeAlias = Return | Raise | Sequence[Return | Raise]
"""What a scripted effect does: one answer for every attempt, or one per attempt (the last one
repeats once the sequence runs out)."""


class UnscriptedStepError(LookupError):
    """A scripted run reached a step whose path the script does not mention."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"no script for step {path!r}: add it to the ScriptedInterpreter's actions, "
            "or give a default"
        )
        self.path = path


class _RecordedRuns:
    """What the scripted and fault-injecting interpreters share: a `RecordingInterpreter` whose
    `perform` is theirs, and its trace (`events`, `effects`, `sleeps`, `paths()`)."""

    __slots__ = ("_recording",)

    _recording: RecordingInterpreter

    @property
    def events(self) -> list[Event]:
        return self._recording.events

    @property
    def effects(self) -> list[RecordedEffect]:
        return self._recording.effects

    @property
    def sleeps(self) -> list[float]:
        return self._recording.sleeps

    def paths(self, kind: EffectKind | None = None) -> list[str]:
        """Paths of the performed effects (of one kind, if given), in order."""
        return self._recording.paths(kind)

    def run_saga(self, saga: Saga[_T], /, *, saga_id: str | None = None) -> Outcome[_T]:
        """Run `saga` with this interpreter's way of performing effects, recording it."""
        return self._recording.run_saga(saga, saga_id=saga_id)


@final
class ScriptedInterpreter(_RecordedRuns):
    """Runs a saga without performing any real effect: each step's answer comes from a script.

    Args:
        actions: per step path, what its action does (`Return`, `Raise`, or one per attempt).
        compensations: per step path, what its compensation does; unscripted compensations
            succeed.
        default: what an unscripted action does; ``None`` (the default) fails it with
            `UnscriptedStepError`, so a test notices a step it forgot.
        on_compensation_failure: as for `SyncInterpreter`.

    It records like `RecordingInterpreter` (`events`, `effects`, `sleeps`, `paths()`).
    """

    __slots__ = ("_actions", "_compensations", "_default")

    def __init__(
        self,
        actions: Mapping[str, Script] | None = None,
        *,
        compensations: Mapping[str, Script] | None = None,
        default: Return | Raise | None = None,
        listeners: Iterable[Listener] = (),
        on_compensation_failure: CompensationPolicy = "continue",
    ) -> None:
        self._actions = _check_script(actions or {}, "actions")
        self._compensations = _check_script(compensations or {}, "compensations")
        if default is not None and not isinstance(default, Return | Raise):
            raise TypeError(
                f"ScriptedInterpreter: default must be Return or Raise, got {default!r}"
            )
        self._default = default
        self._recording = RecordingInterpreter(
            perform=self._answer,
            listeners=listeners,
            on_compensation_failure=on_compensation_failure,
        )

    def _answer(self, effect: Effect) -> object:
        if effect.kind == "action":
            script = self._actions.get(effect.path, self._default)
            if script is None:
                raise UnscriptedStepError(effect.path)
        else:
            script = self._compensations.get(effect.path, Return())
        if not isinstance(script, Return | Raise):
            script = script[min(effect.attempt, len(script)) - 1]
        if isinstance(script, Raise):
            raise script.error
        return script.value


def _check_script(scripts: Mapping[str, Script], label: str) -> Mapping[str, Script]:
    for path, script in scripts.items():
        candidate: object = script  # callers may pass anything: check it at run time
        if isinstance(candidate, Return | Raise):
            answers: list[object] = [candidate]
        elif isinstance(candidate, Sequence) and not isinstance(candidate, str | bytes):
            answers = list(candidate)
        else:
            answers = []  # not a script at all: rejected below, naming the path
        if not answers or not all(isinstance(answer, Return | Raise) for answer in answers):
            raise TypeError(
                f"ScriptedInterpreter: {label}[{path!r}] must be Return, Raise or a non-empty "
                f"sequence of them, got {script!r}"
            )
    return dict(scripts)


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
    fault is recorded as an effect that raised `InjectedFault`.
    """

    __slots__ = ("plan",)

    def __init__(
        self,
        plan: FaultPlan,
        *,
        listeners: Iterable[Listener] = (),
        on_compensation_failure: CompensationPolicy = "continue",
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
        timeout, on_branch_failure, concurrent_compensation, on_compensation_failure: as for
            `AsyncInterpreter`.

    Attributes:
        events, effects, sleeps: the trace, as `RecordingInterpreter` keeps it (an effect cut
            off by a deadline or cancellation is recorded with that cancellation as its error).
        cancelled: whether the plan's interrupt cancelled the last run from outside.
        interrupted: whether that cancellation came out of the run (it always must).
    """

    __slots__ = (
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
