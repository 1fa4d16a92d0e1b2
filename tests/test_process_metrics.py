"""Per-process metrics in multiprocess mode, the way server processes write
them: real processes sharing one PROMETHEUS_MULTIPROC_DIR, read back by the
same collector `/metrics` uses. Also the job queue gauges from PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from tests.waiting import eventually
from unimatch.domain.config import Config
from unimatch.scheduler.queue_metrics import QueueGauges
from unimatch.storage.jobs import enqueue
from unimatch.storage.pg import Database

TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parents[1]

# A server process in miniature: samples itself as argv[1], holds one pooled
# connection, says "ready", and stops cleanly when its stdin closes.
CHILD = """
import asyncio, sys
from unimatch.domain.process_metrics import start_process_metrics
from unimatch.storage.pg import Database

async def main(role, dsn):
    sampler = start_process_metrics(role, interval=0.05, gone_grace=0.5)
    db = await Database.connect(dsn, size=3, overflow=1)
    sampler.watch_pool(db.pool)
    async with db.connection():
        sampler.sample()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await db.close()
    await sampler.stop()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _samples(folder: Path) -> list[tuple[str, dict[str, str], float]]:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    text = generate_latest(registry).decode()
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _of(samples: list[tuple[str, dict[str, str], float]], name: str, pid: int) -> list[float]:
    return [value for n, labels, value in samples if n == name and labels.get("pid") == str(pid)]


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Callable[..., asyncio.Future]]:
    procs: list[asyncio.subprocess.Process] = []
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
           "PYTHONPATH": str(ROOT)}

    async def start(role: str, dsn: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, role, dsn, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        assert line.strip() == b"ready"
        return proc

    yield start  # type: ignore[misc]
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_every_process_reports_itself_by_role_and_pid(
    tmp_path: Path, pg_dsn: str, spawn: Callable[..., asyncio.Future]
) -> None:
    node = await spawn("node", pg_dsn)
    scheduler = await spawn("scheduler", pg_dsn)
    samples = _samples(tmp_path)

    for proc, role in ((node, "node"), (scheduler, "scheduler")):
        info = psutil.Process(proc.pid)
        roles = {labels["role"] for n, labels, _ in samples
                 if n == "unimatch_process_resident_memory_bytes"
                 and labels.get("pid") == str(proc.pid)}
        assert roles == {role}
        (rss,) = _of(samples, "unimatch_process_resident_memory_bytes", proc.pid)
        assert 0.5 * info.memory_info().rss < rss < 2 * info.memory_info().rss
        (fds,) = _of(samples, "unimatch_process_open_fds", proc.pid)
        assert fds >= 3  # stdio at least, and the pooled connection's socket
        (limit,) = _of(samples, "unimatch_process_max_fds", proc.pid)
        assert limit >= fds
        (started,) = _of(samples, "unimatch_process_start_time_seconds", proc.pid)
        assert abs(started - info.create_time()) < 2
        (cpu,) = _of(samples, "unimatch_process_cpu_seconds", proc.pid)
        assert cpu > 0
        (beat,) = _of(samples, "unimatch_process_heartbeat_timestamp_seconds", proc.pid)
        assert time.time() - beat < TIMEOUT
        assert _of(samples, "unimatch_db_pool_in_use_connections", proc.pid) == [1.0]
        assert _of(samples, "unimatch_db_pool_max_connections", proc.pid) == [4.0]


async def test_a_killed_process_is_withdrawn_after_the_grace_a_stopped_one_at_once(
    tmp_path: Path, pg_dsn: str, spawn: Callable[..., asyncio.Future]
) -> None:
    survivor = await spawn("node", pg_dsn)
    victim = await spawn("node", pg_dsn)
    stopping = await spawn("scheduler", pg_dsn)
    beat = "unimatch_process_heartbeat_timestamp_seconds"

    victim.send_signal(signal.SIGKILL)
    await victim.wait()
    # Its last heartbeat stays visible (stale) until a survivor withdraws it.
    assert _of(_samples(tmp_path), beat, victim.pid)
    await eventually(lambda: _gone(tmp_path, beat, victim.pid), within=TIMEOUT)

    assert stopping.stdin is not None
    stopping.stdin.close()
    assert await asyncio.wait_for(stopping.wait(), TIMEOUT) == 0
    samples = _samples(tmp_path)
    assert _of(samples, beat, stopping.pid) == []
    assert len(_of(samples, beat, survivor.pid)) == 1


async def _gone(folder: Path, name: str, pid: int) -> bool:
    return _of(_samples(folder), name, pid) == []


async def test_queue_gauges_count_due_delayed_and_dead_jobs_per_kind(
    db: Database, config: Config
) -> None:
    suffix = os.urandom(4).hex()
    busy, idle = f"test_gauge_busy_{suffix}", f"test_gauge_idle_{suffix}"
    past = datetime.now(UTC) - timedelta(minutes=2)
    async with db.transaction() as conn:
        await enqueue(conn, busy, {}, run_at=past)
        await enqueue(conn, busy, {})
        await enqueue(conn, busy, {}, run_at=datetime.now(UTC) + timedelta(hours=1))
        await conn.execute(
            """INSERT INTO jobs (kind, payload, status, attempts, finished_at, last_error)
               VALUES ($1, '{}'::jsonb, 'dead', 8, now(), 'boom')""", busy,
        )
    try:
        states = await QueueGauges(db, lambda: [busy, idle]).refresh()
    finally:
        await db.execute("DELETE FROM jobs WHERE kind = $1", busy)

    assert (states[busy].due, states[busy].delayed, states[busy].dead_recent) == (2, 1, 1)
    assert 110 < states[busy].oldest_seconds < 110 + TIMEOUT
    # A known kind without jobs is reported at zero: its first dead job is a change.
    assert (states[idle].due, states[idle].dead_recent, states[idle].oldest_seconds) == (0, 0, 0)
    text = generate_latest(REGISTRY).decode()
    assert f'unimatch_jobs_dead_last_hour{{kind="{busy}"}} 1.0' in text
    assert f'unimatch_jobs_dead_last_hour{{kind="{idle}"}} 0.0' in text
    assert f'unimatch_job_queue_depth{{kind="{busy}",state="due"}} 2.0' in text
