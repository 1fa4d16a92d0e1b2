"""Benchmark of the virtual-actor runtime; run by hand from the repository root:

    python bench/actors.py

Starts a private local Ray and a scratch PostgreSQL database (dropped at the
end), then measures side by side:
- round trip of one call: in-process method, in-process actor-host mailbox
  (what a node's own sockets pay), bare async Ray actor, virtual actor on
  another process (directory -> Ray -> node -> actor -> back: what a call
  from another node, the scheduler or this driver pays);
- calls/s with 100 concurrent callers: bare Ray actor, virtual actors spread
  over many ids, all into one virtual actor, and many ids with the links
  capped at one batch in flight per node.
Bounded: a few thousand calls per row, at most ~10 s per throughput row.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/actors.py` puts bench/ first, not the root
    sys.path.insert(0, str(ROOT))

from unimatch.actors.base import VirtualActor  # noqa: E402

ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
LATENCY_CALLS = 3000
WARMUP_CALLS = 200
CALLERS = 100
CALLS_PER_CALLER = 60
ROW_TIME_LIMIT = 10.0


class Echo(VirtualActor):
    """The cheapest possible virtual actor: measures the runtime, not work."""

    kind = "echo"

    async def echo(self, value: Any) -> Any:
        return value


class BareEcho:
    """The same echo as a plain async Ray actor, one process of its own."""

    async def echo(self, value: Any) -> Any:
        return value


async def _latency(call: Callable[[int], Awaitable[Any]]) -> tuple[float, float]:
    """(median, p99) in microseconds of `call`, one at a time."""
    for i in range(WARMUP_CALLS):
        await call(i)
    samples = []
    for i in range(LATENCY_CALLS):
        start = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - start)
    samples.sort()
    return statistics.median(samples) * 1e6, samples[int(len(samples) * 0.99)] * 1e6


async def _throughput(call: Callable[[int, int], Awaitable[Any]]) -> float:
    """Calls/s of CALLERS concurrent callers, each calling in a loop."""
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + ROW_TIME_LIMIT
    done = 0

    async def caller(c: int) -> None:
        nonlocal done
        for i in range(CALLS_PER_CALLER):
            if loop.time() > stop_at:
                return
            await call(c, i)
            done += 1

    await asyncio.gather(*(caller(c) for c in range(8)))  # warm up
    done = 0
    start = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(CALLERS)))
    return done / (time.perf_counter() - start)


async def main() -> None:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray.init: loopback only
    import asyncpg
    import ray

    from unimatch.actors.base import Services
    from unimatch.actors.chat import MessageCommitter
    from unimatch.actors.directory import ActorDirectory
    from unimatch.actors.host import ActorHost
    from unimatch.actors.links import NodeHandles, RayLink, remote_directory
    from unimatch.domain.config import Config
    from unimatch.server.node import start_nodes, stop_nodes
    from unimatch.server.platform import free_port
    from unimatch.server.sockets import SocketRouter
    from unimatch.storage.cache import Cache, connect_redis
    from unimatch.storage.migrations import apply_migrations
    from unimatch.storage.pg import Database

    token = secrets.token_hex(4)
    database = f"unimatch_bench_{token}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    dsn = ADMIN_DSN.rpartition("/")[0] + f"/{database}"
    namespace = f"bench-{token}"
    nodes: list[Any] = []
    local_host: ActorHost | None = None
    db: Database | None = None
    cache: Cache | None = None
    try:
        await apply_migrations(dsn)
        config = Config(
            database_url=dsn,
            redis_url=REDIS_URL,
            redis_prefix=f"bench:{token}:",
            jwt_secret="bench",
            nodes=2,
            pg_pool_size=2,
            pg_pool_overflow=2,
            namespace=namespace,
            actor_kinds=(("echo", "bench.actors:Echo"),),
        )
        ray.init(
            namespace=namespace,
            num_cpus=2,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        )

        bare_class: Any = ray.remote(BareEcho)
        bare = bare_class.options(num_cpus=0, max_concurrency=10_000).remote()
        nodes = await asyncio.to_thread(start_nodes, config, "127.0.0.1", free_port())
        directory = remote_directory(namespace, config.nodes)
        handles = NodeHandles(namespace)
        capped = ActorDirectory(
            [RayLink(handles.of(i), max_in_flight=1) for i in range(config.nodes)])
        # An actor host in this process, as a node holds one: its own sockets'
        # calls go straight into the mailbox.
        db = await Database.connect(dsn, size=2, overflow=2)
        cache = Cache(connect_redis(REDIS_URL), config.redis_prefix)
        local_host = ActorHost(config)
        services = Services(
            config=config, db=db, cache=cache, actors=directory, sockets=SocketRouter([]),
            committer=MessageCommitter(db, cache), node_index=0,
        )
        local_host.start(services)
        direct = Echo("direct", services, None)  # type: ignore[arg-type]

        rows: list[tuple[str, str]] = []

        def latency_row(name: str, result: tuple[float, float]) -> None:
            rows.append((name, f"median {result[0]:7.1f} us   p99 {result[1]:7.1f} us"))
            print(rows[-1][0].ljust(48), rows[-1][1], flush=True)

        def throughput_row(name: str, rate: float) -> None:
            rows.append((name, f"{rate:9,.0f} calls/s"))
            print(rows[-1][0].ljust(48), rows[-1][1], flush=True)

        latency_row("in-process method call", await _latency(direct.echo))
        latency_row(
            "in-process actor-host mailbox",
            await _latency(lambda i: local_host.submit(("echo", "local", "echo", (i,), {}))),
        )
        latency_row("bare async Ray actor", await _latency(lambda i: bare.echo.remote(i)))
        latency_row(
            "virtual actor on a node (directory -> Ray -> node)",
            await _latency(lambda i: directory.call("echo", "one", "echo", i)),
        )

        throughput_row(
            f"{CALLERS} callers -> bare async Ray actor",
            await _throughput(lambda c, i: bare.echo.remote(i)),
        )
        throughput_row(
            f"{CALLERS} callers -> {CALLERS} virtual actors",
            await _throughput(lambda c, i: directory.call("echo", f"e{c}", "echo", i)),
        )
        throughput_row(
            f"{CALLERS} callers -> 1 virtual actor",
            await _throughput(lambda c, i: directory.call("echo", "hot", "echo", i)),
        )
        throughput_row(
            f"{CALLERS} callers -> {CALLERS} v. actors, cap 1 batch",
            await _throughput(lambda c, i: capped.call("echo", f"e{c}", "echo", i)),
        )
        stats = await asyncio.gather(*(node.stats.remote() for node in nodes))
        print()
        print(f"{'measure':48} result")
        print("-" * 90)
        for name, value in rows:
            print(f"{name:48} {value}")
        print(
            "nodes:",
            ", ".join(f"#{s['node']} activations {s['activations_total']}" for s in stats),
        )
    finally:
        if local_host is not None:
            await local_host.drain()
        if cache is not None:
            await cache.close()
        if db is not None:
            await db.close()
        if nodes:
            await asyncio.to_thread(stop_nodes, nodes)
        if ray.is_initialized():
            ray.shutdown()
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
