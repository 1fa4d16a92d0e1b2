"""Reports and moderation: `/reports`, `/moderation/...`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from unimatch.schemas import limits
from unimatch.schemas.base import Body, Instant, OpenOut, Out, Query, field_error
from unimatch.schemas.text import ReportDetails, SuspensionReason
from unimatch.schemas.vocabulary import ModerationAction, ReportReason, ReportStatus, Role


def _future(until: dt.datetime | None) -> None:
    if until is not None and until <= dt.datetime.now(dt.UTC):
        raise field_error("until", "must be in the future")


class CreateReport(Body):
    reported_user_id: uuid.UUID
    reason: ReportReason
    details: ReportDetails = ""


class ReportsQuery(Query):
    status: Annotated[
        Literal["open", "resolved", "all"], Field(description="which reports")
    ] = "open"
    reported_user_id: Annotated[
        uuid.UUID, Field(description="only reports against this user")
    ] | None = None
    after: Annotated[
        uuid.UUID, Field(description="the page after this report (`next_after`)")
    ] | None = None
    limit: Annotated[int, Field(ge=1, le=limits.REPORTS_PAGE[1], description="page size")] = (
        limits.REPORTS_PAGE[0]
    )


class ResolveReport(Body):
    """`until` is required for suspend (in the future) and refused otherwise."""

    action: ModerationAction
    until: Annotated[
        Instant, Field(description="required for suspend, in the future")
    ] | None = None

    @model_validator(mode="after")
    def _until(self) -> Self:
        if self.action == "suspend" and self.until is None:
            raise field_error("until", "this field is required")
        if self.action != "suspend" and self.until is not None:
            raise field_error("until", f"not allowed with {self.action}")
        _future(self.until)
        return self


class Suspend(Body):
    """No `until` is a ban."""

    reason: SuspensionReason
    until: Instant | None = None

    @model_validator(mode="after")
    def _until(self) -> Self:
        _future(self.until)
        return self


# -- responses --------------------------------------------------------------------


class ReportCreated(OpenOut):
    report_id: uuid.UUID
    created_at: dt.datetime | None = None


class ReportUser(Out):
    user_id: uuid.UUID
    display_name: str | None = None
    email: str | None = None


class ReportedUser(ReportUser):
    role: Role | None = None
    is_suspended: bool
    open_reports: int
    total_reports: int | None = None


class Report(Out):
    report_id: uuid.UUID
    reason: ReportReason
    details: str
    status: ReportStatus
    resolution: ModerationAction | None = None
    created_at: dt.datetime
    resolved_at: dt.datetime | None = None
    resolved_by: uuid.UUID | None = None
    reporter: ReportUser
    reported_user: ReportedUser


class ReportPage(Out):
    reports: list[Report]
    next_after: uuid.UUID | None = None


class Suspension(Out):
    suspension_id: uuid.UUID
    user_id: uuid.UUID
    reason: str
    until: dt.datetime | None = Field(description="null: a ban")
    is_ban: bool
    report_id: uuid.UUID | None = None
    created_by: uuid.UUID | None = None
    created_at: dt.datetime


class Resolution(Out):
    report: Report
    resolved_report_ids: list[uuid.UUID]
    suspension: Suspension | None
