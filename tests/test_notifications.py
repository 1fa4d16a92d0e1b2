"""Notifications through the REST shell: listing, pagination, the cache and its
invalidation, marking read, and the webhook deliveries a notification fans
out to in its own transaction."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient

from tests.factories import make_user
from unimatch.domain.config import Config
from unimatch.http.app import create_app
from unimatch.http.notifications import notify, publish_notification
from unimatch.storage.notifications import add_notification
from unimatch.storage.pg import Database

API = "/api/v1"


@pytest.fixture
async def client(aiohttp_client, config: Config) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(create_app(config))


async def _list(client: TestClient, user, query: str = "") -> dict:
    response = await client.get(f"{API}/notifications{query}", headers=user.auth)
    assert response.status == 200, await response.text()
    return await response.json()


async def _error(response, status: int, code: str) -> dict:
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["error"] == code and body["status_code"] == status
    return body


async def test_newest_first_with_unread_filter_and_mark_read(client, db, config):
    user = await make_user(db, config)
    app = client.server.app
    first = await notify(app, user.id, "match", {"match_id": str(uuid.uuid4())})
    second = await notify(app, user.id, "message", {"match_id": str(uuid.uuid4())})
    third = await notify(app, user.id, "warning", {"reason": "spam"})

    listed = (await _list(client, user))["notifications"]
    assert [n["id"] for n in listed] == [third["id"], second["id"], first["id"]]
    assert listed[1] == {**second, "is_read": False}
    assert set(listed[0]) == {"id", "kind", "payload", "is_read", "created_at"}

    response = await client.post(
        f"{API}/notifications/read", json={"ids": [first["id"], third["id"]]}, headers=user.auth
    )
    assert response.status == 204
    unread = (await _list(client, user, "?unread=true"))["notifications"]
    assert [n["id"] for n in unread] == [second["id"]]
    every = (await _list(client, user))["notifications"]
    assert [n["is_read"] for n in every] == [True, False, True]

    response = await client.post(f"{API}/notifications/read", json={"all": True},
                                 headers=user.auth)
    assert response.status == 204
    assert (await _list(client, user, "?unread=true"))["notifications"] == []


async def test_only_own_notifications_and_bad_ids_are_400(client, db, config):
    owner = await make_user(db, config)
    other = await make_user(db, config)
    app = client.server.app
    mine = await notify(app, owner.id, "match", {})
    theirs = await notify(app, other.id, "match", {})

    # Someone else's id: 400, and nothing is marked, not even the caller's own.
    response = await client.post(
        f"{API}/notifications/read", json={"ids": [mine["id"], theirs["id"]]}, headers=owner.auth
    )
    body = await _error(response, 400, "validation_failed")
    assert theirs["id"] in body["detail"]["ids"][0]
    assert [n["id"] for n in (await _list(client, owner, "?unread=true"))["notifications"]] == [
        mine["id"]
    ]
    assert (await _list(client, other, "?unread=true"))["notifications"][0]["id"] == theirs["id"]

    for bad in ({"ids": ["nope"]}, {"ids": []}, {"ids": [mine["id"]], "all": True}, {},
                {"all": False}, {"ids": "x"}):
        response = await client.post(f"{API}/notifications/read", json=bad, headers=owner.auth)
        await _error(response, 400, "validation_failed")
    response = await client.post(f"{API}/notifications/read", data=b"{", headers=owner.auth)
    await _error(response, 400, "invalid_json")


async def test_pagination_with_before(client, db, config):
    user = await make_user(db, config)
    app = client.server.app
    created = [await notify(app, user.id, "message", {"n": i}) for i in range(5)]
    expected = [n["id"] for n in reversed(created)]

    seen: list[str] = []
    query = "?limit=2"
    while True:
        page = await _list(client, user, query)
        seen += [n["id"] for n in page["notifications"]]
        if page["next_before"] is None:
            break
        assert len(page["notifications"]) == 2
        query = f"?limit=2&before={page['next_before']}"
    assert seen == expected

    response = await client.get(
        f"{API}/notifications?before={uuid.uuid4()}", headers=user.auth
    )
    await _error(response, 400, "validation_failed")
    for bad in ("?limit=0", "?limit=101", "?unread=maybe", "?before=xyz"):
        response = await client.get(f"{API}/notifications{bad}", headers=user.auth)
        await _error(response, 400, "validation_failed")


async def test_cached_until_a_notification_arrives(client, db: Database, config):
    user = await make_user(db, config)
    app = client.server.app
    await notify(app, user.id, "match", {})
    before = await _list(client, user)
    unread_before = await _list(client, user, "?unread=true")

    # A row written without publishing it is invisible while the cache holds:
    # the page really is served from Redis.
    async with db.transaction() as conn:
        hidden = await add_notification(conn, user.id, "message", {})
    assert await _list(client, user) == before
    assert await _list(client, user, "?unread=true") == unread_before

    # Publishing clears every cached variant at once.
    await publish_notification(app, user.id, hidden)
    assert (await _list(client, user))["notifications"][0]["id"] == hidden["id"]
    assert (await _list(client, user, "?unread=true"))["notifications"][0]["id"] == hidden["id"]

    # Marking read clears it too.
    await client.post(f"{API}/notifications/read", json={"ids": [hidden["id"]]},
                      headers=user.auth)
    unread = (await _list(client, user, "?unread=true"))["notifications"]
    assert hidden["id"] not in [n["id"] for n in unread]


async def test_requires_a_token(client):
    response = await client.get(f"{API}/notifications")
    await _error(response, 401, "unauthorized")
    response = await client.post(f"{API}/notifications/read", json={"all": True})
    await _error(response, 401, "unauthorized")


async def test_webhook_deliveries_commit_with_the_notification(db: Database, config):
    user = await make_user(db, config)
    webhook_id = await db.fetchval(
        "INSERT INTO webhooks (user_id, url, secret) VALUES ($1, 'http://127.0.0.1:9/h', 's')"
        " RETURNING id",
        user.id,
    )
    await db.execute(
        "INSERT INTO webhook_events (webhook_id, event) VALUES ($1, 'match')", webhook_id
    )

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with db.transaction() as conn:
            await add_notification(conn, user.id, "match", {"x": 1})
            raise Abort
    assert await db.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1", webhook_id
    ) == 0

    async with db.transaction() as conn:
        notification = await add_notification(conn, user.id, "match", {"x": 1})
        await add_notification(conn, user.id, "message", {"x": 2})  # not subscribed
    rows = await db.fetch(
        "SELECT id, event, payload, status FROM webhook_deliveries WHERE webhook_id = $1",
        webhook_id,
    )
    assert len(rows) == 1
    delivery = rows[0]
    assert delivery["event"] == "match" and delivery["status"] == "pending"
    assert delivery["payload"]["delivery_id"] == str(delivery["id"])
    assert delivery["payload"]["notification"]["id"] == notification["id"]
    assert delivery["payload"]["notification"]["payload"] == {"x": 1}
    job = await db.fetchrow(
        "SELECT kind, status FROM jobs WHERE payload->>'delivery_id' = $1", str(delivery["id"])
    )
    assert job is not None and job["kind"] == "deliver_webhook"


async def test_a_notification_reaches_open_sockets(db, config, platform, http):
    """On the running platform: a warning published by a moderator's action
    arrives as a `notification` frame on every socket of the user."""
    user = await make_user(db, config)
    reporter = await make_user(db, config)
    moderator = await make_user(db, config, role="moderator")
    sockets = [await http.ws_connect(f"/ws?token={user.token}") for _ in range(2)]
    try:
        for ws in sockets:
            await ws.send_json({"type": "ping"})
            await _frame(ws, "pong")
        response = await http.post(f"{API}/reports", json={"reported_user_id": str(user.id),
                                   "reason": "spam"}, headers=reporter.auth)
        report_id = (await response.json())["report_id"]
        response = await http.post(f"{API}/moderation/reports/{report_id}/resolve",
                                   json={"action": "warn"}, headers=moderator.auth)
        assert response.status == 200, await response.text()
        for ws in sockets:
            frame = await _frame(ws, "notification")
            assert frame["notification"]["kind"] == "warning"
            assert frame["notification"]["payload"] == {"report_id": report_id,
                                                        "reason": "spam"}
        response = await http.get(f"{API}/notifications", headers=user.auth)
        listed = (await response.json())["notifications"]
        assert listed[0]["id"] == frame["notification"]["id"]
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))


async def _frame(ws, kind: str) -> dict:
    while True:
        frame = await ws.receive_json(timeout=10)
        if frame["type"] == kind:
            return frame
