"""Chat benchmark over real sockets, with a bare relay as the ceiling.

Run by hand from the repository root:

    python bench/chat.py                      # 2,000 users, default rates
    python bench/chat.py --users 2000 --rates 250,500,1000,2000 --seconds 8 --idle 10000
    python bench/chat.py --colocated --hosts 1   # one node: host and gateway in one process
    python bench/chat.py --only relay --rates 8000,16000 --idle 0   # one side's ceiling

Starts a private local Ray, a scratch PostgreSQL database (dropped at the
end) and the whole platform; N users in N/2 matches, each user one socket.
For each offered rate (open loop: sends leave on schedule whatever the
answers), every user sends in turn to their match, and the bench measures
send->ack and send->delivery (at the other user) latency p50/p95/p99,
delivered messages/s, and counts loss (an acked seq a member never got),
duplicates (a seq twice on one socket), order violations (a seq below one
already seen) and sends the server shed (error frames). The same load then
runs against bench/relay.py (aiohttp alone: no actors, no database). Last,
`--idle` sockets connect and sit idle to measure gateway memory per
connection. Bounded: each rate runs `--seconds`, then at most 5 s of drain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Ray starts its workers (shard hosts, gateways) at nice 15, below this
# load generator and anything else on the machine; measure them on equal terms.
os.environ.setdefault("RAY_worker_niceness", "0")

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import orjson  # noqa: E402

from unimatch.domain import tokens  # noqa: E402
from unimatch.domain.config import Config  # noqa: E402
from unimatch.domain.pairs import ordered, pair_id  # noqa: E402
from unimatch.server.platform import free_port  # noqa: E402
from unimatch.storage.migrations import apply_migrations  # noqa: E402

ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DRAIN_SECONDS = 5.0
WARM_UP_RATE = 400
CONNECT_CONCURRENCY = 100
BODY = "habari! see you at the library after the lecture?"

NEW_USERS = """
INSERT INTO users (email, password_hash, display_name, is_verified, verified_at)
SELECT 'bench-' || $1 || '-' || g || '@uonbi.ac.ke', 'x', 'Bench ' || g, true, now()
FROM generate_series(1, $2) g
RETURNING id"""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


@dataclass
class RunStats:
    rate: int
    sent: int = 0
    acked: int = 0
    shed: int = 0
    ack_lat: list[float] = field(default_factory=list)
    delivery_lat: list[float] = field(default_factory=list)
    delivered: int = 0
    duplicates: int = 0
    order_violations: int = 0
    lost: int = 0
    unanswered: int = 0
    closed: int = 0
    elapsed: float = 0.0


class LoadClient:
    """N sockets, one per user; user 2i and 2i+1 share match i."""

    def __init__(self, urls: list[str], match_of: list[str]) -> None:
        self.urls = urls
        self.match_of = match_of
        self.sockets: list[aiohttp.ClientWebSocketResponse | None] = [None] * len(urls)
        self.session: aiohttp.ClientSession | None = None
        self.readers: list[asyncio.Task[None]] = []
        self.sent_at: dict[str, float] = {}
        self.sender_of: dict[str, int] = {}
        self.acks: dict[str, int] = {}  # cmid -> seq
        self.seen: list[set[int]] = [set() for _ in urls]
        self.high: list[int] = [0] * len(urls)
        self.stats = RunStats(0)
        self.closed = 0

    async def connect(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(i: int) -> None:
            async with gate:
                assert self.session is not None
                ws = await self.session.ws_connect(self.urls[i], heartbeat=None, max_msg_size=0)
                # A match's presence may arrive before this socket's `ready`.
                while True:
                    msg = await ws.receive(timeout=60)
                    assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, ws.close_code)
                    if orjson.loads(msg.data)["type"] == "ready":
                        break
                self.sockets[i] = ws
                self.readers.append(asyncio.create_task(self._read(i, ws)))

        await asyncio.gather(*(one(i) for i in range(len(self.urls))))

    async def _read(self, i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            now = time.perf_counter()
            frame = orjson.loads(msg.data)
            kind = frame["type"]
            stats = self.stats
            if kind == "ack":
                cmid = frame["client_msg_id"]
                if cmid in self.sent_at and cmid not in self.acks:
                    self.acks[cmid] = frame["seq"]
                    stats.acked += 1
                    stats.ack_lat.append(now - self.sent_at[cmid])
            elif kind == "message":
                seq = frame["seq"]
                if seq in self.seen[i]:
                    stats.duplicates += 1
                    continue
                if seq < self.high[i]:
                    stats.order_violations += 1
                self.seen[i].add(seq)
                self.high[i] = max(self.high[i], seq)
                cmid = frame["client_msg_id"]
                sender = self.sender_of.get(cmid)
                if sender is not None and sender != i:
                    stats.delivered += 1
                    stats.delivery_lat.append(now - self.sent_at[cmid])
            elif kind == "error":
                stats.shed += 1
        self.closed += 1

    async def run(self, rate: int, seconds: float) -> RunStats:
        self.stats = stats = RunStats(rate)
        self.sent_at.clear()
        self.sender_of.clear()
        self.acks.clear()
        base = [set(s) for s in self.seen]
        closed_before = self.closed
        total = int(rate * seconds)
        n = len(self.sockets)
        tag = secrets.token_hex(3)
        start = time.perf_counter()
        k = 0
        while k < total:
            due = min(total, int((time.perf_counter() - start) * rate) + 1)
            while k < due:
                i = k % n
                ws = self.sockets[i]
                cmid = f"{tag}-{k}"
                if ws is not None and not ws.closed:
                    self.sent_at[cmid] = time.perf_counter()
                    self.sender_of[cmid] = i
                    frame = {"type": "send", "match_id": self.match_of[i],
                             "client_msg_id": cmid, "body": BODY}
                    await ws.send_str(orjson.dumps(frame).decode())
                    stats.sent += 1
                k += 1
            await asyncio.sleep(0.001)
        stats.elapsed = time.perf_counter() - start
        deadline = time.perf_counter() + DRAIN_SECONDS
        def settled() -> bool:
            if stats.delivered + stats.shed < stats.sent:
                return False
            # The sender's own sockets get the message too: wait for those echoes.
            return all(seq in self.seen[self.sender_of[cmid]] for cmid, seq in self.acks.items())

        # Open loop has no event for "all answered": poll until then or the deadline.
        while time.perf_counter() < deadline and not settled():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        # Loss: an acked seq that a member of the match never received.
        for cmid, seq in self.acks.items():
            sender = self.sender_of[cmid]
            for member in (sender, sender ^ 1):
                if seq not in self.seen[member] and seq not in base[member]:
                    stats.lost += 1
        stats.unanswered = stats.sent - stats.acked - stats.shed
        stats.closed = self.closed - closed_before
        return stats

    async def close(self) -> None:
        for ws in self.sockets:
            if ws is not None:
                await ws.close()
        if self.readers:
            await asyncio.wait(self.readers, timeout=10)
        if self.session is not None:
            await self.session.close()


def report(name: str, s: RunStats) -> None:
    print(
        f"{name:8} offered {s.rate:6}/s  sent {s.sent:6}  acked {s.acked:6}  "
        f"delivered {s.delivered / max(s.elapsed, 1e-9):8.0f}/s  "
        f"ack p50/p95/p99 {pct(s.ack_lat, .5):6.1f} {pct(s.ack_lat, .95):6.1f} "
        f"{pct(s.ack_lat, .99):7.1f} ms  "
        f"delivery p50/p95/p99 {pct(s.delivery_lat, .5):6.1f} {pct(s.delivery_lat, .95):6.1f} "
        f"{pct(s.delivery_lat, .99):7.1f} ms  "
        f"shed {s.shed}  unanswered {s.unanswered}  lost {s.lost}  dup {s.duplicates}  "
        f"order {s.order_violations}  closed {s.closed}",
        flush=True,
    )


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def make_users(dsn: str, n: int) -> list[uuid.UUID]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(NEW_USERS, secrets.token_hex(4), n)
        return [r["id"] for r in rows]
    finally:
        await conn.close()


async def make_matches(dsn: str, users: list[uuid.UUID]) -> list[str]:
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


async def warm_up(client: LoadClient) -> None:
    """One message from every user, so every match's actor is active before
    the sweep: a chat pays its activation once, on its first message, and the
    sweep measures the messages after it."""
    await client.run(WARM_UP_RATE, len(client.urls) / WARM_UP_RATE)


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


async def sweep(name: str, client: LoadClient, rates: list[int], seconds: float) -> dict:
    results = {}
    for rate in rates:
        stats = await client.run(rate, seconds)
        report(name, stats)
        results[rate] = stats
    return results


def best_rate(results: dict[int, RunStats]) -> int:
    ok = [r for r, s in results.items()
          if s.delivery_lat and pct(s.delivery_lat, .99) < 50 and s.lost == 0 and s.shed == 0
          and s.unanswered == 0]
    return max(ok, default=0)


async def main_async(args: argparse.Namespace) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import ray

    from unimatch.server.platform import Platform

    db_name = f"unimatch_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    await admin.close()
    dsn = ADMIN_DSN.rpartition("/")[0] + "/" + db_name
    relay: subprocess.Popen[bytes] | None = None
    platform = None
    try:
        await apply_migrations(dsn)
        config = Config(
            database_url=dsn, redis_url=REDIS_URL, jwt_secret=secrets.token_hex(16),
            redis_prefix=f"bench:{db_name}:", namespace=db_name,
            shard_hosts=args.hosts, gateways=args.gateways, ws_send_queue=256,
            colocated=args.colocated,
            # Every process has a pool: keep the sum under max_connections (100).
            pg_pool_size=10, pg_pool_overflow=5,
        )
        ray.init(namespace=db_name, include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
        port = free_port()
        platform = await asyncio.to_thread(Platform.start, config, "127.0.0.1", port)
        users = await make_users(dsn, args.users)
        match_of = await make_matches(dsn, users)
        urls = [f"{platform.url}/ws?token={tokens.issue_access(config, u)}" for u in users]
        layout = (f"{args.hosts} node(s), each a shard host and a gateway" if args.colocated
                  else f"{args.hosts} shard hosts, {args.gateways} gateway(s)")
        print(f"# {args.users} users in {args.users // 2} matches, {layout}; "
              f"rates {args.rates} for {args.seconds:.0f} s each",
              flush=True)

        started = time.perf_counter()
        client = LoadClient(urls, match_of)
        await client.connect()
        print(f"# platform: {args.users} sockets connected in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        await warm_up(client)
        platform_results = (
            await sweep("platform", client, args.rates, args.seconds)
            if args.only in (None, "platform") else {}
        )
        await client.close()

        relay_port = free_port()
        # Started once and left running: nothing to await.
        relay = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, str(ROOT / "bench" / "relay.py"), "--port", str(relay_port)]
        )
        await wait_listening(relay_port)
        relay_urls = [f"http://127.0.0.1:{relay_port}/ws?token={u}&match={m}"
                      for u, m in zip(users, match_of, strict=True)]
        rclient = LoadClient(relay_urls, match_of)
        await rclient.connect()
        await warm_up(rclient)
        relay_results = (
            await sweep("relay", rclient, args.rates, args.seconds)
            if args.only in (None, "relay") else {}
        )
        await rclient.close()

        ours, ceiling = best_rate(platform_results), best_rate(relay_results)
        print(f"# highest rate with delivery p99 < 50 ms (no loss, nothing shed): platform "
              f"{ours}/s, bare relay {ceiling}/s, ratio "
              f"{(ours / ceiling if ceiling else float('nan')):.2f}", flush=True)
        for name, results in (("platform", platform_results), ("bare relay", relay_results)):
            bad = sum(s.lost + s.duplicates + s.order_violations for s in results.values())
            print(f"# loss + duplicates + order violations over every {name} run: {bad}")

        if args.idle:
            pids = [await g.__ray_call__.remote(lambda self: os.getpid())
                    for g in platform.gateways]
            idle_users = await make_users(dsn, args.idle)
            before = sum(rss_kb(pid) for pid in pids)
            iclient = LoadClient(
                [f"{platform.url}/ws?token={tokens.issue_access(config, u)}" for u in idle_users],
                [""] * len(idle_users),
            )
            started = time.perf_counter()
            await iclient.connect()
            await asyncio.sleep(2.0)
            after = sum(rss_kb(pid) for pid in pids)
            print(f"# idle: {args.idle} sockets connected in {time.perf_counter() - started:.1f} s;"
                  f" gateway RSS {before / 1024:.0f} MB -> {after / 1024:.0f} MB: "
                  f"{(after - before) / args.idle:.1f} KB per connection added, "
                  f"{after / args.idle:.1f} KB RSS / connections", flush=True)
            await iclient.close()
    finally:
        if relay is not None:
            relay.terminate()
            relay.wait(10)
        if platform is not None:
            await asyncio.to_thread(platform.stop)
        ray.shutdown()
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rates", type=lambda v: [int(x) for x in v.split(",")],
                        default=[250, 500, 1000, 2000, 3000])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--gateways", type=int, default=1)
    parser.add_argument("--colocated", action="store_true",
                        help="each shard host also serves a gateway (COLOCATED=true)")
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--only", choices=("platform", "relay"),
                        help="sweep the rates against one side only (the ratio needs both)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
