"""Reports and suspensions: the moderation aggregate.

Every moderation action leaves a row saying who did it and when: a resolved
report carries `resolved_by` / `resolved_at` / `resolution`, a suspension
`created_by` / `created_at`, and a lifted one `lifted_by` / `lifted_at`.

Suspending (`suspend_user`) happens in the caller's transaction, all or
nothing: the suspension row, every refresh-token family of the user revoked
(no refresh succeeds afterwards; access tokens already out fail every
request with 403 `suspended`, since each request re-checks), every active
match of the user ended (`end_reason` 'suspend' or 'ban'), and a
`suspension` notification. Matches end for temporary suspensions too: a
suspended user is hidden everywhere, so their partners must not keep a chat
with someone who no longer exists for them, and the match and chat code
needs no suspension checks of its own. Lifting a suspension does not bring
matches back.

"Suspended" itself is defined once, in `storage.users.ACTIVE_SUSPENSION`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from unimatch.domain.closes import CLOSE_FORBIDDEN
from unimatch.domain.errors import Conflict, Forbidden, NotFound
from unimatch.schemas import vocabulary
from unimatch.storage.accounts import revoke_user_families
from unimatch.storage.jobs import enqueue_close_sockets
from unimatch.storage.notifications import (
    KIND_REPORT_RESOLVED,
    KIND_SUSPENSION,
    KIND_WARNING,
    add_notification,
)
from unimatch.storage.users import ACTIVE_SUSPENSION

REASONS = vocabulary.REPORT_REASONS
ACTIONS = vocabulary.MODERATION_ACTIONS
STATUSES = vocabulary.REPORT_STATUSES

USER_EXISTS = "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)"

# Locks the account: moderation actions on one user run one at a time.
USER_FOR_UPDATE = "SELECT id, role FROM users WHERE id = $1 FOR UPDATE"

INSERT_REPORT = """
INSERT INTO reports (reporter_id, reported_user_id, reason, details)
VALUES ($1, $2, $3, $4)
RETURNING id, created_at"""

_REPORT_COLUMNS = f"""
    r.id, r.reason, r.details, r.status, r.resolution, r.created_at, r.resolved_at,
    r.resolved_by,
    rp.id AS reporter_id, rp.display_name AS reporter_name, rp.email AS reporter_email,
    ru.id AS reported_id, ru.display_name AS reported_name, ru.email AS reported_email,
    ru.role AS reported_role,
    {ACTIVE_SUSPENSION.format(user="ru.id")} AS reported_suspended,
    (SELECT count(*) FROM reports o
     WHERE o.reported_user_id = r.reported_user_id AND o.status = 'open') AS open_reports,
    (SELECT count(*) FROM reports o
     WHERE o.reported_user_id = r.reported_user_id) AS total_reports"""

# Oldest first (a queue), keyset-paginated: `$2` is the last report seen.
LIST_REPORTS = f"""
SELECT {_REPORT_COLUMNS}
FROM reports r
JOIN users rp ON rp.id = r.reporter_id
JOIN users ru ON ru.id = r.reported_user_id
WHERE ($1::text IS NULL OR r.status = $1)
  AND ($4::uuid IS NULL OR r.reported_user_id = $4)
  AND ($2::uuid IS NULL OR (r.created_at, r.id) > (
        SELECT c.created_at, c.id FROM reports c WHERE c.id = $2))
ORDER BY r.created_at, r.id
LIMIT $3"""

REPORT_EXISTS = "SELECT EXISTS (SELECT 1 FROM reports WHERE id = $1)"

GET_REPORT = f"""
SELECT {_REPORT_COLUMNS}
FROM reports r
JOIN users rp ON rp.id = r.reporter_id
JOIN users ru ON ru.id = r.reported_user_id
WHERE r.id = $1"""

REPORT_TARGET = "SELECT reported_user_id FROM reports WHERE id = $1"

REPORT_FOR_UPDATE = """
SELECT id, reported_user_id, reporter_id, status, reason
FROM reports WHERE id = $1 FOR UPDATE"""

RESOLVE_ONE = """
UPDATE reports SET status = 'resolved', resolution = $2, resolved_by = $3, resolved_at = now()
WHERE id = $1 AND status = 'open'
RETURNING id, reporter_id"""

RESOLVE_ALL_OPEN = """
UPDATE reports SET status = 'resolved', resolution = $2, resolved_by = $3, resolved_at = now()
WHERE reported_user_id = $1 AND status = 'open'
RETURNING id, reporter_id"""

_SUSPENSION_COLUMNS = "id, user_id, reason, until, report_id, created_by, created_at"

# Lifts what is in force now (an expired suspension needs no lifting).
LIFT_ACTIVE = f"""
UPDATE suspensions s SET lifted_at = now(), lifted_by = $2
WHERE s.user_id = $1 AND s.lifted_at IS NULL AND (s.until IS NULL OR s.until > now())
RETURNING {_SUSPENSION_COLUMNS}"""

INSERT_SUSPENSION = f"""
INSERT INTO suspensions (user_id, reason, until, report_id, created_by)
VALUES ($1, $2, $3, $4, $5)
RETURNING {_SUSPENSION_COLUMNS}"""

END_MATCHES = """
UPDATE matches SET ended_at = now(), ended_by = $2, end_reason = $3
WHERE (user_a = $1 OR user_b = $1) AND ended_at IS NULL
RETURNING id, CASE WHEN user_a = $1 THEN user_b ELSE user_a END AS partner_id"""


@dataclass
class Suspended:
    """What `suspend_user` did, for the after-commit work."""

    suspension: dict[str, Any]
    replaced: bool
    # (match_id, partner_id) of every match that ended, and why.
    ended_matches: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)
    end_reason: str = "suspend"
    notification: dict[str, Any] | None = None


@dataclass
class Resolution:
    report: dict[str, Any]
    resolved_report_ids: list[uuid.UUID]
    # Notifications to publish after the commit: (user_id, notification).
    notifications: list[tuple[uuid.UUID, dict[str, Any]]] = field(default_factory=list)
    suspended: Suspended | None = None


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def suspension_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "suspension_id": str(row["id"]),
        "user_id": str(row["user_id"]),
        "reason": row["reason"],
        "until": _iso(row["until"]),
        "is_ban": row["until"] is None,
        "report_id": None if row["report_id"] is None else str(row["report_id"]),
        "created_by": None if row["created_by"] is None else str(row["created_by"]),
        "created_at": row["created_at"].isoformat(),
    }


def report_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "report_id": str(row["id"]),
        "reason": row["reason"],
        "details": row["details"],
        "status": row["status"],
        "resolution": row["resolution"],
        "created_at": row["created_at"].isoformat(),
        "resolved_at": _iso(row["resolved_at"]),
        "resolved_by": None if row["resolved_by"] is None else str(row["resolved_by"]),
        "reporter": {
            "user_id": str(row["reporter_id"]),
            "display_name": row["reporter_name"],
            "email": row["reporter_email"],
        },
        "reported_user": {
            "user_id": str(row["reported_id"]),
            "display_name": row["reported_name"],
            "email": row["reported_email"],
            "role": row["reported_role"],
            "is_suspended": row["reported_suspended"],
            "open_reports": row["open_reports"],
            "total_reports": row["total_reports"],
        },
    }


async def user_exists(conn: Any, user_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval(USER_EXISTS, user_id))


async def create_report(
    conn: Any, reporter_id: uuid.UUID, reported_id: uuid.UUID, reason: str, details: str
) -> dict[str, Any]:
    row = await conn.fetchrow(INSERT_REPORT, reporter_id, reported_id, reason, details)
    return {"report_id": str(row["id"]), "created_at": row["created_at"].isoformat()}


async def list_reports(
    conn: Any,
    *,
    status: str | None,
    reported_user_id: uuid.UUID | None,
    after: uuid.UUID | None,
    limit: int,
) -> list[dict[str, Any]] | None:
    """A page of the queue, oldest first; None when `after` is unknown."""
    rows = await conn.fetch(LIST_REPORTS, status, after, limit, reported_user_id)
    if not rows and after is not None and not await conn.fetchval(REPORT_EXISTS, after):
        return None
    return [report_json(row) for row in rows]


async def get_report(conn: Any, report_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(GET_REPORT, report_id)
    return None if row is None else report_json(row)


async def _lock_target(
    conn: asyncpg.Connection, user_id: uuid.UUID, moderator_id: uuid.UUID
) -> None:
    """The user exists and is one a moderator may act on (404 / 403)."""
    row = await conn.fetchrow(USER_FOR_UPDATE, user_id)
    if row is None:
        raise NotFound("no such user")
    if user_id == moderator_id:
        raise Forbidden("moderators cannot act on their own account")
    if row["role"] == "moderator":
        raise Forbidden("moderators cannot suspend moderators")


async def suspend_user(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    moderator_id: uuid.UUID,
    *,
    reason: str,
    until: dt.datetime | None,
    report_id: uuid.UUID | None = None,
) -> Suspended:
    """Suspend (until a time) or ban (`until` None) on the caller's
    transaction. A suspension already in force is lifted and replaced, so
    the history shows both. See the module docstring for what else happens."""
    await _lock_target(conn, user_id, moderator_id)
    replaced = bool(await conn.fetch(LIFT_ACTIVE, user_id, moderator_id))
    row = await conn.fetchrow(INSERT_SUSPENSION, user_id, reason, until, report_id, moderator_id)
    await revoke_user_families(conn, user_id, "suspended")
    # The sockets close at once after the commit (best effort, by the shell),
    # and this job makes sure they do even if that push is lost.
    await enqueue_close_sockets(conn, user_id, CLOSE_FORBIDDEN, "suspended")
    end_reason = "ban" if until is None else "suspend"
    ended = [
        (r["id"], r["partner_id"])
        for r in await conn.fetch(END_MATCHES, user_id, moderator_id, end_reason)
    ]
    suspension = suspension_json(row)
    notification = await add_notification(
        conn, user_id, KIND_SUSPENSION,
        {"suspension_id": suspension["suspension_id"], "until": suspension["until"],
         "reason": reason},
    )
    return Suspended(suspension, replaced, ended, end_reason, notification)


async def lift_suspension(
    conn: asyncpg.Connection, user_id: uuid.UUID, moderator_id: uuid.UUID
) -> list[dict[str, Any]]:
    """Lift what is in force; 404 for no such user, 409 when not suspended."""
    if await conn.fetchrow(USER_FOR_UPDATE, user_id) is None:
        raise NotFound("no such user")
    lifted = await conn.fetch(LIFT_ACTIVE, user_id, moderator_id)
    if not lifted:
        raise Conflict("this user is not suspended", code="not_suspended")
    return [suspension_json(row) for row in lifted]


async def resolve_report(
    conn: asyncpg.Connection,
    report_id: uuid.UUID,
    moderator_id: uuid.UUID,
    *,
    action: str,
    until: dt.datetime | None,
) -> Resolution:
    """Resolve a report with `action` on the caller's transaction.

    - dismiss, warn: only this report is resolved (other reports against the
      same user may describe other conduct and get their own review); warn
      sends the reported user a `warning` notification.
    - suspend, ban: the user is suspended (see `suspend_user`), and every
      open report against them is resolved with the same outcome: the
      strongest action has been taken, so they need no separate review.

    Each reporter whose report is resolved gets a `report_resolved`
    notification saying whether action was taken (never which).
    """
    target = await conn.fetchval(REPORT_TARGET, report_id)
    if target is None:
        raise NotFound("no such report")
    # The user first, then the report: the order every action on a user takes,
    # so two moderators resolving two reports on one user queue up here.
    await conn.fetchrow(USER_FOR_UPDATE, target)
    report = await conn.fetchrow(REPORT_FOR_UPDATE, report_id)
    if report["status"] != "open":
        raise Conflict("this report is already resolved", code="already_resolved")
    reported_id = report["reported_user_id"]
    if reported_id == moderator_id:
        raise Forbidden("moderators cannot resolve reports against themselves")

    suspended: Suspended | None = None
    notifications: list[tuple[uuid.UUID, dict[str, Any]]] = []
    if action in {"suspend", "ban"}:
        suspended = await suspend_user(
            conn, reported_id, moderator_id,
            reason=f"report {report_id}: {report['reason']}",
            until=until if action == "suspend" else None,
            report_id=report_id,
        )
        if suspended.notification is not None:
            notifications.append((reported_id, suspended.notification))
        resolved = await conn.fetch(RESOLVE_ALL_OPEN, reported_id, action, moderator_id)
    else:
        resolved = await conn.fetch(RESOLVE_ONE, report_id, action, moderator_id)
        if action == "warn":
            warning = await add_notification(
                conn, reported_id, KIND_WARNING,
                {"report_id": str(report_id), "reason": report["reason"]},
            )
            notifications.append((reported_id, warning))

    for row in resolved:
        notice = await add_notification(
            conn, row["reporter_id"], KIND_REPORT_RESOLVED,
            {"report_id": str(row["id"]), "action_taken": action != "dismiss"},
        )
        notifications.append((row["reporter_id"], notice))
    current = await conn.fetchrow(GET_REPORT, report_id)
    return Resolution(
        report=report_json(current),
        resolved_report_ids=[row["id"] for row in resolved],
        notifications=notifications,
        suspended=suspended,
    )
