"""The colocated layout (`COLOCATED=true`): each shard host also serves a
gateway, and calls between a socket and an actor on the same node skip Ray.

A second platform of two nodes runs beside the session's, in a Ray namespace
of its own, for this module only. With two nodes a socket's actors are local
or remote by their hash, so both paths are exercised.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import aiohttp
import pytest
import ray

from tests.chat_clients import ChatClient, Resender, make_match
from tests.factories import make_user
from unimatch.actors.routing import pick_host
from unimatch.config import Config


@pytest.fixture(scope="module")
def nodes(config: Config, ray_cluster: None) -> Iterator[object]:
    from unimatch.platform import Platform

    started = Platform.start(
        config.with_(colocated=True, shard_hosts=2, namespace=config.namespace + "-nodes"),
        "127.0.0.1",
        0,
    )
    yield started
    started.stop()


async def test_nodes_are_both_hosts_and_gateways(nodes):
    assert nodes.config.gateways == nodes.config.shard_hosts == 2
    assert nodes.gateways == nodes.hosts
    stats = await asyncio.gather(*(h.stats.remote() for h in nodes.hosts))
    assert [s["host"] for s in stats] == [0, 1]
    async with aiohttp.ClientSession(base_url=nodes.url) as http:
        async with http.get("/readyz") as resp:  # every node answers as a host
            assert resp.status == 200, await resp.text()


async def test_chat_keeps_every_guarantee_across_local_and_remote_actors(nodes, db, config):
    # Two matches on each node, so some live on the node holding a socket
    # and some not (match ids are random: draw until both nodes have two).
    by_home: dict[int, list] = {0: [], 1: []}
    while min(len(found) for found in by_home.values()) < 2:
        a, b, match_id = await make_match(db, config)
        by_home[pick_host("match", match_id, 2)].append((a, b, match_id))
    pairs = by_home[0][:2] + by_home[1][:2]
    clients: list[ChatClient] = []
    try:
        for a, b, match_id in pairs:
            ca = await ChatClient.connect(nodes.url, a.token)
            ca_too = await ChatClient.connect(nodes.url, a.token)  # a second device
            cb = await ChatClient.connect(nodes.url, b.token)
            clients += [ca, ca_too, cb]
            sent = {ca: [f"a{i}" for i in range(15)], cb: [f"b{i}" for i in range(15)]}
            for i in range(15):
                for client in (ca, cb):
                    await client.send_message(match_id, f"{i}", sent[client][i])

            for client in (ca, ca_too, cb):

                def everything(client: ChatClient = client, match_id: str = match_id) -> bool:
                    return len(client.of_type("message", match_id)) >= 30

                await client.wait_until(everything)
            rows = await db.fetch(
                "SELECT seq, client_msg_id FROM messages WHERE match_id = $1 ORDER BY seq",
                uuid.UUID(match_id),
            )
            assert [r["seq"] for r in rows] == list(range(1, 31))
            stored = {r["client_msg_id"]: r["seq"] for r in rows}
            for client in (ca, cb):
                assert {c: f["seq"] for c, f in client.acks().items()} == {
                    c: stored[c] for c in sent[client]
                }
            for client in (ca, ca_too, cb):
                seqs = [f["seq"] for f in client.of_type("message", match_id)]
                assert seqs == list(range(1, 31))  # each once, in order
    finally:
        for client in clients:
            await client.close()


async def test_a_mutual_like_sends_match_frames_through_the_nodes(nodes, db, config):
    a = await make_user(db, config)
    b = await make_user(db, config)
    ca = await ChatClient.connect(nodes.url, a.token)
    cb = await ChatClient.connect(nodes.url, b.token)
    try:
        async with aiohttp.ClientSession(base_url=nodes.url) as http:
            for me, other in ((a, b), (b, a)):
                async with http.post(
                    "/api/v1/swipes", headers=me.auth,
                    json={"target_id": str(other.id), "action": "like"},
                ) as resp:
                    assert resp.status == 201
                    body = await resp.json()
        assert body["matched"] is True
        for client, other in ((ca, b), (cb, a)):
            frame = await client.wait_for(lambda f: f["type"] == "match")
            assert frame["match_id"] == body["match_id"]
            assert frame["user"]["user_id"] == str(other.id)
    finally:
        await ca.close()
        await cb.close()


async def test_a_killed_node_loses_no_acked_message(nodes, db, config):
    a, _b, match_id = await make_match(db, config)
    victim = nodes.hosts[pick_host("match", match_id, 2)]
    ca = await ChatClient.connect(nodes.url, a.token)
    try:
        n = 30
        bodies = {f"k{i}": f"before and after {i}" for i in range(n)}
        for cmid in list(bodies)[:10]:
            await ca.send_message(match_id, bodies[cmid], cmid)
        await ca.wait_until(lambda: len(ca.acks()) >= 5)
        acked_before = dict(ca.acks())
        ray.kill(victim, no_restart=False)  # its actors, and its sockets if it held ours

        # A client resends what was not acked (after a while, or at once on
        # an error), waits when told to, and reconnects when its node died.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        acks: dict[str, dict] = {}
        resender = Resender(ca, stale_after=5.0)
        while True:
            acks.update(ca.acks())
            if len(acks) == n:
                break
            assert loop.time() < deadline, (
                f"{n - len(acks)} never acked; last frames {ca.frames[-3:]}, "
                f"closed {ca.closed} ({ca.close_code})"
            )
            if ca.closed or ca.ws.closed:
                await ca.close()
                ca = await ChatClient.connect(nodes.url, a.token)
                resender = Resender(ca, stale_after=5.0)
            unacked = [cmid for cmid in bodies if cmid not in acks]
            try:
                for cmid in resender.due(unacked):
                    await ca.send_message(match_id, bodies[cmid], cmid)
            except aiohttp.ClientError:  # its node died under it: reconnect
                continue
            seen = len(ca.frames)

            def news(client: ChatClient = ca, seen: int = seen) -> bool:
                return len(client.frames) > seen or client.closed

            try:
                await ca.wait_until(news, within=resender.next_due(unacked))
            except TimeoutError:
                pass

        rows = await db.fetch(
            "SELECT seq, client_msg_id FROM messages WHERE match_id = $1 ORDER BY seq",
            uuid.UUID(match_id),
        )
        assert [r["seq"] for r in rows] == list(range(1, n + 1))
        stored = {r["client_msg_id"]: r["seq"] for r in rows}
        assert {c: f["seq"] for c, f in acks.items()} == stored
        # What was acked before the kill kept its seq.
        assert all(stored[c] == f["seq"] for c, f in acked_before.items())
    finally:
        await ca.close()
