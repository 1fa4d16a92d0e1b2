"""Waiting for a condition that has no event to wait on (a database row, a
port that stops answering): poll it every few ms, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(
    probe: Callable[[], Awaitable[Any]], *, within: float = 60.0, interval: float = 0.02
) -> Any:
    """Poll `probe` until it returns something truthy, and return that value;
    AssertionError when `within` seconds pass first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within} s (last: {value!r})")
        await asyncio.sleep(interval)
