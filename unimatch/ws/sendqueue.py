"""A bounded send queue per socket, drained by one writer task.

Producers (pushes from actors, acks, sync replay) never wait on a client:
`put` appends or, when the queue is full, reports it so the connection is
closed with 4008. Only the writer task awaits the socket, so a client that
stops reading stalls its own writer and nobody else. The writer and its
deque exist only while there is something to write: an idle socket holds
neither (a deque is about 600 bytes, and a gateway holds thousands of idle
sockets).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from aiohttp import WSMsgType, web

log = logging.getLogger("unimatch.ws")


class SendQueue:
    __slots__ = ("_closed", "_frames", "_on_overflow", "_room", "_waiters", "_writer", "limit",
                 "ws")

    def __init__(
        self,
        ws: web.WebSocketResponse,
        limit: int,
        on_overflow: Callable[[], None],
    ) -> None:
        self.ws = ws
        self.limit = limit
        self._on_overflow = on_overflow
        self._frames: collections.deque[bytes] | None = None
        self._writer: asyncio.Task[None] | None = None
        # Created on demand: a paced producer waiting for room, and callers
        # of `drained()` waiting for the writer to finish.
        self._room: asyncio.Event | None = None
        self._waiters: list[asyncio.Future[None]] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._frames) if self._frames is not None else 0

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, data: bytes) -> bool:
        """Queue one encoded frame; False (and the overflow callback) when
        the queue is full or closed."""
        if self._closed:
            return False
        frames = self._frames
        if frames is None:
            frames = self._frames = collections.deque()
        elif len(frames) >= self.limit:
            self._on_overflow()
            return False
        frames.append(data)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write(frames))
        return True

    async def put_paced(self, data: bytes, *, patience: float) -> bool:
        """Queue a frame of a long stream (sync replay): wait while the queue
        is over half full, leaving room for live frames; a client that does
        not make room within `patience` seconds overflows."""
        if len(self) >= self.limit // 2 and not self._closed:
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), patience)
            except TimeoutError:
                self._on_overflow()
                return False
        return self.put(data)

    async def _write(self, frames: collections.deque[bytes]) -> None:
        ws = self.ws
        try:
            while frames:
                data = frames.popleft()
                if self._room is not None and len(frames) < self.limit // 2:
                    self._room.set()
                await ws.send_frame(data, WSMsgType.TEXT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket broke: the read loop ends too
            log.debug("writer stopped: %r", exc)
            self._closed = True
            frames.clear()
        finally:
            self._writer = None
            if not frames:
                self._frames = None
            self._wake()

    def _wake(self) -> None:
        if self._room is not None:
            self._room.set()
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters = None

    async def drained(self) -> None:
        """Wait until every queued frame is written (or the queue closed)."""
        if self._writer is None:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter

    def close(self) -> None:
        """Drop what is queued and stop the writer (it may be stuck on a
        client that does not read)."""
        self._closed = True
        self._frames = None
        if self._writer is not None:
            self._writer.cancel()
        self._wake()
