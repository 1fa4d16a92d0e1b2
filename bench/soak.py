"""Soak: the whole platform under mixed REST and chat load for many minutes.

Run by hand from the repository root:

    python bench/soak.py                          # 640 users, 10 minutes
    python bench/soak.py --users 1000 --minutes 30 --generators 3 --think 3

Starts a private local Ray, a scratch PostgreSQL database (dropped at the
end), its own Redis key prefix (deleted at the end) and the whole platform;
creates `--users` students with complete profiles, in pairs that are
matched. Then `--generators` separate processes each run their share of the
users, every user with one socket and a loop: think (exponential, mean
`--think` s), then one of discover, swipe, profile read, own profile, match
list, chat history, or a chat send that waits for its ack (resent with its
client_msg_id if none came within 10 s). A message from the partner is
answered with a `read` receipt half the time. Bounded: the load runs
`--minutes`, then at most 30 s of drain.

Every minute it prints the RSS of every process of the platform (each node
actor's worker, the scheduler's, the driver, Ray's raylet and GCS, the
generators), the virtual actors active on the nodes by kind (what a node's
memory grows with), and p50/p95/p99 per operation with errors by kind, then a
summary: memory growth from the second minute to the last, the range of
each operation's p99, every error.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing as mp
import os
import queue
import random
import resource
import secrets
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_worker_niceness", "0")

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402

from unimatch.domain import tokens  # noqa: E402
from unimatch.domain.config import Config  # noqa: E402
from unimatch.domain.pairs import ordered, pair_id  # noqa: E402

ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ACK_TIMEOUT = 10.0
HTTP_TIMEOUT = 30.0
DRAIN_SECONDS = 30.0
TOKEN_RENEW_SECONDS = 600.0  # access tokens live 15 minutes
CONNECT_CONCURRENCY = 50

# The mix: weights of each operation a user picks after thinking.
MIX = {
    "chat_send": 35,
    "discover": 15,
    "swipe": 15,
    "profile_read": 10,
    "me": 5,
    "match_list": 12,
    "history": 8,
}
LIKE_SHARE = 0.2  # of swipes; the rest pass (a like per day is limited)

NEW_USERS = """
INSERT INTO users (email, password_hash, display_name, is_verified, verified_at, is_visible,
                   bio, birthdate, gender, campus_id, year_of_study)
SELECT 'soak-' || $1 || '-' || g || '@uonbi.ac.ke', 'x', 'Soak ' || g, true, now(), true,
       'Here for the soak', DATE '2003-05-17' + (g % 700),
       (ARRAY['woman', 'man', 'nonbinary'])[1 + g % 3], $3, 1 + g % 5
FROM generate_series(1, $2) g
ORDER BY g
RETURNING id"""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


# -- the platform side (driver) ---------------------------------------------


async def make_users(dsn: str, n: int) -> list[uuid.UUID]:
    """`n` verified users with complete profiles (a photo, three interests,
    open to every gender), one campus; user 2i and 2i+1 are matched."""
    conn = await asyncpg.connect(dsn)
    try:
        campus = await conn.fetchval("SELECT id FROM campuses ORDER BY slug LIMIT 1")
        interests = [r["id"] for r in await conn.fetch("SELECT id FROM interests ORDER BY slug")]
        async with conn.transaction():
            users = [r["id"] for r in await conn.fetch(NEW_USERS, secrets.token_hex(4), n, campus)]
            await conn.executemany(
                "INSERT INTO user_interested_in (user_id, gender) VALUES ($1, $2)",
                [(u, g) for u in users for g in ("woman", "man", "nonbinary")],
            )
            await conn.executemany(
                "INSERT INTO user_interests (user_id, interest_id) VALUES ($1, $2)",
                [(u, i) for k, u in enumerate(users)
                 for i in {interests[(k + j * 7) % len(interests)] for j in range(3)}],
            )
            await conn.executemany(
                """INSERT INTO photos (user_id, filename, content_type, width, height, size_bytes)
                   VALUES ($1, $2, 'image/jpeg', 640, 480, 1000)""",
                [(u, f"{secrets.token_hex(16)}.jpg") for u in users],
            )
            pairs = []
            for i in range(0, len(users) - 1, 2):
                a, b = ordered(users[i], users[i + 1])
                pairs.append((pair_id(a, b), a, b))
            await conn.executemany(
                "INSERT INTO matches (id, user_a, user_b) VALUES ($1, $2, $3)", pairs
            )
        return users
    finally:
        await conn.close()


def actor_pid(handle: Any) -> int:
    import ray

    return int(ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=60))


def platform_processes(platform: Any, generators: list[Any]) -> dict[str, psutil.Process]:
    """Every process of the platform by name: the node actors' and the
    scheduler's workers, the driver, Ray's own; and the generators."""
    found: dict[str, psutil.Process] = {"driver": psutil.Process()}
    for i, node in enumerate(platform.nodes):
        found[f"node-{i}"] = psutil.Process(actor_pid(node))
    found["scheduler"] = psutil.Process(actor_pid(platform.scheduler))
    known = {p.pid for p in found.values()}
    for child in psutil.Process().children(recursive=True):
        if child.pid in known:
            continue
        try:
            name = child.name()
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if name in ("raylet", "gcs_server"):
            found[name] = child
        elif "dashboard/agent.py" in cmdline:
            found["ray-agent"] = child
        elif "runtime_env/agent" in cmdline:
            found["ray-env-agent"] = child
    for i, gen in enumerate(generators):
        found[f"gen-{i}"] = psutil.Process(gen.pid)
    return found


def rss_mb(proc: psutil.Process) -> float:
    try:
        return proc.memory_info().rss / 2**20
    except psutil.Error:
        return float("nan")


# -- the load side (generator processes) -------------------------------------


@dataclass
class Window:
    """What one generator saw in one minute."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    receipts: int = 0

    def take(self) -> dict[str, Any]:
        out = {"latencies": dict(self.latencies), "errors": dict(self.errors),
               "receipts": self.receipts}
        self.latencies = collections.defaultdict(list)
        self.errors = collections.Counter()
        self.receipts = 0
        return out


class VirtualUser:
    def __init__(self, gen: Generator, user_id: str, partner: str, match_id: str) -> None:
        self.gen = gen
        self.user_id = user_id
        self.partner = partner
        self.match_id = match_id
        self.token = ""
        self.token_at = 0.0
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.acked: dict[str, asyncio.Future[float]] = {}
        self.swiped: set[str] = set()
        self.unacked: str | None = None  # a send to repeat with its client_msg_id
        self.sent = 0

    def renew(self) -> None:
        self.token = tokens.issue_access(self.gen.config, uuid.UUID(self.user_id))
        self.token_at = time.monotonic()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def connect(self) -> None:
        self.renew()
        ws = await self.gen.session.ws_connect(
            f"{self.gen.url}/ws?token={self.token}", heartbeat=None, max_msg_size=0
        )
        while True:
            msg = await ws.receive(timeout=60)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"socket closed before ready ({ws.close_code})")
            if orjson.loads(msg.data)["type"] == "ready":
                break
        self.ws = ws
        self.reader = asyncio.create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        window = self.gen.window
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            frame = orjson.loads(msg.data)
            kind = frame["type"]
            if kind == "ack":
                fut = self.acked.pop(frame["client_msg_id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(time.perf_counter())
            elif kind == "message" and frame["sender_id"] != self.user_id:
                sent_at = self.gen.sent_at.pop(frame["client_msg_id"], None)
                if sent_at is not None:
                    window.latencies["chat_delivery"].append(time.perf_counter() - sent_at)
                if random.random() < 0.5:
                    await ws.send_str(orjson.dumps(
                        {"type": "read", "match_id": frame["match_id"], "seq": frame["seq"]}
                    ).decode())
                    window.receipts += 1
            elif kind == "error":
                window.errors[f"ws {frame.get('code')}"] += 1
                fut = self.acked.pop(frame.get("client_msg_id") or "", None)
                if fut is not None and not fut.done():
                    fut.set_exception(ConnectionError(frame.get("code")))
        if not self.gen.stopping:
            window.errors[f"ws closed {ws.close_code}"] += 1

    async def run(self, end: float) -> None:
        rng = random.Random(self.user_id)
        ops, weights = list(MIX), list(MIX.values())
        while time.monotonic() < end:
            await asyncio.sleep(rng.expovariate(1 / self.gen.think))  # the user thinks
            if time.monotonic() >= end:
                break
            if time.monotonic() - self.token_at > TOKEN_RENEW_SECONDS:
                self.renew()
                if self.ws is not None and not self.ws.closed:
                    await self.ws.send_str(orjson.dumps(
                        {"type": "auth", "token": self.token}).decode())
            op = rng.choices(ops, weights)[0]
            if op == "swipe" and not self._pool():
                op = "discover"  # nobody to swipe yet: look first
            started = time.perf_counter()
            try:
                ok = await getattr(self, op)(rng)
            except (aiohttp.ClientError, OSError, ConnectionError, TimeoutError) as exc:
                self.gen.window.errors[f"{op} {type(exc).__name__} {exc}"[:80]] += 1
                continue
            if ok:
                self.gen.window.latencies[op].append(time.perf_counter() - started)

    async def _http(self, op: str, method: str, path: str, **kwargs: Any) -> Any:
        async with self.gen.session.request(
            method, f"{self.gen.url}/api/v1{path}", headers=self.auth,
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT), **kwargs,
        ) as r:
            body = await r.json(content_type=None) if r.content_length != 0 else None
            if r.status >= 400:
                code = body.get("error") if isinstance(body, dict) else None
                self.gen.window.errors[f"{op} {r.status} {code}"] += 1
                return None
            return body if body is not None else True

    async def discover(self, rng: random.Random) -> bool:
        body = await self._http("discover", "GET", "/discover")
        if body:
            self.gen.candidates[self.user_id] = [
                c["user_id"] for c in body["results"] if c["user_id"] not in self.swiped]
        return body is not None

    def _pool(self) -> list[str]:
        return [c for c in self.gen.candidates.get(self.user_id, []) if c not in self.swiped]

    async def swipe(self, rng: random.Random) -> bool:
        target = rng.choice(self._pool())
        self.swiped.add(target)
        action = "like" if rng.random() < LIKE_SHARE else "pass"
        body = await self._http("swipe", "POST", "/swipes",
                                json={"target_id": target, "action": action})
        return body is not None

    async def profile_read(self, rng: random.Random) -> bool:
        other = rng.choice(self.gen.all_users)
        return await self._http("profile_read", "GET", f"/users/{other}") is not None

    async def me(self, rng: random.Random) -> bool:
        return await self._http("me", "GET", "/me") is not None

    async def match_list(self, rng: random.Random) -> bool:
        return await self._http("match_list", "GET", "/matches") is not None

    async def history(self, rng: random.Random) -> bool:
        return await self._http("history", "GET", f"/matches/{self.match_id}/messages") is not None

    async def chat_send(self, rng: random.Random) -> bool:
        if self.ws is None or self.ws.closed:
            await self.connect()
            self.gen.window.errors["ws reconnect"] += 1
        assert self.ws is not None
        cmid = self.unacked or f"{self.user_id[:8]}-{self.sent}"
        self.sent += 0 if self.unacked else 1
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.acked[cmid] = fut
        started = time.perf_counter()
        self.gen.sent_at.setdefault(cmid, started)
        await self.ws.send_str(orjson.dumps({
            "type": "send", "match_id": self.match_id, "client_msg_id": cmid,
            "body": "habari! see you at the library after the lecture?",
        }).decode())
        try:
            acked_at = await asyncio.wait_for(fut, ACK_TIMEOUT)
        except (TimeoutError, ConnectionError):
            self.unacked = cmid  # sent again, same client_msg_id, next time
            self.acked.pop(cmid, None)
            raise
        self.unacked = None
        self.gen.window.latencies["chat_ack"].append(acked_at - started)
        return False  # its latency is chat_ack, recorded above

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.wait([self.reader], timeout=5)


class Generator:
    def __init__(self, url: str, config: Config, users: list[tuple[str, str, str]],
                 all_users: list[str], think: float) -> None:
        self.url = url
        self.config = config
        self.think = think
        self.all_users = all_users
        self.window = Window()
        self.sent_at: dict[str, float] = {}
        self.candidates: dict[str, list[str]] = {}
        self.stopping = False
        self.users_spec = users
        self.session: aiohttp.ClientSession

    async def main(self, start: Any, start_at: Any, minutes: int, out: Any) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        users = [VirtualUser(self, u, p, m) for u, p, m in self.users_spec]
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def connect(u: VirtualUser) -> None:
            async with gate:
                await u.connect()

        await asyncio.gather(*(connect(u) for u in users))
        out.put(("connected", os.getpid(), None))
        # Everyone starts at once, when the driver says (wall clock).
        if not await asyncio.to_thread(start.wait, 300):
            raise SystemExit("the driver never started the load")
        t0 = start_at.value
        await asyncio.sleep(max(0.0, t0 - time.time()))
        end = time.monotonic() + minutes * 60
        runs = [asyncio.create_task(u.run(end)) for u in users]
        for minute in range(1, minutes + 1):
            await asyncio.sleep(max(0.0, t0 + minute * 60 - time.time()))
            out.put(("minute", minute, self.window.take()))
        done, pending = await asyncio.wait(runs, timeout=DRAIN_SECONDS)
        self.stopping = True
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                self.window.errors[f"user loop {task.exception()!r}"[:80]] += 1
        for u in users:
            await u.close()
        await self.session.close()
        out.put(("done", len(pending), self.window.take()))


def generator_process(url: str, config: Config, users: list[tuple[str, str, str]],
                      all_users: list[str], think: float, start: Any, start_at: Any,
                      minutes: int, out: Any) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gen = Generator(url, config, users, all_users, think)
    asyncio.run(gen.main(start, start_at, minutes, out))


# -- the report ---------------------------------------------------------------

OPS = ["chat_ack", "chat_delivery", *[op for op in MIX if op != "chat_send"]]


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    latencies: dict[str, list[float]] = collections.defaultdict(list)
    errors: collections.Counter[str] = collections.Counter()
    receipts = 0
    for r in reports:
        for op, values in r["latencies"].items():
            latencies[op].extend(values)
        errors.update(r["errors"])
        receipts += r["receipts"]
    return {"latencies": latencies, "errors": errors, "receipts": receipts}


def print_minute(minute: int, merged: dict[str, Any], rss: dict[str, float],
                 load: float, active: dict[str, int]) -> None:
    lat = merged["latencies"]
    total = sum(len(v) for op, v in lat.items() if op != "chat_delivery")
    print(f"\n## minute {minute}: {total / 60:.0f} ops/s, {merged['receipts']} receipts, "
          f"load average {load:.1f}", flush=True)
    print("   RSS MB  " + "  ".join(f"{name} {mb:.0f}" for name, mb in rss.items()))
    print("   active actors  " + (", ".join(f"{kind} {n}" for kind, n in sorted(active.items()))
                                   or "none"))
    for op in OPS:
        v = lat.get(op, [])
        print(f"   {op:14} n {len(v):6}  p50 {pct(v, .5):7.1f}  p95 {pct(v, .95):7.1f}  "
              f"p99 {pct(v, .99):7.1f} ms")
    errors = merged["errors"]
    print("   errors: " + (", ".join(f"{k}: {n}" for k, n in errors.most_common()) or "none"),
          flush=True)


def print_summary(rows: list[tuple[int, dict[str, Any], dict[str, float], float]],
                  final: dict[str, Any], undrained: int) -> None:
    print("\n# latency table (ms): minute | " + " | ".join(
        f"{op} p50/p95/p99" for op in OPS))
    for minute, merged, _, _ in rows:
        cells = []
        for op in OPS:
            v = merged["latencies"].get(op, [])
            cells.append(f"{pct(v, .5):.0f}/{pct(v, .95):.0f}/{pct(v, .99):.0f}")
        print(f"{minute:3} | " + " | ".join(cells))
    names = list(rows[0][2])
    print("\n# RSS table (MB): minute | load | " + " | ".join(names))
    for minute, _, rss, load in rows:
        print(f"{minute:3} | {load:4.1f} | " + " | ".join(f"{rss.get(n, float('nan')):.0f}"
                                                       for n in names))
    first = rows[1] if len(rows) > 1 else rows[0]
    last = rows[-1]
    print(f"\n# memory from minute {first[0]} to {last[0]}: " + ", ".join(
        f"{n} {last[2][n] - first[2][n]:+.0f} MB ({(last[2][n] / first[2][n] - 1) * 100:+.1f}%)"
        for n in names if n in first[2] and n in last[2]))
    print("# p99 range over the minutes (ms): " + ", ".join(
        f"{op} {min(p99s):.0f}..{max(p99s):.0f}"
        for op in OPS
        if (p99s := [pct(m["latencies"][op], .99) for _, m, _, _ in rows
                     if m["latencies"].get(op)])))
    errors: collections.Counter[str] = collections.Counter()
    for _, merged, _, _ in rows:
        errors.update(merged["errors"])
    errors.update(final["errors"])
    total_ops = sum(len(v) for _, m, _, _ in rows for op, v in m["latencies"].items()
                    if op != "chat_delivery")
    print(f"# {total_ops} operations timed; errors: "
          + (", ".join(f"{k}: {n}" for k, n in errors.most_common()) or "none")
          + f"; users still busy after the drain: {undrained}", flush=True)


# -- main -----------------------------------------------------------------------


async def soak(args: argparse.Namespace) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import ray
    import redis.asyncio as aioredis

    from unimatch.server.platform import Platform, free_port
    from unimatch.storage.migrations import apply_migrations

    db_name = f"unimatch_soak_{secrets.token_hex(4)}"
    prefix = f"soak:{db_name}:"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    await admin.close()
    dsn = ADMIN_DSN.rpartition("/")[0] + "/" + db_name
    data_dir = Path(tempfile.mkdtemp(prefix="unimatch-soak-"))
    platform = None
    procs: list[Any] = []
    try:
        await apply_migrations(dsn)
        config = Config(
            data_dir=data_dir, media_root=data_dir / "media",
            database_url=dsn, redis_url=REDIS_URL, jwt_secret=secrets.token_hex(32),
            redis_prefix=prefix, namespace=db_name,
            nodes=args.nodes or Config.from_env({}, dotenv=False).nodes,
            pg_pool_size=10, pg_pool_overflow=5,
        )
        ray.init(address="local", namespace=db_name, include_dashboard=False,
                 configure_logging=False, log_to_driver=False)
        platform = await asyncio.to_thread(Platform.start, config, "127.0.0.1", free_port())
        users = [str(u) for u in await make_users(dsn, args.users)]
        specs = []
        for i in range(0, len(users) - 1, 2):
            a, b = users[i], users[i + 1]
            match_id = str(pair_id(uuid.UUID(a), uuid.UUID(b)))
            specs += [(a, b, match_id), (b, a, match_id)]
        print(f"# soak: {len(specs)} users ({len(specs) // 2} matches), {config.nodes} node(s), "
              f"{args.generators} generator processes, think {args.think:.1f} s, "
              f"{args.minutes} min; platform at {platform.url}", flush=True)

        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        start, start_at = ctx.Event(), ctx.Value("d", 0.0)
        # A pair's two users are in one generator (delivery is timed there).
        share = [[s for k in range(0, len(specs), 2) if (k // 2) % args.generators == g
                  for s in specs[k:k + 2]] for g in range(args.generators)]
        for g in range(args.generators):
            proc = ctx.Process(target=generator_process, daemon=True, args=(
                platform.url, config, share[g], users, args.think, start, start_at, args.minutes,
                out))
            proc.start()
            procs.append(proc)

        def get(timeout: float) -> Any:
            try:
                return out.get(timeout=timeout)
            except queue.Empty:
                raise SystemExit("a generator stopped reporting") from None

        for _ in procs:
            kind, _, _ = await asyncio.to_thread(get, 120)
            assert kind == "connected", kind
        processes = platform_processes(platform, procs)
        start_at.value = time.time() + 1
        start.set()
        print(f"# all {len(specs)} sockets connected; load starts", flush=True)
        rows = []
        for minute in range(1, args.minutes + 1):
            reports = []
            for _ in procs:
                kind, m, report = await asyncio.to_thread(get, 180)
                assert kind == "minute" and m == minute, (kind, m)
                reports.append(report)
            rss = {name: rss_mb(p) for name, p in processes.items()}
            merged = merge(reports)
            load = os.getloadavg()[0]
            rows.append((minute, merged, rss, load))
            active: collections.Counter[str] = collections.Counter()
            for stats in await asyncio.gather(*(n.stats.remote() for n in platform.nodes)):
                active.update(stats["active"])
            print_minute(minute, merged, rss, load, dict(active))
        finals, undrained = [], 0
        for _ in procs:
            kind, busy, report = await asyncio.to_thread(get, DRAIN_SECONDS + 60)
            assert kind == "done", kind
            undrained += busy
            finals.append(report)
        print_summary(rows, merge(finals), undrained)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        if platform is not None:
            await asyncio.to_thread(platform.stop)
        ray.shutdown()
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()
        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=640)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--generators", type=int, default=2)
    parser.add_argument("--think", type=float, default=4.0,
                        help="mean seconds a user thinks between operations")
    parser.add_argument("--nodes", type=int, default=0, help="0: the platform's default")
    args = parser.parse_args()
    asyncio.run(soak(args))


if __name__ == "__main__":
    main()
