"""`ray start` for a second Ray node on this machine, kept on loopback.

Ray's own `ray start --address` turns a node address of 127.0.0.1 into the
machine's external address (and then binds every interface), and refuses to
join at all when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps it on loopback.
A real cluster's nodes have private addresses and need neither; for two
nodes on one machine this entry point keeps a loopback address as given.
Run as `python -m tests.ray_join start --address ... --node-ip-address 127.0.0.1 ...`.
"""

from __future__ import annotations

import sys

from ray._private import services
from ray.scripts import scripts


def _as_given(host: str) -> str:
    if not host:
        raise ValueError(f"Malformed host: {host}")
    return host


if __name__ == "__main__":
    services.resolve_ip_for_localhost = _as_given
    sys.exit(scripts.main())
