"""Middleware: request id, Prometheus metrics by route template, errors;
the access log."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from unimatch.domain.logs import bind_request, unbind
from unimatch.domain.metrics import HTTP_LATENCY, HTTP_REQUESTS
from unimatch.http.errors import error_middleware
from unimatch.http.keys import REQUEST_ID
from unimatch.http.permissions import PRINCIPAL

ACCESS_LOG = logging.getLogger("unimatch.access")
REQUEST_ID_HEADER = "X-Request-Id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Keep a well-formed incoming id (from nginx), else mint one; echo it
    back. Every line logged while the request runs carries it."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    bound = bind_request(request_id)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        unbind(bound)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def route_template(request: web.Request) -> str:
    """The route's template (`/api/v1/users/{user_id}`), never the raw path."""
    info = request.match_info
    if info.http_exception is not None:
        return "unmatched"
    resource = info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = route_template(request)
        HTTP_REQUESTS.labels(request.method, route, str(status)).inc()
        HTTP_LATENCY.labels(request.method, route).observe(time.perf_counter() - started)


class AccessLogger(AbstractAccessLogger):
    """One line per request, on the `unimatch.access` logger: method, route
    template (never the raw path, so never a query string: `/ws` takes its
    token there), status, duration, bytes, request id, user id (when the
    request authenticated) and client address. A WebSocket's line comes
    when the socket closes, with its whole lifetime as duration."""

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(ACCESS_LOG, log_format)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        route = route_template(request) if isinstance(request, web.Request) else "unmatched"
        principal = request.get(PRINCIPAL)
        fields: dict[str, Any] = {
            "method": request.method,
            "route": route,
            "status": response.status,
            "duration_ms": round(time * 1000, 3),
            "bytes": response.body_length,
            "request_id": request.get(REQUEST_ID),
            "client": request.remote,
        }
        if principal is not None:
            fields["user_id"] = str(principal.user_id)
        self.logger.info(
            "%s %s %d %.1fms", request.method, route, response.status, time * 1000,
            extra=fields,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def setup_middlewares(app: web.Application) -> None:
    app.middlewares.extend([request_id_middleware, metrics_middleware, error_middleware])
