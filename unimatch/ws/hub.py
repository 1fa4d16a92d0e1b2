"""The sockets one node holds, and how pushed frames reach them.

`SocketHub.deliver(batch)` is what a push to this node runs (in-process or
from another node over Ray): it never awaits a client, it only queues encoded
frames on each socket's bounded send queue (`sendqueue.SendQueue`), so one
slow client cannot hold up the batch.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from typing import Any

from aiohttp import web

from unimatch.actors.user import CLOSE_FRAME
from unimatch.domain.closes import CLOSE_GOING_AWAY, CLOSE_RATE_LIMITED
from unimatch.domain.config import Config
from unimatch.domain.metrics import (
    WS_CLOSED,
    WS_CONNECTIONS,
    WS_PENDING_SENDS,
    WS_SENDS_SHED,
    WS_SLOW_CLOSED,
)
from unimatch.storage import messages as messages_sql
from unimatch.storage.pg import Database
from unimatch.ws.codec import encode
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
        "ended",
        "family",
        "holding",
        "id",
        "last_touch",
        "live_seqs",
        "matches",
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
        # The user's open matches: frames naming another match are refused
        # without waking an actor. Kept current by `match` / `unmatch` frames.
        self.matches: set[uuid.UUID] = set()
        self.ended: set[uuid.UUID] = set()
        # The session (refresh-token family) of the token the socket holds.
        self.family: str | None = None
        self._close_task: asyncio.Task[None] | None = None
        self.queue = SendQueue(ws, queue_limit, self._overflow)

    async def load_matches(self, db: Database) -> None:
        rows = await db.fetch(messages_sql.MATCHES_OF, self.user_id)
        self.matches = {row["id"] for row in rows if row["open"]}
        self.ended = {row["id"] for row in rows if not row["open"]}

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
            family, keep = frame.get("family"), frame.get("keep_family")
            if (family is not None and family != self.family) or (
                keep is not None and keep == self.family
            ):
                return True  # a close for another session of the user
            code = int(frame.get("code", CLOSE_GOING_AWAY))
            self.close_soon(code, str(frame.get("reason", "")), flush=True)
            return True
        match_id = frame.get("match_id")
        if kind == "match":
            self.matches.add(uuid.UUID(match_id))
        elif kind == "unmatch":
            self.matches.discard(uuid.UUID(match_id))
            self.ended.add(uuid.UUID(match_id))
        if self.scope is not None and match_id is not None and match_id != self.scope:
            return True  # another match: not for this scoped socket
        if kind == "message":
            if self.holding is not None and match_id in self.holding:
                self.holding[match_id].append((frame["seq"], data))
                return True
            if not self.remember_live(str(match_id), frame["seq"]):
                return True  # this socket has that seq already: once is enough
        return self.queue.put(data)

    def remember_live(self, match_id: str, seq: int) -> bool:
        """Note that this socket got `seq` of `match_id`; False when it had
        it already (a re-delivery after a resend, a sync or a failover). The
        memory is bounded: below the oldest seq remembered counts as had."""
        if self.live_seqs is None:
            self.live_seqs = {}
        seen = self.live_seqs.setdefault(match_id, set())
        if seq in seen or (len(seen) >= LIVE_SEQ_MEMORY and seq < min(seen)):
            return False
        if len(seen) >= LIVE_SEQ_MEMORY:
            seen.discard(min(seen))
        seen.add(seq)
        return True

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

    async def wait_closed(self) -> None:
        """The close this side started, if any, has run (bounded by its grace)."""
        if self._close_task is not None:
            await asyncio.wait([self._close_task], timeout=2 * CLOSE_GRACE)

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


class SocketHub:
    """Every socket of this node by connection id and by user."""

    def __init__(self, node_index: int, config: Config) -> None:
        self.node_index = node_index
        self.config = config
        self.connections: dict[str, Connection] = {}
        self.by_user: dict[str, set[str]] = defaultdict(set)
        self.chat_buckets: dict[str, TokenBucket] = {}
        # Sends of every socket here, queued or at an actor, not answered yet.
        self.pending_sends = 0

    def admit_send(self) -> bool:
        """Count one more pending send, unless the node holds its limit
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
        """Queue each (connection_id, frame) on its socket, in order; per
        pair, whether that socket is here. Never waits on a client."""
        results = []
        encoded: dict[int, bytes] = {}  # a frame fanned out to many sockets is encoded once
        for conn_id, frame in batch:
            conn = self.connections.get(conn_id)
            if conn is None:
                results.append(False)
                continue
            key = id(frame)
            data = encoded.get(key)
            if data is None:
                data = encoded[key] = encode(frame)
            results.append(conn.deliver(frame, data))
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

    The chat limit is enforced here, in the node that holds the socket,
    rather than with the Redis limiter: a send is the hot path, and a Redis
    round trip per message would cost the node's single event loop more than
    the send itself. A user's sockets share one bucket per node; with
    sockets on several nodes a user could get one bucket on each, which
    bounds the worst case at `nodes` times the limit."""

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
