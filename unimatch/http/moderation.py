"""Reports (any verified user) and moderation (moderators only).

The rules (what a suspension ends, which reports a resolution closes) live in
`storage.moderation`; this module validates, runs them in one transaction,
and after the commit does what cannot be rolled back: closes the suspended
user's sockets with 4003, tells former partners their match ended, clears
caches and publishes notifications.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiohttp import web

from unimatch.actors.notify import clear_notifications_cache, publish_notification, push_to_user
from unimatch.domain.closes import CLOSE_FORBIDDEN
from unimatch.domain.errors import NotFound, ValidationFailed
from unimatch.domain.metrics import MODERATION_ACTIONS, REPORTS_FILED
from unimatch.http.keys import CACHE, DB, DIRECTORY, LIMITER
from unimatch.http.permissions import IsModerator, IsVerified, principal_of, requires
from unimatch.http.validation import (
    json_response,
    parse_body,
    parse_query,
    path_uuid,
)
from unimatch.schemas import moderation as schema
from unimatch.storage import moderation as store
from unimatch.storage.cache import feed_key, match_list_key, profile_key
from unimatch.storage.ratelimit import Limit

log = logging.getLogger("unimatch.moderation")

REPORTS_PER_HOUR = Limit(burst=20, per_seconds=3600)

routes = web.RouteTableDef()


async def _disconnect(directory: Any, user_id: uuid.UUID) -> None:
    if directory is None:
        return
    try:
        await directory.call(
            "user", str(user_id), "disconnect", CLOSE_FORBIDDEN, "suspended"
        )
    except Exception as exc:
        log.warning("could not close the sockets of suspended user %s: %r", user_id, exc)


async def _after_suspension(
    app: web.Application, user_id: uuid.UUID, suspended: store.Suspended
) -> None:
    """After the commit: every socket of the user closed with 4003 at once,
    then partners told (`unmatch` frames) and caches cleared."""
    directory = app[DIRECTORY]
    await _disconnect(directory, user_id)
    partners = [partner for _, partner in suspended.ended_matches]
    await app[CACHE].delete(
        profile_key(user_id), feed_key(user_id), match_list_key(user_id),
        *(match_list_key(partner) for partner in partners),
    )
    await clear_notifications_cache(app[CACHE], user_id)
    await asyncio.gather(*(
        _announce_end(directory, match_id, partner, suspended)
        for match_id, partner in suspended.ended_matches
    ))


async def _announce_end(
    directory: Any, match_id: uuid.UUID, partner: uuid.UUID, suspended: store.Suspended
) -> None:
    """The match's actor learns the match ended (it may hold it as active)
    and sends `unmatch` to both users; if it cannot be reached, the partner
    gets the frame directly."""
    if directory is None:
        return
    try:
        await directory.call(
            "match", str(match_id), "end", suspended.end_reason,
            suspended.suspension["created_by"],
        )
    except Exception as exc:
        log.warning("match actor %s did not take the end of its match: %r", match_id, exc)
        await push_to_user(directory, partner, [{"type": "unmatch", "match_id": str(match_id)}])


@routes.post("/reports")
@requires(IsVerified)
async def create_report(request: web.Request) -> web.Response:
    """201 `{report_id, created_at}`; at most 20 reports an hour per reporter."""
    reporter_id = principal_of(request).user_id
    body = await parse_body(request, schema.CreateReport)
    reported_id, reason, details = body.reported_user_id, body.reason, body.details
    if reported_id == reporter_id:
        raise ValidationFailed({"reported_user_id": ["you cannot report yourself"]})

    db = request.app[DB]
    if not await store.user_exists(db, reported_id):
        raise NotFound("no such user")
    await request.app[LIMITER].require(
        f"reports:{reporter_id}", REPORTS_PER_HOUR, "too many reports; try again later"
    )
    report = await store.create_report(db, reporter_id, reported_id, reason, details)
    REPORTS_FILED.labels(reason).inc()
    log.info("user %s reported %s (%s): report %s", reporter_id, reported_id, reason,
             report["report_id"])
    return json_response(report, status=201)


@routes.get("/moderation/reports")
@requires(IsModerator)
async def list_reports(request: web.Request) -> web.Response:
    """The queue, oldest first. `status` open (default), resolved or all;
    `reported_user_id` narrows to one user; `after=<report_id>` and `limit`
    (1-100, default 50) paginate; `next_after` is the next page's cursor."""
    query = parse_query(request, schema.ReportsQuery)
    limit = query.limit
    page = await store.list_reports(
        request.app[DB],
        status=None if query.status == "all" else query.status,
        reported_user_id=query.reported_user_id,
        after=query.after,
        limit=limit,
    )
    if page is None:
        raise ValidationFailed({"after": ["no such report"]})
    next_after = page[-1]["report_id"] if len(page) == limit else None
    return json_response({"reports": page, "next_after": next_after})


@routes.get("/moderation/reports/{report_id}")
@requires(IsModerator)
async def get_report(request: web.Request) -> web.Response:
    report = await store.get_report(request.app[DB], path_uuid(request, "report_id"))
    if report is None:
        raise NotFound("no such report")
    return json_response(report)


@routes.post("/moderation/reports/{report_id}/resolve")
@requires(IsModerator)
async def resolve_report(request: web.Request) -> web.Response:
    """`{action: dismiss | warn | suspend | ban, until?}`: `until` is
    required for suspend (in the future) and refused otherwise. 200
    `{report, resolved_report_ids, suspension}`; 409 when already resolved.
    Which reports a resolution closes: see `storage.moderation.resolve_report`."""
    moderator_id = principal_of(request).user_id
    report_id = path_uuid(request, "report_id")
    body = await parse_body(request, schema.ResolveReport)
    action, until = body.action, body.until

    async with request.app[DB].transaction() as conn:
        resolution = await store.resolve_report(
            conn, report_id, moderator_id, action=action, until=until
        )
    reported_id = uuid.UUID(resolution.report["reported_user"]["user_id"])
    MODERATION_ACTIONS.labels(action).inc()
    log.info(
        "moderation: %s resolved report %s with %s (reports closed: %s)",
        moderator_id, report_id, action, [str(i) for i in resolution.resolved_report_ids],
    )
    if resolution.suspended is not None:
        await _after_suspension(request.app, reported_id, resolution.suspended)
    for user_id, notification in resolution.notifications:
        if user_id == reported_id and resolution.suspended is not None:
            continue  # their sockets are closed; the row waits for them
        await publish_notification(
            request.app[CACHE], request.app[DIRECTORY], user_id, notification
        )
    return json_response({
        "report": resolution.report,
        "resolved_report_ids": [str(i) for i in resolution.resolved_report_ids],
        "suspension": None if resolution.suspended is None else resolution.suspended.suspension,
    })


@routes.post("/moderation/users/{user_id}/suspend")
@requires(IsModerator)
async def suspend(request: web.Request) -> web.Response:
    """`{reason, until?}`: no `until` is a ban. 201 with the suspension, or
    200 when it replaced one in force. 403 for a moderator or oneself."""
    moderator_id = principal_of(request).user_id
    user_id = path_uuid(request, "user_id")
    body = await parse_body(request, schema.Suspend)
    reason, until = body.reason, body.until

    async with request.app[DB].transaction() as conn:
        suspended = await store.suspend_user(
            conn, user_id, moderator_id, reason=reason, until=until
        )
    log.info(
        "moderation: %s suspended %s until %s (%s); %d matches ended%s",
        moderator_id, user_id, until or "forever", reason, len(suspended.ended_matches),
        " (replacing a suspension in force)" if suspended.replaced else "",
    )
    MODERATION_ACTIONS.labels("ban" if until is None else "suspend").inc()
    await _after_suspension(request.app, user_id, suspended)
    return json_response(suspended.suspension, status=200 if suspended.replaced else 201)


@routes.post("/moderation/users/{user_id}/unsuspend")
@requires(IsModerator)
async def unsuspend(request: web.Request) -> web.Response:
    """204; 404 for no such user, 409 `not_suspended`. Ended matches stay ended."""
    moderator_id = principal_of(request).user_id
    user_id = path_uuid(request, "user_id")
    async with request.app[DB].transaction() as conn:
        lifted = await store.lift_suspension(conn, user_id, moderator_id)
    log.info("moderation: %s lifted %s of %s", moderator_id,
             [s["suspension_id"] for s in lifted], user_id)
    MODERATION_ACTIONS.labels("unsuspend").inc()
    await request.app[CACHE].delete(profile_key(user_id))
    return web.Response(status=204)
