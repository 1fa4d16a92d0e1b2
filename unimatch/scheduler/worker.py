"""`JobRunner`: N asyncio workers in one process executing queued jobs.

Each worker claims one job at a time (`queue.claim` with SKIP LOCKED, so any
number of workers and processes share the queue without running a job twice
concurrently), runs its handler, and records the outcome. Idle workers wait
for a NOTIFY on `queue.CHANNEL` (sent by `enqueue` on commit) or poll after
`poll_interval` seconds, which also catches delayed and retried jobs, and jobs
whose lease expired.

While a handler runs, its lease is renewed every third of `lease_seconds`: a
long job keeps its claim while its process lives, and loses it within one
lease of the process dying. A handler whose lease is lost anyway (the database
was unreachable for a whole lease) is cancelled, since someone else now runs
the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
import traceback
from collections.abc import Awaitable, Callable, Collection, Mapping

from unimatch.domain.config import Config
from unimatch.domain.metrics import JOB_LATENCY, JOBS
from unimatch.scheduler.handlers import HANDLERS, Handler, JobContext, PermanentJobError
from unimatch.storage import jobs as queue
from unimatch.storage.jobs import DEFAULT_BACKOFF, Backoff, Job
from unimatch.storage.pg import Database

log = logging.getLogger("unimatch.jobs")

# Outcomes, the `outcome` label of JOBS.
DONE = "done"
RETRY = "retry"
DEAD = "dead"
LOST = "lost"  # the claim passed to another worker before we recorded anything
RELEASED = "released"  # given back at shutdown

_LISTEN_RETRY_SECONDS = 2.0


class JobRunner:
    """Runs jobs with `workers` concurrent asyncio tasks until `stop()`.

    `handlers` defaults to the global registry (read at each job, so modules
    imported later count). `kinds` restricts what is claimed; None claims every
    kind, and a job whose kind has no handler fails with a clear error (and,
    after its attempts and their backoff, is dead: never a busy loop).
    `services` are handed to handlers through `JobContext.service(cls)`.
    `on_finished(job, outcome)` is called after each recorded outcome.
    """

    def __init__(
        self,
        db: Database,
        config: Config,
        *,
        workers: int | None = None,
        handlers: Mapping[str, Handler] | None = None,
        kinds: Collection[str] | None = None,
        services: Mapping[type, object] | None = None,
        lease_seconds: float | None = None,
        poll_interval: float = 1.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        job_timeout: float = 600.0,
        name: str | None = None,
        listen: bool = True,
        on_finished: Callable[[Job, str], None] | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.workers = workers if workers is not None else config.scheduler_workers
        self.handlers: Mapping[str, Handler] = HANDLERS if handlers is None else handlers
        self.kinds = None if kinds is None else frozenset(kinds)
        self.services: Mapping[type, object] = dict(services or {})
        self.lease_seconds = (
            lease_seconds if lease_seconds is not None else config.job_lease_seconds
        )
        self.poll_interval = poll_interval
        self.backoff = backoff
        self.job_timeout = job_timeout
        # Unique per process and start, so claims of a restarted process never
        # look like its predecessor's.
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.listen = listen
        self.on_finished = on_finished
        # One token wakes one idle worker; bounded so a burst of NOTIFYs while
        # everyone is busy costs at most one extra empty claim per worker.
        self._wakeups: asyncio.Queue[None] = asyncio.Queue(maxsize=max(self.workers, 1))
        self._stopping = False
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._listener_task: asyncio.Task[None] | None = None
        self._running: dict[asyncio.Task[None], Job] = {}

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        if self._worker_tasks:
            raise RuntimeError("JobRunner already started")
        if self.listen:
            self._listener_task = asyncio.create_task(self._listen(), name=f"{self.name}/listen")
        self._worker_tasks = [
            asyncio.create_task(self._work(f"{self.name}/{index}"), name=f"{self.name}/{index}")
            for index in range(self.workers)
        ]

    async def stop(self, grace: float = 30.0) -> None:
        """Stop claiming; let running jobs finish for up to `grace` seconds,
        then cancel the rest and release their jobs (due at once, for another
        runner). Idempotent."""
        self._stopping = True
        self._wake_all()
        tasks = [task for task in self._worker_tasks if not task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                log.warning("cancelling %d jobs still running at shutdown", len(self._running))
                for handler_task in list(self._running):
                    handler_task.cancel()
                _, pending = await asyncio.wait(pending, timeout=10)
                for task in pending:
                    task.cancel()
        if self._listener_task is not None:
            self._listener_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener_task
            self._listener_task = None

    @property
    def running_jobs(self) -> int:
        return len(self._running)

    def check_health(self) -> None:
        """Raises when a worker task died (it never should: they catch all)."""
        for task in self._worker_tasks:
            if task.done() and not self._stopping:
                error = None if task.cancelled() else task.exception()
                raise RuntimeError(f"job worker {task.get_name()} exited: {error!r}")

    def wake(self) -> None:
        """Wake one idle worker (what a NOTIFY does)."""
        with contextlib.suppress(asyncio.QueueFull):
            self._wakeups.put_nowait(None)

    def _wake_all(self) -> None:
        for _ in range(self.workers):
            self.wake()

    # -- waking ------------------------------------------------------------

    def _on_notify(self, _conn: object, _pid: int, _channel: str, kind: str) -> None:
        if self.kinds is None or kind in self.kinds:
            self.wake()

    async def _listen(self) -> None:
        """Hold one connection LISTENing; re-establish it when it drops. While
        it is down, workers still poll, only with more latency."""
        while not self._stopping:
            try:
                await self._listen_until_lost()
                log.warning("job notification connection lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot LISTEN for jobs (%r); polling meanwhile", exc)
            await asyncio.sleep(_LISTEN_RETRY_SECONDS)

    async def _listen_until_lost(self) -> None:
        async with self.db.connection() as conn:
            lost = asyncio.Event()

            def on_lost(_conn: object) -> None:
                lost.set()

            conn.add_termination_listener(on_lost)
            await conn.add_listener(queue.CHANNEL, self._on_notify)
            # Jobs may have been enqueued while nobody was listening.
            self._wake_all()
            try:
                await lost.wait()
            finally:
                conn.remove_termination_listener(on_lost)
                if not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.remove_listener(queue.CHANNEL, self._on_notify)

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeups.get(), self.poll_interval)

    # -- working -----------------------------------------------------------

    async def _work(self, worker_id: str) -> None:
        while not self._stopping:
            try:
                jobs = await queue.claim(
                    self.db, worker_id, self.lease_seconds, 1, kinds=self.kinds
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The database is down or restarting: keep polling politely.
                log.warning("job claim failed: %r", exc)
                await self._idle()
                continue
            if not jobs:
                await self._idle()
                continue
            job = jobs[0]
            if self._stopping:
                await self._record(job, RELEASED, queue.release(self.db, job, started=False))
                return
            await self._run(job)

    async def _run(self, job: Job) -> None:
        handler = self.handlers.get(job.kind)
        if handler is None:
            error = f"no handler registered for job kind {job.kind!r}"
            log.error("%s (job %s, attempt %d)", error, job.id, job.attempts)
            await self._record_failure(job, error, permanent=False)
            return
        context = JobContext(job=job, db=self.db, config=self.config, services=self.services)
        started = time.perf_counter()
        handler_task = asyncio.create_task(self._call(handler, job, context))
        self._running[handler_task] = job
        heartbeat = asyncio.create_task(self._keep_lease(job, handler_task))
        try:
            await asyncio.wait({handler_task})
        finally:
            # Reached early only if this worker itself is cancelled.
            if not handler_task.done():
                handler_task.cancel()
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self._running.pop(handler_task, None)
        JOB_LATENCY.labels(job.kind).observe(time.perf_counter() - started)

        if handler_task.cancelled():
            if self._stopping:
                await self._record(
                    job, RELEASED, queue.release(self.db, job, error="cancelled at shutdown")
                )
            else:
                # Only `_keep_lease` cancels otherwise: the claim is gone.
                self._count(job, LOST)
            return
        exc = handler_task.exception()
        if exc is None:
            await self._record(job, DONE, queue.complete(self.db, job))
        else:
            error = "".join(traceback.format_exception(exc))
            log.log(
                logging.ERROR if job.is_last_attempt else logging.WARNING,
                "job %s %s attempt %d/%d failed: %r",
                job.kind, job.id, job.attempts, job.max_attempts, exc,
            )
            await self._record_failure(job, error, permanent=isinstance(exc, PermanentJobError))

    async def _call(self, handler: Handler, job: Job, context: JobContext) -> None:
        async with asyncio.timeout(self.job_timeout):
            await handler(job.payload, context)

    async def _keep_lease(self, job: Job, handler_task: asyncio.Task[None]) -> None:
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                held = await queue.extend_lease(self.db, job, self.lease_seconds)
            except Exception as exc:
                # Try again next beat; the lease has two more beats of slack.
                log.warning("lease renewal of job %s failed: %r", job.id, exc)
                continue
            if not held:
                log.error("job %s %s lost its lease; cancelling its handler", job.kind, job.id)
                handler_task.cancel()
                return

    async def _record_failure(self, job: Job, error: str, *, permanent: bool) -> None:
        try:
            status = await queue.fail(
                self.db, job, error, backoff=self.backoff, permanent=permanent
            )
        except Exception as exc:
            # The lease will expire and the job be retried: at-least-once holds.
            log.error("could not record failure of job %s: %r", job.id, exc)
            return
        self._count(job, LOST if status is None else DEAD if status == "dead" else RETRY)

    async def _record(self, job: Job, outcome: str, update: Awaitable[bool]) -> None:
        try:
            held = await update
        except Exception as exc:
            log.error("could not record %s of job %s: %r", outcome, job.id, exc)
            return
        if not held:
            log.warning("job %s %s finished after its claim was lost", job.kind, job.id)
        self._count(job, outcome if held else LOST)

    def _count(self, job: Job, outcome: str) -> None:
        JOBS.labels(job.kind, outcome).inc()
        if self.on_finished is not None:
            try:
                self.on_finished(job, outcome)
            except Exception:
                log.exception("on_finished callback failed")
