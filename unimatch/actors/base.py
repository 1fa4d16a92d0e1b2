"""What a virtual actor is, and what its node gives it."""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from unimatch.actors.chat import MessageCommitter
    from unimatch.actors.directory import ActorDirectory
    from unimatch.actors.ports import SocketPort
    from unimatch.domain.config import Config
    from unimatch.storage.cache import Cache
    from unimatch.storage.pg import Database


@dataclass
class Services:
    """The collaborators a node hands to each actor it activates, built once
    at start-up."""

    config: Config
    db: Database
    cache: Cache
    # To call other virtual actors (never this one: its mailbox is serial, so
    # a call to itself, direct or through others, waits on itself forever).
    actors: ActorDirectory
    # To write frames to users' sockets, on this node or another.
    sockets: SocketPort
    # The group commit of chat messages shared by every match of the node.
    committer: MessageCommitter
    node_index: int


class ActorContext(Protocol):
    """What the host lets an actor start outside its current message. Work
    started here is tied to the activation: timers are cancelled and tasks
    awaited when it passivates."""

    def schedule(self, delay: float, method: str, *args: Any) -> None:
        """Run `method(*args)` as a message to this actor's own mailbox after
        `delay` seconds (private methods allowed). Replaces an earlier timer
        for the same method."""
        ...

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` beside the mailbox. It must touch no actor state (it
        may call other actors, push to sockets, write rows it owns)."""
        ...


class VirtualActor:
    """One entity's single writer: a small object with a serial mailbox.

    The host creates it on the first message for its id, awaits
    `on_activate()` (load state from PostgreSQL), then hands it messages one at
    a time in arrival order: while one public method runs, no other method of
    this instance does, so the state needs no locks. After `passivate_after`
    seconds idle the host awaits `on_passivate()` and drops it; the next
    message builds a fresh instance. A node can also die at any instant, so
    anything that must survive is written to PostgreSQL before the method
    returns.

    Public `async` methods are callable by name through
    `ActorDirectory.call(kind, id, method, ...)`; names starting with `_` or
    `on_` are not (but `context.schedule` may name them). Arguments and
    results cross processes: keep them plain (str, int, dict, list, UUID,
    datetime) and picklable. A caller retries calls while a node restarts,
    so a call may run twice: methods with effects must be idempotent.

    Anything an actor starts outside a message goes through `self.context`
    (timers as messages to its own mailbox, tasks that touch no state), so
    the single-writer promise holds and passivation waits for it.
    """

    kind: ClassVar[str] = ""

    def __init__(self, actor_id: str, services: Services, context: ActorContext) -> None:
        self.actor_id = actor_id
        self.services = services
        self.context = context

    @property
    def worth_keeping(self) -> bool:
        """False when the activation holds nothing the next message would
        need (its entity does not exist, or all of its state is in
        PostgreSQL): the host then drops it as soon as its mailbox is empty,
        instead of keeping it for `passivate_after`. An activation costs a
        task, a mailbox and the actor's memory (about 15 KB), so an entity
        touched once in a while, by the thousand, must not be kept."""
        return True

    async def on_activate(self) -> None:
        """Load state. An exception fails every message waiting for this
        activation, and the next message tries again."""

    async def on_passivate(self) -> None:
        """Last chance to flush anything held in memory; it may never run if
        the node dies, so nothing acknowledged may depend on it."""
