"""The small contracts between sagas, interpreters and the code that performs effects.

Two ways to take control of a run:

- change *how effects are performed* (fake them, record them, inject faults) by passing a
  `Perform` function to an interpreter: it receives each `Effect` and returns what the effect
  returned (calling ``effect.run()`` to perform the real one), or raises to fail it. The engine
  still decides what happens next, so every rule of a run keeps holding;
- run sagas some other way entirely by implementing `Interpreter` (or
  `AsyncInterpreterProtocol`), the one method `Saga.run` calls.

Under an async interpreter, `Perform` may return an awaitable (be an ``async def``); the
interpreter awaits it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias, TypeVar, final

if TYPE_CHECKING:
    from fsaga.outcome import Outcome
    from fsaga.saga import Saga

__all__ = ["AsyncInterpreterProtocol", "Effect", "EffectKind", "Interpreter", "Perform"]

_T = TypeVar("_T")

EffectKind: TypeAlias = Literal["action", "compensation", "unknown"]
"""An action, a compensation, or an unknown-outcome compensation (`step(on_unknown=...)`)."""


@final
@dataclass(frozen=True, slots=True)
class Effect:
    """One effect the engine wants performed: an attempt of a step's action or compensation.

    Attributes:
        kind: ``"action"``, ``"compensation"`` or ``"unknown"`` (see `EffectKind`).
        saga_id: the run's id.
        path: the step's path, e.g. ``"order/payment/charge"``.
        attempt: 1 for the first attempt, then 2, 3, ... on retries.
        argument: what a compensation receives (the action's result); the step's
            `fsaga.context.StepContext` for an unknown-outcome compensation; ``None`` for an
            action.
        run: performs the real effect and returns its result.
    """

    kind: EffectKind
    saga_id: str
    path: str
    attempt: int
    argument: object
    run: Callable[[], object]

    @property
    def idempotency_key(self) -> str:
        """``saga_id/path``: the same across attempts, retries and processes (rule 10)."""
        return f"{self.saga_id}/{self.path}"


Perform: TypeAlias = Callable[[Effect], object]
"""Performs an effect and returns its result (or raises to fail that attempt)."""


class Interpreter(Protocol):
    """Anything that can run a saga synchronously: what `Saga.run` calls."""

    def run_saga(self, saga: Saga[_T], /, *, saga_id: str | None = None) -> Outcome[_T]:
        """Run `saga` to its outcome."""
        ...


class AsyncInterpreterProtocol(Protocol):
    """Anything that can run a saga asynchronously: ``await saga.run(interpreter)``."""

    def run_saga(self, saga: Saga[_T], /, *, saga_id: str | None = None) -> Awaitable[Outcome[_T]]:
        """Run `saga` to its outcome."""
        ...
