"""One writer per entity across a cluster's membership changes.

Rendezvous routing over the live nodes gives every entity one owner per
view; views differ between nodes for a moment after a change. What keeps an
entity active on one node only, in that moment:

- a node answers only for the entities it owns in its own view; a call for
  another is refused with `Moved` (the caller re-routes), and an activation
  it no longer owns is passivated as soon as its view changes
  (`release_unowned`);
- a node activating an entity while its view is fresh (a node joined or
  left within `HANDOFF_WINDOW`) first asks the entity's previous owner, the
  winner among the other nodes, to `release` it: that node passivates it
  (its queued messages and commits finish first), refuses it from then on,
  and counts the asker live at once;
- a node that died held its activations in the process that died.

PostgreSQL's unique indexes stay the last line (a false suspicion of a slow
node can still overlap two writers); a message refused by the
(match_id, seq) index is counted in `unimatch_single_writer_conflicts_total`
and answered as a retryable error, after which the match reloads its seq.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from unimatch.actors.directory import Membership
from unimatch.actors.host import ActorHost, _Activation
from unimatch.actors.ports import Call, Moved
from unimatch.actors.routing import pick_host
from unimatch.domain.metrics import SINGLE_WRITER_CONFLICTS

log = logging.getLogger("unimatch.ownership")

# After a change of the live set, activations ask the previous owner first.
HANDOFF_WINDOW = 60.0
HANDOFF_TIMEOUT = 1.0
# A released entity is refused here for this long even if a stale view
# still routes it here (the asker's view is newer).
RELEASED_FOR = 5.0
RELEASE_GRACE = 10.0

Handoff = Callable[[int, str, str], Awaitable[None]]


def is_seq_conflict(exc: BaseException | None) -> bool:
    """A message refused because its (match_id, seq) was taken."""
    while exc is not None:
        if isinstance(exc, asyncpg.UniqueViolationError):
            constraint = getattr(exc, "constraint_name", "") or ""
            return "seq" in constraint or "seq" in str(exc)
        exc = exc.__cause__ or exc.__context__
    return False


class OwnedHost(ActorHost):
    """An `ActorHost` that hosts only what its node owns in a dynamic
    membership (unchanged behaviour with a fixed one)."""

    def __init__(self, config: Any, own: int) -> None:
        super().__init__(config)
        self.own = own
        self.membership: Membership | None = None
        self._handoff: Handoff | None = None
        self._released: dict[tuple[str, str], float] = {}

    def bind(self, membership: Membership, handoff: Handoff | None) -> None:
        self.membership = membership
        self._handoff = handoff
        if membership.dynamic:
            membership.on_change(self._membership_changed)

    def owns(self, kind: str, actor_id: str) -> bool:
        membership = self.membership
        if membership is None or not membership.dynamic:
            return True
        until = self._released.get((kind, actor_id))
        if until is not None:
            if time.monotonic() < until:
                return False
            del self._released[(kind, actor_id)]
        return membership.owner(kind, actor_id) == self.own

    def submit(self, call: Call) -> asyncio.Future[Any]:
        kind, actor_id = call[0], call[1]
        if not self.owns(kind, actor_id):
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(Moved(f"{kind}/{actor_id} is not on node {self.own}"))
            return future
        future = super().submit(call)
        future.add_done_callback(_count_conflict)
        return future

    async def _run(self, activation: _Activation) -> None:
        membership, handoff = self.membership, self._handoff
        if (membership is not None and membership.dynamic and handoff is not None
                and time.monotonic() - membership.changed_at < HANDOFF_WINDOW):
            others = (membership.live | membership.recently_down()) - {self.own}
            if others:
                previous = pick_host(activation.kind, activation.actor_id, others)
                try:
                    await asyncio.wait_for(
                        handoff(previous, activation.kind, activation.actor_id), HANDOFF_TIMEOUT)
                except Exception as exc:  # dead or slow: it holds nothing we can wait for
                    log.info("hand-off of %s/%s from node %d: %r", activation.kind,
                             activation.actor_id, previous, exc)
        await super()._run(activation)

    async def release(self, kind: str, actor_id: str) -> None:
        """Passivate `kind/actor_id` here (what is queued finishes first) and
        refuse it for a while: another node takes it over."""
        key = (kind, actor_id)
        self._released[key] = time.monotonic() + RELEASED_FOR
        activation = self._activations.get(key)
        if activation is not None:
            self._passivate(activation)
        task = self._passivating.get(key)
        if task is not None:
            await asyncio.wait([task], timeout=RELEASE_GRACE)

    def _membership_changed(self) -> None:
        self.release_unowned()

    def release_unowned(self) -> int:
        """Passivate every activation this node no longer owns; how many."""
        unowned = [a for a in self._activations.values() if not self.owns(a.kind, a.actor_id)]
        for activation in unowned:
            self._passivate(activation)
        if unowned:
            log.info("node %d passivated %d activations it no longer owns",
                     self.own, len(unowned))
        return len(unowned)


def _count_conflict(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and is_seq_conflict(future.exception()):
        SINGLE_WRITER_CONFLICTS.inc()
