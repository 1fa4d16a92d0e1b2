"""Blocks: one row per (blocker, blocked); a block hides both ways until the
blocker removes it. Writes of a block go through the pair's `MatchActor`
(which ends the match in the same transaction)."""

from __future__ import annotations

import uuid

import asyncpg

from unimatch.storage.pg import Database

INSERT = """
INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2)
ON CONFLICT (blocker_id, blocked_id) DO NOTHING"""

DELETE = "DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2"

USER_EXISTS = "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)"


async def user_exists(db: Database | asyncpg.Connection, user_id: uuid.UUID) -> bool:
    return bool(await db.fetchval(USER_EXISTS, user_id))


async def add_block(conn: asyncpg.Connection, blocker: uuid.UUID, blocked: uuid.UUID) -> None:
    await conn.execute(INSERT, blocker, blocked)


async def remove_block(db: Database, blocker: uuid.UUID, blocked: uuid.UUID) -> bool:
    """True when a block was there to remove."""
    return await db.execute(DELETE, blocker, blocked) == "DELETE 1"
