"""Swipes through the pair's MatchActor, over HTTP against the platform."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import orjson

from tests.factories import make_user
from tests.waiting import eventually
from unimatch.actors.links import remote_directory
from unimatch.domain.pairs import pair_id
from unimatch.http.app import create_app


async def _swipe(http, user, target, action="like") -> tuple[int, dict, aiohttp.ClientResponse]:
    async with http.post(
        "/api/v1/swipes", json={"target_id": str(target.id), "action": action}, headers=user.auth
    ) as resp:
        return resp.status, await resp.json(), resp


async def test_mutual_like_creates_one_match_with_notifications(http, db, config):
    a = await make_user(db, config)
    b = await make_user(db, config)

    status, first, _ = await _swipe(http, a, b)
    assert (status, first) == (201, {"matched": False, "match_id": None})
    status, second, _ = await _swipe(http, b, a)

    assert status == 201 and second["matched"] is True
    assert second["match_id"] == str(pair_id(a.id, b.id))
    row = await db.fetchrow("SELECT user_a, user_b, ended_at FROM matches WHERE id = $1",
                            pair_id(a.id, b.id))
    assert {row["user_a"], row["user_b"]} == {a.id, b.id} and row["ended_at"] is None
    for user, other in ((a, b), (b, a)):
        payloads = await db.fetch(
            "SELECT payload FROM notifications WHERE user_id = $1 AND kind = 'match'", user.id
        )
        assert [p["payload"] for p in payloads] == [
            {"match_id": second["match_id"], "user_id": str(other.id)}
        ]


async def test_like_then_pass_is_no_match(http, db, config):
    a = await make_user(db, config)
    b = await make_user(db, config)
    await _swipe(http, a, b, "like")
    status, body, _ = await _swipe(http, b, a, "pass")
    assert (status, body) == (201, {"matched": False, "match_id": None})
    assert await db.fetchval("SELECT count(*) FROM matches WHERE id = $1",
                             pair_id(a.id, b.id)) == 0


async def test_repeated_swipe_is_409(http, db, config):
    a = await make_user(db, config)
    b = await make_user(db, config)
    assert (await _swipe(http, a, b, "pass"))[0] == 201

    for action in ("pass", "like"):
        status, body, _ = await _swipe(http, a, b, action)
        assert status == 409 and body["error"] == "already_swiped"
    assert await db.fetchval(
        "SELECT count(*) FROM swipes WHERE swiper_id = $1 AND swiped_id = $2", a.id, b.id
    ) == 1


async def test_a_retried_call_answers_like_the_first(platform, db, config):
    """The runtime retries a call whose host died after it committed: the
    same swipe id gets the first answer back, not a 409."""
    a = await make_user(db, config)
    b = await make_user(db, config)
    directory = remote_directory(config.namespace, config.nodes)
    await directory.call("match", str(pair_id(a.id, b.id)), "swipe", str(b.id), str(a.id),
                         "like")
    swipe_id = str(uuid.uuid4())
    args = ("match", str(pair_id(a.id, b.id)), "swipe", str(a.id), str(b.id), "like")

    first = await directory.call(*args, swipe_id=swipe_id)
    again = await directory.call(*args, swipe_id=swipe_id)

    assert first == again == {"matched": True, "match_id": str(pair_id(a.id, b.id))}
    assert await db.fetchval("SELECT count(*) FROM matches WHERE id = $1",
                             pair_id(a.id, b.id)) == 1


async def test_targets_one_cannot_see_are_not_found(http, db, config):
    me = await make_user(db, config)
    unverified = await make_user(db, config, verified=False)
    hidden = await make_user(db, config, visible=False)
    suspended = await make_user(db, config)
    blocker = await make_user(db, config)
    await db.execute("INSERT INTO suspensions (user_id, reason) VALUES ($1, 'spam')",
                     suspended.id)
    await db.execute("INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2)",
                     blocker.id, me.id)

    class Ghost:
        id = uuid.uuid4()

    for target in (unverified, hidden, suspended, blocker, Ghost):
        status, body, _ = await _swipe(http, me, target)
        assert status == 404 and body["error"] == "not_found"
    assert await db.fetchval("SELECT count(*) FROM swipes WHERE swiper_id = $1", me.id) == 0


async def test_swipe_body_is_validated(http, db, config):
    me = await make_user(db, config)
    cases = [
        ({"target_id": "nope", "action": "like"}, "target_id"),
        ({"target_id": str(uuid.uuid4()), "action": "superlike"}, "action"),
        ({"action": "like"}, "target_id"),
        ({"target_id": str(me.id), "action": "like"}, "target_id"),
    ]
    for body, field in cases:
        async with http.post("/api/v1/swipes", json=body, headers=me.auth) as resp:
            assert resp.status == 400
            assert field in (await resp.json())["detail"]
    incomplete = await make_user(db, config, complete=False)
    async with http.post("/api/v1/swipes", json=cases[1][0], headers=incomplete.auth) as resp:
        assert resp.status == 403 and (await resp.json())["error"] == "profile_incomplete"


async def test_like_limit_is_429_with_retry_after(platform, db, config, aiohttp_client):
    limited = create_app(config.with_(limit_likes_per_day=3),
                         directory=remote_directory(config.namespace, config.nodes))
    client = await aiohttp_client(limited)
    me = await make_user(db, config)
    targets = [await make_user(db, config) for _ in range(5)]

    async def swipe(target, action="like"):
        resp = await client.post("/api/v1/swipes", headers=me.auth,
                                 json={"target_id": str(target.id), "action": action})
        return resp.status, await resp.json(), resp.headers

    # Sent at once: the limit holds although the pairs' actors run in parallel.
    results = await asyncio.gather(*(swipe(t) for t in targets[:4]))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [201, 201, 201, 429]
    _, body, headers = next(r for r in results if r[0] == 429)
    assert body["error"] == "like_limit_reached"
    assert 1 <= int(headers["Retry-After"]) <= 24 * 3600
    # Passes do not count.
    assert (await swipe(targets[4], "pass"))[0] == 201
    assert await db.fetchval(
        "SELECT count(*) FROM swipes WHERE swiper_id = $1 AND action = 'like'", me.id
    ) == 3


async def _collect(
    ws: aiohttp.ClientWebSocketResponse, frames: list[dict], arrived: asyncio.Condition
) -> None:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            frames.append(orjson.loads(msg.data))
            async with arrived:
                arrived.notify_all()


async def _wait_until(arrived: asyncio.Condition, condition) -> None:
    async with asyncio.timeout(30), arrived:
        await arrived.wait_for(condition)


async def test_fifty_pairs_liking_at_the_same_instant(platform, http, db, config):
    pairs = [(await make_user(db, config), await make_user(db, config)) for _ in range(50)]
    users = [u for pair in pairs for u in pair]
    # Sockets on a session of their own: each holds a connection for good,
    # and the swipes must not queue behind them for the pool's 100 slots.
    ws_session = aiohttp.ClientSession(
        base_url=platform.url, connector=aiohttp.TCPConnector(limit=0)
    )
    sockets = [await ws_session.ws_connect(f"/ws?token={u.token}") for u in users]
    frames: list[list[dict]] = [[] for _ in users]
    arrived = asyncio.Condition()
    readers = [
        asyncio.create_task(_collect(ws, f, arrived))
        for ws, f in zip(sockets, frames, strict=True)
    ]
    try:
        # Every socket is attached to its user's actor once "ready" arrives.
        await _wait_until(
            arrived, lambda: all(any(f.get("type") == "ready" for f in fs) for fs in frames)
        )

        async with asyncio.timeout(60):
            results = await asyncio.gather(*(
                _swipe(http, x, y) for a, b in pairs for x, y in ((a, b), (b, a))
            ))

        assert [status for status, _, _ in results] == [201] * 100
        matched = [body for _, body, _ in results if body["matched"]]
        assert len(matched) == 50
        ids = [pair_id(a.id, b.id) for a, b in pairs]
        assert await db.fetchval(
            "SELECT count(*) FROM matches WHERE id = ANY($1::uuid[])", ids
        ) == 50
        assert sorted(m["match_id"] for m in matched) == sorted(str(i) for i in ids)

        def match_frames() -> list[dict]:
            return [fr for fs in frames for fr in fs if fr.get("type") == "match"]

        await _wait_until(arrived, lambda: len(match_frames()) >= 100)
        assert len(match_frames()) == 100
        for user, received in zip(users, frames, strict=True):
            mine = [fr for fr in received if fr.get("type") == "match"]
            partner = next(b if a is user else a for a, b in pairs if user in (a, b))
            assert len(mine) == 1
            assert mine[0]["match_id"] == str(pair_id(user.id, partner.id))
            assert mine[0]["user"]["user_id"] == str(partner.id)
    finally:
        # Readers first: a close waits for the close frame a reader would eat.
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in sockets))
        await ws_session.close()


async def _active_pairs(platform) -> int:
    stats = await asyncio.gather(*(n.stats.remote() for n in platform.nodes))
    return sum(s["active"].get("match", 0) for s in stats)


async def test_a_pair_that_only_swipes_is_not_kept_in_memory(platform, http, db, config):
    """A node sees thousands of pairs that swipe once: each pair's actor
    ends with its mailbox, and only a match stays active."""
    before = await _active_pairs(platform)
    liked = await make_user(db, config)
    admirers = [await make_user(db, config) for _ in range(6)]
    for admirer in admirers:
        status, body, _ = await _swipe(http, admirer, liked)
        assert (status, body["matched"]) == (201, False)
    await eventually(lambda: _at_most(platform, before), within=10)

    status, body, _ = await _swipe(http, liked, admirers[0])
    assert (status, body["matched"]) == (201, True)
    # The match stays: its chat starts without reading the pair again.
    assert await _active_pairs(platform) == before + 1
    # A pair dropped after a swipe is the same pair's writer when it comes back.
    status, body, _ = await _swipe(http, admirers[1], liked)
    assert (status, body["error"]) == (409, "already_swiped")
    status, body, _ = await _swipe(http, liked, admirers[1])
    assert (status, body["matched"]) == (201, True)


async def _at_most(platform, count: int) -> bool:
    return await _active_pairs(platform) <= count
