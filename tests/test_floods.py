"""A socket that floods the node: receipts for its own match, frames naming
matches that are not its user's. Refused cheaply (coalesced, unknown ids
answered without waking an actor) and, past any app's rate, the socket is
closed 4008; another pair's chat goes on at its quiet pace and the node's
memory stays bounded."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from tests.chat_clients import ChatClient, make_match
from unimatch.domain.config import Config
from unimatch.storage.pg import Database

ROOT = Path(__file__).resolve().parent.parent
FLOOD = 50_000
# What the flood may add to the nodes' memory, all nodes together.
MEMORY_BOUND = 64 * 1024 * 1024
# Seconds of one burst of flood frames read before the close (see the assert).
FLOOD_BURST_SLACK = 0.1


async def _ack_latencies(client: ChatClient, match_id: str, count: int) -> list[float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        cmid = await client.send_message(match_id, f"steady {i}")
        await client.wait_for(lambda f, c=cmid: f["type"] == "ack" and f["client_msg_id"] == c,
                              within=30)
        samples.append(time.perf_counter() - started)
    return samples


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


async def _nodes_rss(platform: Any) -> int:
    stats = await asyncio.gather(*(n.stats.remote() for n in platform.nodes))
    return sum(psutil.Process(s["pid"]).memory_info().rss for s in stats)


async def _activations(platform: Any) -> int:
    stats = await asyncio.gather(*(n.stats.remote() for n in platform.nodes))
    return sum(s["activations_total"] for s in stats)


async def test_a_flooding_socket_is_closed_and_slows_no_one(
    platform: Any, db: Database, config: Config
) -> None:
    a, b, match_id = await make_match(db, config)
    attacker, _, attack_match = await make_match(db, config)
    ca = await ChatClient.connect(platform.url, a.token)
    cb = await ChatClient.connect(platform.url, b.token)
    try:
        # Each user's chat limit allows a burst of 60: the quiet pace is
        # measured on one of the pair, the pace under the flood on the other.
        await _ack_latencies(ca, match_id, 5)  # actors warm
        quiet = await _ack_latencies(ca, match_id, 50)
        rss_before = await _nodes_rss(platform)
        activations_before = await _activations(platform)

        flooder = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.flooder", platform.url, attacker.token, attack_match,
            str(FLOOD), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert flooder.stdout is not None
        # It says when its socket is open, then floods at once.
        assert await asyncio.wait_for(flooder.stdout.readline(), 60) == b"connected\n"
        during = await _ack_latencies(cb, match_id, 50)
        out, _ = await asyncio.wait_for(flooder.communicate(), 120)
        report = orjson.loads(out.splitlines()[-1])

        assert report["close_code"] == 4008
        assert report["sent"] < 2 * FLOOD  # it did not get to send it all
        codes = report["codes"]
        assert "not_found" in codes and codes[-1] == "rate_limited"
        # Unknown match ids woke no actor; the receipts took one, its own match.
        assert await _activations(platform) - activations_before <= 2
        # Memory: bounded, whatever was sent.
        assert await _nodes_rss(platform) - rss_before < MEMORY_BOUND
        sent = report["sent"]
        # The other pair: every message acked, and as fast as when it was quiet.
        ratio = _p99(during) / _p99(quiet)
        grown = (await _nodes_rss(platform) - rss_before) / 2**20
        print(f"\nflood of {sent} frames: closed 4008; other pair's ack p99 "
              f"{_p99(quiet) * 1000:.1f} ms quiet, {_p99(during) * 1000:.1f} ms during "
              f"(ratio {ratio:.2f}); nodes' RSS grew {grown:.1f} MiB")
        # Within 3x the quiet p99, give or take the one burst of frames the
        # node reads before it closes the flooder (measured: 30-60 ms on 2 cores).
        assert _p99(during) < 3.0 * _p99(quiet) + FLOOD_BURST_SLACK, (ratio, _p99(quiet),
                                                                     _p99(during))
        await cb.wait_until(lambda: len(cb.of_type("message", match_id)) == 55, within=60)
        await ca.wait_until(lambda: len(ca.of_type("message", match_id)) == 50, within=60)
    finally:
        for client in (ca, cb):
            await client.close()
