"""How an interpreter configures the engine: `EngineSettings`, made once and shared by runs."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, final

from fsaga._numbers import check_seconds
from fsaga.context import StepContext
from fsaga.events import Listener

__all__ = ["AroundEffect", "BranchFailurePolicy", "CompensationPolicy", "EngineSettings"]

AroundEffect: TypeAlias = Callable[[StepContext], AbstractContextManager[object]]
"""What a driver enters around each effect it performs (see `fsaga.events.EffectScope`)."""

CompensationPolicy = Literal["continue", "stop"]
"""What a compensation that fails for good does to the others: they still run, or are skipped."""

BranchFailurePolicy = Literal["settle", "cancel"]
"""What a failing `par` branch does to its siblings: lets them settle (what is in flight
finishes, nothing new starts), or has the driver cancel what is in flight (unknown outcomes)."""


@final
@dataclass(frozen=True, slots=True)
class EngineSettings:
    """What an interpreter configures once and every run of its engine shares.

    Attributes:
        listeners: called with every event (see `fsaga.events`).
        clock: the time stamped on events.
        random_unit: random numbers in ``[0, 1)`` for retry jitter.
        on_compensation_failure: ``"continue"`` runs the remaining compensations when one fails
            for good; ``"stop"`` skips them (the outcome lists them as skipped).
        monotonic: the clock deadlines are measured on (the driver's own, so its cancel scopes
            and the engine agree).
        run_timeout: seconds a run's forward steps may take in all, or ``None``.
        on_branch_failure: see `BranchFailurePolicy`.
        concurrent_compensation: undo independent `par` branches side by side (in reverse
            causal order) instead of one step at a time in reverse completion order.
        effect_scopes: made from the listeners, not given: the ``around_effect`` method of each
            listener that has one (`fsaga.events.EffectScope`), for the driver to enter around
            every effect it performs.
    """

    listeners: tuple[Listener, ...] = ()
    clock: Callable[[], float] = time.time
    random_unit: Callable[[], float] = random.random
    on_compensation_failure: CompensationPolicy = "continue"
    monotonic: Callable[[], float] = time.monotonic
    run_timeout: float | None = None
    on_branch_failure: BranchFailurePolicy = "settle"
    concurrent_compensation: bool = False
    effect_scopes: tuple[AroundEffect, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        scopes: list[AroundEffect] = []
        for listener in self.listeners:
            if not callable(listener):
                raise TypeError(f"listener {listener!r} is not callable")
            around = getattr(listener, "around_effect", None)
            if around is not None:
                if not callable(around):
                    raise TypeError(
                        f"listener {listener!r} has an around_effect that is not callable"
                    )
                scopes.append(around)
        if scopes:
            object.__setattr__(self, "effect_scopes", tuple(scopes))
        for label, function in (
            ("clock", self.clock),
            ("random_unit", self.random_unit),
            ("monotonic", self.monotonic),
        ):
            if not callable(function):
                raise TypeError(f"{label} must be callable, got {function!r}")
        if self.on_compensation_failure not in ("continue", "stop"):
            raise ValueError(
                "on_compensation_failure must be 'continue' or 'stop', "
                f"got {self.on_compensation_failure!r}"
            )
        if self.on_branch_failure not in ("settle", "cancel"):
            raise ValueError(
                f"on_branch_failure must be 'settle' or 'cancel', got {self.on_branch_failure!r}"
            )
        if not isinstance(self.concurrent_compensation, bool):
            raise TypeError(
                f"concurrent_compensation must be a bool, got {self.concurrent_compensation!r}"
            )
        if self.run_timeout is not None:
            # Stored as a float: the engine adds it to its clock at the start of every run.
            seconds = check_seconds(self.run_timeout, what="timeout")
            object.__setattr__(self, "run_timeout", seconds)
