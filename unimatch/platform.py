"""Bring the whole platform up on Ray, and down again in order.

Up: migrations, shard hosts (the virtual actors), the scheduler (jobs), then
the gateways (HTTP + WebSocket), which need the other two. Down: the reverse,
draining gateways first so in-flight requests finish and sockets close 1001.
With `colocated`, nodes (unimatch.node) are both hosts and gateways: they
start first, and stop in two steps around the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from unimatch.config import Config
from unimatch.storage.migrations import apply_migrations

log = logging.getLogger("unimatch.platform")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def init_ray(config: Config) -> bool:
    """Join `RAY_ADDRESS`, or start a local Ray on loopback. True when this
    call started Ray (and so must shut it down)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray starts its workers at nice 15; ours serve users, so they run at the
    # same priority as PostgreSQL and Redis.
    os.environ.setdefault("RAY_worker_niceness", "0")
    # Workers' stdout reaches ours line for line, unprefixed and undeduplicated,
    # so each JSON log line stays one (see unimatch.logs).
    os.environ.update(RAY_DISABLE_WORKER_LOG_PREFIX="1", RAY_DEDUP_LOGS="0")
    import ray

    if ray.is_initialized():
        return False
    if config.ray_address:
        ray.init(address=config.ray_address, namespace=config.namespace, log_to_driver=True)
    else:
        # "local" starts a Ray of our own even if `ray start` left one running.
        ray.init(
            address="local",
            namespace=config.namespace,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=True,
        )
    return True


@dataclass
class Platform:
    config: Config
    url: str
    hosts: list[Any] = field(default_factory=list)
    scheduler: Any = None
    gateways: list[Any] = field(default_factory=list)

    @classmethod
    def start(cls, config: Config, host: str = "127.0.0.1", port: int = 8080) -> Platform:
        """Start every part in the current Ray; stops what started if a later
        part fails, so a failed start leaves nothing running."""
        import ray

        from unimatch.actors.host import start_shard_hosts
        from unimatch.http.gateway import start_gateways
        from unimatch.scheduler.actor import start_scheduler

        assert config.database_url and config.redis_url
        asyncio.run(apply_migrations(config.database_url))
        port = port or free_port(host)
        if config.colocated:  # one gateway in each shard host's process
            config = config.with_(gateways=config.shard_hosts)
        platform = cls(config=config, url=f"http://{host}:{port}")
        try:
            if config.colocated:
                from unimatch.node import start_nodes

                platform.hosts = platform.gateways = start_nodes(config, host, port)
            else:
                platform.hosts = start_shard_hosts(config)
            platform.scheduler = start_scheduler(config)
            ray.get(platform.scheduler.ready.remote())
            if not config.colocated:
                platform.gateways = start_gateways(config, host, port)
        except BaseException:
            platform.stop()
            raise
        return platform

    def stop(self) -> None:
        from unimatch.actors.host import stop_shard_hosts
        from unimatch.http.gateway import stop_gateways
        from unimatch.node import drain_node_gateways
        from unimatch.scheduler.actor import stop_scheduler

        if self.config.colocated and self.gateways:
            # Nodes: sockets and HTTP first, the actors after the scheduler.
            drain_node_gateways(self.gateways)
            self.gateways = []
        elif self.gateways:
            stop_gateways(self.gateways)
            self.gateways = []
        if self.scheduler is not None:
            stop_scheduler(self.scheduler)
            self.scheduler = None
        if self.hosts:
            stop_shard_hosts(self.hosts)
            self.hosts = []
