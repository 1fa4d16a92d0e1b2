"""The shard host: a Ray actor that hosts many virtual actors.

Each virtual actor activated here has a serial mailbox (an `asyncio.Queue`
drained by one task): its messages run one at a time, in arrival order, while
different actors run concurrently on the host's event loop. Ray restarts a
host that dies (`max_restarts=-1`); the actors it held come back on their next
message, with their state reloaded from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import pickle
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.actor import ActorHandle

from unimatch.actors.base import Services, VirtualActor
from unimatch.actors.directory import DEFAULT_NAME_PREFIX, ActorDirectory, Call, Outcome, host_name
from unimatch.config import Config
from unimatch.errors import DomainError, NotFound, Unavailable
from unimatch.logs import configure_logging
from unimatch.metrics import (
    ACTOR_ACTIVATIONS,
    ACTOR_CALL_LATENCY,
    ACTOR_CALLS,
    ACTOR_PASSIVATIONS,
    ACTORS_ACTIVE,
)
from unimatch.runtime import tune_gc
from unimatch.storage.cache import Cache, connect_redis
from unimatch.storage.pg import Database

log = logging.getLogger("unimatch.actors")

# Virtual-actor kinds by name, as "module:Class", imported on first use (so a
# host only imports what it runs). `Config.actor_kinds` adds to these.
KINDS: dict[str, str] = {
    "user": "unimatch.actors.user:UserActor",
    "match": "unimatch.actors.match:MatchActor",
}

_STATS_TOP = 5
_DRAIN_GRACE = 10.0


@dataclass(eq=False)
class _Message:
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: asyncio.Future[Any]
    enqueued: float


_STOP = object()  # queued behind the last message to passivate an activation


@dataclass(eq=False)
class _Activation:
    kind: str
    actor_id: str
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    busy: bool = False
    last_used: float = 0.0
    task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Messages waiting, plus the one running."""
        return self.queue.qsize() + (1 if self.busy else 0)


class ShardHost:
    """Hosts virtual actors; run it under Ray with `start_shard_hosts`.

    `__init__` only schedules start-up (clients need the actor's event loop);
    `ready()` waits for it and re-raises its failure.
    """

    def __init__(
        self,
        config: Config,
        index: int,
        *,
        name_prefix: str = DEFAULT_NAME_PREFIX,
        directory: ActorDirectory | None = None,
    ) -> None:
        configure_logging(config, process=f"host-{index}")
        self.config = config
        self.index = index
        self._name_prefix = name_prefix
        self._directory = directory
        self._kinds: dict[str, str] = {**KINDS, **dict(config.actor_kinds)}
        self._classes: dict[str, type[VirtualActor]] = {}
        self._methods: dict[tuple[str, str], bool] = {}
        self._activations: dict[tuple[str, str], _Activation] = {}
        # Passivations still running, so a reactivation waits for the last
        # on_passivate of the same actor before loading its state.
        self._passivating: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._services: Services | None = None
        self._draining = False
        self._activations_total = 0
        self._passivations_total = 0
        self._reaper: asyncio.Task[None] | None = None
        self._startup: asyncio.Task[None] | None = None
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet (sync constructor): start on the first call
        self._start()

    # -- lifecycle -----------------------------------------------------------

    def _start(self) -> asyncio.Task[None]:
        if self._startup is None:
            self._startup = asyncio.get_running_loop().create_task(self._open())
        return self._startup

    async def _open(self) -> None:
        config = self.config
        if not config.database_url or not config.redis_url:
            raise RuntimeError("shard host needs database_url and redis_url")
        db = await Database.connect(
            config.database_url,
            size=config.pg_pool_size,
            overflow=config.pg_pool_overflow,
            retries=config.pg_retries,
            slow_query_ms=config.slow_query_ms,
        )
        cache = Cache(connect_redis(config.redis_url), config.redis_prefix)
        directory = self._directory
        if directory is None:
            directory = ActorDirectory.lookup(
                config.namespace, config.shard_hosts, name_prefix=self._name_prefix
            )
            # Actors of this host calling each other stay in this process.
            directory.bind_local(self.index, self)
        self._services = Services(
            config=config, db=db, cache=cache, directory=directory, host_index=self.index
        )
        interval = max(min(config.passivate_after / 4, 30.0), 0.01)
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever(interval))
        if self._directory is None:  # a host of its own process, not one in a test's
            tune_gc()

    async def ready(self) -> None:
        """Wait for start-up; re-raises its failure."""
        await self._start()

    async def check_health(self) -> None:
        """Raises when the host cannot serve. A database that is down is not
        counted: a restarted host would not fix it, and calls report it."""
        await self._start()
        if self._reaper is None or self._reaper.done():
            raise RuntimeError("passivation reaper stopped")

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("shard host not started: await ready() first")
        return self._services

    async def drain(self) -> None:
        """Stop accepting calls, let the queued ones finish (for a while),
        passivate every actor, close the clients."""
        self._draining = True
        await self._start()
        activations = list(self._activations.values())
        self._activations.clear()
        for activation in activations:
            activation.queue.put_nowait(_STOP)
        tasks = [a.task for a in activations if a.task is not None]
        tasks += list(self._passivating.values())
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=_DRAIN_GRACE)
            for task in stuck:
                task.cancel()
        if self._reaper is not None:
            self._reaper.cancel()
        services = self.services
        await services.cache.close()
        await services.db.close()

    # -- calls ---------------------------------------------------------------

    async def call(
        self, kind: str, actor_id: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """One call; its errors are raised (Ray wraps all but domain errors)."""
        await self._start()
        return await self._enqueue(kind, actor_id, method, args, kwargs)

    async def call_local(
        self, kind: str, actor_id: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A call from this process (`ActorDirectory.bind_local`): the same
        mailbox as a remote one, without Ray; its errors are raised as is."""
        startup = self._start()
        if not startup.done():
            await startup
        startup.result()
        return await self._enqueue(kind, actor_id, method, args, kwargs)

    async def call_batch(self, calls: list[Call]) -> list[Outcome]:
        """Many calls in arrival order; one (ok, result-or-exception) each.

        Every call is in its mailbox before the first await, so calls to one
        actor keep their order within the batch and across batches."""
        startup = self._start()
        if not startup.done():
            await startup
        startup.result()  # re-raise a failed start-up
        futures: list[asyncio.Future[Any]] = []
        for kind, actor_id, method, args, kwargs in calls:
            try:
                futures.append(self._enqueue(kind, actor_id, method, args, kwargs))
            except Exception as exc:
                failed = asyncio.get_running_loop().create_future()
                failed.set_exception(exc)
                futures.append(failed)
        pending = [f for f in futures if not f.done()]
        if pending:
            await asyncio.wait(pending)
        outcomes: list[Outcome] = []
        for future in futures:
            error = future.exception()
            outcomes.append((True, future.result()) if error is None else (False, _portable(error)))
        return outcomes

    def _enqueue(
        self, kind: str, actor_id: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        """Put a message in the actor's mailbox (activating it); never awaits."""
        if self._draining:
            raise Unavailable("shard_host_draining", code="service_unavailable")
        self._check_method(kind, method)
        key = (kind, actor_id)
        activation = self._activations.get(key)
        loop = asyncio.get_running_loop()
        if activation is None:
            activation = _Activation(kind, actor_id, last_used=loop.time())
            self._activations[key] = activation
            activation.task = loop.create_task(self._run(activation))
        future: asyncio.Future[Any] = loop.create_future()
        activation.queue.put_nowait(_Message(method, args, kwargs, future, loop.time()))
        return future

    def _actor_class(self, kind: str) -> type[VirtualActor]:
        cls = self._classes.get(kind)
        if cls is None:
            target = self._kinds.get(kind)
            if target is None:
                raise NotFound({"kind": kind}, code="unknown_actor_kind")
            module_name, _, class_name = target.partition(":")
            cls = getattr(importlib.import_module(module_name), class_name)
            if not (isinstance(cls, type) and issubclass(cls, VirtualActor)):
                raise TypeError(f"{target} is not a VirtualActor")
            self._classes[kind] = cls
        return cls

    def _check_method(self, kind: str, method: str) -> None:
        known = self._methods.get((kind, method))
        if known is None:
            cls = self._actor_class(kind)
            attr = getattr(cls, method, None)
            known = (
                not method.startswith(("_", "on_"))
                and attr is not None
                and inspect.iscoroutinefunction(attr)
            )
            self._methods[(kind, method)] = known
        if not known:
            raise NotFound({"kind": kind, "method": method}, code="unknown_actor_method")

    # -- one activation ------------------------------------------------------

    async def _run(self, activation: _Activation) -> None:
        """The mailbox loop of one activation, from on_activate to on_passivate."""
        key = (activation.kind, activation.actor_id)
        previous = self._passivating.get(key)
        if previous is not None:
            await asyncio.wait([previous])
        try:
            actor = self._actor_class(activation.kind)(activation.actor_id, self.services)
            await actor.on_activate()
        except Exception as exc:
            log.warning("activation of %s/%s failed: %r", *key, exc)
            # Discard it before failing the waiting messages: no await between,
            # so every message in this queue fails and the next one reactivates.
            if self._activations.get(key) is activation:
                del self._activations[key]
            self._fail_queued(activation, exc)
            return
        self._activations_total += 1
        ACTOR_ACTIVATIONS.labels(activation.kind).inc()
        ACTORS_ACTIVE.labels(activation.kind).inc()
        # Labelled children looked up once per activation, not per message.
        latency = ACTOR_CALL_LATENCY.labels(activation.kind)
        counted = {o: ACTOR_CALLS.labels(activation.kind, o) for o in ("ok", "error", "failed")}
        loop = asyncio.get_running_loop()
        try:
            while True:
                message = await activation.queue.get()
                if message is _STOP:
                    break
                if message.future.done():  # the caller was cancelled
                    continue
                activation.busy = True
                try:
                    result = await getattr(actor, message.method)(*message.args, **message.kwargs)
                except Exception as exc:
                    outcome = "error" if isinstance(exc, DomainError) else "failed"
                    if outcome == "failed":
                        log.exception("%s/%s.%s failed", *key, message.method)
                    if not message.future.done():
                        message.future.set_exception(exc)
                else:
                    outcome = "ok"
                    if not message.future.done():
                        message.future.set_result(result)
                finally:
                    activation.busy = False
                    activation.last_used = now = loop.time()
                    if not message.future.done():  # cancelled mid-method: answer anyway
                        message.future.set_exception(
                            Unavailable("actor_stopped", code="service_unavailable")
                        )
                latency.observe(now - message.enqueued)
                counted[outcome].inc()
        finally:
            ACTORS_ACTIVE.labels(activation.kind).dec()
            self._fail_queued(activation, Unavailable("actor_stopped", code="service_unavailable"))
        try:
            await actor.on_passivate()
        except Exception:
            log.exception("passivation of %s/%s failed", *key)
        self._passivations_total += 1
        ACTOR_PASSIVATIONS.labels(activation.kind).inc()

    @staticmethod
    def _fail_queued(activation: _Activation, exc: BaseException) -> None:
        while not activation.queue.empty():
            message = activation.queue.get_nowait()
            if message is not _STOP and not message.future.done():
                message.future.set_exception(exc)

    def _passivate(self, activation: _Activation) -> None:
        key = (activation.kind, activation.actor_id)
        del self._activations[key]
        activation.queue.put_nowait(_STOP)
        task = activation.task
        if task is None:
            return
        self._passivating[key] = task

        def forget(_: asyncio.Task[None]) -> None:
            if self._passivating.get(key) is task:
                del self._passivating[key]

        task.add_done_callback(forget)

    async def _reap_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap_idle()
            except Exception:  # keep reaping: one bad pass must not stop passivation
                log.exception("passivation pass failed")

    async def reap_idle(self) -> int:
        """Passivate the actors idle for `passivate_after`; how many."""
        cutoff = asyncio.get_running_loop().time() - self.config.passivate_after
        idle = [
            a
            for a in self._activations.values()
            if not a.busy and a.queue.empty() and a.last_used <= cutoff
        ]
        for activation in idle:
            self._passivate(activation)
        return len(idle)

    # -- observation ---------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        """Counts and mailbox depths, for tests, benchmarks and operators."""
        activations = list(self._activations.values())
        depths = [a.depth for a in activations]
        top = sorted(activations, key=lambda a: a.depth, reverse=True)[:_STATS_TOP]
        return {
            "host": self.index,
            "pid": os.getpid(),
            "draining": self._draining,
            "activations_total": self._activations_total,
            "passivations_total": self._passivations_total,
            "active": dict(Counter(a.kind for a in activations)),
            "mailbox_max": max(depths, default=0),
            "mailbox_total": sum(depths),
            "mailbox_top": [
                {"kind": a.kind, "id": a.actor_id, "depth": a.depth} for a in top if a.depth
            ],
            "time": time.time(),
        }


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a stand-in: one
    unpicklable exception must not fail the whole batch it travels in."""
    if isinstance(exc, DomainError):
        return exc
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__qualname__}: {exc}")
    return exc


def actor_env() -> dict[str, str]:
    """The environment our Ray actors start with: Ray on loopback, and the
    Prometheus multiprocess folder when there is one."""
    keep = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "PROMETHEUS_MULTIPROC_DIR")
    env = {name: os.environ[name] for name in keep if os.environ.get(name)}
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    return env


def server_actor_options(config: Config, name: str) -> dict[str, Any]:
    """Ray options of a long-lived server actor (host, gateway, node): named,
    restarted by Ray for ever, calls never retried by Ray (the directory
    does), async with room for thousands of calls at once."""
    return {
        "name": name,
        "namespace": config.namespace,
        "num_cpus": 0,
        "max_restarts": -1,
        "max_task_retries": 0,
        "max_concurrency": 10_000,
        "runtime_env": {"env_vars": actor_env()},
    }


def start_shard_hosts(
    config: Config, *, name_prefix: str = DEFAULT_NAME_PREFIX
) -> list[ActorHandle]:
    """Create `config.shard_hosts` hosts named `{name_prefix}-{i}` in the
    current Ray namespace and wait until all are ready (blocking: from async
    code, run it with `asyncio.to_thread`).

    The hosts are not detached: they belong to the caller and die with it, so
    a crashed launcher leaves no orphans. Ray restarts a host forever
    (`max_restarts=-1`) but never retries a call on it (`max_task_retries=0`):
    the `ActorDirectory` retries, within its deadline."""
    return start_host_actors(
        config, ShardHost, lambda i: ((config, i), {"name_prefix": name_prefix}), name_prefix
    )


def start_host_actors(
    config: Config,
    cls: type,
    arguments: Callable[[int], tuple[tuple[Any, ...], dict[str, Any]]],
    name_prefix: str = DEFAULT_NAME_PREFIX,
) -> list[ActorHandle]:
    """Create `config.shard_hosts` actors of `cls` (a shard host, or a node
    that is one), named `{name_prefix}-{i}` and built with `arguments(i)`,
    and wait until all are ready; none is left running if one fails."""
    remote_cls: Any = ray.remote(cls)
    handles: list[ActorHandle] = []
    for i in range(config.shard_hosts):
        args, kwargs = arguments(i)
        handles.append(
            remote_cls.options(**server_actor_options(config, host_name(name_prefix, i))).remote(
                *args, **kwargs
            )
        )
    try:
        ray.get([h.ready.remote() for h in handles])
    except BaseException:
        for handle in handles:
            ray.kill(handle, no_restart=True)
        raise
    return handles


def stop_shard_hosts(handles: list[ActorHandle], *, timeout: float = 30.0) -> None:
    """Drain every host (passivating its actors), then end it for good."""
    try:
        ray.get([h.drain.remote() for h in handles], timeout=timeout)
    except Exception as exc:  # a host that cannot drain is killed all the same
        log.warning("drain before stop failed: %r", exc)
    for handle in handles:
        ray.kill(handle, no_restart=True)
