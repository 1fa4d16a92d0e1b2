"""The key of an unordered pair of users.

A pair's `MatchActor` (kind "match") and its `matches` row share one id,
derived from the two user ids in a fixed order, so either user, any
process and any retry name the same actor and the same row.
"""

from __future__ import annotations

import uuid

PAIR_NAMESPACE = uuid.UUID("6f1f3c1e-2b9a-5d4e-9c7a-0d5e8b1a4c21")


def ordered(a: uuid.UUID | str, b: uuid.UUID | str) -> tuple[uuid.UUID, uuid.UUID]:
    """(user_a, user_b) as the `matches` row stores them: user_a < user_b."""
    first, second = uuid.UUID(str(a)), uuid.UUID(str(b))
    return (first, second) if first < second else (second, first)


def pair_id(a: uuid.UUID | str, b: uuid.UUID | str) -> uuid.UUID:
    """The match id (and MatchActor id) of the pair {a, b}, whatever the order."""
    low, high = ordered(a, b)
    return uuid.uuid5(PAIR_NAMESPACE, f"{low}:{high}")
