"""UserActor: where a user's sockets are, presence, and pushes to the user.

The nodes are the truth of which sockets are open: a socket is in its node's
hub before the node calls `attach`, and leaves it before `detach`. The actor
keeps a copy, socket by node, so a push goes only to the nodes that hold the
user's sockets; on activation (first use, or after its node died and Ray
restarted it) it asks every node for the user's sockets, so a restarted node
still reaches them. A push to a socket its node no longer has drops that
socket from the copy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections import defaultdict
from typing import Any

from unimatch.actors.base import ActorContext, Services, VirtualActor
from unimatch.storage import presence as sql

log = logging.getLogger("unimatch.user")

# A connection that flaps within this window announces nothing.
PRESENCE_DEBOUNCE = 2.0
# `last_active` is written at most this often.
LAST_ACTIVE_EVERY = 60.0
# Internal frame a node's hub turns into a close of that socket.
CLOSE_FRAME = "_close"


class UserActor(VirtualActor):
    kind = "user"

    def __init__(self, actor_id: str, services: Services, context: ActorContext) -> None:
        super().__init__(actor_id, services, context)
        self.user_id = uuid.UUID(actor_id)
        # connection_id -> node index
        self.sockets: dict[str, int] = {}
        self.announced_online = False
        self.last_active: dt.datetime | None = None
        self._last_written = 0.0
        self._announce_pending = False

    async def on_activate(self) -> None:
        found = await self.services.sockets.sockets_of(self.actor_id)
        self.sockets = {conn_id: node for node, conn_id in found}
        self.last_active = await self.services.db.fetchval(sql.LAST_ACTIVE, self.user_id)
        # The socket that caused this activation (attach) is listed already:
        # compare with "offline" so its coming online is announced.
        self.announced_online = False

    @property
    def online(self) -> bool:
        return bool(self.sockets)

    # -- sockets -------------------------------------------------------------

    async def attach(self, node: int, connection_id: str) -> int:
        """A socket of this user opened on `node`. Idempotent; returns the
        number of open sockets."""
        self.sockets[connection_id] = node
        self._presence_changed()
        await self._touch(force=False)
        return len(self.sockets)

    async def detach(self, node: int, connection_id: str) -> int:
        """A socket closed. Idempotent; returns the sockets still open."""
        if self.sockets.get(connection_id) == node:
            del self.sockets[connection_id]
        self._presence_changed()
        await self._touch(force=False)
        return len(self.sockets)

    async def sockets_open(self) -> list[tuple[int, str]]:
        """(node, connection_id) of every open socket."""
        return [(node, conn) for conn, node in self.sockets.items()]

    # -- pushes --------------------------------------------------------------

    async def push(self, frames: list[dict[str, Any]], skip: str | None = None) -> int:
        """Write `frames`, in order, to every socket of this user but the
        connection `skip` (the one that sent a chat message gets its `ack`
        instead); the number of sockets reached (0: the user is offline).
        Only the nodes holding the user's sockets are pushed to.
        At-least-once: a retried call may deliver twice; each socket drops
        a chat message whose seq it already has."""
        if not frames or not self.sockets:
            return 0
        by_node: dict[int, list[str]] = defaultdict(list)
        for conn_id, node in self.sockets.items():
            if conn_id != skip:
                by_node[node].append(conn_id)
        reached = 0
        sockets = self.services.sockets
        for node, conn_ids in by_node.items():
            delivered = await sockets.push(node, [(c, f) for c in conn_ids for f in frames])
            for i, conn_id in enumerate(conn_ids):
                if all(delivered[i * len(frames) : (i + 1) * len(frames)]):
                    reached += 1
                elif self.sockets.get(conn_id) == node:
                    del self.sockets[conn_id]  # gone from its node
        if skip is not None and skip in self.sockets:
            reached += 1
        if not self.sockets:
            self._presence_changed()
        return reached

    async def disconnect(
        self, close_code: int, reason: str, family: str | None = None,
        keep_family: str | None = None,
    ) -> int:
        """Close the sockets of this user (e.g. 4003 on suspension, 4001 when
        a session ends): all of them, or only those authenticated in session
        `family`, or all but those of `keep_family`. The number of sockets
        reached. Idempotent."""
        frame = {"type": CLOSE_FRAME, "code": int(close_code), "reason": str(reason)[:100],
                 "family": family, "keep_family": keep_family}
        reached = await self.push([frame])
        if family is None and keep_family is None:
            self.sockets.clear()
            self._presence_changed()
        return reached

    async def touch(self) -> None:
        """The user did something: keep `last_active` fresh (at most one
        write a minute)."""
        await self._touch(force=False)

    async def presence(self) -> dict[str, Any]:
        return {
            "type": "presence",
            "user_id": self.actor_id,
            "online": self.online,
            "last_active": self.last_active.isoformat() if self.last_active else None,
        }

    # -- presence ------------------------------------------------------------

    async def _touch(self, *, force: bool) -> None:
        loop = asyncio.get_running_loop()
        if not force and loop.time() - self._last_written < LAST_ACTIVE_EVERY:
            return
        self._last_written = loop.time()
        self.last_active = await self.services.db.fetchval(sql.TOUCH, self.user_id)

    def _presence_changed(self) -> None:
        """Announce the new state after the debounce window, if it still
        differs from the last one announced then."""
        if self._announce_pending:
            return
        self._announce_pending = True
        self.context.schedule(PRESENCE_DEBOUNCE, "_announce_due")

    async def _announce_due(self) -> None:
        """A message from this actor's own timer (see `_presence_changed`)."""
        self._announce_pending = False
        if self.online == self.announced_online:
            return
        self.announced_online = self.online
        if not self.online:
            await self._touch(force=True)
        frame = await self.presence()
        rows = await self.services.db.fetch(sql.MATCHED_USERS, self.user_id)
        # Beside the mailbox: calls to other users' actors must not hold
        # this one (two users announcing to each other would wait forever).
        self.context.spawn(self._broadcast([str(r["user_id"]) for r in rows], frame))

    async def _broadcast(self, users: list[str], frame: dict[str, Any]) -> None:
        """Touches no actor state."""
        actors = self.services.actors
        results = await asyncio.gather(
            *(actors.call("user", user, "push", [frame]) for user in users),
            return_exceptions=True,
        )
        failed = sum(1 for r in results if isinstance(r, BaseException))
        if failed:
            log.warning("presence of %s reached %d of %d users", self.actor_id,
                        len(users) - failed, len(users))
