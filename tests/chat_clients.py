"""WebSocket clients and match fixtures shared by the chat test modules."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from tests.factories import TestUser, make_user
from tests.waiting import eventually
from unimatch.domain.config import Config
from unimatch.domain.pairs import ordered, pair_id
from unimatch.storage.pg import Database

Frame = dict[str, Any]


class Resender:
    """What a real client sends again while messages go unacked: a send the
    server refused, once the `retry_after` its error named has passed (at once
    when it named none), and any other after `stale_after` seconds without an
    answer. Between sends the caller waits for news on the socket, at most
    until the next send falls due (`next_due`); nothing sleeps."""

    def __init__(self, client: ChatClient, stale_after: float) -> None:
        self.client = client
        self.stale_after = stale_after
        self._errors_seen = 0
        self._retry_at: dict[str | None, float] = {}
        self._tried: dict[str, float] = {}

    def due(self, unacked: list[str]) -> list[str]:
        """The client_msg_ids of `unacked` to send now; noted as sent."""
        now = asyncio.get_running_loop().time()
        errors = self.client.of_type("error")[self._errors_seen:]
        self._errors_seen += len(errors)
        for error in errors:
            self._retry_at[error.get("client_msg_id")] = now + error.get("retry_after", 0.0)
        due = []
        for cmid in unacked:
            retry_at = self._retry_at.get(cmid)
            if retry_at is None:
                retry_at = self._tried.get(cmid, -self.stale_after) + self.stale_after
            if now >= retry_at:
                self._retry_at.pop(cmid, None)
                self._tried[cmid] = now
                due.append(cmid)
        return due

    def next_due(self, unacked: list[str], bound: float = 1.0) -> float:
        """Seconds until one of `unacked` falls due, at most `bound`."""
        now = asyncio.get_running_loop().time()
        times = [
            self._retry_at.get(cmid, self._tried.get(cmid, now) + self.stale_after)
            for cmid in unacked
        ]
        return max(0.001, min([bound, *(t - now for t in times)]))


async def make_match(db: Database, config: Config) -> tuple[TestUser, TestUser, str]:
    """Two users and the open match between them (the row the swipe flow
    writes, keyed by the pair id)."""
    a = await make_user(db, config)
    b = await make_user(db, config)
    user_a, user_b = ordered(a.id, b.id)
    match_id = pair_id(a.id, b.id)
    await db.execute(
        "INSERT INTO matches (id, user_a, user_b) VALUES ($1, $2, $3)", match_id, user_a, user_b
    )
    return a, b, str(match_id)


class ChatClient:
    """A socket plus every frame it received, in arrival order."""

    def __init__(
        self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, url: str = ""
    ):
        self.session = session
        self.ws = ws
        self.url = url
        self.frames: list[Frame] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.close_code: int | None = None
        self.reconnects = 0

    @classmethod
    async def connect(
        cls,
        base_url: str,
        token: str | None,
        path: str = "/ws",
        *,
        wait_ready: bool = True,
        **ws_kwargs: Any,
    ) -> ChatClient:
        session = aiohttp.ClientSession()
        url = base_url + path + (f"?token={token}" if token else "")
        ws = await session.ws_connect(url, **ws_kwargs)
        client = cls(session, ws, url)
        if wait_ready:
            await client.wait_for(lambda f: f["type"] in ("ready", "error"))
            if client.frames[-1]["type"] == "error":
                raise AssertionError(f"socket refused: {client.frames[-1]}")
        return client

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self.frames.append(orjson.loads(msg.data))
                    self._changed.set()
        finally:
            self.close_code = self.ws.close_code
            self._changed.set()

    async def reconnect(self, within: float = 30.0) -> None:
        """A new socket once this one closed (the node holding it died), as a
        real client does: the frames so far are kept; then `sync` from the
        highest seq seen of each match in `cursors` is the caller's."""
        async def connected() -> bool:
            try:
                ws = await self.session.ws_connect(self.url)
            except (aiohttp.ClientError, OSError):
                return False
            self.ws = ws
            self.close_code = None
            self._reader = asyncio.get_running_loop().create_task(self._read())
            return True

        await eventually(connected, within=within)
        self.reconnects += 1
        ready = len(self.of_type("ready"))
        await self.wait_until(lambda: len(self.of_type("ready")) > ready, within=within)

    def cursor(self, match_id: str) -> int:
        """The highest seq this client knows of `match_id` (acks and messages)."""
        seqs = [f["seq"] for f in self.frames
                if f["type"] in ("ack", "message") and f.get("match_id") == match_id]
        return max(seqs, default=0)

    def seqs(self, match_id: str) -> dict[int, str]:
        """seq -> message_id of every message this client knows (its own by
        ack, the other's by message); raises if one seq named two messages."""
        found: dict[int, str] = {}
        for f in self.frames:
            if f["type"] in ("ack", "message") and f.get("match_id") == match_id:
                if found.setdefault(f["seq"], f["message_id"]) != f["message_id"]:
                    raise AssertionError(f"seq {f['seq']} named two messages")
        return found

    async def send(self, frame: Frame) -> None:
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def send_message(self, match_id: str, body: str, client_msg_id: str | None = None) -> str:
        cmid = client_msg_id or uuid.uuid4().hex
        await self.send(
            {"type": "send", "match_id": match_id, "client_msg_id": cmid, "body": body}
        )
        return cmid

    async def wait_until(self, condition: Callable[[], bool], within: float = 15.0) -> None:
        async with asyncio.timeout(within):
            while not condition():
                if self.closed and not condition():
                    raise AssertionError(f"socket closed ({self.close_code}) before condition")
                self._changed.clear()
                await self._changed.wait()

    async def wait_for(self, predicate: Callable[[Frame], bool], within: float = 15.0) -> Frame:
        """The first frame received (ever) matching `predicate`."""
        found: list[Frame] = []

        def check() -> bool:
            found[:] = [f for f in self.frames if predicate(f)][:1]
            return bool(found)

        await self.wait_until(check, within)
        return found[0]

    async def wait_closed(self, within: float = 15.0) -> int | None:
        async with asyncio.timeout(within):
            await asyncio.shield(self._reader)
        return self.close_code

    @property
    def closed(self) -> bool:
        return self._reader.done()

    def of_type(self, kind: str, match_id: str | None = None) -> list[Frame]:
        return [
            f for f in self.frames
            if f["type"] == kind and (match_id is None or f.get("match_id") == match_id)
        ]

    def acks(self) -> dict[str, Frame]:
        return {f["client_msg_id"]: f for f in self.of_type("ack")}

    async def close(self) -> None:
        if not self.ws.closed:
            await self.ws.close()
        await asyncio.wait([self._reader], timeout=5)
        await self.session.close()
