"""A node: a shard host and a gateway in one Ray actor (`COLOCATED=true`).

In the default layout a chat message crosses two Ray calls: gateway to the
match's host, and host back to the gateway's sockets. A node hosts virtual
actors and serves HTTP + WebSocket in the same process, so when the actor a
socket talks to lives on the node that holds the socket, both hops are
in-process: the directory enqueues into the actor's mailbox directly
(`ActorDirectory.bind_local`) and the host's pusher writes to the gateway's
sockets directly (`GatewayPusher`, `LOCAL_GATEWAY`). Actors on other nodes
are still reached through Ray, and Ray still places, names and restarts the
node like any shard host: the node is registered under the shard host's
name, and serves gateway `gateway-{index}`.

With one node per machine every call is local; with several, sockets spread
over them (SO_REUSEPORT) and each call is local with probability 1/nodes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray.actor import ActorHandle

from unimatch.actors.directory import Call, Outcome
from unimatch.actors.host import ShardHost, start_host_actors
from unimatch.actors.push import LOCAL_GATEWAY
from unimatch.config import Config
from unimatch.http.gateway import Gateway
from unimatch.logs import configure_logging

log = logging.getLogger("unimatch.node")


class Node:
    """The shard host's API (call_batch, stats, ...) and the gateway's (push,
    sockets_of), served by one process."""

    def __init__(self, config: Config, index: int, host: str, port: int) -> None:
        self.index = index
        self.shard = ShardHost(config, index)
        self.gateway = Gateway(config, index, host, port, local_host=self.shard)
        configure_logging(config, process=f"node-{index}")
        # Wired here, not in `ready`: after a restart by Ray nobody calls ready.
        self._wired = asyncio.get_event_loop().create_task(self._wire())

    async def _wire(self) -> None:
        await self.shard.ready()
        self.shard.services.extras[LOCAL_GATEWAY] = self.gateway

    async def ready(self) -> str:
        """Both halves up and wired; the URL served."""
        await self._wired
        return await self.gateway.ready()

    async def check_health(self) -> None:
        await self.shard.check_health()
        await self.gateway.check_health()

    # -- the shard host ------------------------------------------------------

    async def call(
        self, kind: str, actor_id: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return await self.shard.call(kind, actor_id, method, args, kwargs)

    async def call_batch(self, calls: list[Call]) -> list[Outcome]:
        return await self.shard.call_batch(calls)

    async def stats(self) -> dict[str, Any]:
        return await self.shard.stats()

    # -- the gateway ---------------------------------------------------------

    async def push(self, batch: list[tuple[str, Any]]) -> list[bool]:
        return await self.gateway.push(batch)

    async def sockets_of(self, user_ids: list[str]) -> dict[str, list[str]]:
        return await self.gateway.sockets_of(user_ids)

    async def drain_gateway(self) -> None:
        """Stop serving HTTP and close the sockets (1001); actors stay up."""
        await self.gateway.drain()

    async def drain(self) -> None:
        """The gateway, then the actors."""
        await self.gateway.drain()
        await self.shard.drain()


def start_nodes(config: Config, host: str, port: int) -> list[ActorHandle]:
    """Create `config.shard_hosts` nodes, each named as the shard host of its
    index, and wait until every one hosts and listens (blocking)."""
    return start_host_actors(config, Node, lambda i: ((config, i, host, port), {}))


def drain_node_gateways(handles: list[ActorHandle], *, timeout: float = 30.0) -> None:
    """Close every node's HTTP and sockets (the actors stay up until
    `stop_shard_hosts`)."""
    try:
        ray.get([h.drain_gateway.remote() for h in handles], timeout=timeout)
    except Exception as exc:  # a node that cannot drain is stopped all the same
        log.warning("gateway drain of nodes failed: %r", exc)
