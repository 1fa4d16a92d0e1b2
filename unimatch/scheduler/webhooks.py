"""The `deliver_webhook` job: POST one delivery to its webhook, signed.

The request carries the delivery's stored body, byte for byte the same on
every attempt, and three headers:

- `X-UniMatch-Signature: sha256=<hex HMAC-SHA256 of the body, keyed with the
  webhook's secret>`: receivers recompute it over the raw body and compare
  in constant time;
- `X-UniMatch-Event`: the notification kind (`match`, `message`, ...);
- `X-UniMatch-Delivery`: the delivery id, the same on every retry. Delivery
  is at least once (a worker can die after the POST and before recording
  it), so receivers deduplicate on this id.

A 2xx answer within 10 s is a delivery. Anything else (another status, a
redirect, a timeout, a refused connection) is recorded as an attempt and
raised, so the job queue retries it with exponential backoff; after the job's
last attempt the delivery is marked `failed`.

Server-side request forgery: a webhook URL is chosen by a user, so by default
deliveries go only to public addresses. The check runs on the addresses the
connection actually uses (a resolver that refuses private answers), so a
name that resolves to a public address at registration and to 127.0.0.1 at
delivery is still refused. `WEBHOOK_ALLOW_PRIVATE=true` lifts this, for
tests and for deployments whose receivers live on a private network.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from unimatch.domain.metrics import WEBHOOK_ATTEMPTS
from unimatch.scheduler.handlers import JobContext, PermanentJobError, register
from unimatch.storage import webhooks as store
from unimatch.storage.notifications import DELIVER_WEBHOOK

log = logging.getLogger("unimatch.webhooks")

TIMEOUT_SECONDS = 10.0
MAX_URL_LENGTH = 2000
USER_AGENT = "UniMatch-Webhooks/1"
SIGNATURE_HEADER = "X-UniMatch-Signature"
EVENT_HEADER = "X-UniMatch-Event"
DELIVERY_HEADER = "X-UniMatch-Delivery"


class UnsafeDestination(Exception):
    """The URL points at an address deliveries may not reach."""


class DeliveryFailed(Exception):
    """The receiver did not accept the delivery; the job retries."""


def sign(secret: str, body: bytes) -> str:
    """The `X-UniMatch-Signature` value for `body`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def url_problem(url: str, *, allow_private: bool) -> str | None:
    """Why `url` cannot be a webhook, or None. Names are checked again, by
    their resolved addresses, at every delivery."""
    if len(url) > MAX_URL_LENGTH:
        return f"at most {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in {"http", "https"}:
        return "must be an http or https URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "may not contain credentials"
    if port == 0:
        return "not a valid port"
    if any(ch.isspace() for ch in url):
        return "may not contain whitespace"
    if not allow_private:
        host = parts.hostname
        if host == "localhost" or host.endswith(".localhost"):
            return "private and loopback addresses are not allowed"
        try:
            if not is_public_address(host):
                return "private and loopback addresses are not allowed"
        except ValueError:
            pass  # a name: checked by address at delivery
    return None


class _PublicOnlyResolver(ThreadedResolver):
    """Refuses a name if any address it resolves to is not public."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        for result in results:
            if not is_public_address(result["host"]):
                raise UnsafeDestination(f"{host} resolves to a non-public address")
        return results


async def post_delivery(
    url: str, body: bytes, headers: dict[str, str], *, allow_private: bool
) -> int:
    """POST and return the status; raises UnsafeDestination, or aiohttp's and
    asyncio's errors for network trouble."""
    problem = url_problem(url, allow_private=allow_private)
    if problem is not None:
        raise UnsafeDestination(problem)
    connector = aiohttp.TCPConnector(
        resolver=None if allow_private else _PublicOnlyResolver(),
        force_close=True,
        limit=1,
    )
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.post(url, data=body, headers=headers, allow_redirects=False) as response,
    ):
        await response.read()
        return response.status


@register(DELIVER_WEBHOOK)
async def deliver_webhook(payload: dict[str, Any], ctx: JobContext) -> None:
    """Send one delivery. Idempotent: a delivery no longer pending (sent, or
    failed for good, or its webhook deleted) is left alone."""
    try:
        delivery_id = uuid.UUID(str(payload["delivery_id"]))
    except (KeyError, ValueError) as exc:
        raise PermanentJobError(f"bad deliver_webhook payload: {payload!r}") from exc
    row = await store.delivery_for_sending(ctx.db, delivery_id)
    if row is None or row["status"] != "pending":
        return
    if not row["is_active"]:
        await store.mark_failed(ctx.db, delivery_id, "webhook deleted")
        return

    body = row["body"].encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(row["secret"], body),
        EVENT_HEADER: row["event"],
        DELIVERY_HEADER: str(delivery_id),
    }
    final = ctx.job.is_last_attempt
    try:
        status = await post_delivery(
            row["url"], body, headers, allow_private=ctx.config.webhook_allow_private
        )
    except UnsafeDestination as exc:
        await store.record_attempt(
            ctx.db, delivery_id, response_code=None, error=str(exc), delivered=False, final=True
        )
        WEBHOOK_ATTEMPTS.labels("refused").inc()
        log.warning("webhook %s delivery %s refused: %s", row["webhook_id"], delivery_id, exc)
        raise PermanentJobError(str(exc)) from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
        await store.record_attempt(
            ctx.db, delivery_id, response_code=None, error=error, delivered=False, final=final
        )
        WEBHOOK_ATTEMPTS.labels("network_error").inc()
        raise DeliveryFailed(error) from exc

    delivered = 200 <= status < 300
    await store.record_attempt(
        ctx.db,
        delivery_id,
        response_code=status,
        error=None if delivered else f"HTTP {status}",
        delivered=delivered,
        final=final,
    )
    WEBHOOK_ATTEMPTS.labels("delivered" if delivered else "http_error").inc()
    if not delivered:
        raise DeliveryFailed(f"webhook answered HTTP {status}")
    log.info("webhook %s delivery %s (%s) delivered", row["webhook_id"], delivery_id, row["event"])
