"""Chat under faults: a node killed mid-burst, a client that never reads."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
import uuid

import aiohttp
import orjson
import pytest
import ray

from tests.chat_clients import ChatClient, Resender, make_match
from tests.waiting import eventually
from unimatch.actors.links import remote_directory
from unimatch.actors.routing import pick_host


@pytest.fixture
async def directory(platform, config):
    return remote_directory(config.namespace, config.nodes)


async def _send_until_acked(
    client: ChatClient, match_id: str, bodies: dict[str, str], within: float
) -> None:
    """Resend every un-acked message with its client_msg_id, as a real client
    does after a timeout or an error, until all are acked."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    resender = Resender(client, stale_after=10.0)
    while True:
        if client.closed:  # its node died: reconnect and catch up, as an app does
            await client.reconnect(within=60)
            await client.send({"type": "sync", "cursors": {match_id: client.cursor(match_id)}})
        acked = client.acks()
        missing = [c for c in bodies if c not in acked]
        if not missing:
            return
        assert loop.time() < deadline, f"{len(missing)} messages never acked"
        for cmid in resender.due(missing):
            await client.send_message(match_id, bodies[cmid], cmid)
        seen = len(client.frames)
        try:
            await client.wait_until(
                lambda: len(client.frames) > seen,  # noqa: B023
                within=resender.next_due(missing),
            )
        except TimeoutError:
            pass


async def test_killed_node_loses_no_acked_message(platform, db, config, directory):
    a, b, match_id = await make_match(db, config)
    ca = await ChatClient.connect(platform.url, a.token)
    cb = await ChatClient.connect(platform.url, b.token)
    try:
        n = 40
        bodies = {
            ca: {f"a{i}": f"from a {i}" for i in range(n)},
            cb: {f"b{i}": f"from b {i}" for i in range(n)},
        }

        async def burst(client: ChatClient) -> None:
            # A few sends in flight at a time, paced by the server's answers,
            # so the burst is still going when the node is killed. A socket
            # of the killed node ends the burst; the resend below goes on.
            for k, (cmid, body) in enumerate(bodies[client].items()):
                if client.closed:
                    return
                try:
                    await client.send_message(match_id, body, cmid)
                    await client.wait_until(
                        lambda k=k: len(client.acks()) + len(client.of_type("error")) >= k - 2,
                        within=60,
                    )
                except (AssertionError, ConnectionError):
                    return

        bursts = [asyncio.create_task(burst(c)) for c in (ca, cb)]
        await ca.wait_until(lambda: len(ca.acks()) >= 8)
        victim = platform.nodes[pick_host("match", match_id, config.nodes)]
        ray.kill(victim, no_restart=False)
        await asyncio.gather(*bursts)
        await asyncio.gather(
            _send_until_acked(ca, match_id, bodies[ca], within=120),
            _send_until_acked(cb, match_id, bodies[cb], within=120),
        )

        # Durable: every acked message is stored under its acked seq, and the
        # log is 1..2n with no gap and no message twice.
        rows = await db.fetch(
            "SELECT seq, client_msg_id, id FROM messages WHERE match_id = $1 ORDER BY seq",
            uuid.UUID(match_id),
        )
        assert [r["seq"] for r in rows] == list(range(1, 2 * n + 1))
        stored = {r["client_msg_id"]: (r["seq"], str(r["id"])) for r in rows}
        assert len(stored) == 2 * n
        for client in (ca, cb):
            for cmid, ack in client.acks().items():
                assert stored[cmid] == (ack["seq"], ack["message_id"])
            # Every ack of one client_msg_id names the same seq.
            for ack in client.of_type("ack"):
                assert stored[ack["client_msg_id"]][0] == ack["seq"]

        # Reaches the recipient, live or by sync; one message per seq.
        for client, theirs in ((ca, bodies[cb]), (cb, bodies[ca])):
            if client.closed:
                await client.reconnect(within=60)
            synced = len(client.of_type("synced"))
            await client.send({"type": "sync", "cursors": {match_id: 0}})
            await client.wait_until(lambda c=client, s=synced: len(c.of_type("synced")) > s,
                                    within=30)
            got = {f["client_msg_id"] for f in client.of_type("message", match_id)}
            assert set(theirs) <= got
            by_seq = client.seqs(match_id)  # raises if a seq named two messages
            assert sorted(by_seq) == list(range(1, 2 * n + 1))
    finally:
        await ca.close()
        await cb.close()


def _small_receive_buffer(addr_info) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def _round_trips(sender: ChatClient, receiver: ChatClient, match_id: str, count: int):
    times = []
    for i in range(count):
        marker = f"rt-{uuid.uuid4().hex}-{i}"
        started = time.perf_counter()
        await sender.send_message(match_id, marker, marker)
        await receiver.wait_for(
            lambda f, m=marker: f["type"] == "message" and f["client_msg_id"] == m, within=10
        )
        times.append(time.perf_counter() - started)
    return times


async def test_client_that_never_reads_is_closed_4008_and_slows_nobody(
    platform, db, config, directory
):
    slow, partner, slow_match = await make_match(db, config)
    # A long history for the slow client to be sent: far more than socket
    # buffers and its send queue hold together.
    await db.execute(
        """INSERT INTO messages (match_id, seq, sender_id, body, client_msg_id)
           SELECT $1, g, $2, repeat('x', 2000), 'bulk-' || g FROM generate_series(1, 5000) g""",
        uuid.UUID(slow_match), partner.id,
    )
    x, y, match_xy = await make_match(db, config)
    cx = await ChatClient.connect(platform.url, x.token)
    cy = await ChatClient.connect(platform.url, y.token)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(socket_factory=_small_receive_buffer)
    )
    try:
        before = await _round_trips(cx, cy, match_xy, 10)
        ws = await session.ws_connect(f"{platform.url}/ws?token={slow.token}", autoping=False)
        await ws.send_str(orjson.dumps({"type": "sync", "cursors": {slow_match: 0}}).decode())
        # It never reads; meanwhile another pair talks as usual.
        during = await _round_trips(cx, cy, match_xy, 20)

        async def slow_socket_gone() -> bool:
            return not await directory.call("user", str(slow.id), "sockets_open")

        await eventually(slow_socket_gone, within=30)
        # Reading now, it finds its frames, then the 4008 close.
        async with asyncio.timeout(30):
            async for _ in ws:
                pass
        assert ws.close_code == 4008
        baseline = statistics.median(before)
        assert statistics.median(during) < max(0.25, 5 * baseline), (before, during)
        assert max(during) < 2.0, during
    finally:
        await session.close()
        await cx.close()
        await cy.close()


async def test_past_capacity_sends_are_shed_and_no_acked_message_is_lost(
    platform, db, config, aiohttp_client
):
    from unimatch.http.app import create_app
    from unimatch.ws.hub import HUB

    # A gateway that holds at most one unanswered send: a burst from one
    # socket overruns it at once.
    small = create_app(config.with_(ws_max_pending_sends=1),
                       directory=remote_directory(config.namespace, config.nodes))
    server = await aiohttp_client(small)
    a, _b, match_id = await make_match(db, config)
    client = await ChatClient.connect(str(server.make_url("")).rstrip("/"), a.token)
    try:
        sent = [uuid.uuid4().hex for _ in range(20)]
        for cmid in sent:
            await client.send_message(match_id, f"burst {cmid}", cmid)

        def answered() -> bool:
            done = set(client.acks()) | {
                f.get("client_msg_id") for f in client.of_type("error")
            }
            return set(sent) <= done

        await client.wait_until(answered)
        shed = [f for f in client.of_type("error") if f["code"] == "overloaded"]
        acked = client.acks()
        assert shed and acked, (len(shed), len(acked))
        assert len(shed) + len(acked) == len(sent)
        assert all(f["retry_after"] > 0 for f in shed)
        rows = await db.fetch(
            "SELECT seq, client_msg_id FROM messages WHERE match_id = $1 ORDER BY seq",
            uuid.UUID(match_id),
        )
        # Every acked send is stored with its acked seq, nothing shed is.
        assert {r["client_msg_id"]: r["seq"] for r in rows} == {
            cmid: ack["seq"] for cmid, ack in acked.items()
        }
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))

        # Once the burst is answered, a send goes through again.
        again = await client.send_message(match_id, "after the burst")
        ack = await client.wait_for(lambda f: f.get("client_msg_id") == again)
        assert ack["type"] == "ack"
        assert small[HUB].pending_sends == 0  # every admitted send was counted out
    finally:
        await client.close()
