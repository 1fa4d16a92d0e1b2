"""The durable job queue: rows of `jobs`, claimed under a lease.

Lifecycle: `queued` → (claim) `running` → `done`, or back to `queued` with a
backoff after a failure, or `dead` after `max_attempts` attempts.

Guarantees and their price:

- **Transactional enqueue.** `enqueue` takes the caller's connection, so a job
  commits or rolls back with the data it belongs to (an OTP row and its mail).
- **At-least-once execution.** A claim leases the job to one worker until
  `locked_until`. A worker that dies leaves the lease to expire, and the next
  `claim` takes the job again (`attempts` counts every claim). A job can thus
  run twice; handlers must be idempotent.
- **One holder at a time.** Every claim is identified by `(locked_by,
  attempts)`. `complete`, `fail`, `extend_lease` and `release` only act while
  the caller still holds that claim, so a zombie worker whose lease expired
  and whose job was re-claimed cannot overwrite the newer outcome.
- **Order.** Due jobs are claimed by `(priority, run_at)`; lower priority runs
  first. Order is best-effort across workers, never a guarantee of sequence.

Timestamps are PostgreSQL's clock (`now()`), never the workers'.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from unimatch.storage.pg import Database

# NOTIFY channel: `enqueue` signals it with the job's kind in the same
# transaction, so a listening worker wakes on commit, never before.
CHANNEL = "unimatch_jobs"

# Closing a suspended user's sockets goes before everything else.
PRIORITY_AUTHORITY = 5
PRIORITY_NOTIFICATION = 10
PRIORITY_WEBHOOK = 20
PRIORITY_MAIL = 30
PRIORITY_CACHE = 50
PRIORITY_CLEANUP = 90
PRIORITY_DEFAULT = 100  # the column default, for kinds not in the table

# The default priority of each known kind. It lives here, not beside the
# handlers, because enqueueing processes need not import any handler module.
DEFAULT_PRIORITY: Mapping[str, int] = {
    "close_sockets": PRIORITY_AUTHORITY,
    "send_notification": PRIORITY_NOTIFICATION,
    "deliver_webhook": PRIORITY_WEBHOOK,
    "send_email": PRIORITY_MAIL,
    "refresh_feeds": PRIORITY_CACHE,
    "cleanup_unverified": PRIORITY_CLEANUP,
    "backup_reports": PRIORITY_CLEANUP,
    "backup_database": PRIORITY_CLEANUP,
    "purge_jobs": PRIORITY_CLEANUP,
}

_MAX_ERROR_CHARS = 4000

ENQUEUE = """
INSERT INTO jobs (kind, payload, priority, run_at, max_attempts, dedupe_key)
VALUES ($1, $2::text::jsonb, $3, COALESCE($4, now()), $5, $6)
ON CONFLICT (dedupe_key) WHERE status IN ('queued', 'running') DO NOTHING
RETURNING id
"""

# The key blocks a second job in any status (done ones too), for as long as
# finished jobs are kept: "at most once per period" for periodic jobs.
ENQUEUE_ONCE = """
INSERT INTO jobs (kind, payload, priority, run_at, max_attempts, dedupe_key)
SELECT $1::text, $2::text::jsonb, $3::smallint, COALESCE($4::timestamptz, now()),
    $5::integer, $6::text
WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE dedupe_key = $6::text)
ON CONFLICT (dedupe_key) WHERE status IN ('queued', 'running') DO NOTHING
RETURNING id
"""

NOTIFY = "SELECT pg_notify($1, $2)"

_JOB_COLUMNS = """
    j.id, j.kind, j.payload::text AS payload, j.priority, j.attempts, j.max_attempts,
    j.run_at, j.locked_by, j.locked_until, j.created_at
"""

# Three steps in one statement (one round trip per claim):
# - `buried`: a running job whose lease expired on its final attempt is dead,
#   not retried: its worker died (or hung) on every attempt it was given.
# - `due` and `expired`: candidates, each locked with SKIP LOCKED so concurrent
#   claimers take disjoint rows without waiting on each other.
# - the UPDATE takes the best `$3` of both and leases them to `$1`.
CLAIM = f"""
WITH buried AS (
    UPDATE jobs SET status = 'dead', finished_at = now(), locked_by = NULL,
        locked_until = NULL, last_error = 'lease expired on the final attempt (worker lost)'
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status = 'running' AND locked_until < now() AND attempts >= max_attempts
        FOR UPDATE SKIP LOCKED
    )
), due AS (
    SELECT id, priority, run_at FROM jobs
    WHERE status = 'queued' AND run_at <= now()
        AND ($4::text[] IS NULL OR kind = ANY($4::text[]))
    ORDER BY priority, run_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), expired AS (
    SELECT id, priority, run_at FROM jobs
    WHERE status = 'running' AND locked_until < now() AND attempts < max_attempts
        AND ($4::text[] IS NULL OR kind = ANY($4::text[]))
    ORDER BY locked_until
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id FROM (SELECT * FROM due UNION ALL SELECT * FROM expired) AS candidates
    ORDER BY priority, run_at
    LIMIT $3
)
UPDATE jobs AS j
SET status = 'running', attempts = j.attempts + 1, locked_by = $1,
    locked_until = now() + make_interval(secs => $2)
FROM picked
WHERE j.id = picked.id
RETURNING {_JOB_COLUMNS}
"""

# `$2, $3` is the claim (locked_by, attempts) the caller believes it holds.
COMPLETE = """
UPDATE jobs SET status = 'done', finished_at = now(), locked_by = NULL, locked_until = NULL
WHERE id = $1 AND status = 'running' AND locked_by = $2 AND attempts = $3
"""

FAIL = """
UPDATE jobs SET
    status = CASE WHEN $6 OR attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
    run_at = CASE WHEN $6 OR attempts >= max_attempts THEN run_at
                  ELSE now() + make_interval(secs => $5) END,
    finished_at = CASE WHEN $6 OR attempts >= max_attempts THEN now() END,
    last_error = $4, locked_by = NULL, locked_until = NULL
WHERE id = $1 AND status = 'running' AND locked_by = $2 AND attempts = $3
RETURNING status
"""

EXTEND_LEASE = """
UPDATE jobs SET locked_until = now() + make_interval(secs => $4)
WHERE id = $1 AND status = 'running' AND locked_by = $2 AND attempts = $3
"""

# Gives a claimed job back, due now. With `$5` (never started) the claim does
# not count as an attempt.
RELEASE = """
UPDATE jobs SET status = 'queued', run_at = now(), locked_by = NULL, locked_until = NULL,
    attempts = CASE WHEN $5 THEN attempts - 1 ELSE attempts END,
    last_error = COALESCE($4, last_error)
WHERE id = $1 AND status = 'running' AND locked_by = $2 AND attempts = $3
"""

COUNTS = """
SELECT kind, status, count(*) AS n FROM jobs
WHERE status IN ('queued', 'running', 'dead')
GROUP BY kind, status
"""


@dataclass(frozen=True)
class Job:
    """One claim of a job: `(locked_by, attempts)` identifies it."""

    id: UUID
    kind: str
    payload: dict[str, Any]
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    locked_by: str
    locked_until: datetime
    created_at: datetime

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> Job:
        values = dict(record)
        values["payload"] = orjson.loads(values["payload"])
        return cls(**values)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempts >= self.max_attempts


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: the n-th retry waits a uniform
    random time in `[0, min(cap, base * 2**(n-1))]`, which spreads a burst of
    failures (say, SMTP down for everyone) instead of retrying in lockstep."""

    base: float = 2.0
    cap: float = 600.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(max(attempt - 1, 0), 60))
        return random.uniform(0.0, ceiling)


DEFAULT_BACKOFF = Backoff()


def default_priority(kind: str) -> int:
    return DEFAULT_PRIORITY.get(kind, PRIORITY_DEFAULT)


def _args(
    kind: str,
    payload: Mapping[str, Any],
    priority: int | None,
    run_at: datetime | None,
    max_attempts: int,
    dedupe_key: str | None,
) -> tuple[Any, ...]:
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if run_at is not None and run_at.tzinfo is None:
        raise ValueError("run_at must be timezone-aware")
    # Encoded here (and cast from text) so any asyncpg connection works,
    # whether or not it has the pool's jsonb codec.
    encoded = orjson.dumps(payload).decode()
    chosen = default_priority(kind) if priority is None else priority
    return (kind, encoded, chosen, run_at, max_attempts, dedupe_key)


async def enqueue(
    conn: asyncpg.Connection,
    kind: str,
    payload: dict[str, Any],
    *,
    priority: int | None = None,
    run_at: datetime | None = None,
    max_attempts: int = 8,
    dedupe_key: str | None = None,
) -> UUID | None:
    """Add a job on `conn`, inside whatever transaction `conn` is in.

    Call it in the transaction that writes the data the job is about: both
    commit, or neither does, and workers are woken only on commit. `payload`
    must be JSON-serialisable. `priority` defaults to the kind's entry in
    `DEFAULT_PRIORITY`; `run_at` (aware) delays the job.

    With `dedupe_key`, enqueueing while a job with that key is queued or
    running is a no-op that returns None; once it is done or dead, the key is
    free again. Returns the new job's id otherwise.
    """
    args = _args(kind, payload, priority, run_at, max_attempts, dedupe_key)
    job_id: UUID | None = await conn.fetchval(ENQUEUE, *args)
    if job_id is not None:
        await conn.execute(NOTIFY, CHANNEL, kind)
    return job_id


async def enqueue_once(
    conn: asyncpg.Connection,
    kind: str,
    payload: dict[str, Any],
    *,
    dedupe_key: str,
    priority: int | None = None,
    run_at: datetime | None = None,
    max_attempts: int = 8,
) -> UUID | None:
    """Like `enqueue`, but the key blocks a job in any status, done included:
    one job per key ever (while finished jobs are kept, see `purge_jobs`).
    This is what periodic jobs use, so restarts and several schedulers
    enqueue each period exactly once."""
    args = _args(kind, payload, priority, run_at, max_attempts, dedupe_key)
    job_id: UUID | None = await conn.fetchval(ENQUEUE_ONCE, *args)
    if job_id is not None:
        await conn.execute(NOTIFY, CHANNEL, kind)
    return job_id


async def claim(
    db: Database,
    worker_id: str,
    lease_seconds: float,
    limit: int = 1,
    *,
    kinds: Collection[str] | None = None,
) -> list[Job]:
    """Lease up to `limit` due jobs to `worker_id` for `lease_seconds`.

    Takes queued jobs whose `run_at` has come and running jobs whose lease
    expired (their worker is presumed dead), best `(priority, run_at)` first,
    skipping rows another claimer holds. `kinds` restricts the claim (None:
    any kind). Each claim counts as an attempt.
    """
    kind_list = None if kinds is None else list(kinds)
    rows = await db.fetch(CLAIM, worker_id, float(lease_seconds), limit, kind_list)
    jobs = [Job.from_record(row) for row in rows]
    # The UPDATE returns rows in no particular order.
    jobs.sort(key=lambda job: (job.priority, job.run_at))
    return jobs


async def complete(db: Database, job: Job) -> bool:
    """Mark the job done. False when the claim was lost (the lease expired and
    someone else took the job): the outcome then belongs to the new holder."""
    status = await db.execute(COMPLETE, job.id, job.locked_by, job.attempts)
    return status == "UPDATE 1"


async def fail(
    db: Database,
    job: Job,
    error: str,
    *,
    backoff: Backoff = DEFAULT_BACKOFF,
    permanent: bool = False,
) -> str | None:
    """Record a failed attempt: back to `queued` after a backoff delay, or
    `dead` when this was the last attempt (or the error is `permanent`).
    Returns the new status, or None when the claim was lost."""
    delay = backoff.delay(job.attempts)
    status: str | None = await db.fetchval(
        FAIL, job.id, job.locked_by, job.attempts, error[-_MAX_ERROR_CHARS:], delay, permanent
    )
    return status


async def extend_lease(db: Database, job: Job, lease_seconds: float) -> bool:
    """Push the lease to `now() + lease_seconds`. False when the claim was
    lost: the caller should stop working on the job."""
    status = await db.execute(
        EXTEND_LEASE, job.id, job.locked_by, job.attempts, float(lease_seconds)
    )
    return status == "UPDATE 1"


async def release(
    db: Database, job: Job, *, error: str | None = None, started: bool = True
) -> bool:
    """Give a claimed job back, due at once (graceful shutdown). A job that
    never `started` does not spend an attempt."""
    status = await db.execute(
        RELEASE,
        job.id,
        job.locked_by,
        job.attempts,
        None if error is None else error[-_MAX_ERROR_CHARS:],
        not started,
    )
    return status == "UPDATE 1"


async def counts(db: Database) -> dict[str, dict[str, int]]:
    """Queued, running and dead jobs, by kind: `{kind: {status: n}}`."""
    result: dict[str, dict[str, int]] = {}
    for row in await db.fetch(COUNTS):
        result.setdefault(row["kind"], {})[row["status"]] = row["n"]
    return result


# The mail job's kind; its handler is `scheduler.mail.send_email`.
SEND_EMAIL = "send_email"


async def enqueue_email(
    conn: asyncpg.Connection, to: str, subject: str, text: str, **options: Any
) -> UUID | None:
    """Enqueue a `send_email` job on `conn` (inside the caller's transaction).
    `options` are `queue.enqueue`'s keywords (priority, run_at, dedupe_key...)."""
    return await enqueue(conn, SEND_EMAIL, {"to": to, "subject": subject, "text": text}, **options)


# The job that closes every socket of a user (its handler is
# `scheduler.sockets.close_sockets`).
CLOSE_SOCKETS = "close_sockets"


async def enqueue_close_sockets(
    conn: asyncpg.Connection, user_id: UUID, code: int, reason: str
) -> UUID | None:
    """In the transaction that takes a user's authority away (a suspension):
    close their sockets, retried until a node confirms it."""
    return await enqueue(
        conn, CLOSE_SOCKETS, {"user_id": str(user_id), "code": code, "reason": reason},
        max_attempts=20,
    )
