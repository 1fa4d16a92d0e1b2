"""MatchActor: the single writer of one unordered pair of users.

Its id is `pairs.pair_id(a, b)`, which is also the id of the pair's `matches`
row. Every swipe between the two, the match it may create, the block that
ends it and the unmatch go through this actor's serial mailbox, so the
mutual like is detected without races: the second like sees the first, and
the match row is written in the same transaction as that second like. (An
advisory lock on the pair in that transaction keeps this true even for a
writer outside the actor.)

Idempotency under retries (the directory retries a call whose host died,
which may already have committed it):
- `swipe` takes the swipe's id from the caller (the gateway picks one per
  HTTP request). A second run that finds the row with that same id answers
  what the first run would have; a row with another id is a real repeat and
  is refused with 409 `already_swiped`.
- `unmatch`, `end` and `block` check state first and do nothing twice.
The side effects after a commit (frames, cache clearing) are at-least-once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from unimatch.actors.base import ActorContext, Services, VirtualActor
from unimatch.actors.chat import ChatLog
from unimatch.domain.errors import Conflict, NotFound, RateLimited, ValidationFailed
from unimatch.domain.metrics import MATCHES, SWIPES
from unimatch.domain.pairs import ordered, pair_id
from unimatch.storage import blocks as block_sql
from unimatch.storage import matches as match_sql
from unimatch.storage import swipes as swipe_sql
from unimatch.storage.cache import feed_key, match_list_key, notifications_key
from unimatch.storage.notifications import add_notification

log = logging.getLogger("unimatch.match")

ACTIONS = ("like", "pass")
END_REASONS = ("unmatch", "block", "suspend", "ban")

# Serialises writers of one pair inside PostgreSQL as well.
LOCK_PAIR = "SELECT pg_advisory_xact_lock(hashtextextended('pair:' || $1::uuid::text, 0))"

__all__ = ["MatchActor", "pair_id"]


class MatchActor(VirtualActor):
    kind = "match"

    def __init__(self, actor_id: str, services: Services, context: ActorContext) -> None:
        super().__init__(actor_id, services, context)
        self.match_id = uuid.UUID(actor_id)
        # The pair's `matches` row as a dict, or None before a match. Read
        # on first need, not on activation: most pairs only ever swipe, and
        # a swipe learns what it needs inside its own transaction.
        self.match: dict[str, Any] | None = None
        self._match_loaded = False

    async def _load_match(self) -> None:
        if not self._match_loaded or self.match is None:
            row = await match_sql.match_by_id(self.services.db, self.match_id)
            self.match = dict(row) if row is not None else None
            self._match_loaded = True

    @property
    def worth_keeping(self) -> bool:
        """Only a match is kept. A pair that only swipes holds nothing in
        memory (each swipe reads the pair's state in its own transaction),
        and a node sees thousands of them: its activation ends with its
        mailbox. A chat call for an id that names no match keeps nothing."""
        chat: ChatLog | None = getattr(self, "_chat", None)
        if chat is not None:
            return chat.exists
        return self.match is not None

    # -- swipes and the match ------------------------------------------------

    def _check_pair(self, a: uuid.UUID, b: uuid.UUID) -> None:
        if pair_id(a, b) != self.match_id:
            raise NotFound("this pair belongs to another actor", code="not_found")

    async def swipe(
        self,
        swiper_id: str,
        target_id: str,
        action: str,
        *,
        swipe_id: str | None = None,
        like_limit: int | None = None,
    ) -> dict[str, Any]:
        """Record `swiper`'s like or pass of `target`; create the match when
        both have liked. Returns {"matched", "match_id"}.

        404 `not_found` for a target the swiper cannot see (missing,
        unverified, hidden, suspended, blocked either way); 409
        `already_swiped` for a second swipe on the same target; 429
        `like_limit_reached` past `like_limit` likes in a rolling 24 hours
        (the gateway passes its configured limit). `swipe_id` makes a retried
        call idempotent (module docstring)."""
        swiper, target = uuid.UUID(swiper_id), uuid.UUID(target_id)
        if action not in ACTIONS:
            raise ValidationFailed({"action": ["must be one of: like, pass"]})
        if swiper == target:
            raise ValidationFailed({"target_id": ["you cannot swipe yourself"]})
        self._check_pair(swiper, target)
        this_swipe = uuid.UUID(swipe_id) if swipe_id else uuid.uuid4()
        limit = self.services.config.limit_likes_per_day if like_limit is None else like_limit
        created: dict[str, Any] | None = None
        like = action == "like"
        async with self.services.db.transaction() as conn:
            state = await swipe_sql.lock_and_read(conn, self.match_id, swiper, target, like)
            if state["existing_id"] is not None:
                if state["existing_id"] != this_swipe:
                    raise Conflict("you already swiped this user", code="already_swiped")
                # Our own first attempt committed: answer as it would have.
                row = await match_sql.match_by_id(conn, self.match_id)
                self.match = dict(row) if row is not None else None
                self._match_loaded = True
                matched = like and row is not None
                if matched:
                    await self._announce_match(swiper, target)
                return {"matched": matched, "match_id": str(self.match_id) if matched else None}
            if not state["swipeable"]:
                raise NotFound("no such user", code="not_found")
            if like:
                wait = swipe_sql.like_retry_after(state, limit)
                if wait is not None:
                    raise RateLimited(
                        f"at most {limit} likes a day", retry_after=wait,
                        code="like_limit_reached",
                    )
            await swipe_sql.insert_swipe(conn, this_swipe, swiper, target, action)
            if like and state["liked_back"]:
                user_a, user_b = ordered(swiper, target)
                row = await match_sql.create_match(conn, self.match_id, user_a, user_b)
                if row is not None:
                    created = dict(row)
                    for user, other in ((swiper, target), (target, swiper)):
                        await add_notification(
                            conn, user, "match",
                            {"match_id": str(self.match_id), "user_id": str(other)},
                        )
        SWIPES.labels(action).inc()
        if created is None:
            await self.services.cache.delete(feed_key(swiper))
            return {"matched": False, "match_id": None}
        self.match = created
        self._match_loaded = True
        MATCHES.inc()
        log.info("match %s formed: %s and %s", self.match_id, swiper, target)
        await self._announce_match(swiper, target)
        return {"matched": True, "match_id": str(self.match_id)}

    async def _announce_match(self, a: uuid.UUID, b: uuid.UUID) -> None:
        """After the commit: both feeds, match lists and notification lists
        cleared, and a `match` frame to each user, all at once. A failed push
        is logged, never raised: the match is committed and the users find it
        in their match list and notifications."""
        cache = self.services.cache
        card_a, card_b = await asyncio.gather(
            match_sql.user_card(self.services.db, a), match_sql.user_card(self.services.db, b)
        )
        await asyncio.gather(
            cache.delete(
                feed_key(a), feed_key(b), match_list_key(a), match_list_key(b),
                notifications_key(a), notifications_key(b),
            ),
            self._push(a, [{"type": "match", "match_id": str(self.match_id), "user": card_b}]),
            self._push(b, [{"type": "match", "match_id": str(self.match_id), "user": card_a}]),
        )

    async def _push(self, user_id: uuid.UUID, frames: list[dict[str, Any]]) -> int:
        try:
            return await self.services.actors.call("user", str(user_id), "push", frames)
        except Exception as exc:  # a push is best effort; the state is committed
            log.warning("push to user %s failed: %r", user_id, exc)
            return 0

    # -- ending the match ----------------------------------------------------

    def _members(self) -> tuple[uuid.UUID, uuid.UUID] | None:
        if self.match is None:
            return None
        return self.match["user_a"], self.match["user_b"]

    async def unmatch(self, by_user_id: str) -> dict[str, Any]:
        """End the match at the request of one of its users: the chat closes
        for both. 404 when the caller is not in this match. Idempotent: an
        already ended match answers the same."""
        by_user = uuid.UUID(by_user_id)
        await self._load_match()
        members = self._members()
        if members is None or by_user not in members:
            raise NotFound("no such match", code="not_found")
        return await self.end("unmatch", by_user_id)

    async def end(self, reason: str, by_user_id: str | None = None) -> dict[str, Any]:
        """End the match (unmatch, block, or moderation: suspend / ban): set
        `ended_at` and `end_reason`, send `unmatch` to both users, clear their
        match lists. Returns {"ended": bool (false: no match), "match_id"}.
        Idempotent."""
        if reason not in END_REASONS:
            raise ValidationFailed({"reason": ["must be one of: " + ", ".join(END_REASONS)]})
        by_user = uuid.UUID(by_user_id) if by_user_id else None
        await self._load_match()
        if self.match is None:
            return {"ended": False, "match_id": str(self.match_id)}
        if self.match["ended_at"] is None:
            row = await match_sql.end_match(self.services.db, self.match_id, by_user, reason)
            if row is None:  # ended meanwhile by a writer outside this actor
                row = await match_sql.match_by_id(self.services.db, self.match_id)
            assert row is not None
            self.match = dict(row)
            log.info("match %s ended (%s) by %s", self.match_id, reason, by_user)
        chat: ChatLog | None = getattr(self, "_chat", None)
        if chat is not None:
            chat.end()
        await self._announce_end()
        return {"ended": True, "match_id": str(self.match_id)}

    async def _announce_end(self) -> None:
        members = self._members()
        assert members is not None
        a, b = members
        frame = {"type": "unmatch", "match_id": str(self.match_id)}
        await asyncio.gather(
            self.services.cache.delete(match_list_key(a), match_list_key(b)),
            self._push(a, [frame]),
            self._push(b, [frame]),
        )

    async def block(self, blocker_id: str, blocked_id: str) -> dict[str, Any]:
        """`blocker` blocks `blocked`: both stop seeing each other, and any
        match between them ends (reason "block"). 404 for an unknown user.
        Idempotent."""
        blocker, blocked = uuid.UUID(blocker_id), uuid.UUID(blocked_id)
        if blocker == blocked:
            raise ValidationFailed({"user_id": ["you cannot block yourself"]})
        self._check_pair(blocker, blocked)
        async with self.services.db.transaction() as conn:
            if not await block_sql.user_exists(conn, blocked):
                raise NotFound("no such user", code="not_found")
            await conn.execute(LOCK_PAIR, self.match_id)
            await block_sql.add_block(conn, blocker, blocked)
        await self.services.cache.delete(feed_key(blocker), feed_key(blocked))
        return await self.end("block", blocker_id)

    # -- chat (the logic lives in unimatch.actors.chat) -----------------------

    @property
    def chat(self) -> ChatLog:
        """Created on the first chat call, so swipes never load chat state."""
        chat: ChatLog | None = getattr(self, "_chat", None)
        if chat is None:
            chat = self._chat = ChatLog(self.actor_id, self.services, self.context)
        return chat

    async def send_message(
        self, sender_id: str | uuid.UUID, client_msg_id: str, body: str,
        origin: str | None = None,
    ) -> dict[str, Any]:
        """Store a chat message and return its `ack` frame once committed;
        then deliver it to both users' sockets but `origin` (the sending
        connection). Idempotent per (sender, client_msg_id). See
        `ChatLog.send`."""
        return await self.chat.send(uuid.UUID(str(sender_id)), client_msg_id, body, origin)

    async def mark_messages(self, user_id: str | uuid.UUID, seq: int, status: str) -> int:
        """`delivered` / `read` receipts up to `seq`. See `ChatLog.mark`."""
        return await self.chat.mark(uuid.UUID(str(user_id)), seq, status)

    async def typing(self, user_id: str | uuid.UUID, state: bool) -> None:
        """Relay a typing indicator to the other user. See `ChatLog.typing`."""
        await self.chat.typing(uuid.UUID(str(user_id)), state)
