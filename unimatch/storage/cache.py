"""Redis: the client context and a small JSON cache with TTLs.

Redis is a cache. Every failure here is logged and counted, and the caller
goes on as if the key were missing: losing Redis costs speed, never data.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from unimatch.domain.metrics import CACHE_ERRORS, CACHE_LOOKUPS

log = logging.getLogger("unimatch.cache")

# TTLs of DESIGN.md, in seconds.
FEED_TTL = 600
PROFILE_TTL = 300
MATCH_LIST_TTL = 120
NOTIFICATIONS_TTL = 300


def feed_key(user_id: object) -> str:
    return f"discover_feed:{user_id}"


def profile_key(user_id: object) -> str:
    return f"user_profile:{user_id}"


def match_list_key(user_id: object) -> str:
    return f"match_list:{user_id}"


def notifications_key(user_id: object) -> str:
    return f"notifications:{user_id}"


def connect_redis(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        health_check_interval=15,
        retry_on_timeout=False,
    )


class Cache:
    """JSON values under `prefix + key`. Never raises for Redis trouble."""

    def __init__(self, client: aioredis.Redis, prefix: str = "") -> None:
        self.client = client
        self.prefix = prefix

    def key(self, name: str) -> str:
        return self.prefix + name

    def _failed(self, op: str, exc: BaseException) -> None:
        CACHE_ERRORS.labels(op).inc()
        log.warning("redis %s failed: %r", op, exc)

    async def get_json(self, name: str, *, cache: str = "other") -> Any | None:
        try:
            raw = await self.client.get(self.key(name))
        except (RedisError, OSError) as exc:
            self._failed("get", exc)
            return None
        CACHE_LOOKUPS.labels(cache, "hit" if raw is not None else "miss").inc()
        return None if raw is None else orjson.loads(raw)

    async def set_json(self, name: str, value: Any, ttl: int) -> None:
        try:
            await self.client.set(self.key(name), orjson.dumps(value), ex=ttl)
        except (RedisError, OSError) as exc:
            self._failed("set", exc)

    async def delete(self, *names: str) -> None:
        if not names:
            return
        try:
            await self.client.delete(*(self.key(n) for n in names))
        except (RedisError, OSError) as exc:
            self._failed("delete", exc)

    async def ping(self) -> None:
        """Raises when Redis does not answer (for `/readyz`)."""
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
