"""Domain errors to WebSocket: one table of error frames and close codes.

Most errors answer one frame and leave the socket open (an `error` frame
naming the request it answers). A few end the connection, with the
contract's close codes.
"""

from __future__ import annotations

from typing import Any

from unimatch.domain.closes import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHORIZED,
)
from unimatch.domain.errors import DomainError, Forbidden, RateLimited, Unauthorized, Unavailable
from unimatch.ws.codec import error_frame

# Errors that close the socket instead of answering a frame.
CLOSE_BY_ERROR: dict[type[DomainError], int] = {
    Unauthorized: CLOSE_UNAUTHORIZED,
}
# Forbidden codes that mean "this account may not be here at all".
_CLOSING_FORBIDDEN = {"suspended"}


def close_code_for(error: DomainError) -> int | None:
    """The close code for an error that ends the connection, else None."""
    if isinstance(error, Forbidden) and error.code in _CLOSING_FORBIDDEN:
        return CLOSE_FORBIDDEN
    for cls in type(error).__mro__:
        if cls in CLOSE_BY_ERROR:
            return CLOSE_BY_ERROR[cls]  # type: ignore[index]
    return None


def frame_for(error: DomainError, **context: Any) -> dict[str, Any]:
    """The `error` frame answering a client frame (context: client_msg_id,
    match_id... of the frame it answers)."""
    frame = error_frame(error.code, error.detail, **context)
    if isinstance(error, RateLimited):
        frame["retry_after"] = error.retry_after
    return frame


def unexpected_frame(**context: Any) -> dict[str, Any]:
    """For a failure that is not a domain error: the client may retry."""
    error = Unavailable("try again shortly", code="service_unavailable")
    return frame_for(error, **context)
