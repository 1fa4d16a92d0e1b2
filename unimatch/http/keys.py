"""Typed keys for what the app factory stores on the application."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from unimatch.config import Config
from unimatch.storage.cache import Cache
from unimatch.storage.pg import Database
from unimatch.storage.ratelimit import RateLimiter

if TYPE_CHECKING:
    from unimatch.actors.directory import ActorDirectory

CONFIG = web.AppKey("config", Config)
DB = web.AppKey("db", Database)
CACHE = web.AppKey("cache", Cache)
LIMITER = web.AppKey("limiter", RateLimiter)
# None when the app runs without the actor system (in-process shell tests).
DIRECTORY = web.AppKey("directory", Any)
GATEWAY_ID = web.AppKey("gateway_id", str)

REQUEST_ID = web.RequestKey("request_id", str)


def directory_of(app: web.Application) -> ActorDirectory:
    directory = app[DIRECTORY]
    if directory is None:
        from unimatch.errors import Unavailable

        raise Unavailable("actor system not attached", code="actor_system_unavailable")
    return directory
