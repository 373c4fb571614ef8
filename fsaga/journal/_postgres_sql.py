"""The statements of a `fsaga.journal.PostgresJournal`, one per call, for its schema.

Every write is one statement, run outside any explicit transaction (the connection is in
autocommit mode), so it costs one round trip and one commit: it reads what it checks, locks the
saga's row against any other write of the saga, writes if every check holds, and returns what
it found, so that the caller can say which check failed without reading again.

The parameters every statement may take:

- ``now``: the journal's clock, or ``NULL`` for the database server's (``now()``);
- ``owner``: the worker whose lease the write needs, or ``NULL`` for a journal not bound to an
  owner, whose writes need no lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

from fsaga.journal._postgres_schema import quoted

__all__ = ["SAGA_COLUMNS", "SUBMISSION_COLUMNS", "Statements", "statements"]

SAGA_COLUMNS: Final = (
    "saga_id, name, version, input, status, outcome, recovery_attempts, created_at, updated_at,"
    " last_recovery_at, last_recovery_error"
)

SUBMISSION_COLUMNS: Final = (
    "saga_id, name, input, submitted_at, claims, lease_owner, lease_expires_at, last_claimed_at,"
    " last_error, parked_at"
)

_CLOCK: Final = (
    "clock AS (SELECT coalesce(%(now)s::float8, extract(epoch FROM now())::float8) AS now)"
)

# Whether the writer may write: a journal not bound to an owner always may; a bound one while
# it holds a live lease. `saga` is the CTE of the saga's row.
_HELD: Final = (
    "(%(owner)s::text IS NULL OR coalesce(saga.lease_owner = %(owner)s::text"
    " AND saga.lease_expires_at > clock.now, false))"
)

# A lease nobody holds: it ran out, or the saga never had one and was silent for `ttl`.
_FREE: Final = (
    "({row}.lease_expires_at <= clock.now OR ({row}.lease_owner IS NULL"
    " AND {row}.updated_at <= clock.now - %(ttl)s::float8))"
)

_BATCH: Final = (
    "unnest(%(seqs)s::bigint[], %(kinds)s::text[], %(paths)s::text[], %(attempts)s::bigint[],"
    " %(payloads)s::bytea[]) AS batch (seq, kind, path, attempt, payload)"
)


def _qualified(table: str, columns: str) -> str:
    """`columns` (``"a, b"``) of `table` (``"t.a, t.b"``)."""
    return ", ".join(f"{table}.{column.strip()}" for column in columns.split(","))


@final
@dataclass(frozen=True, slots=True)
class Statements:
    """The statements of one schema (see each one's comment in `statements`)."""

    create: str
    append: str
    entries: str
    finish: str
    get: str
    sagas_all: str
    sagas_unfinished: str
    sagas_finished: str
    write_state: str
    claim_for_recovery: str
    record_recovery_error: str
    release: str
    acquire: str
    renew: str
    lease_state: str
    release_lease: str
    claim_expired: str
    submit: str
    claim_pending: str
    record_start_error: str
    pending: str
    parked_submissions: str
    submission: str
    release_submission: str
    integrity: str


def statements(schema: str) -> Statements:
    """The statements of a journal in `schema`."""
    s = quoted(schema)
    sagas, entries, submissions = f"{s}.sagas", f"{s}.entries", f"{s}.submissions"
    # The saga's row, locked against every other write of the saga until the statement
    # commits, with the last seq of its timeline (one step down the entries' primary key).
    saga = (
        "saga AS (SELECT s.status, s.updated_at, s.recovery_attempts, s.lease_owner,"
        f" s.lease_expires_at, (SELECT e.seq FROM {entries} AS e"
        " WHERE e.saga_id = %(saga_id)s ORDER BY e.seq DESC LIMIT 1) AS last"
        f" FROM {sagas} AS s WHERE s.saga_id = %(saga_id)s FOR NO KEY UPDATE OF s)"
    )
    insert_batch = (
        f"INSERT INTO {entries} (saga_id, seq, kind, path, attempt, payload)"
        " SELECT %(saga_id)s, batch.seq, batch.kind, batch.path, batch.attempt, batch.payload"
    )
    found = "saga.status, saga.last, saga.lease_owner, saga.lease_expires_at, clock.now"
    return Statements(
        # A new running saga with its first entries (and the lease of its owner), or nothing if
        # the id exists; either way the id leaves the submissions queue.
        create=(
            f"WITH {_CLOCK},"
            f" created AS (INSERT INTO {sagas} (saga_id, name, version, input, status,"
            " recovery_attempts, created_at, updated_at, lease_owner, lease_expires_at)"
            " SELECT %(saga_id)s, %(name)s, %(version)s, %(input)s, 'running', 0, clock.now,"
            " clock.now, %(owner)s::text, clock.now + %(ttl)s::float8 FROM clock"
            " ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id),"
            f" inserted AS ({insert_batch} FROM created, {_BATCH}),"
            f" dequeued AS (DELETE FROM {submissions} WHERE saga_id = %(saga_id)s)"
            " SELECT (SELECT count(*) FROM created), clock.now FROM clock"
        ),
        # The compare-and-set on the timeline: the batch goes in if the saga runs, the writer
        # may write, and the batch starts right after the last seq; the primary key refuses a
        # batch another writer got in first. updated_at moves as a heartbeat.
        append=(
            f"WITH {_CLOCK}, {saga},"
            f" ok AS (SELECT saga.updated_at FROM saga, clock WHERE saga.status = 'running'"
            f" AND {_HELD} AND coalesce(saga.last, 0) = %(first)s::bigint - 1),"
            f" inserted AS ({insert_batch} FROM ok, {_BATCH} RETURNING 1),"
            f" beat AS (UPDATE {sagas} AS target SET updated_at = clock.now FROM ok, clock"
            " WHERE target.saga_id = %(saga_id)s"
            " AND clock.now - ok.updated_at >= %(heartbeat)s::float8)"
            f" SELECT {found}, (SELECT count(*) FROM inserted) FROM saga, clock"
        ),
        # The timeline, or one row of NULLs for a saga without entries; no row: no saga.
        entries=(
            "SELECT e.seq, e.kind, e.path, e.attempt, e.payload"
            f" FROM {sagas} AS s LEFT JOIN {entries} AS e ON e.saga_id = s.saga_id"
            " WHERE s.saga_id = %(saga_id)s ORDER BY e.seq"
        ),
        # The outcome, once, with the last entries; the lease ends with the run.
        finish=(
            f"WITH {_CLOCK}, {saga},"
            f" ok AS (SELECT 1 FROM saga, clock WHERE saga.status = 'running' AND {_HELD}"
            " AND (%(first)s::bigint IS NULL OR coalesce(saga.last, 0) = %(first)s::bigint - 1)),"
            f" inserted AS ({insert_batch} FROM ok, {_BATCH}),"
            f" finished AS (UPDATE {sagas} AS target SET status = %(status)s,"
            " outcome = %(outcome)s, updated_at = clock.now, lease_owner = NULL,"
            " lease_expires_at = NULL FROM ok, clock WHERE target.saga_id = %(saga_id)s"
            " RETURNING 1)"
            f" SELECT {found}, (SELECT count(*) FROM finished) FROM saga, clock"
        ),
        get=f"SELECT {SAGA_COLUMNS} FROM {sagas} WHERE saga_id = %(saga_id)s",
        sagas_all=f"SELECT {SAGA_COLUMNS} FROM {sagas} ORDER BY created_at, saga_id",
        # States the unfinished_sagas index's condition, so that the planner may read it.
        sagas_unfinished=(
            f"SELECT {SAGA_COLUMNS} FROM {sagas} WHERE status = %(status)s"
            " AND status IN ('running', 'dead') ORDER BY created_at, saga_id"
        ),
        sagas_finished=(
            f"SELECT {SAGA_COLUMNS} FROM {sagas} WHERE status = %(status)s"
            " ORDER BY created_at, saga_id"
        ),
        # What a failed write needs to say why it failed.
        write_state=(
            f"WITH {_CLOCK}, saga AS (SELECT s.status, s.lease_owner, s.lease_expires_at,"
            f" (SELECT e.seq FROM {entries} AS e WHERE e.saga_id = %(saga_id)s"
            " ORDER BY e.seq DESC LIMIT 1) AS last"
            f" FROM {sagas} AS s WHERE s.saga_id = %(saga_id)s)"
            f" SELECT {found} FROM saga, clock"
        ),
        # One more recovery of a running saga, or the saga parked as dead past the limit. A
        # journal not bound to an owner leaves alone a saga whose lease another holds, and
        # clears a lease that ran out: its run takes part in no lease.
        claim_for_recovery=(
            f"WITH {_CLOCK}, {saga},"
            " verdict AS (SELECT CASE WHEN saga.status <> 'running' THEN 'finished'"
            f" WHEN NOT {_HELD} THEN 'lost'"
            " WHEN %(stale_before)s::float8 IS NOT NULL"
            " AND saga.updated_at >= %(stale_before)s::float8 THEN 'fresh'"
            " WHEN %(owner)s::text IS NULL AND coalesce(saga.lease_expires_at > clock.now, false)"
            " THEN 'leased'"
            " WHEN saga.recovery_attempts >= %(max_attempts)s::integer THEN 'dead'"
            " ELSE 'claimed' END AS verdict FROM saga, clock),"
            f" changed AS (UPDATE {sagas} AS target SET"
            " status = CASE WHEN verdict.verdict = 'dead' THEN 'dead' ELSE target.status END,"
            " recovery_attempts = target.recovery_attempts"
            " + CASE WHEN verdict.verdict = 'claimed' THEN 1 ELSE 0 END,"
            " updated_at = clock.now,"
            " last_recovery_at = CASE WHEN verdict.verdict = 'claimed' THEN clock.now"
            " ELSE target.last_recovery_at END,"
            " last_recovery_error = CASE WHEN verdict.verdict = 'claimed' THEN NULL"
            " ELSE target.last_recovery_error END,"
            " lease_owner = CASE WHEN verdict.verdict = 'dead' OR %(owner)s::text IS NULL"
            " THEN NULL ELSE target.lease_owner END,"
            " lease_expires_at = CASE WHEN verdict.verdict = 'dead' OR %(owner)s::text IS NULL"
            " THEN NULL ELSE target.lease_expires_at END"
            " FROM verdict, clock WHERE target.saga_id = %(saga_id)s"
            " AND verdict.verdict IN ('dead', 'claimed'))"
            f" SELECT verdict.verdict, {found} FROM verdict, saga, clock"
        ),
        record_recovery_error=(
            f"WITH {_CLOCK}, {saga},"
            f" ok AS (SELECT 1 FROM saga, clock WHERE saga.status = 'running' AND {_HELD}),"
            f" noted AS (UPDATE {sagas} AS target SET last_recovery_error = %(error)s,"
            " updated_at = clock.now FROM ok, clock WHERE target.saga_id = %(saga_id)s)"
            f" SELECT {found} FROM saga, clock"
        ),
        # updated_at stays: nobody runs a dead saga, so it counts as abandoned at once.
        release=(
            f"UPDATE {sagas} SET status = 'running', recovery_attempts = 0, lease_owner = NULL,"
            " lease_expires_at = NULL WHERE saga_id = %(saga_id)s AND status = 'dead'"
            f" RETURNING {SAGA_COLUMNS}"
        ),
        acquire=(
            f"WITH {_CLOCK}, {saga},"
            f" taken AS (UPDATE {sagas} AS target SET lease_owner = %(owner)s::text,"
            " lease_expires_at = clock.now + %(ttl)s::float8 FROM saga, clock"
            " WHERE target.saga_id = %(saga_id)s AND saga.status = 'running'"
            " AND (coalesce(saga.lease_owner = %(owner)s::text, false)"
            f" OR {_FREE.format(row='saga')}) RETURNING target.lease_expires_at)"
            f" SELECT {found}, (SELECT lease_expires_at FROM taken) FROM saga, clock"
        ),
        # The lease of a running saga, or of a pending one being started (until the start
        # moves it to the saga).
        renew=(
            f"WITH {_CLOCK},"
            f" renewed AS (UPDATE {sagas} AS target"
            " SET lease_expires_at = clock.now + %(ttl)s::float8 FROM clock"
            " WHERE target.saga_id = %(saga_id)s AND target.status = 'running'"
            " AND target.lease_owner = %(owner)s::text AND target.lease_expires_at > clock.now"
            " RETURNING target.lease_expires_at),"
            f" renewed_pending AS (UPDATE {submissions} AS target"
            " SET lease_expires_at = clock.now + %(ttl)s::float8 FROM clock"
            " WHERE target.saga_id = %(saga_id)s AND target.lease_owner = %(owner)s::text"
            " AND target.lease_expires_at > clock.now RETURNING target.lease_expires_at)"
            " SELECT lease_expires_at FROM renewed"
            " UNION ALL SELECT lease_expires_at FROM renewed_pending"
        ),
        # Who holds the lease of a saga, or of a pending one: what a failed renewal reports.
        lease_state=(
            f"WITH {_CLOCK}"
            " SELECT 'saga', s.status, s.lease_owner, s.lease_expires_at, clock.now"
            f" FROM {sagas} AS s, clock WHERE s.saga_id = %(saga_id)s"
            " UNION ALL SELECT 'pending', NULL, p.lease_owner, p.lease_expires_at, clock.now"
            f" FROM {submissions} AS p, clock WHERE p.saga_id = %(saga_id)s"
        ),
        # A released lease runs out now: free at once, and its owner's writes are fenced.
        release_lease=(
            f"WITH {_CLOCK},"
            f" released AS (UPDATE {sagas} AS target SET lease_expires_at = clock.now"
            " FROM clock WHERE target.saga_id = %(saga_id)s"
            " AND target.lease_owner = %(owner)s::text AND target.lease_expires_at > clock.now"
            " RETURNING 1),"
            f" released_pending AS (UPDATE {submissions} AS target SET lease_owner = NULL,"
            " lease_expires_at = NULL FROM clock WHERE target.saga_id = %(saga_id)s"
            " AND target.lease_owner = %(owner)s::text AND target.lease_expires_at > clock.now"
            " RETURNING 1)"
            " SELECT (SELECT count(*) FROM released) + (SELECT count(*) FROM released_pending)"
        ),
        # Oldest first; rows another statement has locked (a live run's write, another
        # worker's claim) are skipped, not waited for. With `names` (and `versions`, the same
        # length), only sagas of those definitions.
        claim_expired=(
            f"WITH {_CLOCK},"
            f" picked AS (SELECT s.saga_id FROM {sagas} AS s, clock"
            f" WHERE s.status = 'running' AND {_FREE.format(row='s')}"
            " AND (%(names)s::text[] IS NULL OR (s.name, s.version) IN"
            " (SELECT * FROM unnest(%(names)s::text[], %(versions)s::bigint[])))"
            " ORDER BY s.created_at, s.saga_id LIMIT %(limit)s"
            " FOR NO KEY UPDATE OF s SKIP LOCKED)"
            f" UPDATE {sagas} AS target SET lease_owner = %(owner)s::text,"
            " lease_expires_at = clock.now + %(ttl)s::float8 FROM picked, clock"
            " WHERE target.saga_id = picked.saga_id"
            " RETURNING target.saga_id, target.lease_expires_at, target.created_at"
        ),
        # Queued unless the id is queued or started already; workers listening on the channel
        # hear of it when it commits.
        submit=(
            f"WITH {_CLOCK},"
            f" queued AS (INSERT INTO {submissions} (saga_id, name, input, submitted_at)"
            " SELECT %(saga_id)s, %(name)s, %(input)s, clock.now FROM clock"
            f" WHERE NOT EXISTS (SELECT 1 FROM {sagas} WHERE saga_id = %(saga_id)s)"
            " ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id)"
            " SELECT pg_notify(%(channel)s, saga_id) FROM queued"
        ),
        # Oldest first, skipping those another worker is claiming. A submission claimed
        # `max_claims` times already (each claim's start failed, or its worker died: it is
        # still queued) is parked instead: no lease, nobody claims it until it is released.
        # A claim forgets the error of the claim before it.
        claim_pending=(
            f"WITH {_CLOCK},"
            f" picked AS (SELECT p.saga_id, (%(max_claims)s::integer IS NOT NULL"
            " AND p.claims >= %(max_claims)s::integer) AS parks"
            f" FROM {submissions} AS p, clock WHERE p.parked_at IS NULL"
            " AND (p.lease_expires_at IS NULL OR p.lease_expires_at <= clock.now)"
            " ORDER BY p.submitted_at, p.saga_id LIMIT %(limit)s"
            " FOR UPDATE OF p SKIP LOCKED)"
            f" UPDATE {submissions} AS target SET"
            " lease_owner = CASE WHEN picked.parks THEN NULL ELSE %(owner)s::text END,"
            " lease_expires_at = CASE WHEN picked.parks THEN NULL"
            " ELSE clock.now + %(ttl)s::float8 END,"
            " claims = target.claims + CASE WHEN picked.parks THEN 0 ELSE 1 END,"
            " last_claimed_at = CASE WHEN picked.parks THEN target.last_claimed_at"
            " ELSE clock.now END,"
            " last_error = CASE WHEN picked.parks THEN target.last_error ELSE NULL END,"
            " parked_at = CASE WHEN picked.parks THEN clock.now ELSE NULL END"
            " FROM picked, clock WHERE target.saga_id = picked.saga_id"
            f" RETURNING {_qualified('target', SUBMISSION_COLUMNS)}"
        ),
        # By the worker holding the submission's lease only.
        record_start_error=(
            f"WITH {_CLOCK},"
            f" noted AS (UPDATE {submissions} AS target SET last_error = %(error)s FROM clock"
            " WHERE target.saga_id = %(saga_id)s AND target.lease_owner = %(owner)s::text"
            " AND target.lease_expires_at > clock.now RETURNING 1)"
            " SELECT count(*) FROM noted"
        ),
        pending=(
            f"SELECT {SUBMISSION_COLUMNS} FROM {submissions} WHERE parked_at IS NULL"
            " ORDER BY submitted_at, saga_id"
        ),
        parked_submissions=(
            f"SELECT {SUBMISSION_COLUMNS} FROM {submissions} WHERE parked_at IS NOT NULL"
            " ORDER BY parked_at, saga_id"
        ),
        submission=f"SELECT {SUBMISSION_COLUMNS} FROM {submissions} WHERE saga_id = %(saga_id)s",
        # Queued again, its count of claims reset; the error its last start recorded stays
        # until the next claim.
        # Workers listening on the channel hear of it as of a new submission.
        release_submission=(
            f"WITH released AS (UPDATE {submissions} SET parked_at = NULL, claims = 0"
            " WHERE saga_id = %(saga_id)s AND parked_at IS NOT NULL"
            f" RETURNING {SUBMISSION_COLUMNS})"
            f" SELECT {SUBMISSION_COLUMNS}, pg_notify(%(channel)s, saga_id) FROM released"
        ),
        # Every broken invariant of the journal's own, one line each.
        integrity=(
            "SELECT format('saga %%L: its entries are not numbered 1 to %%s', saga_id, count(*))"
            f" FROM {entries} GROUP BY saga_id HAVING max(seq) <> count(*)"
            " UNION ALL SELECT format('saga %%L is %%s but has %%s outcome', saga_id, status,"
            " CASE WHEN outcome IS NULL THEN 'no' ELSE 'an' END)"
            f" FROM {sagas} WHERE (outcome IS NULL) <> (status IN ('running', 'dead'))"
            " UNION ALL SELECT format('saga %%L is %%s but worker %%L holds its lease',"
            f" saga_id, status, lease_owner) FROM {sagas}"
            " WHERE status <> 'running' AND lease_owner IS NOT NULL"
        ),
    )
