"""Notifications: one row per event a user should hear about.

`add_notification` runs on the caller's connection so the row commits with
the event it describes (a match, a message to an offline user). After the
commit the caller clears `notifications:{user_id}` and pushes a
`notification` frame through the user's actor.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

INSERT = """
INSERT INTO notifications (user_id, kind, payload)
VALUES ($1, $2, $3)
RETURNING id, kind, payload, is_read, created_at"""


def notification_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "payload": row["payload"],
        "is_read": row["is_read"],
        "created_at": row["created_at"].isoformat(),
    }


async def add_notification(
    conn: asyncpg.Connection, user_id: uuid.UUID, kind: str, payload: dict[str, Any]
) -> dict[str, Any]:
    row = await conn.fetchrow(INSERT, user_id, kind, payload)
    return notification_json(row)
