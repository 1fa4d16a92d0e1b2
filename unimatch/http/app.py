"""The app factory: it only wires. Resources open in `cleanup_ctx`, one
context per resource, in dependency order; nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from unimatch.config import Config
from unimatch.http.keys import CACHE, CONFIG, DB, DIRECTORY, GATEWAY_ID, LIMITER
from unimatch.http.middleware import setup_middlewares
from unimatch.http.routes import setup_routes
from unimatch.storage.cache import Cache, connect_redis
from unimatch.storage.pg import Database
from unimatch.storage.ratelimit import RateLimiter

log = logging.getLogger("unimatch.http")

# Photo uploads are the largest bodies; JSON bodies are capped lower in
# `validation.read_json`.
CLIENT_MAX_SIZE = 6 * 1024 * 1024


async def pg_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    if config.database_url is None:
        raise RuntimeError("DATABASE_URL is not set")
    app[DB] = await Database.connect(
        config.database_url,
        size=config.pg_pool_size,
        overflow=config.pg_pool_overflow,
        retries=config.pg_retries,
        slow_query_ms=config.slow_query_ms,
        replica_dsn=config.replica_url,
    )
    yield
    await app[DB].close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    if config.redis_url is None:
        raise RuntimeError("REDIS_URL is not set")
    cache = Cache(connect_redis(config.redis_url), config.redis_prefix)
    app[CACHE] = cache
    app[LIMITER] = RateLimiter(cache)
    yield
    await cache.close()


def create_app(
    config: Config,
    *,
    directory: Any = None,
    gateway_id: str = "local",
    extra_contexts: tuple[Any, ...] = (),
) -> web.Application:
    """The whole HTTP + WebSocket surface. `directory` is the actor system's
    client (None for shell-only tests); `gateway_id` names the gateway actor
    this app runs in, so actors can push back to its sockets."""
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[CONFIG] = config
    app[DIRECTORY] = directory
    app[GATEWAY_ID] = gateway_id
    app.cleanup_ctx.append(pg_ctx)
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.extend(extra_contexts)
    setup_routes(app)
    setup_middlewares(app)
    return app
