"""Typed keys for what the app factory stores on the application."""

from __future__ import annotations

from aiohttp import web

from unimatch.actors.directory import ActorDirectory
from unimatch.domain.config import Config
from unimatch.domain.errors import Unavailable
from unimatch.domain.passwords import PasswordWork
from unimatch.domain.workpool import BoundedPool
from unimatch.storage.cache import Cache
from unimatch.storage.media_store import MediaStore
from unimatch.storage.pg import Database
from unimatch.storage.ratelimit import RateLimiter

CONFIG = web.AppKey("config", Config)
DB = web.AppKey("db", Database)
CACHE = web.AppKey("cache", Cache)
LIMITER = web.AppKey("limiter", RateLimiter)
# Where uploaded photos live (local folder or S3 bucket, chosen at wiring).
MEDIA: web.AppKey[MediaStore] = web.AppKey("media")
# Bounded pools for argon2 and for photo decoding (503 past them).
PASSWORDS = web.AppKey("passwords", PasswordWork)
PHOTO_DECODER = web.AppKey("photo_decoder", BoundedPool)
# None when the app runs without the actor system (in-process shell tests).
DIRECTORY: web.AppKey[ActorDirectory | None] = web.AppKey("directory")
# The index of the node this app serves in (its sockets are pushed to by it).
NODE_INDEX = web.AppKey("node_index", int)

REQUEST_ID = web.RequestKey("request_id", str)


def directory_of(app: web.Application) -> ActorDirectory:
    directory = app[DIRECTORY]
    if directory is None:
        raise Unavailable("actor system not attached", code="actor_system_unavailable")
    return directory
