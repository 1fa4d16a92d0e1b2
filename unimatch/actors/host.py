"""The actor host: the virtual actors living in one node's process.

Each activation has a serial mailbox (a deque drained by one task): its
messages run one at a time, in arrival order, while different actors run
concurrently on the node's event loop. A mailbox is bounded: past
`mailbox_limit` waiting messages a call is refused at once with
`overloaded`, so one flooded actor costs its callers an error instead of
costing every other actor of the node memory and latency.

The host knows nothing of Ray or of sockets: a node (unimatch.server.node)
feeds it calls from its own sockets and from other nodes alike.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from unimatch.actors.base import Services, VirtualActor
from unimatch.actors.ports import Call
from unimatch.domain.errors import DomainError, NotFound, RateLimited, Unavailable
from unimatch.domain.metrics import (
    ACTOR_ACTIVATIONS,
    ACTOR_CALL_LATENCY,
    ACTOR_CALLS,
    ACTOR_OVERLOADED,
    ACTOR_PASSIVATIONS,
    ACTORS_ACTIVE,
)

log = logging.getLogger("unimatch.actors")

# Virtual-actor kinds by name, as "module:Class", imported on first use (so a
# node only imports what it runs). `Config.actor_kinds` adds to these.
KINDS: dict[str, str] = {
    "user": "unimatch.actors.user:UserActor",
    "match": "unimatch.actors.match:MatchActor",
}

_STATS_TOP = 5
_DRAIN_GRACE = 10.0
# The `retry_after` of a call refused by a full mailbox.
OVERLOAD_RETRY = 1.0


@dataclass(eq=False, slots=True)
class _Message:
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: asyncio.Future[Any] | None  # None: a timer's message, nobody waits
    enqueued: float


@dataclass(eq=False)
class _Activation:
    kind: str
    actor_id: str
    mailbox: deque[_Message] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    busy: bool = False
    stopping: bool = False
    last_used: float = 0.0
    task: asyncio.Task[None] | None = None
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def depth(self) -> int:
        """Messages waiting, plus the one running."""
        return len(self.mailbox) + (1 if self.busy else 0)


class _Context:
    """`ActorContext` of one activation (see unimatch.actors.base)."""

    __slots__ = ("_activation", "_host")

    def __init__(self, host: ActorHost, activation: _Activation) -> None:
        self._host, self._activation = host, activation

    def schedule(self, delay: float, method: str, *args: Any) -> None:
        activation = self._activation
        if activation.stopping:
            return
        previous = activation.timers.pop(method, None)
        if previous is not None:
            previous.cancel()

        def due() -> None:
            activation.timers.pop(method, None)
            self._host._post(activation, _Message(method, args, {}, None, time.monotonic()))

        activation.timers[method] = asyncio.get_running_loop().call_later(delay, due)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._activation.tasks.add(task)
        task.add_done_callback(self._activation.tasks.discard)


class ActorHost:
    """Hosts virtual actors in this process. `start(services)` once the
    node's collaborators exist; then `submit` calls."""

    def __init__(self, config: Any, *, mailbox_limit: int | None = None) -> None:
        self.config = config
        self.mailbox_limit = mailbox_limit if mailbox_limit is not None else config.mailbox_limit
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
        self._refused_total = 0
        self._reaper: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self, services: Services) -> None:
        """Take the node's collaborators and start passivating idle actors."""
        self._services = services
        interval = max(min(self.config.passivate_after / 4, 30.0), 0.01)
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever(interval))

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("actor host not started")
        return self._services

    def check_health(self) -> None:
        """Raises when the host cannot serve."""
        if self._reaper is None or self._reaper.done():
            raise RuntimeError("passivation reaper stopped")

    async def drain(self) -> None:
        """Refuse new calls, let the queued ones finish (for a while),
        passivate every actor."""
        self._draining = True
        activations = list(self._activations.values())
        self._activations.clear()
        for activation in activations:
            self._stop(activation)
        tasks = [a.task for a in activations if a.task is not None]
        tasks += list(self._passivating.values())
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=_DRAIN_GRACE)
            for task in stuck:
                task.cancel()
        if self._reaper is not None:
            self._reaper.cancel()

    # -- calls ---------------------------------------------------------------

    def submit(self, call: Call) -> asyncio.Future[Any]:
        """Put a call in its actor's mailbox (activating it); never awaits.
        The future holds the result or the actor's exception. Calls submitted
        in some order to one actor run in that order."""
        kind, actor_id, method, args, kwargs = call
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        try:
            activation = self._activation_for(kind, actor_id, method)
        except DomainError as exc:
            future.set_exception(exc)
            return future
        if len(activation.mailbox) >= self.mailbox_limit:
            self._refused_total += 1
            ACTOR_OVERLOADED.labels(kind).inc()
            future.set_exception(
                RateLimited("this conversation is busy; try again shortly",
                            retry_after=OVERLOAD_RETRY, code="overloaded")
            )
            return future
        self._post(activation, _Message(method, args, kwargs, future, time.monotonic()))
        return future

    def _activation_for(self, kind: str, actor_id: str, method: str) -> _Activation:
        if self._draining:
            raise Unavailable("node_draining", code="service_unavailable")
        self._check_method(kind, method)
        key = (kind, actor_id)
        activation = self._activations.get(key)
        if activation is None:
            activation = _Activation(kind, actor_id, last_used=time.monotonic())
            self._activations[key] = activation
            activation.task = asyncio.get_running_loop().create_task(self._run(activation))
        return activation

    @staticmethod
    def _post(activation: _Activation, message: _Message) -> None:
        if activation.stopping:
            if message.future is not None and not message.future.done():
                message.future.set_exception(
                    Unavailable("actor_stopped", code="service_unavailable"))
            return
        activation.mailbox.append(message)
        activation.wake.set()

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
            attr = getattr(self._actor_class(kind), method, None)
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
            actor = self._actor_class(activation.kind)(
                activation.actor_id, self.services, _Context(self, activation)
            )
            await actor.on_activate()
        except Exception as exc:
            log.warning("activation of %s/%s failed: %r", *key, exc)
            # Discard it before failing the waiting messages: no await between,
            # so every message in this mailbox fails and the next reactivates.
            if self._activations.get(key) is activation:
                del self._activations[key]
            activation.stopping = True
            self._fail_queued(activation, exc)
            return
        self._activations_total += 1
        ACTOR_ACTIVATIONS.labels(activation.kind).inc()
        ACTORS_ACTIVE.labels(activation.kind).inc()
        # Labelled children looked up once per activation, not per message.
        latency = ACTOR_CALL_LATENCY.labels(activation.kind)
        counted = {o: ACTOR_CALLS.labels(activation.kind, o) for o in ("ok", "error", "failed")}
        mailbox = activation.mailbox
        try:
            while True:
                if not mailbox:
                    if activation.stopping:
                        break
                    activation.wake.clear()
                    await activation.wake.wait()
                    continue
                message = mailbox.popleft()
                future = message.future
                if future is not None and future.done():  # the caller gave up
                    continue
                activation.busy = True
                try:
                    result = await getattr(actor, message.method)(*message.args, **message.kwargs)
                except Exception as exc:
                    outcome = "error" if isinstance(exc, DomainError) else "failed"
                    if outcome == "failed":
                        log.exception("%s/%s.%s failed", *key, message.method)
                    if future is not None and not future.done():
                        future.set_exception(exc)
                else:
                    outcome = "ok"
                    if future is not None and not future.done():
                        future.set_result(result)
                finally:
                    activation.busy = False
                    activation.last_used = now = time.monotonic()
                    if future is not None and not future.done():  # cancelled mid-method
                        future.set_exception(
                            Unavailable("actor_stopped", code="service_unavailable"))
                latency.observe(now - message.enqueued)
                counted[outcome].inc()
                if mailbox:
                    # Let the node's other actors (and sockets) run between two
                    # messages of a busy one: a flood stays its own problem.
                    await asyncio.sleep(0)
                if (not actor.worth_keeping and not mailbox
                        and self._activations.get(key) is activation):
                    # Nothing to keep: no entity, or nothing held in memory.
                    self._passivate(activation)
        finally:
            ACTORS_ACTIVE.labels(activation.kind).dec()
            activation.stopping = True
            for timer in activation.timers.values():
                timer.cancel()
            activation.timers.clear()
            self._fail_queued(activation, Unavailable("actor_stopped", code="service_unavailable"))
        try:
            await actor.on_passivate()
            if activation.tasks:
                await asyncio.wait(list(activation.tasks), timeout=_DRAIN_GRACE)
        except Exception:
            log.exception("passivation of %s/%s failed", *key)
        self._passivations_total += 1
        ACTOR_PASSIVATIONS.labels(activation.kind).inc()

    @staticmethod
    def _fail_queued(activation: _Activation, exc: BaseException) -> None:
        while activation.mailbox:
            future = activation.mailbox.popleft().future
            if future is not None and not future.done():
                future.set_exception(exc)

    def _stop(self, activation: _Activation) -> None:
        """Let the activation finish what is queued, then passivate."""
        activation.stopping = True
        activation.wake.set()

    def _passivate(self, activation: _Activation) -> None:
        key = (activation.kind, activation.actor_id)
        del self._activations[key]
        self._stop(activation)
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
                self.reap_idle()
            except Exception:  # keep reaping: one bad pass must not stop passivation
                log.exception("passivation pass failed")

    def reap_idle(self) -> int:
        """Passivate the actors idle for `passivate_after`; how many."""
        cutoff = time.monotonic() - self.config.passivate_after
        idle = [
            a for a in self._activations.values()
            if not a.busy and not a.mailbox and a.last_used <= cutoff
        ]
        for activation in idle:
            self._passivate(activation)
        return len(idle)

    # -- observation ---------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts and mailbox depths, for tests, benchmarks and operators."""
        activations = list(self._activations.values())
        depths = [a.depth for a in activations]
        top = sorted(activations, key=lambda a: a.depth, reverse=True)[:_STATS_TOP]
        return {
            "pid": os.getpid(),
            "draining": self._draining,
            "activations_total": self._activations_total,
            "passivations_total": self._passivations_total,
            "refused_total": self._refused_total,
            "active": dict(Counter(a.kind for a in activations)),
            "mailbox_max": max(depths, default=0),
            "mailbox_total": sum(depths),
            "mailbox_top": [
                {"kind": a.kind, "id": a.actor_id, "depth": a.depth} for a in top if a.depth
            ],
            "time": time.time(),
        }
