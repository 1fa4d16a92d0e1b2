"""Telling a user something happened: the notification row, then the push.

Two steps, split at the commit:

- in the transaction of the event: `storage.notifications.add_notification`
  (the row and its webhook deliveries commit with the event, or not at all);
- after the commit: `publish_notification` clears the user's cached
  notification pages and pushes `{"type": "notification", ...}` to every
  socket of the user through their `UserActor`.

`notify` does both for an event that has no transaction of its own. The push
is best effort: a user with no open socket reads the row later, so a failed
push is logged and never fails the caller. `actors` is None where the actor
system is not attached (shell-only tests): then nothing is pushed.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from unimatch.actors.directory import ActorDirectory
from unimatch.domain.metrics import NOTIFICATION_PUSHES
from unimatch.storage.cache import Cache, notifications_key
from unimatch.storage.notifications import add_notification
from unimatch.storage.pg import Database

log = logging.getLogger("unimatch.actors.notify")


def notification_frame(notification: dict[str, Any]) -> dict[str, Any]:
    return {"type": "notification", "notification": notification}


async def clear_notifications_cache(cache: Cache, user_id: uuid.UUID | str) -> None:
    """Every cached page of the user's notifications lives under this one key."""
    await cache.delete(notifications_key(user_id))


async def push_to_user(
    actors: ActorDirectory | None, user_id: uuid.UUID | str, frames: list[dict]
) -> bool:
    """Frames to every socket of the user; False (logged) when it failed."""
    if actors is None:
        return False
    try:
        await actors.call("user", str(user_id), "push", frames)
    except Exception as exc:
        log.warning("push to user %s failed: %r", user_id, exc)
        return False
    return True


async def publish_notification(
    cache: Cache, actors: ActorDirectory | None, user_id: uuid.UUID | str,
    notification: dict[str, Any],
) -> None:
    """After the commit of `add_notification`: clear the cache, push the frame."""
    await clear_notifications_cache(cache, user_id)
    if actors is None:
        return
    pushed = await push_to_user(actors, user_id, [notification_frame(notification)])
    NOTIFICATION_PUSHES.labels("pushed" if pushed else "failed").inc()


async def notify(
    db: Database, cache: Cache, actors: ActorDirectory | None, user_id: uuid.UUID, kind: str,
    payload: dict[str, Any],
) -> dict[str, Any]:
    """Store a notification in a transaction of its own, then publish it.
    Returns the notification as `GET /notifications` shows it."""
    async with db.transaction() as conn:
        notification = await add_notification(conn, user_id, kind, payload)
    await publish_notification(cache, actors, user_id, notification)
    return notification
