"""The socket layer: authentication, close codes, presence, liveness, limits."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.chat_clients import ChatClient, make_match
from tests.factories import PASSWORD, make_user
from tests.waiting import eventually
from unimatch.actors.links import remote_directory
from unimatch.domain import tokens
from unimatch.http.app import create_app
from unimatch.ws.hub import HUB


@pytest.fixture
async def directory(platform, config):
    return remote_directory(config.namespace, config.nodes)


@pytest.fixture
async def clients():
    opened: list[ChatClient] = []
    yield opened
    for client in opened:
        await client.close()


async def refused(url: str) -> tuple[int | None, list[dict]]:
    client = await ChatClient.connect(url, None, "", wait_ready=False)
    try:
        code = await client.wait_closed()
        return code, client.frames
    finally:
        await client.close()


async def test_bad_token_closes_4001(platform):
    code, frames = await refused(f"{platform.url}/ws?token=not-a-token")
    assert code == 4001 and frames[0]["code"] == "invalid_token"


async def test_first_frame_must_authenticate(platform, db, config, clients):
    user = await make_user(db, config)
    client = await ChatClient.connect(platform.url, None, wait_ready=False)
    clients.append(client)
    await client.send({"type": "auth", "token": user.token})
    ready = await client.wait_for(lambda f: f["type"] == "ready")
    assert ready["user_id"] == str(user.id)

    other = await ChatClient.connect(platform.url, None, wait_ready=False)
    clients.append(other)
    await other.send({"type": "ping"})
    assert await other.wait_closed() == 4001


async def test_scoped_socket_for_a_match_of_others_closes_4003(platform, db, config, clients):
    a, b, match_id = await make_match(db, config)
    outsider = await make_user(db, config)
    code, frames = await refused(f"{platform.url}/ws/chat/{match_id}/?token={outsider.token}")
    assert code == 4003, frames
    code, _ = await refused(f"{platform.url}/ws/chat/not-a-uuid/?token={a.token}")
    assert code == 4003

    scoped = await ChatClient.connect(platform.url, a.token, f"/ws/chat/{match_id}/")
    clients.append(scoped)
    cb = await ChatClient.connect(platform.url, b.token)
    clients.append(cb)
    await scoped.send_message(match_id, "scoped hello")
    message = await cb.wait_for(lambda f: f["type"] == "message")
    assert message["body"] == "scoped hello"
    # The sending socket gets the ack, not a `message` of its own send.
    ack = await scoped.wait_for(lambda f: f["type"] == "ack")
    assert ack["seq"] == message["seq"] and not scoped.of_type("message")
    _, _, elsewhere = await make_match(db, config)
    await scoped.send_message(elsewhere, "wrong match", "w1")
    error = await scoped.wait_for(lambda f: f["type"] == "error")
    assert error["code"] == "forbidden" and error["client_msg_id"] == "w1"


async def test_suspension_closes_every_socket_with_4003(platform, db, config, directory):
    user = await make_user(db, config)
    phone = await ChatClient.connect(platform.url, user.token)
    laptop = await ChatClient.connect(platform.url, user.token)
    try:
        await db.execute(
            "INSERT INTO suspensions (user_id, reason) VALUES ($1, 'spam')", user.id
        )
        closed = await directory.call("user", str(user.id), "disconnect", 4003, "suspended")
        assert closed == 2
        assert await phone.wait_closed() == 4003
        assert await laptop.wait_closed() == 4003
        code, frames = await refused(f"{platform.url}/ws?token={user.token}")
        assert code == 4003 and frames[0]["code"] == "suspended"
    finally:
        await phone.close()
        await laptop.close()


async def test_presence_reaches_matched_users(platform, db, config, clients):
    a, b, _ = await make_match(db, config)
    ca = await ChatClient.connect(platform.url, a.token)
    clients.append(ca)
    cb = await ChatClient.connect(platform.url, b.token)
    clients.append(cb)
    online = await ca.wait_for(
        lambda f: f["type"] == "presence" and f["user_id"] == str(b.id), within=20
    )
    assert online["online"] is True
    await cb.close()
    offline = await ca.wait_for(
        lambda f: f["type"] == "presence" and f["user_id"] == str(b.id) and not f["online"],
        within=20,
    )
    assert offline["last_active"] is not None


async def test_a_flapping_connection_announces_nothing(platform, db, config, clients):
    a, b, _ = await make_match(db, config)
    ca = await ChatClient.connect(platform.url, a.token)
    clients.append(ca)
    cb = await ChatClient.connect(platform.url, b.token)
    clients.append(cb)
    await ca.wait_for(lambda f: f["type"] == "presence" and f["online"], within=20)
    # Reconnect within the debounce window: still online, nothing to say.
    await cb.close()
    cb2 = await ChatClient.connect(platform.url, b.token)
    clients.append(cb2)
    await ca.send({"type": "ping"})
    await ca.wait_for(lambda f: f["type"] == "pong")
    marker = len(ca.frames)
    await asyncio.sleep(0)  # let frames in flight land before counting
    await ca.send({"type": "ping"})
    await ca.wait_until(lambda: len(ca.of_type("pong")) == 2)
    presences = [f for f in ca.frames[marker:] if f["type"] == "presence"]
    assert all(f["online"] for f in presences)


async def test_send_rate_limit_errors_then_closes_4008(platform, db, config):
    a, _, match_id = await make_match(db, config)
    client = await ChatClient.connect(platform.url, a.token)
    try:
        for i in range(config.limit_chat_burst + 40):
            await client.send_message(match_id, f"spam {i}", f"s{i}")
        assert await client.wait_closed(within=30) == 4008
        limited = client.of_type("error")
        assert limited and all(f["code"] == "rate_limited" for f in limited)
        assert limited[0]["retry_after"] > 0
    finally:
        await client.close()


async def test_silent_socket_is_closed_and_forgotten(aiohttp_client, config, db, directory):
    """A client that answers no ping is dropped after the heartbeat, and its
    user's actor forgets the socket."""
    app = create_app(config.with_(ws_heartbeat=0.3), directory=directory)
    server = await aiohttp_client(app)
    user = await make_user(db, config)
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(
            str(server.make_url(f"/ws?token={user.token}")), autoping=False
        )
        first = await ws.receive(timeout=10)
        assert first.json()["type"] == "ready"
        assert len(app[HUB].connections) == 1
        async with asyncio.timeout(10):
            async for _ in ws:  # pings arrive and go unanswered
                pass
        assert ws.closed

        async def forgotten() -> bool:
            sockets = await directory.call("user", str(user.id), "sockets_open")
            return not app[HUB].connections and not sockets

        await eventually(forgotten)
    finally:
        await session.close()


async def test_a_socket_ends_with_its_token_unless_renewed(platform, db, config):
    user = await make_user(db, config)
    short = config.with_(access_ttl=3)
    lapsing = await ChatClient.connect(platform.url, tokens.issue_access(short, user.id))
    renewed = await ChatClient.connect(platform.url, tokens.issue_access(short, user.id))
    try:
        await renewed.send({"type": "auth", "token": tokens.issue_access(config, user.id)})
        ok = await renewed.wait_for(lambda f: f["type"] in ("authenticated", "error"))
        assert ok["type"] == "authenticated" and ok["expires_at"] > time.time() + 60
        # A token of someone else is refused and changes nothing.
        other = await make_user(db, config)
        await renewed.send({"type": "auth", "token": other.token})
        refused = await renewed.wait_for(lambda f: f["type"] == "error")
        assert refused["code"] == "forbidden"

        assert await lapsing.wait_closed(within=30) == 4001
        assert lapsing.of_type("error")[-1]["code"] == "token_expired"
        # The renewed socket outlived the token it opened with.
        await renewed.send({"type": "ping"})
        await renewed.wait_for(lambda f: f["type"] == "pong")
        assert not renewed.closed
    finally:
        await lapsing.close()
        await renewed.close()


async def test_logout_closes_the_sockets_of_that_session_only(platform, db, config, http):
    user = await make_user(db, config)

    async def login() -> dict:
        response = await http.post("/api/v1/auth/login",
                                   json={"email": user.email, "password": PASSWORD})
        assert response.status == 200, await response.text()
        return await response.json()

    phone, laptop = await login(), await login()
    on_phone = await ChatClient.connect(platform.url, phone["access"])
    on_laptop = await ChatClient.connect(platform.url, laptop["access"])
    try:
        response = await http.post("/api/v1/auth/logout", json={"refresh": phone["refresh"]})
        assert response.status == 204
        assert await on_phone.wait_closed(within=30) == 4001
        await on_laptop.send({"type": "ping"})
        await on_laptop.wait_for(lambda f: f["type"] == "pong")
        assert not on_laptop.closed
    finally:
        await on_phone.close()
        await on_laptop.close()
