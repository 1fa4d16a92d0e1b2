"""Notifications: one row per event a user should hear about.

`add_notification` runs on the caller's connection so the row commits with
the event it describes (a match, a message to an offline user), and so do
the webhook deliveries it fans out to: one `webhook_deliveries` row and one
`deliver_webhook` job per active webhook of that user subscribed to the
notification's kind. After the commit the caller runs
`unimatch.actors.notify.publish_notification`, which clears `notifications:{user_id}`
and pushes a `notification` frame through the user's actor.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from unimatch.storage.jobs import enqueue

# The kinds a client (and a webhook) can subscribe to. Other kinds may be
# stored, but only these are offered as webhook events.
KIND_MATCH = "match"
KIND_MESSAGE = "message"
KIND_WARNING = "warning"
KIND_REPORT_RESOLVED = "report_resolved"
KIND_SUSPENSION = "suspension"
KINDS: tuple[str, ...] = (
    KIND_MATCH,
    KIND_MESSAGE,
    KIND_WARNING,
    KIND_REPORT_RESOLVED,
    KIND_SUSPENSION,
)

DELIVER_WEBHOOK = "deliver_webhook"

# One round trip: the notification, and a delivery per subscribed webhook
# whose body (the exact JSON the receiver gets) is fixed here, at the event.
INSERT = """
WITH n AS (
    INSERT INTO notifications (user_id, kind, payload)
    VALUES ($1, $2, $3)
    RETURNING id, user_id, kind, payload, is_read, created_at
), targets AS (
    SELECT gen_random_uuid() AS delivery_id, w.id AS webhook_id
    FROM webhooks w
    JOIN webhook_events e ON e.webhook_id = w.id AND e.event = $2
    WHERE w.user_id = $1 AND w.is_active
), d AS (
    INSERT INTO webhook_deliveries (id, webhook_id, event, payload)
    SELECT t.delivery_id, t.webhook_id, n.kind, jsonb_build_object(
        'delivery_id', t.delivery_id,
        'event', n.kind,
        'user_id', n.user_id,
        'notification', jsonb_build_object(
            'id', n.id, 'kind', n.kind, 'payload', n.payload,
            'is_read', n.is_read, 'created_at', n.created_at))
    FROM targets t CROSS JOIN n
    RETURNING id
)
SELECT n.id, n.kind, n.payload, n.is_read, n.created_at,
       ARRAY(SELECT id FROM d) AS deliveries
FROM n"""

# Newest first, keyset-paginated on (created_at, id); `$2` is the id of the
# last notification of the previous page.
LIST = """
SELECT n.id, n.kind, n.payload, n.is_read, n.created_at
FROM notifications n
WHERE n.user_id = $1
  AND ($3::boolean IS FALSE OR NOT n.is_read)
  AND ($2::uuid IS NULL OR (n.created_at, n.id) < (
        SELECT c.created_at, c.id FROM notifications c WHERE c.id = $2 AND c.user_id = $1))
ORDER BY n.created_at DESC, n.id DESC
LIMIT $4"""

CURSOR_EXISTS = "SELECT EXISTS (SELECT 1 FROM notifications WHERE id = $1 AND user_id = $2)"

# Marks the user's own rows among `$2`; returns every id of `$2` that is the
# user's, read already or not, so the caller can tell which ids were foreign.
MARK_READ = """
WITH own AS (
    SELECT id FROM notifications WHERE user_id = $1 AND id = ANY($2::uuid[])
), marked AS (
    UPDATE notifications n SET is_read = true
    FROM own WHERE n.id = own.id AND NOT n.is_read
    RETURNING n.id
)
SELECT id FROM own"""

MARK_ALL_READ = "UPDATE notifications SET is_read = true WHERE user_id = $1 AND NOT is_read"

UNREAD_COUNT = "SELECT count(*) FROM notifications WHERE user_id = $1 AND NOT is_read"


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
    """Insert the notification and its webhook deliveries on `conn` (inside
    the caller's transaction). Returns the notification as the API shows it."""
    row = await conn.fetchrow(INSERT, user_id, kind, payload)
    for delivery_id in row["deliveries"]:
        await enqueue(
            conn, DELIVER_WEBHOOK, {"delivery_id": str(delivery_id)},
            dedupe_key=f"webhook:{delivery_id}",
        )
    return notification_json(row)


async def list_notifications(
    conn: asyncpg.Connection | Any,
    user_id: uuid.UUID,
    *,
    unread_only: bool,
    before: uuid.UUID | None,
    limit: int,
) -> list[dict[str, Any]] | None:
    """A page, newest first; None when `before` is not one of the user's."""
    rows = await conn.fetch(LIST, user_id, before, unread_only, limit)
    if not rows and before is not None and not await conn.fetchval(CURSOR_EXISTS, before, user_id):
        return None
    return [notification_json(row) for row in rows]


async def mark_read(
    conn: asyncpg.Connection, user_id: uuid.UUID, ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    """Mark the user's notifications among `ids` read; returns the ids that
    are not the user's (unknown or someone else's), in which case the caller
    rolls back."""
    own = {row["id"] for row in await conn.fetch(MARK_READ, user_id, ids)}
    return set(ids) - own


async def mark_all_read(conn: asyncpg.Connection | Any, user_id: uuid.UUID) -> int:
    status = await conn.execute(MARK_ALL_READ, user_id)
    return int(status.split()[-1])
