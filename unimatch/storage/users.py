"""Who is asking: the account facts every permission check needs, in one query."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from unimatch.storage.pg import Database

# A suspension is active while not lifted and `until` is null (a ban) or ahead.
ACTIVE_SUSPENSION = """
    EXISTS (SELECT 1 FROM suspensions s
            WHERE s.user_id = {user} AND s.lifted_at IS NULL
              AND (s.until IS NULL OR s.until > now()))"""

# The profile fields PATCH /me/profile sets, all required for completeness,
# plus at least 3 interests, at least one "interested in" and one photo.
PROFILE_COMPLETE = """
    ({u}.display_name IS NOT NULL AND {u}.bio IS NOT NULL AND {u}.birthdate IS NOT NULL
     AND {u}.gender IS NOT NULL AND {u}.campus_id IS NOT NULL AND {u}.year_of_study IS NOT NULL
     AND EXISTS (SELECT 1 FROM user_interested_in ii WHERE ii.user_id = {u}.id)
     AND (SELECT count(*) FROM user_interests ui WHERE ui.user_id = {u}.id) >= 3
     AND EXISTS (SELECT 1 FROM photos p WHERE p.user_id = {u}.id))"""

# Every authenticated request runs this, so completeness comes from the
# trigger-maintained `feed_complete` column (migration 020), which a test
# holds equal to PROFILE_COMPLETE, instead of three subqueries.
PRINCIPAL = f"""
SELECT u.id, u.role, u.is_verified,
       {ACTIVE_SUSPENSION.format(user="u.id")} AS is_suspended,
       u.feed_complete AS profile_complete
FROM users u WHERE u.id = $1"""


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    role: str
    is_verified: bool
    is_suspended: bool
    profile_complete: bool

    @property
    def is_moderator(self) -> bool:
        return self.role == "moderator"


async def load_principal(db: Database, user_id: uuid.UUID) -> Principal | None:
    row = await db.fetchrow(PRINCIPAL, user_id)
    if row is None:
        return None
    return Principal(
        user_id=row["id"],
        role=row["role"],
        is_verified=row["is_verified"],
        is_suspended=row["is_suspended"],
        profile_complete=row["profile_complete"],
    )
