"""`/webhooks`: a user's endpoints that receive their notifications.

Events are notification kinds (`storage.notifications.KINDS`). The secret is
shown once, at creation; deliveries are signed with it (see
`scheduler.webhooks`).
"""

from __future__ import annotations

import logging
import secrets

from aiohttp import web

from unimatch.domain.errors import Conflict, NotFound, ValidationFailed
from unimatch.http.keys import CONFIG, DB
from unimatch.http.permissions import IsVerified, principal_of, requires
from unimatch.http.validation import json_response, parse_body, parse_query, path_uuid
from unimatch.scheduler.webhooks import DestinationPolicy, url_problem
from unimatch.schemas import notifications as schema
from unimatch.storage import webhooks as store

log = logging.getLogger("unimatch.webhooks")

routes = web.RouteTableDef()

@routes.post("/webhooks")
@requires(IsVerified)
async def create_webhook(request: web.Request) -> web.Response:
    """201 `{webhook_id, secret, url, events, is_active, created_at}`."""
    user_id = principal_of(request).user_id
    body = await parse_body(request, schema.CreateWebhook)
    url, events = body.url, body.events
    problem = url_problem(url, DestinationPolicy.from_config(request.app[CONFIG]))
    if problem is not None:
        raise ValidationFailed({"url": [problem]})

    secret = secrets.token_hex(32)
    async with request.app[DB].transaction() as conn:
        # Serialises one user's creations, so the cap holds under concurrency.
        await store.lock_owner(conn, user_id)
        if await store.count_active(conn, user_id) >= store.MAX_ACTIVE_PER_USER:
            raise Conflict(
                f"at most {store.MAX_ACTIVE_PER_USER} webhooks per user",
                code="too_many_webhooks",
            )
        webhook = await store.create_webhook(conn, user_id, url, secret, sorted(events))
    log.info("user %s created webhook %s for %s", user_id, webhook["webhook_id"], events)
    return json_response({**webhook, "secret": secret}, status=201)


@routes.get("/webhooks")
@requires(IsVerified)
async def list_webhooks(request: web.Request) -> web.Response:
    user_id = principal_of(request).user_id
    return json_response({"webhooks": await store.list_webhooks(request.app[DB], user_id)})


@routes.delete("/webhooks/{webhook_id}")
@requires(IsVerified)
async def delete_webhook(request: web.Request) -> web.Response:
    """204; pending deliveries of the webhook are dropped."""
    user_id = principal_of(request).user_id
    webhook_id = path_uuid(request, "webhook_id")
    if not await store.deactivate_webhook(request.app[DB], webhook_id, user_id):
        raise NotFound("no such webhook")
    log.info("user %s deleted webhook %s", user_id, webhook_id)
    return web.Response(status=204)


@routes.get("/webhooks/{webhook_id}/deliveries")
@requires(IsVerified)
async def list_deliveries(request: web.Request) -> web.Response:
    """The latest deliveries (`limit` 1-100, default 20), newest first."""
    user_id = principal_of(request).user_id
    webhook_id = path_uuid(request, "webhook_id")
    limit = parse_query(request, schema.DeliveriesQuery).limit
    db = request.app[DB]
    if await store.get_webhook(db, webhook_id, user_id) is None:
        raise NotFound("no such webhook")
    deliveries = await store.list_deliveries(db, webhook_id, user_id, limit)
    return json_response({"deliveries": deliveries})
