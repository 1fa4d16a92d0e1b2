"""What a virtual actor is, and what its host gives it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from unimatch.actors.directory import ActorDirectory
    from unimatch.config import Config
    from unimatch.storage.cache import Cache
    from unimatch.storage.pg import Database


@dataclass
class Services:
    """The collaborators a shard host hands to each actor it activates."""

    config: Config
    db: Database
    cache: Cache
    # To call other virtual actors (never this one: its mailbox is serial, so
    # a call to itself, direct or through others, waits on itself forever).
    directory: ActorDirectory
    host_index: int
    # Collaborators that later features add (e.g. a gateway pusher), by name.
    extras: dict[str, Any] = field(default_factory=dict)


class VirtualActor:
    """One entity's single writer: a small object with a serial mailbox.

    The host creates it on the first message for its id, awaits
    `on_activate()` (load state from PostgreSQL), then hands it messages one at
    a time in arrival order: while one public method runs, no other method of
    this instance does, so the state needs no locks. After `passivate_after`
    seconds idle the host awaits `on_passivate()` and drops it; the next
    message builds a fresh instance. A host can also die at any instant, so
    anything that must survive is written to PostgreSQL before the method
    returns.

    Public `async` methods are callable by name through
    `ActorDirectory.call(kind, id, method, ...)`; names starting with `_` or
    `on_` are not. Arguments and results cross processes: keep them plain
    (str, int, dict, list, UUID, datetime) and picklable. A caller retries
    calls while a host restarts, so a call may run twice: methods with
    effects must be idempotent (take a client token, or check state first).
    """

    kind: ClassVar[str] = ""

    def __init__(self, actor_id: str, services: Services) -> None:
        self.actor_id = actor_id
        self.services = services

    async def on_activate(self) -> None:
        """Load state. An exception fails every message waiting for this
        activation, and the next message tries again."""

    async def on_passivate(self) -> None:
        """Last chance to flush anything held in memory; it may never run if
        the host dies, so nothing acknowledged may depend on it."""
