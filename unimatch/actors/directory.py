"""Reach any virtual actor: route by hash, batch per host, retry restarts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import ray
from ray.actor import ActorHandle

from unimatch.actors.batching import TickBatcher
from unimatch.actors.routing import pick_host
from unimatch.errors import Unavailable
from unimatch.metrics import ACTOR_RETRIES

log = logging.getLogger("unimatch.actors")

DEFAULT_NAME_PREFIX = "shard-host"
_HEALTH_TIMEOUT = 5.0

# One call as it travels to a host: (kind, actor_id, method, args, kwargs).
Call = tuple[str, str, str, tuple[Any, ...], dict[str, Any]]
Outcome = tuple[bool, Any]


class LocalHost(Protocol):
    """A shard host in the caller's process."""

    async def call_local(
        self, kind: str, actor_id: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any: ...

# A host that is dead, being restarted by Ray, or not yet registered under its
# name. Anything else (a bug, an unpicklable argument) is not worth retrying.
_HOST_DOWN: tuple[type[BaseException], ...] = (
    ray.exceptions.RayActorError,  # includes ActorDiedError, ActorUnavailableError
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.ActorHandleNotFoundError,
)


class _HostNotRegistered(Exception):
    """`ray.get_actor` did not find a host name (yet)."""


_RETRYABLE: tuple[type[BaseException], ...] = (*_HOST_DOWN, _HostNotRegistered)


def host_name(name_prefix: str, index: int) -> str:
    return f"{name_prefix}-{index}"


class ActorDirectory:
    """Calls virtual actors on a fixed set of shard hosts.

    `call(kind, id, method, *args, **kwargs)` goes to the host chosen by
    rendezvous hashing. The calls bound for one host that are made within one
    event-loop tick travel in one `call_batch` Ray call, in the order they
    were made, so calls made by one process to one actor arrive in the order
    they were made (unless a retry reorders them, see below).

    A host living in the caller's own process (`bind_local`: a shard host's
    own directory, or a gateway sharing its process with a host) is called
    in-process: the message goes straight into the actor's mailbox, with no
    Ray call and no copy, so callers must not mutate what they pass or get.

    Retries: while a host is dead or being restarted by Ray, a call is retried
    with capped exponential backoff until `retry_deadline` seconds have passed,
    then fails with `Unavailable`. A host that died mid-call may already have
    run it, so a retried call can run twice: every method with effects must be
    idempotent. Errors raised by the actor itself are never retried; they
    reach the caller as the same class (domain errors keep their fields).
    """

    def __init__(
        self,
        handles: Sequence[ActorHandle] | None = None,
        *,
        namespace: str | None = None,
        count: int | None = None,
        name_prefix: str = DEFAULT_NAME_PREFIX,
        retry_deadline: float = 30.0,
        max_in_flight: int | None = None,
    ) -> None:
        if handles is None and (namespace is None or count is None):
            raise ValueError("give either handles, or namespace and count")
        self._handles: list[ActorHandle] | None = list(handles) if handles is not None else None
        self._count = len(self._handles) if self._handles is not None else int(count or 0)
        if self._count < 1:
            raise ValueError("a directory needs at least one host")
        self._namespace = namespace
        self._name_prefix = name_prefix
        self._lookup_lock: asyncio.Lock | None = None
        self.retry_deadline = retry_deadline
        self._batchers = [
            TickBatcher[Call, Outcome](self._sender(i), max_in_flight=max_in_flight)
            for i in range(self._count)
        ]
        self._local_index = -1
        self._local_host: LocalHost | None = None

    def bind_local(self, index: int, host: LocalHost) -> None:
        """Host `index` lives in this process: call it in-process."""
        self._local_index, self._local_host = index, host

    @classmethod
    def lookup(
        cls,
        namespace: str,
        count: int,
        *,
        name_prefix: str = DEFAULT_NAME_PREFIX,
        retry_deadline: float = 30.0,
        max_in_flight: int | None = None,
    ) -> ActorDirectory:
        """A directory of the hosts named `{name_prefix}-{i}` in `namespace`.

        Names are resolved on first use, once, off the event loop
        (`ray.get_actor` blocks for ~0.3 ms); so a host can build a directory
        of all hosts, itself included, while it is being constructed."""
        return cls(
            namespace=namespace,
            count=count,
            name_prefix=name_prefix,
            retry_deadline=retry_deadline,
            max_in_flight=max_in_flight,
        )

    @property
    def host_count(self) -> int:
        return self._count

    async def handles(self) -> list[ActorHandle]:
        if self._handles is not None:
            return self._handles
        if self._lookup_lock is None:
            self._lookup_lock = asyncio.Lock()
        async with self._lookup_lock:
            if self._handles is None:
                self._handles = await asyncio.to_thread(self._get_actors)
        return self._handles

    def _get_actors(self) -> list[ActorHandle]:
        handles = []
        for i in range(self._count):
            name = host_name(self._name_prefix, i)
            try:
                handles.append(ray.get_actor(name, namespace=self._namespace))
            except ValueError as exc:  # not registered yet: a host still starting
                raise _HostNotRegistered(name) from exc
        return handles

    def _sender(self, index: int):
        async def send(calls: list[Call]) -> list[Outcome]:
            handles = await self.handles()
            return await handles[index].call_batch.remote(calls)

        return send

    def host_for(self, kind: str, actor_id: str) -> int:
        return pick_host(kind, actor_id, self._count)

    async def call(self, kind: str, actor_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run `method(*args, **kwargs)` on virtual actor `kind/actor_id`.

        Idempotency required: see the class docstring on retries."""
        index = self.host_for(kind, actor_id)
        if index == self._local_index and self._local_host is not None:
            return await self._local_host.call_local(kind, actor_id, method, args, kwargs)
        batcher = self._batchers[index]
        item: Call = (kind, actor_id, method, args, kwargs)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_deadline
        delay = 0.02
        while True:
            try:
                ok, value = await batcher.submit(item)
            except _RETRYABLE as exc:
                if loop.time() + delay > deadline:
                    log.error(
                        "shard host unavailable for %s/%s.%s: %r", kind, actor_id, method, exc
                    )
                    raise Unavailable("actor_host_unavailable", code="service_unavailable") from exc
                ACTOR_RETRIES.inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if ok:
                return value
            raise value

    async def check_health(self) -> None:
        """Raises unless every host answers its health check in time."""
        handles = await self.handles()
        await asyncio.wait_for(
            asyncio.gather(*(h.check_health.remote() for h in handles)), _HEALTH_TIMEOUT
        )

    async def stats(self) -> list[dict[str, Any]]:
        """Every host's `stats()`, in host order."""
        handles = await self.handles()
        return list(await asyncio.gather(*(h.stats.remote() for h in handles)))
