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

# Everything a swipe decides on, in one round trip (under the pair's lock, so
# neither direction can change underneath): the swiper's earlier swipe on the
# target if any, whether the target may be swiped, whether the target already
# liked the swiper. $1 swiper, $2 target.
PAIR_STATE = f"""
SELECT (SELECT s.id FROM swipes s WHERE s.swiper_id = $1 AND s.swiped_id = $2) AS existing_id,
       ({TARGET_SWIPEABLE.strip()}) AS swipeable,
       EXISTS (SELECT 1 FROM swipes s
               WHERE s.swiper_id = $2 AND s.swiped_id = $1 AND s.action = 'like') AS liked_back"""

# The swipe's id is chosen by the caller, so a retried call can recognise a
# row its own first attempt committed.
INSERT = """
INSERT INTO swipes (id, swiper_id, swiped_id, action)
VALUES ($1, $2, $3, $4)
ON CONFLICT (swiper_id, swiped_id) DO NOTHING
RETURNING id"""

# Serialises one user's likes across every pair actor (they run on several
# hosts at once), so the count below cannot be raced past the limit.
LOCK_LIKES = "SELECT pg_advisory_xact_lock(hashtextextended('likes:' || $1::uuid::text, 0))"

# Likes in the rolling window (swipes_likes_today_idx), and when the oldest
# of them leaves it.
LIKES_IN_WINDOW = """
SELECT count(*) AS n, min(created_at) AS oldest FROM swipes
WHERE swiper_id = $1 AND action = 'like' AND created_at > now() - $2::interval"""

NOW = "SELECT now()"


async def pair_state(
    conn: asyncpg.Connection, swiper: uuid.UUID, target: uuid.UUID
) -> asyncpg.Record:
    """(existing_id, swipeable, liked_back) for a swipe of `target` by `swiper`."""
    return await conn.fetchrow(PAIR_STATE, swiper, target)


async def insert_swipe(
    conn: asyncpg.Connection, swipe_id: uuid.UUID, swiper: uuid.UUID, target: uuid.UUID,
    action: str,
) -> bool:
    """True when this call recorded the swipe; False when one already exists."""
    return await conn.fetchval(INSERT, swipe_id, swiper, target, action) is not None


async def like_retry_after(
    conn: asyncpg.Connection, swiper: uuid.UUID, limit: int
) -> float | None:
    """Lock the swiper's likes for this transaction and count the window.
    None when one more like fits; else seconds until a slot frees."""
    await conn.execute(LOCK_LIKES, swiper)
    row = await conn.fetchrow(LIKES_IN_WINDOW, swiper, LIKE_WINDOW)
    if row["n"] < limit:
        return None
    now = await conn.fetchval(NOW)
    return max((row["oldest"] + LIKE_WINDOW - now).total_seconds(), 1.0)
