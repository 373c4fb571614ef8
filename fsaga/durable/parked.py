"""Sagas parked as dead, and why: what `DurableSagas.parked` lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

from fsaga.durable.errors import RecordedError, revive_error
from fsaga.journal.codec import Codec, CodecError
from fsaga.journal.protocol import Journal
from fsaga.journal.records import Entry, SagaRecord

__all__ = ["ParkedSaga", "parked_saga", "parked_sagas"]

_INTENTS: Final = frozenset({"intent", "compensation_intent"})


@final
@dataclass(frozen=True, slots=True)
class ParkedSaga:
    """A saga parked as dead, and what the journal says about why.

    A saga is parked when recoveries keep claiming it and none finishes it: their processes
    stopped (a crash, a kill, an effect that brings the process down) or their journal writes
    failed. A recovery refused before it touched anything (a changed definition, say) is not
    counted.

    Attributes:
        saga_id: the saga.
        name: its definition's name.
        version: its definition's version.
        recovery_attempts: the recoveries that claimed it and did not finish it.
        parked_at: when it was parked (seconds since the epoch).
        last_recovery_at: when the last of those recoveries claimed it.
        last_recovery_error: the error that ended that recovery, if its process lived to
            record it; ``None`` when the process stopped.
        last_entry: the last entry of its timeline, if any.
        in_flight: that entry when it is an intent (of a step or a compensation): the effect
            that was running when a process last stopped.
    """

    saga_id: str
    name: str
    version: int
    recovery_attempts: int
    parked_at: float
    last_recovery_at: float | None
    last_recovery_error: RecordedError | None
    last_entry: Entry | None
    in_flight: Entry | None


def parked_sagas(journal: Journal, codec: Codec) -> list[ParkedSaga]:
    """Every saga of `journal` parked as dead, oldest first, with why."""
    return [
        parked_saga(record, journal.entries(record.saga_id), codec)
        for record in journal.sagas("dead")
    ]


def parked_saga(record: SagaRecord, entries: list[Entry], codec: Codec) -> ParkedSaga:
    """The dead saga `record`, whose timeline is `entries`, and why it was parked."""
    last = entries[-1] if entries else None
    return ParkedSaga(
        saga_id=record.saga_id,
        name=record.name,
        version=record.version,
        recovery_attempts=record.recovery_attempts,
        parked_at=record.updated_at,
        last_recovery_at=record.last_recovery_at,
        last_recovery_error=_error(record.last_recovery_error, codec),
        last_entry=last,
        in_flight=last if last is not None and last.kind in _INTENTS else None,
    )


def _error(data: bytes | None, codec: Codec) -> RecordedError | None:
    if data is None:
        return None
    try:
        return revive_error(codec.decode(data))
    except CodecError as error:
        return RecordedError("CodecError", f"the recorded error cannot be decoded: {error}")
