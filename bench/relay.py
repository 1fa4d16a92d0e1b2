"""A bare aiohttp WebSocket relay: the ceiling bench/chat.py compares against.

Same frames as the platform, none of its work: no actors, no database, no
auth. A client connects to `/ws?token=<user_id>&match=<match_id>`; a `send`
gets an `ack` with a per-match counter as `seq` on the sending socket, and a
`message` goes to every other socket of the match (the platform's protocol:
the sending socket gets only its ack).

`make_app()` is the whole relay; bench/ray_relay.py serves the same app from
inside a Ray actor.

    python bench/relay.py --port 8765
"""

from __future__ import annotations

import argparse
import datetime as dt
import uuid
from collections import defaultdict

import orjson
from aiohttp import WSMsgType, web

SOCKETS = web.AppKey("sockets", dict)
SEQS = web.AppKey("seqs", dict)


async def relay(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30.0, compress=False)
    await ws.prepare(request)
    user = request.query["token"]
    match_id = request.query["match"]
    sockets: dict[str, set[web.WebSocketResponse]] = request.app[SOCKETS]
    seqs: dict[str, int] = request.app[SEQS]
    sockets[match_id].add(ws)
    await ws.send_str(orjson.dumps({"type": "ready", "user_id": user}).decode())
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            frame = orjson.loads(msg.data)
            if frame.get("type") == "ping":
                await ws.send_str('{"type":"pong"}')
                continue
            if frame.get("type") != "send":
                continue
            seq = seqs[match_id] = seqs.get(match_id, 0) + 1
            message_id = str(uuid.uuid4())
            created = dt.datetime.now(dt.UTC).isoformat()
            ack = {"type": "ack", "client_msg_id": frame["client_msg_id"], "match_id": match_id,
                   "seq": seq, "message_id": message_id, "created_at": created}
            message = {"type": "message", "match_id": match_id, "seq": seq,
                       "message_id": message_id, "sender_id": user, "body": frame["body"],
                       "client_msg_id": frame["client_msg_id"], "created_at": created}
            await ws.send_str(orjson.dumps(ack).decode())
            data = orjson.dumps(message).decode()
            for peer in list(sockets[match_id]):
                if peer is not ws and not peer.closed:
                    await peer.send_str(data)
    finally:
        sockets[match_id].discard(ws)
    return ws


def make_app() -> web.Application:
    app = web.Application()
    app[SOCKETS] = defaultdict(set)
    app[SEQS] = {}
    app.router.add_get("/ws", relay)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
