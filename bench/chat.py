"""Chat benchmark over real sockets: the platform against a bare relay.

Run by hand from the repository root (each run is bounded: a rate runs
`--seconds`, then at most 5 s of drain; every server is on loopback):

    python bench/chat.py                             # the default layout, 2,000 users
    python bench/chat.py --nodes 1,2                 # NODES=1 and NODES=2 side by side
    python bench/chat.py --rates 1000,2000,4000 --seconds 6 --profile 0
    python bench/chat.py --only relay,ray-relay      # the two ceilings alone
    python bench/chat.py --cluster --users 1000 --seconds 4   # one, then two Ray nodes

Targets, all up at once and loaded in turn at each rate (so a change in the
machine's background load falls on all of them alike):

- `platform` (or `platform-N` with `--nodes`): started as `unimatch serve`
  starts it with no layout settings (`Platform.start` in a private local
  Ray, metrics in a multiprocess folder), on a scratch PostgreSQL database
  dropped at the end and Redis under a key prefix of its own;
- `relay`: bench/relay.py, aiohttp alone in a process of its own (no
  actors, no database, no auth, the same frames);
- `ray-relay`: the same relay app inside an async Ray actor
  (bench/ray_relay.py), as a node hosts aiohttp: what Ray's worker costs
  (its threads, the GIL), told apart from the platform's own code.

Each target has `--users` users in users/2 matches, one socket each, held by
`--workers` load-generator processes (bench/loadgen.py), so the generator
is not the server's process. Each rate is an open loop of Poisson arrivals
(bursts as users make them) and latency runs from the scheduled send time;
the generator's lag behind its schedule is reported. Per run: delivery
(send -> `message` at the other user) and ack p50/p95/p99, goodput
(messages delivered to the recipient within the window, per second),
refusals by code (`overloaded` = shed), loss (an acked seq the recipient
never got), duplicates (a seq twice on one socket, or a `message` on the
sending socket), order violations (a seq below one already seen on that
socket), and the server's CPU per delivered message (its process, from
/proc; PostgreSQL's backends apart).

A target is swept until its delivery p99 crosses 50 ms at two rates in a
row (one crossing alone may be a burst of the machine's other load); its
best rate is the highest one with p99 under 50 ms and no loss, duplicate or
order violation. Then each platform
runs at 2x and 4x its best rate (goodput under overload), and `--profile`
seconds of py-spy record the default platform's node, the relay and the
relay in Ray at the platform's best rate.

`--cluster`: a Ray cluster on this machine as tests/test_cluster.py runs
it (tests/ray_nodes.py `LoopbackCluster`: `ray start` nodes on loopback,
token auth, each offering one UniMatch node on a port of its own), and the
platform started as `unimatch serve` starts it on a cluster (one node per
Ray node). First with the head alone (`cluster-1`), then with a second Ray
node joined (`cluster-2`), each swept in turn as above once the hand-off
window after its nodes met has passed (`server.ownership.HANDOFF_WINDOW`),
each user's socket on a node drawn at random (as a load balancer spreads
them). Reported: the
best rate and delivery p99 of each; the share of messages that crossed
nodes, from the routing (`actors.routing.pick_host`) of each user's send:
its socket's node to the match's node, the match's node to both users'
actors' nodes, the recipient's actor's node to its socket's node, any of
these hops being a Ray call; and the CPU of a message, all its nodes'
processes together, with one node (every hop local) and with two, at each
rate both ran: a run's CPU less what the nodes spend idle (over `--seconds`
after the warm-up, every socket open, nothing sent), per message delivered; from which
the extra CPU of a Ray hop and of a message that crossed: (cpu2 - cpu1) /
hops, and cpu1 + (cpu2 - cpu1) / crossed share. Relays, overload and
py-spy are not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
for entry in (str(ROOT), str(BENCH)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import asyncpg  # noqa: E402
from loadgen import worker_main  # noqa: E402

from unimatch.actors.routing import pick_host  # noqa: E402

ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
WARM_UP_RATE = 400
P99_LIMIT_MS = 50.0
MISSES_TO_STOP = 2
PG_POOL = (6, 4)  # size, overflow of each platform process's pool
CLK_TCK = os.sysconf("SC_CLK_TCK")
PY_SPY_RATE = 100

NEW_USERS = """
INSERT INTO users (email, password_hash, display_name, is_verified, verified_at)
SELECT 'bench-' || $1 || '-' || g || '@uonbi.ac.ke', 'x', 'Bench ' || g, true, now()
FROM generate_series(1, $2) g
RETURNING id"""


def pct(values: list[float], q: float) -> float:
    """The q-quantile of sorted `values`, in ms."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


# -- servers -----------------------------------------------------------------


@dataclass
class Server:
    """One target: where its users connect, and the processes to measure."""

    name: str
    urls: list[str]
    matches: list[str]
    pids: list[int] = field(default_factory=list)
    loop_tids: dict[int, int] = field(default_factory=dict)  # pid -> event-loop thread
    db_name: str | None = None  # whose PostgreSQL backends to count
    stop: Any = None
    users: list[str] = field(default_factory=list)  # a platform's: user ids, as urls
    socket_nodes: list[int] = field(default_factory=list)  # each user's socket's node
    live: list[int] = field(default_factory=list)  # its node indices


def crossing(server: Server) -> tuple[float, float]:
    """Of the messages of a platform whose nodes each have an address (its
    users send alike): the share that crossed nodes, and the Ray hops per
    message. A message's hops: the sender's socket's node to the match's
    node (the send and its ack), the match's node to each user's actor's
    node (the pushes), the recipient's actor's node to its socket's node."""
    live = server.live
    crossed = hops = 0
    senders = range(len(server.matches))
    for i in senders:
        partner = i ^ 1  # users 2i and 2i+1 share match i
        match = pick_host("match", server.matches[i], live)
        sender_actor = pick_host("user", server.users[i], live)
        recipient_actor = pick_host("user", server.users[partner], live)
        path = [(server.socket_nodes[i], match), (match, sender_actor),
                (match, recipient_actor), (recipient_actor, server.socket_nodes[partner])]
        ray_hops = sum(here != there for here, there in path)
        hops += ray_hops
        crossed += ray_hops > 0
    return crossed / len(senders), hops / len(senders)


def thread_cpu(pid: int) -> dict[int, tuple[str, int]]:
    """CPU ticks (user + system) of each thread of `pid`, with its name."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        threads[int(task.name)] = (name, int(fields[11]) + int(fields[12]))
    return threads


def process_cpu(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


# One connection kept for the whole run: PostgreSQL's 100 clients are shared
# with the platforms' pools and the machine's other work.
_admin: list[asyncpg.Connection] = []


async def backend_pids(db_name: str) -> list[int]:
    """PostgreSQL's backend processes serving `db_name` (none if it cannot tell)."""
    try:
        if not _admin:
            _admin.append(await asyncpg.connect(ADMIN_DSN))
        rows = await _admin[0].fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", db_name)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"# PostgreSQL backends not counted: {exc!r}", flush=True)
        return []
    return [r["pid"] for r in rows]


@dataclass
class CpuSample:
    server: dict[int, dict[int, tuple[str, int]]]
    pg: dict[int, int]

    @classmethod
    async def take(cls, server: Server) -> CpuSample:
        pg = {}
        if server.db_name is not None:
            pg = {pid: process_cpu(pid) for pid in await backend_pids(server.db_name)}
        return cls({pid: thread_cpu(pid) for pid in server.pids}, pg)

    def since(self, before: CpuSample, server: Server) -> dict[str, float]:
        """Seconds of CPU since `before`: the server's processes, their
        event-loop threads, every other thread by name, and PostgreSQL."""
        total = loop = 0
        others: Counter[str] = Counter()
        for pid, threads in self.server.items():
            earlier = before.server.get(pid, {})
            for tid, (name, ticks) in threads.items():
                used = ticks - earlier.get(tid, (name, 0))[1]
                total += used
                if tid == server.loop_tids.get(pid):
                    loop += used
                else:
                    others[name] += used
        pg = sum(ticks - before.pg.get(pid, 0) for pid, ticks in self.pg.items())
        return {
            "server": total / CLK_TCK,
            "loop": loop / CLK_TCK,
            "pg": pg / CLK_TCK,
            "threads": {name: ticks / CLK_TCK for name, ticks in others.most_common(6) if ticks},
        }


async def make_users(dsn: str, n: int) -> list[uuid.UUID]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(NEW_USERS, secrets.token_hex(4), n)
        return [r["id"] for r in rows]
    finally:
        await conn.close()


async def make_matches(dsn: str, users: list[uuid.UUID]) -> list[str]:
    """Users 2i and 2i+1 in match i; the match id of each user."""
    from unimatch.domain.pairs import ordered, pair_id

    conn = await asyncpg.connect(dsn)
    try:
        rows = []
        for i in range(0, len(users) - 1, 2):
            a, b = ordered(users[i], users[i + 1])
            rows.append((pair_id(a, b), a, b))
        await conn.executemany("INSERT INTO matches (id, user_a, user_b) VALUES ($1, $2, $3)",
                               rows)
        return [str(r[0]) for r in rows for _ in (0, 1)]
    finally:
        await conn.close()


def loop_thread(node: Any) -> int:
    """In a node's process: the native id of the thread running its event loop."""
    ident = node._started.get_loop()._thread_id
    return threading._active[ident].native_id  # type: ignore[attr-defined]


async def start_platform(
    name: str, nodes: int | None, dsn: str, db_name: str, users: int,
    ray_address: str | None = None,
) -> Server:
    """The platform as `unimatch serve` starts it: `Config.from_env` with
    no layout settings (NODES only when asked), `Platform.start`; on the
    cluster at `ray_address` when given, each user's socket on a node drawn
    at random when the nodes listen on addresses of their own."""
    from unimatch.domain import tokens
    from unimatch.domain.config import Config
    from unimatch.server.platform import Platform, free_port, init_ray

    namespace = f"{db_name}-{name}"
    env = {
        "DATABASE_URL": dsn,
        "REDIS_URL": REDIS_URL,
        "JWT_SECRET": secrets.token_hex(16),
        "REDIS_PREFIX": f"bench:{namespace}:",
        "RAY_NAMESPACE": namespace,
        "UNIMATCH_DATA_DIR": (data_dir := tempfile.mkdtemp(prefix="unimatch-bench-")),
    }
    if nodes is not None:
        env["NODES"] = str(nodes)
    if ray_address is not None:
        env["RAY_ADDRESS"] = ray_address
    # The one setting that is not serve's default: PostgreSQL here allows 100
    # clients, shared with other work on the machine, and every process of
    # every platform in the run has a pool.
    env.update({"PG_POOL_SIZE": str(PG_POOL[0]), "PG_POOL_OVERFLOW": str(PG_POOL[1])})
    config = Config.from_env(env, dotenv=False)
    init_ray(config)
    platform = await asyncio.to_thread(Platform.start, config, "127.0.0.1", free_port())
    ids = await make_users(dsn, users)
    matches = await make_matches(dsn, ids)
    stats = await asyncio.gather(*(h.stats.remote() for h in platform.nodes))
    tids = await asyncio.gather(*(
        h.__ray_call__.remote(loop_thread) for h in platform.nodes
    ))
    where = await asyncio.gather(*(h.url.remote() for h in platform.nodes))
    pids = [s["pid"] for s in stats]
    # Nodes sharing one port (SO_REUSEPORT): one URL, the kernel spreads.
    node_urls = {w["node"]: w["url"] for w in where}
    socket_nodes: list[int] = []
    if len(set(node_urls.values())) == len(node_urls):
        draw = random.Random(0)
        socket_nodes = [draw.choice(sorted(node_urls)) for _ in ids]
    print(f"# {name}: {len(platform.nodes)} node(s), pids {pids}, {sorted(node_urls.values())}",
          flush=True)
    base = [node_urls[n] for n in socket_nodes] or [platform.url] * len(ids)
    return Server(
        name=name,
        urls=[f"{url}/ws?token={tokens.issue_access(config, u)}"
              for u, url in zip(ids, base, strict=True)],
        matches=matches,
        pids=pids,
        loop_tids=dict(zip(pids, tids, strict=True)),
        db_name=db_name,
        stop=lambda: (platform.stop(), shutil.rmtree(data_dir, ignore_errors=True)),
        users=[str(u) for u in ids],
        socket_nodes=socket_nodes,
        live=sorted(node_urls),
    )


async def wait_listening(port: int, bound: float = 30.0) -> None:
    """Wait (bounded) until something accepts connections on `port`."""
    deadline = time.monotonic() + bound
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


def relay_urls(port: int, users: int) -> tuple[list[str], list[str]]:
    pairs = [str(uuid.uuid4()) for _ in range(users // 2)]
    matches = [m for m in pairs for _ in (0, 1)]
    users_ids = [str(uuid.uuid4()) for _ in range(users)]
    return ([f"http://127.0.0.1:{port}/ws?token={u}&match={m}"
             for u, m in zip(users_ids, matches, strict=True)], matches)


async def start_relay(users: int) -> Server:
    from unimatch.server.platform import free_port

    port = free_port()
    # Started once, stopped in `stop`: nothing to await.
    process = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, str(BENCH / "relay.py"), "--port", str(port)]
    )
    await wait_listening(port)
    urls, matches = relay_urls(port, users)

    def stop() -> None:
        process.terminate()
        process.wait(10)

    # aiohttp's web.run_app runs its loop on the main thread: tid == pid.
    return Server("relay", urls, matches, pids=[process.pid],
                  loop_tids={process.pid: process.pid}, stop=stop)


async def start_ray_relay(users: int) -> Server:
    import ray
    from ray_relay import RelayActor

    from unimatch.server.node import actor_env
    from unimatch.server.platform import free_port

    port = free_port()
    actor: Any = ray.remote(RelayActor).options(
        num_cpus=0, max_concurrency=10_000, runtime_env={"env_vars": actor_env()}
    ).remote("127.0.0.1", port)
    info = await actor.ready.remote()
    urls, matches = relay_urls(port, users)

    def stop() -> None:
        ray.get(actor.stop.remote(), timeout=15)
        ray.kill(actor, no_restart=True)

    print(f"# ray-relay: pid {info['pid']}", flush=True)
    return Server("ray-relay", urls, matches, pids=[info["pid"]],
                  loop_tids={info["pid"]: info["loop_tid"]}, stop=stop)


# -- the load generator processes ---------------------------------------------


class Generators:
    """`count` worker processes; each holds the pairs p with p % count == w."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes = []
        self.processes = []
        for w in range(count):
            mine, theirs = context.Pipe()
            process = context.Process(target=worker_main, args=(theirs, 1000 + w), daemon=True)
            process.start()
            self.pipes.append(mine)
            self.processes.append(process)

    @property
    def count(self) -> int:
        return len(self.pipes)

    async def ask(self, commands: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        def one(w: int) -> dict[str, Any]:
            self.pipes[w].send(commands[w])
            return self.pipes[w].recv()

        answers = await asyncio.gather(*(asyncio.to_thread(one, w) for w in range(self.count)))
        for answer in answers:
            if "error" in answer:
                raise RuntimeError(f"load generator: {answer['error']}")
        return answers

    def share(self, items: list[str], w: int) -> list[str]:
        return [items[i] for p in range(w, len(items) // 2, self.count) for i in (2 * p, 2 * p + 1)]

    async def connect(self, server: Server) -> float:
        started = time.perf_counter()
        await self.ask([("connect", server.name, self.share(server.urls, w),
                         self.share(server.matches, w)) for w in range(self.count)])
        return time.perf_counter() - started

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("stop",))
            except OSError:
                pass
        for process in self.processes:
            process.join(15)
            if process.is_alive():
                process.kill()


@dataclass
class Result:
    target: str
    rate: int
    seconds: float
    sent: int = 0
    acked: int = 0
    delivered: int = 0
    delivered_in_window: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0
    undelivered: int = 0
    lost: int = 0
    duplicates: int = 0
    order_violations: int = 0
    skipped: int = 0
    closed: int = 0
    ack: tuple[float, float, float] = (0, 0, 0)
    delivery: tuple[float, float, float] = (0, 0, 0)
    lag: tuple[float, float, float] = (0, 0, 0)  # p50, p99, max
    cpu: dict[str, Any] = field(default_factory=dict)

    @property
    def goodput(self) -> float:
        return self.delivered_in_window / self.seconds

    @property
    def p99(self) -> float:
        return self.delivery[2]

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.order_violations == 0

    def us_per_message(self, what: str) -> float:
        return self.cpu.get(what, 0.0) / max(self.delivered, 1) * 1e6

    def row(self) -> str:
        shed = self.errors.get("overloaded", 0)
        other = sum(self.errors.values()) - shed
        return (
            f"{self.target:11} {self.rate:6} {self.sent:7} {self.goodput:8.0f} "
            f"{self.delivery[0]:6.1f} {self.delivery[1]:6.1f} {self.delivery[2]:7.1f} "
            f"{self.ack[2]:7.1f} {shed:6} {other:5} {self.unanswered:5} "
            f"{self.lost:4} {self.duplicates:4} {self.order_violations:5} "
            f"{self.lag[1]:6.1f} {self.lag[2]:6.1f} "
            f"{self.us_per_message('server'):6.0f} {self.us_per_message('loop'):6.0f} "
            f"{self.us_per_message('pg'):5.0f}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target, "rate": self.rate, "seconds": self.seconds,
            "sent": self.sent, "acked": self.acked, "delivered": self.delivered,
            "goodput": self.goodput, "errors": dict(self.errors),
            "unanswered": self.unanswered, "undelivered": self.undelivered, "lost": self.lost,
            "duplicates": self.duplicates, "order_violations": self.order_violations,
            "skipped": self.skipped, "closed": self.closed,
            "ack_ms": self.ack, "delivery_ms": self.delivery, "lag_ms": self.lag,
            "cpu_s": self.cpu,
            "us_per_message": {k: self.us_per_message(k) for k in ("server", "loop", "pg")},
        }


HEADER = (
    f"{'target':11} {'rate':>6} {'sent':>7} {'goodput':>8} "
    f"{'p50':>6} {'p95':>6} {'p99':>7} {'ack99':>7} {'shed':>6} {'other':>5} {'unans':>5} "
    f"{'lost':>4} {'dup':>4} {'order':>5} {'lag99':>6} {'lagmx':>6} "
    f"{'us/msg':>6} {'loop':>6} {'pg':>5}"
)


def merge(target: str, rate: int, seconds: float, answers: list[dict[str, Any]],
          cpu: dict[str, Any]) -> Result:
    result = Result(target, rate, seconds, cpu=cpu)
    ack: list[float] = []
    delivery: list[float] = []
    lag: list[float] = []
    for a in answers:
        for name in ("sent", "acked", "delivered", "delivered_in_window", "unanswered",
                     "undelivered", "lost", "duplicates", "order_violations", "skipped",
                     "closed"):
            setattr(result, name, getattr(result, name) + a[name])
        result.errors.update(a["errors"])
        ack += a["ack_lat"]
        delivery += a["delivery_lat"]
        lag += a["lag"]
    ack.sort()
    delivery.sort()
    lag.sort()
    result.ack = (pct(ack, .5), pct(ack, .95), pct(ack, .99))
    result.delivery = (pct(delivery, .5), pct(delivery, .95), pct(delivery, .99))
    result.lag = (pct(lag, .5), pct(lag, .99), lag[-1] * 1000 if lag else float("nan"))
    return result


async def run_once(gens: Generators, server: Server, rate: int, seconds: float,
                   *, warm: bool = False, spy: Path | None = None) -> Result:
    tag = secrets.token_hex(3)
    start_at = time.perf_counter() + 0.3
    before = await CpuSample.take(server)
    began = time.perf_counter()
    spies = []
    if spy is not None:
        for pid in server.pids:
            spies.append(subprocess.Popen(  # noqa: ASYNC220 (waited for below, bounded)
                ["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)),
                 "--rate", str(PY_SPY_RATE), "--format", "raw", "--nonblocking",
                 "--output", str(spy.with_suffix(f".{pid}.txt"))],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            ))
    if warm:
        commands = [("warm", server.name, rate / gens.count, f"{tag}{w}", start_at)
                    for w in range(gens.count)]
    else:
        commands = [("run", server.name, rate / gens.count, seconds, f"{tag}{w}", start_at)
                    for w in range(gens.count)]
    answers = await gens.ask(commands)
    after = await CpuSample.take(server)
    wall = time.perf_counter() - began
    for process in spies:
        _, err = await asyncio.to_thread(process.communicate, timeout=60)
        if process.returncode:
            print(f"# py-spy failed: {err.decode(errors='replace')[-400:]}", flush=True)
    window = seconds if not warm else len(server.urls) / rate
    return merge(server.name, rate, window, answers,
                 {**after.since(before, server), "wall": wall})


# -- py-spy summary -------------------------------------------------------------


def frame_library(frame: str) -> str:
    """A py-spy frame "function (path:line)" -> the package it belongs to."""
    path = frame[frame.rfind("(") + 1:frame.rfind(":")] if "(" in frame else frame
    parts = Path(path).parts
    for anchor in ("unimatch", "aiohttp", "asyncpg", "ray", "prometheus_client", "redis",
                   "orjson", "yarl", "multidict", "bench"):
        if anchor in parts:
            i = parts.index(anchor)
            if anchor == "unimatch" and i + 1 < len(parts):
                return "unimatch." + parts[i + 1].removesuffix(".py")
            if anchor == "aiohttp" and i + 1 < len(parts):
                return "aiohttp." + parts[i + 1].removesuffix(".py")
            return anchor
    if "asyncio" in parts:
        return "asyncio"
    return Path(path).name or frame


def spy_files(spy: Path) -> list[Path]:
    return sorted(spy.parent.glob(f"{spy.name}.*.txt"))


def summarize_spy(paths: list[Path], delivered: int, cpu: dict[str, Any], top: int = 14) -> str:
    """Where the event-loop thread's CPU goes, in µs per delivered message.

    py-spy counts a thread as busy while it is runnable, so on a loaded
    machine its samples overstate CPU; the stacks of the event-loop thread
    (those under `BaseEventLoop._run_once`) are therefore scaled to that
    thread's CPU time from /proc. Other threads are given from /proc."""
    self_fn: Counter[str] = Counter()
    self_lib: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    stage: Counter[str] = Counter()
    total = other = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [f for f in stack.split(";") if "(" in f]
            if not any(f.startswith("BaseEventLoop._run_once ") for f in frames):
                other += count
                continue
            total += count
            names = [f.split(" (")[0] for f in frames]
            # The stage: the task or callback the loop was running.
            below = names[names.index("BaseEventLoop._run_once") + 1:]
            if below and below[0] == "Handle._run":
                below = below[1:]
            stage[below[0] if below else "(the loop itself)"] += count
            leaf = frames[-1]
            self_fn[leaf.rsplit(":", 1)[0] + ")"] += count
            self_lib[frame_library(leaf)] += count
            for fn in {f.rsplit(":", 1)[0] + ")" for f in frames}:
                inclusive[fn] += count
    n = max(delivered, 1)
    loop_us = cpu.get("loop", 0.0) / n * 1e6

    def us(samples: int) -> float:
        return samples / max(total, 1) * loop_us

    lines = [
        f"  /proc: process {cpu.get('server', 0) / n * 1e6:.0f} µs/msg = event-loop thread "
        f"{loop_us:.0f} + other threads ("
        + ", ".join(f"{name} {sec / n * 1e6:.0f}" for name, sec in cpu.get("threads", {}).items())
        + f"); PostgreSQL backends {cpu.get('pg', 0) / n * 1e6:.0f} µs/msg",
        f"  py-spy: {total} event-loop samples (scaled to its /proc time below), {other} of "
        f"other threads (their /proc time is above)",
        "  by stage, the task or callback the loop ran (µs/msg):",
    ]
    lines += [f"    {us(c):7.1f}  {name}" for name, c in stage.most_common(top)]
    lines.append("  self time by library (µs/msg):")
    lines += [f"    {us(c):7.1f}  {lib}" for lib, c in self_lib.most_common(top)]
    lines.append("  self time by function (µs/msg):")
    lines += [f"    {us(c):7.1f}  {fn}" for fn, c in self_fn.most_common(top)]
    lines.append("  inclusive time by function (µs/msg):")
    lines += [f"    {us(c):7.1f}  {fn}" for fn, c in inclusive.most_common(top + 6)]
    return "\n".join(lines)


# -- the bench -------------------------------------------------------------------


async def sweep(gens: Generators, servers: list[Server], args: argparse.Namespace,
                results: list[Result]) -> dict[str, Result]:
    """Every rate on every target in turn, until a target's p99 crossed
    the limit twice in a row; each target's best clean run under it."""
    print(HEADER, flush=True)
    active = list(servers)
    best: dict[str, Result] = {}
    misses: Counter[str] = Counter()
    for step, rate in enumerate(args.rates):
        if not active:
            break
        order = active[step % len(active):] + active[:step % len(active)]
        for server in order:
            result = await run_once(gens, server, rate, args.seconds)
            results.append(result)
            print(result.row(), flush=True)
            if result.p99 < P99_LIMIT_MS and result.clean:
                best[server.name] = result
                misses[server.name] = 0
            else:
                misses[server.name] += 1
                # Two misses in a row: past its ceiling (one may be a
                # burst of the machine's other load).
                if misses[server.name] >= MISSES_TO_STOP and not args.every_rate:
                    active.remove(server)
        print(f"# load average {os.getloadavg()[0]:.1f}", flush=True)
    return best


async def run_cluster(args: argparse.Namespace, gens: Generators, dsn: str, db_name: str,
                      results: list[Result]) -> None:
    """`--cluster`: the platform on one, then two Ray nodes of a cluster on
    this machine (see the module's docstring)."""
    from tests.ray_nodes import LoopbackCluster, auth_env, free_ports

    cluster = LoopbackCluster()
    # Before Ray is first imported: it reads the auth mode once.
    assert "ray" not in sys.modules, "Ray imported before the cluster's token was set"
    os.environ.update(auth_env(cluster.token))
    import ray

    from unimatch.server.node import NODE_RESOURCE
    from unimatch.server.ownership import HANDOFF_WINDOW

    best: dict[str, Result] = {}
    shares: dict[str, tuple[float, float]] = {}
    idle: dict[str, float] = {}
    try:
        ports = free_ports(2)
        for count, port in enumerate(ports, start=1):
            await asyncio.to_thread(cluster.add, port, {NODE_RESOURCE: 1})
            os.environ.update(cluster.driver_env())
            server = await start_platform(f"cluster-{count}", None, dsn, db_name, args.users,
                                          ray_address=cluster.address)
            started = time.monotonic()
            try:
                # Until HANDOFF_WINDOW after the nodes met, every activation
                # first asks the entity's previous owner to release it (see
                # unimatch.server.ownership): a start-up cost, not the steady
                # state measured here.
                settle = HANDOFF_WINDOW - (time.monotonic() - started)
                print(f"# {server.name}: {settle:.0f} s for the hand-off window to pass",
                      flush=True)
                await asyncio.sleep(settle)
                took = await gens.connect(server)
                warm = await run_once(gens, server, WARM_UP_RATE, 0, warm=True)
                shares[server.name] = crossing(server)
                print(f"# {server.name}: {args.users} sockets in {took:.1f} s; warm-up: "
                      f"{warm.delivered} delivered, p99 {warm.p99:.0f} ms; load average "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
                idle[server.name] = await idle_cpu(server, args.seconds)
                best.update(await sweep(gens, [server], args, results))
            finally:
                await gens.ask([("close", server.name)] * gens.count)
                await asyncio.to_thread(server.stop)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        await asyncio.to_thread(cluster.close)

    print("\n# highest rate with delivery p99 < 50 ms and no loss/dup/order violation:")
    for name, (share, hops) in shares.items():
        b = best.get(name)
        print(f"#   {name}: {b.rate if b else 0}/s, goodput {b.goodput if b else 0:.0f}/s, "
              f"delivery p99 {b.p99 if b else float('nan'):.1f} ms; {share:.0%} of messages "
              f"crossed nodes, {hops:.2f} Ray hops per message", flush=True)
    # The CPU of a message: its nodes' CPU over a run less what they spend
    # idle with every user online (timers, health checks), per message
    # delivered.
    ran = {(r.target, r.rate): r for r in results}
    common = sorted(rate for rate in args.rates
                    if ("cluster-1", rate) in ran and ("cluster-2", rate) in ran)
    if not common:
        print("# no rate run on both: no CPU comparison", flush=True)
        return

    def per_message(target: str, rate: int) -> float:
        run = ran[(target, rate)]
        spent = run.cpu.get("server", 0.0) - idle[target] * run.cpu.get("wall", 0.0)
        return spent / max(run.delivered, 1) * 1e6

    share, hops = shares["cluster-2"]
    print(f"# idle CPU of the nodes: one node {idle['cluster-1']:.2f} s/s, two nodes "
          f"{idle['cluster-2']:.2f} s/s", flush=True)
    for rate in common:
        local, spread = per_message("cluster-1", rate), per_message("cluster-2", rate)
        crossed = local + (spread - local) / share
        print(f"# CPU per delivered message at {rate}/s, idle CPU taken out: one node, all "
              f"local, {local:.0f} µs; two nodes {spread:.0f} µs; a Ray hop "
              f"{(spread - local) / hops:+.0f} µs; a message that crossed nodes {crossed:.0f} µs "
              f"against {local:.0f} µs for a local one ({crossed / local:.2f}x)", flush=True)


async def idle_cpu(server: Server, seconds: float) -> float:
    """CPU seconds per second the server's processes spend with no load."""
    before = await CpuSample.take(server)
    began = time.perf_counter()
    await asyncio.sleep(seconds)
    after = await CpuSample.take(server)
    return after.since(before, server)["server"] / (time.perf_counter() - began)


async def main_async(args: argparse.Namespace) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")
    # Ray workers inherit this: they import this tree, and the relay actor bench/.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(BENCH), *filter(None, [os.environ.get("PYTHONPATH")])])
    # As `unimatch serve` does: every process writes metrics to one folder.
    metrics = Path(tempfile.mkdtemp(prefix="unimatch-bench-metrics-"))
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics))
    out = Path(args.out)
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)

    wanted = args.only or ["platform", "relay", "ray-relay"]
    platforms = [n for n in wanted if n.startswith("platform")]
    node_counts: list[int | None] = [None] if args.nodes is None else list(args.nodes)
    gens = Generators(args.workers)
    db_name = f"unimatch_bench_{secrets.token_hex(4)}"
    dsn = ADMIN_DSN.rpartition("/")[0] + "/" + db_name
    servers: list[Server] = []
    results: list[Result] = []
    ray_started = False
    try:
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{db_name}"')
        await admin.close()
        from unimatch.storage.migrations import apply_migrations

        await apply_migrations(dsn)
        if args.cluster:
            await run_cluster(args, gens, dsn, db_name, results)
            (out / "chat.json").write_text(json.dumps(
                {"args": vars(args), "results": [r.as_json() for r in results]}, indent=1))
            print(f"\n# raw results in {out / 'chat.json'}", flush=True)
            return
        if platforms:
            for nodes in node_counts:
                name = "platform" if nodes is None else f"platform-{nodes}"
                servers.append(await start_platform(name, nodes, dsn, db_name, args.users))
                ray_started = True
        if "relay" in wanted:
            servers.append(await start_relay(args.users))
        if "ray-relay" in wanted:
            if not ray_started:
                import ray

                ray.init(address="local", include_dashboard=False, configure_logging=False,
                         log_to_driver=False)
                ray_started = True
            servers.append(await start_ray_relay(args.users))
        print(f"# {args.users} users per target in {args.users // 2} matches; "
              f"{args.workers} load-generator processes; Poisson arrivals; "
              f"{args.seconds:.0f} s per rate; rates {args.rates}; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        for server in servers:
            took = await gens.connect(server)
            warm = await run_once(gens, server, WARM_UP_RATE, 0, warm=True)
            print(f"# {server.name}: {args.users} sockets in {took:.1f} s; warm-up: "
                  f"{warm.delivered} delivered, p99 {warm.p99:.0f} ms", flush=True)

        print("# latencies in ms; goodput = messages delivered to the recipient within the "
              "window, per s; shed = `overloaded`; lag = the generator behind its schedule; "
              "us/msg = server CPU per delivered message (loop = its event-loop thread; pg = "
              "PostgreSQL backends)", flush=True)
        best = await sweep(gens, servers, args, results)

        print("\n# highest rate with delivery p99 < 50 ms and no loss/dup/order violation:")
        relay_best = best.get("relay")
        for server in servers:
            b = best.get(server.name)
            ratio = (b.rate / relay_best.rate) if b and relay_best else float("nan")
            crossed = next((r.rate for r in results
                            if r.target == server.name and r not in best.values()
                            and r.rate > (b.rate if b else 0)), None)
            print(f"#   {server.name:11} {b.rate if b else 0:6}/s (next rate swept: "
                  f"{crossed}), ratio to the relay {ratio:.2f}", flush=True)

        overload: dict[str, list[Result]] = defaultdict(list)
        if args.overload:
            print("\n# past capacity: goodput at multiples of each platform's best rate")
            print(HEADER, flush=True)
            for server in servers:
                b = best.get(server.name)
                if not server.name.startswith("platform") or b is None:
                    continue
                for factor in args.overload:
                    result = await run_once(gens, server, int(b.rate * factor), args.seconds)
                    results.append(result)
                    overload[server.name].append(result)
                    print(result.row(), flush=True)
                most = max((r for r in results if r.target == server.name),
                           key=lambda r: r.goodput)
                for factor, result in zip(args.overload, overload[server.name], strict=True):
                    print(f"#   {server.name} at {factor:g}x ({result.rate}/s): goodput "
                          f"{result.goodput:.0f}/s = {result.goodput / b.goodput:.2f} of its "
                          f"goodput at its best rate ({b.goodput:.0f}/s), "
                          f"{result.goodput / most.goodput:.2f} of the most it carried in any "
                          f"run ({most.goodput:.0f}/s at {most.rate}/s offered); shed "
                          f"{result.errors.get('overloaded', 0)}", flush=True)

        default = next((s for s in servers if s.name.startswith("platform")), None)
        rate = best[default.name].rate if default is not None and default.name in best else 0
        rate = args.profile_rate or rate
        if args.profile and rate:
            why = "as asked" if args.profile_rate else (
                f"the best rate of {default.name if default else '-'}")
            print(f"\n# py-spy, {args.profile:.0f} s at {rate}/s ({why}), each target in turn")
            for server in servers:
                if server.name.startswith("platform") and server is not default:
                    continue
                spy = out / f"spy-{server.name}"
                result = await run_once(gens, server, rate, args.profile, spy=spy)
                results.append(result)
                print(HEADER + "\n" + result.row(), flush=True)
                files = await asyncio.to_thread(spy_files, spy)
                print(summarize_spy(files, result.delivered, result.cpu), flush=True)

        (out / "chat.json").write_text(json.dumps(
            {"args": vars(args), "results": [r.as_json() for r in results]}, indent=1))
        print(f"\n# raw results in {out / 'chat.json'}", flush=True)
        for server in servers:
            bad = sum(r.lost + r.duplicates + r.order_violations
                      for r in results if r.target == server.name)
            print(f"# {server.name}: loss + duplicates + order violations over every run: {bad}")
    finally:
        gens.stop()
        for server in reversed(servers):
            try:
                await asyncio.to_thread(server.stop)
            except Exception as exc:  # stop the rest all the same
                print(f"# stopping {server.name} failed: {exc!r}", file=sys.stderr)
        if ray_started:
            import ray

            ray.shutdown()
        for conn in _admin:
            await conn.close()
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(metrics, ignore_errors=True)


def ints(value: str) -> list[int]:
    return [int(x) for x in value.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rates", type=ints,
                        default=[500, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 8000, 10000,
                                 12000, 14000, 16000])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--nodes", type=ints, default=None,
                        help="platforms with these NODES, side by side (default: one platform "
                             "with no NODES setting, as `unimatch serve`)")
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--overload", type=lambda v: [float(x) for x in v.split(",") if x],
                        default=[2.0, 4.0], help="multiples of each platform's best rate")
    parser.add_argument("--profile", type=float, default=20.0,
                        help="seconds of py-spy at the platform's best rate (0: none)")
    parser.add_argument("--profile-rate", type=int, default=0,
                        help="profile at this rate instead of the platform's best")
    parser.add_argument("--every-rate", action="store_true",
                        help="run every rate for every target, past its ceiling too")
    parser.add_argument("--only", type=lambda v: v.split(","),
                        help="targets: platform, relay, ray-relay (comma-separated)")
    parser.add_argument("--cluster", action="store_true",
                        help="the platform on a two-Ray-node cluster on this machine: one Ray "
                             "node, then two (no relays, overload or py-spy)")
    parser.add_argument("--out", default="/tmp/unimatch-bench-chat")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
