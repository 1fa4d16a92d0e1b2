"""Matches: one row per pair that liked each other (id = `pairs.pair_id`).

Created and ended only by the pair's `MatchActor`; read here for the match
list, which is one query whatever the number of matches.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from unimatch.storage.cards import CARD_COLUMNS, Catalogue, catalogue_for
from unimatch.storage.pg import Database
from unimatch.storage.users import ACTIVE_SUSPENSION

BY_ID = """
SELECT id, user_a, user_b, created_at, ended_at, ended_by, end_reason
FROM matches WHERE id = $1"""

# The id is the pair's, so a second attempt (a retried call) finds the row.
CREATE = """
INSERT INTO matches (id, user_a, user_b) VALUES ($1, $2, $3)
ON CONFLICT (id) DO NOTHING
RETURNING id, user_a, user_b, created_at, ended_at, ended_by, end_reason"""

END = """
UPDATE matches SET ended_at = now(), ended_by = $2, end_reason = $3
WHERE id = $1 AND ended_at IS NULL
RETURNING id, user_a, user_b, created_at, ended_at, ended_by, end_reason"""

# $1 the user. The other user's card, the last message and the unread count
# (messages_unread_idx) come with each match, in this one statement.
LIST = f"""
SELECT m.id AS match_id, m.created_at, {CARD_COLUMNS.format(u="o")},
       lm.id AS last_id, lm.seq AS last_seq, lm.sender_id AS last_sender_id,
       lm.body AS last_body, lm.created_at AS last_created_at,
       (SELECT count(*) FROM messages x
        WHERE x.match_id = m.id AND x.sender_id = o.id AND x.read_at IS NULL) AS unread_count
FROM matches m
JOIN users o ON o.id = CASE WHEN m.user_a = $1 THEN m.user_b ELSE m.user_a END
LEFT JOIN LATERAL (
    SELECT id, seq, sender_id, body, created_at FROM messages
    WHERE match_id = m.id ORDER BY seq DESC LIMIT 1
) lm ON true
WHERE (m.user_a = $1 OR m.user_b = $1) AND m.ended_at IS NULL
  AND NOT {ACTIVE_SUSPENSION.format(user="o.id")}
ORDER BY coalesce(lm.created_at, m.created_at) DESC, m.id"""

# A user's card by id (for the `match` frame).
CARD = f"SELECT {CARD_COLUMNS.format(u='u')} FROM users u WHERE u.id = $1"


async def match_by_id(
    db: Database | asyncpg.Connection, match_id: uuid.UUID
) -> asyncpg.Record | None:
    return await db.fetchrow(BY_ID, match_id)


async def create_match(
    conn: asyncpg.Connection, match_id: uuid.UUID, user_a: uuid.UUID, user_b: uuid.UUID
) -> asyncpg.Record | None:
    """The new row, or None when the pair's match already exists."""
    return await conn.fetchrow(CREATE, match_id, user_a, user_b)


async def end_match(
    conn: Database | asyncpg.Connection, match_id: uuid.UUID, by_user: uuid.UUID | None,
    reason: str,
) -> asyncpg.Record | None:
    """The ended row, or None when there was no active match to end."""
    return await conn.fetchrow(END, match_id, by_user, reason)


async def user_card(db: Database, user_id: uuid.UUID) -> dict[str, Any]:
    row = await db.fetchrow(CARD, user_id)
    if row is None:
        return {"user_id": str(user_id)}
    return (await catalogue_for(db, [row])).card(row)


def match_list_json(row: asyncpg.Record, catalogue: Catalogue) -> dict[str, Any]:
    last = None
    if row["last_id"] is not None:
        last = {
            "message_id": str(row["last_id"]),
            "seq": row["last_seq"],
            "sender_id": str(row["last_sender_id"]),
            "body": row["last_body"],
            "created_at": row["last_created_at"].isoformat(),
        }
    return {
        "match_id": str(row["match_id"]),
        "user": catalogue.card(row),
        "last_message": last,
        "unread_count": row["unread_count"],
        "created_at": row["created_at"].isoformat(),
    }


async def list_matches(db: Database, user_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await db.fetch(LIST, user_id)
    catalogue = await catalogue_for(db, rows)
    return [match_list_json(row, catalogue) for row in rows]
