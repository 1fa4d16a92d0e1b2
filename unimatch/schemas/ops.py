"""Operations and the error body every non-2xx response has."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from unimatch.schemas.base import Out


class Error(Out):
    """`{"error": <machine code>, "status_code": <int>, "detail": ...}`."""

    error: str = Field(description="stable machine code, e.g. validation_failed, "
                                   "invalid_json, unauthorized, token_expired, invalid_token, "
                                   "suspended, unverified, profile_incomplete, forbidden, "
                                   "not_found, conflict, payload_too_large, rate_limited, "
                                   "database_unavailable")
    status_code: int
    detail: str | dict[str, Any] | None = Field(
        description="a message; for validation_failed an object mapping each field to its "
                    "messages"
    )


class Health(Out):
    status: Literal["ok"]


class Ready(Out):
    status: Literal["ready"]
    checks: dict[str, str]
