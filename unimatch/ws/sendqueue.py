"""A bounded send queue per socket, drained by one writer task.

Producers (pushes from actors, acks, sync replay) never wait on a client:
`put` appends or, when the queue is full, reports it so the connection is
closed with 4008. Only the writer task awaits the socket, so a client that
stops reading stalls its own writer and nobody else.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from aiohttp import WSMsgType, web

log = logging.getLogger("unimatch.ws")


class SendQueue:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        limit: int,
        on_overflow: Callable[[], None],
    ) -> None:
        self.ws = ws
        self.limit = limit
        self._on_overflow = on_overflow
        self._frames: collections.deque[bytes] = collections.deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._writer = asyncio.get_running_loop().create_task(self._write_forever())

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, data: bytes) -> bool:
        """Queue one encoded frame; False (and the overflow callback) when
        the queue is full or closed."""
        if self._closed:
            return False
        if len(self._frames) >= self.limit:
            self._on_overflow()
            return False
        self._frames.append(data)
        self._ready.set()
        self._idle.clear()
        if len(self._frames) >= self.limit // 2:
            self._room.clear()
        return True

    async def put_paced(self, data: bytes, *, patience: float) -> bool:
        """Queue a frame of a long stream (sync replay): wait while the queue
        is over half full, leaving room for live frames; a client that does
        not make room within `patience` seconds overflows."""
        if not self._room.is_set():
            try:
                await asyncio.wait_for(self._room.wait(), patience)
            except TimeoutError:
                self._on_overflow()
                return False
        return self.put(data)

    async def _write_forever(self) -> None:
        ws, frames = self.ws, self._frames
        try:
            while True:
                if not frames:
                    self._idle.set()
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                data = frames.popleft()
                if len(frames) < self.limit // 2:
                    self._room.set()
                await ws.send_frame(data, WSMsgType.TEXT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket broke: the read loop ends too
            log.debug("writer stopped: %r", exc)
            self._closed = True
            self._idle.set()

    async def drained(self) -> None:
        """Wait until every queued frame is written (or the queue closed)."""
        await self._idle.wait()

    def close(self) -> None:
        """Drop what is queued and stop the writer (it may be stuck on a
        client that does not read)."""
        self._closed = True
        self._frames.clear()
        self._room.set()
        self._idle.set()
        self._writer.cancel()
