"""Chat over HTTP: the fallback for clients without a WebSocket.

History is read straight from PostgreSQL (the replica when one is set); a
send takes the same path as a WebSocket `send` (the match's actor: same seq,
same idempotency, same delivery to the other user's sockets), as does
marking messages read.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from unimatch.errors import NotFound
from unimatch.http.keys import CONFIG, DB, LIMITER, directory_of
from unimatch.http.permissions import IsAuthenticated, principal_of, requires
from unimatch.http.validation import Fields, json_response, path_uuid, read_json
from unimatch.storage import messages as sql
from unimatch.storage.ratelimit import Limit

routes = web.RouteTableDef()

DEFAULT_PAGE, MAX_PAGE = 50, 200


async def _member_match(request: web.Request) -> tuple[uuid.UUID, uuid.UUID]:
    """(match_id, user_id); 404 when the caller is not in this match."""
    match_id = path_uuid(request, "match_id")
    me = principal_of(request).user_id
    if await request.app[DB].fetchrow(sql.MEMBERSHIP, match_id, me) is None:
        raise NotFound("no such match", code="not_found")
    return match_id, me


@routes.get("/matches/{match_id}/messages")
@requires(IsAuthenticated)
async def list_messages(request: web.Request) -> web.Response:
    """`?after_seq=&before_seq=&limit=50` → `{messages}` in seq order: the
    oldest page after `after_seq`, else the newest page before `before_seq`
    (or the newest of all)."""
    fields = Fields(request.query)
    after = fields.integer("after_seq", required=False, minimum=0)
    before = fields.integer("before_seq", required=False, minimum=1)
    limit = fields.integer("limit", required=False, minimum=1, maximum=MAX_PAGE,
                           default=DEFAULT_PAGE)
    fields.check()
    assert limit is not None
    match_id, _ = await _member_match(request)
    rows = await sql.history(
        request.app[DB].read(), match_id, after_seq=after, before_seq=before, limit=limit
    )
    return json_response({"messages": [sql.message_json(r) for r in rows]})


@routes.post("/matches/{match_id}/messages")
@requires(IsAuthenticated)
async def post_message(request: web.Request) -> web.Response:
    """`{client_msg_id, body}` → 201 `{message_id, seq, created_at}`; a
    repeated client_msg_id answers the original message."""
    fields = Fields(await read_json(request))
    client_msg_id = fields.string("client_msg_id", min_len=1, max_len=100, strip=False)
    body = fields.string("body", strip=False)
    fields.check()
    match_id, me = await _member_match(request)
    config = request.app[CONFIG]
    limit = Limit(config.limit_chat_burst, config.limit_chat_burst / config.limit_chat_per_second)
    await request.app[LIMITER].require(f"chat_http:{me}", limit, "too many messages")
    ack = await directory_of(request.app).call(
        "match", str(match_id), "send_message", me, client_msg_id, body
    )
    return json_response(
        {"message_id": ack["message_id"], "seq": ack["seq"], "created_at": ack["created_at"]},
        status=201,
    )


@routes.post("/matches/{match_id}/read")
@requires(IsAuthenticated)
async def mark_read(request: web.Request) -> web.Response:
    """`{seq}` → 204: the other user's messages up to `seq` are read."""
    fields = Fields(await read_json(request))
    seq = fields.integer("seq", minimum=0)
    fields.check()
    match_id, me = await _member_match(request)
    await directory_of(request.app).call("match", str(match_id), "mark_messages", me, seq, "read")
    return web.Response(status=204)
