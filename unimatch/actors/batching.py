"""Coalesce the items submitted within one event-loop tick into one call.

A remote call costs about a millisecond whatever it carries (DESIGN.md), so
the many messages bound for one shard host (or the many pushes bound for one
gateway) that become ready in the same tick travel together: callers
`await batcher.submit(item)`, the first submission of a tick schedules a flush
with `loop.call_soon`, and the flush hands every item collected so far to
`send` as one list, in submission order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("unimatch.actors")


class TickBatcher(Generic[T, R]):
    """Batches submissions per event-loop tick into calls of `send(items)`.

    `send` returns one result per item, in item order. A result that is an
    exception instance is raised to that item's caller alone; if `send` itself
    raises, every caller of that batch gets the exception.

    In-flight flushes. With `max_in_flight=None` (the default) every tick that
    collected something flushes at once, whatever is still in flight. Why not
    the tighter "one flush in flight":
    - batching does not need it: callers that wait on their results are
      self-clocking (a batch of N returns, wakes N callers in one tick, and
      they resubmit in that tick as a batch of N again);
    - a batch answers when its slowest item is done, so a cap would let one
      slow actor method hold up every later call to the same host;
    - virtual actors call each other through hosts in both directions
      (user -> match -> user). With a cap, the in-flight slots of host A's
      batcher to B can all be held by calls waiting on calls queued in B's
      batcher to A, whose slots wait on A's: a deadlock. Without a cap, the
      remote side is bounded by the Ray actor's own `max_concurrency`.
    Give a cap (say 1) only where the call graph cannot come back to the caller
    (pushes to a gateway): then items that arrive while the cap is reached keep
    collecting and go in one batch when a flush returns, which merges more
    work per call under overload and keeps one batch per tick at most.
    """

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_in_flight: int | None = None,
    ) -> None:
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1 or None")
        self._send = send
        self._max_in_flight = max_in_flight
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._scheduled = False
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def pending(self) -> int:
        return len(self._items)

    async def submit(self, item: T) -> R:
        """Queue `item` for the next flush and wait for its own result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._scheduled or not self._items:
            return
        if self._max_in_flight is not None and self._in_flight >= self._max_in_flight:
            return  # _flushed() reschedules when a flush returns
        self._scheduled = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        items, futures = self._items, self._futures
        self._items, self._futures = [], []
        if not items:
            return
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._deliver(items, futures))
        # Keep a strong reference: the loop only holds tasks weakly.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        try:
            results = await self._send(items)
            if len(results) != len(items):
                raise RuntimeError(f"send returned {len(results)} results for {len(items)} items")
        except BaseException as exc:  # every caller of the batch must hear of it
            for future in futures:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for future, result in zip(futures, results, strict=True):
                if future.done():  # the caller gave up (cancelled)
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            self._schedule(asyncio.get_running_loop())

    async def aclose(self) -> None:
        """Wait for the flushes in flight (not for items still to be sent)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
