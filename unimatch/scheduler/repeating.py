"""Work the scheduler repeats on a timer in a task of its own (the periodic
enqueuer, the queue gauges): a failed round is logged and the next one runs
on time, so a database that is away for a while stops nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("unimatch.scheduler")


class Repeating:
    """Runs `work()` every `interval` seconds between `start()` and `stop()`."""

    def __init__(self, name: str, interval: float, work: Callable[[], Awaitable[Any]]) -> None:
        self.name = name
        self.interval = interval
        self._work = work
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next round tries again
                log.warning("%s failed: %r", self.name, exc)
            await asyncio.sleep(self.interval)
