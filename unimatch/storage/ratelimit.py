"""One rate limiter for the whole platform: GCRA in Redis, atomic in Lua.

A limit is `burst` events per `per_seconds`, refilled evenly. `hit` spends
`cost`; `check` asks whether one more would pass without spending it. When
Redis is down the limiter fails open (logged and counted): a lost cache must
not lock students out of the app.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from redis.exceptions import RedisError

from unimatch.domain.errors import RateLimited
from unimatch.domain.metrics import CACHE_ERRORS
from unimatch.storage.cache import Cache

log = logging.getLogger("unimatch.ratelimit")

# KEYS[1] the key; ARGV: emission interval (ms), burst, cost, dry run (1 looks
# without spending). Returns
# {allowed 0/1, retry_after_ms, remaining}. Time comes from Redis so every
# process agrees on it.
_GCRA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local dry = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local tolerance = interval * burst
local new_tat = tat + interval * cost
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, allow_at - now, math.floor((tolerance - (tat - now)) / interval)}
end
if dry == 0 then
  redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
end
return {1, 0, math.floor((tolerance - (new_tat - now)) / interval)}
"""


@dataclass(frozen=True)
class Limit:
    burst: int
    per_seconds: float

    @property
    def interval_ms(self) -> float:
        return self.per_seconds * 1000 / self.burst


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float
    remaining: int


class RateLimiter:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self._script = cache.client.register_script(_GCRA)

    async def hit(self, key: str, limit: Limit, cost: int = 1, *, dry: bool = False) -> Decision:
        try:
            allowed, retry_ms, remaining = await self._script(
                keys=[self.cache.key("rl:" + key)],
                args=[limit.interval_ms, limit.burst, cost, 1 if dry else 0],
            )
        except (RedisError, OSError) as exc:
            CACHE_ERRORS.labels("ratelimit").inc()
            log.warning("rate limiter unavailable, allowing: %r", exc)
            return Decision(True, 0.0, limit.burst)
        return Decision(bool(allowed), retry_ms / 1000, max(int(remaining), 0))

    async def check(self, key: str, limit: Limit) -> Decision:
        return await self.hit(key, limit, dry=True)

    async def require(self, key: str, limit: Limit, detail: str = "too many requests") -> None:
        """Spend one event or raise `RateLimited` with the wait in seconds."""
        decision = await self.hit(key, limit)
        if not decision.allowed:
            raise RateLimited(detail, retry_after=max(1, math.ceil(decision.retry_after)))

    async def reset(self, key: str) -> None:
        await self.cache.delete("rl:" + key)
