"""User cards: how a user looks to others in the feed, `match` frames and
the match list.

A card is the user row's public columns, their campus, their interests and
their photos. Campuses and interests are small catalogues that only
migrations change, so each process keeps them in memory (`Catalogue`) and a
card row carries just `campus_id` and `interest_mask` (one bit per interest,
kept by triggers, migration 020): no join per card. Photos still come from
their table, in one subquery per card.

The catalogue is reloaded when it is older than `CATALOGUE_TTL`, and at once
when a row names a campus or an interest bit it does not know, so a new
catalogue entry shows on the first card that uses it.
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from unimatch.storage.pg import Database

CATALOGUE_TTL = 300.0

# The columns a card is built from. `{u}` is the users alias.
CARD_COLUMNS = """
    {u}.id AS user_id, {u}.display_name, {u}.year_of_study, {u}.bio,
    {u}.campus_id, {u}.interest_mask,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('photo_id', p.id,
                                                  'url', '/media/' || p.filename)
                               ORDER BY p.created_at, p.id), '[]'::jsonb)
     FROM photos p WHERE p.user_id = {u}.id) AS photos"""

CAMPUSES = "SELECT id, name, city FROM campuses"
INTERESTS = "SELECT id, name, bit FROM interests ORDER BY name"


@dataclass(frozen=True)
class Catalogue:
    campuses: dict[uuid.UUID, dict[str, Any]]
    # (bit, {"id", "name"}), ordered by name as cards list them.
    interests: tuple[tuple[int, dict[str, Any]], ...]
    known_bits: int
    loaded_at: float

    def knows(self, rows: Iterable[asyncpg.Record]) -> bool:
        for row in rows:
            campus = row["campus_id"]
            if campus is not None and campus not in self.campuses:
                return False
            if (row["interest_mask"] or 0) & ~self.known_bits:
                return False
        return True

    def card(self, row: asyncpg.Record) -> dict[str, Any]:
        """A card row (CARD_COLUMNS) as the API shows it."""
        mask = row["interest_mask"] or 0
        campus = row["campus_id"]
        return {
            "user_id": str(row["user_id"]),
            "display_name": row["display_name"],
            "campus": self.campuses.get(campus) if campus is not None else None,
            "year_of_study": row["year_of_study"],
            "bio": row["bio"],
            "interests": [entry for bit, entry in self.interests if mask >> bit & 1],
            "photos": row["photos"],
        }


async def _load(db: Database) -> Catalogue:
    reads = db.read()
    campuses = await reads.fetch(CAMPUSES)
    interests = await reads.fetch(INTERESTS)
    return Catalogue(
        campuses={
            r["id"]: {"id": str(r["id"]), "name": r["name"], "city": r["city"]} for r in campuses
        },
        interests=tuple(
            (r["bit"], {"id": str(r["id"]), "name": r["name"]}) for r in interests
        ),
        known_bits=sum(1 << r["bit"] for r in interests),
        loaded_at=time.monotonic(),
    )


# One catalogue per pool: a process talks to one database, tests to several.
_CATALOGUES: weakref.WeakKeyDictionary[Database, Catalogue] = weakref.WeakKeyDictionary()


async def catalogue_for(db: Database, rows: Iterable[asyncpg.Record] = ()) -> Catalogue:
    """The catalogue, fresh enough for `rows`."""
    catalogue = _CATALOGUES.get(db)
    if (
        catalogue is None
        or time.monotonic() - catalogue.loaded_at > CATALOGUE_TTL
        or not catalogue.knows(rows)
    ):
        catalogue = _CATALOGUES[db] = await _load(db)
    return catalogue


async def cards_of(db: Database, rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """The cards of `rows` (CARD_COLUMNS), in order."""
    catalogue = await catalogue_for(db, rows)
    return [catalogue.card(row) for row in rows]
