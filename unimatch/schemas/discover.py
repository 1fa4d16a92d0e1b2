"""Discover and match: `/discover`, `/swipes`, `/matches`, `/blocks`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import Field, RootModel

from unimatch.schemas import limits
from unimatch.schemas.base import Body, OpenOut, Out, Query, Seq
from unimatch.schemas.profile import Campus, Interest, Photo
from unimatch.schemas.vocabulary import SwipeAction


class DiscoverQuery(Query):
    limit: Annotated[int, Field(ge=1, le=limits.DISCOVER_PAGE[1], description="page size")] = (
        limits.DISCOVER_PAGE[0]
    )


class Swipe(Body):
    target_id: uuid.UUID
    action: SwipeAction


class Block(Body):
    user_id: uuid.UUID


# -- responses --------------------------------------------------------------------


class Card(OpenOut):
    user_id: uuid.UUID
    display_name: str | None = None
    campus: Campus | None = None
    year_of_study: int | None = None
    bio: str | None = None
    interests: list[Interest] = []
    photos: list[Photo] = []


class FeedItem(Card):
    score: int


class Feed(Out):
    results: list[FeedItem]
    cached: bool


class SwipeResult(Out):
    matched: bool
    match_id: uuid.UUID | None


class LastMessage(Out):
    message_id: uuid.UUID
    seq: Seq
    sender_id: uuid.UUID
    body: str
    created_at: dt.datetime


class MatchListItem(Out):
    match_id: uuid.UUID
    user: Card
    last_message: LastMessage | None
    unread_count: int
    created_at: dt.datetime


class Blocked(Out):
    blocked_id: uuid.UUID


class MatchList(RootModel[list[MatchListItem]]):
    """The caller's active matches, latest activity first."""
