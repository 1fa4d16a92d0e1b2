"""Operations endpoints (no prefix): liveness, readiness, metrics.

`/metrics` tells how the platform is loaded and failing, which is worth
knowing to an attacker; it is served only to TCP peers in `METRICS_ALLOW`
(default loopback: Prometheus on the host, or through nginx, which answers
it only to its own allow-list). The peer is the connection's own address,
never `X-Forwarded-For`. Everyone else gets the 404 of an unknown path.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from unimatch.domain.metrics import METRICS_REFUSED, render
from unimatch.http.client_address import in_networks, networks, peer_address
from unimatch.http.errors import error_response
from unimatch.http.keys import CACHE, CONFIG, DB, DIRECTORY
from unimatch.http.validation import json_response

log = logging.getLogger("unimatch.ops")
CHECK_TIMEOUT = 2.0

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _check(name: str, probe: asyncio.Future | object) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT)  # type: ignore[arg-type]
    except Exception as exc:
        log.warning("readiness: %s failed: %r", name, exc)
        return name, f"unavailable: {type(exc).__name__}"
    return name, "ok"


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """200 only when PostgreSQL, Redis and the actor system all answer;
    otherwise 503 with `detail.failed` naming each one that did not."""
    app = request.app
    probes = [_check("postgres", app[DB].ping()), _check("redis", app[CACHE].ping())]
    directory = app[DIRECTORY]
    if directory is not None:
        probes.append(_check("actors", directory.check_health()))
    checks = dict(await asyncio.gather(*probes))
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        return error_response(503, "not_ready", {"failed": failed, "checks": checks})
    return json_response({"status": "ready", "checks": checks})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    peer = peer_address(request)
    if peer is None or not in_networks(peer, networks(request.app[CONFIG].metrics_allow)):
        METRICS_REFUSED.inc()
        return error_response(404, "not_found", "no such resource")
    body, content_type = render()
    return web.Response(body=body, headers={"Content-Type": content_type})
