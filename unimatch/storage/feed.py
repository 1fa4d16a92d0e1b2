"""The discover feed: one scored query, cached per viewer in Redis.

Scoring (API.md): same campus +100, same year +50, +25 per shared interest,
active in the last 24 h +20, complete profile +10; ordered by score, then by
recent activity. Candidates are verified, visible, not suspended, of a gender
the viewer seeks and seeking the viewer's gender; never the viewer, anyone
the viewer already swiped, or anyone blocked either way.

Candidates scored: the viewer's whole campus plus the `OTHER_CAMPUS_POOL`
most recently active eligible users elsewhere (see `FEED`). Everything the
filters and the score read sits on the user row and in two covering indexes
(migration 020): `interest_mask`, `seeking_mask`, `has_photo` kept by
triggers from the normalised tables, and `feed_complete` generated from
them, so a shared-interest count is one AND and a popcount, not a join.

Cache: `discover_feed:{viewer}` holds the top `FEED_SIZE` cards for 10 min.
A cached page is re-checked at read time with one query (`STILL_VISIBLE`), so
it never shows someone the viewer has since swiped, blocked or been blocked
by, or who was suspended or hidden meanwhile; events of the viewer's own
(a swipe, a match, a profile change) also clear the key.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from unimatch.storage.cache import FEED_TTL, Cache, feed_key
from unimatch.storage.pg import Database
from unimatch.storage.users import ACTIVE_SUSPENSION

# The most a page can ask for; the cache keeps this many.
FEED_SIZE = 50

# The public card of a user, as the feed, match frames and the match list
# show it. `{u}` is the users alias.
CARD_COLUMNS = """
    {u}.id AS user_id, {u}.display_name, {u}.year_of_study, {u}.bio,
    (SELECT jsonb_build_object('id', ca.id, 'name', ca.name, 'city', ca.city)
     FROM campuses ca WHERE ca.id = {u}.campus_id) AS campus,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('id', i.id, 'name', i.name)
                               ORDER BY i.name), '[]'::jsonb)
     FROM user_interests ui JOIN interests i ON i.id = ui.interest_id
     WHERE ui.user_id = {u}.id) AS interests,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('photo_id', p.id,
                                                  'url', '/media/' || p.filename)
                               ORDER BY p.created_at, p.id), '[]'::jsonb)
     FROM photos p WHERE p.user_id = {u}.id) AS photos"""

# Who may appear in a viewer's feed at all. `{c}` is the candidate, `me` the
# viewer (with `gender_bit`).
_ELIGIBLE = """
    {c}.is_verified AND {c}.is_visible AND {c}.id <> me.id
    AND (me.seeking_mask & gender_bit({c}.gender)) <> 0
    AND ({c}.seeking_mask & me.gender_bit) <> 0
    AND NOT EXISTS (SELECT 1 FROM swipes s WHERE s.swiper_id = me.id AND s.swiped_id = {c}.id)
    AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = me.id AND b.blocked_id = {c}.id)
    AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocked_id = me.id AND b.blocker_id = {c}.id)
    AND NOT EXISTS (SELECT 1 FROM suspensions su
                    WHERE su.user_id = {c}.id AND su.lifted_at IS NULL
                      AND (su.until IS NULL OR su.until > now()))"""

# How many candidates from other campuses are scored beside the viewer's
# whole campus: the most recently active ones.
OTHER_CAMPUS_POOL = 400

# $1 viewer, $2 how many, $3 the other-campus pool size.
#
# The candidates scored are the viewer's whole campus (by
# users_campus_active_idx) plus the $3 most recently active eligible users
# elsewhere (by users_active_idx, walked newest first until $3 pass the
# filters). Within that pool the ranking is exact. Outside it are only users
# of other campuses who were less recently active than the $3-th one: they
# lack the +100 of the campus and, mostly, the +20 of activity, so they rank
# below the pool in all but rare cases, and scoring all 100,000 users per
# request (a full scan, ~200 ms here) would cost forty times more.
FEED = f"""
WITH me AS (
    SELECT id, campus_id, year_of_study, interest_mask, seeking_mask,
           gender_bit(gender) AS gender_bit
    FROM users WHERE id = $1
), pool AS (
    SELECT c.id, c.campus_id, c.year_of_study, c.interest_mask, c.last_active, c.feed_complete
    FROM me JOIN users c ON c.campus_id = me.campus_id
    WHERE {_ELIGIBLE.format(c="c")}
    UNION ALL
    (SELECT c.id, c.campus_id, c.year_of_study, c.interest_mask, c.last_active, c.feed_complete
     FROM me JOIN users c ON c.campus_id IS DISTINCT FROM me.campus_id
     WHERE {_ELIGIBLE.format(c="c")}
     ORDER BY c.last_active DESC
     LIMIT $3)
), ranked AS (
    SELECT c.id, c.last_active,
        (CASE WHEN c.campus_id = me.campus_id THEN 100 ELSE 0 END
         + CASE WHEN c.year_of_study = me.year_of_study THEN 50 ELSE 0 END
         + 25 * bit_count((c.interest_mask & me.interest_mask)::bit(64))
         + CASE WHEN c.last_active > now() - interval '24 hours' THEN 20 ELSE 0 END
         + CASE WHEN c.feed_complete THEN 10 ELSE 0 END)::int AS score
    FROM me, pool c
    ORDER BY score DESC, c.last_active DESC, c.id
    LIMIT $2
)
SELECT ranked.score, {CARD_COLUMNS.format(u="u")}
FROM ranked JOIN users u ON u.id = ranked.id
ORDER BY ranked.score DESC, ranked.last_active DESC, ranked.id"""

# $1 viewer, $2 candidate ids: those a cached page may still show.
STILL_VISIBLE = f"""
SELECT c.id FROM users c
WHERE c.id = ANY($2::uuid[]) AND c.is_verified AND c.is_visible
  AND NOT EXISTS (SELECT 1 FROM swipes s WHERE s.swiper_id = $1 AND s.swiped_id = c.id)
  AND NOT EXISTS (SELECT 1 FROM blocks b
                  WHERE (b.blocker_id = $1 AND b.blocked_id = c.id)
                     OR (b.blocker_id = c.id AND b.blocked_id = $1))
  AND NOT {ACTIVE_SUSPENSION.format(user="c.id")}"""

# The users whose feeds the scheduler keeps warm: active in the last hour.
RECENTLY_ACTIVE = """
SELECT id FROM users
WHERE is_verified AND is_visible AND last_active > now() - make_interval(secs => $1)
ORDER BY last_active DESC
LIMIT $2"""


def card_json(row: asyncpg.Record) -> dict[str, Any]:
    """A card row (CARD_COLUMNS) as the API shows it."""
    return {
        "user_id": str(row["user_id"]),
        "display_name": row["display_name"],
        "campus": row["campus"],
        "year_of_study": row["year_of_study"],
        "bio": row["bio"],
        "interests": row["interests"],
        "photos": row["photos"],
    }


async def compute_feed(
    db: Database | asyncpg.Connection, user_id: uuid.UUID, limit: int = FEED_SIZE
) -> list[dict[str, Any]]:
    """The viewer's best `limit` candidates, scored, straight from PostgreSQL."""
    rows = await db.fetch(FEED, user_id, limit, OTHER_CAMPUS_POOL)
    return [{**card_json(row), "score": row["score"]} for row in rows]


async def still_visible(
    db: Database, user_id: uuid.UUID, candidate_ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    rows = await db.fetch(STILL_VISIBLE, user_id, candidate_ids)
    return {row["id"] for row in rows}


async def refresh_feed(db: Database, cache: Cache, user_id: uuid.UUID) -> list[dict[str, Any]]:
    """Recompute the viewer's feed and store it in the cache."""
    feed = await compute_feed(db, user_id)
    await cache.set_json(feed_key(user_id), feed, FEED_TTL)
    return feed


async def load_feed(
    db: Database, cache: Cache, user_id: uuid.UUID, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """(page, served from cache). A cached page is filtered at read time; if
    filtering leaves it shorter than asked while more may exist, it is
    recomputed instead."""
    cached = await cache.get_json(feed_key(user_id), cache="discover_feed")
    if cached is not None:
        ids = [uuid.UUID(card["user_id"]) for card in cached]
        visible = await still_visible(db, user_id, ids) if ids else set()
        page = [card for card in cached if uuid.UUID(card["user_id"]) in visible]
        if len(page) >= limit or len(cached) < FEED_SIZE:
            return page[:limit], True
    feed = await refresh_feed(db, cache, user_id)
    return feed[:limit], False


async def recently_active(db: Database, within_seconds: float, limit: int) -> list[uuid.UUID]:
    rows = await db.fetch(RECENTLY_ACTIVE, float(within_seconds), limit)
    return [row["id"] for row in rows]
