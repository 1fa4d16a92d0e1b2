"""Rendezvous (highest-random-weight) hashing of virtual actors onto hosts.

Each host gets a pseudo-random weight for an entity; the entity lives on the
host with the highest weight. Adding host n+1 moves exactly the entities whose
new weight beats all the old ones, about 1/(n+1) of them, and moves them only
onto the new host. blake2b (not `hash()`, which is salted per process) keeps
the choice identical in every process of the cluster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _weight(prefix: hashlib.blake2b, host: int) -> int:
    digest = prefix.copy()
    digest.update(host.to_bytes(4, "big"))
    return int.from_bytes(digest.digest(), "big")


def pick_host(kind: str, actor_id: str, hosts: int | Iterable[int]) -> int:
    """The host that owns `kind/actor_id`: an index in `range(hosts)`, or
    one of the live host indices `hosts`. A host's weight depends only on
    its own index, so removing a host moves only the entities it owned, and
    adding one moves only the entities it now wins."""
    candidates = range(hosts) if isinstance(hosts, int) else sorted(set(hosts))
    if len(candidates) < 1:
        raise ValueError("no host to pick from")
    if len(candidates) == 1:
        return candidates[0]
    # The unit separator keeps ("ab", "c") and ("a", "bc") apart.
    prefix = hashlib.blake2b(f"{kind}\x1f{actor_id}\x1f".encode(), digest_size=8)
    return max(candidates, key=lambda host: _weight(prefix, host))
