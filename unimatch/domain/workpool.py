"""A bounded pool for CPU-heavy work (password hashing, image decoding).

At most `workers` jobs run at once, each in a thread of its own executor, and
at most `queue` more wait for a turn. A job arriving past both is refused at
once with `Overloaded` (503 with Retry-After): a burst of expensive requests
costs a bounded amount of CPU and memory, instead of a thread and a buffer
each, and the clients that are refused know when to come back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from unimatch.domain.errors import Unavailable
from unimatch.domain.metrics import WORK_REFUSED

T = TypeVar("T")


class Overloaded(Unavailable):
    """The pool is full; try again after `retry_after` seconds."""

    code = "overloaded"

    def __init__(self, detail: Any = None, *, retry_after: float = 1.0,
                 code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class BoundedPool:
    def __init__(self, name: str, workers: int, queue: int, *, retry_after: float = 1.0) -> None:
        self.name = name
        self.workers = max(workers, 1)
        self.capacity = self.workers + max(queue, 0)
        self.retry_after = retry_after
        self._admitted = 0
        self._running: asyncio.Semaphore | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix=f"pool-{name}"
        )

    @property
    def in_flight(self) -> int:
        return self._admitted

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread, or `Overloaded` when full."""
        if self._admitted >= self.capacity:
            WORK_REFUSED.labels(self.name).inc()
            raise Overloaded(f"too busy to take this request ({self.name}): try again shortly",
                             retry_after=self.retry_after)
        if self._running is None:
            self._running = asyncio.Semaphore(self.workers)
        self._admitted += 1
        try:
            async with self._running:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._executor, fn, *args)
        finally:
            self._admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
