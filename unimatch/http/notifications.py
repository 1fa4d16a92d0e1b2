"""`GET /notifications`, `POST /notifications/read`.

First pages are cached for 5 minutes in one JSON object under
`notifications:{user_id}`, one entry per variant (`unread:<limit>`,
`all:<limit>`), so clearing that single key (what every change does) drops
every variant at once. Later pages (`before=`) always come from PostgreSQL.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from unimatch.actors import notify as notices
from unimatch.actors.notify import clear_notifications_cache
from unimatch.domain.errors import ValidationFailed
from unimatch.http.keys import CACHE, DB, DIRECTORY
from unimatch.http.permissions import IsAuthenticated, principal_of, requires
from unimatch.http.validation import (
    json_response,
    parse_body,
    parse_query,
)
from unimatch.schemas import notifications as schema
from unimatch.storage import notifications as store
from unimatch.storage.cache import NOTIFICATIONS_TTL, notifications_key

__all__ = ["notify", "publish_notification", "routes"]


async def notify(
    app: web.Application, user_id: uuid.UUID, kind: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """`actors.notify.notify` with the app's collaborators."""
    return await notices.notify(app[DB], app[CACHE], app[DIRECTORY], user_id, kind, payload)


async def publish_notification(
    app: web.Application, user_id: uuid.UUID | str, notification: dict[str, Any]
) -> None:
    """`actors.notify.publish_notification` with the app's collaborators."""
    await notices.publish_notification(app[CACHE], app[DIRECTORY], user_id, notification)


routes = web.RouteTableDef()


@routes.get("/notifications")
@requires(IsAuthenticated)
async def list_notifications(request: web.Request) -> web.Response:
    """Newest first. `unread=true` only unread ones; `before=<id>` the page
    after that notification; `limit` 1-100 (default 50). `next_before` is the
    cursor of the next page, null on the last one."""
    user_id = principal_of(request).user_id
    query = parse_query(request, schema.NotificationsQuery)
    unread_only, before, limit = query.unread, query.before, query.limit

    cache = request.app[CACHE]
    variant = f"{'unread' if unread_only else 'all'}:{limit}"
    cached: dict[str, Any] | None = None
    if before is None:
        cached = await cache.get_json(notifications_key(user_id), cache="notifications")
        if isinstance(cached, dict) and variant in cached:
            return json_response(cached[variant])

    page = await store.list_notifications(
        request.app[DB], user_id, unread_only=unread_only, before=before, limit=limit
    )
    if page is None:
        raise ValidationFailed({"before": ["no such notification"]})
    body = {
        "notifications": page,
        "next_before": page[-1]["id"] if len(page) == limit else None,
    }
    if before is None:
        variants = cached if isinstance(cached, dict) else {}
        variants[variant] = body
        await cache.set_json(notifications_key(user_id), variants, NOTIFICATIONS_TTL)
    return json_response(body)


@routes.post("/notifications/read")
@requires(IsAuthenticated)
async def mark_read(request: web.Request) -> web.Response:
    """`{ids: [...]}` marks those (all must be the caller's, else 400 and
    nothing changes) or `{all: true}` marks every one; 204."""
    user_id = principal_of(request).user_id
    body = await parse_body(request, schema.MarkNotificationsRead)
    db = request.app[DB]
    if body.ids is None:
        await store.mark_all_read(db, user_id)
    else:
        async with db.transaction() as conn:
            foreign = await store.mark_read(conn, user_id, body.ids)
            if foreign:
                raise ValidationFailed(
                    {"ids": ["no such notification: " + ", ".join(sorted(map(str, foreign)))]}
                )
    await clear_notifications_cache(request.app[CACHE], user_id)
    return web.Response(status=204)
