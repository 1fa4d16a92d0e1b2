"""Reach any virtual actor: route by hash over the live nodes to the
owner's link, retry while a node is down or an entity moves."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from unimatch.actors.ports import ActorLink, Moved, NodeDown, NodeLeft
from unimatch.actors.routing import pick_host
from unimatch.domain.errors import Unavailable
from unimatch.domain.metrics import ACTOR_RETRIES, CLUSTER_MEMBERSHIP_CHANGES, CLUSTER_NODES_LIVE

log = logging.getLogger("unimatch.actors")

# How long a node marked down stays a candidate to ask for a hand-off.
RECENTLY_DOWN = 60.0


class Membership:
    """The nodes this process knows (index -> link) and which of them are
    live: the set rendezvous routing picks owners from.

    Fixed (the one-machine default): every known node is live for ever and
    a call to a restarting node waits for Ray to bring it back. Dynamic (a
    cluster): a watcher (`links.ClusterWatcher`) adds nodes as Ray names
    them and sets the live ones from their health; a call that finds a node
    unreachable marks it down at once, so calls re-route without waiting
    for Ray to declare the node dead. Listeners run on every change."""

    def __init__(
        self, links: Mapping[int, ActorLink], *, dynamic: bool = False,
        live: Collection[int] | None = None,
    ) -> None:
        if not links:
            raise ValueError("a directory needs at least one node")
        self.links: dict[int, ActorLink] = dict(links)
        self.dynamic = dynamic
        self.live: frozenset[int] = frozenset(self.links if live is None else live)
        self.changed_at = time.monotonic()
        self._down_at: dict[int, float] = {}
        self._listeners: list[Callable[[], None]] = []
        CLUSTER_NODES_LIVE.set(len(self.live))

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def add(self, index: int, link: ActorLink) -> None:
        self.links.setdefault(index, link)

    def set_live(self, live: Collection[int]) -> bool:
        """Make `live` the live set; True (and listeners told) if it changed."""
        new = frozenset(i for i in live if i in self.links)
        if new == self.live or not new:
            return False
        now = time.monotonic()
        for gone in self.live - new:
            self._down_at[gone] = now
            # Calls it accepted and still owes die with it: retried elsewhere.
            fail = getattr(self.links[gone], "fail_waiting", None)
            if fail is not None:
                fail(NodeLeft(f"node {gone} left"))
        for back in new - self.live:
            self._down_at.pop(back, None)
        log.info("live nodes %s -> %s", sorted(self.live), sorted(new))
        self.live, self.changed_at = new, now
        CLUSTER_NODES_LIVE.set(len(new))
        CLUSTER_MEMBERSHIP_CHANGES.inc()
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # one listener must not stop the others
                log.exception("membership listener failed")
        return True

    def mark_down(self, index: int) -> None:
        if self.dynamic and index in self.live and len(self.live) > 1:
            self.set_live(self.live - {index})

    def mark_up(self, index: int) -> None:
        if self.dynamic and index in self.links and index not in self.live:
            self.set_live(self.live | {index})

    def owner(self, kind: str, actor_id: str) -> int:
        return pick_host(kind, actor_id, self.live)

    def recently_down(self) -> set[int]:
        cutoff = time.monotonic() - RECENTLY_DOWN
        return {i for i, at in self._down_at.items() if at >= cutoff}


class ActorDirectory:
    """Calls virtual actors on a set of nodes, one link per node.

    `call(kind, id, method, *args, **kwargs)` goes to the node chosen by
    rendezvous hashing of (kind, id) over the live nodes, through that
    node's link: in-process for this node, Ray for another (chosen once,
    when the links were built; this class never asks which).

    Retries: while a node is dead or being restarted by Ray, or the entity
    moved to another node (`Moved`), a call is retried with capped
    exponential backoff, re-routed each time, until `retry_deadline`
    seconds have passed, then fails with `Unavailable`. A node that died
    mid-call may already have run it, so a retried call can run twice:
    every method with effects must be idempotent. Errors raised by the actor
    itself are never retried; they reach the caller as the same class
    (domain errors keep their fields).
    """

    def __init__(
        self, links: Sequence[ActorLink] | Membership, *, retry_deadline: float = 30.0
    ) -> None:
        self.membership = (
            links if isinstance(links, Membership) else Membership(dict(enumerate(links)))
        )
        self.retry_deadline = retry_deadline

    @property
    def node_count(self) -> int:
        return len(self.membership.live)

    def node_for(self, kind: str, actor_id: str) -> int:
        return self.membership.owner(kind, actor_id)

    async def call(self, kind: str, actor_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run `method(*args, **kwargs)` on virtual actor `kind/actor_id`.

        Idempotency required: see the class docstring on retries."""
        call = (kind, actor_id, method, args, kwargs)
        index = self.node_for(kind, actor_id)
        try:
            return await self.membership.links[index].call(call)
        except NodeDown as exc:
            self._note(index, exc)
            return await self._retry(call, exc)

    def _note(self, index: int, exc: NodeDown) -> None:
        if not isinstance(exc, Moved | NodeLeft):
            self.membership.mark_down(index)

    async def _retry(self, call: Any, first: NodeDown) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_deadline
        delay, error = 0.02, first
        kind, actor_id, method = call[:3]
        while loop.time() + delay <= deadline:
            ACTOR_RETRIES.inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25 if self.membership.dynamic else 1.0)
            index = self.node_for(kind, actor_id)
            try:
                return await self.membership.links[index].call(call)
            except NodeDown as exc:
                self._note(index, exc)
                error = exc
        log.error("node unavailable for %s/%s.%s: %s", kind, actor_id, method, error)
        raise Unavailable("actor_node_unavailable", code="service_unavailable") from error

    def link(self, index: int) -> ActorLink:
        return self.membership.links[index]

    async def check_health(self) -> None:
        """Raises unless every live node answers its health check in time."""
        links = self.membership.links
        await asyncio.gather(*(links[i].check_health() for i in self.membership.live))

    async def aclose(self) -> None:
        await asyncio.gather(
            *(link.aclose() for link in self.membership.links.values()), return_exceptions=True)
