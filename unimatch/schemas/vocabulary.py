"""The closed word lists of the contract: genders, report reasons,
moderation actions, notification kinds."""

from __future__ import annotations

from typing import Literal, get_args

Gender = Literal["woman", "man", "nonbinary"]
SwipeAction = Literal["like", "pass"]
ReportReason = Literal[
    "spam", "harassment", "fake_profile", "inappropriate_content", "underage", "other"
]
ReportStatus = Literal["open", "resolved"]
ModerationAction = Literal["dismiss", "warn", "suspend", "ban"]
# The kinds a client (and a webhook) can subscribe to.
NotificationKind = Literal["match", "message", "warning", "report_resolved", "suspension"]
ReceiptStatus = Literal["delivered", "read"]
Role = Literal["user", "moderator"]

GENDERS: tuple[str, ...] = get_args(Gender)
REPORT_REASONS: tuple[str, ...] = get_args(ReportReason)
REPORT_STATUSES: tuple[str, ...] = get_args(ReportStatus)
MODERATION_ACTIONS: tuple[str, ...] = get_args(ModerationAction)
NOTIFICATION_KINDS: tuple[str, ...] = get_args(NotificationKind)
