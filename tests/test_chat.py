"""Chat guarantees over real sockets, the real gateway, actors, PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.chat_clients import ChatClient, make_match
from tests.waiting import eventually
from unimatch.storage.cache import match_list_key


@pytest.fixture
async def pair(platform, db, config):
    a, b, match_id = await make_match(db, config)
    clients: list[ChatClient] = []

    async def connect(user, path: str = "/ws") -> ChatClient:
        client = await ChatClient.connect(platform.url, user.token, path)
        clients.append(client)
        return client

    yield a, b, match_id, connect
    for client in clients:
        await client.close()


async def stored(db, match_id: str) -> list[dict]:
    rows = await db.fetch(
        "SELECT seq, sender_id, client_msg_id, body FROM messages WHERE match_id = $1 ORDER BY seq",
        uuid.UUID(match_id),
    )
    return [dict(r) for r in rows]


async def test_concurrent_senders_get_one_gap_free_order(pair, db):
    a, b, match_id, connect = pair
    ca, cb = await connect(a), await connect(b)
    n = 30
    sent_a = [f"a-{i}" for i in range(n)]
    sent_b = [f"b-{i}" for i in range(n)]

    async def burst(client: ChatClient, ids: list[str]) -> None:
        for cmid in ids:
            await client.send_message(match_id, f"hello {cmid}", cmid)

    await asyncio.gather(burst(ca, sent_a), burst(cb, sent_b))
    await ca.wait_until(lambda: len(ca.acks()) == n)
    await cb.wait_until(lambda: len(cb.acks()) == n)
    seqs = sorted(f["seq"] for f in [*ca.acks().values(), *cb.acks().values()])
    assert seqs == list(range(1, 2 * n + 1))
    # Each sender's own messages keep the order they were sent in.
    assert [ca.acks()[c]["seq"] for c in sent_a] == sorted(ca.acks()[c]["seq"] for c in sent_a)
    for client in (ca, cb):
        # Its own messages by ack, the other's by `message`: each seq once.
        await client.wait_until(lambda c=client: len(c.seqs(match_id)) >= 2 * n)
        assert sorted(client.seqs(match_id)) == list(range(1, 2 * n + 1))
        received = [f["seq"] for f in client.of_type("message", match_id)]
        assert received == sorted(received), "both users see one total order"
        assert len(received) == n, "a socket gets no `message` for what it sent"
    rows = await stored(db, match_id)
    assert [r["seq"] for r in rows] == list(range(1, 2 * n + 1))


async def test_ack_arrives_only_after_the_row_is_committed(pair, db):
    a, _, match_id, connect = pair
    ca = await connect(a)
    for i in range(5):
        cmid = await ca.send_message(match_id, f"durable {i}")
        ack = await ca.wait_for(lambda f, c=cmid: f["type"] == "ack" and f["client_msg_id"] == c)
        row = await db.fetchrow(
            "SELECT seq, body FROM messages WHERE id = $1", uuid.UUID(ack["message_id"])
        )
        assert row is not None and row["seq"] == ack["seq"] and row["body"] == f"durable {i}"


async def test_resent_client_msg_id_is_stored_once_with_the_same_seq(pair, db):
    a, b, match_id, connect = pair
    ca, cb = await connect(a), await connect(b)
    await ca.send_message(match_id, "once", "same-id")
    first = await ca.wait_for(lambda f: f["type"] == "ack")
    await ca.send_message(match_id, "once", "same-id")
    await ca.wait_until(lambda: len(ca.of_type("ack")) == 2)
    second = ca.of_type("ack")[1]
    assert (second["seq"], second["message_id"]) == (first["seq"], first["message_id"])
    # The same id from the other user is a different message.
    await cb.send_message(match_id, "mine", "same-id")
    other = await cb.wait_for(lambda f: f["type"] == "ack")
    assert other["seq"] == first["seq"] + 1
    rows = await stored(db, match_id)
    assert [(r["seq"], r["client_msg_id"]) for r in rows] == [(1, "same-id"), (2, "same-id")]


async def test_reconnect_and_sync_replays_exactly_the_missed_messages(pair, platform):
    a, b, match_id, connect = pair
    ca, cb = await connect(a), await connect(b)
    for i in range(3):
        await ca.send_message(match_id, f"seen {i}")
    await cb.wait_until(lambda: len(cb.of_type("message", match_id)) == 3)
    cursor = cb.of_type("message", match_id)[-1]["seq"]
    await cb.close()
    missed = [await ca.send_message(match_id, f"missed {i}") for i in range(7)]
    await ca.wait_until(lambda: len(ca.acks()) == 10)
    cb2 = await connect(b)
    await cb2.send({"type": "sync", "cursors": {match_id: cursor}})
    await cb2.wait_for(lambda f: f["type"] == "synced")
    upto = next(i for i, f in enumerate(cb2.frames) if f["type"] == "synced")
    before_synced = [f for f in cb2.frames[:upto] if f["type"] == "message"]
    # The last of the missed messages may reach the new socket live before
    # the sync request (both cross on the wire); the replay then skips it.
    # Either way: every missed message exactly once, the replay in seq order.
    by_seq = sorted(before_synced, key=lambda f: f["seq"])
    assert [f["client_msg_id"] for f in by_seq] == missed
    assert [f["seq"] for f in by_seq] == list(range(cursor + 1, cursor + 8))
    seqs = [f["seq"] for f in before_synced]
    assert any(
        seqs[:k] == sorted(seqs[:k]) and seqs[k:] == sorted(seqs[k:]) for k in range(len(seqs))
    ), seqs
    # Live messages keep flowing after the sync, once each.
    await ca.send_message(match_id, "after sync")
    await cb2.wait_until(lambda: len(cb2.of_type("message", match_id)) == 8)
    seqs = [f["seq"] for f in cb2.of_type("message", match_id)]
    assert sorted(seqs) == list(range(4, 12))
    assert seqs[-1] == 11


async def test_sync_skips_what_the_socket_already_got_live(pair):
    a, b, match_id, connect = pair
    ca, cb = await connect(a), await connect(b)
    sent = [await ca.send_message(match_id, f"live {i}") for i in range(3)]
    await cb.wait_until(lambda: len(cb.of_type("message", match_id)) == 3)
    await cb.send({"type": "sync", "cursors": {match_id: 1}})
    await cb.wait_for(lambda f: f["type"] == "synced")
    got = cb.of_type("message", match_id)
    assert [f["client_msg_id"] for f in got] == sent
    assert [f["seq"] for f in got] == [1, 2, 3]
    # A socket that did not see them gets the same sync replayed in full.
    cb2 = await connect(b)
    await cb2.send({"type": "sync", "cursors": {match_id: 1}})
    await cb2.wait_for(lambda f: f["type"] == "synced")
    assert [f["seq"] for f in cb2.of_type("message", match_id)] == [2, 3]


async def test_sync_during_live_traffic_loses_and_repeats_nothing(pair):
    a, b, match_id, connect = pair
    ca, cb = await connect(a), await connect(b)
    total = 40

    async def talk() -> None:
        # Two sends in flight at a time, paced by the acks: traffic keeps
        # flowing while the sync runs.
        for i in range(total):
            await ca.send_message(match_id, f"live {i}")
            await ca.wait_until(lambda i=i: len(ca.acks()) >= i - 1)

    talking = asyncio.create_task(talk())
    await ca.wait_until(lambda: len(ca.acks()) >= 5)
    await cb.send({"type": "sync", "cursors": {match_id: 0}})
    await talking
    await cb.wait_for(lambda f: f["type"] == "synced")
    await ca.wait_until(lambda: len(ca.acks()) == total)
    # Everything after the sync started arrives exactly once, in order.
    start = next(i for i, f in enumerate(cb.frames) if f["type"] == "synced")
    before = [f["seq"] for f in cb.frames[:start] if f["type"] == "message"]
    await cb.wait_until(
        lambda: max((f["seq"] for f in cb.of_type("message", match_id)), default=0) == total
    )
    seqs = [f["seq"] for f in cb.of_type("message", match_id)]
    # Frames delivered live before the sync began may be replayed once more;
    # from the replay on, the stream is gap-free and strictly increasing.
    first_replayed = len(seqs) - len(set(seqs))
    after = seqs[first_replayed:] if first_replayed else seqs
    tail = [s for s in after if s > (max(before) if before else 0)] if before else after
    assert sorted(set(seqs)) == list(range(1, total + 1))
    assert tail == sorted(tail) and len(tail) == len(set(tail))


async def test_every_socket_of_a_user_gets_every_frame(pair):
    a, b, match_id, connect = pair
    ca = await connect(a)
    phone, laptop = await connect(b), await connect(b)
    for i in range(5):
        await ca.send_message(match_id, f"to both {i}")
    await ca.send({"type": "typing", "match_id": match_id, "state": True})
    for device in (phone, laptop):
        await device.wait_until(lambda d=device: len(d.of_type("message", match_id)) == 5)
        await device.wait_for(lambda f: f["type"] == "typing" and f["state"] is True)
        assert [f["seq"] for f in device.of_type("message", match_id)] == [1, 2, 3, 4, 5]
    # The sender's other devices see its messages as well; the sending one
    # only its ack.
    laptop_a = await connect(a)
    cmid = await phone.send_message(match_id, "reply")
    await laptop_a.wait_for(lambda f: f["type"] == "message" and f["body"] == "reply")
    await laptop.wait_for(lambda f: f["type"] == "message" and f["body"] == "reply")
    await phone.wait_for(lambda f: f["type"] == "ack" and f["client_msg_id"] == cmid)
    assert not [f for f in phone.of_type("message") if f["body"] == "reply"]


async def test_receipts_persist_and_reach_the_sender(pair, db):
    a, b, match_id, connect = pair
    ca, cb = await connect(a), await connect(b)
    for i in range(3):
        await ca.send_message(match_id, f"read me {i}")
    await cb.wait_until(lambda: len(cb.of_type("message", match_id)) == 3)
    await cb.send({"type": "delivered", "match_id": match_id, "seq": 3})
    delivered = await ca.wait_for(lambda f: f["type"] == "receipt" and f["status"] == "delivered")
    assert delivered == {"type": "receipt", "match_id": match_id, "seq": 3,
                         "status": "delivered", "user_id": str(b.id)}
    await cb.send({"type": "read", "match_id": match_id, "seq": 2})
    read = await ca.wait_for(lambda f: f["type"] == "receipt" and f["status"] == "read")
    assert read["seq"] == 2
    rows = await db.fetch(
        "SELECT seq, delivered_at IS NOT NULL AS d, read_at IS NOT NULL AS r FROM messages "
        "WHERE match_id = $1 ORDER BY seq", uuid.UUID(match_id),
    )
    assert [(r["seq"], r["d"], r["r"]) for r in rows] == [
        (1, True, True), (2, True, True), (3, True, False)
    ]


async def test_bad_frames_get_error_frames_and_the_socket_stays_open(pair, db):
    a, _, match_id, connect = pair
    ca = await connect(a)
    await ca.send_message(match_id, "   ", "blank")
    await ca.send_message(match_id, "bell \x07 here", "control")
    await ca.send_message(match_id, "x" * 2001, "long")
    await ca.ws.send_str("{not json")
    await ca.send({"type": "teleport"})
    await ca.wait_until(lambda: len(ca.of_type("error")) == 5)
    codes = [f["code"] for f in ca.of_type("error")]
    assert codes == ["validation_failed"] * 3 + ["invalid_frame"] * 2
    assert ca.of_type("error")[0]["client_msg_id"] == "blank"
    await ca.send_message(match_id, "  tabs\tand\nnewlines are fine  ")
    ack = await ca.wait_for(lambda f: f["type"] == "ack")
    assert ack["seq"] == 1
    row = await db.fetchrow("SELECT body FROM messages WHERE id = $1", uuid.UUID(ack["message_id"]))
    assert row["body"] == "tabs\tand\nnewlines are fine"
    await ca.send({"type": "ping"})
    await ca.wait_for(lambda f: f["type"] == "pong")


async def test_sending_to_a_match_of_others_is_refused(pair, platform, db, config):
    a, _, _, connect = pair
    _, _, other_match = await make_match(db, config)
    ca = await connect(a)
    await ca.send_message(other_match, "intruder", "x1")
    error = await ca.wait_for(lambda f: f["type"] == "error")
    assert error["code"] == "not_found" and error["client_msg_id"] == "x1"
    assert await stored(db, other_match) == []


async def test_offline_recipient_gets_one_notification_per_quiet_period(pair, db, cache):
    a, b, match_id, connect = pair
    ca = await connect(a)
    await cache.set_json(match_list_key(a.id), {"stale": True}, 120)
    await cache.set_json(match_list_key(b.id), {"stale": True}, 120)
    for i in range(3):
        await ca.send_message(match_id, f"are you there {i}")
    await ca.wait_until(lambda: len(ca.acks()) == 3)

    async def notifications() -> list[dict]:
        rows = await db.fetch(
            "SELECT payload FROM notifications WHERE user_id = $1 AND kind = 'message'", b.id
        )
        return [r["payload"] for r in rows]

    await eventually(notifications)
    # Deliveries run in seq order; give the last two time to (not) notify.
    await ca.send_message(match_id, "last")
    await ca.wait_until(lambda: len(ca.acks()) == 4)
    found = await notifications()
    assert len(found) == 1 and found[0]["match_id"] == match_id and found[0]["seq"] == 1
    async def cleared() -> bool:
        return await cache.get_json(match_list_key(b.id)) is None

    await eventually(cleared)
    assert await cache.get_json(match_list_key(a.id)) is None


async def test_http_fallback_send_history_and_read(pair, http, db):
    a, b, match_id, connect = pair
    cb = await connect(b)
    base = f"/api/v1/matches/{match_id}"
    for i in range(5):
        resp = await http.post(f"{base}/messages", json={"client_msg_id": f"h{i}", "body": f"m{i}"},
                               headers=a.auth)
        assert resp.status == 201
        created = await resp.json()
        assert created["seq"] == i + 1 and set(created) == {"message_id", "seq", "created_at"}
    again = await http.post(f"{base}/messages", json={"client_msg_id": "h0", "body": "m0"},
                            headers=a.auth)
    assert again.status == 201 and (await again.json())["seq"] == 1
    await cb.wait_until(lambda: len(cb.of_type("message", match_id)) >= 5)
    assert [f["body"] for f in cb.of_type("message", match_id)][:5] == [f"m{i}" for i in range(5)]

    page = await (await http.get(f"{base}/messages?limit=2", headers=b.auth)).json()
    assert [m["seq"] for m in page["messages"]] == [4, 5]
    older = await (await http.get(f"{base}/messages?before_seq=4&limit=2", headers=b.auth)).json()
    assert [m["seq"] for m in older["messages"]] == [2, 3]
    newer = await (await http.get(f"{base}/messages?after_seq=2", headers=b.auth)).json()
    assert [m["seq"] for m in newer["messages"]] == [3, 4, 5]
    assert set(newer["messages"][0]) == {"message_id", "seq", "sender_id", "body",
                                         "client_msg_id", "created_at", "delivered_at", "read_at"}

    resp = await http.post(f"{base}/read", json={"seq": 4}, headers=b.auth)
    assert resp.status == 204
    rows = await db.fetch("SELECT seq FROM messages WHERE match_id = $1 AND read_at IS NOT NULL",
                          uuid.UUID(match_id))
    assert sorted(r["seq"] for r in rows) == [1, 2, 3, 4]

    bad = await http.post(f"{base}/messages", json={"client_msg_id": "z", "body": " "},
                          headers=a.auth)
    assert bad.status == 400 and (await bad.json())["error"] == "validation_failed"
    stranger = await http.get(f"{base}/messages", headers={"Authorization": "Bearer nope"})
    assert stranger.status == 401
