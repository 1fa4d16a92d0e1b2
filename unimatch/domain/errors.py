"""The domain errors raised below the shell.

`storage/`, `actors/` and `scheduler/` raise these; `http/errors.py` maps them
to status codes and the contract's JSON, `ws/errors.py` to error frames and
close codes. They pickle with their fields, so they cross Ray calls intact.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code: str = "error"

    def __init__(self, detail: Any = None, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__.copy()))

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}" if self.detail is not None else self.code


def _rebuild(cls: type[DomainError], state: dict[str, Any]) -> DomainError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("detail"))
    error.__dict__.update(state)
    return error


class ValidationFailed(DomainError):
    """`detail` maps a field name to a list of messages."""

    code = "validation_failed"


class Unauthorized(DomainError):
    code = "unauthorized"


class Forbidden(DomainError):
    code = "forbidden"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class Gone(DomainError):
    code = "gone"


class PayloadTooLarge(DomainError):
    code = "payload_too_large"


class UnsupportedMedia(DomainError):
    code = "unsupported_media_type"


class RateLimited(DomainError):
    code = "rate_limited"

    def __init__(self, detail: Any = None, *, retry_after: float = 1.0, code: str | None = None):
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A dependency (database, cache, actor system) cannot be reached now."""

    code = "service_unavailable"


def invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed({field: [message]})
