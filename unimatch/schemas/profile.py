"""Profiles, photos and catalogues: `/me`, `/me/profile`, `/me/photos`,
`/users/{id}`, `/interests`, `/campuses`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field

from unimatch.schemas import limits
from unimatch.schemas.base import UNIQUE, UNIQUE_ITEMS, Body, OpenOut, Out, field_error
from unimatch.schemas.text import Bio, DisplayName
from unimatch.schemas.vocabulary import Gender, Role


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def age_on(birthdate: dt.date, day: dt.date) -> int:
    return day.year - birthdate.year - ((day.month, day.day) < (birthdate.month, birthdate.day))


def _plausible_birthdate(birthdate: dt.date) -> dt.date:
    now = today()
    if birthdate > now:
        raise field_error("birthdate", "may not be in the future")
    if age_on(birthdate, now) < limits.MIN_AGE:
        raise field_error("birthdate", f"you must be at least {limits.MIN_AGE} to use UniMatch")
    if age_on(birthdate, now) > limits.MAX_AGE:
        raise field_error("birthdate", "is not a plausible birthdate")
    return birthdate


YearOfStudy = Annotated[
    int, Field(ge=limits.YEAR_OF_STUDY_MIN, le=limits.YEAR_OF_STUDY_MAX)
]


class ProfilePatch(Body):
    """Any subset of the fields; a field that is absent or null stays as it is.
    `campus` and `interests` are ids of the catalogues (checked against them
    by the handler)."""

    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName | None = None
    bio: Bio | None = None
    birthdate: Annotated[
        dt.date, AfterValidator(_plausible_birthdate),
        Field(description=f"YYYY-MM-DD; users must be {limits.MIN_AGE}+"),
    ] | None = None
    gender: Gender | None = None
    interested_in: Annotated[
        list[Gender], UNIQUE, Field(min_length=1, json_schema_extra=UNIQUE_ITEMS)
    ] | None = None
    campus: Annotated[uuid.UUID, Field(description="an id from GET /campuses")] | None = None
    year_of_study: YearOfStudy | None = None
    interests: Annotated[
        list[uuid.UUID], UNIQUE,
        Field(min_length=limits.INTERESTS_MIN, max_length=limits.INTERESTS_MAX,
              json_schema_extra=UNIQUE_ITEMS, description="ids from GET /interests"),
    ] | None = None



# -- responses --------------------------------------------------------------------


class Campus(OpenOut):
    id: uuid.UUID
    name: str
    city: str | None = None


class Interest(OpenOut):
    id: uuid.UUID
    name: str
    category: str | None = None


class Photo(OpenOut):
    photo_id: uuid.UUID
    url: str = Field(description="path under /media/")
    width: int | None = None
    height: int | None = None


class _ProfileFields(OpenOut):
    display_name: str | None = None
    bio: str | None = None
    gender: Gender | None = None
    interested_in: list[Gender] = []
    campus: Campus | None = None
    year_of_study: int | None = None
    interests: list[Interest] = []
    photos: list[Photo] = []


class Profile(_ProfileFields):
    birthdate: dt.date | None = None
    is_visible: bool = True


class OwnUser(OpenOut):
    user_id: uuid.UUID
    email: str
    role: Role = "user"
    is_verified: bool
    created_at: dt.datetime | None = None


class Me(Out):
    user: OwnUser
    profile: Profile
    profile_complete: bool
    missing: list[str] = Field(description="fields still needed")


class PublicProfile(_ProfileFields):
    user_id: uuid.UUID
    age: int | None = None


class Campuses(Out):
    results: list[Campus]


class Interests(Out):
    results: list[Interest]
