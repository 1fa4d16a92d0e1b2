"""Chat load for fault tests: pairs of users talking as real clients do.

Each member of a pair keeps at most `window` messages unacked; every unacked
message is sent again with its client_msg_id when `Resender` says it is due
(after an error frame, or when it went stale); a socket that closed is
reopened and synced from its cursor. Bounded: each sender sends at most
`max_messages` new messages, and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from tests.chat_clients import ChatClient, Resender
from tests.factories import TestUser
from unimatch.storage.pg import Database


@dataclass
class Sender:
    client: ChatClient
    match_id: str
    tag: str
    sent: list[str] = field(default_factory=list)  # client_msg_ids, in first-send order
    errors_seen: int = 0

    def unacked(self) -> list[str]:
        acked = self.client.acks()
        return [c for c in self.sent if c not in acked]

    def acked(self) -> set[str]:
        return set(self.client.acks())


class ChatLoad:
    def __init__(self, url: str, pairs: list[tuple[TestUser, TestUser, str]], *,
                 window: int = 2, max_messages: int = 2000, stale_after: float = 5.0) -> None:
        self.url = url
        self.pairs = pairs
        self.window = window
        self.max_messages = max_messages
        self.stale_after = stale_after
        self.senders: list[Sender] = []
        self._sending = True  # new messages (resends go on regardless)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._news = asyncio.Event()  # some sender heard from the server

    async def start(self) -> None:
        for k, (a, b, match_id) in enumerate(self.pairs):
            for side, user in (("a", a), ("b", b)):
                client = await ChatClient.connect(self.url, user.token)
                self.senders.append(Sender(client, match_id, f"p{k}{side}-{uuid.uuid4().hex[:6]}"))
        self._tasks = [asyncio.create_task(self._run(s)) for s in self.senders]

    async def _run(self, sender: Sender) -> None:
        client = sender.client
        resender = Resender(client, self.stale_after)
        while not self._stop.is_set():
            if client.closed:
                with contextlib.suppress(AssertionError, aiohttp.ClientError, OSError):
                    await client.reconnect(within=30)
                    cursor = client.cursor(sender.match_id)
                    await client.send({"type": "sync", "cursors": {sender.match_id: cursor}})
                continue
            unacked = sender.unacked()
            if (self._sending and len(unacked) < self.window
                    and len(sender.sent) < self.max_messages):
                cmid = f"{sender.tag}-{len(sender.sent)}"
                sender.sent.append(cmid)
                unacked.append(cmid)
            try:
                for cmid in resender.due(unacked):
                    await client.send_message(sender.match_id, f"body of {cmid}", cmid)
            except (ConnectionError, aiohttp.ClientError):
                continue
            seen = len(client.frames)
            with contextlib.suppress(TimeoutError, AssertionError):
                await client.wait_until(
                    lambda: len(client.frames) > seen or self._stop.is_set(),  # noqa: B023
                    within=resender.next_due(unacked),
                )
            self._news.set()

    async def _until(self, condition: Callable[[], bool], within: float) -> None:
        async with asyncio.timeout(within):
            while not condition():
                self._news.clear()
                await self._news.wait()

    # What the test reads --------------------------------------------------

    def acked_total(self) -> int:
        return sum(len(s.acked()) for s in self.senders)

    def acked_ids(self) -> set[str]:
        return set().union(*(s.acked() for s in self.senders))

    def errors_since(self, marks: list[int]) -> list[list[dict]]:
        """Per sender, the error frames received after `marks` (from `error_marks`)."""
        return [s.client.of_type("error")[m:] for s, m in zip(self.senders, marks, strict=True)]

    def error_marks(self) -> list[int]:
        return [len(s.client.of_type("error")) for s in self.senders]

    def ack_marks(self) -> list[int]:
        return [len(s.acked()) for s in self.senders]

    async def each_acked_more(self, marks: list[int], more: int, within: float) -> None:
        """Every sender got `more` acks beyond `marks` (from `ack_marks`)."""
        await self._until(lambda: all(
            len(s.acked()) >= m + more for s, m in zip(self.senders, marks, strict=True)
        ), within)

    async def settle(self, within: float) -> None:
        """No new messages; every message ever sent is acked."""
        self._sending = False
        await self._until(lambda: not any(s.unacked() for s in self.senders), within)

    async def close(self) -> None:
        self._stop.set()
        for s in self.senders:
            s.client._changed.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for s in self.senders:
            await s.client.close()

    # What the database says -----------------------------------------------

    async def assert_stored_exactly_once(self, db: Database) -> int:
        """Every message sent is stored once, under the seq and id its ack
        named; each match's seqs are 1..n with no gap. The row count."""
        total = 0
        for match_id in {s.match_id for s in self.senders}:
            rows = await db.fetch(
                "SELECT seq, client_msg_id, id FROM messages WHERE match_id = $1 ORDER BY seq",
                uuid.UUID(match_id),
            )
            assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1)), "seq gap"
            stored = {r["client_msg_id"]: (r["seq"], str(r["id"])) for r in rows}
            assert len(stored) == len(rows), "a client_msg_id stored twice"
            members = [s for s in self.senders if s.match_id == match_id]
            assert set(stored) == {c for s in members for c in s.sent}
            for s in members:
                for cmid, ack in s.client.acks().items():
                    assert stored[cmid] == (ack["seq"], ack["message_id"]), cmid
                for ack in s.client.of_type("ack"):  # every ack of a resend agrees
                    assert stored[ack["client_msg_id"]][0] == ack["seq"]
            total += len(rows)
        return total
