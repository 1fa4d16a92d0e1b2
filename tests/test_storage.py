"""Storage behaviour under load and failure: slow-query log, database retries
then 503, Redis failures that never become errors, the shared rate limiter."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from unimatch.domain.errors import RateLimited, Unavailable
from unimatch.domain.metrics import CACHE_ERRORS
from unimatch.storage.cache import Cache, connect_redis
from unimatch.storage.pg import Database
from unimatch.storage.ratelimit import Limit, RateLimiter


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_slow_queries_are_logged_with_statement_and_duration(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = await Database.connect(pg_dsn, size=1, overflow=0, slow_query_ms=100)
    try:
        with caplog.at_level(logging.WARNING, logger="unimatch.sql"):
            await database.fetchval("SELECT 1")
            await database.execute("SELECT pg_sleep(0.15)")
        slow = [r.getMessage() for r in caplog.records if r.name == "unimatch.sql"]
        assert len(slow) == 1
        assert "pg_sleep(0.15)" in slow[0]
        duration = float(slow[0].split("slow query ")[1].split(" ms")[0])
        assert duration >= 150
    finally:
        await database.close()


async def test_unreachable_database_retries_then_unavailable() -> None:
    """A server that accepts and drops every connection: 1 try + 3 retries."""
    attempts = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    database = await Database.connect(f"postgresql://postgres@127.0.0.1:{port}/none", retries=3)
    try:
        with pytest.raises(Unavailable) as caught:
            await database.fetchval("SELECT 1")
        assert caught.value.code == "database_unavailable"
        assert attempts == 4
    finally:
        await database.close()
        server.close()
        await server.wait_closed()


async def test_redis_failure_is_a_miss_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    cache = Cache(connect_redis(f"redis://127.0.0.1:{_closed_port()}/0"), "x:")
    before = CACHE_ERRORS.labels("get")._value.get()
    with caplog.at_level(logging.WARNING, logger="unimatch.cache"):
        assert await cache.get_json("anything") is None
        await cache.set_json("anything", {"a": 1}, ttl=5)
        await cache.delete("anything")
    assert CACHE_ERRORS.labels("get")._value.get() == before + 1
    assert any("redis get failed" in r.getMessage() for r in caplog.records)
    await cache.close()


async def test_cache_round_trip_with_ttl(cache: Cache) -> None:
    await cache.set_json("roundtrip", {"ids": [1, 2], "name": "Wanjiru"}, ttl=30)
    assert await cache.get_json("roundtrip") == {"ids": [1, 2], "name": "Wanjiru"}
    ttl = await cache.client.ttl(cache.key("roundtrip"))
    assert 0 < ttl <= 30
    await cache.delete("roundtrip")
    assert await cache.get_json("roundtrip") is None


async def test_rate_limiter_allows_burst_then_refuses_with_retry_after(cache: Cache) -> None:
    limiter = RateLimiter(cache)
    limit = Limit(burst=5, per_seconds=900)
    key = "test:burst"
    await limiter.reset(key)
    decisions = [await limiter.hit(key, limit) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    # One more every 900/5 = 180 s.
    assert 170 <= decisions[-1].retry_after <= 180
    assert not (await limiter.check(key, limit)).allowed
    with pytest.raises(RateLimited) as caught:
        await limiter.require(key, limit)
    assert caught.value.retry_after >= 170


async def test_rate_limiter_check_does_not_spend(cache: Cache) -> None:
    limiter = RateLimiter(cache)
    limit = Limit(burst=2, per_seconds=60)
    key = "test:peek"
    await limiter.reset(key)
    for _ in range(5):
        assert (await limiter.check(key, limit)).allowed
    assert (await limiter.hit(key, limit)).allowed
    assert (await limiter.hit(key, limit)).allowed
    assert not (await limiter.hit(key, limit)).allowed


async def test_rate_limiter_is_atomic_under_concurrency(cache: Cache) -> None:
    limiter = RateLimiter(cache)
    limit = Limit(burst=10, per_seconds=3600)
    key = "test:race"
    await limiter.reset(key)
    decisions = await asyncio.gather(*(limiter.hit(key, limit) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10


async def test_rate_limiter_fails_open_without_redis() -> None:
    cache = Cache(connect_redis(f"redis://127.0.0.1:{_closed_port()}/0"))
    limiter = RateLimiter(cache)
    decision = await limiter.hit("k", Limit(burst=1, per_seconds=60))
    assert decision.allowed
    await cache.close()
