"""Profiles, photos and the catalogues they refer to.

Each screen is one query: `OWN_PROFILE` (GET /me) and `PUBLIC_PROFILE`
(GET /users/{id}) aggregate interests, "interested in" and photos in
subqueries. Completeness comes from `users.PROFILE_COMPLETE`, the one
definition the permission checks use too; `missing_fields` names what is
absent by the same rules.
"""

from __future__ import annotations

import datetime as dt
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from unimatch.domain.errors import Conflict
from unimatch.schemas import limits, vocabulary
from unimatch.schemas.profile import age_on
from unimatch.storage.pg import Database
from unimatch.storage.users import ACTIVE_SUSPENSION, PROFILE_COMPLETE

GENDERS = vocabulary.GENDERS
MIN_INTERESTS = limits.INTERESTS_MIN
MAX_INTERESTS = limits.INTERESTS_MAX
MIN_AGE = limits.MIN_AGE
# The order `missing` lists fields in, the order of the PATCH body.
PROFILE_FIELDS = (
    "display_name", "bio", "birthdate", "gender", "interested_in", "campus", "year_of_study",
    "interests", "photos",
)

_PROFILE_PARTS = """
    u.display_name, u.bio, u.birthdate, u.gender, u.year_of_study,
    CASE WHEN c.id IS NULL THEN NULL
         ELSE jsonb_build_object('id', c.id, 'name', c.name, 'city', c.city) END AS campus,
    ARRAY(SELECT ii.gender FROM user_interested_in ii WHERE ii.user_id = u.id
          ORDER BY array_position(ARRAY['woman', 'man', 'nonbinary'], ii.gender))
        AS interested_in,
    COALESCE((SELECT jsonb_agg(jsonb_build_object('id', i.id, 'name', i.name,
                                                  'category', i.category) ORDER BY i.name)
              FROM user_interests ui JOIN interests i ON i.id = ui.interest_id
              WHERE ui.user_id = u.id), '[]'::jsonb) AS interests,
    COALESCE((SELECT jsonb_agg(jsonb_build_object('photo_id', p.id, 'filename', p.filename,
                                                  'width', p.width, 'height', p.height)
                               ORDER BY p.created_at, p.id)
              FROM photos p WHERE p.user_id = u.id), '[]'::jsonb) AS photos"""

OWN_PROFILE = f"""
SELECT u.id, u.email, u.role, u.is_verified, u.is_visible, u.created_at, {_PROFILE_PARTS},
       {PROFILE_COMPLETE.format(u="u")} AS profile_complete
FROM users u LEFT JOIN campuses c ON c.id = u.campus_id
WHERE u.id = $1"""

# Who may be seen by viewer $2: verified, visible, not suspended, no block
# either way. Checked on every request, never cached.
_VIEWABLE = f"""
    u.is_verified AND u.is_visible AND NOT {ACTIVE_SUSPENSION.format(user="u.id")}
    AND NOT EXISTS (SELECT 1 FROM blocks b
                    WHERE (b.blocker_id = u.id AND b.blocked_id = $2)
                       OR (b.blocker_id = $2 AND b.blocked_id = u.id))"""

PUBLIC_PROFILE = f"""
SELECT u.id, {_PROFILE_PARTS}
FROM users u LEFT JOIN campuses c ON c.id = u.campus_id
WHERE u.id = $1 AND {_VIEWABLE}"""

CAN_VIEW = f"SELECT EXISTS (SELECT 1 FROM users u WHERE u.id = $1 AND {_VIEWABLE})"

# NULL means "not given": the PATCH semantics of "any subset of the fields".
UPDATE_PROFILE = """
UPDATE users SET
    display_name = COALESCE($2, display_name),
    bio = COALESCE($3, bio),
    birthdate = COALESCE($4, birthdate),
    gender = COALESCE($5, gender),
    campus_id = COALESCE($6, campus_id),
    year_of_study = COALESCE($7, year_of_study),
    updated_at = now()
WHERE id = $1"""

CLEAR_INTERESTED_IN = "DELETE FROM user_interested_in WHERE user_id = $1"
SET_INTERESTED_IN = """
INSERT INTO user_interested_in (user_id, gender) SELECT $1, unnest($2::text[])"""

CLEAR_INTERESTS = "DELETE FROM user_interests WHERE user_id = $1"
SET_INTERESTS = """
INSERT INTO user_interests (user_id, interest_id) SELECT $1, unnest($2::uuid[])"""

LOCK_USER = "SELECT id FROM users WHERE id = $1 FOR UPDATE"
COUNT_PHOTOS = "SELECT count(*) FROM photos WHERE user_id = $1"
INSERT_PHOTO = """
INSERT INTO photos (user_id, filename, content_type, width, height, size_bytes)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id"""
DELETE_PHOTO = "DELETE FROM photos WHERE id = $1 AND user_id = $2 RETURNING filename"

CAMPUSES = "SELECT id, slug, name, city, email_domain FROM campuses ORDER BY name"
INTERESTS = "SELECT id, slug, name, category FROM interests ORDER BY category, name"


def photo_url(filename: str) -> str:
    return f"/media/{filename}"


def _photos(raw: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"photo_id": p["photo_id"], "url": photo_url(p["filename"]),
         "width": p["width"], "height": p["height"]}
        for p in raw
    ]


def missing_fields(profile: dict[str, Any]) -> list[str]:
    """What keeps a profile from being complete, by the rules of
    `users.PROFILE_COMPLETE`, in the order of `PROFILE_FIELDS`."""
    missing = []
    for name in PROFILE_FIELDS:
        value = profile.get(name)
        if name == "interests":
            absent = len(value or ()) < MIN_INTERESTS
        elif name in ("photos", "interested_in"):
            absent = not value
        else:
            absent = value is None
        if absent:
            missing.append(name)
    return missing


def _profile_body(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "display_name": row["display_name"],
        "bio": row["bio"],
        "gender": row["gender"],
        "interested_in": list(row["interested_in"]),
        "campus": row["campus"],
        "year_of_study": row["year_of_study"],
        "interests": row["interests"],
        "photos": _photos(row["photos"]),
    }


@dataclass(frozen=True)
class OwnProfile:
    user: dict[str, Any]
    profile: dict[str, Any]
    profile_complete: bool
    missing: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "profile": self.profile,
            "profile_complete": self.profile_complete,
            "missing": self.missing,
        }


async def _own_profile(conn: Any, user_id: uuid.UUID) -> OwnProfile | None:
    row = await conn.fetchrow(OWN_PROFILE, user_id)
    if row is None:
        return None
    birthdate = row["birthdate"]
    profile = {
        **_profile_body(row),
        "birthdate": birthdate.isoformat() if birthdate else None,
        "is_visible": row["is_visible"],
    }
    user = {
        "user_id": str(row["id"]),
        "email": row["email"],
        "role": row["role"],
        "is_verified": row["is_verified"],
        "created_at": row["created_at"].isoformat(),
    }
    return OwnProfile(user, profile, row["profile_complete"], missing_fields(profile))


async def load_own_profile(db: Database, user_id: uuid.UUID) -> OwnProfile | None:
    async with db.connection() as conn:
        return await _own_profile(conn, user_id)


@dataclass(frozen=True)
class ProfileChanges:
    """The fields a PATCH gave; None means "leave as it is"."""

    display_name: str | None = None
    bio: str | None = None
    birthdate: dt.date | None = None
    gender: str | None = None
    campus_id: uuid.UUID | None = None
    year_of_study: int | None = None
    interested_in: list[str] | None = None
    interests: list[uuid.UUID] | None = None


async def update_profile(
    db: Database, user_id: uuid.UUID, changes: ProfileChanges
) -> OwnProfile:
    """Apply `changes` in one transaction and return the profile as it is now."""
    async with db.transaction() as conn:
        await conn.execute(
            UPDATE_PROFILE, user_id, changes.display_name, changes.bio, changes.birthdate,
            changes.gender, changes.campus_id, changes.year_of_study,
        )
        if changes.interested_in is not None:
            await conn.execute(CLEAR_INTERESTED_IN, user_id)
            await conn.execute(SET_INTERESTED_IN, user_id, changes.interested_in)
        if changes.interests is not None:
            await conn.execute(CLEAR_INTERESTS, user_id)
            await conn.execute(SET_INTERESTS, user_id, changes.interests)
        profile = await _own_profile(conn, user_id)
    assert profile is not None
    return profile


async def public_profile(
    db: Database, user_id: uuid.UUID, viewer_id: uuid.UUID, today: dt.date
) -> dict[str, Any] | None:
    """The public profile of `user_id` as `viewer_id` may see it, or None."""
    row = await db.read().fetchrow(PUBLIC_PROFILE, user_id, viewer_id)
    if row is None:
        return None
    birthdate = row["birthdate"]
    return {
        "user_id": str(row["id"]),
        **_profile_body(row),
        "age": age_on(birthdate, today) if birthdate else None,
    }


async def can_view(db: Database, user_id: uuid.UUID, viewer_id: uuid.UUID) -> bool:
    return bool(await db.fetchval(CAN_VIEW, user_id, viewer_id))


# -- photos ---------------------------------------------------------------------


def too_many_photos(max_photos: int) -> Conflict:
    return Conflict(f"at most {max_photos} photos: delete one first", code="too_many_photos")


async def add_photo(
    db: Database,
    user_id: uuid.UUID,
    *,
    filename: str,
    content_type: str,
    width: int,
    height: int,
    size_bytes: int,
    max_photos: int,
) -> uuid.UUID:
    """Record a stored photo; 409 `too_many_photos` past `max_photos`. The
    user row lock makes two concurrent uploads count one after the other."""
    async with db.transaction() as conn:
        await conn.execute(LOCK_USER, user_id)
        if await conn.fetchval(COUNT_PHOTOS, user_id) >= max_photos:
            raise too_many_photos(max_photos)
        photo_id: uuid.UUID = await conn.fetchval(
            INSERT_PHOTO, user_id, filename, content_type, width, height, size_bytes
        )
    return photo_id


async def photo_count(db: Database, user_id: uuid.UUID) -> int:
    return int(await db.fetchval(COUNT_PHOTOS, user_id))


async def delete_photo(db: Database, user_id: uuid.UUID, photo_id: uuid.UUID) -> str | None:
    """Delete the user's photo row; its file name, or None when the user has
    no such photo."""
    filename: str | None = await db.fetchval(DELETE_PHOTO, photo_id, user_id)
    return filename


# -- catalogues -------------------------------------------------------------------


@dataclass(frozen=True)
class Catalogues:
    """The seed data profiles refer to, loaded once per process and database."""

    campuses: list[dict[str, Any]]
    interests: list[dict[str, Any]]
    campus_ids: frozenset[uuid.UUID]
    interest_ids: frozenset[uuid.UUID]


_catalogues: weakref.WeakKeyDictionary[Database, Catalogues] = weakref.WeakKeyDictionary()


async def catalogues(db: Database) -> Catalogues:
    """Seed data never changes while the process runs: a concurrent first
    load may read it twice, harmlessly."""
    loaded = _catalogues.get(db)
    if loaded is None:
        reads = db.read()
        campus_rows = await reads.fetch(CAMPUSES)
        interest_rows = await reads.fetch(INTERESTS)
        loaded = Catalogues(
            campuses=[{**dict(r), "id": str(r["id"])} for r in campus_rows],
            interests=[{**dict(r), "id": str(r["id"])} for r in interest_rows],
            campus_ids=frozenset(r["id"] for r in campus_rows),
            interest_ids=frozenset(r["id"] for r in interest_rows),
        )
        _catalogues[db] = loaded
    return loaded
