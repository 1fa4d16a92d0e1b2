"""Profiles and catalogues: `GET /me`, `PATCH /me/profile`,
`GET /users/{user_id}`, `GET /interests`, `GET /campuses`.

The public profile is cached as `user_profile:{id}` (5 min), but only its
body: whether the viewer may see it (hidden, blocked either way, suspended,
unverified) is checked against PostgreSQL on every request, so a block or a
suspension takes effect at once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from unimatch.domain.errors import NotFound
from unimatch.http.keys import CACHE, DB
from unimatch.http.permissions import IsAuthenticated, IsVerified, principal_of, requires
from unimatch.http.validation import Fields, json_response, parse_uuid, path_uuid, read_json
from unimatch.storage import profiles
from unimatch.storage.cache import PROFILE_TTL, Cache, feed_key, profile_key

routes = web.RouteTableDef()

PATCHABLE = (
    "display_name", "bio", "birthdate", "gender", "interested_in", "campus", "year_of_study",
    "interests",
)
MAX_AGE = 120
_CATALOGUE_HEADERS = {"Cache-Control": "public, max-age=3600"}


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


async def forget_profile(cache: Cache, user_id: object) -> None:
    """A profile changed: its cached public body and its owner's feed are stale."""
    await cache.delete(profile_key(user_id), feed_key(user_id))


def _gender(value: Any) -> str:
    if value not in profiles.GENDERS:
        raise ValueError("items must be one of: " + ", ".join(profiles.GENDERS))
    return value


def _check_birthdate(fields: Fields, birthdate: dt.date | None, now: dt.date) -> None:
    if birthdate is None:
        return
    if birthdate > now:
        fields.error("birthdate", "may not be in the future")
    elif profiles.age_on(birthdate, now) < profiles.MIN_AGE:
        fields.error("birthdate", f"you must be at least {profiles.MIN_AGE} to use UniMatch")
    elif profiles.age_on(birthdate, now) > MAX_AGE:
        fields.error("birthdate", "is not a plausible birthdate")


@routes.get("/me")
@requires(IsAuthenticated)
async def me(request: web.Request) -> web.Response:
    profile = await profiles.load_own_profile(request.app[DB], principal_of(request).user_id)
    if profile is None:
        raise NotFound("no such user")
    return json_response(profile.as_dict())


@routes.patch("/me/profile")
@requires(IsAuthenticated)
async def update_profile(request: web.Request) -> web.Response:
    """Any subset of the fields; a field that is absent or null stays as it is."""
    db = request.app[DB]
    body = await read_json(request)
    catalogues = await profiles.catalogues(db)
    fields = Fields(body)
    for name in body:
        if name not in PATCHABLE:
            fields.error(name, "unknown field: one of " + ", ".join(PATCHABLE))
    display_name = fields.string("display_name", required=False, min_len=1, max_len=50)
    bio = fields.string("bio", required=False, max_len=500)
    birthdate = fields.date("birthdate", required=False)
    _check_birthdate(fields, birthdate, today())
    gender = fields.choice("gender", profiles.GENDERS, required=False)
    interested_in = fields.items("interested_in", _gender, required=False, min_items=1)
    campus = fields.uuid("campus", required=False)
    if campus is not None and campus not in catalogues.campus_ids:
        fields.error("campus", "unknown campus: use an id from GET /api/v1/campuses")
    year_of_study = fields.integer("year_of_study", required=False, minimum=1, maximum=7)
    interests = fields.items(
        "interests", parse_uuid, required=False,
        min_items=profiles.MIN_INTERESTS, max_items=profiles.MAX_INTERESTS,
    )
    if interests is not None:
        unknown = [str(i) for i in interests if i not in catalogues.interest_ids]
        if unknown:
            fields.error(
                "interests",
                "unknown interests (use ids from GET /api/v1/interests): " + ", ".join(unknown),
            )
    fields.check()

    user_id = principal_of(request).user_id
    changes = profiles.ProfileChanges(
        display_name=display_name,
        bio=bio,
        birthdate=birthdate,
        gender=gender,
        campus_id=campus,
        year_of_study=year_of_study,
        interested_in=interested_in,
        interests=interests,
    )
    updated = await profiles.update_profile(db, user_id, changes)
    await forget_profile(request.app[CACHE], user_id)
    return json_response(updated.as_dict())


@routes.get("/users/{user_id}")
@requires(IsVerified)
async def public_profile(request: web.Request) -> web.Response:
    db, cache = request.app[DB], request.app[CACHE]
    target = path_uuid(request, "user_id")
    viewer = principal_of(request).user_id
    cached = await cache.get_json(profile_key(target), cache="user_profile")
    if cached is not None:
        if not await profiles.can_view(db, target, viewer):
            raise NotFound("no such user")
        return json_response(cached)
    body = await profiles.public_profile(db, target, viewer, today())
    if body is None:
        raise NotFound("no such user")
    await cache.set_json(profile_key(target), body, PROFILE_TTL)
    return json_response(body)


@routes.get("/interests")
async def interests(request: web.Request) -> web.Response:
    catalogues = await profiles.catalogues(request.app[DB])
    return json_response({"results": catalogues.interests}, headers=_CATALOGUE_HEADERS)


@routes.get("/campuses")
async def campuses(request: web.Request) -> web.Response:
    catalogues = await profiles.catalogues(request.app[DB])
    return json_response({"results": catalogues.campuses}, headers=_CATALOGUE_HEADERS)
