"""The `refresh_feeds` job: every 10 minutes (scheduler.periodic), recompute
and cache the discover feeds of users active in the last hour, so their next
`/discover` is a cache hit with fresh scores."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from unimatch.scheduler.handlers import JobContext, register
from unimatch.storage.cache import Cache
from unimatch.storage.feed import recently_active, refresh_feed
from unimatch.storage.pg import Database

log = logging.getLogger("unimatch.feed")

ACTIVE_WITHIN_SECONDS = 3600
# A bound on one run's work; the most recently active come first.
MAX_USERS_PER_RUN = 5000
# Feeds computed at once: the job shares the database (and, on a small
# machine, the cores) with live requests, so it takes its time.
CONCURRENCY = 1


async def refresh_feeds_of(db: Database, cache: Cache) -> int:
    """Recompute the feeds of recently active users; how many were refreshed."""
    users = await recently_active(db, ACTIVE_WITHIN_SECONDS, MAX_USERS_PER_RUN)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(user_id: Any) -> None:
        async with gate:
            await refresh_feed(db, cache, user_id)

    await asyncio.gather(*(one(user_id) for user_id in users))
    return len(users)


@register("refresh_feeds")
async def refresh_feeds(payload: dict[str, Any], ctx: JobContext) -> None:
    """Idempotent: a second run only recomputes the same feeds."""
    refreshed = await refresh_feeds_of(ctx.db, ctx.service(Cache))
    log.info("refreshed %d feeds", refreshed)
