"""The chat load generator of bench/chat.py, one process of several.

A worker holds its share of the users' sockets to each target (the
platform, the relays), users 2i and 2i+1 of its share being the two members
of one match, and takes commands from the bench over a pipe:

- `("connect", target, urls, matches)`: one socket per user, each waits for
  its `ready`;
- `("run", target, rate, seconds, tag, start_at)`: an open loop of Poisson
  arrivals at `rate` msg/s from `start_at` (a `time.perf_counter()` instant:
  CLOCK_MONOTONIC, the same clock in every process of the machine), each
  arrival sent by a user drawn at random to their match, whatever the
  answers; then a drain of at most DRAIN_SECONDS. Answers the run's counts
  and latencies;
- `("warm", target, rate, tag, start_at)`: every user sends once, in turn;
- `("close", target)`, `("stop",)`.

Latency runs from the *scheduled* send time, so a late generator counts
against the server; how late it was (the send time minus the scheduled one)
is answered too, and the bench reports it. Both clocks are this process's,
so nothing depends on clocks agreeing between processes but the start.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

DRAIN_SECONDS = 5.0
CONNECT_CONCURRENCY = 25
BODY = "habari! see you at the library after the lecture?"


@dataclass
class Run:
    """What one run of one target saw."""

    window_end: float = 0.0
    # cmid -> (scheduled perf_counter time, index of the sending user)
    scheduled: dict[str, tuple[float, int]] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)  # cmid -> seq
    delivered: set[str] = field(default_factory=set)
    errored: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    ack_lat: list[float] = field(default_factory=list)
    delivery_lat: list[float] = field(default_factory=list)
    delivered_in_window: int = 0
    lag: list[float] = field(default_factory=list)
    complete: int = 0  # acked and delivered, or refused
    duplicates: int = 0
    order_violations: int = 0
    skipped: int = 0  # arrivals whose socket had closed


class Target:
    """One user's socket per slot, to one server."""

    def __init__(self, urls: list[str], matches: list[str]) -> None:
        self.urls, self.matches = urls, matches
        self.sockets: list[aiohttp.ClientWebSocketResponse | None] = [None] * len(urls)
        self.readers: list[asyncio.Task[None]] = []
        # Per socket: every seq it got (acks and messages), and the highest
        # seq of each kind, for duplicates and order.
        self.seen: list[set[int]] = [set() for _ in urls]
        self.high_message = [0] * len(urls)
        self.high_ack = [0] * len(urls)
        self.run = Run()
        self.closed = 0

    async def connect(self, session: aiohttp.ClientSession) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(i: int) -> None:
            async with gate:
                ws = await session.ws_connect(self.urls[i], heartbeat=None, max_msg_size=0)
                # A match's presence may arrive before this socket's `ready`.
                while True:
                    msg = await ws.receive(timeout=60)
                    assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, ws.close_code)
                    if orjson.loads(msg.data)["type"] == "ready":
                        break
                self.sockets[i] = ws
                self.readers.append(asyncio.create_task(self._read(i, ws)))

        await asyncio.gather(*(one(i) for i in range(len(self.urls))))

    async def _read(self, i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        seen, high_message, high_ack = self.seen[i], self.high_message, self.high_ack
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            now = time.perf_counter()
            frame = orjson.loads(msg.data)
            kind = frame["type"]
            run = self.run
            if kind == "ack" or kind == "message":
                seq = frame["seq"]
                if seq in seen:
                    run.duplicates += 1
                    continue
                seen.add(seq)
                high = high_ack if kind == "ack" else high_message
                if seq < high[i]:
                    run.order_violations += 1
                else:
                    high[i] = seq
                cmid = frame["client_msg_id"]
                sent = run.scheduled.get(cmid)
                if sent is None:  # an earlier run's, arriving late
                    continue
                if kind == "ack":
                    if sent[1] != i:
                        continue
                    run.acked[cmid] = seq
                    run.ack_lat.append(now - sent[0])
                    if cmid in run.delivered:
                        run.complete += 1
                else:
                    if sent[1] == i:  # the sending socket must get only the ack
                        run.duplicates += 1
                        continue
                    run.delivered.add(cmid)
                    run.delivery_lat.append(now - sent[0])
                    if now <= run.window_end:
                        run.delivered_in_window += 1
                    if cmid in run.acked:
                        run.complete += 1
            elif kind == "error":
                cmid = frame.get("client_msg_id")
                run.errors[frame.get("code", "?")] += 1
                if cmid in run.scheduled and cmid not in run.errored:
                    run.errored.add(cmid)
                    run.complete += 1
        self.closed += 1

    async def send_all(self, arrivals: list[tuple[float, int]], start_at: float,
                       tag: str) -> None:
        """Send each (offset, user) at start_at + offset, open loop."""
        run = self.run
        sockets, matches = self.sockets, self.matches
        scheduled, lag = run.scheduled, run.lag
        prefix = '{"type":"send","match_id":"'
        middle = '","client_msg_id":"'
        suffix = f'","body":"{BODY}"}}'
        n = len(arrivals)
        k = 0
        while k < n:
            now = time.perf_counter()
            while k < n and start_at + arrivals[k][0] <= now:
                due, user = arrivals[k]
                due += start_at
                ws = sockets[user]
                cmid = f"{tag}-{k}"
                if ws is None or ws.closed:
                    run.skipped += 1
                else:
                    scheduled[cmid] = (due, user)
                    lag.append(time.perf_counter() - due)
                    await ws.send_str(prefix + matches[user] + middle + cmid + suffix)
                k += 1
                now = time.perf_counter()
            if k < n:
                await asyncio.sleep(max(0.0, start_at + arrivals[k][0] - time.perf_counter()))

    async def drain(self) -> None:
        """Until every send is acked and delivered or refused, at most
        DRAIN_SECONDS. Open loop has no event for "all answered": poll."""
        run = self.run
        deadline = time.perf_counter() + DRAIN_SECONDS
        while run.complete < len(run.scheduled) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def answer(self) -> dict[str, Any]:
        run = self.run
        lost = 0
        for cmid, seq in run.acked.items():
            peer = run.scheduled[cmid][1] ^ 1
            if seq not in self.seen[peer]:
                lost += 1
        sent = len(run.scheduled)
        answered = len(run.acked) + len(run.errored - set(run.acked))
        return {
            "sent": sent,
            "acked": len(run.acked),
            "delivered": len(run.delivered),
            "delivered_in_window": run.delivered_in_window,
            "errors": dict(run.errors),
            "unanswered": sent - answered,
            "undelivered": len(set(run.acked) - run.delivered),
            "lost": lost,
            "duplicates": run.duplicates,
            "order_violations": run.order_violations,
            "skipped": run.skipped,
            "ack_lat": run.ack_lat,
            "delivery_lat": run.delivery_lat,
            "lag": run.lag,
            "closed": self.closed,
        }

    async def close(self) -> None:
        for ws in self.sockets:
            if ws is not None:
                await ws.close()
        if self.readers:
            await asyncio.wait(self.readers, timeout=10)


class Worker:
    def __init__(self, conn: Any, seed: int) -> None:
        self.conn = conn
        self.random = random.Random(seed)
        self.targets: dict[str, Target] = {}

    async def serve(self) -> None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        try:
            while True:
                command = await asyncio.to_thread(self.conn.recv)
                op, args = command[0], command[1:]
                if op == "stop":
                    break
                try:
                    answer = await self.handle(session, op, *args)
                except Exception as exc:  # report it to the bench, keep serving
                    answer = {"error": repr(exc)}
                self.conn.send(answer)
        finally:
            for target in self.targets.values():
                await target.close()
            await session.close()

    async def handle(self, session: aiohttp.ClientSession, op: str, *args: Any) -> Any:
        if op == "connect":
            name, urls, matches = args
            target = self.targets[name] = Target(urls, matches)
            started = time.perf_counter()
            await target.connect(session)
            # What connecting allocated stays: keep it out of the collector's way.
            gc.collect()
            gc.freeze()
            return {"connected": len(urls), "seconds": time.perf_counter() - started}
        if op == "run":
            name, rate, seconds, tag, start_at = args
            arrivals = self._poisson(rate, seconds, len(self.targets[name].urls))
            return await self._run(name, arrivals, seconds, tag, start_at)
        if op == "warm":
            name, rate, tag, start_at = args
            users = len(self.targets[name].urls)
            arrivals = [(k / rate, k) for k in range(users)]
            return await self._run(name, arrivals, users / rate, tag, start_at)
        if op == "close":
            await self.targets.pop(args[0]).close()
            return {}
        raise ValueError(f"unknown command {op!r}")

    def _poisson(self, rate: float, seconds: float, users: int) -> list[tuple[float, int]]:
        """Arrivals of a Poisson process at `rate` over `seconds`, each by a
        user drawn uniformly: the same as every user sending at exponential
        intervals of mean users/rate."""
        arrivals: list[tuple[float, int]] = []
        t = self.random.expovariate(rate)
        while t < seconds:
            arrivals.append((t, self.random.randrange(users)))
            t += self.random.expovariate(rate)
        return arrivals

    async def _run(self, name: str, arrivals: list[tuple[float, int]], seconds: float,
                   tag: str, start_at: float) -> dict[str, Any]:
        target = self.targets[name]
        target.run = Run(window_end=start_at + seconds)
        await target.send_all(arrivals, start_at, tag)
        # The window is the schedule's, whatever time the last send left.
        await asyncio.sleep(max(0.0, start_at + seconds - time.perf_counter()))
        await target.drain()
        answer = target.answer()
        answer["finished_at"] = time.perf_counter()
        return answer


def worker_main(conn: Any, seed: int) -> None:
    """A worker process's entry point (multiprocessing, spawn)."""
    asyncio.run(Worker(conn, seed).serve())
