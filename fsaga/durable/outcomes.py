"""Outcomes as a journal records them: what `DurableSagas` writes with `Journal.finish`, and
reads back for a saga that finished.

A success records its encoded value (the saga's last continuation encodes it, see
`fsaga.durable.runs`); a failure, its error as `describe_error` describes it and the paths
it compensated; a partial failure, also each failed compensation, and the paths skipped and
unresolved. Errors read back are `RecordedError` values.
"""

from __future__ import annotations

from fsaga.durable.errors import describe_error, revive_error
from fsaga.journal.codec import Codec, CodecError
from fsaga.outcome import CompensationFailure, Failure, Outcome, PartialFailure, Success

__all__ = ["decode_outcome", "encode_failure"]


def encode_failure(codec: Codec, outcome: Failure | PartialFailure) -> bytes:
    """A failed outcome as the journal records it."""
    match outcome:
        case Failure(error=error, compensated=compensated):
            return codec.encode(
                {"kind": "failure", "error": describe_error(error), "compensated": compensated}
            )
        case PartialFailure():
            return codec.encode(
                {
                    "kind": "partial_failure",
                    "error": describe_error(outcome.error),
                    "compensated": outcome.compensated,
                    "failed": [
                        [failure.path, describe_error(failure.error), failure.attempts]
                        for failure in outcome.failed_compensations
                    ],
                    "skipped": outcome.skipped,
                    "unresolved": outcome.unresolved,
                }
            )


def decode_outcome(codec: Codec, saga_id: str, data: bytes) -> Outcome[object]:
    """The outcome the journal recorded for `saga_id`.

    Raises:
        CodecError: an earlier fsaga recorded a success whose final value it could not encode.
    """
    document = codec.decode(data)
    assert isinstance(document, dict)
    kind = document["kind"]
    if kind == "success":
        if "unrecordable" in document:
            # Written by an fsaga that reported a success whose value it could not record.
            raise CodecError(
                f"saga {saga_id!r} succeeded, but its final value was never recorded "
                f"({document['unrecordable']}); its effects took place and were not "
                "compensated, and its value is lost"
            )
        return Success(document["value"])
    error = revive_error(document["error"])
    if kind == "failure":
        return Failure(error, tuple(document["compensated"]))
    return PartialFailure(
        error,
        tuple(document["compensated"]),
        tuple(
            CompensationFailure(path, revive_error(described), attempts)
            for path, described, attempts in document["failed"]
        ),
        tuple(document["skipped"]),
        tuple(document["unresolved"]),
    )
