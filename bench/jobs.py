"""Job queue benchmark, run by hand against the local PostgreSQL:

    python bench/jobs.py [--latency-jobs 300] [--throughput-jobs 3000] [--workers 4]

It creates a scratch database, migrates it, measures

- latency: one no-op job at a time, from the start of the enqueueing
  transaction until the runner has recorded it `done` (NOTIFY wake-up path);
- throughput: a backlog enqueued up front, drained by one runner with
  `--workers` workers (one claim and one completion per job),

then drops the database. Every phase is bounded by `--max-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any
from uuid import UUID

import asyncpg

from unimatch.domain.config import Config
from unimatch.scheduler.handlers import JobContext
from unimatch.scheduler.worker import DONE, JobRunner
from unimatch.storage.jobs import Job, enqueue
from unimatch.storage.migrations import apply_migrations
from unimatch.storage.pg import Database

ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
KIND = "bench_noop"


async def noop(payload: dict[str, Any], ctx: JobContext) -> None:
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure_latency(db: Database, config: Config, jobs: int, workers: int) -> list[float]:
    waiting: dict[UUID, asyncio.Future[None]] = {}

    def finished(job: Job, outcome: str) -> None:
        future = waiting.pop(job.id, None)
        if future is not None and outcome == DONE:
            future.set_result(None)

    runner = JobRunner(
        db, config, workers=workers, handlers={KIND: noop}, kinds=[KIND], on_finished=finished
    )
    await runner.start()
    samples = []
    try:
        loop = asyncio.get_running_loop()
        for n in range(jobs):
            started = time.perf_counter()
            async with db.transaction() as conn:
                job_id = await enqueue(conn, KIND, {"n": n})
                assert job_id is not None
                waiting[job_id] = loop.create_future()  # before commit: before any worker
                done = waiting[job_id]
            await done
            samples.append(time.perf_counter() - started)
    finally:
        await runner.stop()
    return samples


async def measure_throughput(
    db: Database, config: Config, jobs: int, workers: int
) -> tuple[float, float]:
    started = time.perf_counter()
    async with db.transaction() as conn:
        for n in range(jobs):
            await enqueue(conn, KIND, {"n": n})
    enqueue_seconds = time.perf_counter() - started

    all_done = asyncio.Event()
    count = 0

    def finished(job: Job, outcome: str) -> None:
        nonlocal count
        count += outcome == DONE
        if count == jobs:
            all_done.set()

    runner = JobRunner(
        db, config, workers=workers, handlers={KIND: noop}, kinds=[KIND], on_finished=finished
    )
    started = time.perf_counter()
    await runner.start()
    try:
        await all_done.wait()
    finally:
        await runner.stop()
    return enqueue_seconds, time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    name = f"unimatch_bench_jobs_{os.getpid()}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = ADMIN_DSN.rpartition("/")[0] + f"/{name}"
    db: Database | None = None
    try:
        await apply_migrations(dsn)
        db = await Database.connect(dsn, size=args.workers + 2, overflow=2)
        config = Config(database_url=dsn)

        async with asyncio.timeout(args.max_seconds):
            samples = await measure_latency(db, config, args.latency_jobs, args.workers)
        ms = [s * 1000 for s in samples]
        print(
            f"latency enqueue->done, {len(ms)} sequential no-op jobs, {args.workers} workers: "
            f"p50 {percentile(ms, 0.5):.2f} ms, p99 {percentile(ms, 0.99):.2f} ms, "
            f"mean {statistics.mean(ms):.2f} ms, max {max(ms):.2f} ms"
        )

        async with asyncio.timeout(args.max_seconds):
            enqueue_s, drain_s = await measure_throughput(
                db, config, args.throughput_jobs, args.workers
            )
        print(
            f"throughput: enqueued {args.throughput_jobs} jobs in one transaction in "
            f"{enqueue_s:.2f} s ({args.throughput_jobs / enqueue_s:.0f}/s); "
            f"drained by {args.workers} workers in {drain_s:.2f} s "
            f"({args.throughput_jobs / drain_s:.0f} jobs/s)"
        )
    finally:
        if db is not None:
            await db.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-jobs", type=int, default=300)
    parser.add_argument("--throughput-jobs", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    asyncio.run(main(parser.parse_args()))
