"""The sockets one gateway holds, and how pushed frames reach them.

`SocketHub.deliver(batch)` is what the gateway actor's `push` runs: it never
awaits a client, it only queues encoded frames on each socket's bounded send
queue (`sendqueue.SendQueue`), so one slow client cannot hold up the batch.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from typing import Any

from aiohttp import web

from unimatch.actors.user import CLOSE_FRAME
from unimatch.config import Config
from unimatch.metrics import (
    WS_CLOSED,
    WS_CONNECTIONS,
    WS_PENDING_SENDS,
    WS_SENDS_SHED,
    WS_SLOW_CLOSED,
)
from unimatch.ws.codec import encode
from unimatch.ws.errors import CLOSE_GOING_AWAY, CLOSE_RATE_LIMITED
from unimatch.ws.sendqueue import SendQueue

log = logging.getLogger("unimatch.ws")

# A close frame a non-reading client never lets through is given this long
# before the transport is dropped.
CLOSE_GRACE = 10.0


# Live seqs remembered per match and socket; a sync skips these.
LIVE_SEQ_MEMORY = 256


class Connection:
    """One authenticated socket: its user, its scope, its send queue, and
    the sync in progress (live messages of matches being replayed wait here
    so the client gets each seq once, in order)."""

    __slots__ = (
        "_close_task",
        "closing",
        "holding",
        "id",
        "last_touch",
        "live_seqs",
        "queue",
        "scope",
        "user_id",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        user_id: uuid.UUID,
        scope: str | None,
        queue_limit: int,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.ws = ws
        self.user_id = user_id
        self.scope = scope
        self.closing = False
        self.holding: dict[str, list[tuple[int, bytes]]] | None = None
        # Seqs this socket got live, per match, so a later sync does not send
        # them again (a live frame and a sync request can cross on the wire).
        # Made on first use: an idle socket carries none.
        self.live_seqs: dict[str, set[int]] | None = None
        self.last_touch = 0.0
        self._close_task: asyncio.Task[None] | None = None
        self.queue = SendQueue(ws, queue_limit, self._overflow)

    def send(self, data: bytes) -> bool:
        return self.queue.put(data)

    def send_frame(self, frame: dict[str, Any]) -> bool:
        return self.queue.put(encode(frame))

    def deliver(self, frame: dict[str, Any], data: bytes) -> bool:
        """A frame pushed by an actor. False when this socket is gone."""
        if self.closing:
            return False
        kind = frame.get("type")
        if kind == CLOSE_FRAME:
            code = int(frame.get("code", CLOSE_GOING_AWAY))
            self.close_soon(code, str(frame.get("reason", "")), flush=True)
            return True
        match_id = frame.get("match_id")
        if self.scope is not None and match_id is not None and match_id != self.scope:
            return True  # another match: not for this scoped socket
        if kind == "message":
            if self.holding is not None and match_id in self.holding:
                self.holding[match_id].append((frame["seq"], data))
                return True
            self.remember_live(str(match_id), frame["seq"])
        return self.queue.put(data)

    def remember_live(self, match_id: str, seq: int) -> None:
        if self.live_seqs is None:
            self.live_seqs = {}
        seen = self.live_seqs.setdefault(match_id, set())
        if len(seen) >= LIVE_SEQ_MEMORY:
            seen.discard(min(seen))
        seen.add(seq)

    def _overflow(self) -> None:
        if not self.closing:
            WS_SLOW_CLOSED.labels("send_queue_full").inc()
            log.info("closing slow socket %s of %s (send queue full)", self.id, self.user_id)
            self.close_soon(CLOSE_RATE_LIMITED, "too slow to read")

    def close_soon(self, code: int, reason: str, *, flush: bool = False) -> None:
        """Close with `code`. Without `flush` (a client too slow to read)
        queued frames are dropped and the close frame goes next; with it,
        what is queued (say, the error frames that explain the close) is
        written first, for a while."""
        if self.closing:
            return
        self.closing = True
        if not flush:
            self.queue.close()
        self._close_task = asyncio.get_running_loop().create_task(
            self._close(code, reason, flush)
        )

    async def _close(self, code: int, reason: str, flush: bool) -> None:
        WS_CLOSED.labels(str(code)).inc()
        if flush:
            try:
                await asyncio.wait_for(self.queue.drained(), CLOSE_GRACE)
            except TimeoutError:
                pass
            self.queue.close()
        try:
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode()[:120]), CLOSE_GRACE
            )
        except (TimeoutError, ConnectionError, RuntimeError):
            pass  # aiohttp closes the transport on a close that times out


# A push target meaning "every socket of this user here" (else a connection id).
USER_TARGET = "user:"


def user_target(user_id: object) -> str:
    return f"{USER_TARGET}{user_id}"


class SocketHub:
    """Every socket of this gateway by connection id and by user."""

    def __init__(self, gateway_id: str, config: Config) -> None:
        self.gateway_id = gateway_id
        self.config = config
        self.connections: dict[str, Connection] = {}
        self.by_user: dict[str, set[str]] = defaultdict(set)
        self.chat_buckets: dict[str, TokenBucket] = {}
        # Sends of every socket here, queued or at an actor, not answered yet.
        self.pending_sends = 0

    def admit_send(self) -> bool:
        """Count one more pending send, unless the gateway holds its limit
        already: then the caller sheds it (answers `overloaded`)."""
        if self.pending_sends >= self.config.ws_max_pending_sends:
            WS_SENDS_SHED.inc()
            return False
        self.pending_sends += 1
        WS_PENDING_SENDS.inc()
        return True

    def send_done(self, count: int = 1) -> None:
        self.pending_sends -= count
        WS_PENDING_SENDS.dec(count)

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        self.by_user[str(conn.user_id)].add(conn.id)
        WS_CONNECTIONS.inc()

    def remove(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is None:
            return
        WS_CONNECTIONS.dec()
        user = str(conn.user_id)
        ids = self.by_user.get(user)
        if ids is not None:
            ids.discard(conn.id)
            if not ids:
                del self.by_user[user]
                self.chat_buckets.pop(user, None)

    def deliver(self, batch: list[tuple[str, dict[str, Any]]]) -> list[bool]:
        """Queue each (target, frame) on its sockets, in order; per pair,
        whether a socket here took it. A target is a connection id, or
        `user_target(user_id)` for every socket of that user on this gateway.
        Never waits on a client."""
        results = []
        encoded: dict[int, bytes] = {}  # a frame fanned out to many sockets is encoded once
        for target, frame in batch:
            if target.startswith(USER_TARGET):
                conn_ids = list(self.by_user.get(target[len(USER_TARGET):], ()))
            else:
                conn_ids = [target]
            reached = False
            for conn_id in conn_ids:
                conn = self.connections.get(conn_id)
                if conn is None:
                    continue
                key = id(frame)
                data = encoded.get(key)
                if data is None:
                    data = encoded[key] = encode(frame)
                reached = conn.deliver(frame, data) or reached
            results.append(reached)
        return results

    def sockets_of(self, user_ids: list[str]) -> dict[str, list[str]]:
        return {u: sorted(self.by_user.get(u, ())) for u in user_ids}

    def chat_bucket(self, user_id: str) -> TokenBucket:
        bucket = self.chat_buckets.get(user_id)
        if bucket is None:
            bucket = self.chat_buckets[user_id] = TokenBucket(
                self.config.limit_chat_burst, self.config.limit_chat_per_second
            )
        return bucket

    async def close_all(
        self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutdown"
    ) -> None:
        conns = list(self.connections.values())
        for conn in conns:
            conn.close_soon(code, reason)
        tasks = [c._close_task for c in conns if c._close_task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_GRACE)


class TokenBucket:
    """`burst` events at once, refilled at `rate` a second.

    The chat limit is enforced here, in the gateway, rather than with the
    Redis limiter: a send is the hot path, and a Redis round trip per message
    would cost the gateway's single event loop more than the send itself. A
    user's sockets share one bucket per gateway (one gateway per node holds
    them in practice); with several gateways a user could get one bucket on
    each, which bounds the worst case at `gateways` times the limit."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = float(burst)
        self.rate = float(rate)
        self.tokens = float(burst)
        self.stamp = asyncio.get_running_loop().time()

    def take(self) -> float:
        """0.0 when one event may pass (and spends it), else seconds to wait."""
        now = asyncio.get_running_loop().time()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else 60.0


HUB = web.AppKey("hub", SocketHub)
