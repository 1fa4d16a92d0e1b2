"""The durable job queue against the real PostgreSQL: transactional enqueue,
priorities, SKIP LOCKED claims, retries with backoff, leases, dedupe,
shutdown, and the periodic jobs.

The database is shared by the whole test run, so every test works on job
kinds of its own and runners that claim only those kinds.
"""

from __future__ import annotations

import asyncio
import collections
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import orjson
import pytest

from tests.conftest import RUN_ID, create_database, drop_database
from tests.factories import make_user
from tests.waiting import eventually
from unimatch.domain.config import Config
from unimatch.scheduler.backup import backup_database, libpq_target, pg_tool
from unimatch.scheduler.handlers import JobContext, PermanentJobError, register
from unimatch.scheduler.periodic import (
    PeriodicEnqueuer,
    Schedule,
    backup_reports,
    cleanup_unverified,
    period_start,
)
from unimatch.scheduler.worker import DONE, JobRunner
from unimatch.storage import jobs as queue
from unimatch.storage.jobs import (
    PRIORITY_CACHE,
    PRIORITY_CLEANUP,
    PRIORITY_DEFAULT,
    PRIORITY_MAIL,
    PRIORITY_NOTIFICATION,
    PRIORITY_WEBHOOK,
    Backoff,
    Job,
    enqueue,
    enqueue_once,
)
from unimatch.storage.pg import Database

TIMEOUT = 60.0  # generous: two cores are shared with other suites


def unique_kind(label: str) -> str:
    return f"test_{label}_{secrets.token_hex(4)}"


async def noop(payload: dict[str, Any], ctx: JobContext) -> None:
    return None


class Outcomes:
    """Collects `JobRunner.on_finished` reports and lets a test wait for them."""

    def __init__(self) -> None:
        self.by_job: dict[UUID, list[str]] = collections.defaultdict(list)
        self._changed = asyncio.Event()

    def __call__(self, job: Job, outcome: str) -> None:
        self.by_job[job.id].append(outcome)
        self._changed.set()

    async def wait(
        self, ids: Collection[UUID], final: Collection[str] = ("done", "dead"),
        within: float = TIMEOUT,
    ) -> None:
        async with asyncio.timeout(within):
            while not all(any(o in final for o in self.by_job[i]) for i in ids):
                self._changed.clear()
                await self._changed.wait()


async def add(db: Database, kind: str, payload: dict[str, Any] | None = None, **kw: Any) -> UUID:
    async with db.transaction() as conn:
        job_id = await enqueue(conn, kind, payload or {}, **kw)
    assert job_id is not None
    return job_id


async def row(db: Database, job_id: UUID) -> Any:
    return await db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)


@pytest.fixture
async def make_runner(
    db: Database, config: Config
) -> AsyncIterator[Callable[..., Awaitable[JobRunner]]]:
    started: list[JobRunner] = []

    async def make(**options: Any) -> JobRunner:
        options.setdefault("poll_interval", 0.05)
        options.setdefault("backoff", Backoff(base=0.05, cap=1.0))
        runner = JobRunner(db, options.pop("config", config), **options)
        await runner.start()
        started.append(runner)
        return runner

    yield make
    for runner in started:
        await runner.stop(grace=5)


# -- enqueue ---------------------------------------------------------------


async def test_enqueue_belongs_to_the_callers_transaction(db: Database) -> None:
    kind = unique_kind("tx")
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            assert await enqueue(conn, kind, {"n": 1}) is not None
            raise RuntimeError("roll back")
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE kind = $1", kind) == 0

    async with db.transaction() as conn:
        job_id = await enqueue(conn, kind, {"n": 2, "s": "é"})
    stored = await row(db, job_id)
    assert stored["status"] == "queued"
    assert stored["payload"] == {"n": 2, "s": "é"}
    assert stored["priority"] == PRIORITY_DEFAULT
    assert stored["attempts"] == 0


def test_priorities_are_ordered_and_defaulted_by_kind() -> None:
    assert (
        PRIORITY_NOTIFICATION < PRIORITY_WEBHOOK < PRIORITY_MAIL < PRIORITY_CACHE
        < PRIORITY_CLEANUP < PRIORITY_DEFAULT
    )
    assert queue.default_priority("send_email") == PRIORITY_MAIL
    assert queue.default_priority("cleanup_unverified") == PRIORITY_CLEANUP
    assert queue.default_priority("refresh_feeds") == PRIORITY_CACHE


async def test_claims_follow_priority_then_run_at(db: Database) -> None:
    kind = unique_kind("prio")
    now = datetime.now(UTC)
    for label, priority, age in [
        ("cleanup", PRIORITY_CLEANUP, 5),
        ("mail-late", PRIORITY_MAIL, 1),
        ("notification", PRIORITY_NOTIFICATION, 1),
        ("cache", PRIORITY_CACHE, 9),
        ("mail-early", PRIORITY_MAIL, 3),
        ("webhook", PRIORITY_WEBHOOK, 2),
    ]:
        run_at = now - timedelta(seconds=age)
        await add(db, kind, {"label": label}, priority=priority, run_at=run_at)
    expected = ["notification", "webhook", "mail-early", "mail-late", "cache", "cleanup"]
    future = await add(db, kind, {"label": "future"}, priority=0, run_at=now + timedelta(hours=1))

    claimed = []
    while jobs := await queue.claim(db, "w", 30, 1, kinds=[kind]):
        claimed.append(jobs[0].payload["label"])
        assert await queue.complete(db, jobs[0])
    assert claimed == expected
    assert (await row(db, future))["status"] == "queued"  # not due yet
    await db.execute("DELETE FROM jobs WHERE id = $1", future)


async def test_concurrent_claims_take_disjoint_jobs(db: Database) -> None:
    kind = unique_kind("disjoint")
    async with db.transaction() as conn:
        ids = {await enqueue(conn, kind, {"n": n}) for n in range(120)}

    async def claimer(index: int) -> list[UUID]:
        mine = []
        while jobs := await queue.claim(db, f"c{index}", 30, 5, kinds=[kind]):
            mine.extend(job.id for job in jobs)
        return mine

    results = await asyncio.gather(*(claimer(i) for i in range(8)))
    claimed = [job_id for result in results for job_id in result]
    assert len(claimed) == len(set(claimed)) == 120
    assert set(claimed) == ids
    await db.execute("DELETE FROM jobs WHERE kind = $1", kind)


# -- running ---------------------------------------------------------------


async def test_two_runners_run_every_job_exactly_once(
    db: Database, make_runner: Callable[..., Awaitable[JobRunner]]
) -> None:
    kind = unique_kind("once")
    runs: collections.Counter[int] = collections.Counter()

    async def count(payload: dict[str, Any], ctx: JobContext) -> None:
        runs[payload["n"]] += 1
        await asyncio.sleep(0)  # let other workers interleave

    outcomes = Outcomes()
    for _ in range(2):
        await make_runner(
            handlers={kind: count}, kinds=[kind], workers=4, on_finished=outcomes
        )
    async with db.transaction() as conn:
        ids = [await enqueue(conn, kind, {"n": n}) for n in range(300)]
    await outcomes.wait(ids)

    assert runs == collections.Counter(range(300))
    rows = await db.fetch(
        "SELECT status, attempts, count(*) AS n FROM jobs WHERE kind = $1 GROUP BY 1, 2", kind
    )
    assert [(r["status"], r["attempts"], r["n"]) for r in rows] == [("done", 1, 300)]
    assert all(o == [DONE] for o in outcomes.by_job.values())


async def test_notify_wakes_an_idle_worker_before_its_poll(
    db: Database, make_runner: Callable[..., Awaitable[JobRunner]]
) -> None:
    kind = unique_kind("notify")
    outcomes = Outcomes()
    await make_runner(handlers={kind: noop}, kinds=[kind], on_finished=outcomes, poll_interval=120)
    # The first job may be found by the wake-up that follows LISTEN; the
    # second one can only be found through its NOTIFY (the poll is 2 min away).
    first = await add(db, kind)
    await outcomes.wait([first])
    second = await add(db, kind)
    await outcomes.wait([second], within=10)


async def test_failing_twice_then_succeeding_retries_with_backoff(
    db: Database, make_runner: Callable[..., Awaitable[JobRunner]]
) -> None:
    kind = unique_kind("retry")
    base = 0.2
    seen: list[tuple[int, datetime]] = []  # (attempt, run_at at claim)
    failed_at: list[datetime] = []

    async def flaky(payload: dict[str, Any], ctx: JobContext) -> None:
        seen.append((ctx.job.attempts, ctx.job.run_at))
        if ctx.job.attempts < 3:
            failed_at.append(datetime.now(UTC))
            raise ConnectionError(f"boom {ctx.job.attempts}")

    outcomes = Outcomes()
    await make_runner(
        handlers={kind: flaky}, kinds=[kind], on_finished=outcomes, backoff=Backoff(base=base)
    )
    job_id = await add(db, kind)
    await outcomes.wait([job_id])

    final = await row(db, job_id)
    assert final["status"] == "done" and final["attempts"] == 3
    assert "boom 2" in final["last_error"]
    assert outcomes.by_job[job_id] == ["retry", "retry", "done"]
    assert [attempt for attempt, _ in seen] == [1, 2, 3]
    # After failure n, the job was due again later than the failure, within
    # the full-jitter window of base * 2**(n-1).
    for n, failure in enumerate(failed_at, start=1):
        next_run_at = seen[n][1]
        assert failure < next_run_at <= failure + timedelta(seconds=base * 2 ** (n - 1) + 0.5)


async def test_fail_schedules_the_retry_in_the_future(db: Database) -> None:
    kind = unique_kind("backoff")
    job_id = await add(db, kind)
    [job] = await queue.claim(db, "w", 30, 1, kinds=[kind])
    assert await queue.fail(db, job, "nope", backoff=Backoff(base=60, cap=60)) == "queued"
    stored = await db.fetchrow("SELECT *, now() AS db_now FROM jobs WHERE id = $1", job_id)
    assert stored["status"] == "queued" and stored["locked_by"] is None
    assert stored["db_now"] <= stored["run_at"] <= stored["db_now"] + timedelta(seconds=60)
    assert Backoff(base=2, cap=600).delay(30) <= 600
    await db.execute("DELETE FROM jobs WHERE id = $1", job_id)


async def test_a_job_that_always_fails_is_dead_after_max_attempts(
    db: Database, make_runner: Callable[..., Awaitable[JobRunner]]
) -> None:
    kind, permanent_kind, unknown_kind = (unique_kind(k) for k in ("dead", "perm", "unknown"))
    calls: collections.Counter[str] = collections.Counter()

    async def broken(payload: dict[str, Any], ctx: JobContext) -> None:
        calls[ctx.job.kind] += 1
        raise ValueError("always broken")

    async def rejects(payload: dict[str, Any], ctx: JobContext) -> None:
        calls[ctx.job.kind] += 1
        raise PermanentJobError("malformed payload")

    outcomes = Outcomes()
    await make_runner(
        handlers={kind: broken, permanent_kind: rejects},
        kinds=[kind, permanent_kind, unknown_kind],
        on_finished=outcomes,
    )
    ids = [
        await add(db, kind, max_attempts=3),
        await add(db, permanent_kind, max_attempts=5),
        await add(db, unknown_kind, max_attempts=2),
    ]
    await outcomes.wait(ids, final=("dead",))

    dead, permanent, unknown = [await row(db, i) for i in ids]
    assert (dead["status"], dead["attempts"], calls[kind]) == ("dead", 3, 3)
    assert "ValueError: always broken" in dead["last_error"]
    assert dead["finished_at"] is not None
    assert (permanent["status"], permanent["attempts"], calls[permanent_kind]) == ("dead", 1, 1)
    assert (unknown["status"], unknown["attempts"]) == ("dead", 2)
    assert f"no handler registered for job kind {unknown_kind!r}" in unknown["last_error"]


# -- leases ----------------------------------------------------------------


async def test_job_of_a_dead_worker_is_rerun_after_its_lease(
    db: Database, make_runner: Callable[..., Awaitable[JobRunner]]
) -> None:
    kind = unique_kind("lease")
    job_id = await add(db, kind)
    # The "killed" worker: it claims with a short lease and is never heard of again.
    [zombie] = await queue.claim(db, "zombie", 1.0, 1, kinds=[kind])
    ran_at: list[datetime] = []

    async def record(payload: dict[str, Any], ctx: JobContext) -> None:
        ran_at.append(datetime.now(UTC))

    outcomes = Outcomes()
    await make_runner(handlers={kind: record}, kinds=[kind], on_finished=outcomes)
    await outcomes.wait([job_id])

    assert len(ran_at) == 1 and ran_at[0] >= zombie.locked_until
    done = await row(db, job_id)
    assert (done["status"], done["attempts"]) == ("done", 2)
    # The zombie wakes up late: nothing it reports is taken.
    assert not await queue.complete(db, zombie)
    assert await queue.fail(db, zombie, "late failure") is None
    assert not await queue.extend_lease(db, zombie, 60)
    assert not await queue.release(db, zombie)
    after = await row(db, job_id)
    assert (after["status"], after["attempts"], after["last_error"]) == ("done", 2, None)


_HANGING_WORKER = """
import asyncio, sys
from tests.waiting import eventually
from unimatch.domain.config import Config
from unimatch.scheduler.worker import JobRunner
from unimatch.storage.pg import Database

async def main(dsn, kind):
    db = await Database.connect(dsn, size=2, overflow=1)
    async def hang(payload, ctx):
        print("claimed", ctx.job.id, flush=True)
        await asyncio.Event().wait()
    runner = JobRunner(db, Config(database_url=dsn), workers=1, handlers={kind: hang},
                       kinds=[kind], lease_seconds=1.5, poll_interval=0.05)
    await runner.start()
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_job_of_a_killed_process_is_completed_by_another_runner(
    db: Database, config: Config, make_runner: Callable[..., Awaitable[JobRunner]]
) -> None:
    kind = unique_kind("killed")
    job_id = await add(db, kind)
    assert config.database_url
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HANGING_WORKER, config.database_url, kind,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
        assert line.decode().split() == ["claimed", str(job_id)]
        # While the process lives it renews its lease (1.5 s) every 0.5 s.
        held = await row(db, job_id)
        assert held["status"] == "running" and held["attempts"] == 1
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGKILL)
        await process.wait()

    outcomes = Outcomes()
    await make_runner(handlers={kind: noop}, kinds=[kind], on_finished=outcomes)
    await outcomes.wait([job_id])
    done = await row(db, job_id)
    assert (done["status"], done["attempts"]) == ("done", 2)


async def test_a_long_job_keeps_its_lease_while_it_runs(
    db: Database, make_runner: Callable[..., Awaitable[JobRunner]]
) -> None:
    kind = unique_kind("long")
    lease = 0.6
    runs = 0

    async def long(payload: dict[str, Any], ctx: JobContext) -> None:
        nonlocal runs
        runs += 1
        began = (await row(db, ctx.job.id))["locked_until"]

        async def renewed_four_leases_on() -> bool:
            now = (await row(db, ctx.job.id))["locked_until"]
            return now >= began + timedelta(seconds=4 * lease)

        # The job's own work lasts until its lease, renewed while it runs,
        # reaches four lease lengths past where it began.
        await eventually(renewed_four_leases_on, within=60)

    outcomes = Outcomes()
    for _ in range(2):
        await make_runner(
            handlers={kind: long}, kinds=[kind], on_finished=outcomes, lease_seconds=lease
        )
    job_id = await add(db, kind)
    await outcomes.wait([job_id])
    assert runs == 1
    assert (await row(db, job_id))["attempts"] == 1


async def test_a_final_attempt_whose_worker_died_is_buried(db: Database) -> None:
    kind = unique_kind("bury")
    job_id = await add(db, kind, max_attempts=1)
    # A zero lease has run out by the next statement.
    assert len(await queue.claim(db, "doomed", 0, 1, kinds=[kind])) == 1
    assert await queue.claim(db, "other", 30, 1, kinds=[kind]) == []
    buried = await row(db, job_id)
    assert buried["status"] == "dead" and "lease expired" in buried["last_error"]


async def test_stop_lets_a_running_job_finish(
    db: Database, make_runner: Callable[..., Awaitable[JobRunner]]
) -> None:
    kind = unique_kind("drain")
    started, proceed = asyncio.Event(), asyncio.Event()

    async def gated(payload: dict[str, Any], ctx: JobContext) -> None:
        started.set()
        await proceed.wait()

    runner = await make_runner(handlers={kind: gated}, kinds=[kind])
    job_id = await add(db, kind)
    await asyncio.wait_for(started.wait(), TIMEOUT)
    stopping = asyncio.create_task(runner.stop(grace=TIMEOUT))
    await asyncio.sleep(0)
    assert not stopping.done()
    proceed.set()
    await asyncio.wait_for(stopping, TIMEOUT)
    assert (await row(db, job_id))["status"] == "done"


async def test_stop_releases_a_job_that_overruns_the_grace(
    db: Database, make_runner: Callable[..., Awaitable[JobRunner]]
) -> None:
    kind = unique_kind("overrun")
    started = asyncio.Event()

    async def endless(payload: dict[str, Any], ctx: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    runner = await make_runner(handlers={kind: endless}, kinds=[kind])
    job_id = await add(db, kind)
    await asyncio.wait_for(started.wait(), TIMEOUT)
    await runner.stop(grace=0.2)
    released = await db.fetchrow(
        "SELECT *, run_at <= now() AS due FROM jobs WHERE id = $1", job_id
    )
    assert released["status"] == "queued" and released["locked_by"] is None
    assert released["due"] and "cancelled at shutdown" in released["last_error"]
    await db.execute("DELETE FROM jobs WHERE id = $1", job_id)


# -- dedupe ----------------------------------------------------------------


async def test_dedupe_key_allows_one_live_job(db: Database) -> None:
    kind = unique_kind("dedupe")
    key = f"{kind}:user-1"
    first = await add(db, kind, dedupe_key=key)
    async with db.transaction() as conn:
        assert await enqueue(conn, kind, {}, dedupe_key=key) is None
    [job] = await queue.claim(db, "w", 30, 1, kinds=[kind])
    async with db.transaction() as conn:
        assert await enqueue(conn, kind, {}, dedupe_key=key) is None  # running counts
    assert await queue.complete(db, job)
    second = await add(db, kind, dedupe_key=key)  # done frees the key
    assert second != first
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE kind = $1", kind) == 2

    once_key = f"{kind}:period"
    async with db.transaction() as conn:
        once = await enqueue_once(conn, kind, {}, dedupe_key=once_key)
    assert once is not None
    await db.execute("UPDATE jobs SET status = 'done' WHERE id = $1", once)
    async with db.transaction() as conn:
        assert await enqueue_once(conn, kind, {}, dedupe_key=once_key) is None
    await db.execute("DELETE FROM jobs WHERE kind = $1", kind)


async def test_concurrent_enqueues_with_one_key_make_one_job(db: Database) -> None:
    kind = unique_kind("race")

    async def attempt() -> UUID | None:
        async with db.transaction() as conn:
            return await enqueue(conn, kind, {}, dedupe_key=kind)

    results = await asyncio.gather(*(attempt() for _ in range(8)))
    assert sum(r is not None for r in results) == 1
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE kind = $1", kind) == 1
    await db.execute("DELETE FROM jobs WHERE kind = $1", kind)


def test_register_refuses_a_second_handler_for_a_kind() -> None:
    kind = unique_kind("registry")

    @register(kind)
    async def first(payload: dict[str, Any], ctx: JobContext) -> None: ...

    with pytest.raises(ValueError, match="already has a handler"):

        @register(kind)
        async def second(payload: dict[str, Any], ctx: JobContext) -> None: ...

    from unimatch.scheduler.handlers import HANDLERS

    assert HANDLERS.pop(kind) is first


# -- periodic --------------------------------------------------------------


def test_period_start_is_aligned() -> None:
    now = datetime(2024, 5, 1, 13, 47, 12, tzinfo=UTC)
    assert period_start(now, timedelta(hours=1)) == datetime(2024, 5, 1, 13, tzinfo=UTC)
    assert period_start(now, timedelta(minutes=10)) == datetime(2024, 5, 1, 13, 40, tzinfo=UTC)
    assert period_start(now, timedelta(days=1)) == datetime(2024, 5, 1, tzinfo=UTC)


async def test_periodic_jobs_are_enqueued_once_per_period(db: Database) -> None:
    hourly, orphan = unique_kind("hourly"), unique_kind("orphan")
    schedules = [Schedule(hourly, timedelta(hours=1)), Schedule(orphan, timedelta(minutes=10))]
    handlers = {hourly: noop}  # `orphan` has no handler: never scheduled
    now = datetime(2031, 3, 4, 5, 6, tzinfo=UTC)

    first = await PeriodicEnqueuer(db, schedules=schedules, handlers=handlers).enqueue_due(now)
    assert len(first) == 1
    # Another scheduler process, or this one restarted, in the same hour.
    again = PeriodicEnqueuer(db, schedules=schedules, handlers=handlers)
    assert await again.enqueue_due(now + timedelta(minutes=30)) == []
    [job] = await queue.claim(db, "w", 30, 1, kinds=[hourly])
    assert job.payload == {"period": "2031-03-04T05:00:00+00:00"}
    assert await queue.complete(db, job)
    restarted = PeriodicEnqueuer(db, schedules=schedules, handlers=handlers)
    assert await restarted.enqueue_due(now + timedelta(minutes=50)) == []  # done counts too
    assert len(await restarted.enqueue_due(now + timedelta(hours=1))) == 1

    assert await db.fetchval("SELECT count(*) FROM jobs WHERE kind = $1", orphan) == 0
    await db.execute("DELETE FROM jobs WHERE kind = $1", hourly)


async def _user(db: Database, *, verified: bool, age: timedelta) -> UUID:
    user_id: UUID = await db.fetchval(
        """INSERT INTO users (email, password_hash, display_name, is_verified, created_at)
           VALUES ($1, 'x', 'Test', $2, now() - $3::interval) RETURNING id""",
        f"{secrets.token_hex(6)}@jobs.ac.ke", verified, age,
    )
    return user_id


async def test_cleanup_deletes_only_old_unverified_users(
    db: Database, make_runner: Callable[..., Awaitable[JobRunner]]
) -> None:
    old_unverified = await _user(db, verified=False, age=timedelta(hours=25))
    new_unverified = await _user(db, verified=False, age=timedelta(hours=23))
    old_verified = await _user(db, verified=True, age=timedelta(days=30))
    await db.execute(
        "INSERT INTO email_otps (user_id, code_hash, expires_at) VALUES ($1, 'h', now())",
        old_unverified,
    )
    kind = unique_kind("cleanup")
    outcomes = Outcomes()
    await make_runner(handlers={kind: cleanup_unverified}, kinds=[kind], on_finished=outcomes)
    job_id = await add(db, kind)
    await outcomes.wait([job_id])

    assert outcomes.by_job[job_id] == ["done"]
    remaining = await db.fetch(
        "SELECT id FROM users WHERE id = ANY($1::uuid[])",
        [old_unverified, new_unverified, old_verified],
    )
    assert {r["id"] for r in remaining} == {new_unverified, old_verified}
    otps = "SELECT count(*) FROM email_otps WHERE user_id = $1"
    assert await db.fetchval(otps, old_unverified) == 0


async def test_report_backup_writes_open_and_recent_reports_as_json_lines(
    db: Database, config: Config, tmp_path: Path,
    make_runner: Callable[..., Awaitable[JobRunner]],
) -> None:
    reporter = await _user(db, verified=True, age=timedelta(0))
    reported = await _user(db, verified=True, age=timedelta(0))
    insert = """
        INSERT INTO reports (reporter_id, reported_user_id, reason, details, status,
                             resolution, resolved_at)
        VALUES ($1, $2, $3, $4, $5, $6, now() - $7::interval) RETURNING id"""
    open_id = await db.fetchval(
        insert, reporter, reported, "spam", "línea\n\"two\"", "open", None, None
    )
    recent_id = await db.fetchval(
        insert, reporter, reported, "harassment", "", "resolved", "warn", timedelta(days=1)
    )
    old_id = await db.fetchval(
        insert, reporter, reported, "other", "", "resolved", "dismiss", timedelta(days=30)
    )
    kind = unique_kind("backup")
    outcomes = Outcomes()
    await make_runner(
        handlers={kind: backup_reports}, kinds=[kind], on_finished=outcomes,
        config=config.with_(data_dir=tmp_path),
    )
    job_id = await add(db, kind, {"period": "2030-01-02T00:00:00+00:00"})
    await outcomes.wait([job_id])

    path = tmp_path / "backups" / "reports-2030-01-02.jsonl"
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    by_id = {line["id"]: line for line in lines}
    assert str(open_id) in by_id and str(recent_id) in by_id
    assert str(old_id) not in by_id
    assert by_id[str(open_id)]["details"] == "línea\n\"two\""
    assert by_id[str(recent_id)]["resolution"] == "warn"
    assert set(by_id[str(open_id)]) >= {
        "id", "reporter_id", "reported_user_id", "reason", "status", "created_at",
    }
    assert not list(path.parent.glob("*.partial"))


async def test_database_backup_restores_into_a_fresh_database(
    db: Database, config: Config, pg_admin_dsn: str, tmp_path: Path,
    make_runner: Callable[..., Awaitable[JobRunner]],
) -> None:
    alice = await make_user(db, config)
    bob = await make_user(db, config)
    user_a, user_b = sorted([alice.id, bob.id])
    match_id = await db.fetchval(
        "INSERT INTO matches (id, user_a, user_b) VALUES (gen_random_uuid(), $1, $2) RETURNING id",
        user_a, user_b,
    )
    bodies = ["habari", "nzuri sana, wewe?"]
    for seq, (sender, body) in enumerate(zip([alice.id, bob.id], bodies, strict=True), 1):
        await db.execute(
            """INSERT INTO messages (match_id, seq, sender_id, body, client_msg_id)
               VALUES ($1, $2, $3, $4, $5)""",
            match_id, seq, sender, body, f"c{seq}",
        )
    backups = tmp_path / "backups"
    backups.mkdir()
    for day in ("2029-12-30", "2029-12-31", "2030-01-01"):
        (backups / f"unimatch-{day}.dump").write_bytes(b"an older dump")
    kind = unique_kind("dump")
    outcomes = Outcomes()
    await make_runner(
        handlers={kind: backup_database}, kinds=[kind], on_finished=outcomes,
        config=config.with_(data_dir=tmp_path, backup_keep=2),
    )
    job_id = await add(db, kind, {"period": "2030-01-02T00:00:00+00:00"})
    await outcomes.wait([job_id])
    assert outcomes.by_job[job_id] == ["done"]
    # Retention: the two newest remain, this one included; no partial file.
    assert sorted(p.name for p in backups.iterdir()) == [
        "unimatch-2030-01-01.dump", "unimatch-2030-01-02.dump",
    ]

    restored = f"unimatch_restore_{RUN_ID}"
    restored_dsn = await create_database(pg_admin_dsn, restored)
    try:
        pg_restore = await pg_tool(config, "pg_restore")
        proc = await asyncio.create_subprocess_exec(
            str(pg_restore), "--no-owner", "--exit-on-error", f"--dbname={restored_dsn}",
            str(backups / "unimatch-2030-01-02.dump"), stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 0, err.decode()
        conn = await asyncpg.connect(restored_dsn)
        try:
            emails = await conn.fetch(
                "SELECT email FROM users WHERE id = ANY($1::uuid[])", [alice.id, bob.id]
            )
            messages = await conn.fetch(
                "SELECT seq, sender_id, body FROM messages WHERE match_id = $1 ORDER BY seq",
                match_id,
            )
        finally:
            await conn.close()
    finally:
        await drop_database(pg_admin_dsn, restored)
    assert {r["email"] for r in emails} == {alice.email, bob.email}
    assert [(r["seq"], r["sender_id"], r["body"]) for r in messages] == [
        (1, alice.id, bodies[0]), (2, bob.id, bodies[1]),
    ]


def test_the_dump_is_told_the_password_through_its_environment() -> None:
    dsn, env = libpq_target("postgresql://app:p%40ss@db.internal:5433/unimatch?sslmode=require")
    assert dsn == "postgresql://app@db.internal:5433/unimatch?sslmode=require"
    assert env == {"PGPASSWORD": "p@ss"}
    assert libpq_target("postgresql://postgres@127.0.0.1/x") == (
        "postgresql://postgres@127.0.0.1/x", {},
    )
