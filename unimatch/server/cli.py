"""The `unimatch` command: `serve`, `node` and `migrate`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from unimatch.domain.config import Config
from unimatch.domain.logs import configure_logging

log = logging.getLogger("unimatch")


@contextlib.contextmanager
def _services(config: Config) -> Iterator[Config]:
    """Embedded PostgreSQL / Redis for whichever URL is not set."""
    from unimatch.server.embedded import EmbeddedPostgres, EmbeddedRedis

    postgres = redis = None
    try:
        if config.database_url is None:
            postgres = EmbeddedPostgres(config.data_dir)
            config = replace(config, database_url=postgres.start())
        if config.redis_url is None:
            redis = EmbeddedRedis(config.data_dir)
            config = replace(config, redis_url=redis.start())
        yield config
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()


def _metrics_dir(config: Config) -> None:
    """All processes of this node write metrics to one folder, read by /metrics."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    path = (config.data_dir / "metrics").resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def _cluster_secret_missing() -> bool:
    """A cluster's nodes must sign and check tokens with one key: refuse to
    start one with a per-machine generated key."""
    ray_address = os.environ.get("RAY_ADDRESS")
    if ray_address and not os.environ.get("JWT_SECRET"):
        print(
            f"unimatch: RAY_ADDRESS is set ({ray_address}): every node of a cluster needs "
            "the same JWT_SECRET; set it (at least 32 bytes) in this machine's environment",
            file=sys.stderr, flush=True,
        )
        return True
    return False


def _plain_worker_logs() -> None:
    """Workers' stdout reaches ours line for line, unprefixed and
    undeduplicated, so each JSON log line stays one (see
    unimatch.domain.logs). Ray reads these when it is imported, which the
    platform module does."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.update(RAY_DISABLE_WORKER_LOG_PREFIX="1", RAY_DEDUP_LOGS="0")


def serve(args: argparse.Namespace, config: Config) -> int:
    _plain_worker_logs()
    configure_logging(config, process="cli")
    _metrics_dir(config)
    stop = threading.Event()
    serving = threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()
        if not serving.is_set():
            # Still starting: abandon the start (Platform.start stops what it
            # started) rather than wait for it to finish or hang.
            raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)

    from unimatch.server.platform import Platform, init_ray

    with _services(config) as config:
        started_ray = init_ray(config)
        # Ray's core worker installs its own fatal-signal handlers in the
        # driver; ours must win so SIGTERM means "drain and stop".
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)
        try:
            platform = Platform.start(config, args.host, args.port)
            serving.set()
            try:
                log.info("UniMatch listening on %s", platform.url, extra={"url": platform.url})
                while not stop.wait(0.5):
                    pass
                log.info("shutting down")
            finally:
                platform.stop()
        finally:
            if started_ray:
                import ray

                ray.shutdown()
    log.info("UniMatch stopped")
    return 0


def node(args: argparse.Namespace, config: Config) -> int:
    """Serve on this machine too, in a running cluster: one more node on the
    local Ray node, found by the others through their membership; SIGTERM
    drains it and leaves the others serving."""
    if not os.environ.get("RAY_ADDRESS"):
        print("unimatch node: set RAY_ADDRESS to the cluster's head", file=sys.stderr)
        return 2
    _plain_worker_logs()
    configure_logging(config, process="cli")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    from unimatch.server.node import leave_cluster, start_local_node
    from unimatch.server.platform import init_ray

    init_ray(config)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    import ray

    try:
        index, handle = start_local_node(config, args.port, args.host)
        where: Any = ray.get(handle.url.remote())
        url = where["url"]
        log.info("node-%d listening on %s", index, url, extra={"url": url})
        try:
            while not stop.wait(0.5):
                pass
            log.info("node-%d leaving the cluster", index)
        finally:
            leave_cluster(handle)
    finally:
        ray.shutdown()
    log.info("node stopped")
    return 0


def migrate(args: argparse.Namespace, config: Config) -> int:
    from unimatch.storage.migrations import apply_migrations

    configure_logging(config, process="cli", stream=sys.stderr)  # stdout is the result
    with _services(config) as config:
        assert config.database_url
        applied = asyncio.run(apply_migrations(config.database_url))
    print(f"applied {len(applied)} migration(s)" + (f": {applied}" if applied else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unimatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve", help="run the platform (HTTP + WebSocket)")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8080)
    serve_parser.set_defaults(run=serve)
    node_parser = sub.add_parser(
        "node", help="serve on this machine too, in a running cluster (RAY_ADDRESS)")
    node_parser.add_argument(
        "--host", default=None,
        help="address to listen on (default: UNIMATCH_NODE_HOST, else this machine's Ray address)")
    node_parser.add_argument("--port", type=int, default=8080)
    node_parser.set_defaults(run=node)
    migrate_parser = sub.add_parser("migrate", help="apply pending schema migrations")
    migrate_parser.set_defaults(run=migrate)
    args = parser.parse_args(argv)
    # Before the configuration is read: reading it makes this machine's own
    # JWT key when none is set, which a node of a cluster must never use.
    if args.command in ("serve", "node") and _cluster_secret_missing():
        return 2
    try:
        config = Config.from_env()
    except ValueError as exc:
        # A setting that cannot work (MEDIA_STORE=s3 without its keys, ...):
        # say which, without a traceback, before anything starts.
        print(f"unimatch: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        return int(args.run(args, config))
    except KeyboardInterrupt:  # a signal before the platform served: already cleaned up
        print("UniMatch stopped before it was up", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
