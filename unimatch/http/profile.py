"""Profiles and catalogues: `GET /me`, `PATCH /me/profile`,
`GET /users/{user_id}`, `GET /interests`, `GET /campuses`.

The public profile is cached as `user_profile:{id}` (5 min), but only its
body: whether the viewer may see it (hidden, blocked either way, suspended,
unverified) is checked against PostgreSQL on every request, so a block or a
suspension takes effect at once.
"""

from __future__ import annotations

from aiohttp import web

from unimatch.domain.errors import NotFound, ValidationFailed
from unimatch.http.keys import CACHE, DB
from unimatch.http.permissions import IsAuthenticated, IsVerified, principal_of, requires
from unimatch.http.validation import json_response, parse_body, path_uuid
from unimatch.schemas import profile as schema
from unimatch.schemas.profile import today
from unimatch.storage import profiles
from unimatch.storage.cache import PROFILE_TTL, Cache, feed_key, profile_key

routes = web.RouteTableDef()

_CATALOGUE_HEADERS = {"Cache-Control": "public, max-age=3600"}


async def forget_profile(cache: Cache, user_id: object) -> None:
    """A profile changed: its cached public body and its owner's feed are stale."""
    await cache.delete(profile_key(user_id), feed_key(user_id))


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
    patch = await parse_body(request, schema.ProfilePatch)
    catalogues = await profiles.catalogues(db)
    problems: dict[str, list[str]] = {}
    if patch.campus is not None and patch.campus not in catalogues.campus_ids:
        problems["campus"] = ["unknown campus: use an id from GET /api/v1/campuses"]
    unknown = [str(i) for i in patch.interests or () if i not in catalogues.interest_ids]
    if unknown:
        problems["interests"] = [
            "unknown interests (use ids from GET /api/v1/interests): " + ", ".join(unknown)
        ]
    if problems:
        raise ValidationFailed(problems)

    user_id = principal_of(request).user_id
    changes = profiles.ProfileChanges(
        display_name=patch.display_name,
        bio=patch.bio,
        birthdate=patch.birthdate,
        gender=patch.gender,
        campus_id=patch.campus,
        year_of_study=patch.year_of_study,
        interested_in=None if patch.interested_in is None else list(patch.interested_in),
        interests=patch.interests,
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
