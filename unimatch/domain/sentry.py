"""Errors to Sentry, when `SENTRY_DSN` is set, with nothing personal in them.

sentry-sdk is an optional dependency (the `sentry` extra): a deployment
without a DSN never imports it. With one, every process (the CLI, each node,
the scheduler) reports its own errors: unhandled exceptions in aiohttp
handlers (AioHttpIntegration) and every ERROR log line with its traceback
(the SDK's logging integration, on by default).

PII stays out: `send_default_pii=False` (no client address, no user, no
cookies), no request bodies, no local variables of stack frames, and
`scrub_event` removes what the SDK would still send: the Authorization and
Cookie headers and the `token` query parameter the WebSocket endpoint takes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from unimatch.domain.config import Config

# Compared in lower case.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
SECRET_PARAMS = frozenset({"token", "access_token", "refresh_token"})


def strip_secret_params(query: str) -> str:
    """`query` (`a=1&token=...`) without its secret parameters."""
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True)
            if k.lower() not in SECRET_PARAMS]
    return urlencode(kept)


def _strip_url(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    return urlunsplit(parts._replace(query=strip_secret_params(parts.query)))


def _scrub_request(request: dict[str, Any]) -> None:
    headers = request.get("headers")
    if isinstance(headers, dict):
        request["headers"] = {
            name: value for name, value in headers.items()
            if name.lower() not in SECRET_HEADERS
        }
    request.pop("cookies", None)
    query = request.get("query_string")
    if isinstance(query, str):
        request["query_string"] = strip_secret_params(query)
    elif isinstance(query, dict):
        request["query_string"] = {
            k: v for k, v in query.items() if k.lower() not in SECRET_PARAMS
        }
    url = request.get("url")
    if isinstance(url, str):
        request["url"] = _strip_url(url)


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sentry's `before_send`: the event without credentials. The request's
    secret headers and cookies are dropped, and `token` parameters are cut
    from its query string, its URL and the URLs of its breadcrumbs."""
    request = event.get("request")
    if isinstance(request, dict):
        _scrub_request(request)
    breadcrumbs = event.get("breadcrumbs")
    values = breadcrumbs.get("values") if isinstance(breadcrumbs, dict) else breadcrumbs
    for crumb in values if isinstance(values, list) else ():
        data = crumb.get("data") if isinstance(crumb, dict) else None
        if isinstance(data, dict) and isinstance(data.get("url"), str):
            data["url"] = _strip_url(data["url"])
    return event


def configure_sentry(config: Config, *, process: str | None = None) -> bool:
    """Report this process's errors to `config.sentry_dsn`; False (and
    nothing imported) when no DSN is set. Safe to call again: a process
    keeps one client and takes the latest `process` tag."""
    if not config.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.aiohttp import AioHttpIntegration

    client = sentry_sdk.get_client()
    if not (client.is_active() and client.dsn == config.sentry_dsn):
        sentry_sdk.init(
            dsn=config.sentry_dsn,
            integrations=[AioHttpIntegration()],
            # Only what is listed: no global patches of asyncpg or redis.
            auto_enabling_integrations=False,
            send_default_pii=False,
            include_local_variables=False,
            max_request_body_size="never",
            before_send=scrub_event,  # type: ignore[arg-type]
            before_send_transaction=scrub_event,  # type: ignore[arg-type]
        )
    if process is not None:  # on the global scope, so every request's event has it
        sentry_sdk.get_global_scope().set_tag("process", process)
    return True
