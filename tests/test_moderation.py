"""Reports and moderation through the API: the report flow and its limits,
every moderation action, moderator-only access, and what a suspension does
to the suspended user (login, tokens, refresh, profile, matches, sockets)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.factories import PASSWORD, make_user
from tests.waiting import eventually
from unimatch.domain.config import Config
from unimatch.domain.pairs import pair_id
from unimatch.http.app import create_app
from unimatch.storage.pg import Database

API = "/api/v1"


@pytest.fixture
async def client(aiohttp_client, config: Config) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(create_app(config))


def _later(**delta: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


async def _error(response, status: int, code: str) -> dict:
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["error"] == code and body["status_code"] == status, body
    return body


async def _report(client, reporter, target, reason: str = "spam", details: str = "") -> str:
    response = await client.post(
        f"{API}/reports",
        json={"reported_user_id": str(target.id), "reason": reason, "details": details},
        headers=reporter.auth,
    )
    assert response.status == 201, await response.text()
    return (await response.json())["report_id"]


async def _open_reports(client, moderator, target) -> list[dict]:
    response = await client.get(
        f"{API}/moderation/reports?status=open&reported_user_id={target.id}",
        headers=moderator.auth,
    )
    assert response.status == 200, await response.text()
    return (await response.json())["reports"]


async def _notifications(client, user) -> list[dict]:
    response = await client.get(f"{API}/notifications", headers=user.auth)
    assert response.status == 200, await response.text()
    return (await response.json())["notifications"]


async def _match(db: Database, one, other) -> uuid.UUID:
    a, b = sorted([one.id, other.id])
    return await db.fetchval(
        "INSERT INTO matches (id, user_a, user_b) VALUES ($1, $2, $3) RETURNING id",
        pair_id(a, b), a, b,
    )


async def _login(client, user) -> aiohttp.ClientResponse:
    return await client.post(f"{API}/auth/login", json={"email": user.email, "password": PASSWORD})


# -- reports -----------------------------------------------------------------


async def test_report_validation(client, db, config):
    reporter = await make_user(db, config)
    target = await make_user(db, config)
    report_id = await _report(client, reporter, target, "harassment", "rude messages")
    row = await db.fetchrow("SELECT * FROM reports WHERE id = $1", uuid.UUID(report_id))
    assert (row["reporter_id"], row["reported_user_id"], row["reason"], row["details"],
            row["status"]) == (reporter.id, target.id, "harassment", "rude messages", "open")

    bad = [
        ({"reported_user_id": str(reporter.id), "reason": "spam"}, "reported_user_id"),
        ({"reported_user_id": str(target.id), "reason": "boring"}, "reason"),
        ({"reported_user_id": "nope", "reason": "spam"}, "reported_user_id"),
        ({"reason": "spam"}, "reported_user_id"),
        ({"reported_user_id": str(target.id), "reason": "spam", "details": "x" * 2001},
         "details"),
    ]
    for body, field in bad:
        response = await client.post(f"{API}/reports", json=body, headers=reporter.auth)
        error = await _error(response, 400, "validation_failed")
        assert field in error["detail"], body

    response = await client.post(
        f"{API}/reports", json={"reported_user_id": str(uuid.uuid4()), "reason": "spam"},
        headers=reporter.auth,
    )
    await _error(response, 404, "not_found")
    unverified = await make_user(db, config, verified=False)
    response = await client.post(
        f"{API}/reports", json={"reported_user_id": str(target.id), "reason": "spam"},
        headers=unverified.auth,
    )
    await _error(response, 403, "unverified")


async def test_reports_are_rate_limited_per_reporter(client, db, config):
    reporter = await make_user(db, config)
    target = await make_user(db, config)
    for _ in range(20):
        await _report(client, reporter, target)
    response = await client.post(
        f"{API}/reports", json={"reported_user_id": str(target.id), "reason": "spam"},
        headers=reporter.auth,
    )
    await _error(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1
    # Another reporter is not affected.
    await _report(client, await make_user(db, config), target)


# -- moderator access ---------------------------------------------------------


async def test_moderation_is_for_moderators_only(client, db, config):
    user = await make_user(db, config)
    target = await make_user(db, config)
    report_id = await _report(client, user, target)
    calls = [
        ("GET", "/moderation/reports", None),
        ("GET", f"/moderation/reports/{report_id}", None),
        ("POST", f"/moderation/reports/{report_id}/resolve", {"action": "dismiss"}),
        ("POST", f"/moderation/users/{target.id}/suspend", {"reason": "x"}),
        ("POST", f"/moderation/users/{target.id}/unsuspend", None),
    ]
    for method, path, body in calls:
        response = await client.request(method, API + path, json=body, headers=user.auth)
        await _error(response, 403, "forbidden")
        response = await client.request(method, API + path, json=body)
        await _error(response, 401, "unauthorized")
    assert (await db.fetchval("SELECT status FROM reports WHERE id = $1",
                              uuid.UUID(report_id))) == "open"


async def test_queue_lists_reporter_target_and_counts(client, db, config):
    moderator = await make_user(db, config, role="moderator")
    target = await make_user(db, config, name="Reported One")
    reporters = [await make_user(db, config) for _ in range(3)]
    ids = [await _report(client, r, target, "fake_profile") for r in reporters]

    reports = await _open_reports(client, moderator, target)
    assert [r["report_id"] for r in reports] == ids  # oldest first
    first = reports[0]
    assert first["reporter"]["user_id"] == str(reporters[0].id)
    assert first["reporter"]["email"] == reporters[0].email
    assert first["reported_user"] == {
        "user_id": str(target.id), "display_name": "Reported One", "email": target.email,
        "role": "user", "is_suspended": False, "open_reports": 3, "total_reports": 3,
    }
    assert first["status"] == "open" and first["resolution"] is None

    seen, cursor = [], ""
    while True:
        response = await client.get(
            f"{API}/moderation/reports?reported_user_id={target.id}&limit=2{cursor}",
            headers=moderator.auth,
        )
        page = await response.json()
        seen += [r["report_id"] for r in page["reports"]]
        if page["next_after"] is None:
            break
        cursor = f"&after={page['next_after']}"
    assert seen == ids

    response = await client.get(f"{API}/moderation/reports/{ids[1]}", headers=moderator.auth)
    assert (await response.json())["report_id"] == ids[1]
    for bad in ("?status=closed", "?limit=0", f"?after={uuid.uuid4()}", "?after=x"):
        response = await client.get(f"{API}/moderation/reports{bad}", headers=moderator.auth)
        await _error(response, 400, "validation_failed")
    response = await client.get(f"{API}/moderation/reports/{uuid.uuid4()}",
                                headers=moderator.auth)
    await _error(response, 404, "not_found")


# -- resolving ------------------------------------------------------------------


async def test_dismiss_and_warn_resolve_only_that_report(client, db, config):
    moderator = await make_user(db, config, role="moderator")
    target = await make_user(db, config)
    first_reporter, second_reporter = await make_user(db, config), await make_user(db, config)
    dismissed = await _report(client, first_reporter, target)
    warned = await _report(client, second_reporter, target, "harassment")
    third = await _report(client, second_reporter, target)

    response = await client.post(f"{API}/moderation/reports/{dismissed}/resolve",
                                 json={"action": "dismiss"}, headers=moderator.auth)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["resolved_report_ids"] == [dismissed] and body["suspension"] is None
    assert body["report"]["status"] == "resolved" and body["report"]["resolution"] == "dismiss"
    assert body["report"]["resolved_by"] == str(moderator.id)
    assert body["report"]["resolved_at"] is not None

    (notice,) = await _notifications(client, first_reporter)
    assert notice["kind"] == "report_resolved"
    assert notice["payload"] == {"report_id": dismissed, "action_taken": False}
    assert await _notifications(client, target) == []

    response = await client.post(f"{API}/moderation/reports/{warned}/resolve",
                                 json={"action": "warn"}, headers=moderator.auth)
    assert response.status == 200
    (warning,) = await _notifications(client, target)
    assert warning["kind"] == "warning"
    assert warning["payload"] == {"report_id": warned, "reason": "harassment"}
    assert (await _notifications(client, second_reporter))[0]["payload"] == {
        "report_id": warned, "action_taken": True
    }
    # The user is warned, not suspended, and the third report is still open.
    assert (await client.get(f"{API}/notifications", headers=target.auth)).status == 200
    assert [r["report_id"] for r in await _open_reports(client, moderator, target)] == [third]

    response = await client.post(f"{API}/moderation/reports/{dismissed}/resolve",
                                 json={"action": "warn"}, headers=moderator.auth)
    await _error(response, 409, "already_resolved")
    for body in ({"action": "delete"}, {}, {"action": "warn", "until": _later(days=1)},
                 {"action": "suspend"}, {"action": "suspend", "until": _later(days=-1)},
                 {"action": "suspend", "until": "tomorrow"},
                 {"action": "ban", "until": _later(days=1)}):
        response = await client.post(f"{API}/moderation/reports/{third}/resolve", json=body,
                                     headers=moderator.auth)
        await _error(response, 400, "validation_failed")
    response = await client.post(f"{API}/moderation/reports/{uuid.uuid4()}/resolve",
                                 json={"action": "dismiss"}, headers=moderator.auth)
    await _error(response, 404, "not_found")


async def test_suspend_through_a_report_closes_every_open_report(client, db, config):
    moderator = await make_user(db, config, role="moderator")
    target = await make_user(db, config)
    partner = await make_user(db, config)
    match_id = await _match(db, target, partner)
    reporters = [await make_user(db, config) for _ in range(2)]
    report_ids = [await _report(client, r, target) for r in reporters]
    await db.execute("INSERT INTO refresh_token_families (user_id) VALUES ($1)", target.id)
    until = _later(days=3)

    response = await client.post(
        f"{API}/moderation/reports/{report_ids[1]}/resolve",
        json={"action": "suspend", "until": until}, headers=moderator.auth,
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert sorted(body["resolved_report_ids"]) == sorted(report_ids)
    suspension = body["suspension"]
    assert dt.datetime.fromisoformat(suspension["until"]) == dt.datetime.fromisoformat(until)
    assert suspension["is_ban"] is False and suspension["report_id"] == report_ids[1]
    assert suspension["created_by"] == str(moderator.id)
    assert body["report"]["reported_user"]["is_suspended"] is True

    assert await _open_reports(client, moderator, target) == []
    rows = await db.fetch("SELECT resolution FROM reports WHERE reported_user_id = $1", target.id)
    assert {r["resolution"] for r in rows} == {"suspend"}
    for reporter in reporters:
        (notice,) = await _notifications(client, reporter)
        assert notice["payload"]["action_taken"] is True

    match = await db.fetchrow("SELECT ended_at, end_reason FROM matches WHERE id = $1", match_id)
    assert match["ended_at"] is not None and match["end_reason"] == "suspend"
    assert await db.fetchval(
        "SELECT count(*) FROM refresh_token_families WHERE user_id = $1 AND revoked_at IS NULL",
        target.id,
    ) == 0
    response = await client.get(f"{API}/notifications", headers=target.auth)
    await _error(response, 403, "suspended")
    kinds = await db.fetch("SELECT kind FROM notifications WHERE user_id = $1", target.id)
    assert [k["kind"] for k in kinds] == ["suspension"]


async def test_ban_through_a_report(client, db, config):
    moderator = await make_user(db, config, role="moderator")
    target = await make_user(db, config)
    partner = await make_user(db, config)
    match_id = await _match(db, target, partner)
    report_id = await _report(client, partner, target, "underage")
    response = await client.post(f"{API}/moderation/reports/{report_id}/resolve",
                                 json={"action": "ban"}, headers=moderator.auth)
    assert response.status == 200, await response.text()
    suspension = (await response.json())["suspension"]
    assert suspension["until"] is None and suspension["is_ban"] is True
    assert await db.fetchval("SELECT end_reason FROM matches WHERE id = $1", match_id) == "ban"
    response = await client.get(f"{API}/notifications", headers=target.auth)
    await _error(response, 403, "suspended")


async def test_moderators_cannot_act_on_moderators_or_themselves(client, db, config):
    moderator = await make_user(db, config, role="moderator")
    colleague = await make_user(db, config, role="moderator")
    for target in (moderator, colleague):
        response = await client.post(f"{API}/moderation/users/{target.id}/suspend",
                                     json={"reason": "x"}, headers=moderator.auth)
        await _error(response, 403, "forbidden")
    report_id = await _report(client, await make_user(db, config), colleague)
    response = await client.post(f"{API}/moderation/reports/{report_id}/resolve",
                                 json={"action": "ban"}, headers=moderator.auth)
    await _error(response, 403, "forbidden")
    against_me = await _report(client, await make_user(db, config), moderator)
    response = await client.post(f"{API}/moderation/reports/{against_me}/resolve",
                                 json={"action": "dismiss"}, headers=moderator.auth)
    await _error(response, 403, "forbidden")
    assert await db.fetchval(
        "SELECT count(*) FROM suspensions WHERE user_id = ANY($1::uuid[])",
        [moderator.id, colleague.id],
    ) == 0
    assert await db.fetchval("SELECT status FROM reports WHERE id = $1",
                             uuid.UUID(report_id)) == "open"


# -- direct suspension ---------------------------------------------------------


async def test_suspend_replace_and_unsuspend(client, db, config):
    moderator = await make_user(db, config, role="moderator")
    target = await make_user(db, config)
    path = f"{API}/moderation/users/{target.id}"

    for body in ({}, {"reason": ""}, {"reason": "x", "until": _later(hours=-1)},
                 {"reason": "x", "until": 5}):
        response = await client.post(f"{path}/suspend", json=body, headers=moderator.auth)
        await _error(response, 400, "validation_failed")

    response = await client.post(f"{path}/suspend", json={"reason": "spam",
                                 "until": _later(hours=2)}, headers=moderator.auth)
    assert response.status == 201, await response.text()
    first = await response.json()
    assert first["user_id"] == str(target.id) and first["reason"] == "spam"
    await _error(await client.get(f"{API}/notifications", headers=target.auth), 403, "suspended")

    # A second suspension replaces the first (now a ban), keeping history.
    response = await client.post(f"{path}/suspend", json={"reason": "again"},
                                 headers=moderator.auth)
    assert response.status == 200, await response.text()
    second = await response.json()
    assert second["is_ban"] is True and second["suspension_id"] != first["suspension_id"]
    rows = await db.fetch(
        "SELECT id, lifted_by FROM suspensions WHERE user_id = $1 ORDER BY created_at", target.id
    )
    assert [(str(r["id"]), r["lifted_by"]) for r in rows] == [
        (first["suspension_id"], moderator.id), (second["suspension_id"], None)
    ]

    response = await client.post(f"{path}/unsuspend", headers=moderator.auth)
    assert response.status == 204
    assert await db.fetchval("SELECT lifted_by FROM suspensions WHERE id = $1",
                             uuid.UUID(second["suspension_id"])) == moderator.id
    response = await client.get(f"{API}/notifications", headers=target.auth)
    assert response.status == 200
    response = await client.post(f"{path}/unsuspend", headers=moderator.auth)
    await _error(response, 409, "not_suspended")

    unknown = f"{API}/moderation/users/{uuid.uuid4()}"
    await _error(await client.post(f"{unknown}/suspend", json={"reason": "x"},
                                   headers=moderator.auth), 404, "not_found")
    await _error(await client.post(f"{unknown}/unsuspend", headers=moderator.auth),
                 404, "not_found")


async def test_expired_suspension_no_longer_applies(client, db, config):
    target = await make_user(db, config)
    await db.execute(
        "INSERT INTO suspensions (user_id, reason, until) VALUES ($1, 'x', now() - interval '1s')",
        target.id,
    )
    response = await client.get(f"{API}/notifications", headers=target.auth)
    assert response.status == 200
    moderator = await make_user(db, config, role="moderator")
    response = await client.post(f"{API}/moderation/users/{target.id}/unsuspend",
                                 headers=moderator.auth)
    await _error(response, 409, "not_suspended")


async def test_suspended_user_is_logged_out_and_hidden(client, db, config):
    moderator = await make_user(db, config, role="moderator")
    target = await make_user(db, config)
    viewer = await make_user(db, config)

    response = await _login(client, target)
    assert response.status == 200, await response.text()
    refresh = (await response.json())["refresh"]
    response = await client.get(f"{API}/users/{target.id}", headers=viewer.auth)
    assert response.status == 200

    response = await client.post(f"{API}/moderation/users/{target.id}/suspend",
                                 json={"reason": "spam", "until": _later(days=1)},
                                 headers=moderator.auth)
    assert response.status == 201

    await _error(await _login(client, target), 403, "suspended")
    await _error(await client.get(f"{API}/me", headers=target.auth), 403, "suspended")
    response = await client.post(f"{API}/auth/refresh", json={"refresh": refresh})
    assert response.status == 401
    response = await client.get(f"{API}/users/{target.id}", headers=viewer.auth)
    await _error(response, 404, "not_found")

    response = await client.post(f"{API}/moderation/users/{target.id}/unsuspend",
                                 headers=moderator.auth)
    assert response.status == 204
    response = await client.get(f"{API}/users/{target.id}", headers=viewer.auth)
    assert response.status == 200
    assert (await _login(client, target)).status == 200


async def _frame(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict:
    """The next frame of `kind`, skipping others (ready, presence, ...)."""
    while True:
        frame = await ws.receive_json(timeout=10)
        if frame["type"] == kind:
            return frame


async def test_suspension_closes_open_sockets_with_4003(db, config, platform, http):
    moderator = await make_user(db, config, role="moderator")
    target = await make_user(db, config)
    bystander = await make_user(db, config)
    match_id = await _match(db, target, bystander)
    sockets = [await http.ws_connect(f"/ws?token={target.token}") for _ in range(2)]
    other = await http.ws_connect(f"/ws?token={bystander.token}")
    opened = [*sockets, other]
    try:
        for ws in (*sockets, other):
            await ws.send_json({"type": "ping"})
            await _frame(ws, "pong")

        response = await http.post(f"{API}/moderation/users/{target.id}/suspend",
                                   json={"reason": "harassment"}, headers=moderator.auth)
        assert response.status == 201, await response.text()

        for ws in sockets:
            message = await ws.receive(timeout=10)
            while message.type == aiohttp.WSMsgType.TEXT:  # frames already in flight
                message = await ws.receive(timeout=10)
            assert message.type == aiohttp.WSMsgType.CLOSE
            assert message.data == 4003 and message.extra == "suspended"
        # The partner is told the match ended, and stays connected.
        assert await _frame(other, "unmatch") == {"type": "unmatch", "match_id": str(match_id)}
        await other.send_json({"type": "ping"})
        await _frame(other, "pong")
        # A new socket of the suspended user is refused.
        again = await http.ws_connect(f"/ws?token={target.token}")
        opened.append(again)
        message = await again.receive(timeout=10)
        while message.type == aiohttp.WSMsgType.TEXT:
            message = await again.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 4003
    finally:
        await asyncio.gather(*(ws.close() for ws in opened))


async def test_suspension_close_lands_through_its_job_when_the_push_is_lost(
    client, db, config, platform, http
):
    """`client` serves without the actor system, so its close after the
    commit reaches no socket: the durable job closes them anyway."""
    moderator = await make_user(db, config, role="moderator")
    target = await make_user(db, config)
    ws = await http.ws_connect(f"/ws?token={target.token}")
    try:
        await ws.send_json({"type": "ping"})
        await _frame(ws, "pong")
        response = await client.post(f"{API}/moderation/users/{target.id}/suspend",
                                     json={"reason": "spam"}, headers=moderator.auth)
        assert response.status == 201, await response.text()
        message = await ws.receive(timeout=60)
        while message.type == aiohttp.WSMsgType.TEXT:
            message = await ws.receive(timeout=60)
        assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 4003

        async def job_done() -> bool:
            status = await db.fetchval(
                "SELECT status FROM jobs WHERE kind = 'close_sockets'"
                " AND payload->>'user_id' = $1", str(target.id))
            return status == "done"

        await eventually(job_done, within=30)
    finally:
        await ws.close()
