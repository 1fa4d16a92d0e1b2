"""The job queue's depth, oldest waiting job and recent dead jobs, read from
PostgreSQL every `REFRESH_SECONDS` by the scheduler into gauges.

Every kind the scheduler knows is reported, with zeros when it has no jobs:
a series that exists at 0 before its first dead job turns 1 is what lets the
`DeadJobs` alert fire on that first one. A kind seen once (say, enqueued by a
newer release) keeps being reported, at 0 once its jobs are gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from unimatch.domain.metrics import (
    JOB_QUEUE_DEPTH,
    JOB_QUEUE_OLDEST,
    JOB_QUEUE_SAMPLED,
    JOBS_DEAD_LAST_HOUR,
)
from unimatch.scheduler.repeating import Repeating
from unimatch.storage.pg import Database

log = logging.getLogger("unimatch.queue_metrics")

REFRESH_SECONDS = 15.0
DEAD_WINDOW_HOURS = 1

# Reads the queued and running jobs through their partial indexes and the
# recently finished ones through jobs_finished_idx.
QUEUE_STATE = """
SELECT kind,
    count(*) FILTER (WHERE status = 'queued' AND run_at <= now()) AS due,
    count(*) FILTER (WHERE status = 'queued' AND run_at > now()) AS delayed,
    count(*) FILTER (WHERE status = 'running') AS running,
    count(*) FILTER (WHERE status = 'dead') AS dead_recent,
    COALESCE(EXTRACT(EPOCH FROM now() - min(run_at)
        FILTER (WHERE status = 'queued' AND run_at <= now())), 0)::float8 AS oldest_seconds
FROM jobs
WHERE status IN ('queued', 'running')
    OR (status = 'dead' AND finished_at >= now() - make_interval(hours => $1))
GROUP BY kind
"""


@dataclass(frozen=True)
class KindState:
    due: int = 0
    delayed: int = 0
    running: int = 0
    dead_recent: int = 0
    oldest_seconds: float = 0.0


async def read_queue_state(db: Database) -> dict[str, KindState]:
    """`{kind: KindState}` for every kind with live or recently dead jobs."""
    rows = await db.fetch(QUEUE_STATE, DEAD_WINDOW_HOURS)
    return {
        row["kind"]: KindState(
            row["due"], row["delayed"], row["running"], row["dead_recent"],
            row["oldest_seconds"],
        )
        for row in rows
    }


class QueueGauges:
    """Refreshes the queue gauges every `interval` seconds; `known_kinds`
    (called at each refresh) lists the kinds reported even without jobs."""

    def __init__(
        self,
        db: Database,
        known_kinds: Callable[[], Collection[str]],
        *,
        interval: float = REFRESH_SECONDS,
    ) -> None:
        self.db = db
        self.known_kinds = known_kinds
        self.interval = interval
        self._reported: set[str] = set()
        self._repeating: Repeating | None = None

    async def refresh(self) -> dict[str, KindState]:
        """One read of the queue into the gauges; returns what it set."""
        found = await read_queue_state(self.db)
        self._reported |= set(self.known_kinds()) | set(found)
        states = {kind: found.get(kind, KindState()) for kind in self._reported}
        for kind, state in states.items():
            JOB_QUEUE_DEPTH.labels(kind, "due").set(state.due)
            JOB_QUEUE_DEPTH.labels(kind, "delayed").set(state.delayed)
            JOB_QUEUE_DEPTH.labels(kind, "running").set(state.running)
            JOB_QUEUE_OLDEST.labels(kind).set(state.oldest_seconds)
            JOBS_DEAD_LAST_HOUR.labels(kind).set(state.dead_recent)
        JOB_QUEUE_SAMPLED.set(time.time())
        return states

    def start(self) -> None:
        # The database may be away: the sampled timestamp then goes stale.
        self._repeating = Repeating("queue-gauges", self.interval, self.refresh)
        self._repeating.start()

    async def stop(self) -> None:
        if self._repeating is not None:
            await self._repeating.stop()
            self._repeating = None
