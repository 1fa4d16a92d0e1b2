"""`SchedulerActor`: the Ray actor that runs the job queue and the schedule.

One per platform is enough (named "scheduler"); more are safe, since claims
skip each other's rows and periodic jobs are deduplicated per period. Ray
restarts it when its process dies (`max_restarts=-1`); jobs it held come back
after their lease, so nothing acknowledged is lost.

To add job kinds, register handlers in a module (see `handlers`) and list the
module in `HANDLER_MODULES`.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
from collections.abc import Collection, Sequence
from typing import Any

from unimatch.actors.directory import ActorDirectory
from unimatch.actors.links import remote_directory
from unimatch.domain.config import Config
from unimatch.domain.logs import configure_logging
from unimatch.domain.process_metrics import ProcessMetrics, start_process_metrics
from unimatch.scheduler.handlers import HANDLERS
from unimatch.scheduler.mail import Mailer
from unimatch.scheduler.periodic import PeriodicEnqueuer
from unimatch.scheduler.queue_metrics import QueueGauges
from unimatch.scheduler.worker import JobRunner
from unimatch.storage import jobs as queue
from unimatch.storage.cache import Cache, connect_redis
from unimatch.storage.jobs import Backoff
from unimatch.storage.pg import Database

log = logging.getLogger("unimatch.scheduler")

HANDLER_MODULES = [
    "unimatch.scheduler.mail",
    "unimatch.scheduler.periodic",
    "unimatch.scheduler.backup",
    "unimatch.scheduler.feed_refresh",
    "unimatch.scheduler.webhooks",
    "unimatch.scheduler.sockets",
]

_DRAIN_GRACE_SECONDS = 30.0


def import_handler_modules(extra: Sequence[str] = ()) -> list[str]:
    """Import every handler module (registering its kinds); return their names."""
    imported = []
    for name in [*HANDLER_MODULES, *extra]:
        importlib.import_module(name)
        imported.append(name)
    return imported


class SchedulerActor:
    """Runs a `JobRunner` with `config.scheduler_workers` workers and the
    periodic enqueuer.

    It claims only the kinds registered by its handler modules: a job of a kind
    it does not know (enqueued by a newer release during a rolling deploy, or
    meant for another runner) waits for a scheduler that knows it instead of
    burning its attempts here; `stats()` shows such jobs piling up. With
    `claim_unknown=True` it claims every kind and fails unknown ones (they end
    dead). Other options are for tests and special deployments: `kinds`
    restricts the claim further, `periodic=False` leaves the schedule to
    another scheduler, `handler_modules` adds modules to import."""

    def __init__(
        self,
        config: Config,
        *,
        poll_interval: float = 1.0,
        backoff_base: float = 2.0,
        kinds: Collection[str] | None = None,
        claim_unknown: bool = False,
        periodic: bool = True,
        handler_modules: Sequence[str] = (),
    ) -> None:
        configure_logging(config, process="scheduler")
        self.config = config
        self._options: dict[str, Any] = {
            "poll_interval": poll_interval,
            "backoff": Backoff(base=backoff_base),
        }
        self._kinds = kinds
        self._claim_unknown = claim_unknown
        self._periodic_enabled = periodic
        self._handler_modules = tuple(handler_modules)
        self.db: Database | None = None
        self.cache: Cache | None = None
        self.runner: JobRunner | None = None
        self.periodic: PeriodicEnqueuer | None = None
        self.process_metrics: ProcessMetrics | None = None
        self.queue_gauges: QueueGauges | None = None
        self._draining = False
        # Only scheduled here: `ready()` reports how it went.
        self._startup = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        if not self.config.database_url:
            raise RuntimeError("the scheduler needs config.database_url")
        self.process_metrics = start_process_metrics("scheduler")
        modules = import_handler_modules(self._handler_modules)
        workers = self.config.scheduler_workers
        # Workers + the LISTEN connection + the periodic enqueuer; the overflow
        # serves handlers that open connections of their own.
        self.db = await Database.for_config(self.config, size=workers + 2)
        self.process_metrics.watch_pool(self.db.pool)
        services: dict[type, object] = {
            Mailer: Mailer(self.config),
            # Jobs that reach users' actors (closing a suspended user's sockets).
            ActorDirectory: remote_directory(
                self.config.namespace, self.config.nodes,
                cluster=self.config.ray_address is not None,
            ),
        }
        if self.config.redis_url:
            self.cache = Cache(connect_redis(self.config.redis_url), self.config.redis_prefix)
            services[Cache] = self.cache
        kinds = self._kinds
        if kinds is None and not self._claim_unknown:
            kinds = sorted(HANDLERS)
        self.runner = JobRunner(
            self.db, self.config, workers=workers, services=services, kinds=kinds,
            **self._options,
        )
        await self.runner.start()
        self.queue_gauges = QueueGauges(self.db, lambda: HANDLERS)
        self.queue_gauges.start()
        if self._periodic_enabled:
            self.periodic = PeriodicEnqueuer(self.db)
            self.periodic.start()
        log.info(
            "scheduler started: %d workers, modules %s, kinds %s",
            workers, modules, "all" if kinds is None else kinds,
        )

    async def ready(self) -> None:
        """Returns once started; re-raises whatever made the start fail."""
        await self._startup

    def check_health(self) -> None:
        """Raises when startup failed or a worker died, for whoever watches
        the platform's actors (readiness, a supervisor that restarts it)."""
        if self._startup.done():
            if not self._startup.cancelled() and self._startup.exception() is not None:
                raise RuntimeError("scheduler failed to start") from self._startup.exception()
            if self.runner is not None and not self._draining:
                self.runner.check_health()

    async def drain(self, grace: float = _DRAIN_GRACE_SECONDS) -> None:
        """Stop scheduling and claiming, let running jobs finish (up to
        `grace` seconds, then they are released for another scheduler), and
        close the clients. Idempotent."""
        self._draining = True
        if not self._startup.done():
            self._startup.cancel()
        await asyncio.gather(self._startup, return_exceptions=True)
        if self.periodic is not None:
            await self.periodic.stop()
        if self.queue_gauges is not None:
            await self.queue_gauges.stop()
        if self.runner is not None:
            await self.runner.stop(grace)
        if self.cache is not None:
            await self.cache.close()
            self.cache = None
        if self.db is not None:
            await self.db.close()
            self.db = None
        if self.process_metrics is not None:
            await self.process_metrics.stop()
            self.process_metrics = None

    async def stats(self) -> dict[str, dict[str, int]]:
        """`{kind: {"queued" | "running" | "dead": count}}` over the whole queue,
        plus `{"_runner": {"running_jobs": n}}` for this actor."""
        await self._startup
        assert self.db is not None and self.runner is not None
        result = await queue.counts(self.db)
        result["_runner"] = {"running_jobs": self.runner.running_jobs}
        return result


def start_scheduler(config: Config, *, name: str = "scheduler", **options: Any) -> Any:
    """Create the scheduler as a named Ray actor in `config.namespace` and
    return its handle (await `handle.ready.remote()` before relying on it).
    `options` go to `SchedulerActor`."""
    import ray

    actor_class = ray.remote(SchedulerActor)
    return actor_class.options(  # type: ignore[attr-defined]
        name=name,
        namespace=config.namespace,
        num_cpus=0,
        max_restarts=-1,
        # A retried call after a restart could drain twice or report a stale
        # state; callers decide whether to call again.
        max_task_retries=0,
        runtime_env={"env_vars": {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}},
    ).remote(config, **options)


def stop_scheduler(handle: Any, *, grace: float = _DRAIN_GRACE_SECONDS) -> None:
    """Drain the actor (running jobs finish or are released), then kill it for
    good. Blocking: from async code, run it in a thread."""
    import ray

    try:
        ray.get(handle.drain.remote(grace), timeout=grace + 30)
    except Exception as exc:
        log.warning("scheduler did not drain cleanly: %r", exc)
    ray.kill(handle, no_restart=True)
