"""Which address a request comes from, for every per-IP limit.

The TCP peer is the client unless it is one of `TRUSTED_PROXIES` (default
loopback: the nginx of `ops/`). A trusted proxy appends the address it saw to
`X-Forwarded-For`, so the header is read from the right: the last entry is
what our nearest proxy saw, the one before it what the proxy in front of that
one saw, and so on for `TRUSTED_PROXY_HOPS` proxies of ours. The walk stops
early at an entry that is not itself a trusted proxy: that entry connected to
one of ours directly, and everything to its left was written by the client
and could be forged. A header from an untrusted peer is ignored.

IPv6 clients are bucketed by their /64, the block one subscriber gets, so
rotating through the addresses of one's own prefix buys no extra attempts.
"""

from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

from unimatch.domain.config import Config
from unimatch.http.keys import CONFIG

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

IPV6_BUCKET_PREFIX = 64


@functools.cache
def networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def parse_address(value: str) -> Address | None:
    try:
        address = ipaddress.ip_address(value.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def in_networks(address: Address, allowed: tuple[Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in allowed)


def peer_address(request: web.Request) -> Address | None:
    """The TCP peer itself, whatever the headers say."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and peer:
        return parse_address(str(peer[0]))
    return None


def resolve(
    peer: Address | None, forwarded_for: str, trusted: tuple[Network, ...], hops: int
) -> Address | None:
    """The client's address given the peer and its `X-Forwarded-For`."""
    if peer is None or not in_networks(peer, trusted):
        return peer
    entries = [entry for entry in forwarded_for.split(",") if entry.strip()]
    client = peer
    for step in range(max(hops, 1)):
        if not entries:
            break
        seen = parse_address(entries.pop())
        if seen is None:
            break  # garbage: trust the hop that wrote it, not what it says
        client = seen
        if step + 1 < hops and not in_networks(seen, trusted):
            break
    return client


def client_address(request: web.Request) -> Address | None:
    """The client's address (None only without a TCP peer)."""
    config: Config = request.app[CONFIG]
    return resolve(
        peer_address(request),
        ",".join(request.headers.getall("X-Forwarded-For", [])),
        networks(config.trusted_proxies),
        config.trusted_proxy_hops,
    )


def limit_key(address: Address | None) -> str:
    """The bucket of per-IP limits: the address, or its /64 for IPv6."""
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        network = ipaddress.IPv6Network((address, IPV6_BUCKET_PREFIX), strict=False)
        return str(network)
    return str(address)


def client_limit_key(request: web.Request) -> str:
    """`limit_key(client_address(request))`: what per-IP limits count by."""
    return limit_key(client_address(request))
