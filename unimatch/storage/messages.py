"""Chat messages: the SQL of one match's ordered log, its receipts and reads.

Writes come only from the match's actor (the single writer that assigns
`seq`); reads (history, sync) go straight to PostgreSQL from the gateway, history
pages through `Database.read()` (the replica when one is set).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from unimatch.storage.pg import Reads

# The chat state a MatchActor loads on activation: members, whether the match
# is still open, and the last seq written.
LOAD_CHAT = """
SELECT m.user_a, m.user_b, m.ended_at IS NULL AS active,
       coalesce((SELECT max(seq) FROM messages WHERE match_id = m.id), 0) AS last_seq
FROM matches m WHERE m.id = $1"""

LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM messages WHERE match_id = $1"

# One group commit: the messages of many matches in one statement. A row whose
# match has ended is not inserted (the join drops it), nor is a resent
# client_msg_id (ON CONFLICT): the caller tells the two apart with
# FIND_EXISTING, and never advances seq for either.
INSERT_BATCH = """
INSERT INTO messages (match_id, seq, sender_id, body, client_msg_id)
SELECT x.match_id, x.seq, x.sender_id, x.body, x.client_msg_id
FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::text[])
     AS x(match_id, seq, sender_id, body, client_msg_id)
JOIN matches m ON m.id = x.match_id AND m.ended_at IS NULL
ON CONFLICT (match_id, sender_id, client_msg_id) DO NOTHING
RETURNING id, match_id, seq, sender_id, body, client_msg_id, created_at"""

FIND_EXISTING = """
SELECT msg.id, msg.match_id, msg.seq, msg.sender_id, msg.body, msg.client_msg_id,
       msg.created_at
FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS x(match_id, sender_id, client_msg_id)
JOIN messages msg ON msg.match_id = x.match_id AND msg.sender_id = x.sender_id
                 AND msg.client_msg_id = x.client_msg_id"""

# Receipts: everything from the other user up to $3. `read` implies delivered.
MARK_DELIVERED = """
UPDATE messages SET delivered_at = now()
WHERE match_id = $1 AND sender_id <> $2 AND seq <= $3 AND delivered_at IS NULL"""

MARK_READ = """
UPDATE messages SET read_at = now(), delivered_at = coalesce(delivered_at, now())
WHERE match_id = $1 AND sender_id <> $2 AND seq <= $3 AND read_at IS NULL"""

# Membership as the gateway checks it (a socket scoped to one match, history).
MEMBERSHIP = """
SELECT id, user_a, user_b, ended_at IS NULL AS active
FROM matches WHERE id = $1 AND $2 IN (user_a, user_b)"""

_COLUMNS = """msg.id, msg.match_id, msg.seq, msg.sender_id, msg.body, msg.client_msg_id,
       msg.created_at, msg.delivered_at, msg.read_at"""

HISTORY_AFTER = f"""
SELECT {_COLUMNS} FROM messages msg
WHERE msg.match_id = $1 AND msg.seq > $2 ORDER BY msg.seq LIMIT $3"""

# Newest page below a seq (or the newest overall with $2 = max bigint),
# returned newest first; the caller reverses it.
HISTORY_BEFORE = f"""
SELECT {_COLUMNS} FROM messages msg
WHERE msg.match_id = $1 AND msg.seq < $2 ORDER BY msg.seq DESC LIMIT $3"""

HISTORY_BETWEEN = f"""
SELECT {_COLUMNS} FROM messages msg
WHERE msg.match_id = $1 AND msg.seq > $2 AND msg.seq < $3 ORDER BY msg.seq LIMIT $4"""

# One page of a sync: the messages after each cursor of the matches the user
# is in, ordered by (match, seq). The next page restarts from the last row:
# matches sorting before its match are complete.
SYNC_PAGE = f"""
SELECT {_COLUMNS}
FROM unnest($2::uuid[], $3::bigint[]) AS c(match_id, after_seq)
JOIN matches m ON m.id = c.match_id AND $1 IN (m.user_a, m.user_b)
JOIN messages msg ON msg.match_id = c.match_id AND msg.seq > c.after_seq
ORDER BY msg.match_id, msg.seq
LIMIT $4"""

MAX_SEQ = 2**63 - 1


def message_frame(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """The contract's `message` frame for a stored row."""
    return {
        "type": "message",
        "match_id": str(row["match_id"]),
        "seq": row["seq"],
        "message_id": str(row["id"]),
        "sender_id": str(row["sender_id"]),
        "body": row["body"],
        "client_msg_id": row["client_msg_id"],
        "created_at": row["created_at"].isoformat(),
    }


def message_json(row: asyncpg.Record) -> dict[str, Any]:
    """A message as `GET /matches/{id}/messages` lists it."""
    return {
        "message_id": str(row["id"]),
        "seq": row["seq"],
        "sender_id": str(row["sender_id"]),
        "body": row["body"],
        "client_msg_id": row["client_msg_id"],
        "created_at": row["created_at"].isoformat(),
        "delivered_at": row["delivered_at"].isoformat() if row["delivered_at"] else None,
        "read_at": row["read_at"].isoformat() if row["read_at"] else None,
    }


async def history(
    reads: Reads,
    match_id: uuid.UUID,
    *,
    after_seq: int | None,
    before_seq: int | None,
    limit: int,
) -> list[asyncpg.Record]:
    """A page of one match's messages in seq order. With `after_seq` the
    oldest page after it; otherwise the newest page before `before_seq` (or
    the newest of all)."""
    if after_seq is not None and before_seq is not None:
        return await reads.fetch(HISTORY_BETWEEN, match_id, after_seq, before_seq, limit)
    if after_seq is not None:
        return await reads.fetch(HISTORY_AFTER, match_id, after_seq, limit)
    rows = await reads.fetch(HISTORY_BEFORE, match_id, before_seq or MAX_SEQ, limit)
    return list(reversed(rows))

# The matches of $1, open or ended: what a socket of that user may address
# (the open ones), and what it is told has ended.
MATCHES_OF = """
SELECT id, ended_at IS NULL AS open FROM matches WHERE user_a = $1 OR user_b = $1"""
