"""Swipes: one row per (swiper, target), a like or a pass, for ever.

Writes happen only inside the pair's `MatchActor` transaction (see
`unimatch.actors.match`), which is what makes the mutual like race-free.
"""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from unimatch.storage.users import ACTIVE_SUSPENSION

LIKE_WINDOW = dt.timedelta(hours=24)

# Whether the swiper may see the target at all: exists, verified, visible,
# not suspended, not blocked either way. $1 swiper, $2 target.
TARGET_SWIPEABLE = f"""
SELECT EXISTS (
    SELECT 1 FROM users t
    WHERE t.id = $2 AND t.is_verified AND t.is_visible
      AND NOT {ACTIVE_SUSPENSION.format(user="t.id")}
      AND NOT EXISTS (SELECT 1 FROM blocks b
                      WHERE (b.blocker_id = $1 AND b.blocked_id = $2)
                         OR (b.blocker_id = $2 AND b.blocked_id = $1)))"""

# The locks a swipe takes first, in one round trip: the pair's (every writer
# of the pair: swipes, matches, blocks) and, for a like, the swiper's likes
# (one user's likes go through many pair actors, on several hosts at once, so
# the count below cannot be raced past the limit). Always in this order, so
# two swipes never wait on each other crosswise. $1 pair, $2 swiper, $3 like?
LOCK_SWIPE = """
SELECT pg_advisory_xact_lock(hashtextextended('pair:' || $1::uuid::text, 0)),
       CASE WHEN $3 THEN pg_advisory_xact_lock(hashtextextended('likes:' || $2::uuid::text, 0))
       END"""

# Everything a swipe decides on, in one round trip after the locks (a new
# statement, so it sees everything committed before they were granted): the
# swiper's earlier swipe on the target if any, whether the target may be
# swiped, whether the target already liked the swiper, and for a like the
# swiper's likes in the rolling window (swipes_likes_today_idx) and when the
# oldest of them leaves it. $1 swiper, $2 target, $3 like?, $4 the window.
PAIR_STATE = f"""
SELECT (SELECT s.id FROM swipes s WHERE s.swiper_id = $1 AND s.swiped_id = $2) AS existing_id,
       ({TARGET_SWIPEABLE.strip()}) AS swipeable,
       EXISTS (SELECT 1 FROM swipes s
               WHERE s.swiper_id = $2 AND s.swiped_id = $1 AND s.action = 'like') AS liked_back,
       likes.n AS likes, likes.oldest AS oldest_like, now() AS now
FROM (SELECT count(*) AS n, min(created_at) AS oldest FROM swipes
      WHERE $3 AND swiper_id = $1 AND action = 'like'
        AND created_at > now() - $4::interval) likes"""

# The swipe's id is chosen by the caller, so a retried call can recognise a
# row its own first attempt committed.
INSERT = """
INSERT INTO swipes (id, swiper_id, swiped_id, action)
VALUES ($1, $2, $3, $4)
ON CONFLICT (swiper_id, swiped_id) DO NOTHING
RETURNING id"""

async def lock_and_read(
    conn: asyncpg.Connection, pair: uuid.UUID, swiper: uuid.UUID, target: uuid.UUID, like: bool
) -> asyncpg.Record:
    """Take the swipe's locks (LOCK_SWIPE) for the caller's transaction, then
    read the pair's state (PAIR_STATE)."""
    await conn.execute(LOCK_SWIPE, pair, swiper, like)
    return await conn.fetchrow(PAIR_STATE, swiper, target, like, LIKE_WINDOW)


async def insert_swipe(
    conn: asyncpg.Connection, swipe_id: uuid.UUID, swiper: uuid.UUID, target: uuid.UUID,
    action: str,
) -> bool:
    """True when this call recorded the swipe; False when one already exists."""
    return await conn.fetchval(INSERT, swipe_id, swiper, target, action) is not None


def like_retry_after(state: asyncpg.Record, limit: int) -> float | None:
    """From a like's PAIR_STATE: None when one more like fits the limit; else
    seconds until a slot frees."""
    if state["likes"] < limit:
        return None
    wait = state["oldest_like"] + LIKE_WINDOW - state["now"]
    return max(wait.total_seconds(), 1.0)
