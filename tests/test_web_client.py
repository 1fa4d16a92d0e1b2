"""The web client, end to end: its static export built (when missing or
stale), served by a real `unimatch serve` on this run's PostgreSQL and Redis,
driven by Playwright in Debian's Chromium (two students from sign-up to a
chat that survives a dropped connection and a reload); and its own checks:
the socket client's unit tests (Vitest), ESLint and the TypeScript compiler.

Nothing is skipped: a missing build is built, a missing toolchain fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from tests.conftest import RUN_ID, create_database, drop_database
from tests.test_serve import START_TIMEOUT, STOP_TIMEOUT, _processes_of, _read_url
from unimatch.server.platform import free_port

WEB = Path(__file__).resolve().parents[1] / "web"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
BUILD_TIMEOUT = 900
BROWSER_TIMEOUT = 900
CHECK_TIMEOUT = 300
# The browser tests in web/tests/e2e.
BROWSER_TESTS = 2


def _run(args: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    """Runs a command in web/ in a session of its own; its output. Whatever it
    started is gone afterwards (a browser left behind fails the test)."""
    proc = subprocess.Popen(
        args, cwd=WEB, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, text=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise AssertionError(f"{args} did not finish in {timeout} s:\n{output[-4000:]}") from None
    left = [p for p in psutil.process_iter(["pid"]) if _session_of(p) == proc.pid]
    for p in left:
        p.kill()
    assert left == [], f"{args} left processes behind: {[p.pid for p in left]}"
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{output[-8000:]}"
    return output


def _session_of(proc: psutil.Process) -> int | None:
    try:
        return os.getsid(proc.pid)
    except (ProcessLookupError, PermissionError):
        return None


@pytest.fixture(scope="module")
def web_build() -> Path:
    """web/out, built from the pinned dependencies when missing or stale."""
    assert shutil.which("npm"), "npm is needed to build the web client"
    _run(["node", "scripts/build-if-stale.mjs"], BUILD_TIMEOUT)
    out = WEB / "out"
    assert (out / "index.html").is_file() and (out / "chat.html").is_file()
    return out


@pytest.fixture
async def served(
    web_build: Path, pg_admin_dsn: str, services: tuple[str, str], redis_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[tuple[str, Path]]:
    """(base URL, outbox folder) of a `unimatch serve` on a database of its
    own (its scheduler must not work through the jobs other suites left in
    the run's database before it mails a code) and this run's Redis, its
    mails written to the outbox; stopped with nothing left behind."""
    database = f"unimatch_web_{RUN_ID}_{secrets.token_hex(3)}"
    pg_dsn = await create_database(pg_admin_dsn, database)
    try:
        async for served_at in _serve(web_build, pg_dsn, services, redis_prefix, tmp_path):
            yield served_at
    finally:
        await drop_database(pg_admin_dsn, database)


async def _serve(
    web_build: Path, pg_dsn: str, services: tuple[str, str], redis_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[str, Path]]:
    data_dir = (tmp_path / "data").resolve()
    env = {k: v for k, v in os.environ.items()
           if k not in {"RAY_ADDRESS", "SMTP_HOST", "PROMETHEUS_MULTIPROC_DIR", "WEB_ROOT"}}
    env.update(
        UNIMATCH_DATA_DIR=str(data_dir),
        DATABASE_URL=pg_dsn,
        REDIS_URL=services[1],
        REDIS_PREFIX=f"{redis_prefix}web:",
        JWT_SECRET=f"web-test-{RUN_ID}-" + "k" * 32,
        RAY_NAMESPACE=f"unimatch-web-{RUN_ID}",
        # No WEB_ROOT: the default, the checkout's web/out, is what serve finds.
        NODES="1",
        # The run's database is large by now: the daily dump that starts with
        # the scheduler must not hold the only worker while a code is mailed.
        SCHEDULER_WORKERS="4",
        # A browser gone offline leaves its socket half-open: the server finds
        # out by the heartbeat, so a short one keeps presence prompt.
        WS_HEARTBEAT_SECONDS="4",
        LOG_FORMAT="text",
    )
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "unimatch.server.cli", "serve", "--port", str(port),
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        url = await asyncio.wait_for(_read_url(proc.stdout), START_TIMEOUT)
        running = _processes_of(proc.pid, data_dir)
        yield url, data_dir / "outbox"
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), STOP_TIMEOUT)
        _, alive = psutil.wait_procs(running, timeout=30)
        assert alive == [], [(p.pid, p.name()) for p in alive]
        assert _processes_of(proc.pid, data_dir) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_platform_serves_the_client_with_its_headers(
    served: tuple[str, Path],
) -> None:
    url, _ = served
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/chat?m=00000000-0000-4000-8000-000000000000") as page:
            html = await page.text()
            assert page.status == 200
            assert page.headers["Cache-Control"] == "no-cache"
            policy = page.headers["Content-Security-Policy"]
            assert "script-src 'self' 'sha256-" in policy and "unsafe-inline" not in policy
            assert "frame-ancestors 'none'" in policy
        asset = html.split('src="/_next/static/', 1)[1].split('"', 1)[0]
        async with session.get(f"{url}/_next/static/{asset}",
                               headers={"Accept-Encoding": "gzip"}) as script:
            assert script.status == 200
            assert script.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert script.headers["Content-Encoding"] == "gzip"
        async with session.get(url + "/api/v1/no-such-thing") as missing:
            assert missing.status == 404
            assert (await missing.json())["error"] == "not_found"
        async with session.get(url + "/healthz") as health:
            assert (await health.json()) == {"status": "ok"}


def _browser_suite(url: str, outbox: Path) -> dict[str, int]:
    """Runs web/tests/e2e against `url`; Playwright's tally."""
    assert Path(CHROMIUM).exists(), f"Chromium is needed at {CHROMIUM}"
    results = WEB / "test-results" / "results.json"
    results.unlink(missing_ok=True)
    env = {**os.environ, "UNIMATCH_BASE_URL": url, "UNIMATCH_OUTBOX": str(outbox),
           "CHROMIUM_PATH": CHROMIUM, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"}
    _run(["npx", "playwright", "test"], BROWSER_TIMEOUT, env)
    stats: dict[str, int] = json.loads(results.read_text())["stats"]
    return stats


def _lighthouse(url: str) -> dict[str, Any]:
    """Lighthouse (mobile) on the discover and chat screens, signed in as the
    accounts the browser suite made; its report (web/test-results/)."""
    env = {**os.environ, "UNIMATCH_BASE_URL": url, "CHROME_PATH": CHROMIUM}
    _run(["npm", "run", "lighthouse"], BROWSER_TIMEOUT, env)
    report: dict[str, Any] = json.loads((WEB / "test-results" / "lighthouse.json").read_text())
    return report


async def test_two_students_in_real_browsers(served: tuple[str, Path]) -> None:
    url, outbox = served
    stats = await asyncio.to_thread(_browser_suite, url, outbox)
    assert stats["expected"] == BROWSER_TESTS, stats
    assert stats["unexpected"] == 0 and stats["flaky"] == 0 and stats["skipped"] == 0, stats
    screens = {p.stem for p in (WEB / "test-results" / "screens").glob("*.png")}
    assert {"signup", "verify", "onboarding", "discover", "match-celebration", "matches",
            "chat", "chat-offline", "notifications"} <= screens

    report = await asyncio.to_thread(_lighthouse, url)
    scores = {row["screen"]: row for row in report["lighthouse"]}
    assert set(scores) == {"discover", "chat"}
    # Accessibility is a property of the page; the performance score is a
    # timing of this (shared, loaded) machine, so it is reported, not asserted.
    for row in scores.values():
        assert row["accessibility"] >= 95, row
    print("lighthouse:", json.dumps(report))


def test_socket_client_unit_tests(web_build: Path) -> None:
    output = _run(["npm", "run", "test:unit"], CHECK_TIMEOUT)
    assert " passed" in output and " failed" not in output


def test_lint(web_build: Path) -> None:
    _run(["npm", "run", "lint"], CHECK_TIMEOUT)


def test_typescript_compiles(web_build: Path) -> None:
    _run(["npx", "tsc", "--noEmit"], CHECK_TIMEOUT)
