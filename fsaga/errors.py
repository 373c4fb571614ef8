"""Errors fsaga raises or reports in an outcome."""

from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = [
    "BranchCancelledError",
    "DeadlineKind",
    "DuplicateStepNameError",
    "NonRetryableError",
    "ResultRejectedError",
    "ReturnedFailure",
    "StepTimeoutError",
    "UnknownOutcomeError",
]

DeadlineKind: TypeAlias = Literal["step", "compensation", "sub-tree", "run"]
"""Which deadline cut an attempt off: the step's own timeout, its compensation's, an enclosing
``saga.timeout(...)``, or the interpreter's per-run timeout."""


class DuplicateStepNameError(ValueError):
    """Two steps (or sub-sagas) in one scope share an explicit name.

    Raised when the saga is built if both are visible then (siblings of `par` or `sequence`);
    otherwise the run fails with it at the second one, before that step starts, and compensates.
    """

    def __init__(self, path: str, *, where: str | None = None) -> None:
        place = f" in {where}" if where else ""
        super().__init__(
            f"duplicate step name {path!r}{place}: an earlier step or sub-saga in the same scope "
            "already uses it; give one of them another name, or wrap repeated parts with "
            ".named(...)"
        )
        self.path = path


class NonRetryableError(Exception):
    """A failure no retry policy retries: raise it (or an error of a subclass) when another
    attempt cannot help, whatever the step's `fsaga.Retry` says.

    An action that raises an `UnknownOutcomeError` that is also a `NonRetryableError` is not
    run again forward either, even when it is idempotent; its unknown outcome goes to the
    undo (contract rule 3). A durable replay marks so the failures its first run did not
    retry (an interrupt came, say), so the replay decides as that run did.

    >>> from fsaga import Retry, SyncInterpreter, step
    >>> class CardExpired(NonRetryableError):
    ...     pass
    >>> attempts: list[int] = []
    >>> def charge() -> str:
    ...     attempts.append(1)
    ...     raise CardExpired("the card expired in 2024")
    >>> step(charge, retry=Retry(5, delay=0.0)).run(SyncInterpreter())
    Failure(error=CardExpired('the card expired in 2024'), compensated=())
    >>> len(attempts)
    1
    """


class ReturnedFailure(Exception):
    """A step returned a `returns` failure whose value is not an exception.

    The value is kept as is on `value`. A failure that carries an exception is reported as that
    exception instead, unwrapped.
    """

    def __init__(self, path: str, value: object) -> None:
        super().__init__(f"step {path!r} returned a failure: {value!r}")
        self.path = path
        self.value = value


class StepTimeoutError(TimeoutError):
    """An attempt ran past a deadline and was cancelled; the message says which step and which
    deadline.

    An action cut off this way has an unknown outcome (contract rule 3): it may or may not have
    taken effect.

    Attributes:
        path: the step's path.
        attempt: the attempt that was cut off (or could not start).
        seconds: the length of the deadline that passed.
        deadline: which deadline it was (see `DeadlineKind`).
        scope: for a ``"sub-tree"`` deadline, the path of the named sub-saga it wraps (when
            `named`), else the path of the scope it was set in (``""`` at the root); ``None``
            for other deadlines.
        named: whether a ``"sub-tree"`` deadline wraps a named sub-saga
            (``saga.named("payment").timeout(5)``), which the message then names.
        started: ``False`` when the deadline had already passed before the attempt could start
            (then it never ran, and its outcome is known).
    """

    def __init__(
        self,
        path: str,
        attempt: int,
        seconds: float,
        deadline: DeadlineKind,
        *,
        scope: str | None = None,
        named: bool = False,
        started: bool = True,
    ) -> None:
        self.path = path
        self.attempt = attempt
        self.seconds = seconds
        self.deadline: DeadlineKind = deadline
        self.scope = scope
        self.named = named
        self.started = started
        super().__init__(self._describe())

    def _describe(self) -> str:
        what = (
            f"the compensation of step {self.path!r}"
            if self.deadline == "compensation"
            else (f"step {self.path!r}")
        )
        if self.deadline == "step":
            limit = f"its {self.seconds:g} s step timeout"
        elif self.deadline == "compensation":
            limit = f"its {self.seconds:g} s compensation timeout"
        elif self.deadline == "run":
            limit = f"the run's {self.seconds:g} s timeout"
        else:
            if self.named:
                limit = f"the {self.seconds:g} s timeout of sub-tree {self.scope!r}"
            elif self.scope:
                limit = f"a {self.seconds:g} s sub-tree timeout set in {self.scope!r}"
            else:
                limit = f"a {self.seconds:g} s sub-tree timeout set at the saga's root"
        if not self.started:
            return f"{what} could not start attempt {self.attempt}: {limit} had passed"
        return f"{what} timed out on attempt {self.attempt}: it ran past {limit}"

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_timeout,
            (
                self.path,
                self.attempt,
                self.seconds,
                self.deadline,
                self.scope,
                self.named,
                self.started,
            ),
        )


def _rebuild_timeout(
    path: str,
    attempt: int,
    seconds: float,
    deadline: DeadlineKind,
    scope: str | None,
    named: bool,
    started: bool,
) -> StepTimeoutError:
    return StepTimeoutError(
        path, attempt, seconds, deadline, scope=scope, named=named, started=started
    )


class BranchCancelledError(Exception):
    """A step of a `par` branch was cancelled because a sibling branch failed.

    Only reported in events (the outcome carries the sibling's error): the interpreter cancels
    siblings only when configured with ``on_branch_failure="cancel"``. The cancelled attempt's
    outcome is unknown (contract rule 3).
    """

    def __init__(self, path: str, attempt: int) -> None:
        super().__init__(
            f"step {path!r} attempt {attempt} was cancelled: a sibling branch of its par failed"
        )
        self.path = path
        self.attempt = attempt


class UnknownOutcomeError(Exception):
    """Raised by an action that cannot tell whether it took effect.

    A request sent whose answer never came (a read timeout after the write, a dropped
    connection) has an unknown outcome: failing the step would skip its compensation although
    the effect may have happened. Raise this instead (``raise UnknownOutcomeError(...) from
    error``), and the step is settled like any unknown outcome (contract rule 3): retried with the
    same idempotency key when the step is idempotent, else handed to its unknown-outcome
    compensation, else reported unresolved.

    >>> from fsaga import SyncInterpreter, step
    >>> def charge() -> str:
    ...     raise UnknownOutcomeError("the gateway did not answer")
    >>> outcome = step(charge, lambda receipt: None, name="charge").run(SyncInterpreter())
    >>> outcome.unresolved
    ('charge',)
    """


class ResultRejectedError(Exception):
    """Raised by an action (or a `Perform` function) whose effect took place and returned
    `result`, but whose step must fail with `error` all the same.

    The engine then records the step as completed with `result` (a `StepCompleted` event; its
    compensation will receive `result`), fails the step with `error` without retrying it (the
    effect happened: running it again cannot make its result acceptable), and compensates as
    for any failure (contract rule 2), this step included. Raised while the run is already
    undoing (a late completion, or an unknown outcome being resolved by running the step
    again), the step's compensation runs with `result` like any completed step's.

    A durable run raises it for a step whose result the journal's codec cannot encode: the
    effect took place, so it is compensated with the result this process still holds.

    Attributes:
        result: what the effect returned: its compensation's argument.
        error: why the step fails; what the outcome reports.

    >>> from fsaga import SyncInterpreter, step
    >>> undone = []
    >>> def reserve() -> str:
    ...     raise ResultRejectedError("R-1", ValueError("reservation R-1 is for the wrong day"))
    >>> outcome = step(reserve, undone.append, name="reserve").run(SyncInterpreter())
    >>> outcome.error, outcome.compensated, undone
    (ValueError('reservation R-1 is for the wrong day'), ('reserve',), ['R-1'])
    """

    def __init__(self, result: object, error: Exception) -> None:
        super().__init__(f"the effect took place, but its result was rejected: {error}")
        self.result = result
        self.error = error

    def __reduce__(self) -> tuple[object, ...]:
        return (ResultRejectedError, (self.result, self.error))
