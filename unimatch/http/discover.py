"""Discover and match: the feed, swipes, the match list, unmatch and blocks.

Swipes, unmatches and blocks go to the pair's `MatchActor` (the single writer
of a pair); reads come straight from PostgreSQL through the caches.
"""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web

from unimatch.domain.errors import NotFound, ValidationFailed
from unimatch.domain.pairs import pair_id
from unimatch.http.keys import CACHE, CONFIG, DB, directory_of
from unimatch.http.permissions import (
    IsProfileComplete,
    IsVerified,
    authorize,
    principal_of,
    requires,
    token_user,
)
from unimatch.http.validation import (
    json_response,
    parse_body,
    parse_query,
    path_uuid,
)
from unimatch.schemas import discover as schema
from unimatch.storage import blocks as block_sql
from unimatch.storage import matches as match_sql
from unimatch.storage.cache import MATCH_LIST_TTL, match_list_key
from unimatch.storage.feed import cached_page, refresh_feed

routes = web.RouteTableDef()

@routes.get("/discover")
async def discover(request: web.Request) -> web.Response:
    """`?limit=` 1..50 (default 20): the best-scored candidates; `cached` says
    whether the page came from `discover_feed:{user_id}`. Needs a complete
    profile. A cached page is read while that is checked (and dropped if the
    check fails); a feed is only computed once it has passed."""
    me = token_user(request)
    limit = parse_query(request, schema.DiscoverQuery).limit
    db, cache = request.app[DB], request.app[CACHE]
    _, page = await asyncio.gather(
        authorize(request, IsProfileComplete), cached_page(db, cache, me, limit)
    )
    cached = page is not None
    if page is None:
        page = await refresh_feed(db, cache, me, cards=limit)
    return json_response({"results": page, "cached": cached})


@routes.post("/swipes")
@requires(IsProfileComplete)
async def swipe(request: web.Request) -> web.Response:
    """`{target_id, action: like | pass}` → 201 `{matched, match_id}`."""
    body = await parse_body(request, schema.Swipe)
    target, action = body.target_id, body.action
    me = principal_of(request).user_id
    if target == me:
        raise ValidationFailed({"target_id": ["you cannot swipe yourself"]})
    result = await directory_of(request.app).call(
        "match", str(pair_id(me, target)), "swipe", str(me), str(target), action,
        swipe_id=str(uuid.uuid4()),
        like_limit=request.app[CONFIG].limit_likes_per_day,
    )
    return json_response(result, status=201)


@routes.get("/matches")
# A verified user is enough: one who removed her photos must still be able
# to see her matches, leave one and block someone.
@requires(IsVerified)
async def list_matches(request: web.Request) -> web.Response:
    """The user's active matches: the other user, the last message, the
    unread count; cached as `match_list:{user_id}` for 2 minutes."""
    me = principal_of(request).user_id
    cache = request.app[CACHE]
    key = match_list_key(me)
    matches = await cache.get_json(key, cache="match_list")
    if matches is None:
        matches = await match_sql.list_matches(request.app[DB], me)
        await cache.set_json(key, matches, MATCH_LIST_TTL)
    return json_response(matches)


@routes.delete("/matches/{match_id}")
@requires(IsVerified)
async def unmatch(request: web.Request) -> web.Response:
    """204: the match ends and its chat closes for both; 404 when the caller
    is not in it."""
    match_id = path_uuid(request, "match_id")
    me = principal_of(request).user_id
    await directory_of(request.app).call("match", str(match_id), "unmatch", str(me))
    return web.Response(status=204)


@routes.post("/blocks")
@requires(IsVerified)
async def block(request: web.Request) -> web.Response:
    """`{user_id}` → 201: hidden both ways from now on, any match ended."""
    target = (await parse_body(request, schema.Block)).user_id
    me = principal_of(request).user_id
    if target == me:
        raise ValidationFailed({"user_id": ["you cannot block yourself"]})
    await directory_of(request.app).call(
        "match", str(pair_id(me, target)), "block", str(me), str(target)
    )
    return json_response({"blocked_id": str(target)}, status=201)


@routes.delete("/blocks/{user_id}")
@requires(IsVerified)
async def unblock(request: web.Request) -> web.Response:
    """204: the block is lifted (an ended match stays ended); 404 when there
    was none."""
    target = path_uuid(request, "user_id")
    me = principal_of(request).user_id
    if not await block_sql.remove_block(request.app[DB], me, target):
        raise NotFound("no such block", code="not_found")
    return web.Response(status=204)
