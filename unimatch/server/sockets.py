"""The node's side of `actors.ports.SocketPort`: frames to users' sockets.

One link per node, chosen when the node is wired: `LocalSockets` writes to
this node's hub before `push` returns (no Ray call, order kept trivially);
`RaySockets` gathers every delivery bound for another node within a tick
into one `push` Ray call, one call in flight at a time so frames reach that
node in the order they were pushed, and what collects meanwhile travels
together. `SocketRouter` picks the link by node index; the actors never know
which it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from unimatch.actors.batching import TickBatcher
from unimatch.actors.links import NODE_DOWN_ERRORS
from unimatch.actors.ports import Delivery, NodeDown
from unimatch.ws.hub import SocketHub

log = logging.getLogger("unimatch.sockets")

# A node that does not answer a socket lookup in time is left out.
LOOKUP_TIMEOUT = 2.0

_UNREACHABLE: tuple[type[BaseException], ...] = (NodeDown, *NODE_DOWN_ERRORS)
_LOOKUP_FAILED: tuple[type[BaseException], ...] = (TimeoutError, *_UNREACHABLE)


class SocketLink(Protocol):
    """The way to one node's sockets."""

    async def push(self, deliveries: list[Delivery]) -> list[bool]: ...

    async def sockets_of(self, user_id: str) -> list[str]: ...


class LocalSockets:
    """This node's own sockets."""

    def __init__(self, hub: SocketHub) -> None:
        self.hub = hub

    async def push(self, deliveries: list[Delivery]) -> list[bool]:
        return self.hub.deliver(deliveries)

    async def sockets_of(self, user_id: str) -> list[str]:
        return self.hub.sockets_of([user_id])[user_id]


class RaySockets:
    """Another node's sockets, over Ray."""

    def __init__(self, handle: Callable[[], Awaitable[Any]]) -> None:
        self._handle = handle
        # The call graph never comes back here (a node's `push` calls no
        # actor), so one flush in flight keeps order safely.
        self._batcher = TickBatcher[list[Delivery], list[bool]](self._send, max_in_flight=1)

    async def push(self, deliveries: list[Delivery]) -> list[bool]:
        return await self._batcher.submit(deliveries)

    async def _send(self, groups: list[list[Delivery]]) -> list[list[bool]]:
        flat = [delivery for group in groups for delivery in group]
        try:
            handle = await self._handle()
            delivered = await handle.push.remote(flat)
        except _UNREACHABLE as exc:
            # Its sockets died with it; their clients reconnect and sync.
            log.warning("node unreachable for a push: %r", exc)
            return [[False] * len(group) for group in groups]
        results, start = [], 0
        for group in groups:
            results.append(list(delivered[start : start + len(group)]))
            start += len(group)
        return results

    async def sockets_of(self, user_id: str) -> list[str]:
        try:
            handle = await self._handle()
            found = await asyncio.wait_for(handle.sockets_of.remote([user_id]), LOOKUP_TIMEOUT)
        except _LOOKUP_FAILED as exc:
            log.warning("node did not list sockets: %r", exc)
            return []
        return list(found.get(user_id, []))


class SocketRouter:
    """`SocketPort` over one link per node. `live` (a cluster's membership)
    says which nodes may hold sockets: a node out of it is not asked, and a
    push to it reaches nobody at once (its sockets closed with it)."""

    def __init__(
        self, links: Sequence[SocketLink] | Mapping[int, SocketLink],
        live: Callable[[], Collection[int]] | None = None,
    ) -> None:
        self.links: dict[int, SocketLink] = (
            dict(links) if isinstance(links, Mapping) else dict(enumerate(links)))
        self._live = live

    def _is_live(self, node: int) -> bool:
        return node in self.links and (self._live is None or node in self._live())

    async def push(self, node: int, deliveries: list[Delivery]) -> list[bool]:
        if not deliveries:
            return []
        if not self._is_live(node):
            return [False] * len(deliveries)  # a node that is gone
        return await self.links[node].push(deliveries)

    async def sockets_of(self, user_id: str) -> list[tuple[int, str]]:
        nodes = [node for node in self.links if self._is_live(node)]
        found = await asyncio.gather(*(self.links[node].sockets_of(user_id) for node in nodes))
        return [(node, conn) for node, conns in zip(nodes, found, strict=True) for conn in conns]
