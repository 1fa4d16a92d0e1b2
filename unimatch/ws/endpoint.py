"""`GET /ws` and `GET /ws/chat/{match_id}/`: authenticate, then serve frames.

The endpoint does no business logic: it authenticates, validates frames (the
only place a chat frame is checked), forwards them to the match's actor and
writes what comes back. Sends run in tasks, so a slow commit never stalls
reading: one per match at a time, so a socket's sends to one match take seqs
in the order they were sent.

What one socket can make the node do is bounded: sends by the chat limit, a
per-socket queue and the node's cap on unanswered sends; receipts are
coalesced per match (only the highest seq counts, one call in flight);
typing by a small bucket; frames naming a match the user is not in are
refused here, without waking any actor. A socket lives as long as its
access token: it is closed 4001 when the token expires unless an `auth`
frame brings a fresh one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from unimatch.domain import tokens
from unimatch.domain.closes import (
    CLOSE_FORBIDDEN,
    CLOSE_GOING_AWAY,
    CLOSE_RATE_LIMITED,
    CLOSE_UNAUTHORIZED,
)
from unimatch.domain.errors import DomainError, Forbidden, NotFound, RateLimited, Unauthorized
from unimatch.domain.logs import bind_connection
from unimatch.domain.metrics import WS_CLOSED, WS_FRAMES, WS_SEND_LATENCY, WS_SLOW_CLOSED
from unimatch.http.keys import CONFIG, DB, NODE_INDEX, directory_of
from unimatch.http.permissions import PRINCIPAL
from unimatch.storage import messages as sql
from unimatch.storage.users import load_principal
from unimatch.ws import codec
from unimatch.ws.errors import (
    close_code_for,
    frame_for,
    unexpected_frame,
)
from unimatch.ws.hub import HUB, Connection, SocketHub, TokenBucket

log = logging.getLogger("unimatch.ws")

routes = web.RouteTableDef()

AUTH_TIMEOUT = 5.0
# Rejected sends in a row before a client that ignores `rate_limited` is closed.
RATE_STRIKES = 20
# Typing indicators: a small bucket per socket; extra ones are dropped quietly.
TYPING_BURST, TYPING_PER_SECOND = 5, 2.0
SYNC_PAGE = 500
# A replay waits this long for a client to make room in its send queue
# before the client counts as too slow to read (4008).
SLOW_READER_PATIENCE = 5.0
TOUCH_EVERY = 60.0
CLOSE_TRY_AGAIN = 1013
# Frames a socket may send: a burst, then a steady rate (an app sends a few a
# second: messages, receipts, typing). Past it the socket is closed 4008.
FRAMES_BURST, FRAMES_PER_SECOND = 200, 100
# A socket's reader yields to the event loop after this many frames.
YIELD_EVERY = 8
# Bytes read from one socket per turn of the event loop (asyncio's default
# is 256 KB: about 3,000 small frames parsed in one go). An app's frames are
# a few hundred bytes; a flood is read, and parsed, a slice at a time, so the
# node's other sockets get their turns while it is being refused.
WS_READ_BYTES = 16 * 1024
# The `retry_after` of an `overloaded` error frame, in seconds.
OVERLOAD_RETRY = 1.0
# Sends one socket may have queued or at an actor; past it, `overloaded`.
SOCKET_SENDS_IN_FLIGHT = 256
# A socket that names a match it does not know re-reads its matches at most
# this often (a match formed since); other unknown ids are refused unread.
MATCHES_REFRESH_EVERY = 1.0


# Metric labels of the client frames (as before the frames were models).
_FRAME_LABELS: dict[type, str] = {
    codec.Auth: "auth", codec.Send: "send", codec.Receipt: "receipt",
    codec.Typing: "typing", codec.Sync: "sync", codec.Ping: "ping",
}


class ChatSocket:
    """The frames of one authenticated socket."""

    def __init__(self, request: web.Request, conn: Connection) -> None:
        self.app = request.app
        self.config = request.app[CONFIG]
        self.hub: SocketHub = request.app[HUB]
        self.directory = directory_of(request.app)
        self.conn = conn
        self.user = str(conn.user_id)
        self.strikes = 0
        self.typing_tokens = float(TYPING_BURST)
        self.typing_stamp = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sends: dict[uuid.UUID, collections.deque[tuple[codec.Send, dict[str, str]]]] = {}
        self._queued_sends = 0
        # Receipts waiting per (match, status): only the highest seq is kept.
        self._receipts: dict[tuple[uuid.UUID, str], int] = {}
        self._matches_read_at = 0.0
        self._expiry: asyncio.TimerHandle | None = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve(self) -> None:
        frames = TokenBucket(FRAMES_BURST, FRAMES_PER_SECOND)
        handled = 0
        async for msg in self.conn.ws:
            if frames.take():
                # Far past what any app sends: a flood. It ends here, before
                # it costs the node's other sockets their share of the loop.
                WS_SLOW_CLOSED.labels("frame_flood").inc()
                self.conn.send_frame(codec.error_frame(
                    "rate_limited", f"more than {FRAMES_PER_SECOND} frames a second"))
                self.conn.close_soon(CLOSE_RATE_LIMITED, "too many frames", flush=True)
                break
            if msg.type is WSMsgType.TEXT:
                await self.handle(msg.data)
            elif msg.type is WSMsgType.BINARY:
                self.conn.send_frame(codec.error_frame("invalid_frame", "frames are JSON text"))
            if self.conn.closing:
                break
            handled += 1
            if handled % YIELD_EVERY == 0:
                # Frames already buffered are read without waiting: let the
                # node's other sockets and actors run between batches of them.
                await asyncio.sleep(0)

    async def handle(self, raw: str) -> None:
        try:
            frame = codec.parse(raw)
        except DomainError as exc:
            WS_FRAMES.labels("in", "invalid").inc()
            self.conn.send_frame(frame_for(exc, **codec.context_of(exc)))
            return
        WS_FRAMES.labels("in", _FRAME_LABELS.get(type(frame), "other")).inc()
        self._touch()
        if isinstance(frame, codec.Ping):
            self.conn.send(codec.PONG)
        elif isinstance(frame, codec.Auth):
            self._reauthenticate(frame.token)
        elif isinstance(frame, codec.Sync):
            await self._sync(frame)
        elif isinstance(frame, codec.Send | codec.Receipt | codec.Typing):
            if not await self._may_address(frame.match_id, frame):
                return
            if isinstance(frame, codec.Send):
                self._send(frame)
            elif isinstance(frame, codec.Receipt):
                self._receipt(frame)
            else:
                self._typing(frame)

    # -- authority -----------------------------------------------------------

    def expire_at(self, expires_at: float) -> None:
        """Close 4001 when the access token runs out, unless renewed."""
        if self._expiry is not None:
            self._expiry.cancel()
        delay = max(expires_at - time.time(), 0.0)
        self._expiry = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        WS_CLOSED.labels("token_expired").inc()
        self.conn.send_frame(codec.error_frame("token_expired", "send an auth frame with a "
                                               "fresh access token, or reconnect"))
        self.conn.close_soon(CLOSE_UNAUTHORIZED, "token expired", flush=True)

    def _reauthenticate(self, token: str) -> None:
        try:
            claims = tokens.decode(self.config, token, tokens.ACCESS)
        except DomainError as exc:
            self.conn.send_frame(frame_for(exc))
            return
        if claims.user_id != self.conn.user_id:
            self.conn.send_frame(codec.error_frame("forbidden", "a token of another user"))
            return
        self.expire_at(claims.expires_at)
        self.conn.family = str(claims.family_id) if claims.family_id else None
        self.conn.send_frame({"type": "authenticated", "expires_at": claims.expires_at})

    def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()

    async def _may_address(self, match_id: uuid.UUID, frame: Any) -> bool:
        """The user is in this open match (and a scoped socket is scoped to
        it). Else an error frame, and no actor is called."""
        context = {"client_msg_id": frame.client_msg_id} if isinstance(frame, codec.Send) else {}
        if not self._in_scope(match_id, **context):
            return False
        matches = self.conn.matches
        if match_id not in matches:
            now = time.monotonic()
            if now - self._matches_read_at >= MATCHES_REFRESH_EVERY:
                self._matches_read_at = now
                await self.conn.load_matches(self.app[DB])
        if match_id in self.conn.matches:
            return True
        error: DomainError = (
            Forbidden("this match has ended", code="match_ended")
            if match_id in self.conn.ended
            else NotFound("no such match", code="not_found")
        )
        self.conn.send_frame(frame_for(error, match_id=str(match_id), **context))
        return False

    def _in_scope(self, match_id: uuid.UUID, **context: Any) -> bool:
        if self.conn.scope is None or str(match_id) == self.conn.scope:
            return True
        error = Forbidden("this socket is scoped to another match")
        self.conn.send_frame(frame_for(error, match_id=str(match_id), **context))
        return False

    def _touch(self) -> None:
        now = time.monotonic()
        if now - self.conn.last_touch >= TOUCH_EVERY:
            self.conn.last_touch = now
            self._spawn(self._call_quietly("user", self.user, "touch"))

    async def _call_quietly(self, kind: str, actor_id: str, method: str, *args: Any) -> None:
        try:
            await self.directory.call(kind, actor_id, method, *args)
        except Exception as exc:
            log.warning("%s/%s.%s failed: %r", kind, actor_id, method, exc)

    # -- send ----------------------------------------------------------------

    def _send(self, frame: codec.Send) -> None:
        context = {"client_msg_id": frame.client_msg_id, "match_id": str(frame.match_id)}
        if not self._in_scope(frame.match_id, client_msg_id=frame.client_msg_id):
            return
        wait = self.hub.chat_bucket(self.user).take()
        if wait:
            self.strikes += 1
            if self.strikes >= RATE_STRIKES:
                WS_SLOW_CLOSED.labels("rate_limited").inc()
                self.conn.close_soon(CLOSE_RATE_LIMITED, "rate limited", flush=True)
                return
            error = RateLimited("too many messages", retry_after=round(wait, 3))
            self.conn.send_frame(frame_for(error, **context))
            return
        self.strikes = 0
        if self._queued_sends >= SOCKET_SENDS_IN_FLIGHT or not self.hub.admit_send():
            # Past capacity: refuse now, with a hint, rather than queue without
            # end; nothing refused was stored, so the client sends it again.
            busy = RateLimited("server busy, send again shortly", retry_after=OVERLOAD_RETRY,
                               code="overloaded")
            self.conn.send_frame(frame_for(busy, **context))
            return
        queue = self._sends.get(frame.match_id)
        if queue is None:
            queue = self._sends[frame.match_id] = collections.deque()
            self._spawn(self._drain_sends(frame.match_id, queue))
        queue.append((frame, context))
        self._queued_sends += 1

    async def _drain_sends(
        self, match_id: uuid.UUID, queue: collections.deque[tuple[codec.Send, dict[str, str]]]
    ) -> None:
        """One send per match in flight from this socket: remote calls to an
        async actor may run out of order, and a user's messages must take
        seqs in the order they were typed."""
        try:
            while queue:
                frame, context = queue[0]
                await self._forward_send(frame, context)
                queue.popleft()
                self._queued_sends -= 1
                self.hub.send_done()
        finally:
            del self._sends[match_id]
            if queue:  # the socket went away with sends still queued
                self._queued_sends -= len(queue)
                self.hub.send_done(len(queue))

    async def _forward_send(self, frame: codec.Send, context: dict[str, str]) -> None:
        started = time.perf_counter()
        try:
            ack = await self.directory.call(
                "match", str(frame.match_id), "send_message",
                self.conn.user_id, frame.client_msg_id, frame.body, self.conn.id,
            )
        except DomainError as exc:
            self.conn.send_frame(frame_for(exc, **context))
            return
        except Exception as exc:
            log.warning("send to %s failed: %r", frame.match_id, exc)
            self.conn.send_frame(unexpected_frame(**context))
            return
        # The ack tells this socket the seq: it gets no `message` for it.
        self.conn.remember_live(str(frame.match_id), ack["seq"])
        self.conn.send_frame(ack)
        WS_SEND_LATENCY.observe(time.perf_counter() - started)

    # -- receipts, typing ----------------------------------------------------

    def _receipt(self, frame: codec.Receipt) -> None:
        """Coalesced: while a receipt of this match and status is at the
        actor, later ones only raise the seq the next call carries."""
        key = (frame.match_id, frame.type)
        waiting = self._receipts.get(key)
        if waiting is not None:
            self._receipts[key] = max(waiting, frame.seq)
            return
        self._receipts[key] = frame.seq
        self._spawn(self._carry_receipts(key))

    async def _carry_receipts(self, key: tuple[uuid.UUID, str]) -> None:
        match_id, status = key
        sent = -1
        try:
            while self._receipts.get(key, -1) > sent:
                sent = self._receipts[key]
                try:
                    await self.directory.call(
                        "match", str(match_id), "mark_messages", self.conn.user_id, sent, status
                    )
                except DomainError as exc:
                    self.conn.send_frame(frame_for(exc, match_id=str(match_id)))
                except Exception as exc:
                    log.warning("receipt for %s failed: %r", match_id, exc)
                    self.conn.send_frame(unexpected_frame(match_id=str(match_id)))
        finally:
            self._receipts.pop(key, None)

    def _typing(self, frame: codec.Typing) -> None:
        now = time.monotonic()
        self.typing_tokens = min(
            TYPING_BURST, self.typing_tokens + (now - self.typing_stamp) * TYPING_PER_SECOND
        )
        self.typing_stamp = now
        if self.typing_tokens < 1:
            return  # an indicator, not a message: extra ones are simply dropped
        self.typing_tokens -= 1
        self._spawn(self._typing_call(frame))

    async def _typing_call(self, frame: codec.Typing) -> None:
        try:
            await self.directory.call(
                "match", str(frame.match_id), "typing", self.conn.user_id, frame.state
            )
        except DomainError as exc:
            self.conn.send_frame(frame_for(exc, match_id=str(frame.match_id)))
        except Exception as exc:
            log.warning("typing for %s failed: %r", frame.match_id, exc)

    # -- sync ----------------------------------------------------------------

    async def _sync(self, frame: codec.Sync) -> None:
        """Replay every message after each cursor, in seq order, then
        `synced`. Live messages of those matches that arrive meanwhile are
        held and released after the replay, minus the seqs it covered; seqs
        this socket already got live are not sent again."""
        conn = self.conn
        cursors = {
            m: seq for m, seq in frame.cursors.items()
            if conn.scope is None or str(m) == conn.scope
        }
        replayed = {str(m): seq for m, seq in cursors.items()}
        conn.holding = {m: [] for m in replayed}
        try:
            pending = dict(sorted(cursors.items()))
            db = self.app[DB]
            while pending:
                rows = await db.fetch(
                    sql.SYNC_PAGE, conn.user_id, list(pending), list(pending.values()), SYNC_PAGE
                )
                live = conn.live_seqs or {}
                for row in rows:
                    match_id = str(row["match_id"])
                    replayed[match_id] = row["seq"]
                    if row["seq"] in live.get(match_id, ()):
                        continue
                    conn.remember_live(match_id, row["seq"])
                    data = codec.encode(sql.message_frame(row))
                    if not await conn.queue.put_paced(data, patience=SLOW_READER_PATIENCE):
                        return
                if len(rows) < SYNC_PAGE:
                    break
                last = rows[-1]
                pending = {m: s for m, s in pending.items() if m > last["match_id"]}
                pending[last["match_id"]] = last["seq"]
                pending = dict(sorted(pending.items()))
        finally:
            held, conn.holding = conn.holding, None
            for match_id, frames in held.items():
                for seq, data in sorted(frames, key=lambda f: f[0]):
                    if seq > replayed[match_id]:
                        conn.remember_live(match_id, seq)
                        conn.send(data)
        conn.send(codec.SYNCED)


async def _authenticate(
    request: web.Request, ws: web.WebSocketResponse
) -> tuple[Any, tokens.TokenClaims]:
    """The principal and its token's claims, from `?token=` or a first
    `auth` frame; raises Unauthorized (close 4001)."""
    token = request.query.get("token")
    if token is None:
        try:
            msg = await ws.receive(timeout=AUTH_TIMEOUT)
        except TimeoutError:
            raise Unauthorized("authenticate within 5 seconds") from None
        if msg.type is not WSMsgType.TEXT:
            raise Unauthorized("authentication required")
        try:
            frame = codec.parse(msg.data)
        except DomainError:
            raise Unauthorized("the first frame must be auth") from None
        if not isinstance(frame, codec.Auth):
            raise Unauthorized("the first frame must be auth")
        token = frame.token
    claims = tokens.decode(request.app[CONFIG], token, tokens.ACCESS)
    principal = await load_principal(request.app[DB], claims.user_id)
    if principal is None:
        raise Unauthorized("account no longer exists", code="invalid_token")
    if principal.is_suspended:
        raise Forbidden("account suspended", code="suspended")
    return principal, claims


async def _scope(request: web.Request, user_id: uuid.UUID) -> str | None:
    raw = request.match_info.get("match_id")
    if raw is None:
        return None
    try:
        match_id = uuid.UUID(raw)
    except ValueError:
        raise Forbidden("not a match of yours", code="forbidden") from None
    row = await request.app[DB].fetchrow(sql.MEMBERSHIP, match_id, user_id)
    if row is None or not row["active"]:
        raise Forbidden("not a match of yours", code="forbidden")
    return str(match_id)


async def _reject(
    ws: web.WebSocketResponse, code: int, error: DomainError
) -> web.WebSocketResponse:
    """An `error` frame saying why, then the close code."""
    WS_CLOSED.labels(str(code)).inc()
    await ws.send_frame(codec.encode(frame_for(error)), WSMsgType.TEXT)
    await ws.close(code=code, message=error.code.encode())
    return ws


async def websocket(request: web.Request) -> web.WebSocketResponse:
    config = request.app[CONFIG]
    ws = web.WebSocketResponse(
        heartbeat=config.ws_heartbeat,
        max_msg_size=codec.MAX_FRAME_BYTES,
        compress=False,
    )
    await ws.prepare(request)
    transport = request.transport
    if transport is not None and hasattr(transport, "max_size"):
        transport.max_size = WS_READ_BYTES
    try:
        principal, claims = await _authenticate(request, ws)
        scope = await _scope(request, principal.user_id)
    except DomainError as exc:
        code = close_code_for(exc) or CLOSE_FORBIDDEN
        return await _reject(ws, code, exc)
    hub = request.app[HUB]
    conn = Connection(ws, principal.user_id, scope, config.ws_send_queue)
    # Every line this socket's tasks log names the connection and the user;
    # the access line at close names the user.
    conn.family = str(claims.family_id) if claims.family_id else None
    bind_connection(conn.id, principal.user_id)
    request[PRINCIPAL] = principal
    await conn.load_matches(request.app[DB])
    hub.add(conn)
    session = ChatSocket(request, conn)
    session.expire_at(claims.expires_at)
    node = request.app[NODE_INDEX]
    try:
        try:
            await session.directory.call("user", session.user, "attach", node, conn.id)
        except Exception as exc:
            log.warning("attach of %s failed: %r", session.user, exc)
            conn.send_frame(unexpected_frame())
            conn.close_soon(CLOSE_TRY_AGAIN, "try again shortly")
            return ws
        conn.last_touch = time.monotonic()
        conn.send_frame({"type": "ready", "user_id": session.user, "scope": scope})
        await session.serve()
    finally:
        session.stop()
        hub.remove(conn)
        if not conn.closing:
            conn.queue.close()
        await _detach(session, node, conn)
        # A close the server started (a flood, a slow reader) finishes its
        # handshake before the handler returns and aiohttp drops the transport.
        await conn.wait_closed()
    return ws


async def _detach(session: ChatSocket, node: int, conn: Connection) -> None:
    try:
        await asyncio.wait_for(
            session.directory.call("user", session.user, "detach", node, conn.id), 5.0
        )
    except Exception as exc:  # the user's actor drops it on its next push anyway
        log.warning("detach of %s failed: %r", session.user, exc)


async def _close_sockets(app: web.Application) -> None:
    await app[HUB].close_all(CLOSE_GOING_AWAY, "server shutdown")


def setup_ws(app: web.Application) -> None:
    """The two socket routes; the app factory made the hub they share."""
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/ws/chat/{match_id}/", websocket)
