"""Periodic jobs: the schedule, the enqueuer that follows it, and the
handlers of the housekeeping kinds.

Time is cut into periods aligned on the Unix epoch (every hour on the hour,
every 10 minutes on :00, :10...). For each schedule, the enqueuer puts one job
per period with `dedupe_key = f"{kind}:{period start}"` through
`queue.enqueue_once`, so any number of scheduler processes, and restarts, add
each period's job exactly once. A period missed while no scheduler ran is not
made up: the next one does the same work.

A schedule whose kind has no registered handler is skipped (logged once):
`refresh_feeds` belongs to the feed module, which registers it when present.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson

from unimatch.scheduler.handlers import HANDLERS, Handler, JobContext, register
from unimatch.scheduler.repeating import Repeating
from unimatch.storage.jobs import enqueue_once
from unimatch.storage.pg import Database

log = logging.getLogger("unimatch.periodic")

CLEANUP_UNVERIFIED = "cleanup_unverified"
REFRESH_FEEDS = "refresh_feeds"  # handler registered by the feed module
BACKUP_REPORTS = "backup_reports"
BACKUP_DATABASE = "backup_database"  # handler in scheduler/backup.py
PURGE_JOBS = "purge_jobs"

UNVERIFIED_MAX_AGE_HOURS = 24
RESOLVED_REPORTS_DAYS = 7  # resolved reports younger than this join the backup
KEEP_DONE_JOBS_DAYS = 7
KEEP_DEAD_JOBS_DAYS = 30
_BATCH = 500

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# In batches, so the hourly cleanup never holds thousands of row locks at once;
# SKIP LOCKED leaves alone a user whose verification is committing right now.
DELETE_UNVERIFIED = """
DELETE FROM users WHERE id IN (
    SELECT id FROM users
    WHERE NOT is_verified AND created_at < now() - make_interval(hours => $1)
    ORDER BY created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
"""

REPORTS_TO_BACK_UP = """
SELECT id, reporter_id, reported_user_id, reason, details, status, resolution,
    resolved_by, resolved_at, created_at
FROM reports
WHERE status = 'open' OR resolved_at >= now() - make_interval(days => $1)
ORDER BY created_at, id
"""

PURGE_FINISHED_JOBS = """
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
    WHERE status = $1 AND finished_at < now() - make_interval(days => $2)
    LIMIT $3
)
"""


@dataclass(frozen=True)
class Schedule:
    kind: str
    every: timedelta
    max_attempts: int = 3


SCHEDULES: tuple[Schedule, ...] = (
    Schedule(CLEANUP_UNVERIFIED, timedelta(hours=1)),
    Schedule(REFRESH_FEEDS, timedelta(minutes=10)),
    Schedule(BACKUP_REPORTS, timedelta(days=1)),
    Schedule(BACKUP_DATABASE, timedelta(days=1)),
    Schedule(PURGE_JOBS, timedelta(days=1)),
)


def period_start(now: datetime, every: timedelta) -> datetime:
    """The start of the period of length `every` containing `now`."""
    periods = (now - _EPOCH) // every
    return _EPOCH + periods * every


class PeriodicEnqueuer:
    """Enqueues each schedule's job for the current period, every `tick`
    seconds (cheap: a known period is not asked of the database twice)."""

    def __init__(
        self,
        db: Database,
        *,
        schedules: Sequence[Schedule] = SCHEDULES,
        handlers: Mapping[str, Handler] | None = None,
        tick: float = 30.0,
    ) -> None:
        self.db = db
        self.schedules = tuple(schedules)
        self.handlers: Mapping[str, Handler] = HANDLERS if handlers is None else handlers
        self.tick = tick
        self._done: dict[str, datetime] = {}  # kind -> last period handled
        self._skipped: set[str] = set()
        self._repeating: Repeating | None = None

    async def enqueue_due(self, now: datetime | None = None) -> list[UUID]:
        """One pass: enqueue what the current periods lack. Returns new ids."""
        now = now or datetime.now(UTC)
        created = []
        for schedule in self.schedules:
            if schedule.kind not in self.handlers:
                if schedule.kind not in self._skipped:
                    log.info("no handler for periodic job %r; not scheduling it", schedule.kind)
                    self._skipped.add(schedule.kind)
                continue
            start = period_start(now, schedule.every)
            if self._done.get(schedule.kind) == start:
                continue
            async with self.db.transaction() as conn:
                job_id = await enqueue_once(
                    conn,
                    schedule.kind,
                    {"period": start.isoformat()},
                    dedupe_key=f"{schedule.kind}:{start.isoformat()}",
                    max_attempts=schedule.max_attempts,
                )
            self._done[schedule.kind] = start
            if job_id is not None:
                log.info("enqueued %s for period %s", schedule.kind, start.isoformat())
                created.append(job_id)
        return created

    def start(self) -> None:
        self._repeating = Repeating("periodic-enqueuer", self.tick, self.enqueue_due)
        self._repeating.start()

    async def stop(self) -> None:
        if self._repeating is not None:
            await self._repeating.stop()
            self._repeating = None


# -- handlers --------------------------------------------------------------


async def delete_unverified_users(
    db: Database, *, older_than_hours: int = UNVERIFIED_MAX_AGE_HOURS
) -> int:
    """Delete users never verified within `older_than_hours` of signing up
    (their OTP rows and tokens cascade). Returns how many."""
    deleted = 0
    while True:
        status = await db.execute(DELETE_UNVERIFIED, older_than_hours, _BATCH)
        count = int(status.rpartition(" ")[2])
        deleted += count
        if count < _BATCH:
            return deleted


@register(CLEANUP_UNVERIFIED)
async def cleanup_unverified(payload: dict[str, Any], ctx: JobContext) -> None:
    """Idempotent: a rerun deletes whatever is old enough by then."""
    hours = int(payload.get("older_than_hours", UNVERIFIED_MAX_AGE_HOURS))
    deleted = await delete_unverified_users(ctx.db, older_than_hours=hours)
    log.info("deleted %d unverified users older than %d h", deleted, hours)


REPORTS_PREFIX = "reports-"
REPORTS_SUFFIX = ".jsonl"


def backup_path(data_dir: Path, day: date | str) -> Path:
    return data_dir / "backups" / f"{REPORTS_PREFIX}{day}{REPORTS_SUFFIX}"


def prune_backups(folder: Path, prefix: str, suffix: str, keep: int) -> list[Path]:
    """Delete all but the `keep` newest `<prefix><date><suffix>` files (dates
    are ISO, so names sort by age). Returns what was deleted."""
    files = sorted(p for p in folder.glob(f"{prefix}*{suffix}") if p.is_file())
    doomed = files[: max(len(files) - max(keep, 1), 0)]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


@register(BACKUP_REPORTS)
async def backup_reports(payload: dict[str, Any], ctx: JobContext) -> None:
    """Write open and recently resolved reports, one JSON object a line, to
    `data_dir/backups/reports-<date>.jsonl`. The date is the period's, so a
    retry rewrites the same file; it is replaced whole, never left half
    written. The `BACKUP_KEEP` newest files are kept."""
    day = period_date(payload)
    days = int(payload.get("resolved_within_days", RESOLVED_REPORTS_DAYS))
    path = backup_path(ctx.config.data_dir, day)
    written = await _dump_reports(ctx.db, path, days)
    log.info("backed up %d reports to %s", written, path)
    prune_backups(path.parent, REPORTS_PREFIX, REPORTS_SUFFIX, ctx.config.backup_keep)


def period_date(payload: Mapping[str, Any]) -> str:
    """The job's day: `date`, else its period's date, else today (UTC)."""
    if "date" in payload:
        return str(payload["date"])
    if "period" in payload:
        return datetime.fromisoformat(payload["period"]).date().isoformat()
    return datetime.now(UTC).date().isoformat()


async def _dump_reports(db: Database, target: Path, days: int) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".jsonl.partial")
    written = 0
    try:
        # A server-side cursor streams the rows: memory stays flat however many.
        async with db.transaction() as conn:
            with partial.open("wb") as handle:
                cursor = await conn.cursor(REPORTS_TO_BACK_UP, days)
                while rows := await cursor.fetch(_BATCH):
                    chunk = b"".join(_json_line(row) for row in rows)
                    await asyncio.to_thread(handle.write, chunk)
                    written += len(rows)
                await asyncio.to_thread(os.fsync, handle.fileno())
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return written


def _json_line(record: Mapping[str, Any]) -> bytes:
    # asyncpg's UUID type is not uuid.UUID, hence `default=str`.
    return orjson.dumps(dict(record), default=str) + b"\n"


@register(PURGE_JOBS)
async def purge_jobs(payload: dict[str, Any], ctx: JobContext) -> None:
    """Delete finished jobs past their retention, so the queue table stays
    small. The retention also bounds how long a periodic key is remembered."""
    for status, days in (("done", KEEP_DONE_JOBS_DAYS), ("dead", KEEP_DEAD_JOBS_DAYS)):
        while True:
            result = await ctx.db.execute(PURGE_FINISHED_JOBS, status, days, _BATCH)
            if int(result.rpartition(" ")[2]) < _BATCH:
                break
