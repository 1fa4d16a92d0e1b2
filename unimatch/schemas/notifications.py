"""Notifications and webhooks: `/notifications`, `/notifications/read`,
`/webhooks`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from unimatch.schemas import limits
from unimatch.schemas.base import UNIQUE, UNIQUE_ITEMS, Body, Out, Query
from unimatch.schemas.vocabulary import NOTIFICATION_KINDS, NotificationKind


class NotificationsQuery(Query):
    unread: Annotated[bool, Field(description="only unread ones")] = False
    before: Annotated[
        uuid.UUID, Field(description="the page after this notification (`next_before`)")
    ] | None = None
    limit: Annotated[
        int, Field(ge=1, le=limits.NOTIFICATIONS_PAGE[1], description="page size")
    ] = limits.NOTIFICATIONS_PAGE[0]


class MarkNotificationsRead(Body):
    """`{ids: [...]}` or `{all: true}`, not both."""

    model_config = ConfigDict(json_schema_extra={
        "oneOf": [{"required": ["ids"]}, {"required": ["all"]}],
    })

    ids: Annotated[
        list[uuid.UUID], UNIQUE,
        Field(min_length=1, max_length=limits.NOTIFICATION_IDS_MAX,
              json_schema_extra=UNIQUE_ITEMS),
    ] | None = None
    all: Literal[True] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.ids is None) == (self.all is None):
            raise PydanticCustomError("one_of", "give either ids or all")
        return self


class DeliveriesQuery(Query):
    limit: Annotated[
        int, Field(ge=1, le=limits.DELIVERIES_PAGE[1], description="how many")
    ] = limits.DELIVERIES_PAGE[0]


class CreateWebhook(Body):
    url: Annotated[
        str, Field(min_length=1, max_length=limits.WEBHOOK_URL_MAX,
                   json_schema_extra={"format": "uri"},
                   description="http or https, no credentials; private and loopback "
                               "addresses are refused unless WEBHOOK_ALLOW_PRIVATE"),
    ]
    events: Annotated[
        list[NotificationKind], UNIQUE, Field(min_length=1, json_schema_extra=UNIQUE_ITEMS)
    ]


# -- responses --------------------------------------------------------------------


class Notification(Out):
    id: uuid.UUID
    kind: str = Field(description="one of " + ", ".join(NOTIFICATION_KINDS))
    payload: dict[str, Any] = Field(description="what happened, by kind")
    is_read: bool
    created_at: dt.datetime


class NotificationPage(Out):
    notifications: list[Notification]
    next_before: uuid.UUID | None = Field(default=None, description="cursor of the next page")


class Webhook(Out):
    webhook_id: uuid.UUID
    url: str
    events: list[NotificationKind]
    is_active: bool
    created_at: dt.datetime


class WebhookCreated(Webhook):
    secret: str = Field(description="shown once: the HMAC key")


class Webhooks(Out):
    webhooks: list[Webhook]


class WebhookDelivery(Out):
    delivery_id: uuid.UUID
    event: NotificationKind
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    response_code: int | None = None
    last_error: str | None = None
    created_at: dt.datetime
    delivered_at: dt.datetime | None = None


class WebhookDeliveries(Out):
    deliveries: list[WebhookDelivery]


class WebhookEvent(Out):
    """What a registered receiver is POSTed."""

    delivery_id: uuid.UUID
    event: NotificationKind
    user_id: uuid.UUID
    notification: Notification
