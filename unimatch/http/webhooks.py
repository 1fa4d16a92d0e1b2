"""`/webhooks`: a user's endpoints that receive their notifications.

Events are notification kinds (`storage.notifications.KINDS`). The secret is
shown once, at creation; deliveries are signed with it (see
`scheduler.webhooks`).
"""

from __future__ import annotations

import logging
import secrets

from aiohttp import web

from unimatch.domain.errors import Conflict, NotFound
from unimatch.http.keys import CONFIG, DB
from unimatch.http.permissions import IsVerified, principal_of, requires
from unimatch.http.validation import Fields, json_response, path_uuid, read_json
from unimatch.scheduler.webhooks import DestinationPolicy, url_problem
from unimatch.storage import webhooks as store
from unimatch.storage.notifications import KINDS

log = logging.getLogger("unimatch.webhooks")

routes = web.RouteTableDef()

def _event(value: object) -> str:
    if not isinstance(value, str) or value not in KINDS:
        raise ValueError("events must be among: " + ", ".join(KINDS))
    return value


@routes.post("/webhooks")
@requires(IsVerified)
async def create_webhook(request: web.Request) -> web.Response:
    """201 `{webhook_id, secret, url, events, is_active, created_at}`."""
    user_id = principal_of(request).user_id
    fields = Fields(await read_json(request))
    url = fields.string("url", min_len=1)
    events = fields.items("events", _event, min_items=1, max_items=len(KINDS))
    if url is not None:
        problem = url_problem(url, DestinationPolicy.from_config(request.app[CONFIG]))
        if problem is not None:
            fields.error("url", problem)
    fields.check()
    assert url is not None and events is not None

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
    query = Fields(request.query)
    limit = query.integer("limit", required=False, minimum=1, maximum=100, default=20)
    query.check()
    db = request.app[DB]
    if await store.get_webhook(db, webhook_id, user_id) is None:
        raise NotFound("no such webhook")
    deliveries = await store.list_deliveries(db, webhook_id, user_id, limit or 20)
    return json_response({"deliveries": deliveries})
