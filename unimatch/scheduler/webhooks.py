"""The `deliver_webhook` job: POST one delivery to its webhook, signed.

The request carries the delivery's stored body, byte for byte the same on
every attempt, and three headers:

- `X-UniMatch-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>",
  keyed with the webhook's secret>`: receivers recompute it over the raw
  body, compare in constant time, and refuse a `t` more than a few minutes
  from their clock, so a captured request cannot be replayed later (see
  docs/webhooks.md). `t` is the time of the attempt, so a retry carries a
  fresh one;
- `X-UniMatch-Event`: the notification kind (`match`, `message`, ...);
- `X-UniMatch-Delivery`: the delivery id, the same on every retry. Delivery
  is at least once (a worker can die after the POST and before recording
  it), so receivers deduplicate on this id (which also defeats a replay
  within the tolerance).

A 2xx answer within 10 s is a delivery. Anything else (another status, a
redirect, a timeout, a refused connection) is recorded as an attempt and
raised, so the job queue retries it with exponential backoff; after the job's
last attempt the delivery is marked `failed`. Of the answer, at most
`MAX_RESPONSE_BYTES` are read, as sent (no decompression): a receiver cannot
make a worker hold a large or gzip-bombed body.

Server-side request forgery: a webhook URL is chosen by a user, so by default
deliveries go only to public addresses, over https, on ports 80 and 443.
The address check runs on the addresses the connection actually uses (a
resolver that refuses private answers), so a name that resolves to a public
address at registration and to 127.0.0.1 at delivery is still refused.
Addresses that embed a private IPv4 address (NAT64 `64:ff9b::/96`, 6to4
`2002::/16`, Teredo) count as that address, and a numeric host must be the
canonical dotted quad: `2852039166`, `127.1`, `0x7f.0.0.1` and `0177.0.0.1`,
which resolvers read as addresses, are refused outright.
`WEBHOOK_ALLOW_PRIVATE=true` lifts the address check, `WEBHOOK_ALLOW_HTTP`
the https rule and `WEBHOOK_PORTS` widens the ports (for tests and for
deployments whose receivers live on a private network).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from unimatch.domain.config import Config
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
MAX_RESPONSE_BYTES = 4096
DEFAULT_PORTS = {"http": 80, "https": 443}

_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_CANONICAL_OCTET = re.compile(r"^(0|[1-9][0-9]{0,2})$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


@dataclass(frozen=True)
class DestinationPolicy:
    """Where deliveries may go (see the module doc)."""

    allow_private: bool = False
    allow_http: bool = False
    # None: any port.
    ports: tuple[int, ...] | None = (80, 443)

    @classmethod
    def from_config(cls, config: Config) -> DestinationPolicy:
        return cls(config.webhook_allow_private, config.webhook_allow_http, config.webhook_ports)


class UnsafeDestination(Exception):
    """The URL points at an address deliveries may not reach."""


class DeliveryFailed(Exception):
    """The receiver did not accept the delivery; the job retries."""


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `X-UniMatch-Signature` value for `body`, sent at `timestamp`."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, NAT64, 6to4)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False
        embedded = _embedded_ipv4(ip)
        if embedded is not None and not is_public_address(str(embedded)):
            return False
    return ip.is_global and not ip.is_multicast


def numeric_host_problem(host: str) -> str | None:
    """Refuse a host that resolvers read as an IPv4 address but that is not
    written as one (`2852039166`, `127.1`, `0x7f.0.0.1`, `0177.0.0.1`)."""
    if ":" in host:
        return None  # an IPv6 literal, parsed strictly by ipaddress
    labels = host.split(".")
    if not _NUMERIC_LABEL.match(labels[-1] or (labels[-2] if len(labels) > 1 else "")):
        return None
    canonical = len(labels) == 4 and all(
        _CANONICAL_OCTET.match(label) and int(label) <= 255 for label in labels
    )
    if not canonical:
        return "a numeric host must be a dotted IPv4 address (four decimal numbers)"
    return None


def url_problem(url: str, policy: DestinationPolicy) -> str | None:
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
    if parts.scheme == "http" and not policy.allow_http:
        return "must be an https URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "may not contain credentials"
    if port == 0:
        return "not a valid port"
    if any(ch.isspace() for ch in url):
        return "may not contain whitespace"
    effective_port = port if port is not None else DEFAULT_PORTS[parts.scheme]
    if policy.ports is not None and effective_port not in policy.ports:
        allowed = ", ".join(str(p) for p in policy.ports)
        return f"port {effective_port} is not allowed (allowed: {allowed})"
    problem = numeric_host_problem(parts.hostname)
    if problem is not None:
        return problem
    if ":" in parts.hostname:
        try:
            ipaddress.IPv6Address(parts.hostname.split("%", 1)[0])
        except ValueError:
            return "not a valid URL"
    if not policy.allow_private:
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


@dataclass(frozen=True)
class Answer:
    status: int
    # At most MAX_RESPONSE_BYTES of the body, as sent (still compressed).
    head: bytes


async def _read_head(response: aiohttp.ClientResponse) -> bytes:
    head = bytearray()
    while len(head) < MAX_RESPONSE_BYTES:
        chunk = await response.content.read(MAX_RESPONSE_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    return bytes(head)


async def post_delivery(
    url: str, body: bytes, headers: dict[str, str], policy: DestinationPolicy
) -> Answer:
    """POST and return the answer; raises UnsafeDestination, or aiohttp's and
    asyncio's errors for network trouble. The connection is closed after at
    most `MAX_RESPONSE_BYTES` of the body."""
    problem = url_problem(url, policy)
    if problem is not None:
        raise UnsafeDestination(problem)
    connector = aiohttp.TCPConnector(
        resolver=None if policy.allow_private else _PublicOnlyResolver(),
        force_close=True,
        limit=1,
    )
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with (
        aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session,
        session.post(url, data=body, headers=headers, allow_redirects=False) as response,
    ):
        head = await _read_head(response)
        # Whatever else the receiver sends is never read.
        response.close()
        return Answer(response.status, head)


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
        answer = await post_delivery(
            row["url"], body, headers, DestinationPolicy.from_config(ctx.config)
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

    status = answer.status
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
