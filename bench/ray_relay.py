"""bench/relay.py's app served from inside an async Ray actor, the way a node
serves the platform (unimatch.server.node): aiohttp on the actor's own event
loop, in a Ray worker process with Ray's threads beside it.

Swept next to the bare relay, it tells the cost of hosting aiohttp in a Ray
worker (its background threads, the GIL they take) apart from the cost of
the platform's own code.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from aiohttp import web
from relay import make_app


class RelayActor:
    """Start with `ray.remote(RelayActor).options(...).remote(host, port)`,
    then `ready()`; `stop()` closes the site."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.runner: web.AppRunner | None = None
        self._started = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> None:
        self.runner = web.AppRunner(make_app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, backlog=2048)
        await site.start()

    async def ready(self) -> dict[str, Any]:
        """Once listening: the worker's pid and the event loop's thread id."""
        await self._started
        return {"pid": os.getpid(), "loop_tid": threading.get_native_id()}

    async def stop(self) -> None:
        await self._started
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()
