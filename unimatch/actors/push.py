"""From a shard host to the gateways' sockets: one Ray call per gateway per tick.

A `UserActor` knows which gateway holds each of its user's sockets and
pushes to those connections; chat messages skip that hop and go to every
gateway addressed to the user (each gateway knows its own sockets by user).
Both go through the host's `GatewayPusher`, which gathers every
`(target, frame)` bound for one gateway within a tick into a single
`gateway.push.remote(batch)` (DESIGN.md: a remote call costs about a
millisecond whatever it carries). One flush per gateway is in flight at a
time, so frames reach a gateway in the order they were pushed, and under load
the frames that collect meanwhile travel together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import ray

from unimatch.actors.batching import TickBatcher

log = logging.getLogger("unimatch.push")

PUSHER = "gateway_pusher"
# Where a colocated node leaves its gateway in the host's `Services.extras`.
LOCAL_GATEWAY = "local_gateway"
# A gateway that does not answer a socket lookup in time is left out.
LOOKUP_TIMEOUT = 2.0

# What one caller hands the pusher for one gateway: (connection_id, frame).
Delivery = tuple[str, dict[str, Any]]

_GATEWAY_DOWN: tuple[type[BaseException], ...] = (
    ray.exceptions.RayActorError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ActorHandleNotFoundError,
)

_LOOKUP_FAILED: tuple[type[BaseException], ...] = (TimeoutError, *_GATEWAY_DOWN)


class LocalGateway(Protocol):
    """A gateway in this process (unimatch.node)."""

    gateway_id: str

    def deliver_now(self, batch: list[Delivery]) -> list[bool]: ...

    def sockets_now(self, user_ids: list[str]) -> dict[str, list[str]]: ...


class GatewayPusher:
    """Batches pushes per gateway; gateway handles are looked up once.

    A gateway in this process (`extras[LOCAL_GATEWAY]`, set by a colocated
    node) is written to directly, before `push` returns: no Ray call, and
    order kept as trivially as it gets."""

    def __init__(
        self,
        namespace: str,
        gateway_count: int,
        *,
        actor_names: dict[str, str] | None = None,
        extras: dict[str, Any] | None = None,
    ) -> None:
        self.namespace = namespace
        self.gateway_count = gateway_count
        # Gateway id -> the name of the Ray actor serving it, where they differ.
        self._actor_names = actor_names or {}
        self._extras = extras if extras is not None else {}
        self._handles: dict[str, Any] = {}
        self._batchers: dict[str, TickBatcher[list[Delivery], list[bool]]] = {}

    def _local(self, gateway_id: str) -> LocalGateway | None:
        local: LocalGateway | None = self._extras.get(LOCAL_GATEWAY)
        return local if local is not None and local.gateway_id == gateway_id else None

    async def _handle(self, gateway_id: str) -> Any | None:
        handle = self._handles.get(gateway_id)
        if handle is None:
            name = self._actor_names.get(gateway_id, gateway_id)
            try:
                # ray.get_actor blocks the loop for ~0.3 ms: off the loop, once.
                handle = await asyncio.to_thread(ray.get_actor, name, namespace=self.namespace)
            except ValueError:
                return None  # no such gateway (any more)
            self._handles[gateway_id] = handle
        return handle

    def _batcher(self, gateway_id: str) -> TickBatcher[list[Delivery], list[bool]]:
        batcher = self._batchers.get(gateway_id)
        if batcher is None:

            async def send(groups: list[list[Delivery]]) -> list[list[bool]]:
                flat = [delivery for group in groups for delivery in group]
                handle = await self._handle(gateway_id)
                if handle is None:
                    return [[False] * len(group) for group in groups]
                try:
                    delivered = await handle.push.remote(flat)
                except _GATEWAY_DOWN as exc:
                    # Its sockets died with it; their clients reconnect and sync.
                    log.warning("gateway %s unreachable: %r", gateway_id, exc)
                    return [[False] * len(group) for group in groups]
                results, start = [], 0
                for group in groups:
                    results.append(list(delivered[start : start + len(group)]))
                    start += len(group)
                return results

            # The call graph never comes back here (a gateway does not call a
            # host inside push), so one flush in flight keeps order safely.
            batcher = self._batchers[gateway_id] = TickBatcher(send, max_in_flight=1)
        return batcher

    async def push(self, gateway_id: str, deliveries: Sequence[Delivery]) -> list[bool]:
        """Write frames to sockets of one gateway, in order; per delivery,
        whether its socket was still open there."""
        if not deliveries:
            return []
        local = self._local(gateway_id)
        if local is not None:
            return local.deliver_now(list(deliveries))
        return await self._batcher(gateway_id).submit(list(deliveries))

    async def push_to_users(
        self, frames_by_user: dict[str, list[dict[str, Any]]]
    ) -> dict[str, bool]:
        """Write frames to every socket of each user, on every gateway, in
        order; per user, whether any socket took them. One hop from the host
        to the gateways, with no UserActor in between: the chat hot path."""
        from unimatch.http.gateway import gateway_name
        from unimatch.ws.hub import user_target

        users = list(frames_by_user)
        deliveries = [
            (user_target(user), frame) for user in users for frame in frames_by_user[user]
        ]
        names = [gateway_name(i) for i in range(self.gateway_count)]
        per_gateway = await asyncio.gather(*(self.push(name, deliveries) for name in names))
        reached = dict.fromkeys(users, False)
        for results in per_gateway:
            for (target, _), ok in zip(deliveries, results, strict=True):
                if ok:
                    reached[target.removeprefix("user:")] = True
        return reached

    async def sockets_of(self, user_id: str) -> list[tuple[str, str]]:
        """(gateway_id, connection_id) of every socket the gateways hold for
        `user_id`: how a freshly activated UserActor finds its sockets again
        after its host restarted."""
        from unimatch.http.gateway import gateway_name

        async def ask(gateway_id: str) -> list[tuple[str, str]]:
            local = self._local(gateway_id)
            if local is not None:
                found_here = local.sockets_now([user_id])
                return [(gateway_id, conn_id) for conn_id in found_here.get(user_id, [])]
            handle = await self._handle(gateway_id)
            if handle is None:
                return []
            try:
                found = await asyncio.wait_for(
                    handle.sockets_of.remote([user_id]), LOOKUP_TIMEOUT
                )
            except _LOOKUP_FAILED as exc:
                log.warning("gateway %s did not list sockets: %r", gateway_id, exc)
                return []
            return [(gateway_id, conn_id) for conn_id in found.get(user_id, [])]

        names = [gateway_name(i) for i in range(self.gateway_count)]
        found = await asyncio.gather(*(ask(name) for name in names))
        return [pair for pairs in found for pair in pairs]


def pusher_of(services: Any) -> GatewayPusher:
    """The host's pusher (`services` is shared by every actor of a host)."""
    pusher = services.extras.get(PUSHER)
    if pusher is None:
        from unimatch.actors.directory import DEFAULT_NAME_PREFIX, host_name
        from unimatch.http.gateway import gateway_name

        config = services.config
        # A colocated gateway is served by the shard host actor of its index.
        names = (
            {gateway_name(i): host_name(DEFAULT_NAME_PREFIX, i) for i in range(config.gateways)}
            if config.colocated
            else {}
        )
        pusher = services.extras[PUSHER] = GatewayPusher(
            config.namespace, config.gateways, actor_names=names, extras=services.extras
        )
    return pusher
