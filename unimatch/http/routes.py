"""Every route of the platform, in one place."""

from __future__ import annotations

from aiohttp import web

from unimatch.http import (
    auth,
    discover,
    moderation,
    notifications,
    openapi,
    ops,
    photos,
    profile,
    webhooks,
)
from unimatch.http.chat import routes as chat_routes
from unimatch.ws.endpoint import setup_ws

API_PREFIX = "/api/v1"


def api(table: web.RouteTableDef) -> list[web.RouteDef]:
    """A module's routes under `API_PREFIX` (modules declare bare paths)."""
    return [
        web.RouteDef(route.method, API_PREFIX + route.path, route.handler, route.kwargs)
        for route in table
        if isinstance(route, web.RouteDef)
    ]


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(ops.routes)
    app.router.add_routes(api(notifications.routes))
    app.router.add_routes(api(webhooks.routes))
    app.router.add_routes(api(moderation.routes))
    app.router.add_routes(api(openapi.routes))
    app.router.add_routes(api(auth.routes))
    app.router.add_routes(api(profile.routes))
    app.router.add_routes(api(photos.routes))
    app.router.add_routes(photos.media_routes)
    app.router.add_routes(api(discover.routes))
    app.router.add_routes(api(chat_routes))
    setup_ws(app)
