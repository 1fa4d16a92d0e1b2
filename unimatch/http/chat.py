"""Chat over HTTP: the fallback for clients without a WebSocket.

History is read straight from PostgreSQL (the replica when one is set); a
send takes the same path as a WebSocket `send` (the match's actor: same seq,
same idempotency, same delivery to the other user's sockets), as does
marking messages read.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from unimatch.domain.errors import NotFound
from unimatch.http.keys import CONFIG, DB, LIMITER, directory_of
from unimatch.http.permissions import IsAuthenticated, principal_of, requires
from unimatch.http.validation import json_response, parse_body, parse_query, path_uuid
from unimatch.schemas import chat as schema
from unimatch.storage import messages as sql
from unimatch.storage.ratelimit import Limit

routes = web.RouteTableDef()

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
    query = parse_query(request, schema.HistoryQuery)
    match_id, _ = await _member_match(request)
    rows = await sql.history(
        request.app[DB].read(), match_id, after_seq=query.after_seq,
        before_seq=query.before_seq, limit=query.limit,
    )
    return json_response({"messages": [sql.message_json(r) for r in rows]})


@routes.post("/matches/{match_id}/messages")
@requires(IsAuthenticated)
async def post_message(request: web.Request) -> web.Response:
    """`{client_msg_id, body}` → 201 `{message_id, seq, created_at}`; a
    repeated client_msg_id answers the original message."""
    message = await parse_body(request, schema.SendMessage)
    match_id, me = await _member_match(request)
    config = request.app[CONFIG]
    limit = Limit(config.limit_chat_burst, config.limit_chat_burst / config.limit_chat_per_second)
    await request.app[LIMITER].require(f"chat_http:{me}", limit, "too many messages")
    ack = await directory_of(request.app).call(
        "match", str(match_id), "send_message", me, message.client_msg_id,
        message.body,
    )
    return json_response(
        {"message_id": ack["message_id"], "seq": ack["seq"], "created_at": ack["created_at"]},
        status=201,
    )


@routes.post("/matches/{match_id}/read")
@requires(IsAuthenticated)
async def mark_read(request: web.Request) -> web.Response:
    """`{seq}` → 204: the other user's messages up to `seq` are read."""
    body = await parse_body(request, schema.MarkRead)
    match_id, me = await _member_match(request)
    await directory_of(request.app).call(
        "match", str(match_id), "mark_messages", me, body.seq, "read"
    )
    return web.Response(status=204)
