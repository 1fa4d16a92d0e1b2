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

Cache: `discover_feed:{viewer}` holds the ranking, the top `FEED_SIZE`
(id, score) pairs, for 10 min. A page served from it is one query (`PAGE`)
that re-checks each candidate and builds the cards of the page only, so it
never shows someone the viewer has since swiped, blocked or been blocked by,
or who was suspended or hidden meanwhile, and cards are never stale; events
of the viewer's own (a swipe, a match, a profile change) also clear the key.

Both queries are reads of `db.read()`: a replica serves them when one is
configured (storage/pg.py).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from unimatch.storage.cache import FEED_TTL, Cache, feed_key
from unimatch.storage.cards import CARD_COLUMNS, cards_of
from unimatch.storage.pg import Database
from unimatch.storage.users import ACTIVE_SUSPENSION

# The most a page can ask for; the cache keeps this many.
FEED_SIZE = 50

# A cached feed: the ranked candidates as (user id, score), best first.
Ranking = list[tuple[str, int]]

# Who may appear in a viewer's feed at all. `{c}` is the candidate, `me` the
# viewer (with `gender_bit`), `$1` the viewer's id: the swipe and block
# probes name the parameter, not `me.id`, so the planner reads only the
# viewer's own rows by index (with `me.id` it hashed the whole swipes table).
_ELIGIBLE = """
    {c}.is_verified AND {c}.is_visible AND {c}.id <> me.id
    AND (me.seeking_mask & gender_bit({c}.gender)) <> 0
    AND ({c}.seeking_mask & me.gender_bit) <> 0
    AND NOT EXISTS (SELECT 1 FROM swipes s WHERE s.swiper_id = $1 AND s.swiped_id = {c}.id)
    AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = $1 AND b.blocked_id = {c}.id)
    AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocked_id = $1 AND b.blocker_id = {c}.id)
    AND NOT EXISTS (SELECT 1 FROM suspensions su
                    WHERE su.user_id = {c}.id AND su.lifted_at IS NULL
                      AND (su.until IS NULL OR su.until > now()))"""

# How many candidates from other campuses are scored beside the viewer's
# whole campus: the most recently active ones.
OTHER_CAMPUS_POOL = 400

# $1 viewer, $2 how many, $3 the other-campus pool size, $4 how many of
# them get their card built (the rest come back as id and score only).
#
# The candidates scored are the viewer's whole campus (by
# users_campus_active_idx) plus the $3 most recently active eligible users
# elsewhere (by users_active_idx, walked newest first until $3 pass the
# filters). Within that pool the ranking is exact. Outside it are only users
# of other campuses who were less recently active than the $3-th one: they
# lack the +100 of the campus and, mostly, the +20 of activity, so they rank
# below the pool in all but rare cases, and scoring all 100,000 users per
# request (a full scan, ~200 ms here) would cost forty times more.
#
# Cards are the costly part of a row (a photo subquery each), so only the
# page asked for gets them; the cache keeps the whole ranking as ids.
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
), numbered AS MATERIALIZED (
    SELECT ranked.*, row_number() OVER (ORDER BY score DESC, last_active DESC, id) AS pos
    FROM ranked
), cards AS MATERIALIZED (
    SELECT {CARD_COLUMNS.format(u="u")}
    FROM numbered n JOIN users u ON u.id = n.id
    WHERE n.pos <= $4
)
SELECT n.id, n.score, cards.*
FROM numbered n LEFT JOIN cards ON cards.user_id = n.id
ORDER BY n.pos"""

# A page of a cached ranking: $1 viewer, $2 candidate ids and $3 their scores
# in rank order, $4 the page size. Only candidates the viewer may still see:
# not swiped since, not blocked either way, not suspended or hidden
# meanwhile; cards are built at read time, so they are always current.
PAGE = f"""
SELECT f.score, {CARD_COLUMNS.format(u="c")}
FROM unnest($2::uuid[], $3::int[]) WITH ORDINALITY AS f(id, score, pos)
JOIN users c ON c.id = f.id
WHERE c.is_verified AND c.is_visible
  AND NOT EXISTS (SELECT 1 FROM swipes s WHERE s.swiper_id = $1 AND s.swiped_id = c.id)
  AND NOT EXISTS (SELECT 1 FROM blocks b
                  WHERE (b.blocker_id = $1 AND b.blocked_id = c.id)
                     OR (b.blocker_id = c.id AND b.blocked_id = $1))
  AND NOT {ACTIVE_SUSPENSION.format(user="c.id")}
ORDER BY f.pos
LIMIT $4"""

# The users whose feeds the scheduler keeps warm: active in the last hour.
RECENTLY_ACTIVE = """
SELECT id FROM users
WHERE is_verified AND is_visible AND last_active > now() - make_interval(secs => $1)
ORDER BY last_active DESC
LIMIT $2"""


async def _scored_cards(db: Database, rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    cards = await cards_of(db, rows)
    return [{**card, "score": row["score"]} for card, row in zip(cards, rows, strict=True)]


async def rank_feed(
    db: Database, user_id: uuid.UUID, cards: int
) -> tuple[Ranking, list[dict[str, Any]]]:
    """The viewer's best `FEED_SIZE` candidates as (id, score), and the cards
    of the first `cards` of them, in one query."""
    rows = await db.read().fetch(FEED, user_id, FEED_SIZE, OTHER_CAMPUS_POOL, cards)
    ranking = [(str(row["id"]), row["score"]) for row in rows]
    return ranking, await _scored_cards(db, rows[:cards])


async def compute_feed(
    db: Database, user_id: uuid.UUID, limit: int = FEED_SIZE
) -> list[dict[str, Any]]:
    """The viewer's best `limit` candidates as scored cards, straight from
    PostgreSQL."""
    rows = await db.read().fetch(FEED, user_id, limit, OTHER_CAMPUS_POOL, limit)
    return await _scored_cards(db, rows)


async def refresh_feed(
    db: Database, cache: Cache, user_id: uuid.UUID, cards: int = 0
) -> list[dict[str, Any]]:
    """Recompute the viewer's ranking and store it in the cache; the cards
    of its first `cards` candidates."""
    ranking, page = await rank_feed(db, user_id, cards)
    await cache.set_json(feed_key(user_id), ranking, FEED_TTL)
    return page


def _cached_ranking(value: Any) -> Ranking | None:
    """A cached ranking, or None for anything else under the key (a value
    written by an older release reads as a miss)."""
    if not isinstance(value, list):
        return None
    try:
        return [(str(uuid.UUID(str(entry[0]))), int(entry[1])) for entry in value]
    except (TypeError, ValueError, IndexError, KeyError):
        return None


async def cached_page(
    db: Database, cache: Cache, user_id: uuid.UUID, limit: int
) -> list[dict[str, Any]] | None:
    """A page from the viewer's cached ranking, filtered at read time; None
    when there is no ranking (or one of a shape an older release wrote), or
    when filtering left the page shorter than asked while more may exist."""
    ranking = _cached_ranking(await cache.get_json(feed_key(user_id), cache="discover_feed"))
    if ranking is None:
        return None
    rows = (
        await db.read().fetch(
            PAGE, user_id, [i for i, _ in ranking], [s for _, s in ranking], limit
        )
        if ranking
        else []
    )
    if len(rows) < limit and len(ranking) >= FEED_SIZE:
        return None
    return await _scored_cards(db, list(rows))


async def recently_active(db: Database, within_seconds: float, limit: int) -> list[uuid.UUID]:
    rows = await db.read().fetch(RECENTLY_ACTIVE, float(within_seconds), limit)
    return [row["id"] for row in rows]
