"""Build users straight in the database for tests that need many of them
(the signup flow itself is tested through the API in test_auth)."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass, field

from argon2 import PasswordHasher

from unimatch.domain import tokens
from unimatch.domain.config import Config
from unimatch.storage.pg import Database

PASSWORD = "correct-horse-battery-staple"
_HASH = PasswordHasher().hash(PASSWORD)


@dataclass
class TestUser:
    id: uuid.UUID
    email: str
    token: str
    display_name: str
    campus_id: uuid.UUID | None = None
    interests: list[uuid.UUID] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def catalogue_ids(db: Database) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """(campus ids, interest ids), each in slug order."""
    campuses = [r["id"] for r in await db.fetch("SELECT id FROM campuses ORDER BY slug")]
    interests = [r["id"] for r in await db.fetch("SELECT id FROM interests ORDER BY slug")]
    return campuses, interests


async def make_user(
    db: Database,
    config: Config,
    *,
    verified: bool = True,
    complete: bool = True,
    gender: str = "woman",
    interested_in: tuple[str, ...] = ("man", "woman", "nonbinary"),
    campus_id: uuid.UUID | None = None,
    year_of_study: int = 2,
    interests: list[uuid.UUID] | None = None,
    birthdate: dt.date = dt.date(2003, 5, 17),
    last_active: dt.datetime | None = None,
    visible: bool = True,
    role: str = "user",
    name: str | None = None,
) -> TestUser:
    campuses, all_interests = await catalogue_ids(db)
    email = f"u{secrets.token_hex(6)}@uonbi.ac.ke"
    display_name = name or f"Student {secrets.token_hex(2)}"
    campus_id = campus_id or campuses[0]
    interests = list(all_interests[:3] if interests is None else interests)
    async with db.transaction() as conn:
        user_id = await conn.fetchval(
            """INSERT INTO users (email, password_hash, role, is_verified, is_visible,
                                  display_name, bio, birthdate, gender, campus_id,
                                  year_of_study, verified_at, last_active)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                       CASE WHEN $4 THEN now() END, coalesce($12, now()))
               RETURNING id""",
            email, _HASH, role, verified, visible, display_name,
            "Hello from campus" if complete else None,
            birthdate if complete else None,
            gender if complete else None,
            campus_id if complete else None,
            year_of_study if complete else None,
            last_active,
        )
        if complete:
            await conn.executemany(
                "INSERT INTO user_interested_in (user_id, gender) VALUES ($1, $2)",
                [(user_id, g) for g in interested_in],
            )
            await conn.executemany(
                "INSERT INTO user_interests (user_id, interest_id) VALUES ($1, $2)",
                [(user_id, i) for i in interests],
            )
            await conn.execute(
                """INSERT INTO photos (user_id, filename, content_type, width, height, size_bytes)
                   VALUES ($1, $2, 'image/jpeg', 640, 480, 1000)""",
                user_id, f"{secrets.token_hex(16)}.jpg",
            )
    return TestUser(
        id=user_id,
        email=email,
        token=tokens.issue_access(config, user_id),
        display_name=display_name,
        campus_id=campus_id if complete else None,
        interests=interests if complete else [],
    )
