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

__all__ = ["decode_outcome", "encode_failure", "failure_document", "failure_from_document"]


def failure_document(outcome: Failure | PartialFailure) -> dict[str, object]:
    """A failed outcome as JSON-shaped data: what the journal records, before its codec (and
    what a Temporal workflow of fsaga's fails with, `fsaga.temporal`)."""
    match outcome:
        case Failure(error=error, compensated=compensated):
            return {"kind": "failure", "error": describe_error(error), "compensated": compensated}
        case PartialFailure():
            return {
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


def failure_from_document(document: dict[str, object]) -> Failure | PartialFailure:
    """The failed outcome `failure_document` made (its errors `RecordedError` values).

    Raises:
        KeyError, TypeError, ValueError: `document` is not such a document.
    """
    kind = document["kind"]
    error = revive_error(document["error"])
    compensated = _paths(document["compensated"])
    if kind == "failure":
        return Failure(error, compensated)
    if kind != "partial_failure":
        raise ValueError(f"not a failed outcome: {kind!r}")
    failed = document["failed"]
    if not isinstance(failed, list | tuple):
        raise TypeError(f"not a list of failed compensations: {failed!r}")
    return PartialFailure(
        error,
        compensated,
        tuple(
            CompensationFailure(str(path), revive_error(described), int(attempts))
            for path, described, attempts in failed
        ),
        _paths(document["skipped"]),
        _paths(document["unresolved"]),
    )


def _paths(paths: object) -> tuple[str, ...]:
    if not isinstance(paths, list | tuple):
        raise TypeError(f"not a list of paths: {paths!r}")
    return tuple(str(path) for path in paths)


def encode_failure(codec: Codec, outcome: Failure | PartialFailure) -> bytes:
    """A failed outcome as the journal records it."""
    return codec.encode(failure_document(outcome))


def decode_outcome(codec: Codec, saga_id: str, data: bytes) -> Outcome[object]:
    """The outcome the journal recorded for `saga_id`.

    Raises:
        CodecError: an earlier fsaga recorded a success whose final value it could not encode.
    """
    document = codec.decode(data)
    assert isinstance(document, dict)
    if document["kind"] == "success":
        if "unrecordable" in document:
            # Written by an fsaga that reported a success whose value it could not record.
            raise CodecError(
                f"saga {saga_id!r} succeeded, but its final value was never recorded "
                f"({document['unrecordable']}); its effects took place and were not "
                "compensated, and its value is lost"
            )
        return Success(document["value"])
    return failure_from_document(document)
