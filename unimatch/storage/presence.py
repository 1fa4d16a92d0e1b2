"""Presence: who should hear that a user came online, and `last_active`."""

from __future__ import annotations

# The other member of every open match of $1: they get `presence` frames.
MATCHED_USERS = """
SELECT CASE WHEN user_a = $1 THEN user_b ELSE user_a END AS user_id
FROM matches WHERE (user_a = $1 OR user_b = $1) AND ended_at IS NULL"""

LAST_ACTIVE = "SELECT last_active FROM users WHERE id = $1"

TOUCH = "UPDATE users SET last_active = now() WHERE id = $1 RETURNING last_active"
