"""Bring the whole platform up on Ray, and down again in order.

Up: migrations, the nodes (each serves HTTP + WebSocket and hosts its share
of the virtual actors), then the scheduler (jobs). Down: every node's HTTP
first, so requests in flight finish and sockets close 1001; then the
scheduler; then the nodes' actors, which the scheduler's jobs may still call
until it stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import ray

from unimatch.domain.config import Config
from unimatch.scheduler.actor import start_scheduler, stop_scheduler
from unimatch.server.node import drain_http, start_nodes, stop_nodes
from unimatch.storage.migrations import apply_migrations

log = logging.getLogger("unimatch.server.platform")


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
    nodes: list[Any] = field(default_factory=list)
    scheduler: Any = None

    @classmethod
    def start(cls, config: Config, host: str = "127.0.0.1", port: int = 8080) -> Platform:
        """Start every part in the current Ray; stops what started if a later
        part fails, so a failed start leaves nothing running."""
        assert config.database_url and config.redis_url
        asyncio.run(apply_migrations(config.database_url))
        port = port or free_port(host)
        platform = cls(config=config, url=f"http://{host}:{port}")
        try:
            platform.nodes = start_nodes(config, host, port)
            platform.scheduler = start_scheduler(config)
            ray.get(platform.scheduler.ready.remote())
        except BaseException:
            platform.stop()
            raise
        return platform

    def stop(self) -> None:
        if self.nodes:
            drain_http(self.nodes)
        if self.scheduler is not None:
            stop_scheduler(self.scheduler)
            self.scheduler = None
        if self.nodes:
            stop_nodes(self.nodes)
            self.nodes = []
