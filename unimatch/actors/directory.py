"""Reach any virtual actor: route by hash to its node's link, retry restarts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from unimatch.actors.ports import ActorLink, NodeDown
from unimatch.actors.routing import pick_host
from unimatch.domain.errors import Unavailable
from unimatch.domain.metrics import ACTOR_RETRIES

log = logging.getLogger("unimatch.actors")


class ActorDirectory:
    """Calls virtual actors on a set of nodes, one link per node.

    `call(kind, id, method, *args, **kwargs)` goes to the node chosen by
    rendezvous hashing of (kind, id) over the nodes, through that node's link:
    in-process for this node, Ray for another (chosen once, when the links
    were built; this class never asks which).

    Retries: while a node is dead or being restarted by Ray, a call is retried
    with capped exponential backoff until `retry_deadline` seconds have passed,
    then fails with `Unavailable`. A node that died mid-call may already have
    run it, so a retried call can run twice: every method with effects must be
    idempotent. Errors raised by the actor itself are never retried; they
    reach the caller as the same class (domain errors keep their fields).
    """

    def __init__(self, links: Sequence[ActorLink], *, retry_deadline: float = 30.0) -> None:
        if not links:
            raise ValueError("a directory needs at least one node")
        self._links = list(links)
        self.retry_deadline = retry_deadline

    @property
    def node_count(self) -> int:
        return len(self._links)

    def node_for(self, kind: str, actor_id: str) -> int:
        return pick_host(kind, actor_id, len(self._links))

    async def call(self, kind: str, actor_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run `method(*args, **kwargs)` on virtual actor `kind/actor_id`.

        Idempotency required: see the class docstring on retries."""
        link = self._links[self.node_for(kind, actor_id)]
        call = (kind, actor_id, method, args, kwargs)
        try:
            return await link.call(call)
        except NodeDown as exc:
            return await self._retry(link, call, exc)

    async def _retry(self, link: ActorLink, call: Any, first: NodeDown) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_deadline
        delay, error = 0.02, first
        while loop.time() + delay <= deadline:
            ACTOR_RETRIES.inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            try:
                return await link.call(call)
            except NodeDown as exc:
                error = exc
        kind, actor_id, method = call[:3]
        log.error("node unavailable for %s/%s.%s: %s", kind, actor_id, method, error)
        raise Unavailable("actor_node_unavailable", code="service_unavailable") from error

    def link(self, index: int) -> ActorLink:
        return self._links[index]

    async def check_health(self) -> None:
        """Raises unless every node answers its health check in time."""
        await asyncio.gather(*(link.check_health() for link in self._links))

    async def aclose(self) -> None:
        await asyncio.gather(*(link.aclose() for link in self._links), return_exceptions=True)
