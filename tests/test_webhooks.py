"""Webhooks end to end: registration through the API, a notification, and the
`deliver_webhook` job run by a real `JobRunner` against a real receiver on
127.0.0.1 that checks signatures and fails on purpose."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.factories import make_user
from tests.waiting import eventually
from unimatch.domain.config import Config
from unimatch.http.app import create_app
from unimatch.http.notifications import notify
from unimatch.scheduler import webhooks as webhook_jobs
from unimatch.scheduler.handlers import JobContext, PermanentJobError
from unimatch.scheduler.worker import JobRunner
from unimatch.storage import webhooks as webhook_store
from unimatch.storage.jobs import Backoff, Job
from unimatch.storage.notifications import add_notification
from unimatch.storage.pg import Database

API = "/api/v1"
DEADLINE = 30.0


@dataclass
class Receiver:
    """An HTTP endpoint that answers the statuses it is told, in order."""

    url: str
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver(url="")

    async def hook(request: web.Request) -> web.Response:
        state.requests.append((dict(request.headers), await request.read()))
        status = state.statuses.pop(0) if state.statuses else 200
        return web.Response(status=status, text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}/hook"
    yield state
    await runner.cleanup()


@pytest.fixture
async def client(aiohttp_client, config: Config) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(create_app(config))


async def _runner(db: Database, config: Config) -> JobRunner:
    runner = JobRunner(
        db,
        config,
        workers=2,
        kinds={"deliver_webhook"},
        backoff=Backoff(base=0.05, cap=0.2),
        poll_interval=0.05,
    )
    await runner.start()
    return runner


@pytest.fixture
async def jobs(db: Database, config: Config) -> AsyncIterator[JobRunner]:
    runner = await _runner(db, config)
    yield runner
    await runner.stop(grace=5)


async def _wait_for(condition: Callable, what: str) -> object:
    try:
        return await eventually(condition, within=DEADLINE)
    except AssertionError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def _create(client: TestClient, user, url: str, events: list[str]) -> dict:
    response = await client.post(
        f"{API}/webhooks", json={"url": url, "events": events}, headers=user.auth
    )
    assert response.status == 201, await response.text()
    return await response.json()


async def _delivery(db: Database, webhook_id: str):
    return await db.fetchrow(
        "SELECT id, status, attempts, response_code, last_error FROM webhook_deliveries"
        " WHERE webhook_id = $1",
        uuid.UUID(webhook_id),
    )


def _verify(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """What a receiver does: `t=<unix>,v1=<hex>` over "<t>.<body>", and a
    timestamp within the tolerance (replay protection)."""
    fields = dict(part.split("=", 1) for part in headers["X-UniMatch-Signature"].split(","))
    t = int(fields["t"])
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - t) <= tolerance


async def test_signed_delivery_retried_until_accepted(client, db, config, receiver, jobs):
    user = await make_user(db, config)
    created = await _create(client, user, receiver.url, ["match"])
    assert len(created["secret"]) == 64 and created["events"] == ["match"]
    receiver.statuses = [500, 500, 200]

    notification = await notify(client.server.app, user.id, "match", {"match_id": "m-1"})

    async def delivered():
        row = await _delivery(db, created["webhook_id"])
        return row if row is not None and row["status"] == "delivered" else None

    row = await _wait_for(delivered, "the delivery")
    assert row["attempts"] == 3 and row["response_code"] == 200

    assert len(receiver.requests) == 3
    delivery_ids = {headers["X-UniMatch-Delivery"] for headers, _ in receiver.requests}
    assert delivery_ids == {str(row["id"])}
    bodies = {body for _, body in receiver.requests}
    assert len(bodies) == 1, "every attempt carries the same bytes"
    for headers, body in receiver.requests:
        assert headers["X-UniMatch-Event"] == "match"
        assert headers["Content-Type"] == "application/json"
        assert _verify(created["secret"], headers, body)
        assert not _verify("another-secret", headers, body)
    payload = orjson.loads(bodies.pop())
    assert payload["event"] == "match"
    assert payload["delivery_id"] == str(row["id"])
    assert payload["user_id"] == str(user.id)
    assert payload["notification"]["id"] == notification["id"]
    assert payload["notification"]["payload"] == {"match_id": "m-1"}

    response = await client.get(
        f"{API}/webhooks/{created['webhook_id']}/deliveries", headers=user.auth
    )
    assert response.status == 200
    (listed,) = (await response.json())["deliveries"]
    assert listed["status"] == "delivered" and listed["attempts"] == 3


async def test_only_subscribed_events_are_delivered(client, db, config, receiver, jobs):
    user = await make_user(db, config)
    created = await _create(client, user, receiver.url, ["warning"])
    await notify(client.server.app, user.id, "match", {})
    await notify(client.server.app, user.id, "warning", {"reason": "spam"})

    async def delivered():
        row = await _delivery(db, created["webhook_id"])
        return row if row is not None and row["status"] == "delivered" else None

    await _wait_for(delivered, "the warning delivery")
    assert [h["X-UniMatch-Event"] for h, _ in receiver.requests] == ["warning"]


async def test_deleted_webhook_gets_nothing(client, db, config, receiver, jobs):
    user = await make_user(db, config)
    created = await _create(client, user, receiver.url, ["match"])
    # The webhook goes away while its delivery is pending (in one transaction,
    # so no runner can send it in between).
    async with db.transaction() as conn:
        await add_notification(conn, user.id, "match", {})
        assert await webhook_store.deactivate_webhook(
            conn, uuid.UUID(created["webhook_id"]), user.id
        )

    async def failed():
        row = await _delivery(db, created["webhook_id"])
        return row if row["status"] == "failed" else None

    row = await _wait_for(failed, "the dropped delivery")
    assert row["last_error"] == "webhook deleted" and row["attempts"] == 0
    assert receiver.requests == []
    response = await client.get(f"{API}/webhooks", headers=user.auth)
    assert (await response.json())["webhooks"] == []
    response = await client.delete(f"{API}/webhooks/{created['webhook_id']}", headers=user.auth)
    assert response.status == 404


def _claim(delivery_id: uuid.UUID) -> Job:
    now = dt.datetime.now(dt.UTC)
    return Job(id=uuid.uuid4(), kind="deliver_webhook", payload={"delivery_id": str(delivery_id)},
               priority=20, attempts=1, max_attempts=8, run_at=now, locked_by="test",
               locked_until=now, created_at=now)


async def test_private_addresses_refused_unless_allowed(aiohttp_client, db, config, receiver):
    strict = config.with_(webhook_allow_private=False)
    client = await aiohttp_client(create_app(strict))
    user = await make_user(db, config)
    for url in ("http://127.0.0.1:8080/h", "http://10.1.2.3/h", "http://localhost/h",
                "http://[::1]/h", "http://169.254.169.254/latest", "http://0.0.0.0/h"):
        response = await client.post(
            f"{API}/webhooks", json={"url": url, "events": ["match"]}, headers=user.auth
        )
        assert response.status == 400, url
        assert "private" in (await response.json())["detail"]["url"][0]

    # A name is accepted, then refused at delivery by the address it resolves
    # to (this machine's own name is a loopback address here). The delivery
    # is run directly, outside the queue, so only the strict setting sees it.
    hostname = socket.gethostname()
    assert not webhook_jobs.is_public_address(socket.gethostbyname(hostname))
    port = receiver.url.rsplit(":", 1)[1].split("/")[0]
    created = await _create(client, user, f"http://{hostname}:{port}/hook", ["match"])
    delivery_id = await db.fetchval(
        "INSERT INTO webhook_deliveries (webhook_id, event, payload)"
        " VALUES ($1, 'match', '{}'::jsonb) RETURNING id",
        uuid.UUID(created["webhook_id"]),
    )
    context = JobContext(job=_claim(delivery_id), db=db, config=strict)
    with pytest.raises(PermanentJobError, match="non-public"):
        await webhook_jobs.deliver_webhook({"delivery_id": str(delivery_id)}, context)
    row = await _delivery(db, created["webhook_id"])
    assert row["status"] == "failed" and row["attempts"] == 1
    assert "non-public" in row["last_error"]
    assert receiver.requests == []

    # The same delivery with private addresses allowed reaches the receiver.
    await db.execute(
        "UPDATE webhook_deliveries SET status = 'pending' WHERE id = $1", delivery_id
    )
    context = JobContext(job=_claim(delivery_id), db=db, config=config)
    await webhook_jobs.deliver_webhook({"delivery_id": str(delivery_id)}, context)
    assert (await _delivery(db, created["webhook_id"]))["status"] == "delivered"
    assert len(receiver.requests) == 1


async def test_registration_validation_and_ownership(client, db, config):
    user = await make_user(db, config)
    other = await make_user(db, config)
    bad_bodies = [
        {"url": "ftp://example.com/h", "events": ["match"]},
        {"url": "https://user:pw@example.com/h", "events": ["match"]},
        {"url": "https://@example.com/h", "events": ["match"]},
        {"url": "not a url", "events": ["match"]},
        {"url": "https:///path", "events": ["match"]},
        {"url": "https://example.com/h", "events": []},
        {"url": "https://example.com/h", "events": ["bogus"]},
        {"url": "https://example.com/h", "events": ["match", "match"]},
        {"url": "https://example.com/h"},
        {"events": ["match"]},
    ]
    for body in bad_bodies:
        response = await client.post(f"{API}/webhooks", json=body, headers=user.auth)
        assert response.status == 400, body
        assert (await response.json())["error"] == "validation_failed"

    created = await _create(client, user, "https://example.com/h", ["message", "match"])
    assert created["events"] == ["match", "message"]
    response = await client.get(f"{API}/webhooks", headers=user.auth)
    (listed,) = (await response.json())["webhooks"]
    assert listed["webhook_id"] == created["webhook_id"] and "secret" not in listed

    for method, path in (("DELETE", ""), ("GET", "/deliveries")):
        response = await client.request(
            method, f"{API}/webhooks/{created['webhook_id']}{path}", headers=other.auth
        )
        assert response.status == 404
    response = await client.delete(f"{API}/webhooks/{created['webhook_id']}", headers=user.auth)
    assert response.status == 204
    response = await client.delete(f"{API}/webhooks/{created['webhook_id']}", headers=user.auth)
    assert response.status == 404
    response = await client.delete(f"{API}/webhooks/not-a-uuid", headers=user.auth)
    assert response.status == 404

    response = await client.get(f"{API}/webhooks")
    assert response.status == 401
    unverified = await make_user(db, config, verified=False)
    response = await client.get(f"{API}/webhooks", headers=unverified.auth)
    assert (await response.json())["error"] == "unverified"


async def test_at_most_ten_webhooks(client, db, config):
    user = await make_user(db, config)
    results = await asyncio.gather(*(
        client.post(f"{API}/webhooks", json={"url": f"https://example.com/{i}",
                                             "events": ["match"]}, headers=user.auth)
        for i in range(12)
    ))
    statuses = sorted(r.status for r in results)
    assert statuses == [201] * 10 + [409] * 2
    conflict = next(r for r in results if r.status == 409)
    assert (await conflict.json())["error"] == "too_many_webhooks"


async def test_the_platform_scheduler_delivers(db, config, platform, http, receiver):
    """On the running platform: a moderator's warning reaches the warned
    user's webhook through the scheduler actor."""
    user = await make_user(db, config)
    reporter = await make_user(db, config)
    moderator = await make_user(db, config, role="moderator")
    response = await http.post(f"{API}/webhooks", json={"url": receiver.url,
                               "events": ["warning"]}, headers=user.auth)
    assert response.status == 201, await response.text()
    created = await response.json()
    response = await http.post(f"{API}/reports", json={"reported_user_id": str(user.id),
                               "reason": "spam"}, headers=reporter.auth)
    report_id = (await response.json())["report_id"]
    response = await http.post(f"{API}/moderation/reports/{report_id}/resolve",
                               json={"action": "warn"}, headers=moderator.auth)
    assert response.status == 200, await response.text()

    async def delivered():
        row = await _delivery(db, created["webhook_id"])
        return row if row is not None and row["status"] == "delivered" else None

    await _wait_for(delivered, "the delivery by the platform's scheduler")
    ((headers, body),) = receiver.requests
    assert _verify(created["secret"], headers, body)
    assert orjson.loads(body)["notification"]["payload"]["report_id"] == report_id
