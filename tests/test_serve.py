"""`unimatch serve` as a user runs it: no URLs set, so it brings up embedded
PostgreSQL and Redis and a local Ray, answers /readyz, and after SIGTERM
leaves no process behind; its data survives for the next start."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import psutil

from unimatch.server.platform import free_port

START_TIMEOUT = 240
_URL = re.compile(r"https?://[^\s\"']+")
STOP_TIMEOUT = 90


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "RAY_ADDRESS", "JWT_SECRET",
                        "PROMETHEUS_MULTIPROC_DIR"}}
    env.update(UNIMATCH_DATA_DIR=str(data_dir), NODES="1", SCHEDULER_WORKERS="1")
    return env


def _processes_of(root: int, data_dir: Path) -> list[psutil.Process]:
    found: dict[int, psutil.Process] = {}
    try:
        for proc in psutil.Process(root).children(recursive=True):
            found[proc.pid] = proc
    except psutil.NoSuchProcess:
        pass
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline:
            found[proc.pid] = proc
    return list(found.values())


async def _terminate(
    proc: asyncio.subprocess.Process, running: list[psutil.Process], data_dir: Path
) -> tuple[bytes, bytes]:
    """SIGTERM, then its output once it exited; every process it ran is gone."""
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), STOP_TIMEOUT)
    _, alive = psutil.wait_procs(running, timeout=30)
    assert alive == [], [(p.pid, p.name()) for p in alive]
    assert _processes_of(proc.pid, data_dir) == []
    return stdout or b"", stderr or b""


async def _read_url(stream: asyncio.StreamReader) -> str:
    """The URL from serve's log line saying it listens: a JSON line, or a
    text one (LOG_FORMAT=text)."""
    while True:
        line = await stream.readline()
        if not line:
            raise AssertionError("serve exited before it listened")
        if b"listening on" not in line:
            continue
        if line.lstrip().startswith(b"{"):
            event = json.loads(line)
            if "url" in event:  # the CLI's line, not a node's
                return str(event["url"])
            continue
        found = _URL.search(line.decode())
        if found and "UniMatch listening" in line.decode():
            return found.group(0)


async def test_serve_with_embedded_servers_and_clean_shutdown(tmp_path: Path) -> None:
    data_dir = (tmp_path / "data").resolve()
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "unimatch.server.cli", "serve", "--port", str(port),
        env=_env(data_dir), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        url = await asyncio.wait_for(_read_url(proc.stdout), START_TIMEOUT)
        assert url == f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/readyz") as response:
                body = await response.json()
                assert response.status == 200, body
                assert body["checks"] == {"postgres": "ok", "redis": "ok", "actors": "ok"}
        running = _processes_of(proc.pid, data_dir)
        names = " ".join(p.name() for p in running)
        assert "postgres" in names and "redis-server" in names and "raylet" in names
        assert (data_dir / "jwt_secret").exists()

        stdout, _ = await _terminate(proc, running, data_dir)
        assert proc.returncode == 0
        assert b"UniMatch stopped" in stdout
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    # The embedded PostgreSQL kept its data: a second start finds the schema.
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "unimatch.server.cli", "migrate",
        env=_env(data_dir), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(migrate.communicate(), START_TIMEOUT)
    assert migrate.returncode == 0
    assert out.decode().startswith("applied 0 migration(s)")
    assert _processes_of(migrate.pid, data_dir) == []


async def test_a_signal_while_starting_stops_the_start_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    data_dir = (tmp_path / "data").resolve()
    env = _env(data_dir)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "unimatch.server.cli", "serve", "--port", str(free_port()),
        env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async def migrated() -> None:  # the schema is in: actors start next
            while b"applied migration 040" not in await proc.stdout.readline():
                assert not proc.stdout.at_eof(), "serve exited before it migrated"

        await asyncio.wait_for(migrated(), START_TIMEOUT)
        running = _processes_of(proc.pid, data_dir)
        stdout, stderr = await _terminate(proc, running, data_dir)
        assert proc.returncode == 1
        assert b"listening on" not in stdout
        assert b"UniMatch stopped before it was up" in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
