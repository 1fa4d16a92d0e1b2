"""Chat inside a match's actor: order, durability, fan-out, receipts.

`ChatLog` is the chat half of `MatchActor`. The actor's serial mailbox makes
it the single writer of its match: a `send` assigns `last_seq + 1`, waits for
the row to commit, and only then advances `last_seq` and answers (the ack).
A commit that fails or finds the match ended leaves `last_seq` where it was,
so seq stays gap-free; a failure whose outcome is unknown reloads `last_seq`
from PostgreSQL before the next send.

`MessageCommitter` is one per shard host: the sends of every match on the
host that wait at the same time share one transaction (group commit). While
a commit is in flight, new sends collect and go together in the next one, so
an idle host commits each message at once and a busy host commits many per
round trip.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from unimatch.actors.base import Services
from unimatch.actors.batching import TickBatcher
from unimatch.actors.push import pusher_of
from unimatch.errors import Forbidden, NotFound, Unavailable, ValidationFailed
from unimatch.metrics import CHAT_COMMIT_BATCH, MESSAGES
from unimatch.storage import messages as sql
from unimatch.storage.cache import match_list_key, notifications_key
from unimatch.storage.notifications import add_notification

log = logging.getLogger("unimatch.chat")

MAX_BODY = 2000
MAX_CLIENT_MSG_ID = 100
# Concurrent group commits per host: more overlap commit latency, fewer merge
# more messages per transaction. Two keep the ack's wait near one commit while
# each round trip carries what collected meanwhile; eight made a loaded host
# commit one message per round trip, and run out of CPU sooner.
COMMITS_IN_FLIGHT = 2
# Resent client_msg_ids answered from memory; older ones from the database.
# Kept as tuples of strings and ints, which the garbage collector does not
# track: a host holds this many for each of thousands of matches.
RECENT_ACKS = 64
# One "new message" notification per match and recipient per quiet period.
NOTIFY_QUIET_SECONDS = 600
COMMITTER = "chat_committer"
_ALLOWED_CONTROLS = {"\n", "\t"}


def clean_body(body: Any) -> str:
    """The body as stored: trimmed, 1-2,000 characters, no control
    characters but newline and tab. Raises `ValidationFailed`."""
    if not isinstance(body, str):
        raise ValidationFailed({"body": ["must be a string"]})
    body = body.strip()
    if not body:
        raise ValidationFailed({"body": ["may not be empty"]})
    if len(body) > MAX_BODY:
        raise ValidationFailed({"body": [f"at most {MAX_BODY} characters"]})
    if not body.isprintable():
        for ch in body:
            if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) == "Cc":
                raise ValidationFailed({"body": ["control characters are not allowed"]})
    return body


def check_client_msg_id(client_msg_id: Any) -> str:
    if not isinstance(client_msg_id, str) or not 1 <= len(client_msg_id) <= MAX_CLIENT_MSG_ID:
        raise ValidationFailed(
            {"client_msg_id": [f"must be a string of 1 to {MAX_CLIENT_MSG_ID} characters"]}
        )
    return client_msg_id


@dataclass(frozen=True)
class PendingMessage:
    match_id: uuid.UUID
    seq: int
    sender_id: uuid.UUID
    body: str
    client_msg_id: str
    recipient_id: uuid.UUID

    @property
    def key(self) -> tuple[uuid.UUID, uuid.UUID, str]:
        return (self.match_id, self.sender_id, self.client_msg_id)


@dataclass(frozen=True)
class CommitOutcome:
    """`row` is the stored message: this one (`inserted`), or the original
    of a resent client_msg_id. No row: the match is not open."""

    row: dict[str, Any] | None
    inserted: bool


class MessageCommitter:
    """Group commit of chat messages for one shard host."""

    def __init__(self, services: Services, *, in_flight: int = COMMITS_IN_FLIGHT) -> None:
        self.db = services.db
        self.cache = services.cache
        self._batcher = TickBatcher[PendingMessage, CommitOutcome](
            self._commit_batch, max_in_flight=in_flight
        )
        self._tasks: set[asyncio.Task[None]] = set()

    async def commit(self, message: PendingMessage) -> CommitOutcome:
        """Returns once the row is committed (or found already stored)."""
        return await self._batcher.submit(message)

    async def _commit_batch(self, items: list[PendingMessage]) -> list[CommitOutcome | Exception]:
        CHAT_COMMIT_BATCH.observe(len(items))
        try:
            # One INSERT statement is its own transaction: no BEGIN/COMMIT
            # round trips on the ack's path.
            async with self.db.connection() as conn:
                outcomes = await self._insert(conn, items)
        except (asyncpg.PostgresError, Unavailable) as exc:
            if len(items) == 1:
                return [exc]
            # One bad row must not fail its neighbours: commit them one by one.
            log.warning("group commit of %d failed (%r); committing singly", len(items), exc)
            return list(await asyncio.gather(*(self._commit_one(i) for i in items)))
        self._after_commit(items, outcomes)
        return list(outcomes)

    async def _commit_one(self, item: PendingMessage) -> CommitOutcome | Exception:
        try:
            async with self.db.connection() as conn:
                (outcome,) = await self._insert(conn, [item])
        except (asyncpg.PostgresError, Unavailable) as exc:
            return exc
        self._after_commit([item], [outcome])
        return outcome

    @staticmethod
    async def _insert(conn: asyncpg.Connection, items: list[PendingMessage]) -> list[CommitOutcome]:
        rows = await conn.fetch(
            sql.INSERT_BATCH,
            [i.match_id for i in items],
            [i.seq for i in items],
            [i.sender_id for i in items],
            [i.body for i in items],
            [i.client_msg_id for i in items],
        )
        stored = {(r["match_id"], r["sender_id"], r["client_msg_id"]): dict(r) for r in rows}
        missing = [i for i in items if i.key not in stored]
        originals: dict[tuple[uuid.UUID, uuid.UUID, str], dict[str, Any]] = {}
        if missing:
            found = await conn.fetch(
                sql.FIND_EXISTING,
                [i.match_id for i in missing],
                [i.sender_id for i in missing],
                [i.client_msg_id for i in missing],
            )
            originals = {
                (r["match_id"], r["sender_id"], r["client_msg_id"]): dict(r) for r in found
            }
        outcomes = []
        for item in items:
            if item.key in stored:
                outcomes.append(CommitOutcome(stored[item.key], inserted=True))
            else:
                outcomes.append(CommitOutcome(originals.get(item.key), inserted=False))
        return outcomes

    def _after_commit(self, items: list[PendingMessage], outcomes: list[CommitOutcome]) -> None:
        inserted = sum(1 for o in outcomes if o.inserted)
        if inserted:
            MESSAGES.inc(inserted)
        # Both members' match lists show the last message: clear them, in one
        # round trip for the whole batch, off the ack's path.
        users = {
            u
            for i, o in zip(items, outcomes, strict=True)
            if o.inserted
            for u in (i.sender_id, i.recipient_id)
        }
        if users:
            task = asyncio.get_running_loop().create_task(
                self.cache.delete(*(match_list_key(u) for u in users))
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


def committer_of(services: Services) -> MessageCommitter:
    """The host's committer (`services` is shared by every actor of a host)."""
    committer = services.extras.get(COMMITTER)
    if committer is None:
        committer = services.extras[COMMITTER] = MessageCommitter(services)
    return committer


class ChatLog:
    """The chat state of one match, owned by its `MatchActor`.

    Not thread-safe and not reentrant: the owning actor's mailbox calls one
    method at a time, which is what makes seq assignment race-free."""

    def __init__(self, match_id: str, services: Services) -> None:
        self.match_id = uuid.UUID(match_id)
        self.services = services
        self.members: tuple[uuid.UUID, uuid.UUID] | None = None
        self.active = False
        self.last_seq = 0
        self._loaded = False
        # (sender, client_msg_id) -> (seq, message_id, created_at)
        self._recent: OrderedDict[tuple[str, str], tuple[int, str, str]] = OrderedDict()
        self._outbox: list[
            tuple[tuple[uuid.UUID, ...], dict[str, Any], uuid.UUID | None]
        ] = []
        self._courier: asyncio.Task[None] | None = None

    # -- state ---------------------------------------------------------------

    async def load(self) -> None:
        row = await self.services.db.fetchrow(sql.LOAD_CHAT, self.match_id)
        if row is None:
            self.members, self.active, self.last_seq = None, False, 0
        else:
            self.members = (row["user_a"], row["user_b"])
            self.active = row["active"]
            self.last_seq = row["last_seq"]
        self._loaded = True

    async def _member(self, user_id: uuid.UUID, *, open_only: bool) -> uuid.UUID:
        """The other member; reloads when the cached state says no, since the
        match may have been created (or the state lost) since."""
        if not self._loaded or self.members is None or (open_only and not self.active):
            await self.load()
        if self.members is None or user_id not in self.members:
            raise NotFound("no such match", code="not_found")
        if open_only and not self.active:
            raise Forbidden("this match has ended", code="match_ended")
        a, b = self.members
        return b if user_id == a else a

    # -- send ----------------------------------------------------------------

    async def send(self, sender_id: uuid.UUID, client_msg_id: str, body: str) -> dict[str, Any]:
        """Store a message and return its ack once committed; then deliver it
        to every socket of both members. Idempotent per (sender,
        client_msg_id): a resend returns the original ack, never a new row."""
        client_msg_id = check_client_msg_id(client_msg_id)
        body = clean_body(body)
        key = (str(sender_id), client_msg_id)
        recent = self._recent.get(key)
        if recent is not None:
            return self._ack(client_msg_id, *recent)
        recipient = await self._member(sender_id, open_only=True)
        pending = PendingMessage(
            self.match_id, self.last_seq + 1, sender_id, body, client_msg_id, recipient
        )
        try:
            outcome = await committer_of(self.services).commit(pending)
        except Exception as exc:
            # Maybe committed, maybe not: learn the truth before the next seq.
            self._loaded = False
            log.warning("commit failed for match %s: %r", self.match_id, exc)
            raise Unavailable(
                "message not stored; send it again", code="service_unavailable"
            ) from exc
        if outcome.row is None:
            self.active = False
            raise Forbidden("this match has ended", code="match_ended")
        row = outcome.row
        if outcome.inserted:
            self.last_seq = pending.seq
        stored = (row["seq"], str(row["id"]), row["created_at"].isoformat())
        self._remember(key, stored)
        ack = self._ack(client_msg_id, *stored)
        # A resend found in the database (not in memory) may be one whose
        # delivery died with a host: deliver it again (clients dedupe by seq).
        self._post((sender_id, recipient), sql.message_frame(row), notify_if_offline=recipient)
        return ack

    def _ack(
        self, client_msg_id: str, seq: int, message_id: str, created_at: str
    ) -> dict[str, Any]:
        return {
            "type": "ack",
            "client_msg_id": client_msg_id,
            "match_id": str(self.match_id),
            "seq": seq,
            "message_id": message_id,
            "created_at": created_at,
        }

    def _remember(self, key: tuple[str, str], stored: tuple[int, str, str]) -> None:
        self._recent[key] = stored
        if len(self._recent) > RECENT_ACKS:
            self._recent.popitem(last=False)

    # -- delivery ------------------------------------------------------------

    def _post(
        self,
        users: tuple[uuid.UUID, ...],
        frame: dict[str, Any],
        notify_if_offline: uuid.UUID | None = None,
    ) -> None:
        """Queue a frame for `users`. One courier per match sends the queue
        in order, everything that collected meanwhile in one push per user:
        remote calls to an async actor may run out of order, so the next push
        leaves only when the previous one has been handled."""
        self._outbox.append((users, frame, notify_if_offline))
        if self._courier is None or self._courier.done():
            self._courier = asyncio.get_running_loop().create_task(self._carry())

    async def _carry(self) -> None:
        pusher = pusher_of(self.services)
        while self._outbox:
            batch, self._outbox = self._outbox, []
            per_user: dict[str, list[dict[str, Any]]] = {}
            for users, frame, _ in batch:
                for user in users:
                    per_user.setdefault(str(user), []).append(frame)
            try:
                reached = await pusher.push_to_users(per_user)
            except Exception as exc:
                # The recipients' cursors fill the gap (sync, history).
                log.warning("push for match %s failed: %r", self.match_id, exc)
                continue
            notified: set[uuid.UUID] = set()
            for _, frame, offline in batch:
                if offline is not None and offline not in notified and not reached[str(offline)]:
                    notified.add(offline)
                    try:
                        await self._notify_offline(offline, frame)
                    except Exception as exc:
                        log.warning("notification for %s failed: %r", offline, exc)

    async def _notify_offline(self, user_id: uuid.UUID, frame: dict[str, Any]) -> None:
        """One notification per match per quiet period for a user with no
        socket open. Fails open: without Redis, every such message notifies."""
        cache = self.services.cache
        key = cache.key(f"chat_notified:{self.match_id}:{user_id}")
        try:
            first = await cache.client.set(key, 1, nx=True, ex=NOTIFY_QUIET_SECONDS)
        except (RedisError, OSError) as exc:
            log.warning("notification throttle unavailable: %r", exc)
            first = True
        if not first:
            return
        payload = {
            "match_id": frame["match_id"],
            "sender_id": frame["sender_id"],
            "seq": frame["seq"],
            "preview": frame["body"][:80],
        }
        async with self.services.db.transaction() as conn:
            await add_notification(conn, user_id, "message", payload)
        await cache.delete(notifications_key(user_id))

    # -- receipts and typing -------------------------------------------------

    async def mark(self, user_id: uuid.UUID, seq: int, status: str) -> int:
        """Mark the other member's messages up to `seq` delivered or read and
        send a `receipt` to both members when anything changed. Returns the
        seq marked (clamped to the last message). Idempotent."""
        if status not in ("delivered", "read"):
            raise ValidationFailed({"status": ["must be delivered or read"]})
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValidationFailed({"seq": ["must be a non-negative integer"]})
        other = await self._member(user_id, open_only=False)
        if seq > self.last_seq:
            self.last_seq = await self.services.db.fetchval(sql.LAST_SEQ, self.match_id)
        seq = min(seq, self.last_seq)
        if seq < 1:
            return 0
        query = sql.MARK_READ if status == "read" else sql.MARK_DELIVERED
        result = await self.services.db.execute(query, self.match_id, user_id, seq)
        if result.endswith(" 0"):
            return seq
        frame = {
            "type": "receipt",
            "match_id": str(self.match_id),
            "seq": seq,
            "status": status,
            "user_id": str(user_id),
        }
        self._post((other, user_id), frame)
        return seq

    async def typing(self, user_id: uuid.UUID, state: bool) -> None:
        """Relay a typing indicator to the other member; nothing is stored."""
        other = await self._member(user_id, open_only=True)
        frame = {
            "type": "typing",
            "match_id": str(self.match_id),
            "user_id": str(user_id),
            "state": bool(state),
        }
        self._post((other,), frame)

    async def drain(self) -> None:
        """Wait for deliveries still running (on passivation)."""
        if self._courier is not None and not self._courier.done():
            await asyncio.wait([self._courier], timeout=5.0)
