"""Discover feed and swipe benchmark, through HTTP against the real platform.

A scratch database gets 100,000 users over 40 campuses (with interests,
interested_in and photos) loaded by COPY; the platform starts on local Ray;
then `/discover` latency on a cache miss (key cleared first) and on a hit, and
`POST /swipes` throughput with its latency, each bounded in count and time.

    python bench/feed.py [--users 100000] [--requests 300] [--swipes 2000] [--concurrency 1,2,4,8]
    python bench/feed.py --load-only --keep     # just the data, for EXPLAIN
    python bench/feed.py --database NAME        # measure a kept database again

The scratch database is dropped at the end unless `--keep` (a database named
by `--database` is never dropped; the swipes a run adds stay in it).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import os
import random
import secrets
import statistics
import time
import uuid

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Ray starts its workers at nice 15; `unimatch serve` runs them at 0 (see
# unimatch.server.platform.init_ray), and so does this bench.
os.environ.setdefault("RAY_worker_niceness", "0")

import aiohttp
import asyncpg

from unimatch.domain import tokens
from unimatch.domain.config import Config
from unimatch.storage.cache import feed_key
from unimatch.storage.migrations import apply_migrations

ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
GENDERS = ("woman", "man", "nonbinary")
CAMPUSES = 40


def _dsn(name: str) -> str:
    return ADMIN_DSN.rpartition("/")[0] + "/" + name


async def load(dsn: str, users: int, seed: int = 7) -> list[uuid.UUID]:
    """COPY `users` users with profiles; returns their ids."""
    rng = random.Random(seed)
    conn = await asyncpg.connect(dsn)
    try:
        campuses = [r["id"] for r in await conn.fetch("SELECT id FROM campuses ORDER BY slug")]
        campuses = campuses[:CAMPUSES]
        interests = [r["id"] for r in await conn.fetch("SELECT id FROM interests ORDER BY slug")]
        now = dt.datetime.now(dt.UTC)
        ids = [uuid.uuid4() for _ in range(users)]
        user_rows, seeking_rows, interest_rows, photo_rows = [], [], [], []
        for i, user_id in enumerate(ids):
            gender = rng.choices(GENDERS, weights=(48, 48, 4))[0]
            if gender == "nonbinary":
                seeking = rng.sample(GENDERS, rng.randint(1, 3))
            else:
                other = "man" if gender == "woman" else "woman"
                seeking = [other] if rng.random() < 0.85 else rng.sample(GENDERS, rng.randint(1, 3))
            active = now - dt.timedelta(seconds=rng.expovariate(1 / (3 * 86400)))
            user_rows.append((
                user_id, f"bench{i}@uonbi.ac.ke", "x", "user", rng.random() < 0.95,
                rng.random() < 0.98, f"Student {i}", "Hello from campus",
                dt.date(2000 + rng.randint(0, 6), rng.randint(1, 12), rng.randint(1, 28)),
                gender, rng.choice(campuses), rng.randint(1, 5), now, active,
            ))
            seeking_rows.extend((user_id, g) for g in seeking)
            interest_rows.extend(
                (user_id, x) for x in rng.sample(interests, rng.randint(3, 10))
            )
            photo_rows.append(
                (user_id, f"{secrets.token_hex(12)}.jpg", "image/jpeg", 640, 480, 50_000)
            )
        await conn.copy_records_to_table(
            "users", records=user_rows,
            columns=["id", "email", "password_hash", "role", "is_verified", "is_visible",
                     "display_name", "bio", "birthdate", "gender", "campus_id",
                     "year_of_study", "verified_at", "last_active"],
        )
        await conn.copy_records_to_table(
            "user_interested_in", records=seeking_rows, columns=["user_id", "gender"]
        )
        await conn.copy_records_to_table(
            "user_interests", records=interest_rows, columns=["user_id", "interest_id"]
        )
        await conn.copy_records_to_table(
            "photos", records=photo_rows,
            columns=["user_id", "filename", "content_type", "width", "height", "size_bytes"],
        )
        await conn.execute("VACUUM ANALYZE users")
        for table in ("user_interested_in", "user_interests", "photos", "swipes", "blocks"):
            await conn.execute(f"VACUUM ANALYZE {table}")
        return ids
    finally:
        await conn.close()


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"n": len(ordered), "p50": q[49], "p95": q[94], "p99": q[98], "max": ordered[-1]}


def show(name: str, stats: dict[str, float], extra: str = "") -> None:
    print(
        f"{name:<22} n={stats['n']:<5} p50={stats['p50']:.2f} ms  p95={stats['p95']:.2f} ms  "
        f"p99={stats['p99']:.2f} ms  max={stats['max']:.2f} ms {extra}"
    )


async def _eligible_viewers(dsn: str, count: int) -> list[uuid.UUID]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT id FROM users WHERE is_verified AND has_photo
               AND bit_count(interest_mask::bit(64)) >= 3 AND seeking_mask <> 0
               ORDER BY random() LIMIT $1""",
            count,
        )
        return [r["id"] for r in rows]
    finally:
        await conn.close()


async def _background_settled(dsn: str, bound: float = 180.0) -> None:
    """Wait (bounded) until the scheduler's start-up `refresh_feeds` run, which
    recomputes every recently active user's feed, has finished: the figures
    are of the steady state, not of that burst."""
    conn = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        while time.monotonic() - started < bound:
            busy = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE kind = 'refresh_feeds'"
                " AND status IN ('queued', 'running')"
            )
            if not busy and time.monotonic() - started > 3.0:
                break
            await asyncio.sleep(0.5)
        print(f"background feed refresh settled after {time.monotonic() - started:.1f} s")
    finally:
        await conn.close()


async def measure(config: Config, url: str, args: argparse.Namespace) -> None:
    import redis.asyncio as aioredis

    dsn = config.database_url
    assert dsn
    await _background_settled(dsn)
    viewers = await _eligible_viewers(dsn, args.requests)
    redis = aioredis.Redis.from_url(REDIS_URL)
    headers = {v: {"Authorization": f"Bearer {tokens.issue_access(config, v)}"} for v in viewers}
    async with aiohttp.ClientSession(base_url=url) as http:
        # Warm-up: connections, actor activations, plan cache.
        for viewer in viewers[:20]:
            async with http.get("/api/v1/discover", headers=headers[viewer]) as resp:
                assert resp.status == 200, await resp.text()

        miss, hit = [], []
        deadline = time.monotonic() + args.seconds
        for viewer in viewers:
            if time.monotonic() > deadline:
                break
            await redis.delete(config.redis_prefix + feed_key(viewer))
            started = time.perf_counter()
            async with http.get("/api/v1/discover?limit=20", headers=headers[viewer]) as resp:
                body = await resp.json()
            miss.append((time.perf_counter() - started) * 1000)
            assert resp.status == 200 and body["cached"] is False, body
            started = time.perf_counter()
            async with http.get("/api/v1/discover?limit=20", headers=headers[viewer]) as resp:
                body = await resp.json()
            hit.append((time.perf_counter() - started) * 1000)
            assert resp.status == 200 and body["cached"] is True, body
        show("discover miss", percentiles(miss))
        show("discover hit", percentiles(hit))

        # Swipes: each viewer likes or passes its own feed's candidates, at
        # each concurrency level in turn, bounded by count and time.
        per_viewer: list[list[tuple[uuid.UUID, str]]] = []
        for viewer in viewers:
            async with http.get("/api/v1/discover?limit=50", headers=headers[viewer]) as resp:
                body = await resp.json()
            per_viewer.append([(viewer, c["user_id"]) for c in body["results"][:30]])
            if sum(map(len, per_viewer)) >= args.swipes:
                break
        # Interleaved, as many students swipe at once; one student's swipes
        # come one after another (their likes are counted under one lock).
        pairs = [p for round_ in itertools.zip_longest(*per_viewer) for p in round_ if p]
        pairs = pairs[: args.swipes]
        # The pairs are shared out over the concurrency levels, each level
        # swiping pairs no other level touches (a second swipe would be 409).
        share = len(pairs) // len(args.concurrency)
        for n, concurrency in enumerate(args.concurrency):
            await _swipe_phase(
                http, headers, pairs[n * share : (n + 1) * share], concurrency, args.seconds
            )
    await redis.aclose()


async def _swipe_phase(
    http: aiohttp.ClientSession,
    headers: dict[uuid.UUID, dict[str, str]],
    pairs: list[tuple[uuid.UUID, str]],
    concurrency: int,
    seconds: float,
) -> None:
    """`concurrency` clients swipe `pairs` back to back (closed loop)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[tuple[uuid.UUID, str]] = asyncio.Queue()
    for pair in pairs:
        queue.put_nowait(pair)
    deadline = time.monotonic() + seconds

    async def client() -> None:
        while not queue.empty() and time.monotonic() < deadline:
            viewer, target = queue.get_nowait()
            action = "like" if random.random() < 0.6 else "pass"
            started = time.perf_counter()
            async with http.post(
                "/api/v1/swipes", json={"target_id": target, "action": action},
                headers=headers[viewer],
            ) as resp:
                await resp.read()
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    show(f"swipe, {concurrency} clients", percentiles(latencies),
         f" {len(latencies) / elapsed:.0f} swipes/s, statuses {statuses}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300, help="viewers measured")
    parser.add_argument("--swipes", type=int, default=2000)
    parser.add_argument("--concurrency", type=lambda v: [int(x) for x in v.split(",")],
                        default=[1, 2, 4, 8], help="swiping clients, one phase each")
    parser.add_argument("--seconds", type=float, default=60.0, help="bound per phase")
    parser.add_argument("--load-only", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--database", help="measure this kept database instead of loading one")
    args = parser.parse_args()
    if args.database:
        args.keep = True
    name = args.database or f"unimatch_bench_feed_{secrets.token_hex(3)}"

    async def create() -> None:
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        await apply_migrations(_dsn(name))
        started = time.perf_counter()
        await load(_dsn(name), args.users)
        print(f"loaded {args.users} users into {name} in {time.perf_counter() - started:.1f} s")

    async def drop() -> None:
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    if not args.database:
        asyncio.run(create())
    try:
        if args.load_only:
            return
        import ray

        from unimatch.server.platform import Platform

        config = Config(
            database_url=_dsn(name),
            redis_url=REDIS_URL,
            jwt_secret=secrets.token_urlsafe(32),
            redis_prefix=f"bench:{name}:",
            namespace=name,
        )
        ray.init(address="local", namespace=name, include_dashboard=False,
                 configure_logging=False, log_to_driver=False)
        platform = Platform.start(config, "127.0.0.1", 0)
        try:
            asyncio.run(measure(config, platform.url, args))
        finally:
            platform.stop()
            ray.shutdown()
    finally:
        if not args.keep:
            asyncio.run(drop())


if __name__ == "__main__":
    main()

