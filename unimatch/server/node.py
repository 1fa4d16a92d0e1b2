"""The node: the one kind of server process (an Orleans silo, an Akka
cluster-sharding node, a Phoenix node), run as a Ray actor.

A node serves HTTP and WebSocket (aiohttp on its own event loop) and hosts
its share of the virtual actors (`actors.host.ActorHost`), the ones whose
rendezvous hash picks it. Everything is wired once, at start-up:

- calls to actors go through one `ActorDirectory` whose link for this node
  is in-process (`LocalLink`: straight into the mailbox) and for every other
  node a batched Ray call (`RayLink` to that node's `call_batch`);
- pushes to sockets go through one `SocketRouter` whose link for this node
  writes to the hub (`LocalSockets`) and for another node is a batched Ray
  call to its `push` (`RaySockets`).

Nothing above or below knows which case it is in. With one node every call
and push stays in the process; with N, a call crosses Ray with
probability (N-1)/N. Nodes share the port with SO_REUSEPORT; Ray places,
names (`node-{i}`) and restarts them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import ray
from aiohttp import web
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from unimatch.actors.base import Services
from unimatch.actors.chat import MessageCommitter
from unimatch.actors.directory import ActorDirectory, Membership
from unimatch.actors.links import (
    ClusterWatcher,
    LateAnswers,
    LocalLink,
    NodeHandles,
    RayLink,
    answer_batch,
    node_indices,
    node_name,
)
from unimatch.actors.ports import ActorLink, Delivery, Outcome
from unimatch.domain.config import Config
from unimatch.domain.logs import configure_logging
from unimatch.domain.process_metrics import ProcessMetrics, start_process_metrics
from unimatch.http.app import create_app
from unimatch.http.middleware import AccessLogger
from unimatch.server.ownership import OwnedHost
from unimatch.server.runtime import tune_gc
from unimatch.server.sockets import LocalSockets, RaySockets, SocketLink, SocketRouter
from unimatch.storage.cache import Cache, connect_redis
from unimatch.storage.pg import Database
from unimatch.ws.hub import SocketHub

log = logging.getLogger("unimatch.node")

SHUTDOWN_TIMEOUT = 10.0
# How long a leaving node waits for each other node to hear it leave.
LEAVE_NOTICE_TIMEOUT = 2.0
# How long a batch from another node waits for its slowest call before it
# is answered with what is done (the rest follow through `replies`).
BATCH_PATIENCE = 0.02


class Node:
    """Serves (host, port) and hosts virtual actors. `__init__` only
    schedules start-up (clients need the actor's event loop); `ready()`
    waits for it and re-raises its failure. Ray restarts a node that dies
    (nobody calls `ready` then, so start-up starts itself)."""

    def __init__(
        self, config: Config, index: int, host: str | None, port: int, *,
        name: str | None = None,
    ) -> None:
        self.config = config
        self.index = index
        # The Ray actor name other processes send late answers to.
        self.name = name or node_name(index)
        # In a cluster (host None) a node listens on its own machine: the
        # address Ray knows it by, or UNIMATCH_NODE_HOST / UNIMATCH_NODE_PORT
        # from that machine's `ray start` environment (workers inherit it).
        self.host_address = host or os.environ.get("UNIMATCH_NODE_HOST") or (
            ray.util.get_node_ip_address())
        self.port = port if host is not None else int(os.environ.get("UNIMATCH_NODE_PORT") or port)
        # A cluster's nodes come and go (see unimatch.server.ownership).
        self.cluster = config.ray_address is not None
        self._leaving = False
        self.actors = OwnedHost(config, index)
        self._watcher: ClusterWatcher | None = None
        self.hub = SocketHub(index, config)
        self._handles = NodeHandles(config.namespace)
        self._late: dict[str, LateAnswers] = {}
        self.runner: web.AppRunner | None = None
        self.directory: ActorDirectory | None = None
        self._db: Database | None = None
        self._cache: Cache | None = None
        self._process_metrics: ProcessMetrics | None = None
        configure_logging(config, process=self.name)
        self._started = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> None:
        config = self.config
        if not config.database_url or not config.redis_url:
            raise RuntimeError("a node needs database_url and redis_url")
        self._process_metrics = start_process_metrics("node")
        db = self._db = await Database.for_config(config)
        self._process_metrics.watch_pool(db.pool)
        cache = self._cache = Cache(connect_redis(config.redis_url), config.redis_prefix)
        actor_links: dict[int, ActorLink] = {self.index: LocalLink(self.actors)}
        socket_links: dict[int, SocketLink] = {self.index: LocalSockets(self.hub)}

        def make_link(i: int) -> ActorLink:
            socket_links.setdefault(i, RaySockets(self._handles.of(i)))
            return RayLink(self._handles.of(i), reply_to=self.name)

        # One machine: nodes 0..N-1, fixed. A cluster: whichever Ray names.
        for i in ([] if self.cluster else range(config.nodes)):
            if i != self.index:
                actor_links[i] = make_link(i)
        membership = Membership(actor_links, dynamic=self.cluster)
        self.directory = ActorDirectory(membership)
        self.actors.bind(membership, self._handoff if self.cluster else None)
        if self.cluster:
            self._watcher = ClusterWatcher(
                membership, config.namespace, self._handles, make_link, own=self.index)
            # Learn the others before owning anything.
            await self._watcher.refresh()
            self._watcher.start()
        self.actors.start(Services(
            config=config,
            db=db,
            cache=cache,
            actors=self.directory,
            sockets=SocketRouter(socket_links, lambda: membership.live),
            committer=MessageCommitter(db, cache),
            node_index=self.index,
        ))
        app = create_app(config, directory=self.directory, hub=self.hub, node_index=self.index,
                         db=db, cache=cache)
        self.runner = web.AppRunner(
            app,
            access_log_class=AccessLogger,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            handle_signals=False,
        )
        await self.runner.setup()
        site = web.TCPSite(
            self.runner, self.host_address, self.port,
            reuse_port=config.nodes > 1 or self.cluster, backlog=2048
        )
        await site.start()
        log.info("%s listening on %s:%s (pid %d)", self.name, self.host_address, self.port,
                 os.getpid())
        tune_gc()

    # -- lifecycle -----------------------------------------------------------

    async def ready(self) -> str:
        """Re-raise a start-up failure; the URL served once up."""
        await self._started
        return f"http://{self.host_address}:{self.port}"

    async def check_health(self) -> None:
        await self._started
        if self._leaving:
            raise RuntimeError(f"{self.name} is leaving the cluster")
        self.actors.check_health()

    async def leave(self) -> None:
        """Leave a cluster for good, serving all the while (`unimatch node`
        on SIGTERM; `drain` follows): this node stops answering health
        checks, drops itself from its own live set, so it owns nothing and
        passivates what it holds (queued calls and commits finish first), and
        tells every other node, which drops it at once. From then on its
        entities are activated elsewhere, each new owner asking this node to
        `release` it first; calls still routed here are answered `Moved`.
        Its sockets stay open until `drain` closes them (1001), so their
        users reconnect to the nodes that now own their entities."""
        await self._started
        if not self.cluster or self.directory is None or self._leaving:
            return
        self._leaving = True
        if self._watcher is not None:
            await self._watcher.aclose()
            self._watcher = None
        membership = self.directory.membership
        others = sorted(membership.live - {self.index})
        if not others:  # the last node: nobody to hand over to
            return
        membership.set_live(others)
        await asyncio.gather(*(self._tell_left(i) for i in others))
        log.info("%s left the cluster; nodes %s serve its entities", self.name, others)

    async def _tell_left(self, index: int) -> None:
        try:
            handle = await self._handles.of(index)()
            await asyncio.wait_for(handle.left.remote(self.index), LEAVE_NOTICE_TIMEOUT)
        except Exception as exc:  # it learns from its failed health checks instead
            log.info("node %d not told of %s leaving: %r", index, self.name, exc)

    async def left(self, index: int) -> None:
        """Node `index` leaves the cluster: route around it from now on
        (its failing health checks keep it out)."""
        await self._started
        if self.directory is not None:
            self.directory.membership.mark_down(index)

    async def drain_http(self) -> None:
        """Stop accepting, finish requests in flight, close sockets with
        1001; the actors stay up (other nodes may still call them)."""
        await self._started
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

    async def drain(self) -> None:
        """HTTP first, then passivate the actors, then close the clients."""
        await self.drain_http()
        if self._watcher is not None:
            await self._watcher.aclose()
        await self.actors.drain()
        if self.directory is not None:
            await self.directory.aclose()
        if self._cache is not None:
            await self._cache.close()
        if self._db is not None:
            await self._db.close()
        if self._process_metrics is not None:
            await self._process_metrics.stop()

    # -- from other nodes: calls, late answers, pushes -----------------------

    async def call_batch(self, items: list[tuple[int, Any]], reply_to: str | None) -> list[Any]:
        """Calls from another process, in its order (see actors.links); a
        call for an entity this node does not own is answered `Moved`."""
        await self._started
        late = self._late_answers(reply_to) if reply_to is not None else None
        return await answer_batch(self.actors, items, patience=BATCH_PATIENCE, late=late)

    async def _handoff(self, previous: int, kind: str, actor_id: str) -> None:
        """Ask node `previous` to give up `kind/actor_id` before this node
        activates it (see unimatch.server.ownership)."""
        handle = await self._handles.of(previous)()
        await handle.release.remote(self.index, kind, actor_id)

    async def release(self, by: int, kind: str, actor_id: str) -> None:
        """Node `by` takes `kind/actor_id` over: passivate it here; `by`
        answered, so it is live."""
        await self._started
        if self.directory is not None:
            self.directory.membership.mark_up(by)
        await self.actors.release(kind, actor_id)

    async def url(self) -> dict[str, Any]:
        """Where this node serves, for service discovery."""
        await self._started
        return {"node": self.index, "name": self.name,
                "url": f"http://{self.host_address}:{self.port}"}

    def _late_answers(self, reply_to: str) -> LateAnswers:
        late = self._late.get(reply_to)
        if late is None:
            namespace, index = self.config.namespace, self.index
            found: list[Any] = []

            async def send(answers: list[tuple[int, Outcome]]) -> None:
                if not found:
                    found.append(await asyncio.to_thread(
                        ray.get_actor, reply_to, namespace=namespace))
                await found[0].replies.remote(index, answers)

            late = self._late[reply_to] = LateAnswers(send)
        return late

    async def replies(self, from_index: int, answers: list[tuple[int, Outcome]]) -> None:
        """Late answers from node `from_index` to calls this node sent it."""
        await self._started
        assert self.directory is not None
        self.directory.link(from_index).resolve(answers)

    async def push(self, batch: list[Delivery]) -> list[bool]:
        """Frames from actors of another node to this node's sockets, in
        order; per delivery, whether the socket is still here."""
        await self._started
        return self.hub.deliver(batch)

    async def sockets_of(self, user_ids: list[str]) -> dict[str, list[str]]:
        """Connection ids of this node's sockets of each user."""
        await self._started
        return self.hub.sockets_of(user_ids)

    async def stats(self) -> dict[str, Any]:
        await self._started
        live = sorted(self.directory.membership.live) if self.directory is not None else []
        return {"node": self.index, "sockets": len(self.hub.connections), "live": live,
                **self.actors.stats()}


def actor_env() -> dict[str, str]:
    """The environment our Ray actors start with: Ray on loopback, and the
    Prometheus multiprocess folder when there is one."""
    keep = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "PROMETHEUS_MULTIPROC_DIR")
    env = {name: os.environ[name] for name in keep if os.environ.get(name)}
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    return env


def server_actor_options(config: Config, name: str) -> dict[str, Any]:
    """Ray options of a long-lived server actor (a node, the scheduler):
    named, restarted by Ray for ever, calls never retried by Ray (the
    directory does), async with room for thousands of calls at once."""
    return {
        "name": name,
        "namespace": config.namespace,
        "num_cpus": 0,
        "max_restarts": -1,
        "max_task_retries": 0,
        "max_concurrency": 10_000,
        "runtime_env": {"env_vars": actor_env()},
    }


def start_nodes(config: Config, host: str, port: int) -> list[ActorHandle]:
    """Create `config.nodes` nodes and wait until every one hosts and
    listens (blocking); none is left running if one fails.

    The nodes are not detached: they belong to the caller and die with it,
    so a crashed launcher leaves no orphans."""
    remote_cls: Any = ray.remote(Node)
    handles = [
        remote_cls.options(**server_actor_options(config, node_name(i))).remote(
            config, i, host, port
        )
        for i in range(config.nodes)
    ]
    try:
        ray.get([h.ready.remote() for h in handles])
    except BaseException:
        for handle in handles:
            ray.kill(handle, no_restart=True)
        raise
    return handles


# The custom resource a Ray node offers to serve: one node actor per unit.
NODE_RESOURCE = "unimatch_node"


def serving_ray_nodes() -> list[dict[str, Any]]:
    """The live Ray nodes that offer `NODE_RESOURCE` (blocking)."""
    return [n for n in ray.nodes()
            if n.get("Alive") and n.get("Resources", {}).get(NODE_RESOURCE, 0) >= 1]


def start_cluster_nodes(config: Config, port: int) -> list[ActorHandle]:
    """One node per Ray node that offers `NODE_RESOURCE`: each takes one
    unit, so Ray puts exactly one on each such machine (never two, never by
    chance). Each listens on its own machine's address (see `Node`). A node
    whose machine dies is restarted by Ray when a machine with a free unit
    joins (the same one back, or another)."""
    count = len(serving_ray_nodes())
    if count == 0:
        raise RuntimeError(
            f"no Ray node of the cluster offers the {NODE_RESOURCE!r} resource: start the "
            f"machines that serve with ray start --resources '{{\"{NODE_RESOURCE}\": 1}}'")
    remote_cls: Any = ray.remote(Node)
    handles = [
        remote_cls.options(
            **server_actor_options(config, node_name(i)), resources={NODE_RESOURCE: 1}
        ).remote(config, i, None, port)
        for i in range(count)
    ]
    try:
        ray.get([h.ready.remote() for h in handles])
    except BaseException:
        for handle in handles:
            ray.kill(handle, no_restart=True)
        raise
    return handles


def start_local_node(
    config: Config, port: int, host: str | None = None
) -> tuple[int, ActorHandle]:
    """One more node on this machine's Ray node, for a running cluster
    (`unimatch node`): the next free index, pinned to the local Ray node,
    owned by the caller. The others find it through their membership.

    It listens on `host` (default UNIMATCH_NODE_HOST, else the address Ray
    knows this machine by) and on `port` as given: not on the port the Ray
    node's environment names for the node `unimatch serve` puts there."""
    index = max(node_indices(config.namespace), default=-1) + 1
    local = ray.get_runtime_context().get_node_id()
    host = host or os.environ.get("UNIMATCH_NODE_HOST") or ray.util.get_node_ip_address()
    remote_cls: Any = ray.remote(Node)
    handle = remote_cls.options(
        **{**server_actor_options(config, node_name(index)), "max_restarts": 0},
        scheduling_strategy=NodeAffinitySchedulingStrategy(local, soft=False),
    ).remote(config, index, host, port)
    try:
        ray.get(handle.ready.remote())
    except BaseException:
        ray.kill(handle, no_restart=True)
        raise
    return index, handle


def leave_cluster(handle: ActorHandle, *, timeout: float = 30.0) -> None:
    """A node started by `start_local_node` leaves the cluster (its entities
    move to the others, see `Node.leave`), then drains and ends."""
    try:
        ray.get(handle.leave.remote(), timeout=timeout)
    except Exception as exc:  # it is stopped all the same; the others see it go
        log.warning("leaving the cluster failed: %r", exc)
    stop_nodes([handle], timeout=timeout)


def drain_http(handles: list[ActorHandle], *, timeout: float = SHUTDOWN_TIMEOUT + 5) -> None:
    """Close every node's HTTP and sockets (actors stay up until `stop_nodes`)."""
    try:
        ray.get([h.drain_http.remote() for h in handles], timeout=timeout)
    except Exception as exc:  # a node that cannot drain is stopped all the same
        log.warning("HTTP drain of nodes failed: %r", exc)


def stop_nodes(handles: list[ActorHandle], *, timeout: float = 30.0) -> None:
    """Drain every node (passivating its actors), then end it for good."""
    try:
        ray.get([h.drain.remote() for h in handles], timeout=timeout)
    except Exception as exc:  # a node that cannot drain is killed all the same
        log.warning("drain before stop failed: %r", exc)
    for handle in handles:
        ray.kill(handle, no_restart=True)
