"""Logs as an operator reads them: JSON lines on the stdout of `unimatch
serve`, from the CLI and from every Ray actor process, with the request id,
the route template and the user; never a WebSocket token. And what reaches
Sentry: an error with its request, minus credentials."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import sentry_sdk
from aiohttp import web

from tests.factories import make_user
from tests.test_serve import START_TIMEOUT, STOP_TIMEOUT, _processes_of
from tests.waiting import eventually
from unimatch.domain.config import Config
from unimatch.domain.sentry import configure_sentry, scrub_event
from unimatch.http.errors import error_middleware
from unimatch.http.middleware import request_id_middleware
from unimatch.server.platform import free_port
from unimatch.storage.pg import Database

# A text line: ISO time, [level], the event, then key=value pairs.
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \[(debug|info|warning|error|critical)"
)


@dataclass
class Served:
    """A running `unimatch serve` and every stdout line it printed so far."""

    proc: asyncio.subprocess.Process
    url: str
    data_dir: Path
    lines: list[bytes] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def line_with(self, *needles: bytes, within: float = 60.0) -> bytes:
        """The first line holding every needle, once one has arrived."""
        async def probe() -> bytes | None:
            return next((ln for ln in self.lines if all(n in ln for n in needles)), None)

        found: bytes = await eventually(probe, within=within)
        return found

    async def stop(self) -> None:
        """SIGTERM; returns once serve exited 0 with its last line read and
        every process it ran is gone."""
        running = _processes_of(self.proc.pid, self.data_dir)
        self.proc.send_signal(signal.SIGTERM)
        assert self.reader is not None
        await asyncio.wait_for(self.reader, STOP_TIMEOUT)  # stdout closed
        assert await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT) == 0
        _, alive = psutil.wait_procs(running, timeout=30)
        assert alive == [], [(p.pid, p.name()) for p in alive]
        assert _processes_of(self.proc.pid, self.data_dir) == []


def _serve_env(config: Config, data_dir: Path, **extra: str) -> dict[str, str]:
    """serve against this run's PostgreSQL database and Redis (a key prefix
    and Ray namespace of its own), with this run's signing key."""
    assert config.database_url and config.redis_url
    env = {k: v for k, v in os.environ.items()
           if k not in {"RAY_ADDRESS", "PROMETHEUS_MULTIPROC_DIR", "SENTRY_DSN",
                        "LOG_FORMAT", "LOG_LEVEL"}}
    env.update(
        UNIMATCH_DATA_DIR=str(data_dir),
        DATABASE_URL=config.database_url,
        REDIS_URL=config.redis_url,
        REDIS_PREFIX=f"{config.redis_prefix}logs:{secrets.token_hex(3)}:",
        RAY_NAMESPACE=f"{config.namespace}-logs-{secrets.token_hex(3)}",
        JWT_SECRET=config.jwt_secret,
        NODES="1",
        SCHEDULER_WORKERS="1",
        **extra,
    )
    return env


@pytest.fixture
async def serve(
    config: Config, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Served]:
    """`unimatch serve`, with extra environment from an indirect parameter;
    stopped at the end (if the test did not), leaving nothing behind."""
    data_dir = (tmp_path / "data").resolve()
    port = free_port()
    extra: dict[str, str] = getattr(request, "param", {})
    with (tmp_path / "stderr.txt").open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "unimatch.server.cli", "serve", "--port", str(port),
            env=_serve_env(config, data_dir, **extra), cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )
    served = Served(proc, f"http://127.0.0.1:{port}", data_dir)

    async def read() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            served.lines.append(line)

    served.reader = asyncio.create_task(read())
    try:
        await served.line_with(b"listening on", served.url.encode(), within=START_TIMEOUT)
        yield served
        if proc.returncode is None:
            await served.stop()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        served.reader.cancel()


async def _exercise(served: Served, db: Database, config: Config) -> dict[str, str]:
    """An authenticated request with an X-Request-Id, and a WebSocket that
    carries its token in the query string, as the web client connects."""
    user = await make_user(db, config)
    other = await make_user(db, config)
    request_id = f"logs-{secrets.token_hex(8)}"
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{served.url}/api/v1/users/{other.id}",
            params={"lang": "sw"},
            headers={**user.auth, "X-Request-Id": request_id},
        ) as response:
            assert response.status == 200, await response.text()
        async with session.ws_connect(f"{served.url}/ws?token={user.token}") as ws:
            assert (await ws.receive_json(timeout=30))["type"] == "ready"
            await ws.send_json({"type": "ping"})
            assert (await ws.receive_json(timeout=30))["type"] == "pong"
    return {"request_id": request_id, "user_id": str(user.id), "other_id": str(other.id),
            "token": user.token}


@pytest.mark.slow
async def test_every_process_logs_json_lines_to_serve_stdout(
    serve: Served, db: Database, config: Config, tmp_path: Path
) -> None:
    seen = await _exercise(serve, db, config)
    rid = seen["request_id"].encode()
    access_line = await serve.line_with(b'"unimatch.access"', rid)
    ws_line = await serve.line_with(b'"unimatch.access"', b'"route":"/ws"')

    access = json.loads(access_line)
    assert access["level"] == "info"
    assert access["method"] == "GET"
    assert access["route"] == "/api/v1/users/{user_id}"
    assert access["status"] == 200
    assert isinstance(access["duration_ms"], float) and access["duration_ms"] > 0
    assert access["bytes"] > 0
    assert access["user_id"] == seen["user_id"]
    assert access["client"] == "127.0.0.1"
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z$", access["ts"])
    # The route, not the path: no id from the URL, no query string.
    assert seen["other_id"] not in access_line.decode()
    assert "lang" not in access_line.decode()
    # It came from a Ray actor process (the node), through Ray to our stdout.
    assert access["process"] == "node-0" and access["pid"] != serve.proc.pid

    ws = json.loads(ws_line)
    assert ws["status"] == 101 and ws["route"] == "/ws"
    # Ray forwards each worker's lines on its own schedule: wait for the
    # scheduler's first one rather than take the lines so far.
    await serve.line_with(b'"process":"scheduler"')
    processes = {json.loads(line)["process"] for line in serve.lines}
    assert {"cli", "node-0", "scheduler"} <= processes, processes

    await serve.stop()
    for line in serve.lines:
        event = json.loads(line)
        assert {"ts", "level", "logger", "event", "process", "pid"} <= event.keys(), line
    token = seen["token"].encode()
    assert not [line for line in serve.lines if token in line]
    assert token not in (tmp_path / "stderr.txt").read_bytes()
    assert json.loads(serve.lines[-1])["event"] == "UniMatch stopped"


@pytest.mark.slow
@pytest.mark.parametrize("serve", [{"LOG_FORMAT": "text"}], indirect=True)
async def test_text_format_is_for_people_and_nodes_log_too(
    serve: Served, db: Database, config: Config
) -> None:
    seen = await _exercise(serve, db, config)
    rid = seen["request_id"].encode()
    line = (await serve.line_with(b"[unimatch.access]", rid)).decode()
    assert TEXT_LINE.match(line), line
    assert "GET /api/v1/users/{user_id} 200" in line
    assert f"request_id={seen['request_id']}" in line
    assert f"user_id={seen['user_id']}" in line
    assert "process=node-0" in line
    for raw in serve.lines:
        text = raw.decode()
        assert TEXT_LINE.match(text), text
        assert not text.lstrip().startswith("{")
        assert seen["token"] not in text


# -- Sentry -------------------------------------------------------------------


@dataclass
class Receiver:
    """A Sentry ingest on loopback: the envelopes the SDK posts."""

    url: str
    envelopes: list[bytes] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def events(self) -> list[dict[str, Any]]:
        """The error events among the envelopes' items."""
        found = []
        for envelope in self.envelopes:
            lines = envelope.split(b"\n")
            # Header line, then (item header, payload) pairs.
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if header and json.loads(header).get("type") == "event":
                    found.append(json.loads(payload))
        return found


@pytest.fixture
async def sentry_receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    receiver = Receiver(f"http://127.0.0.1:{port}")

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        receiver.envelopes.append(body)
        receiver.arrived.set()
        return web.json_response({"id": secrets.token_hex(16)})

    app = web.Application()
    app.router.add_post("/api/{project}/envelope/", ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield receiver
    await runner.cleanup()


@pytest.fixture
def sentry_off_after() -> Iterator[None]:
    """The SDK is process-global: no client is left reporting after the test."""
    yield
    client = sentry_sdk.get_client()
    client.close()
    sentry_sdk.get_global_scope().set_client(None)
    sentry_sdk.get_global_scope().remove_tag("process")


async def test_sentry_gets_the_error_and_its_request_without_credentials(
    sentry_receiver: Receiver, sentry_off_after: None, aiohttp_client: Any
) -> None:
    dsn = f"http://publickey@127.0.0.1:{sentry_receiver.url.rsplit(':', 1)[1]}/42"
    assert configure_sentry(Config(sentry_dsn=dsn), process="node-7")

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("the profile cache is on fire")

    app = web.Application(middlewares=[request_id_middleware, error_middleware])
    app.router.add_get("/api/v1/boom", broken)
    client = await aiohttp_client(app)
    bearer = f"bearer-{secrets.token_hex(12)}"
    ws_token = f"wstoken-{secrets.token_hex(12)}"
    response = await client.get(
        "/api/v1/boom",
        params={"token": ws_token, "page": "2"},
        headers={"Authorization": f"Bearer {bearer}", "Cookie": f"session={bearer}",
                 "X-Request-Id": "sentry-req-0001"},
    )
    assert response.status == 500
    await asyncio.to_thread(sentry_sdk.flush, 10)
    await asyncio.wait_for(sentry_receiver.arrived.wait(), 30)

    raw = b"".join(sentry_receiver.envelopes)
    assert bearer.encode() not in raw and ws_token.encode() not in raw
    [event] = sentry_receiver.events()
    assert event["exception"]["values"][-1]["value"] == "the profile cache is on fire"
    assert event["tags"]["process"] == "node-7"
    request = event["request"]
    assert request["url"].endswith("/api/v1/boom")
    assert request["query_string"] == "page=2"
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert headers["x-request-id"] == "sentry-req-0001"
    assert "authorization" not in headers and "cookie" not in headers
    assert "cookies" not in request
    assert "user" not in event or "ip_address" not in event.get("user", {})


def test_scrubber_cuts_tokens_from_urls_and_breadcrumbs() -> None:
    event: dict[str, Any] = {
        "request": {
            "url": "http://h/ws?token=abc&x=1",
            "query_string": "token=abc&x=1",
            "headers": {"Authorization": "Bearer abc", "Accept": "*/*"},
            "cookies": {"session": "abc"},
        },
        "breadcrumbs": {"values": [{"data": {"url": "http://h/cb?access_token=abc"}}]},
    }
    scrubbed = scrub_event(event)
    assert "abc" not in json.dumps(scrubbed)
    assert scrubbed["request"]["url"] == "http://h/ws?x=1"
    assert scrubbed["request"]["headers"] == {"Accept": "*/*"}
