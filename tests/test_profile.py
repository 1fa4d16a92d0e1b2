"""Profiles: GET /me with completeness, PATCH /me/profile validation,
public profiles with their visibility rules and cache, catalogues."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests import factories
from tests.factories import catalogue_ids, make_user
from unimatch.domain.config import Config
from unimatch.http.app import create_app
from unimatch.storage.cache import Cache, feed_key, profile_key
from unimatch.storage.pg import Database
from unimatch.storage.users import load_principal

ALL_MISSING = [
    "bio", "birthdate", "gender", "interested_in", "campus", "year_of_study", "interests",
    "photos",
]


@pytest.fixture
async def client(aiohttp_client, config: Config) -> TestClient:
    return await aiohttp_client(create_app(config))


def _years_ago(years: int, today: dt.date) -> dt.date:
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


async def _error(response, status: int, code: str) -> dict:
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["error"] == code, body
    return body


async def _patch(client: TestClient, user: factories.TestUser, body: dict[str, Any]):
    return await client.patch("/api/v1/me/profile", json=body, headers=user.auth)


async def _full_patch(db: Database) -> dict[str, Any]:
    campuses, interests = await catalogue_ids(db)
    return {
        "display_name": "Njeri",
        "bio": "Engineering, hiking and benga on Sundays",
        "birthdate": "2002-03-04",
        "gender": "woman",
        "interested_in": ["man", "nonbinary"],
        "campus": str(campuses[1]),
        "year_of_study": 3,
        "interests": [str(i) for i in interests[:4]],
    }


async def test_me_of_a_complete_profile(client: TestClient, db: Database, config: Config) -> None:
    user = await make_user(db, config)
    response = await client.get("/api/v1/me", headers=user.auth)
    assert response.status == 200
    body = await response.json()
    assert body["profile_complete"] is True
    assert body["missing"] == []
    assert body["user"]["user_id"] == str(user.id)
    assert body["user"]["email"] == user.email
    profile = body["profile"]
    assert profile["display_name"] == user.display_name
    assert profile["birthdate"] == "2003-05-17"
    assert profile["campus"]["id"] == str(user.campus_id)
    assert sorted(i["id"] for i in profile["interests"]) == sorted(map(str, user.interests))
    assert len(profile["photos"]) == 1
    assert profile["photos"][0]["url"].startswith("/media/")
    assert "password_hash" not in str(body)


async def test_missing_fields_shrink_as_the_profile_fills_in(
    client: TestClient, db: Database, config: Config
) -> None:
    user = await make_user(db, config, complete=False)
    body = await (await client.get("/api/v1/me", headers=user.auth)).json()
    assert body["profile_complete"] is False
    assert body["missing"] == ALL_MISSING

    response = await _patch(client, user, {"bio": "hello", "interests": None})
    body = await response.json()
    assert body["missing"] == [m for m in ALL_MISSING if m != "bio"]

    response = await _patch(client, user, await _full_patch(db))
    assert response.status == 200
    body = await response.json()
    assert body["missing"] == ["photos"]
    assert body["profile_complete"] is False
    principal = await load_principal(db, user.id)
    assert principal is not None and principal.profile_complete is False

    await db.execute(
        """INSERT INTO photos (user_id, filename, content_type, width, height, size_bytes)
           VALUES ($1, $2, 'image/jpeg', 10, 10, 10)""",
        user.id, f"{uuid.uuid4().hex}.jpg",
    )
    body = await (await client.get("/api/v1/me", headers=user.auth)).json()
    assert body["missing"] == []
    assert body["profile_complete"] is True
    principal = await load_principal(db, user.id)
    assert principal is not None and principal.profile_complete is True


async def test_patch_returns_the_updated_profile_and_keeps_other_fields(
    client: TestClient, db: Database, config: Config
) -> None:
    user = await make_user(db, config, complete=False)
    full = await _full_patch(db)
    body = await (await _patch(client, user, full)).json()
    profile = body["profile"]
    assert profile["display_name"] == "Njeri"
    assert profile["bio"] == full["bio"]
    assert profile["birthdate"] == "2002-03-04"
    assert profile["gender"] == "woman"
    assert profile["interested_in"] == ["man", "nonbinary"]
    assert profile["campus"]["id"] == full["campus"]
    assert profile["campus"]["name"]
    assert profile["year_of_study"] == 3
    assert sorted(i["id"] for i in profile["interests"]) == sorted(full["interests"])

    # A subset changes only itself; lists are replaced whole.
    response = await _patch(client, user, {"year_of_study": 5, "interested_in": ["woman"]})
    body = await response.json()
    assert body["profile"]["year_of_study"] == 5
    assert body["profile"]["interested_in"] == ["woman"]
    assert body["profile"]["bio"] == full["bio"]
    assert len(body["profile"]["interests"]) == 4
    me = await (await client.get("/api/v1/me", headers=user.auth)).json()
    assert me["profile"] == body["profile"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("display_name", ""),
        ("display_name", "   "),
        ("display_name", "x" * 51),
        ("display_name", 7),
        ("bio", "x" * 501),
        ("birthdate", "2003-13-01"),
        ("birthdate", "17/05/2003"),
        ("birthdate", "2999-01-01"),
        ("birthdate", "1850-01-01"),
        ("gender", "other"),
        ("gender", "Woman"),
        ("interested_in", []),
        ("interested_in", ["alien"]),
        ("interested_in", "woman"),
        ("interested_in", ["man", "man"]),
        ("campus", "not-a-uuid"),
        ("campus", str(uuid.uuid4())),
        ("year_of_study", 0),
        ("year_of_study", 8),
        ("year_of_study", "second"),
        ("year_of_study", True),
        ("interests", "football"),
        ("interests", [str(uuid.uuid4())] * 3),
        ("interests", [str(uuid.uuid4()) for _ in range(3)]),
        ("interests", ["nope", "nope2", "nope3"]),
        ("email", "someone@uon.ac.ke"),
    ],
)
async def test_patch_rejects_bad_values_naming_the_field(
    client: TestClient, db: Database, config: Config, field: str, value: Any
) -> None:
    user = await make_user(db, config)
    before = await (await client.get("/api/v1/me", headers=user.auth)).json()
    body = await _error(await _patch(client, user, {field: value}), 400, "validation_failed")
    assert list(body["detail"]) == [field]
    after = await (await client.get("/api/v1/me", headers=user.auth)).json()
    assert after == before


async def test_interests_must_be_3_to_10_catalogue_ids(
    client: TestClient, db: Database, config: Config
) -> None:
    user = await make_user(db, config)
    _, interests = await catalogue_ids(db)
    ids = [str(i) for i in interests]
    for count, ok in ((2, False), (3, True), (10, True), (11, False)):
        response = await _patch(client, user, {"interests": ids[:count]})
        assert (response.status == 200) is ok, (count, await response.text())
    unknown = str(uuid.uuid4())
    body = await _error(
        await _patch(client, user, {"interests": [*ids[:3], unknown]}), 400, "validation_failed"
    )
    assert unknown in body["detail"]["interests"][0]


async def test_users_must_be_18(client: TestClient, db: Database, config: Config) -> None:
    user = await make_user(db, config)
    today = _today()
    eighteen_today = _years_ago(18, today)
    response = await _patch(client, user, {"birthdate": eighteen_today.isoformat()})
    assert response.status == 200, await response.text()
    one_day_short = eighteen_today + dt.timedelta(days=1)
    body = await _error(
        await _patch(client, user, {"birthdate": one_day_short.isoformat()}),
        400, "validation_failed",
    )
    assert "18" in body["detail"]["birthdate"][0]


async def test_patch_reports_every_bad_field_at_once(
    client: TestClient, db: Database, config: Config
) -> None:
    user = await make_user(db, config)
    response = await _patch(
        client, user, {"gender": "x", "year_of_study": 9, "birthdate": "2015-01-01"}
    )
    body = await _error(response, 400, "validation_failed")
    assert set(body["detail"]) == {"gender", "year_of_study", "birthdate"}
    malformed = await client.patch(
        "/api/v1/me/profile", data=b"[1, 2]", headers=user.auth
    )
    await _error(malformed, 400, "invalid_json")


async def test_profile_change_clears_its_caches(
    client: TestClient, db: Database, config: Config, cache: Cache
) -> None:
    user = await make_user(db, config)
    viewer = await make_user(db, config)
    first = await (await client.get(f"/api/v1/users/{user.id}", headers=viewer.auth)).json()
    assert await cache.get_json(profile_key(user.id)) == first
    await cache.set_json(feed_key(user.id), {"results": []}, 600)

    assert (await _patch(client, user, {"display_name": "Renamed"})).status == 200
    assert await cache.get_json(profile_key(user.id)) is None
    assert await cache.get_json(feed_key(user.id)) is None
    again = await (await client.get(f"/api/v1/users/{user.id}", headers=viewer.auth)).json()
    assert again["display_name"] == "Renamed"


async def test_public_profile_shows_public_fields_only(
    client: TestClient, db: Database, config: Config
) -> None:
    user = await make_user(db, config, birthdate=dt.date(2001, 1, 2))
    viewer = await make_user(db, config)
    response = await client.get(f"/api/v1/users/{user.id}", headers=viewer.auth)
    assert response.status == 200
    body = await response.json()
    assert body["user_id"] == str(user.id)
    assert body["display_name"] == user.display_name
    assert body["age"] == _today().year - 2001 - int((_today().month, _today().day) < (1, 2))
    assert body["campus"]["id"] == str(user.campus_id)
    assert len(body["interests"]) == 3
    assert len(body["photos"]) == 1
    for private in ("email", "birthdate", "password_hash", "role"):
        assert private not in body


async def test_public_profile_is_404_when_hidden_suspended_or_unverified(
    client: TestClient, db: Database, config: Config
) -> None:
    viewer = await make_user(db, config)
    hidden = await make_user(db, config, visible=False)
    unverified = await make_user(db, config, verified=False)
    suspended = await make_user(db, config)
    await db.execute("INSERT INTO suspensions (user_id, reason) VALUES ($1, 'x')", suspended.id)
    for user in (hidden, unverified, suspended):
        response = await client.get(f"/api/v1/users/{user.id}", headers=viewer.auth)
        await _error(response, 404, "not_found")
    for missing in (uuid.uuid4(), "not-a-uuid"):
        response = await client.get(f"/api/v1/users/{missing}", headers=viewer.auth)
        await _error(response, 404, "not_found")


async def test_blocks_and_suspensions_apply_at_once_despite_the_cache(
    client: TestClient, db: Database, config: Config, cache: Cache
) -> None:
    user = await make_user(db, config)
    blocker = await make_user(db, config)
    blocked = await make_user(db, config)
    path = f"/api/v1/users/{user.id}"
    for viewer in (blocker, blocked):
        assert (await client.get(path, headers=viewer.auth)).status == 200
    assert await cache.get_json(profile_key(user.id)) is not None

    # The user blocks one viewer and is blocked by the other: hidden both ways.
    await db.execute(
        "INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2), ($3, $1)",
        user.id, blocked.id, blocker.id,
    )
    for viewer in (blocker, blocked):
        await _error(await client.get(path, headers=viewer.auth), 404, "not_found")

    bystander = await make_user(db, config)
    assert (await client.get(path, headers=bystander.auth)).status == 200
    await db.execute("INSERT INTO suspensions (user_id, reason) VALUES ($1, 'x')", user.id)
    await _error(await client.get(path, headers=bystander.auth), 404, "not_found")


async def test_permissions_per_route(client: TestClient, db: Database, config: Config) -> None:
    target = await make_user(db, config)
    unverified = await make_user(db, config, verified=False, complete=False)
    # Onboarding works before verification...
    assert (await client.get("/api/v1/me", headers=unverified.auth)).status == 200
    assert (await _patch(client, unverified, {"bio": "hi"})).status == 200
    # ...seeing others does not.
    response = await client.get(f"/api/v1/users/{target.id}", headers=unverified.auth)
    await _error(response, 403, "unverified")

    suspended = await make_user(db, config)
    await db.execute("INSERT INTO suspensions (user_id, reason) VALUES ($1, 'x')", suspended.id)
    await _error(await client.get("/api/v1/me", headers=suspended.auth), 403, "suspended")
    await _error(await _patch(client, suspended, {"bio": "x"}), 403, "suspended")

    await _error(await client.get("/api/v1/me"), 401, "unauthorized")
    await _error(
        await client.patch("/api/v1/me/profile", json={"bio": "x"}), 401, "unauthorized"
    )
    await _error(await client.get(f"/api/v1/users/{target.id}"), 401, "unauthorized")


async def test_catalogues(client: TestClient, db: Database) -> None:
    campuses, interests = await catalogue_ids(db)
    response = await client.get("/api/v1/campuses")
    assert response.status == 200
    results = (await response.json())["results"]
    assert {r["id"] for r in results} == {str(c) for c in campuses}
    assert "University of Nairobi" in {r["name"] for r in results}
    assert all({"id", "name", "city"} <= set(r) for r in results)

    response = await client.get("/api/v1/interests")
    assert response.status == 200
    results = (await response.json())["results"]
    assert {r["id"] for r in results} == {str(i) for i in interests}
    assert all({"id", "name", "category"} <= set(r) for r in results)
