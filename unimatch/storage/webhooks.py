"""Webhooks: a user's HTTPS endpoints, the events they take, their deliveries.

Deliveries are created with the notification they carry
(`storage.notifications.add_notification`) and sent by the `deliver_webhook`
job (`scheduler.webhooks`), which records every attempt here.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

MAX_ACTIVE_PER_USER = 10

LOCK_OWNER = "SELECT id FROM users WHERE id = $1 FOR UPDATE"

COUNT_ACTIVE = "SELECT count(*) FROM webhooks WHERE user_id = $1 AND is_active"

INSERT = """
WITH w AS (
    INSERT INTO webhooks (user_id, url, secret) VALUES ($1, $2, $3)
    RETURNING id, url, is_active, created_at
), e AS (
    INSERT INTO webhook_events (webhook_id, event)
    SELECT w.id, event FROM w, unnest($4::text[]) AS event
)
SELECT w.id, w.url, w.is_active, w.created_at, $4::text[] AS events FROM w"""

_COLUMNS = """
    w.id, w.url, w.is_active, w.created_at,
    ARRAY(SELECT e.event FROM webhook_events e WHERE e.webhook_id = w.id ORDER BY e.event)
        AS events"""

LIST = f"""
SELECT {_COLUMNS}
FROM webhooks w
WHERE w.user_id = $1 AND w.is_active
ORDER BY w.created_at, w.id"""

GET = f"SELECT {_COLUMNS} FROM webhooks w WHERE w.id = $1 AND w.user_id = $2 AND w.is_active"

# Deactivated rather than deleted, so the delivery history stays readable by
# operators; a deactivated webhook gets no new deliveries and pending ones stop.
DEACTIVATE = """
UPDATE webhooks SET is_active = false
WHERE id = $1 AND user_id = $2 AND is_active
RETURNING id"""

DELIVERIES = """
SELECT d.id, d.event, d.status, d.attempts, d.response_code, d.last_error,
       d.created_at, d.delivered_at
FROM webhook_deliveries d
JOIN webhooks w ON w.id = d.webhook_id
WHERE d.webhook_id = $1 AND w.user_id = $2
ORDER BY d.created_at DESC, d.id DESC
LIMIT $3"""

# What the delivery job needs, in one row.
DELIVERY_FOR_SENDING = """
SELECT d.id, d.event, d.payload::text AS body, d.status, d.attempts,
       w.id AS webhook_id, w.url, w.secret, w.is_active
FROM webhook_deliveries d
JOIN webhooks w ON w.id = d.webhook_id
WHERE d.id = $1"""

RECORD_ATTEMPT = """
UPDATE webhook_deliveries SET
    attempts = attempts + 1,
    response_code = $2,
    last_error = $3,
    status = CASE WHEN $4 THEN 'delivered' WHEN $5 THEN 'failed' ELSE status END,
    delivered_at = CASE WHEN $4 THEN now() ELSE delivered_at END
WHERE id = $1 AND status = 'pending'
RETURNING attempts"""

MARK_FAILED = """
UPDATE webhook_deliveries SET status = 'failed', last_error = $2
WHERE id = $1 AND status = 'pending'"""


def webhook_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "webhook_id": str(row["id"]),
        "url": row["url"],
        "events": list(row["events"]),
        "is_active": row["is_active"],
        "created_at": row["created_at"].isoformat(),
    }


def delivery_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "delivery_id": str(row["id"]),
        "event": row["event"],
        "status": row["status"],
        "attempts": row["attempts"],
        "response_code": row["response_code"],
        "last_error": row["last_error"],
        "created_at": row["created_at"].isoformat(),
        "delivered_at": row["delivered_at"].isoformat() if row["delivered_at"] else None,
    }


async def create_webhook(
    conn: asyncpg.Connection, user_id: uuid.UUID, url: str, secret: str, events: list[str]
) -> dict[str, Any]:
    row = await conn.fetchrow(INSERT, user_id, url, secret, events)
    return webhook_json(row)


async def lock_owner(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Serialise one user's webhook changes (inside a transaction)."""
    await conn.execute(LOCK_OWNER, user_id)


async def count_active(conn: Any, user_id: uuid.UUID) -> int:
    return int(await conn.fetchval(COUNT_ACTIVE, user_id))


async def list_webhooks(conn: Any, user_id: uuid.UUID) -> list[dict[str, Any]]:
    return [webhook_json(row) for row in await conn.fetch(LIST, user_id)]


async def get_webhook(conn: Any, webhook_id: uuid.UUID, user_id: uuid.UUID) -> dict | None:
    row = await conn.fetchrow(GET, webhook_id, user_id)
    return None if row is None else webhook_json(row)


async def deactivate_webhook(conn: Any, webhook_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    return await conn.fetchval(DEACTIVATE, webhook_id, user_id) is not None


async def list_deliveries(
    conn: Any, webhook_id: uuid.UUID, user_id: uuid.UUID, limit: int
) -> list[dict[str, Any]]:
    return [delivery_json(row) for row in await conn.fetch(DELIVERIES, webhook_id, user_id, limit)]


async def delivery_for_sending(conn: Any, delivery_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(DELIVERY_FOR_SENDING, delivery_id)


async def record_attempt(
    conn: Any,
    delivery_id: uuid.UUID,
    *,
    response_code: int | None,
    error: str | None,
    delivered: bool,
    final: bool,
) -> int | None:
    """Count one attempt; `final` marks an undelivered one failed for good.
    None when the delivery was no longer pending (another worker finished it)."""
    return await conn.fetchval(
        RECORD_ATTEMPT, delivery_id, response_code, error, delivered, final and not delivered
    )


async def mark_failed(conn: Any, delivery_id: uuid.UUID, reason: str) -> None:
    await conn.execute(MARK_FAILED, delivery_id, reason)
