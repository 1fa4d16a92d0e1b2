"""Domain errors to HTTP: one table, and the middleware that renders every
non-2xx response in the contract's format:

    {"error": "validation_failed", "status_code": 400, "detail": {...}}
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from unimatch.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnsupportedMedia,
    ValidationFailed,
)
from unimatch.domain.metrics import DB_UNAVAILABLE
from unimatch.http.keys import REQUEST_ID

log = logging.getLogger("unimatch.http")

STATUS_BY_ERROR: dict[type[DomainError], int] = {
    ValidationFailed: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Gone: 410,
    PayloadTooLarge: 413,
    UnsupportedMedia: 415,
    RateLimited: 429,
    Unavailable: 503,
}

# Codes for errors aiohttp raises itself (routing, body size, methods).
CODE_BY_STATUS: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
}


def status_for(error: DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]  # type: ignore[index]
    return 500


def error_response(
    status: int,
    code: str | None = None,
    detail: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": code or CODE_BY_STATUS.get(status, "error"), "status_code": status,
            "detail": detail}
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def render_domain_error(error: DomainError) -> web.Response:
    status = status_for(error)
    headers = None
    # 429s and the 503s that know when to come back (a full work pool).
    retry_after = getattr(error, "retry_after", None)
    if isinstance(error, RateLimited) or retry_after is not None:
        headers = {"Retry-After": str(max(1, round(retry_after or 1)))}
    if isinstance(error, Unavailable) and error.code == "database_unavailable":
        DB_UNAVAILABLE.inc()
    return error_response(status, error.code, error.detail, headers)


def _is_ray_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith("ray.")


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as exc:
        return render_domain_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.content_type == "application/json":
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
        detail = exc.reason if exc.status != 404 else "no such resource"
        if exc.status == 405:
            detail = f"method {request.method} not allowed"
        return error_response(exc.status, None, detail, headers)
    except Exception as exc:
        if _is_ray_error(exc):
            log.error("actor system unavailable on %s %s: %r", request.method, request.path, exc)
            return error_response(503, "actor_system_unavailable", "try again shortly")
        log.exception(
            "unhandled error on %s %s (request %s)",
            request.method,
            request.path,
            request.get(REQUEST_ID),
        )
        return error_response(500, "internal_error", "an unexpected error occurred")
