"""The app factory: it only wires. Resources open in `cleanup_ctx`, one
context per resource, in dependency order; nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from unimatch.actors.directory import ActorDirectory
from unimatch.domain.config import Config
from unimatch.domain.passwords import PasswordWork
from unimatch.domain.workpool import BoundedPool
from unimatch.http.keys import (
    CACHE,
    CONFIG,
    DB,
    DIRECTORY,
    LIMITER,
    MEDIA,
    NODE_INDEX,
    PASSWORDS,
    PHOTO_DECODER,
)
from unimatch.http.middleware import setup_middlewares
from unimatch.http.routes import setup_routes
from unimatch.http.static import setup_web_client
from unimatch.storage.cache import Cache, connect_redis
from unimatch.storage.local_media import LocalMediaStore
from unimatch.storage.media_store import MediaStore
from unimatch.storage.pg import Database
from unimatch.storage.ratelimit import RateLimiter
from unimatch.storage.s3_media import S3MediaStore
from unimatch.ws.hub import HUB, SocketHub

log = logging.getLogger("unimatch.http")

# Photo uploads are the largest bodies; JSON bodies are capped lower in
# `validation.read_body` (`schemas.limits.JSON_BODY_MAX_BYTES`).
CLIENT_MAX_SIZE = 6 * 1024 * 1024


async def pg_ctx(app: web.Application) -> AsyncIterator[None]:
    app[DB] = await Database.for_config(app[CONFIG])
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


async def open_media_store(config: Config) -> MediaStore:
    """The one media store this process uses, from `MEDIA_STORE`."""
    if config.media_store == "s3":
        return await S3MediaStore.connect(config)
    return LocalMediaStore(config.media_root)


async def media_ctx(app: web.Application) -> AsyncIterator[None]:
    app[MEDIA] = await open_media_store(app[CONFIG])
    yield
    await app[MEDIA].close()


async def work_pools_ctx(app: web.Application) -> AsyncIterator[None]:
    """The bounded CPU pools of this process: argon2 and photo decoding."""
    config = app[CONFIG]
    app[PASSWORDS] = PasswordWork(config.password_hash_workers, config.password_hash_queue)
    app[PHOTO_DECODER] = BoundedPool(
        "photo", config.photo_decode_workers, config.photo_decode_queue
    )
    yield
    app[PASSWORDS].close()
    app[PHOTO_DECODER].close()


def create_app(
    config: Config,
    *,
    directory: ActorDirectory | None = None,
    hub: SocketHub | None = None,
    node_index: int = 0,
    db: Database | None = None,
    cache: Cache | None = None,
    media: MediaStore | None = None,
    extra_contexts: tuple[Any, ...] = (),
) -> web.Application:
    """The whole HTTP + WebSocket surface. `directory` is the actor system's
    client (None for shell-only tests); `hub` holds this node's sockets (the
    node pushes to it); `node_index` is the node the app serves in, so actors
    know where a socket lives. A node passes the `db` and `cache` its actors
    use, so a process holds one pool of each; without them the app opens
    (and closes) its own. Likewise the `media` store: without one, the app
    opens the one `MEDIA_STORE` names."""
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[CONFIG] = config
    app[DIRECTORY] = directory
    app[NODE_INDEX] = node_index
    app[HUB] = hub if hub is not None else SocketHub(node_index, config)
    if db is None:
        app.cleanup_ctx.append(pg_ctx)
    else:
        app[DB] = db
    if cache is None:
        app.cleanup_ctx.append(redis_ctx)
    else:
        app[CACHE] = cache
        app[LIMITER] = RateLimiter(cache)
    if media is None:
        app.cleanup_ctx.append(media_ctx)
    else:
        app[MEDIA] = media
    app.cleanup_ctx.append(work_pools_ctx)
    app.cleanup_ctx.extend(extra_contexts)
    setup_routes(app)
    setup_web_client(app)  # last: every platform route wins over the catch-all
    setup_middlewares(app)
    return app
