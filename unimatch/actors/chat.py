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
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from unimatch.actors.base import ActorContext, Services
from unimatch.actors.batching import TickBatcher
from unimatch.domain.errors import Forbidden, NotFound, Unavailable, ValidationFailed
from unimatch.domain.metrics import CHAT_COMMIT_BATCH, MESSAGES
from unimatch.storage import messages as sql
from unimatch.storage.cache import Cache, match_list_key, notifications_key
from unimatch.storage.notifications import add_notification
from unimatch.storage.pg import Database

log = logging.getLogger("unimatch.chat")

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

    def __init__(self, db: Database, cache: Cache, *, in_flight: int = COMMITS_IN_FLIGHT) -> None:
        self.db = db
        self.cache = cache
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


class Courier:
    """Carries one match's frames to its members' actors, in order.

    One courier per match sends its queue one batch at a time, everything
    that collected meanwhile in one push per user: calls may otherwise
    overtake each other, and both users must see one order. It runs beside
    the match's mailbox (`ActorContext.spawn`) and touches no actor state,
    only its own queue."""

    def __init__(self, match_id: uuid.UUID, services: Services, context: ActorContext) -> None:
        self.match_id = match_id
        self.services = services
        self.context = context
        # (users, frame, connection to skip, user to notify when offline)
        self._queue: list[tuple[tuple[uuid.UUID, ...], dict[str, Any], str | None,
                                uuid.UUID | None]] = []
        self._running = False

    def post(
        self,
        users: tuple[uuid.UUID, ...],
        frame: dict[str, Any],
        *,
        skip: str | None = None,
        notify_if_offline: uuid.UUID | None = None,
    ) -> None:
        self._queue.append((users, frame, skip, notify_if_offline))
        if not self._running:
            self._running = True
            self.context.spawn(self._carry())

    async def _carry(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._deliver(batch)
        finally:
            self._running = False

    async def _deliver(self, batch: list[Any]) -> None:
        # Per user, the frames in order, and the socket that must not get them
        # (the sender's own, which got the ack); a skip applies to its frame
        # only, so frames with different skips go in separate pushes.
        pushes: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
        for users, frame, skip, _ in batch:
            for user in users:
                pushes.setdefault((str(user), skip), []).append(frame)
        actors = self.services.actors
        keys = list(pushes)
        results = await asyncio.gather(
            *(actors.call("user", user, "push", pushes[(user, skip)], skip)
              for user, skip in keys),
            return_exceptions=True,
        )
        reached: dict[str, bool] = {}
        for (user, _), result in zip(keys, results, strict=True):
            if isinstance(result, BaseException):
                # The recipient's cursor fills the gap (sync, history).
                log.warning("push for match %s to %s failed: %r", self.match_id, user, result)
                reached[user] = True  # unknown: do not notify on a guess
            else:
                reached[user] = reached.get(user, False) or result > 0
        notified: set[uuid.UUID] = set()
        for _, frame, _, offline in batch:
            if offline is not None and offline not in notified and not reached.get(str(offline)):
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


class ChatLog:
    """The chat state of one match, owned by its `MatchActor`.

    Not thread-safe and not reentrant: the owning actor's mailbox calls one
    method at a time, which is what makes seq assignment race-free."""

    def __init__(self, match_id: str, services: Services, context: ActorContext) -> None:
        self.match_id = uuid.UUID(match_id)
        self.services = services
        self.members: tuple[uuid.UUID, uuid.UUID] | None = None
        self.active = False
        self.last_seq = 0
        self._loaded = False
        # (sender, client_msg_id) -> (seq, message_id, created_at)
        self._recent: OrderedDict[tuple[str, str], tuple[int, str, str]] = OrderedDict()
        self.courier = Courier(self.match_id, services, context)

    # -- state ---------------------------------------------------------------

    @property
    def exists(self) -> bool:
        """False once loading found no such match."""
        return not self._loaded or self.members is not None

    async def load(self) -> None:
        row = await self.services.db.fetchrow(sql.LOAD_CHAT, self.match_id)
        if row is None:
            self.members, self.active, self.last_seq = None, False, 0
        else:
            self.members = (row["user_a"], row["user_b"])
            self.active = row["active"]
            self.last_seq = row["last_seq"]
        self._loaded = True

    def end(self) -> None:
        """The match ended (unmatch, block, moderation): the chat is closed,
        and what it remembered goes with it."""
        self.active = False
        self._recent.clear()

    async def _member(self, user_id: uuid.UUID) -> uuid.UUID:
        """The other member of an open match; reloads when the cached state
        says no, since the match may have been created since."""
        if not self._loaded or self.members is None or not self.active:
            await self.load()
        if self.members is None or user_id not in self.members:
            raise NotFound("no such match", code="not_found")
        if not self.active:
            raise Forbidden("this match has ended", code="match_ended")
        a, b = self.members
        return b if user_id == a else a

    # -- send ----------------------------------------------------------------

    async def send(
        self, sender_id: uuid.UUID, client_msg_id: str, body: str, origin: str | None = None
    ) -> dict[str, Any]:
        """Store a message and return its ack once committed; then deliver it
        as `message` to every socket of both members but `origin` (the
        connection that sent it, which gets the ack). Idempotent per (sender,
        client_msg_id): a resend returns the original ack, never a new row.
        The body and client_msg_id were checked at the edge
        (unimatch.schemas.text, unimatch.schemas.frames)."""
        key = (str(sender_id), client_msg_id)
        recent = self._recent.get(key)
        if recent is not None:
            return self._ack(client_msg_id, *recent)
        recipient = await self._member(sender_id)
        pending = PendingMessage(
            self.match_id, self.last_seq + 1, sender_id, body, client_msg_id, recipient
        )
        try:
            outcome = await self.services.committer.commit(pending)
        except Exception as exc:
            # Maybe committed, maybe not: learn the truth before the next seq.
            self._loaded = False
            log.warning("commit failed for match %s: %r", self.match_id, exc)
            raise Unavailable(
                "message not stored; send it again", code="service_unavailable"
            ) from exc
        if outcome.row is None:
            self.end()
            raise Forbidden("this match has ended", code="match_ended")
        row = outcome.row
        if outcome.inserted:
            self.last_seq = pending.seq
        stored = (row["seq"], str(row["id"]), row["created_at"].isoformat())
        self._remember(key, stored)
        ack = self._ack(client_msg_id, *stored)
        # A resend found in the database (not in memory) may be one whose
        # delivery died with a node: deliver it again (sockets drop a seq
        # they already have).
        self.courier.post((sender_id, recipient), sql.message_frame(row), skip=origin,
                          notify_if_offline=recipient)
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

    # -- receipts and typing -------------------------------------------------

    async def mark(self, user_id: uuid.UUID, seq: int, status: str) -> int:
        """Mark the other member's messages up to `seq` delivered or read and
        send a `receipt` to both members when anything changed. Returns the
        seq marked (clamped to the last message). Idempotent. Refused once
        the match has ended."""
        if status not in ("delivered", "read"):
            raise ValidationFailed({"status": ["must be delivered or read"]})
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValidationFailed({"seq": ["must be a non-negative integer"]})
        other = await self._member(user_id)
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
        self.courier.post((other, user_id), frame)
        return seq

    async def typing(self, user_id: uuid.UUID, state: bool) -> None:
        """Relay a typing indicator to the other member; nothing is stored."""
        other = await self._member(user_id)
        frame = {
            "type": "typing",
            "match_id": str(self.match_id),
            "user_id": str(user_id),
            "state": bool(state),
        }
        self.courier.post((other,), frame)
