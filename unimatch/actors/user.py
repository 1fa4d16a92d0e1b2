"""UserActor: where a user's sockets are, presence, and pushes to the user.

The gateways are the truth of which sockets are open: a socket is in its
gateway's hub before the gateway calls `attach`, and leaves it before
`detach`. The actor keeps a copy to route pushes without asking; on
activation (first use, or after its host died and Ray restarted it) it asks
every gateway for the user's sockets, so a restarted host still reaches them.
A push to a socket its gateway no longer has drops that socket from the copy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections import defaultdict
from typing import Any

from unimatch.actors.base import VirtualActor
from unimatch.actors.push import pusher_of
from unimatch.storage import presence as sql

log = logging.getLogger("unimatch.user")

# A connection that flaps within this window announces nothing.
PRESENCE_DEBOUNCE = 2.0
# `last_active` is written at most this often.
LAST_ACTIVE_EVERY = 60.0
# Internal frame a gateway's hub turns into a close of that socket.
CLOSE_FRAME = "_close"


class UserActor(VirtualActor):
    kind = "user"

    def __init__(self, actor_id: str, services: Any) -> None:
        super().__init__(actor_id, services)
        self.user_id = uuid.UUID(actor_id)
        # connection_id -> gateway_id
        self.sockets: dict[str, str] = {}
        self.announced_online = False
        self.last_active: dt.datetime | None = None
        self._last_written = 0.0
        self._announce: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def on_activate(self) -> None:
        found = await pusher_of(self.services).sockets_of(self.actor_id)
        self.sockets = {conn_id: gateway_id for gateway_id, conn_id in found}
        self.last_active = await self.services.db.fetchval(sql.LAST_ACTIVE, self.user_id)
        # The socket that caused this activation (attach) is listed already:
        # compare with "offline" so its coming online is announced.
        self.announced_online = False

    async def on_passivate(self) -> None:
        if self._announce is not None:
            self._announce.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)

    @property
    def online(self) -> bool:
        return bool(self.sockets)

    # -- sockets -------------------------------------------------------------

    async def attach(self, gateway_id: str, connection_id: str) -> int:
        """A socket of this user opened on `gateway_id`. Idempotent; returns
        the number of open sockets."""
        self.sockets[connection_id] = gateway_id
        self._presence_changed()
        await self._touch(force=False)
        return len(self.sockets)

    async def detach(self, gateway_id: str, connection_id: str) -> int:
        """A socket closed. Idempotent; returns the sockets still open."""
        if self.sockets.get(connection_id) == gateway_id:
            del self.sockets[connection_id]
        self._presence_changed()
        await self._touch(force=False)
        return len(self.sockets)

    async def sockets_open(self) -> list[tuple[str, str]]:
        """(gateway_id, connection_id) of every open socket."""
        return [(gateway, conn) for conn, gateway in self.sockets.items()]

    # -- pushes --------------------------------------------------------------

    async def push(self, frames: list[dict[str, Any]]) -> int:
        """Write `frames`, in order, to every socket of this user; the number
        of sockets reached (0: the user is offline). At-least-once: a retried
        call may deliver twice, and clients dedupe messages by seq."""
        if not frames or not self.sockets:
            return 0
        by_gateway: dict[str, list[str]] = defaultdict(list)
        for conn_id, gateway_id in self.sockets.items():
            by_gateway[gateway_id].append(conn_id)
        pusher = pusher_of(self.services)
        gateways = list(by_gateway)
        results = await asyncio.gather(
            *(
                pusher.push(g, [(c, f) for c in by_gateway[g] for f in frames])
                for g in gateways
            )
        )
        reached = 0
        for gateway_id, delivered in zip(gateways, results, strict=True):
            for i, conn_id in enumerate(by_gateway[gateway_id]):
                if all(delivered[i * len(frames) : (i + 1) * len(frames)]):
                    reached += 1
                elif self.sockets.get(conn_id) == gateway_id:
                    del self.sockets[conn_id]  # gone from its gateway
        if not self.sockets:
            self._presence_changed()
        return reached

    async def disconnect(self, close_code: int, reason: str) -> int:
        """Close every socket of this user (e.g. 4003 on suspension); the
        number closed. Idempotent."""
        frame = {"type": CLOSE_FRAME, "code": int(close_code), "reason": str(reason)[:100]}
        reached = await self.push([frame])
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
        if self._announce is not None:
            return
        loop = asyncio.get_running_loop()
        self._announce = loop.call_later(PRESENCE_DEBOUNCE, self._announce_due)

    def _announce_due(self) -> None:
        self._announce = None
        if self.online == self.announced_online:
            return
        self.announced_online = self.online
        task = asyncio.get_running_loop().create_task(self._broadcast())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _broadcast(self) -> None:
        try:
            if not self.online:
                await self._touch(force=True)
            frame = await self.presence()
            rows = await self.services.db.fetch(sql.MATCHED_USERS, self.user_id)
            directory = self.services.directory
            await asyncio.gather(
                *(directory.call("user", str(r["user_id"]), "push", [frame]) for r in rows),
                return_exceptions=True,
            )
        except Exception:
            log.exception("presence broadcast for %s failed", self.actor_id)
