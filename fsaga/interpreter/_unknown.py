"""Unknown outcomes (contract rule 3): what the engine does with an attempt it cannot judge.

Private to the engine. An attempt has an unknown outcome when it was cut off (a timeout, a
cancellation, an interrupt) or says so itself (`UnknownOutcomeError`). Forward, an idempotent
step retries it; otherwise the step fails and the undo settles it: run the action again (an
idempotent step with a compensation, same idempotency key) to learn the result its compensation
needs, else call its unknown-outcome compensation, else report it unresolved.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias

from fsaga.policy import Retry
from fsaga.saga import StepNode

__all__ = ["ONE_MORE", "Settlement", "forward_retry", "recorded", "settlement", "without_result"]

ONE_MORE: Final = Retry(2, delay=0.0, jitter=0.0)
"""How an idempotent step without a retry policy retries an unknown outcome: once, at once."""

Settlement: TypeAlias = Literal["run-again", "on-unknown", "unresolved"]
"""How the undo settles a step whose outcome is unknown."""


def forward_retry(node: StepNode[Any], attempt: int, *, retriable: bool) -> Retry | None:
    """The policy to retry an unknown outcome of attempt `attempt` with, in the forward run, or
    ``None`` if it is not retried (the step fails, and the undo settles it)."""
    if not retriable or not node.idempotent:
        return None
    retry = node.retry or ONE_MORE
    return retry if attempt < retry.attempts else None


def recorded(node: StepNode[Any]) -> bool:
    """Whether the undo has anything to do for a step whose outcome is unknown."""
    return node.compensate is not None or node.on_unknown is not None


def settlement(node: StepNode[Any]) -> Settlement:
    """How the undo settles `node`'s unknown outcome."""
    if node.idempotent and node.compensate is not None:
        return "run-again"
    return without_result(node)


def without_result(node: StepNode[Any]) -> Settlement:
    """How the undo settles `node`'s unknown outcome when running it again is not (or no more)
    an option."""
    return "on-unknown" if node.on_unknown is not None else "unresolved"
