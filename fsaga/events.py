"""Events: one value for every transition of a run, handed to the interpreter's listeners.

Every event carries the saga id and the time it happened (``at``, from the interpreter's clock);
step and compensation events carry the step's path and the attempt number, and the events that
end an attempt carry when it started (``started_at``) too. A listener is any callable taking an
`Event`; one that raises is logged and ignored: it never changes the run.

A listener may also wrap every effect the interpreter performs (`EffectScope`): one with an
``around_effect`` method is entered around each action, compensation and unknown-outcome
compensation, in the task or thread that performs it, so it can set what the effect sees in
context variables (the current span of a trace, say: `fsaga.contrib.opentelemetry`).

>>> from fsaga import step
>>> from fsaga.interpreter import SyncInterpreter
>>> seen: list[Event] = []
>>> _ = step(lambda: 1, name="one").run(SyncInterpreter(listeners=[seen.append]))
>>> [type(event).__name__ for event in seen]
['SagaStarted', 'StepStarted', 'StepCompleted', 'SagaFinished']
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias, final

if TYPE_CHECKING:
    from fsaga.context import StepContext
    from fsaga.outcome import Outcome

__all__ = [
    "CompensationCompleted",
    "CompensationFailed",
    "CompensationRetrying",
    "CompensationStarted",
    "EffectScope",
    "Event",
    "Listener",
    "SagaFinished",
    "SagaStarted",
    "SagaStopped",
    "StepCompleted",
    "StepFailed",
    "StepRetrying",
    "StepStarted",
    "StopReason",
    "branches_independent",
]


@final
@dataclass(frozen=True, slots=True)
class SagaStarted:
    """A run began."""

    saga_id: str
    at: float


@final
@dataclass(frozen=True, slots=True)
class SagaFinished:
    """A run ended with `outcome` (also when an interrupt is about to propagate).

    A durable run (`fsaga.durable.DurableSagas`) emits it only once `outcome` is recorded in
    its journal; one that stops without recording an outcome emits `SagaStopped` instead.
    """

    saga_id: str
    at: float
    outcome: Outcome[object]


StopReason: TypeAlias = Literal[
    "fenced", "taken_over", "parked", "journal_failed", "refused", "interrupted", "error"
]
"""Why a durable run stopped without recording an outcome (see `SagaStopped`)."""


@final
@dataclass(frozen=True, slots=True)
class SagaStopped:
    """A durable run stopped without recording an outcome: the saga is not finished by this run,
    and its outcome, if it ever has one, is recorded by another (a recovery, or another worker).

    Only durable runs (`fsaga.durable.DurableSagas`) emit it, in place of `SagaFinished`, as
    their last event. `reason` says why:

    - ``"fenced"``: the worker no longer held the saga's lease (it ran out, was taken over, or
      was handed back), so the journal refused its write (`fsaga.journal.LeaseLostError`);
    - ``"taken_over"``: another process claimed the saga, wrote to it or finished it first;
    - ``"parked"``: too many recoveries claimed it without finishing it: it is parked as dead;
    - ``"journal_failed"``: the journal failed, and the outcome is not known to be recorded
      (after a commit whose result was lost, the run reads the saga back: an outcome that
      landed is a `SagaFinished`; should that read fail too, the run cannot tell);
    - ``"refused"``: the replay diverged from the journal, or a recorded value could not be
      decoded (nothing was written);
    - ``"interrupted"``: an interrupt or cancellation stopped the run before it had an outcome
      to record;
    - ``"error"``: an unexpected error ended the run.

    `error` is what stopped it, where an error did.
    """

    saga_id: str
    at: float
    reason: StopReason
    error: BaseException | None = None


@final
@dataclass(frozen=True, slots=True)
class StepStarted:
    """An attempt of a step's action is about to run.

    `branch` names the line of control the step runs on: ``""`` for the saga's main line;
    inside `par` branches, one ``join:index`` segment per enclosing `par` (``"3:0/7:1"``: branch
    1 of the 7th par forked in this run, itself inside branch 0 of the 3rd). Two steps ran
    independently of each other exactly when, at the first segment where their branches
    differ, both segments name the same par (see `branches_independent`).
    """

    saga_id: str
    path: str
    attempt: int
    at: float
    branch: str = ""


@final
@dataclass(frozen=True, slots=True)
class StepCompleted:
    """A step's action returned `result`; the step is now completed.

    `compensable` tells whether the step has a compensation, that is whether a later failure
    will undo it. `branch` is as for `StepStarted`.
    """

    saga_id: str
    path: str
    attempt: int
    at: float
    started_at: float
    result: object
    compensable: bool
    branch: str = ""


@final
@dataclass(frozen=True, slots=True)
class StepRetrying:
    """An attempt failed with `error`; attempt ``attempt + 1`` follows after `delay` seconds."""

    saga_id: str
    path: str
    attempt: int
    at: float
    started_at: float
    error: BaseException
    delay: float


@final
@dataclass(frozen=True, slots=True)
class StepFailed:
    """A step failed for good with `error` (its last attempt); the saga now compensates.

    `unknown` is true when the attempt was interrupted mid-flight, so nobody knows whether its
    effect happened. `branch` is as for `StepStarted`.
    """

    saga_id: str
    path: str
    attempt: int
    at: float
    started_at: float
    error: BaseException
    unknown: bool = False
    branch: str = ""


@final
@dataclass(frozen=True, slots=True)
class CompensationStarted:
    """An attempt of a step's compensation is about to run."""

    saga_id: str
    path: str
    attempt: int
    at: float


@final
@dataclass(frozen=True, slots=True)
class CompensationCompleted:
    """A compensation succeeded: the step is undone."""

    saga_id: str
    path: str
    attempt: int
    at: float
    started_at: float


@final
@dataclass(frozen=True, slots=True)
class CompensationRetrying:
    """A compensation attempt failed with `error`; another follows after `delay` seconds."""

    saga_id: str
    path: str
    attempt: int
    at: float
    started_at: float
    error: BaseException
    delay: float


@final
@dataclass(frozen=True, slots=True)
class CompensationFailed:
    """A compensation failed for good: the step stays done, and the outcome reports it."""

    saga_id: str
    path: str
    attempt: int
    at: float
    started_at: float
    error: BaseException


Event: TypeAlias = (
    SagaStarted
    | SagaFinished
    | SagaStopped
    | StepStarted
    | StepCompleted
    | StepRetrying
    | StepFailed
    | CompensationStarted
    | CompensationCompleted
    | CompensationRetrying
    | CompensationFailed
)
"""Every event a run emits."""

Listener: TypeAlias = Callable[[Event], object]
"""Receives each event as it happens; its return value is ignored."""


class EffectScope(Protocol):
    """A listener that also wraps every effect an interpreter performs.

    The interpreter finds the ``around_effect`` method on a listener it is given and enters what
    it returns around each action, compensation and unknown-outcome compensation (after the
    effect's `StepStarted` or `CompensationStarted`, before the event that ends its attempt),
    in the task or thread that performs the effect: what it sets in a context variable, the
    effect sees, and so do the tasks and threads the effect starts. Retry waits are not
    wrapped. Several such listeners are entered in the order they were given.

    Like a listener, it never changes the run: an exception raised entering or leaving it is
    logged and ignored (the effect runs all the same, and its result or error stands), and what
    its ``__exit__`` returns is ignored (it cannot swallow the effect's error).

    >>> from contextlib import contextmanager
    >>> from collections.abc import Iterator
    >>> from fsaga import step
    >>> from fsaga.context import StepContext
    >>> from fsaga.interpreter import SyncInterpreter
    >>> class Around:
    ...     def __call__(self, event: Event) -> None:
    ...         pass
    ...     @contextmanager
    ...     def around_effect(self, context: StepContext) -> Iterator[None]:
    ...         print("enter", context.path, context.attempt)
    ...         yield
    ...         print("leave", context.path)
    >>> step(lambda: print("charging"), name="charge").run(SyncInterpreter(listeners=[Around()]))
    enter charge 1
    charging
    leave charge
    Success(value=None)
    """

    def __call__(self, event: Event, /) -> object:
        """Receive `event` (the listener itself)."""
        ...

    def around_effect(self, context: StepContext, /) -> AbstractContextManager[object]:
        """What to enter around the effect `context` describes."""
        ...


def branches_independent(first: str, second: str) -> bool:
    """Whether steps on these two branches (see `StepStarted.branch`) ran independently: on
    different branches of one `par`, neither waiting for the other.

    >>> branches_independent("3:0", "3:1"), branches_independent("3:0", "4:0")
    (True, False)
    >>> branches_independent("", "3:1"), branches_independent("3:0/5:1", "3:1")
    (False, True)
    """
    for left, right in zip(first.split("/"), second.split("/"), strict=False):
        if left != right:
            left_join, _, _ = left.partition(":")
            right_join, _, _ = right.partition(":")
            return bool(left) and bool(right) and left_join == right_join
    return False
