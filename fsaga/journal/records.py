"""What a journal stores: one `SagaRecord` per saga and its `Entry` timeline.

A saga's record says what was started (definition name and version, encoded input) and where it
stands (`SagaStatus`, the encoded outcome once finished, how often recovery picked it up). Its
entries are the transitions of its run, numbered ``1, 2, 3, ...``: the intent before each effect
and what came of it after, for steps and compensations alike.

>>> Entry(seq=1, kind="intent", path="order/charge", attempt=1)
Entry(seq=1, kind='intent', path='order/charge', attempt=1, payload=None)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, final, get_args

HEARTBEAT = 1.0
"""Seconds by which `SagaRecord.updated_at` may trail the last append."""

__all__ = [
    "ENTRY_KINDS",
    "FINISHED_STATUSES",
    "HEARTBEAT",
    "SAGA_STATUSES",
    "Entry",
    "EntryKind",
    "FinishedStatus",
    "Lease",
    "PendingSaga",
    "SagaRecord",
    "SagaStatus",
]

FinishedStatus: TypeAlias = Literal["succeeded", "failed", "partially_failed"]
"""How a run ended, written once with its outcome by `Journal.finish`: the outcome was a
`Success`, a `Failure` or a `PartialFailure`."""

SagaStatus: TypeAlias = Literal["running", "succeeded", "failed", "partially_failed", "dead"]
"""Where a saga stands: ``"running"`` until it finishes (`FinishedStatus`), or ``"dead"`` when
recovery gave up on it after too many attempts (the dead-letter state, see
`Journal.claim_for_recovery`; `Journal.release` makes it ``"running"`` again)."""

EntryKind: TypeAlias = Literal[
    "intent",
    "completed",
    "failed",
    "unknown",
    "compensation_intent",
    "compensated",
    "compensation_failed",
    "unknown_settled",
    "rejected",
]
"""One transition of a run (see `Entry`)."""

SAGA_STATUSES: Final[tuple[SagaStatus, ...]] = get_args(SagaStatus)
"""Every `SagaStatus`, in the order of the alias."""

FINISHED_STATUSES: Final[tuple[FinishedStatus, ...]] = get_args(FinishedStatus)
"""Every `FinishedStatus`, in the order of the alias."""

ENTRY_KINDS: Final[tuple[EntryKind, ...]] = get_args(EntryKind)
"""Every `EntryKind`, in the order of the alias."""


@final
@dataclass(frozen=True, slots=True)
class SagaRecord:
    """A saga as the journal knows it.

    Attributes:
        saga_id: the caller's id for the run; starting the same id again finds this record.
        name: the name its definition was registered under.
        version: the definition's version when it started; a recovery rebuilds the saga from
            the same name and version.
        input: the codec-encoded input the definition was called with.
        status: ``"running"``, a `FinishedStatus`, or ``"dead"``.
        outcome: the codec-encoded outcome, written once when the saga finished; ``None`` while
            it runs and when it is dead.
        recovery_attempts: how often `Journal.claim_for_recovery` picked it up (since its
            last `Journal.release`): recoveries that got as far as running or recording
            something, and did not finish it.
        created_at: when it was created (seconds since the epoch, from the journal's clock).
        updated_at: when anything about it was last written (creation, entries, outcome,
            claims, parking). Appending entries moves it only once `HEARTBEAT` seconds have
            passed since (a heartbeat: it spares most appends a second page to write). A
            release leaves it as it was: nobody runs a dead saga, so it counts as abandoned
            at once.
        last_recovery_at: when a recovery last claimed it; ``None`` if none ever did.
        last_recovery_error: the encoded error that ended that recovery, when its process
            lived to record it (`Journal.record_recovery_error`); ``None`` otherwise (the
            process stopped, or the recovery is still running).
    """

    saga_id: str
    name: str
    version: int
    input: bytes
    status: SagaStatus
    outcome: bytes | None
    recovery_attempts: int
    created_at: float
    updated_at: float
    last_recovery_at: float | None = None
    last_recovery_error: bytes | None = None

    @property
    def finished(self) -> bool:
        """Whether the saga is past running: it has its outcome, or it is dead."""
        return self.status != "running"


@final
@dataclass(frozen=True, slots=True)
class Entry:
    """One transition of a run, in the order it happened.

    The kinds, for a step at `path` and its attempt `attempt`:

    - ``"intent"``: the action is about to run (written before the effect); the first intent
      a run writes may carry, as its `payload`, what the run's listeners keep of it across a
      crash (a trace context: `fsaga.durable.ContextCarrier`), which no replay reads;
    - ``"completed"``: the action returned; `payload` is its encoded result;
    - ``"failed"``: the action failed; `payload` is an encoded description of the error;
    - ``"unknown"``: nobody knows whether the action took effect (its attempt timed out, was
      cancelled, or a recovery found it in flight);
    - ``"compensation_intent"``, ``"compensated"``, ``"compensation_failed"``: the same three
      for the step's compensation (`payload` of a failure is its encoded error);
    - ``"unknown_settled"``: an unknown outcome was resolved by the step's unknown-outcome
      compensation;
    - ``"rejected"``: the action returned, but the step failed all the same
      (`fsaga.errors.ResultRejectedError`; a result the codec cannot encode, say); `payload`
      encodes ``{"error": error}``, plus ``"result"`` when the result could be encoded.

    Attributes:
        seq: the entry's place in its saga's timeline: 1 for the first, then 2, 3, ... with no
            gaps (`Journal.append` enforces it).
        kind: the transition (`EntryKind`).
        path: the step's path, e.g. ``"order/payment/charge"``.
        attempt: the attempt it belongs to, from 1.
        payload: the encoded result or error, for the kinds that carry one (a carrier, for an
            intent); else ``None``.

    Raises:
        ValueError: `seq` or `attempt` is below 1, or `kind` is not an `EntryKind`.
        TypeError: `payload` is neither bytes nor ``None``.
    """

    seq: int
    kind: EntryKind
    path: str
    attempt: int
    payload: bytes | None = None

    def __post_init__(self) -> None:
        if self.seq < 1:
            raise ValueError(f"entry seq must be 1 or more, got {self.seq}")
        if self.attempt < 1:
            raise ValueError(f"entry attempt must be 1 or more, got {self.attempt}")
        if self.kind not in ENTRY_KINDS:
            raise ValueError(f"entry kind must be one of {ENTRY_KINDS}, got {self.kind!r}")
        if self.payload is not None and not isinstance(self.payload, bytes):
            raise TypeError(f"entry payload must be bytes or None, got {type(self.payload)}")


@final
@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's hold on a saga (or on a pending saga it is starting), until `expires_at`.

    One worker drives a saga at a time: the one holding its lease. It renews the lease while it
    works (`fsaga.journal.LeaseKeeper`); a lease not renewed in time expires, another worker may
    take the saga over, and the writes of the first are refused from then on
    (`fsaga.journal.LeaseLostError`).

    Attributes:
        saga_id: the saga.
        owner: the worker holding it (any string naming the worker, unique among workers).
        expires_at: when the lease runs out unless renewed, in seconds since the epoch, on the
            journal's clock (the database server's, for `fsaga.journal.PostgresJournal`).
    """

    saga_id: str
    owner: str
    expires_at: float


@final
@dataclass(frozen=True, slots=True)
class PendingSaga:
    """A saga submitted for any worker to start, not started yet (queued, or parked).

    Attributes:
        saga_id: the id the saga will run under.
        name: the name its definition is registered under.
        input: the codec-encoded input to start it with.
        submitted_at: when it was submitted (seconds since the epoch, on the journal's clock).
        claims: how often a worker claimed it to start it (a worker that died between its claim
            and the saga's start leaves it to the next claim once its lease expires).
        lease: the lease of the worker starting it now, if one claimed it; ``None`` while it
            waits (or once that lease was released), and while it is parked.
        last_claimed_at: when a worker last claimed it; ``None`` if none ever did.
        last_error: the encoded error that ended the last claim's start, when its worker lived
            to record it; ``None`` otherwise (the worker stopped, or the start is under way).
        parked_at: when it was parked, its starts having failed too often (see
            `fsaga.journal.PostgresJournal.claim_pending`); ``None`` while it is queued.
    """

    saga_id: str
    name: str
    input: bytes
    submitted_at: float
    claims: int = 0
    lease: Lease | None = None
    last_claimed_at: float | None = None
    last_error: bytes | None = None
    parked_at: float | None = None

    @property
    def parked(self) -> bool:
        """Whether it is parked: no worker claims it until it is released."""
        return self.parked_at is not None
