"""How a durable run tells its listeners that it ended: `SagaFinished` once its outcome is
recorded, `SagaStopped` when it stops without recording one (docs/concepts.md#rule-9).

The interpreter a durable run drives emits `SagaFinished` as soon as the engine has an outcome,
before the journal holds it. The run's listeners get every event but that one
(`HoldingBack`); the run emits its last event itself, once it knows whether the outcome was
recorded (`Ending`).
"""

from __future__ import annotations

import logging
import time
from typing import final

from fsaga.durable.errors import NonDeterminismError, SagaBusyError, SagaParkedError
from fsaga.events import Event, Listener, SagaFinished, SagaStopped, StopReason
from fsaga.journal.codec import CodecError
from fsaga.journal.protocol import JournalError, LeaseLostError
from fsaga.outcome import Outcome

__all__ = ["Ending", "HoldingBack", "stop_reason"]

logger = logging.getLogger(__name__)


@final
class HoldingBack:
    """A listener of a durable run, handed every event of the interpreter but `SagaFinished`,
    which the run emits itself once its outcome is recorded."""

    __slots__ = ("listener",)

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def __call__(self, event: Event) -> object:
        if isinstance(event, SagaFinished):
            return None
        return self.listener(event)

    def __repr__(self) -> str:
        return repr(self.listener)

    def __getattr__(self, name: str) -> object:
        # The listener's effect scope, if it has one (`fsaga.events.EffectScope`), goes on
        # wrapping the run's effects.
        if name == "around_effect":
            return getattr(self.listener, name)
        raise AttributeError(name)


def stop_reason(error: BaseException | None) -> StopReason:
    """Why a run that `error` stopped recorded no outcome (see `SagaStopped`)."""
    match error:
        case None:
            return "interrupted"
        case LeaseLostError():
            return "fenced"
        case SagaParkedError():
            return "parked"
        case SagaBusyError():
            return "taken_over"
        case NonDeterminismError() | CodecError():
            return "refused"
        case JournalError():
            return "journal_failed"
        case Exception():
            return "error"
        case _:
            return "interrupted"


@final
class Ending:
    """The last event of one durable run: emitted once, `SagaFinished` or `SagaStopped`."""

    __slots__ = ("_listeners", "_saga_id", "emitted")

    def __init__(self, saga_id: str, listeners: tuple[Listener, ...]) -> None:
        self._saga_id = saga_id
        self._listeners = listeners
        self.emitted: Event | None = None

    def finished(self, outcome: Outcome[object]) -> None:
        """The run recorded `outcome`."""
        self._emit(SagaFinished(self._saga_id, time.time(), outcome))

    def stopped(self, error: BaseException | None, reason: StopReason | None = None) -> None:
        """The run stopped without recording an outcome, because of `error` (for `reason`, by
        default the one `error` stands for)."""
        why = stop_reason(error) if reason is None else reason
        self._emit(SagaStopped(self._saga_id, time.time(), why, error))

    def _emit(self, event: SagaFinished | SagaStopped) -> None:
        if self.emitted is not None:
            return
        self.emitted = event
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception(
                    "saga %s: listener %r raised on %s; ignored",
                    event.saga_id,
                    listener,
                    type(event).__name__,
                )
