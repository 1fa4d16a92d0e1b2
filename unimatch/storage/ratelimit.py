"""One rate limiter for the whole platform: GCRA in Redis, atomic in Lua.

A limit is `burst` events per `per_seconds`, refilled evenly. `hit` spends
`cost`; `check` asks whether one more would pass without spending it;
`release` gives one back (an attempt reserved, then not needed).

When Redis is down a limit either fails open (logged and counted in
`unimatch_ratelimit_degraded_total{mode="open"}`: a lost cache must not lock
students out of chat) or, when it guards credentials (`Limit.local_fallback`:
login, codes, registration, reset), falls back to the same algorithm kept in
this process (`mode="local"`). The fallback is per process, so a platform of
N processes allows up to N times the burst while Redis is away, which is a
bound, where failing open would be none.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from redis.exceptions import RedisError

from unimatch.domain.errors import RateLimited
from unimatch.domain.metrics import CACHE_ERRORS, RATELIMIT_DEGRADED
from unimatch.storage.cache import Cache

log = logging.getLogger("unimatch.ratelimit")

# KEYS[1] the key; ARGV: emission interval (ms), burst, cost (-1 gives one
# back), dry run (1 looks without spending). Returns
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
  if new_tat > now then
    redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
  else
    redis.call('DEL', KEYS[1])
  end
end
return {1, 0, math.floor((tolerance - (new_tat - now)) / interval)}
"""


@dataclass(frozen=True)
class Limit:
    burst: int
    per_seconds: float
    # Guarded by this process's own limiter when Redis is down, not failed open.
    local_fallback: bool = False

    @property
    def interval_ms(self) -> float:
        return self.per_seconds * 1000 / self.burst


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float
    remaining: int


class LocalLimiter:
    """The GCRA of `_GCRA`, in this process's memory: the fallback for
    credential limits while Redis is down. Bounded: the least recently used
    keys are dropped past `max_keys` (a dropped key starts afresh)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._tats: OrderedDict[str, float] = OrderedDict()

    def hit(self, key: str, limit: Limit, cost: int = 1, *, dry: bool = False) -> Decision:
        now = time.monotonic() * 1000
        interval = limit.interval_ms
        tat = max(self._tats.get(key, now), now)
        tolerance = interval * limit.burst
        new_tat = tat + interval * cost
        allow_at = new_tat - tolerance
        if allow_at > now:
            return Decision(False, (allow_at - now) / 1000,
                            max(math.floor((tolerance - (tat - now)) / interval), 0))
        if not dry:
            if new_tat > now:
                self._tats[key] = new_tat
                self._tats.move_to_end(key)
                while len(self._tats) > self.max_keys:
                    self._tats.popitem(last=False)
            else:
                self._tats.pop(key, None)
        return Decision(True, 0.0, max(math.floor((tolerance - (new_tat - now)) / interval), 0))

    def reset(self, key: str) -> None:
        self._tats.pop(key, None)


class RateLimiter:
    def __init__(self, cache: Cache, local: LocalLimiter | None = None) -> None:
        self.cache = cache
        self.local = local or LocalLimiter()
        self._script = cache.client.register_script(_GCRA)

    async def hit(self, key: str, limit: Limit, cost: int = 1, *, dry: bool = False) -> Decision:
        try:
            allowed, retry_ms, remaining = await self._script(
                keys=[self.cache.key("rl:" + key)],
                args=[limit.interval_ms, limit.burst, cost, 1 if dry else 0],
            )
        except (RedisError, OSError) as exc:
            CACHE_ERRORS.labels("ratelimit").inc()
            if limit.local_fallback:
                RATELIMIT_DEGRADED.labels("local").inc()
                log.warning("rate limiter unavailable, limiting in this process: %r", exc)
                return self.local.hit(key, limit, cost, dry=dry)
            RATELIMIT_DEGRADED.labels("open").inc()
            log.warning("rate limiter unavailable, allowing: %r", exc)
            return Decision(True, 0.0, limit.burst)
        return Decision(bool(allowed), retry_ms / 1000, max(int(remaining), 0))

    async def release(self, key: str, limit: Limit) -> None:
        """Give back one event spent by `hit` (a reserved attempt that passed)."""
        await self.hit(key, limit, cost=-1)

    async def check(self, key: str, limit: Limit) -> Decision:
        return await self.hit(key, limit, dry=True)

    async def require(self, key: str, limit: Limit, detail: str = "too many requests") -> None:
        """Spend one event or raise `RateLimited` with the wait in seconds."""
        decision = await self.hit(key, limit)
        if not decision.allowed:
            raise RateLimited(detail, retry_after=max(1, math.ceil(decision.retry_after)))

    async def reset(self, key: str) -> None:
        self.local.reset(key)
        await self.cache.delete("rl:" + key)
