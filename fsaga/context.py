"""What a running effect can know about itself: `current_context()` and `StepContext`.

Effects keep their plain signatures (an action takes nothing, a compensation takes the action's
result); the context travels beside them in a context variable that every interpreter sets
around each effect it performs. Use it to pass an idempotency key to a remote service:

>>> from fsaga import step
>>> from fsaga.interpreter import SyncInterpreter
>>> def charge() -> str:
...     return current_context().idempotency_key
>>> step(charge, name="charge").run(SyncInterpreter(), saga_id="order-7")
Success(value='order-7/charge')
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias, final

__all__ = ["StepContext", "StepContextKind", "current_context"]

StepContextKind: TypeAlias = Literal["action", "compensation", "unknown"]
"""What is running: a step's action, its compensation, or its unknown-outcome compensation."""


@final
@dataclass(frozen=True, slots=True)
class StepContext:
    """Who a running effect is, and the key that makes it safe to repeat.

    Attributes:
        saga_id: the run's id.
        path: the step's path, e.g. ``"order/payment/charge"``.
        attempt: 1 for the first attempt, then 2, 3, ... on retries.
        kind: what is running (see `StepContextKind`).
    """

    saga_id: str
    path: str
    attempt: int
    kind: StepContextKind

    @property
    def idempotency_key(self) -> str:
        """``saga_id/path``: the same across attempts, retries, recoveries and processes, so a
        service that deduplicates on it applies the step once (contract rule 10)."""
        return f"{self.saga_id}/{self.path}"


class _ContextSource(Protocol):
    @property
    def saga_id(self) -> str: ...


class _PathSource(Protocol):
    @property
    def path(self) -> str: ...


# The running effect, as (engine, call, kind, attempt), set by the interpreter around each
# effect: building the `StepContext` waits until an effect asks (most never do), and the kind and
# attempt are kept as they were when the effect started, so a thread or task the effect left
# behind keeps seeing its own context. A stretch of plain steps (`fsaga.interpreter._plan`) sets
# it once for all its steps: the call's path is then the step running when the context is read
# (a straight run, before its engine is made, stands for both the engine and the call).
_running_effect: ContextVar[tuple[_ContextSource, _PathSource, StepContextKind, int]] = ContextVar(
    "fsaga_running_effect"
)


def current_context() -> StepContext:
    """The context of the effect that is running now.

    Read it while the effect runs (a task or thread the effect leaves running after it returns
    may see a later step's context).

    Raises:
        LookupError: no fsaga effect is running in this context (called outside an action,
            compensation or unknown-outcome compensation).
    """
    try:
        source, call, kind, attempt = _running_effect.get()
    except LookupError:
        raise LookupError(
            "current_context() is only available while an interpreter runs a step's action or "
            "compensation"
        ) from None
    return StepContext(source.saga_id, call.path, attempt, kind)
