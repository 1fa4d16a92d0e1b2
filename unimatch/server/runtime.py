"""Settings of the long-running server processes (nodes, the scheduler),
applied once each is up.

Garbage collection: CPython's full collection scans every tracked object,
and a process holding thousands of sockets and actors has millions, so each
full pass stalled the event loop for 150-500 ms (measured on a node at 400
chat messages/s): every message in flight waited that long. Once start-up
is done, what it allocated (modules, clients, the app) is frozen out of the
collector's sight, and full passes come ten times more rarely. Middle
passes stay small: making them rarer made each one long (a 20-fold middle
threshold gave 350 ms passes). Cycles are still collected.
"""

from __future__ import annotations

import gc

# Allocations before a young collection; young collections before a middle
# one; middle ones before a full one (CPython's defaults: 700, 10, 10).
GC_THRESHOLDS = (5000, 10, 100)

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
