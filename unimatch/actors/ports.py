"""What the actors need from the layers around them, declared here as
Protocols so the actors import none of those layers.

- `ActorLink`: how a call reaches the node that hosts an actor. In-process
  for this node (`links.LocalLink`), a batched Ray call for another
  (`links.RayLink`). The directory picks the link by routing; nothing else
  knows which one it holds.
- `SocketPort`: how frames reach a user's sockets on a given node. The node
  implements it (`unimatch.server.sockets`): written straight to the socket
  hub for its own sockets, batched over Ray for another node's.
"""

from __future__ import annotations

from typing import Any, Protocol

# One call as it travels: (kind, actor_id, method, args, kwargs).
Call = tuple[str, str, str, tuple[Any, ...], dict[str, Any]]
# One answer: (ok, result) or (False, exception).
Outcome = tuple[bool, Any]
# One frame for one socket of a node: (connection_id, frame).
Delivery = tuple[str, dict[str, Any]]


class ActorLink(Protocol):
    """The way to one node's actors."""

    async def call(self, call: Call) -> Any:
        """Run `call` on its actor and return the result; the actor's own
        errors are raised as they are. Raises `NodeDown` (retryable) when the
        node cannot be reached."""
        ...

    async def check_health(self) -> None:
        """Raises unless the node answers that it serves."""
        ...

    def resolve(self, answers: list[tuple[int, Outcome]]) -> None:
        """Late answers this link is owed (see links.RayLink)."""
        ...

    async def aclose(self) -> None: ...


class SocketPort(Protocol):
    """The way to users' sockets, on any node."""

    async def push(self, node: int, deliveries: list[Delivery]) -> list[bool]:
        """Queue each frame on its socket of `node`, in order; per delivery,
        whether that socket was still open there."""
        ...

    async def sockets_of(self, user_id: str) -> list[tuple[int, str]]:
        """(node, connection_id) of every socket of the user, on every node
        that answers in time: how a freshly activated UserActor finds them."""
        ...


class NodeDown(Exception):
    """A node could not be reached (dead, restarting, not yet registered).
    The directory retries calls that fail with it, within a deadline."""


class Moved(NodeDown):
    """The node reached does not own the entity (any more): the caller
    re-routes. Not a sign that the node is down."""


class NodeLeft(NodeDown):
    """The call was owed by a node the membership has already dropped: the
    caller re-routes. No news of the node, so not counted against it (else
    every call failed by one drop would drop it again after it came back)."""
