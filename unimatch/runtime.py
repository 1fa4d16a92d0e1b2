"""Settings of the long-running server processes (gateways, shard hosts,
nodes, the scheduler), applied once each is up.

Garbage collection: CPython's full collection scans every tracked object,
and a process holding thousands of sockets and actors has millions, so each
full pass stalled the event loop for 150-500 ms (measured on a node at 400
chat messages/s): every message in flight waited that long. Once start-up
is done, what it allocated (modules, clients, the app) is frozen out of the
collector's sight, and the young generations are collected less often, so
full passes come far more rarely. Cycles are still collected.
"""

from __future__ import annotations

import gc

# Allocations before a young collection; young collections before a middle
# one; middle ones before a full one (CPython's defaults: 700, 10, 10).
GC_THRESHOLDS = (20_000, 20, 20)

_tuned = False


def tune_gc() -> None:
    """Freeze what start-up allocated and raise the thresholds; idempotent."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
