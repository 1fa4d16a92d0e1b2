"""Bring the whole platform up on Ray, and down again in order.

Up: migrations, the nodes (each serves HTTP + WebSocket and hosts its share
of the virtual actors), then the scheduler (jobs). Down: every node's HTTP
first, so requests in flight finish and sockets close 1001; then the
scheduler; then the nodes' actors, which the scheduler's jobs may still call
until it stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ray

from unimatch.domain.config import Config
from unimatch.scheduler.actor import start_scheduler, stop_scheduler
from unimatch.server.node import drain_http, start_cluster_nodes, start_nodes, stop_nodes
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


# How often the Prometheus targets file is brought up to date.
TARGETS_EVERY = 2.0
TARGETS_TIMEOUT = 1.0


def targets_path(config: Config) -> Path:
    return config.data_dir / "prometheus" / "targets.json"


def write_targets(path: Path, nodes: list[dict[str, Any]]) -> bool:
    """Prometheus file-based service discovery: one target per node's
    /metrics, labelled by node. Written atomically, only when it changed."""
    groups = [
        {"targets": [urlsplit(n["url"]).netloc], "labels": {"node": n["name"]}}
        for n in sorted(nodes, key=lambda n: n["node"])
    ]
    text = json.dumps(groups, indent=2) + "\n"
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def serving_nodes(namespace: str) -> list[dict[str, Any]]:
    """Where each node Ray names in `namespace` serves, if it answers soon."""
    from unimatch.actors.links import node_indices, node_name

    found: list[dict[str, Any]] = []
    for index in node_indices(namespace):
        try:
            handle = ray.get_actor(node_name(index), namespace=namespace)
            where: Any = ray.get(handle.url.remote(), timeout=TARGETS_TIMEOUT)
            found.append(where)
        except Exception:  # down or starting: not a target now
            continue
    return found


@dataclass
class Platform:
    config: Config
    url: str
    nodes: list[Any] = field(default_factory=list)
    scheduler: Any = None
    _stop_targets: threading.Event = field(default_factory=threading.Event)
    _targets: threading.Thread | None = None

    @classmethod
    def start(cls, config: Config, host: str = "127.0.0.1", port: int = 8080) -> Platform:
        """Start every part in the current Ray; stops what started if a later
        part fails, so a failed start leaves nothing running."""
        assert config.database_url and config.redis_url
        asyncio.run(apply_migrations(config.database_url))
        port = port or free_port(host)
        platform = cls(config=config, url=f"http://{host}:{port}")
        try:
            if config.ray_address:
                # A cluster: one node per Ray node offering the resource.
                platform.nodes = start_cluster_nodes(config, port)
                urls: list[dict[str, Any]] = ray.get([h.url.remote() for h in platform.nodes])
                platform.url = urls[0]["url"]
                config = replace(config, nodes=len(platform.nodes))
            else:
                platform.nodes = start_nodes(config, host, port)
            platform.scheduler = start_scheduler(config)
            ray.get(platform.scheduler.ready.remote())
        except BaseException:
            platform.stop()
            raise
        platform._targets = threading.Thread(
            target=platform._keep_targets, name="prometheus-targets", daemon=True)
        platform._targets.start()
        return platform

    def _keep_targets(self) -> None:
        path = targets_path(self.config)
        while True:
            try:
                if write_targets(path, serving_nodes(self.config.namespace)):
                    log.info("prometheus targets written to %s", path)
            except Exception as exc:  # keep trying: Ray may be briefly unreachable
                log.warning("prometheus targets not written: %r", exc)
            if self._stop_targets.wait(TARGETS_EVERY):
                return

    def stop(self) -> None:
        self._stop_targets.set()
        if self._targets is not None:
            self._targets.join(timeout=10)
            self._targets = None
        if self.nodes:
            drain_http(self.nodes)
        if self.scheduler is not None:
            stop_scheduler(self.scheduler)
            self.scheduler = None
        if self.nodes:
            stop_nodes(self.nodes)
            self.nodes = []
