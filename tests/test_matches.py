"""The match list, unmatch and block: effects on matches, chat and feeds."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from tests.factories import make_user
from unimatch.domain.pairs import pair_id
from unimatch.storage.cache import match_list_key


async def _matched(http, db, config):
    a = await make_user(db, config)
    b = await make_user(db, config)
    for x, y in ((a, b), (b, a)):
        async with http.post("/api/v1/swipes", headers=x.auth,
                             json={"target_id": str(y.id), "action": "like"}) as resp:
            assert resp.status == 201
    return a, b, pair_id(a.id, b.id)


async def _matches(http, user) -> list[dict]:
    async with http.get("/api/v1/matches", headers=user.auth) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _add_message(db, match_id, seq, sender, body, read=False):
    await db.execute(
        """INSERT INTO messages (match_id, seq, sender_id, body, client_msg_id, read_at)
           VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END)""",
        match_id, seq, sender.id, body, f"c{seq}", read,
    )


async def test_match_list_has_other_user_last_message_and_unread_count(http, db, config,
                                                                       cache):
    a, b, match_id = await _matched(http, db, config)
    c = await make_user(db, config)
    for x, y in ((a, c), (c, a)):
        async with http.post("/api/v1/swipes", headers=x.auth,
                             json={"target_id": str(y.id), "action": "like"}) as resp:
            assert resp.status == 201
    await _add_message(db, match_id, 1, a, "hi", read=True)
    await _add_message(db, match_id, 2, b, "hello")
    await _add_message(db, match_id, 3, b, "how are you?")
    await cache.delete(match_list_key(a.id), match_list_key(b.id))

    for_a = await _matches(http, a)
    for_b = await _matches(http, b)

    assert [m["match_id"] for m in for_a] == [str(match_id), str(pair_id(a.id, c.id))]
    first = for_a[0]
    assert first["user"]["user_id"] == str(b.id)
    assert first["user"]["display_name"] == b.display_name
    assert first["last_message"]["body"] == "how are you?"
    assert first["last_message"]["seq"] == 3
    assert first["last_message"]["sender_id"] == str(b.id)
    assert first["unread_count"] == 2
    assert for_a[1]["last_message"] is None and for_a[1]["unread_count"] == 0
    assert [(m["user"]["user_id"], m["unread_count"]) for m in for_b] == [(str(a.id), 0)]
    assert "created_at" in first


async def test_match_list_is_cached_for_two_minutes(http, db, config, cache):
    a, b, match_id = await _matched(http, db, config)
    await cache.delete(match_list_key(a.id))
    await _matches(http, a)
    assert await cache.get_json(match_list_key(a.id)) is not None
    # A row written behind the cache's back is not seen until it is cleared.
    await _add_message(db, match_id, 1, b, "psst")
    assert (await _matches(http, a))[0]["last_message"] is None
    await cache.delete(match_list_key(a.id))
    assert (await _matches(http, a))[0]["last_message"]["body"] == "psst"


async def test_a_new_match_clears_both_match_lists(http, db, config):
    a = await make_user(db, config)
    b = await make_user(db, config)
    assert await _matches(http, a) == [] and await _matches(http, b) == []
    match_id = pair_id(a.id, b.id)
    for x, y in ((a, b), (b, a)):
        async with http.post("/api/v1/swipes", headers=x.auth,
                             json={"target_id": str(y.id), "action": "like"}) as resp:
            assert resp.status == 201
    assert [m["match_id"] for m in await _matches(http, a)] == [str(match_id)]
    assert [m["match_id"] for m in await _matches(http, b)] == [str(match_id)]


async def _ready_socket(http, user):
    ws = await http.ws_connect(f"/ws?token={user.token}")
    async with asyncio.timeout(30):
        while True:
            frame = orjson.loads((await ws.receive()).data)
            if frame["type"] == "ready":
                return ws


async def _next_of_type(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict:
    async with asyncio.timeout(30):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            frame = orjson.loads(msg.data)
            if frame["type"] == kind:
                return frame


async def test_unmatch_closes_the_chat_for_both(http, db, config):
    a, b, match_id = await _matched(http, db, config)
    await _matches(http, a)
    await _matches(http, b)
    ws_a, ws_b = await _ready_socket(http, a), await _ready_socket(http, b)
    try:
        async with http.delete(f"/api/v1/matches/{match_id}", headers=a.auth) as resp:
            assert resp.status == 204

        for ws in (ws_a, ws_b):
            assert await _next_of_type(ws, "unmatch") == {
                "type": "unmatch", "match_id": str(match_id)
            }
    finally:
        await ws_a.close()
        await ws_b.close()
    row = await db.fetchrow("SELECT ended_at, ended_by, end_reason FROM matches WHERE id = $1",
                            match_id)
    assert row["ended_at"] is not None
    assert (row["ended_by"], row["end_reason"]) == (a.id, "unmatch")
    assert await _matches(http, a) == [] and await _matches(http, b) == []
    for user in (a, b):
        async with http.post(f"/api/v1/matches/{match_id}/messages", headers=user.auth,
                             json={"client_msg_id": "late", "body": "still there?"}) as resp:
            assert resp.status in (403, 404)
    # Unmatched users do not come back to each other's feeds.
    async with http.get("/api/v1/discover?limit=50", headers=a.auth) as resp:
        assert str(b.id) not in {c["user_id"] for c in (await resp.json())["results"]}


async def test_unmatch_by_a_stranger_is_not_found(http, db, config):
    a, _b, match_id = await _matched(http, db, config)
    stranger = await make_user(db, config)
    async with http.delete(f"/api/v1/matches/{match_id}", headers=stranger.auth) as resp:
        assert resp.status == 404
    async with http.delete("/api/v1/matches/not-a-uuid", headers=a.auth) as resp:
        assert resp.status == 404
    assert [m["match_id"] for m in await _matches(http, a)] == [str(match_id)]


async def test_block_ends_the_match_and_hides_both_ways(http, db, config):
    a, b, match_id = await _matched(http, db, config)
    await _add_message(db, match_id, 1, a, "hey")

    async with http.post("/api/v1/blocks", json={"user_id": str(b.id)}, headers=a.auth) as resp:
        assert resp.status == 201

    row = await db.fetchrow("SELECT end_reason, ended_by FROM matches WHERE id = $1", match_id)
    assert (row["end_reason"], row["ended_by"]) == ("block", a.id)
    assert await _matches(http, a) == [] and await _matches(http, b) == []
    async with http.post(f"/api/v1/matches/{match_id}/messages", headers=b.auth,
                         json={"client_msg_id": "x", "body": "why?"}) as resp:
        assert resp.status in (403, 404)
    # Neither can swipe the other any more (a fresh pair shows it best).
    c = await make_user(db, config)
    async with http.post("/api/v1/blocks", json={"user_id": str(c.id)}, headers=a.auth) as resp:
        assert resp.status == 201
    for x, y in ((a, c), (c, a)):
        async with http.post("/api/v1/swipes", headers=x.auth,
                             json={"target_id": str(y.id), "action": "like"}) as resp:
            assert resp.status == 404


async def test_block_is_permanent_until_removed(http, db, config):
    a = await make_user(db, config)
    b = await make_user(db, config)
    async with http.post("/api/v1/blocks", json={"user_id": str(b.id)}, headers=a.auth) as resp:
        assert resp.status == 201
    async with http.post("/api/v1/blocks", json={"user_id": str(b.id)}, headers=a.auth) as resp:
        assert resp.status == 201  # blocking again changes nothing
    async with http.delete(f"/api/v1/blocks/{b.id}", headers=b.auth) as resp:
        assert resp.status == 404  # only the blocker can lift it
    async with http.post("/api/v1/swipes", headers=b.auth,
                         json={"target_id": str(a.id), "action": "like"}) as resp:
        assert resp.status == 404

    async with http.delete(f"/api/v1/blocks/{b.id}", headers=a.auth) as resp:
        assert resp.status == 204
    async with http.post("/api/v1/swipes", headers=b.auth,
                         json={"target_id": str(a.id), "action": "like"}) as resp:
        assert resp.status == 201


async def test_block_input_is_validated(http, db, config):
    a = await make_user(db, config)
    for body, status in (({"user_id": "x"}, 400), ({}, 400), ({"user_id": str(a.id)}, 400),
                         ({"user_id": "00000000-0000-0000-0000-000000000001"}, 404)):
        async with http.post("/api/v1/blocks", json=body, headers=a.auth) as resp:
            assert resp.status == status, body


async def test_an_ended_match_refuses_typing_and_receipts_and_keeps_no_chat(http, db, config):
    a, b, match_id = await _matched(http, db, config)
    ws_a, ws_b = await _ready_socket(http, a), await _ready_socket(http, b)
    try:
        await ws_a.send_json({"type": "send", "match_id": str(match_id),
                              "client_msg_id": "before", "body": "hi"})
        assert (await _next_of_type(ws_a, "ack"))["seq"] == 1
        assert (await _next_of_type(ws_b, "message"))["seq"] == 1
        async with http.delete(f"/api/v1/matches/{match_id}", headers=a.auth) as resp:
            assert resp.status == 204
        for ws in (ws_a, ws_b):
            await _next_of_type(ws, "unmatch")
        for frame in ({"type": "typing", "match_id": str(match_id), "state": True},
                      {"type": "read", "match_id": str(match_id), "seq": 1},
                      {"type": "send", "match_id": str(match_id), "client_msg_id": "after",
                       "body": "still there?"}):
            await ws_b.send_json(frame)
            error = await _next_of_type(ws_b, "error")
            assert error["code"] == "match_ended", (frame, error)
        # The receipt was never stored, and nothing reached the other side.
        assert await db.fetchval(
            "SELECT read_at FROM messages WHERE match_id = $1 AND seq = 1", match_id) is None
        await ws_a.send_json({"type": "ping"})
        assert await _next_of_type(ws_a, "pong") == {"type": "pong"}
    finally:
        await ws_a.close()
        await ws_b.close()


async def test_a_user_who_removed_her_photos_can_still_list_leave_and_block(http, db, config):
    a, _b, match_id = await _matched(http, db, config)
    c = await make_user(db, config)
    # Her profile is no longer complete: discover is closed to her ...
    for row in await db.fetch("SELECT id FROM photos WHERE user_id = $1", a.id):
        async with http.delete(f"/api/v1/me/photos/{row['id']}", headers=a.auth) as resp:
            assert resp.status == 204
    async with http.get("/api/v1/discover", headers=a.auth) as resp:
        assert resp.status == 403 and (await resp.json())["error"] == "profile_incomplete"
    # ... but her matches, leaving one and blocking are not.
    assert [m["match_id"] for m in await _matches(http, a)] == [str(match_id)]
    async with http.post("/api/v1/blocks", headers=a.auth, json={"user_id": str(c.id)}) as resp:
        assert resp.status == 201, await resp.text()
    async with http.delete(f"/api/v1/matches/{match_id}", headers=a.auth) as resp:
        assert resp.status == 204
    assert await _matches(http, a) == []
