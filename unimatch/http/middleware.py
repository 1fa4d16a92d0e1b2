"""Middleware: request id, Prometheus metrics by route template, errors."""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from unimatch.domain.metrics import HTTP_LATENCY, HTTP_REQUESTS
from unimatch.http.errors import error_middleware
from unimatch.http.keys import REQUEST_ID

REQUEST_ID_HEADER = "X-Request-Id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Keep a well-formed incoming id (from nginx), else mint one; echo it back."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    token = request_id_var.set(request_id)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        request_id_var.reset(token)
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
    """One line per request with its id, route and duration."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %d %.1fms rid=%s',
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time * 1000,
            request.get(REQUEST_ID, "-"),
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def setup_middlewares(app: web.Application) -> None:
    app.middlewares.extend([request_id_middleware, metrics_middleware, error_middleware])
