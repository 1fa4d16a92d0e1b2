"""The gateway: the aiohttp app running inside a Ray actor.

Living in an actor (as Ray Serve's proxies do) lets shard hosts call
`gateway.push(...)` to write frames to the sockets this process holds.
Several gateways on one node share the port with SO_REUSEPORT.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import ray
from aiohttp import web

from unimatch.config import Config
from unimatch.http.app import create_app
from unimatch.http.middleware import AccessLogger
from unimatch.logs import configure_logging
from unimatch.runtime import tune_gc

log = logging.getLogger("unimatch.gateway")

GATEWAY_NAME = "gateway-{index}"
SHUTDOWN_TIMEOUT = 10.0


def gateway_name(index: int) -> str:
    return GATEWAY_NAME.format(index=index)


class Gateway:
    """Serves HTTP + WebSocket on (host, port); `push` delivers frames from
    actors to this gateway's sockets."""

    def __init__(
        self, config: Config, index: int, host: str, port: int, *, local_host: Any = None
    ) -> None:
        self.config = config
        # The shard host sharing this process, if any (unimatch.node).
        self.local_host = local_host
        self.index = index
        self.gateway_id = gateway_name(index)
        self.host = host
        self.port = port
        self.runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self._started = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> None:
        from unimatch.actors.directory import ActorDirectory

        if self.local_host is None:  # a node names its own process
            configure_logging(self.config, process=self.gateway_id)
        # A few calls in flight per host, the rest gathered into the next one:
        # under load many requests share one Ray call (about a millisecond of
        # CPU each, whatever it carries). The hosts never call back through
        # this directory, so the cap cannot deadlock.
        directory = ActorDirectory.lookup(
            self.config.namespace,
            self.config.shard_hosts,
            max_in_flight=self.config.gateway_calls_in_flight,
        )
        if self.local_host is not None:
            directory.bind_local(self.index, self.local_host)
        self.app = create_app(self.config, directory=directory, gateway_id=self.gateway_id)
        self.runner = web.AppRunner(
            self.app,
            access_log_class=AccessLogger,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            handle_signals=False,
        )
        await self.runner.setup()
        site = web.TCPSite(
            self.runner, self.host, self.port, reuse_port=self.config.gateways > 1, backlog=2048
        )
        await site.start()
        log.info("gateway %s listening on %s:%s (pid %d)", self.gateway_id, self.host,
                 self.port, os.getpid())
        tune_gc()

    async def ready(self) -> str:
        """Re-raise a startup failure; the URL served once up."""
        await self._started
        return f"http://{self.host}:{self.port}"

    async def check_health(self) -> None:
        await self._started

    async def push(self, batch: list[tuple[str, Any]]) -> list[bool]:
        """Deliver `(connection_id, frame)` pairs to this gateway's sockets, in
        order; one call carries every frame a shard host had for this gateway
        in one tick. Returns, per pair, whether the socket was still here."""
        await self._started
        assert self.app is not None
        from unimatch.ws.hub import HUB

        return self.app[HUB].deliver(batch)

    def deliver_now(self, batch: list[tuple[str, Any]]) -> list[bool]:
        """`push` for a caller in this process: delivered before it returns.
        Before the app is up there is no socket to reach."""
        if self.app is None:
            return [False] * len(batch)
        from unimatch.ws.hub import HUB

        return self.app[HUB].deliver(batch)

    def sockets_now(self, user_ids: list[str]) -> dict[str, list[str]]:
        """`sockets_of` for a caller in this process."""
        if self.app is None:
            return {u: [] for u in user_ids}
        from unimatch.ws.hub import HUB

        return self.app[HUB].sockets_of(user_ids)

    async def sockets_of(self, user_ids: list[str]) -> dict[str, list[str]]:
        """Connection ids of the sockets this gateway holds for each user: a
        UserActor activated after its host restarted finds its sockets here."""
        await self._started
        assert self.app is not None
        from unimatch.ws.hub import HUB

        return self.app[HUB].sockets_of(user_ids)

    async def drain(self) -> None:
        """Stop accepting, finish requests in flight, close sockets with 1001."""
        await self._started
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()


def start_gateways(config: Config, host: str, port: int) -> list[Any]:
    """Create the gateway actors and wait until every one listens."""
    from unimatch.actors.host import server_actor_options

    cls: Any = ray.remote(Gateway)
    handles = [
        cls.options(**server_actor_options(config, gateway_name(i))).remote(config, i, host, port)
        for i in range(config.gateways)
    ]
    ray.get([h.ready.remote() for h in handles])
    return handles


def stop_gateways(handles: list[Any]) -> None:
    try:
        ray.get([h.drain.remote() for h in handles], timeout=SHUTDOWN_TIMEOUT + 5)
    except Exception as exc:  # a gateway already gone has nothing to drain
        log.warning("gateway drain failed: %r", exc)
    for handle in handles:
        ray.kill(handle, no_restart=True)

