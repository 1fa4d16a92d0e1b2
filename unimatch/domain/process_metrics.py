"""Per-process health metrics that survive Prometheus multiprocess mode.

Every server process (node, scheduler) calls `start_process_metrics(role)`
once it runs its event loop. A task on that loop samples the process every
`SAMPLE_SECONDS` into `liveall` gauges (one series per role and pid): CPU
seconds, resident memory, open and maximum file descriptors, start time,
a heartbeat timestamp, the loop's lag, and the connections in use of every
pool handed to `watch_pool`. The values come from prometheus-client's own
`ProcessCollector` (which reads /proc), collected here instead of registered,
since registered it only ever describes the process that serves /metrics.

The sampler runs on the event loop on purpose: a loop stuck for longer than
a scrape leaves the heartbeat stale, which the `ServerProcessDown` alert
reads the same way as a dead process.

A process that dies leaves its gauge files in the shared folder. The
samplers of the survivors remove them (`mark_process_dead`) once the pid has
been gone for `GONE_GRACE_SECONDS`: long enough for the stale heartbeat to
fire the alert, short enough that a restart does not leave series forever.
A process that stops on purpose removes its own at `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from typing import Protocol

from prometheus_client import ProcessCollector, multiprocess

from unimatch.domain.metrics import (
    DB_POOL_IN_USE,
    DB_POOL_MAX,
    EVENT_LOOP_LAG,
    PROCESS_CPU,
    PROCESS_HEARTBEAT,
    PROCESS_MAX_FDS,
    PROCESS_OPEN_FDS,
    PROCESS_RSS,
    PROCESS_START_TIME,
)

log = logging.getLogger("unimatch.domain.process_metrics")

SAMPLE_SECONDS = 5.0
GONE_GRACE_SECONDS = 15 * 60.0
_LIVE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")

# ProcessCollector sample name -> our gauge.
_FROM_COLLECTOR = {
    "process_cpu_seconds_total": PROCESS_CPU,
    "process_resident_memory_bytes": PROCESS_RSS,
    "process_open_fds": PROCESS_OPEN_FDS,
    "process_max_fds": PROCESS_MAX_FDS,
    "process_start_time_seconds": PROCESS_START_TIME,
}


class Pool(Protocol):
    """What is read of a connection pool (asyncpg.Pool has it)."""

    def get_size(self) -> int: ...
    def get_idle_size(self) -> int: ...
    def get_max_size(self) -> int: ...


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ProcessMetrics:
    """Samples this process on a timer; see the module docstring."""

    def __init__(
        self,
        role: str,
        *,
        interval: float = SAMPLE_SECONDS,
        gone_grace: float = GONE_GRACE_SECONDS,
        multiprocess_dir: str | None = None,
    ) -> None:
        self.role = role
        self.interval = interval
        self.gone_grace = gone_grace
        self.multiprocess_dir = multiprocess_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self._collector = ProcessCollector(registry=None)
        self._pools: dict[str, Pool] = {}
        self._gone_since: dict[int, float] = {}
        self._lag = 0.0
        self._task: asyncio.Task[None] | None = None

    def watch_pool(self, pool: Pool, name: str = "primary") -> None:
        """Report the pool's connections in use and its maximum as
        `unimatch_db_pool_*{role, pool=name}` from the next sample on."""
        self._pools[name] = pool
        self._sample_pool(name, pool)

    def sample(self) -> None:
        """One pass: this process's gauges, then the cleanup of dead ones."""
        for family in self._collector.collect():
            for sample in family.samples:
                gauge = _FROM_COLLECTOR.get(sample.name)
                if gauge is not None:
                    gauge.labels(self.role).set(sample.value)
        for name, pool in self._pools.items():
            self._sample_pool(name, pool)
        EVENT_LOOP_LAG.labels(self.role).set(self._lag)
        PROCESS_HEARTBEAT.labels(self.role).set(time.time())
        if self.multiprocess_dir:
            self.remove_dead_processes(time.monotonic())

    def _sample_pool(self, name: str, pool: Pool) -> None:
        DB_POOL_IN_USE.labels(self.role, name).set(pool.get_size() - pool.get_idle_size())
        DB_POOL_MAX.labels(self.role, name).set(pool.get_max_size())

    def remove_dead_processes(self, now: float) -> list[int]:
        """Remove the live-gauge files of pids gone for `gone_grace` seconds.
        Returns the pids removed."""
        assert self.multiprocess_dir
        pids: set[int] = set()
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.multiprocess_dir):
                match = _LIVE_FILE.match(entry.name)
                if match:
                    pids.add(int(match[1]))
        removed = []
        for pid in pids - {os.getpid()}:
            if _alive(pid):
                self._gone_since.pop(pid, None)
                continue
            since = self._gone_since.setdefault(pid, now)
            if now - since >= self.gone_grace:
                # Another survivor may be removing the same files right now.
                with contextlib.suppress(FileNotFoundError):
                    multiprocess.mark_process_dead(pid, self.multiprocess_dir)
                self._gone_since.pop(pid, None)
                removed.append(pid)
        for pid in set(self._gone_since) - pids:
            del self._gone_since[pid]
        return removed

    def start(self) -> None:
        self.sample()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"process-metrics-{self.role}"
        )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self._lag = max(loop.time() - due, 0.0)
            try:
                self.sample()
            except Exception as exc:  # /proc or the folder vanished: try next time
                log.warning("process metrics sample failed: %r", exc)

    async def stop(self) -> None:
        """Stop sampling and withdraw this process's live series: a process
        that stops on purpose is not reported down."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.multiprocess_dir:
            # A no-op when the folder is gone already.
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)


_current: ProcessMetrics | None = None


def start_process_metrics(
    role: str, *, interval: float = SAMPLE_SECONDS, gone_grace: float = GONE_GRACE_SECONDS
) -> ProcessMetrics:
    """Start sampling this process as `role` ("node", "scheduler", ...) on the
    running event loop; call once at start-up, then `watch_pool` each
    connection pool it opens. A second call returns the sampler already
    running."""
    global _current
    if _current is not None and _current._task is not None and not _current._task.done():
        if _current.role != role:
            log.warning("process metrics already run as %r, not %r", _current.role, role)
        return _current
    _current = ProcessMetrics(role, interval=interval, gone_grace=gone_grace)
    _current.start()
    return _current
