"""What a listener carries across a crash: `ContextCarrier`, and where the journal keeps it.

A durable run's listener may want its recoveries to know about it: a tracer links a recovery's
trace to the trace of the run that crashed (`fsaga.contrib.opentelemetry`). Such a listener
hands the run a carrier (a few string headers, like the ones that carry a trace context in an
HTTP request); the run writes it into the journal as the payload of its first intent; a
recovery reads back the carriers of the runs before it and hands them to the listener before
its own run starts.

An intent's payload was always empty before, and a replay never reads it: journals written
with carriers replay under an fsaga that knows nothing of them, and journals written without
them recover as before (with nothing to hand over). ``fsaga journal show`` prints the carrier
after the intent it came with.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Final, Protocol, runtime_checkable

from fsaga.journal.codec import Codec, CodecError
from fsaga.journal.records import Entry

__all__ = ["ContextCarrier"]

logger = logging.getLogger("fsaga.durable")

_KEY: Final = "carrier"
"""The key of an intent's payload (a codec-encoded mapping) that holds the carrier."""


@runtime_checkable
class ContextCarrier(Protocol):
    """A listener that leaves something in the journal for the recoveries of a run.

    `fsaga.durable.DurableSagas` finds these two methods on the listeners it is given. Like a
    listener, a carrier never changes a run: one that raises is logged and ignored.
    """

    def carrier(self, saga_id: str, /) -> Mapping[str, str]:
        """What to keep of the run of `saga_id` going on now (asked as the run writes its first
        intent, inside that effect's scope); empty to keep nothing."""
        ...

    def resuming(
        self, saga_id: str, carriers: Sequence[Mapping[str, str]], /
    ) -> AbstractContextManager[object]:
        """Entered around a recovery's run of `saga_id`; `carriers` are what the runs before
        it kept, oldest first (empty when none kept anything)."""
        ...


def _carriers_of(listeners: Sequence[object]) -> tuple[ContextCarrier, ...]:
    """The listeners that are `ContextCarrier`s."""
    return tuple(listener for listener in listeners if isinstance(listener, ContextCarrier))


def _carrier_payload(
    carriers: Sequence[ContextCarrier], saga_id: str, codec: Codec
) -> bytes | None:
    """The payload of a run's first intent: what `carriers` keep of it, encoded; None if they
    keep nothing."""
    kept: dict[str, str] = {}
    for carrier in carriers:
        try:
            kept.update(carrier.carrier(saga_id))
        except Exception:
            logger.exception("saga %s: carrier %r raised; ignored", saga_id, carrier)
    if not kept:
        return None
    try:
        return codec.encode({_KEY: kept})
    except CodecError:
        logger.exception("saga %s: the codec cannot encode the carrier; not kept", saga_id)
        return None


def _recorded_carriers(entries: Sequence[Entry], codec: Codec) -> list[Mapping[str, str]]:
    """The carriers the intents of `entries` hold, in order. A payload that is not one (written
    by something else) is passed over: a recovery never fails for it."""
    found: list[Mapping[str, str]] = []
    for entry in entries:
        if entry.payload is None or entry.kind not in ("intent", "compensation_intent"):
            continue
        try:
            document = codec.decode(entry.payload)
        except CodecError:
            continue
        kept = document.get(_KEY) if isinstance(document, dict) else None
        if isinstance(kept, dict) and all(
            isinstance(key, str) and isinstance(value, str) for key, value in kept.items()
        ):
            found.append(kept)
    return found


@contextmanager
def _resuming(
    carriers: Sequence[ContextCarrier], saga_id: str, kept: Sequence[Mapping[str, str]]
) -> Iterator[None]:
    """Enter every carrier's `ContextCarrier.resuming` for a recovery of `saga_id`."""
    with ExitStack() as stack:
        for carrier in carriers:
            try:
                stack.enter_context(carrier.resuming(saga_id, kept))
            except Exception:
                logger.exception("saga %s: carrier %r raised resuming; ignored", saga_id, carrier)
        yield
