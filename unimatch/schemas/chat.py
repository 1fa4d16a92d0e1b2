"""Chat over HTTP: `/matches/{match_id}/messages`, `/matches/{match_id}/read`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import Field

from unimatch.schemas import limits
from unimatch.schemas.base import Body, Out, Query, Seq
from unimatch.schemas.text import ChatBody

ClientMsgId = Annotated[str, Field(min_length=1, max_length=limits.CLIENT_MSG_ID_MAX)]


class HistoryQuery(Query):
    """The oldest page after `after_seq`, else the newest page before
    `before_seq` (or the newest of all)."""

    after_seq: Annotated[Seq, Field(description="the oldest page after this seq")] | None = None
    before_seq: Annotated[
        int, Field(ge=1, le=limits.SEQ_MAX, description="the newest page before this seq")
    ] | None = None
    limit: Annotated[int, Field(ge=1, le=limits.MESSAGES_PAGE[1], description="page size")] = (
        limits.MESSAGES_PAGE[0]
    )


class SendMessage(Body):
    client_msg_id: ClientMsgId
    body: ChatBody


class MarkRead(Body):
    seq: Seq


# -- responses --------------------------------------------------------------------


class Message(Out):
    message_id: uuid.UUID
    seq: Annotated[int, Field(ge=1)]
    sender_id: uuid.UUID
    body: str
    client_msg_id: str
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    read_at: dt.datetime | None


class Messages(Out):
    messages: list[Message]


class MessageAck(Out):
    message_id: uuid.UUID
    seq: int
    created_at: dt.datetime
