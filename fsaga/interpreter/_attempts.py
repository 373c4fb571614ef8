"""Attempts and their deadlines: which deadline binds an attempt, and what passing it means.

Private to the engine. An attempt is bound by the earliest of its step's own timeout and the
deadline of the sub-tree (or run) it runs in; a compensation only by its own timeout. The
engine stamps the call with that moment and remembers which deadline it was, so the error
names the step and the deadline that passed.
"""

from __future__ import annotations

from collections.abc import Callable

from fsaga.errors import StepTimeoutError
from fsaga.interpreter._call import ACTION, NO_DEADLINE, SLEEP, Call
from fsaga.interpreter._fibers import Deadline

__all__ = [
    "NotStarted",
    "bind_attempt",
    "bind_compensation",
    "not_started_error",
    "timeout_error",
]


class NotStarted(Exception):
    """What a `Perform` function raises for an action's attempt that the run it replays never
    started (a durable replay, `fsaga.durable`): the engine fails the step without a retry, as
    its last attempt that ran, as when a deadline keeps an attempt from starting.

    `error` is why the attempt did not start, as that run recorded it. When it recorded nothing
    (`recorded` is false: a first attempt that could not start leaves no trace), the deadline
    of the sub-tree or run that binds the attempt had passed, and the engine names it
    (`not_started_error`); if none binds it, `error` stands."""

    def __init__(self, error: BaseException, *, recorded: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.recorded = recorded


def bind_attempt(call: Call, limit: Deadline | None, now: float) -> None:
    """Stamp an action's attempt starting `now` with the deadline that binds it: its own
    timeout, or `limit` (a sub-tree's or the run's), whichever comes first. At equal ends the
    step's own timeout wins: the error then names the step, not the scope."""
    timeout = call.node.attempt_timeout
    if timeout is not None and (limit is None or now + timeout <= limit.at):
        call.deadline = now + timeout
        call.limit = None
    elif limit is not None:
        call.deadline = limit.at
        call.limit = limit


def bind_compensation(call: Call, monotonic: Callable[[], float]) -> None:
    """Stamp a compensation's attempt, starting now on `monotonic`, with its own timeout, if
    any: never with the deadline that failed the run (a completed step's record may still carry
    its action's)."""
    timeout = call.node.compensation_timeout
    call.deadline = NO_DEADLINE if timeout is None else monotonic() + timeout
    call.limit = None


def not_started_error(call: Call, limit: Deadline) -> StepTimeoutError:
    """`limit` passed before `call`'s attempt could start."""
    return StepTimeoutError(
        call.path,
        call.attempt,
        limit.seconds,
        "run" if limit.scope is None else "sub-tree",
        scope=limit.scope,
        named=limit.named,
        started=False,
    )


def timeout_error(call: Call) -> StepTimeoutError:
    """The error of `call`, cut off by the deadline it was stamped with."""
    limit = call.limit
    node = call.node
    if limit is not None:
        waited_for = call.retried if call.kind is SLEEP else call
        assert waited_for is not None
        return StepTimeoutError(
            call.path,
            waited_for.attempt,
            limit.seconds,
            "run" if limit.scope is None else "sub-tree",
            scope=limit.scope,
            named=limit.named,
            started=call.kind is not SLEEP,
        )
    if call.kind is ACTION:
        assert node.attempt_timeout is not None
        return StepTimeoutError(call.path, call.attempt, node.attempt_timeout, "step")
    assert node.compensation_timeout is not None
    return StepTimeoutError(call.path, call.attempt, node.compensation_timeout, "compensation")
