"""The `close_sockets` job: end every socket of a user whose authority was
taken away (a suspension), retried until a node has done it.

The moderation handler also closes them at once after its commit; that push
is best effort (a node may be restarting). This job, enqueued in the same
transaction as the suspension, is what makes the close certain: it fails,
and is retried with backoff, until the user's actor answers.
"""

from __future__ import annotations

from typing import Any

from unimatch.actors.directory import ActorDirectory
from unimatch.scheduler.handlers import JobContext, PermanentJobError, register
from unimatch.storage.jobs import CLOSE_SOCKETS


@register(CLOSE_SOCKETS)
async def close_sockets(payload: dict[str, Any], ctx: JobContext) -> None:
    """Payload `{user_id, code, reason}`. Idempotent: closing sockets that
    are already closed closes nothing."""
    try:
        user_id, code, reason = str(payload["user_id"]), int(payload["code"]), payload["reason"]
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentJobError(f"bad close_sockets payload: {payload!r}") from exc
    await ctx.service(ActorDirectory).call("user", user_id, "disconnect", code, str(reason))
