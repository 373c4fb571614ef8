"""Interpreters for tests: recording and scripted (the fault-injecting ones are in
`fsaga.testing.faults`).

They drive the same engine as `SyncInterpreter` (so every rule of a run holds under them), keep
the whole trace (`events`, `effects`, `sleeps`) and never really sleep: the waits a retry asks
for are recorded in `sleeps` instead.

>>> from fsaga import step
>>> scripted = ScriptedInterpreter({"reserve": Return("R-1"), "charge": Raise(RuntimeError("no"))})
>>> saga = step(lambda: "real", print, name="reserve").then(step(lambda: 0, name="charge"))
>>> saga.run(scripted)
Failure(error=RuntimeError('no'), compensated=('reserve',))
>>> [(record.kind, record.path, record.argument) for record in scripted.effects]
[('action', 'reserve', None), ('action', 'charge', None), ('compensation', 'reserve', 'R-1')]
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, TypeAlias, TypeVar, final

from fsaga.events import Event, Listener, SagaFinished, SagaStarted
from fsaga.interpreter.protocol import Effect, EffectKind, Perform
from fsaga.interpreter.settings import CompensationPolicy
from fsaga.interpreter.sync import SyncInterpreter
from fsaga.outcome import Outcome
from fsaga.saga import Saga

if TYPE_CHECKING:
    from fsaga.testing.properties import Trace

__all__ = [
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
        check: check each run against the contract as it finishes (`check_run` on its own
            trace): a broken rule raises `AssertionError` out of `run_saga`, naming the saga.

    Attributes:
        events: every event, in order.
        effects: every performed effect, in order, with its result or error.
        sleeps: every wait a retry asked for, in seconds (nothing really waits).
    """

    __slots__ = ("_checks", "_inner", "_perform", "effects", "events", "sleeps")

    def __init__(
        self,
        *,
        perform: Perform | None = None,
        listeners: Iterable[Listener] = (),
        clock: Callable[[], float] | None = None,
        random_unit: Callable[[], float] = lambda: 0.0,
        on_compensation_failure: CompensationPolicy = "continue",
        check: bool = False,
    ) -> None:
        self.events: list[Event] = []
        self.effects: list[RecordedEffect] = []
        self.sleeps: list[float] = []
        self._perform = perform
        self._checks = _RunChecks(self) if _checking(check, "RecordingInterpreter") else None
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
        if self._checks is None:
            return self._inner.run_saga(saga, saga_id=saga_id)
        return self._checks.checked(partial(self._inner.run_saga, saga, saga_id=saga_id))

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
class _RunChecks:
    """Checks each run of a recording interpreter against the contract as it finishes: the
    `check=True` of the interpreters in `fsaga.testing`.

    A run's trace is what the interpreter recorded while it ran, so runs are checked one at a
    time: a run started while another is still running on the same interpreter is refused.
    A run that ends with an exception (an interrupt, a cancellation) is checked too, when it
    reported its outcome (`SagaFinished`) before the exception came out.
    """

    __slots__ = ("_concurrent_compensation", "_running", "_trace")

    def __init__(self, trace: Trace, *, concurrent_compensation: bool = False) -> None:
        self._trace = trace
        self._concurrent_compensation = concurrent_compensation
        self._running = False

    def checked(self, run: Callable[[], Outcome[_T]]) -> Outcome[_T]:
        """The outcome of `run()`, once its run is checked."""
        first = self._start()
        try:
            outcome = run()
        except BaseException:
            self._check_interrupted(first)
            raise
        finally:
            self._running = False
        self._check(first, outcome)
        return outcome

    async def checked_async(self, run: Callable[[], Awaitable[Outcome[_T]]]) -> Outcome[_T]:
        """`checked` for an async run."""
        first = self._start()
        try:
            outcome = await run()
        except BaseException:
            self._check_interrupted(first)
            raise
        finally:
            self._running = False
        self._check(first, outcome)
        return outcome

    def _start(self) -> tuple[int, int]:
        if self._running:
            raise RuntimeError(
                "an interpreter made with check=True runs one saga at a time (each run is "
                "checked on its own trace); use one interpreter per concurrent run"
            )
        self._running = True
        return len(self._trace.events), len(self._trace.effects)

    def _check_interrupted(self, first: tuple[int, int]) -> None:
        finished = [
            event for event in self._trace.events[first[0] :] if isinstance(event, SagaFinished)
        ]
        if finished:
            self._check(first, finished[-1].outcome)

    def _check(self, first: tuple[int, int], outcome: Outcome[object]) -> None:
        from fsaga.testing.properties import check_run

        run = _RunTrace(self._trace.events[first[0] :], self._trace.effects[first[1] :])
        try:
            check_run(run, outcome, concurrent_compensation=self._concurrent_compensation)
        except AssertionError as broken:
            started = [event.saga_id for event in run.events if isinstance(event, SagaStarted)]
            saga = repr(started[0]) if started else "(no SagaStarted event)"
            raise AssertionError(f"the run of saga {saga} broke the contract: {broken}") from None


@final
@dataclass(frozen=True, slots=True)
class _RunTrace:
    """The trace of one run, cut out of an interpreter's."""

    events: Sequence[Event]
    effects: Sequence[RecordedEffect]


def _checking(check: object, who: str) -> bool:
    if not isinstance(check, bool):
        raise TypeError(f"{who}: check must be a bool, got {check!r}")
    return check


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
        check: check each run against the contract as it finishes (see `RecordingInterpreter`).

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
        check: bool = False,
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
            check=_checking(check, "ScriptedInterpreter"),
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
