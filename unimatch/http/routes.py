"""Every route of the platform, in one place."""

from __future__ import annotations

from aiohttp import web

from unimatch.http import ops

API_PREFIX = "/api/v1"


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(ops.routes)
