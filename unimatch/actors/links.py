"""The two ways to a node's actors (`ports.ActorLink`).

`LocalLink`: the node is this process; a call goes straight into the
actor's mailbox, no copy and no Ray. Callers must not mutate what they pass
or get.

`RayLink`: the node is another Ray actor. The calls bound for it within one
event-loop tick travel in one `call_batch` Ray call (a remote call costs
about a millisecond whatever it carries, DESIGN.md), in the order they were
made, so calls made by one process to one actor arrive in that order.

A batch is not held by its slowest item: the node answers the batch with
what finished within `patience` and sends the rest back later, each as soon
as it is done, through the caller's own `replies` method (when the caller is
a Ray actor that has one: another node, the scheduler). One actor flooded
with slow calls therefore delays only its own callers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import re
from collections.abc import Awaitable, Callable
from typing import Any

import ray

from unimatch.actors.batching import TickBatcher
from unimatch.actors.directory import ActorDirectory, Membership
from unimatch.actors.host import ActorHost
from unimatch.actors.ports import Call, NodeDown, Outcome
from unimatch.domain.errors import DomainError, Unavailable

log = logging.getLogger("unimatch.actors")

# What `call_batch` answers for a call that is still running.
LATER = "__later__"
# How long a caller waits for the late answer of a call its node accepted.
LATE_DEADLINE = 30.0

# Ray's ways of saying a node is dead, restarting or not registered yet.
NODE_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    ray.exceptions.RayActorError,  # includes ActorDiedError, ActorUnavailableError
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.ActorHandleNotFoundError,
)


# The Ray actor name of node `i` (in the platform's namespace).
NODE_NAME = "node-{index}"
_NODE_NAME = re.compile(r"node-(\d+)")
_HEALTH_TIMEOUT = 5.0
# A cluster's membership: how often each node is checked, and how long a
# node may take to answer before it is taken out of the routing.
WATCH_INTERVAL = 0.5
WATCH_TIMEOUT = 1.0


def node_name(index: int) -> str:
    return NODE_NAME.format(index=index)


class NodeHandles:
    """Ray handles of the nodes, looked up by name once each, off the event
    loop (`ray.get_actor` blocks it for ~0.3 ms). A handle stays valid while
    Ray restarts its node."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._handles: dict[int, Any] = {}

    def of(self, index: int) -> Callable[[], Awaitable[Any]]:
        async def resolve() -> Any:
            handle = self._handles.get(index)
            if handle is None:
                try:
                    handle = await asyncio.to_thread(
                        ray.get_actor, node_name(index), namespace=self.namespace)
                except ValueError as exc:  # not registered (yet): starting
                    raise NodeDown(f"{node_name(index)} not registered") from exc
                self._handles[index] = handle
            return handle

        return resolve


class LocalLink:
    """Calls to the actors of this process."""

    def __init__(self, host: ActorHost) -> None:
        self.host = host

    async def call(self, call: Call) -> Any:
        return await self.host.submit(call)

    async def check_health(self) -> None:
        self.host.check_health()

    def resolve(self, answers: list[tuple[int, Outcome]]) -> None:
        """Nothing is ever owed in-process."""

    async def aclose(self) -> None:
        return None


# A token names one call of a batch, so a late answer finds its caller.
Tokened = tuple[int, Call]


class RayLink:
    """Calls to the actors of another node, batched per tick.

    `handle` resolves the node's Ray actor handle (looked up once, off the
    loop: `ray.get_actor` blocks it for ~0.3 ms); `reply_to` is the name of
    this process's own Ray actor, or None when it has none (a test driver,
    a benchmark): then the node answers each batch whole."""

    def __init__(
        self,
        handle: Callable[[], Awaitable[Any]],
        *,
        reply_to: str | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        self._handle = handle
        self._reply_to = reply_to
        self._tokens = itertools.count()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._batcher = TickBatcher[Tokened, Any](self._send, max_in_flight=max_in_flight)

    async def call(self, call: Call) -> Any:
        token = next(self._tokens)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            answer = await self._batcher.submit((token, call))
            if answer == LATER:
                try:
                    answer = await asyncio.wait_for(future, LATE_DEADLINE)
                except TimeoutError:
                    raise Unavailable("no answer from the actor's node",
                                      code="service_unavailable") from None
            ok, value = answer
        finally:
            self._waiting.pop(token, None)
        if ok:
            return value
        raise value

    async def _send(self, items: list[Tokened]) -> list[Any]:
        try:
            handle = await self._handle()
            return await handle.call_batch.remote(items, self._reply_to)
        except NODE_DOWN_ERRORS as exc:
            # Calls it accepted earlier and still owes die with it: their
            # callers retry them too.
            self.fail_waiting(NodeDown(repr(exc)))
            raise NodeDown(repr(exc)) from exc

    def fail_waiting(self, error: NodeDown) -> None:
        """Fail every late answer still owed (its node is gone)."""
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
                # Its caller may still be in the batch that failed, and then
                # never awaits it: not an error to log.
                future.exception()

    async def check_health(self) -> None:
        handle = await self._handle()
        await asyncio.wait_for(handle.check_health.remote(), _HEALTH_TIMEOUT)

    def resolve(self, answers: list[tuple[int, Outcome]]) -> None:
        """Late answers of calls this link sent (the node's `replies`)."""
        for token, outcome in answers:
            future = self._waiting.get(token)
            if future is not None and not future.done():
                future.set_result(outcome)

    async def aclose(self) -> None:
        await self._batcher.aclose()


class LateAnswers:
    """The answers one node still owes one caller, sent back in one
    `replies` Ray call per tick."""

    def __init__(self, send: Callable[[list[tuple[int, Outcome]]], Awaitable[Any]]) -> None:
        async def send_all(answers: list[tuple[int, Outcome]]) -> list[None]:
            await send(answers)
            return [None] * len(answers)

        self._batcher = TickBatcher[tuple[int, Outcome], None](send_all, max_in_flight=1)
        self._tasks: set[asyncio.Task[None]] = set()

    def owe(self, token: int, future: asyncio.Future[Any]) -> None:
        future.add_done_callback(lambda done: self._answer(token, done))

    def _answer(self, token: int, future: asyncio.Future[Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(token, outcome_of(future)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, token: int, outcome: Outcome) -> None:
        try:
            await self._batcher.submit((token, outcome))
        except Exception as exc:  # the caller died: it retries or gave up
            log.warning("late answer not delivered: %r", exc)


async def answer_batch(
    host: ActorHost, items: list[Tokened], *, patience: float, late: LateAnswers | None
) -> list[Any]:
    """A node's side of `RayLink`: submit every call (each in its mailbox
    before the first await, so order holds), wait up to `patience` for them,
    answer what is done and `LATER` for the rest, which `late` delivers as
    each finishes. Without `late` (a caller with no `replies`), wait for all."""
    futures = [host.submit(call) for _, call in items]
    pending = [f for f in futures if not f.done()]
    if pending:
        await asyncio.wait(pending, timeout=patience if late is not None else None)
    answers: list[Any] = []
    for (token, _), future in zip(items, futures, strict=True):
        if future.done():
            answers.append(outcome_of(future))
        else:
            assert late is not None
            answers.append(LATER)
            late.owe(token, future)
    return answers


def outcome_of(future: asyncio.Future[Any]) -> Outcome:
    error = future.exception()
    return (True, future.result()) if error is None else (False, portable(error))


def portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a stand-in: one
    unpicklable exception must not fail the whole batch it travels in."""
    if isinstance(exc, DomainError):
        return exc
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__qualname__}: {exc}")
    return exc


def node_indices(namespace: str) -> list[int]:
    """The indices of the nodes Ray has named in `namespace` (blocking)."""
    found = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        match = _NODE_NAME.fullmatch(entry["name"])
        if match and entry["namespace"] == namespace:
            found.append(int(match.group(1)))
    return sorted(found)


class ClusterWatcher:
    """Keeps a dynamic `Membership` true from Ray's own state: the nodes
    are the actors Ray has named `node-<i>` (added as they appear), the live
    ones those answering `check_health` within `WATCH_TIMEOUT`, checked every
    `WATCH_INTERVAL`. This process itself (`own`, when it is a node) is
    always live. No gossip of our own: Ray's actor directory is the truth of
    who exists, a health call the truth of who serves."""

    def __init__(
        self, membership: Membership, namespace: str, handles: NodeHandles,
        make_link: Callable[[int], Any], *, own: int | None = None,
    ) -> None:
        self.membership = membership
        self.namespace = namespace
        self.handles = handles
        self.make_link = make_link
        self.own = own
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def refresh(self) -> None:
        indices = await asyncio.to_thread(node_indices, self.namespace)
        for index in indices:
            if index not in self.membership.links:
                self.membership.add(index, self.make_link(index))
        others = [i for i in self.membership.links if i != self.own]
        answers = await asyncio.gather(*(self._healthy(i) for i in others))
        live = {i for i, ok in zip(others, answers, strict=True) if ok}
        if self.own is not None:
            live.add(self.own)
        if live:
            self.membership.set_live(live)

    async def _healthy(self, index: int) -> bool:
        try:
            handle = await self.handles.of(index)()
            await asyncio.wait_for(handle.check_health.remote(), WATCH_TIMEOUT)
        except Exception:
            return False
        return True

    async def _watch(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # keep watching: Ray may be briefly unreachable
                log.warning("membership refresh failed: %r", exc)
            await asyncio.sleep(WATCH_INTERVAL)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def remote_directory(
    namespace: str, nodes: int, *, reply_to: str | None = None, retry_deadline: float = 30.0,
    cluster: bool = False,
) -> ActorDirectory:
    """A directory whose every link is Ray: for a process that hosts no
    actors (the scheduler, a test driver, a benchmark). `reply_to` names its
    own Ray actor when it has a `replies` method (see RayLink). With
    `cluster`, the nodes are whichever Ray names (see ClusterWatcher),
    watched from the first call on, starting from `range(nodes)`."""
    handles = NodeHandles(namespace)

    def make_link(index: int) -> RayLink:
        return RayLink(handles.of(index), reply_to=reply_to)

    membership = Membership({i: make_link(i) for i in range(nodes)}, dynamic=cluster)
    directory = ActorDirectory(membership, retry_deadline=retry_deadline)
    if cluster:
        watcher = ClusterWatcher(membership, namespace, handles, make_link)
        plain_call = directory.call

        async def call(kind: str, actor_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
            watcher.start()
            return await plain_call(kind, actor_id, method, *args, **kwargs)

        directory.call = call  # type: ignore[method-assign]
    return directory
