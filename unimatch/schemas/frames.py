"""Every WebSocket frame, both ways (docs/websocket.md).

Client frames form one union tagged by `type`; `validate_client_frame` turns
a decoded frame (a dict from the JSON text) into its model, or raises
`ValidationFailed`: code `invalid_frame` naming the field, or
`validation_failed` for a `send` whose text (`body`, `client_msg_id`) the
user should see refused, as over HTTP. `parse_client_frame` also bounds and
decodes the raw text. Server frames are declared for the document and for
tests that check what the server sends.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from unimatch.domain.errors import ValidationFailed
from unimatch.schemas import limits
from unimatch.schemas.base import Out, Seq, message_of
from unimatch.schemas.chat import ClientMsgId
from unimatch.schemas.discover import Card
from unimatch.schemas.notifications import Notification
from unimatch.schemas.text import ChatBody
from unimatch.schemas.vocabulary import ReceiptStatus

# Ids arrive as JSON strings: the one lenient conversion in strict frames.
Id = Annotated[uuid.UUID, Field(strict=False)]


class ClientFrame(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class AuthFrame(ClientFrame):
    """A fresh access token, first (when the URL has none) or at any time."""

    type: Literal["auth"]
    token: Annotated[str, Field(min_length=1, max_length=limits.TOKEN_MAX)]


class SendFrame(ClientFrame):
    type: Literal["send"]
    match_id: Id
    client_msg_id: ClientMsgId
    body: ChatBody


class ReceiptFrame(ClientFrame):
    """Everything from the other user up to `seq` reached this device
    (`delivered`) or was read (`read`)."""

    type: ReceiptStatus
    match_id: Id
    seq: Seq


class TypingFrame(ClientFrame):
    type: Literal["typing"]
    match_id: Id
    state: bool


class SyncFrame(ClientFrame):
    """Replay every message after each cursor, then `synced`."""

    type: Literal["sync"]
    cursors: Annotated[dict[Id, Seq], Field(max_length=limits.SYNC_CURSORS_MAX)]


class PingFrame(ClientFrame):
    type: Literal["ping"]


AnyClientFrame = Annotated[
    AuthFrame | SendFrame | ReceiptFrame | TypingFrame | SyncFrame | PingFrame,
    Field(discriminator="type"),
]
_CLIENT_FRAME: TypeAdapter[Any] = TypeAdapter(AnyClientFrame)
# In a `send`, these are the user's words: refused as `validation_failed`.
_USER_FIELDS = frozenset({"body", "client_msg_id"})


def _frame_error(exc: ValidationError, kind: Any) -> ValidationFailed:
    detail: dict[str, list[str]] = {}
    user_facing = False
    for error in exc.errors(include_url=False):
        loc = [part for part in error["loc"] if isinstance(part, str)]
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            field, message = "type", f"unknown frame type {kind!r}"
        else:
            field = loc[1] if len(loc) > 1 else "frame"
            message = message_of(error)
        user_facing = user_facing or (kind == "send" and field in _USER_FIELDS)
        detail.setdefault(field, []).append(message)
    return ValidationFailed(detail, code="validation_failed" if user_facing else "invalid_frame")


def validate_client_frame(data: Any) -> ClientFrame:
    """A decoded client frame as its model; `ValidationFailed` otherwise."""
    if not isinstance(data, dict):
        raise ValidationFailed({"frame": ["must be a JSON object"]}, code="invalid_frame")
    try:
        frame: ClientFrame = _CLIENT_FRAME.validate_python(data)
    except ValidationError as exc:
        raise _frame_error(exc, data.get("type")) from None
    return frame


def parse_client_frame(raw: str | bytes) -> ClientFrame:
    """A client's text frame, bounded in size, decoded and validated."""
    if len(raw) > limits.WS_FRAME_MAX_BYTES:
        raise ValidationFailed(
            {"frame": [f"at most {limits.WS_FRAME_MAX_BYTES} bytes"]}, code="invalid_frame"
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationFailed({"frame": ["malformed JSON"]}, code="invalid_frame") from None
    return validate_client_frame(data)


# -- server → client ----------------------------------------------------------------


class ReadyFrame(Out):
    type: Literal["ready"]
    user_id: uuid.UUID
    scope: uuid.UUID | None = Field(description="the match of a scoped socket")


class AckFrame(Out):
    """Sent only after the message is committed, to the socket that sent it."""

    type: Literal["ack"]
    client_msg_id: str
    match_id: uuid.UUID
    seq: Seq
    message_id: uuid.UUID
    created_at: dt.datetime


class MessageFrame(Out):
    type: Literal["message"]
    match_id: uuid.UUID
    seq: Seq
    message_id: uuid.UUID
    sender_id: uuid.UUID
    body: str
    client_msg_id: str
    created_at: dt.datetime


class ReceiptOutFrame(Out):
    type: Literal["receipt"]
    match_id: uuid.UUID
    seq: Seq
    status: ReceiptStatus
    user_id: uuid.UUID


class TypingOutFrame(Out):
    type: Literal["typing"]
    match_id: uuid.UUID
    user_id: uuid.UUID
    state: bool


class PresenceFrame(Out):
    type: Literal["presence"]
    user_id: uuid.UUID
    online: bool
    last_active: dt.datetime | None


class MatchFrame(Out):
    type: Literal["match"]
    match_id: uuid.UUID
    user: Card


class UnmatchFrame(Out):
    type: Literal["unmatch"]
    match_id: uuid.UUID


class NotificationFrame(Out):
    type: Literal["notification"]
    notification: Notification


class SyncedFrame(Out):
    type: Literal["synced"]


class PongFrame(Out):
    type: Literal["pong"]


class ErrorFrame(Out):
    """Carries `client_msg_id` and `match_id` of the frame it answers when it
    had them, and `retry_after` for `rate_limited` and `overloaded`."""

    type: Literal["error"]
    code: str
    detail: Any
    client_msg_id: str | None = None
    match_id: str | None = None
    retry_after: float | None = None


SERVER_FRAMES: tuple[type[Out], ...] = (
    ReadyFrame, AckFrame, MessageFrame, ReceiptOutFrame, TypingOutFrame, PresenceFrame,
    MatchFrame, UnmatchFrame, NotificationFrame, SyncedFrame, PongFrame, ErrorFrame,
)
CLIENT_FRAMES: tuple[type[ClientFrame], ...] = (
    AuthFrame, SendFrame, ReceiptFrame, TypingFrame, SyncFrame, PingFrame,
)
