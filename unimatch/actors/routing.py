"""Rendezvous (highest-random-weight) hashing of virtual actors onto hosts.

Each host gets a pseudo-random weight for an entity; the entity lives on the
host with the highest weight. Adding host n+1 moves exactly the entities whose
new weight beats all the old ones, about 1/(n+1) of them, and moves them only
onto the new host. blake2b (not `hash()`, which is salted per process) keeps
the choice identical in every process of the cluster.
"""

from __future__ import annotations

import hashlib


def _weight(prefix: hashlib.blake2b, host: int) -> int:
    digest = prefix.copy()
    digest.update(host.to_bytes(4, "big"))
    return int.from_bytes(digest.digest(), "big")


def pick_host(kind: str, actor_id: str, host_count: int) -> int:
    """The index in `range(host_count)` of the host that owns `kind/actor_id`."""
    if host_count < 1:
        raise ValueError(f"host_count must be at least 1, got {host_count}")
    if host_count == 1:
        return 0
    # The unit separator keeps ("ab", "c") and ("a", "bc") apart.
    prefix = hashlib.blake2b(f"{kind}\x1f{actor_id}\x1f".encode(), digest_size=8)
    return max(range(host_count), key=lambda host: _weight(prefix, host))
