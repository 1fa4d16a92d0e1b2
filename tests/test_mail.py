"""Mail through the job queue, into a real SMTP server (aiosmtpd) started by
the tests: delivery, retries while SMTP is down, the developer outbox, and
the scheduler actor on a real local Ray."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from uuid import UUID

import pytest

from tests.job_kinds import TEST_ACTOR_MAIL
from tests.mailsink import Inbox, SmtpServer, free_port
from unimatch.domain.config import Config
from unimatch.scheduler.actor import SchedulerActor, start_scheduler, stop_scheduler
from unimatch.scheduler.mail import SEND_EMAIL, Mailer, send_email
from unimatch.scheduler.worker import JobRunner
from unimatch.storage.jobs import Backoff, Job, enqueue
from unimatch.storage.pg import Database

TIMEOUT = 60.0


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    """An SMTP server on a free port, not started: tests start it when they want."""
    server = SmtpServer(Inbox(asyncio.get_running_loop()), free_port())
    yield server
    await server.stop()


class Finished:
    """`JobRunner.on_finished` outcomes, awaitable."""

    def __init__(self) -> None:
        self.outcomes: dict[UUID, list[str]] = {}
        self._changed = asyncio.Event()

    def __call__(self, job: Job, outcome: str) -> None:
        self.outcomes.setdefault(job.id, []).append(outcome)
        self._changed.set()

    async def wait(self, job_id: UUID, outcome: str, within: float = TIMEOUT) -> None:
        async with asyncio.timeout(within):
            while outcome not in self.outcomes.get(job_id, []):
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def mail_runner(
    db: Database,
) -> AsyncIterator[Callable[..., Awaitable[tuple[str, Finished]]]]:
    """Starts a runner whose only kind is a fresh alias of `send_email`, so no
    other runner of the test run takes these jobs; returns (kind, outcomes)."""
    runners: list[JobRunner] = []

    async def make(config: Config) -> tuple[str, Finished]:
        kind = f"test_mail_{secrets.token_hex(4)}"
        finished = Finished()
        runner = JobRunner(
            db, config, workers=2, handlers={kind: send_email}, kinds=[kind],
            services={Mailer: Mailer(config, timeout=10)}, poll_interval=0.05,
            backoff=Backoff(base=0.2, cap=1.0), on_finished=finished,
        )
        await runner.start()
        runners.append(runner)
        return kind, finished

    yield make
    for runner in runners:
        await runner.stop(grace=5)


def smtp_config(config: Config, port: int) -> Config:
    return config.with_(smtp_host="127.0.0.1", smtp_port=port, smtp_tls="false")


async def test_otp_mail_commits_with_its_data_and_arrives(
    db: Database, config: Config, smtp: SmtpServer,
    mail_runner: Callable[..., Awaitable[tuple[str, Finished]]],
) -> None:
    await smtp.start()
    kind, finished = await mail_runner(smtp_config(config, smtp.port))
    address = f"{secrets.token_hex(5)}@students.ac.ke"
    text = "Your UniMatch code is 482913. It expires in 10 minutes."

    # A registration that fails after its mail was enqueued sends nothing...
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await enqueue(conn, kind, {"to": address, "subject": "lost", "text": "lost"})
            raise RuntimeError("registration failed")
    # ...and one that commits sends its code.
    async with db.transaction() as conn:
        user_id = await conn.fetchval(
            "INSERT INTO users (email, password_hash, display_name) VALUES ($1, 'x', 'Amani')"
            " RETURNING id",
            address,
        )
        await conn.execute(
            "INSERT INTO email_otps (user_id, code_hash, expires_at)"
            " VALUES ($1, 'hash', now() + interval '10 minutes')",
            user_id,
        )
        job_id = await enqueue(
            conn, kind, {"to": address, "subject": "Your UniMatch code", "text": text}
        )
    assert job_id is not None

    message = await smtp.inbox.wait_for(address)
    assert message["Subject"] == "Your UniMatch code"
    assert message["From"] == config.mail_from
    assert "482913" in message.get_content()
    assert message["Message-ID"] == f"<job-{job_id}@unimatch.local>"
    await finished.wait(job_id, "done")
    assert [m["Subject"] for m in smtp.inbox.to(address)] == ["Your UniMatch code"]
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "done"


async def test_mail_is_retried_until_smtp_comes_back_and_arrives_once(
    db: Database, config: Config, smtp: SmtpServer,
    mail_runner: Callable[..., Awaitable[tuple[str, Finished]]],
) -> None:
    kind, finished = await mail_runner(smtp_config(config, smtp.port))  # nothing listens yet
    address = f"{secrets.token_hex(5)}@students.ac.ke"
    async with db.transaction() as conn:
        job_id = await enqueue(
            conn, kind, {"to": address, "subject": "Code", "text": "code 111222"},
            max_attempts=50,
        )
    assert job_id is not None

    await finished.wait(job_id, "retry")
    failed = await db.fetchrow("SELECT attempts, last_error FROM jobs WHERE id = $1", job_id)
    assert failed["attempts"] >= 1 and failed["last_error"]
    assert "SMTPConnect" in failed["last_error"] or "Connect" in failed["last_error"]

    await smtp.start()
    message = await smtp.inbox.wait_for(address)
    assert "111222" in message.get_content()
    await finished.wait(job_id, "done")
    done = await db.fetchrow("SELECT attempts, status FROM jobs WHERE id = $1", job_id)
    assert done["status"] == "done" and done["attempts"] >= 2
    assert len(smtp.inbox.to(address)) == 1


async def test_without_smtp_host_mail_goes_to_the_outbox_and_the_log(
    db: Database, config: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    mail_runner: Callable[..., Awaitable[tuple[str, Finished]]],
) -> None:
    caplog.set_level(logging.INFO, logger="unimatch.mail")
    kind, finished = await mail_runner(config.with_(data_dir=tmp_path, smtp_host=None))
    address = f"{secrets.token_hex(5)}@students.ac.ke"
    async with db.transaction() as conn:
        job_id = await enqueue(
            conn, kind, {"to": address, "subject": "Your code", "text": "Code: 777888"}
        )
    assert job_id is not None
    await finished.wait(job_id, "done")

    [eml] = list((tmp_path / "outbox").glob("*.eml"))
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["To"] == address and message["Subject"] == "Your code"
    assert "777888" in message.get_content()  # type: ignore[attr-defined]
    assert "777888" in caplog.text


async def test_a_malformed_mail_job_dies_at_once(
    db: Database, config: Config, tmp_path: Path,
    mail_runner: Callable[..., Awaitable[tuple[str, Finished]]],
) -> None:
    kind, finished = await mail_runner(config.with_(data_dir=tmp_path, smtp_host=None))
    async with db.transaction() as conn:
        job_id = await enqueue(conn, kind, {"to": "a@b.ac.ke"})
    assert job_id is not None
    await finished.wait(job_id, "dead")
    dead = await db.fetchrow("SELECT attempts, last_error FROM jobs WHERE id = $1", job_id)
    assert dead["attempts"] == 1 and "lacks 'subject'" in dead["last_error"]


def test_mailer_refuses_an_unknown_tls_mode(config: Config) -> None:
    with pytest.raises(ValueError):
        Mailer(config.with_(smtp_tls="maybe"))


@pytest.mark.usefixtures("ray_cluster")
async def test_scheduler_actor_delivers_a_mail_job_end_to_end(
    db: Database, config: Config, smtp: SmtpServer
) -> None:
    await smtp.start()
    actor_config = smtp_config(config, smtp.port).with_(scheduler_workers=2)
    handle = start_scheduler(
        actor_config,
        name=f"scheduler-test-mail-{secrets.token_hex(3)}",
        poll_interval=0.2,
        backoff_base=0.2,
        # Only its own mail kind, and no schedule: the run's database (and the
        # platform's scheduler, which sends `send_email`) are shared.
        kinds=[TEST_ACTOR_MAIL],
        handler_modules=("tests.job_kinds",),
        periodic=False,
    )
    try:
        await asyncio.wait_for(handle.ready.remote(), 120)
        await asyncio.wait_for(handle.check_health.remote(), TIMEOUT)
        address = f"{secrets.token_hex(5)}@students.ac.ke"
        async with db.transaction() as conn:
            job_id = await enqueue(conn, TEST_ACTOR_MAIL, {
                "to": address, "subject": "Welcome", "text": "Your code is 246810"})
        assert job_id is not None

        message = await smtp.inbox.wait_for(address, within=120)
        assert "246810" in message.get_content()
        stats = await asyncio.wait_for(handle.stats.remote(), TIMEOUT)
        assert set(stats["_runner"]) == {"running_jobs"}
    finally:
        # Draining lets the job that sent the mail record its outcome.
        await asyncio.to_thread(stop_scheduler, handle, grace=10)
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "done"


async def test_scheduler_claims_only_the_kinds_it_has_handlers_for(
    db: Database, config: Config, tmp_path: Path
) -> None:
    # The same class in-process: no Ray needed to check its wiring.
    stranger = f"test_stranger_{secrets.token_hex(4)}"
    async with db.transaction() as conn:
        job_id = await enqueue(conn, stranger, {})
    scheduler = SchedulerActor(config.with_(data_dir=tmp_path), periodic=False)
    try:
        await asyncio.wait_for(scheduler.ready(), TIMEOUT)
        scheduler.check_health()
        assert scheduler.runner is not None and scheduler.runner.kinds is not None
        assert {SEND_EMAIL, "cleanup_unverified", "backup_reports"} <= scheduler.runner.kinds
        assert stranger not in scheduler.runner.kinds
        stats = await scheduler.stats()
        assert stats[stranger] == {"queued": 1}
    finally:
        await scheduler.drain(grace=5)
    stored = await db.fetchrow("SELECT status, attempts FROM jobs WHERE id = $1", job_id)
    assert (stored["status"], stored["attempts"]) == ("queued", 0)
    await db.execute("DELETE FROM jobs WHERE id = $1", job_id)
