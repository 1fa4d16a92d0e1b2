"""nginx in front of the real platform, end to end: the shipped
ops/nginx/unimatch.conf (rendered for loopback ports and temporary paths) in
front of a `unimatch serve` of this run's own, reached over TLS with the
certificate of ops/nginx/make-cert.sh.

Clients bind their sockets to different loopback addresses (127.0.0.2, .3,
...) so nginx sees different client addresses, and the app must see them too
(through X-Forwarded-For from a trusted proxy) for per-IP limits to count
each client apart.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.chat_clients import ChatClient, make_match
from tests.conftest import RUN_ID, create_database, drop_database
from tests.factories import PASSWORD
from tests.mailsink import SmtpServer, free_port
from tests.nginx_conf import ROOT, SHIPPED, Layout, make_cert, nginx_command, render
from tests.test_serve import _read_url
from tests.waiting import eventually
from unimatch.domain.config import Config
from unimatch.storage.pg import Database

START_TIMEOUT = 240.0
STOP_TIMEOUT = 90.0
TIMEOUT = 60.0
REGISTRATIONS_PER_HOUR = 2
ASSET = "/_next/static/chunks/app-0123abcd.js"
PHOTO = "0123456789abcdef0123456789abcdef.jpg"


@dataclass
class Stack:
    url: str  # https through nginx
    http_url: str  # plain http through nginx
    tls: ssl.SSLContext
    layout: Layout
    db: Database
    config: Config  # the served platform's (tokens, database)
    node_url: str  # the platform itself, without nginx

    def session(self, source: str) -> aiohttp.ClientSession:
        """A client whose connections come from `source` (a loopback address)."""
        connector = aiohttp.TCPConnector(local_addr=(source, 0), ssl=self.tls)
        return aiohttp.ClientSession(base_url=self.url, connector=connector)


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def _stop(proc: asyncio.subprocess.Process, signum: int) -> list[psutil.Process]:
    """Signal `proc` and wait for it; the processes it had that outlived it."""
    if proc.returncode is not None:
        return []
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    proc.send_signal(signum)
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    _, alive = await asyncio.to_thread(psutil.wait_procs, family, 30)
    return alive


def _prepare(base: Path, served: Config, port: int) -> Layout:
    """An asset of the web client and a photo on disk, a certificate, and
    the rendered nginx config in front of the node on `port`."""
    web_root = base / "web"
    (web_root / ASSET.lstrip("/")).parent.mkdir(parents=True)
    (web_root / ASSET.lstrip("/")).write_text("console.log('hashed asset');\n" * 100)
    served.media_root.mkdir(parents=True, exist_ok=True)
    (served.media_root / PHOTO).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    layout = Layout(
        prefix=base / "nginx", http_port=free_port(), https_port=free_port(),
        upstreams=[f"127.0.0.1:{port}"], web_root=web_root,
        media_parent=served.media_root.parent, certs=base / "certs",
    )
    make_cert(layout.certs)
    render(layout)
    return layout


@pytest.fixture(scope="module")
async def stack(
    pg_admin_dsn: str,
    services: tuple[str, str],
    redis_prefix: str,
    config: Config,
    mail: SmtpServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    base = tmp_path_factory.mktemp("nginx-stack")
    # A database of its own: the served scheduler must not run other suites' jobs.
    database = f"unimatch_nginx_{RUN_ID}"
    dsn = await create_database(pg_admin_dsn, database)
    served = config.with_(database_url=dsn, media_root=base / "media", data_dir=base / "data")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in {"RAY_ADDRESS", "PROMETHEUS_MULTIPROC_DIR", "NODES"}}
    env.update(
        DATABASE_URL=dsn,
        REDIS_URL=services[1],
        REDIS_PREFIX=f"{redis_prefix}nginx:",
        JWT_SECRET=config.jwt_secret,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(mail.port),
        UNIMATCH_DATA_DIR=str(served.data_dir),
        MEDIA_ROOT=str(served.media_root),
        LIMIT_REGISTER_PER_HOUR=str(REGISTRATIONS_PER_HOUR),
        TRUSTED_PROXIES="127.0.0.1/32",
        RAY_NAMESPACE=f"unimatch-nginx-{RUN_ID}",
        NODES="1", SCHEDULER_WORKERS="1",
        PYTHONPATH=str(ROOT),
    )
    with (base / "serve.log").open("wb") as log:
        serve = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "unimatch.server.cli", "serve", "--port", str(port),
            env=env, cwd=base, stdout=asyncio.subprocess.PIPE, stderr=log,
        )
    nginx: asyncio.subprocess.Process | None = None
    db: Database | None = None
    try:
        assert serve.stdout is not None
        node_url = await asyncio.wait_for(_read_url(serve.stdout), START_TIMEOUT)

        layout = await asyncio.to_thread(_prepare, base, served, port)
        nginx = await asyncio.create_subprocess_exec(
            *nginx_command(layout, "-g", "daemon off;"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        await eventually(lambda: _accepts(layout.https_port), within=TIMEOUT)
        tls = ssl.create_default_context(cafile=str(layout.certs / "unimatch.crt"))
        db = await Database.connect(dsn, size=2, overflow=2)
        yield Stack(
            url=f"https://127.0.0.1:{layout.https_port}",
            http_url=f"http://127.0.0.1:{layout.http_port}",
            tls=tls, layout=layout, db=db, config=served, node_url=node_url,
        )
    finally:
        if db is not None:
            await db.close()
        left: list[psutil.Process] = []
        if nginx is not None:
            left += await _stop(nginx, signal.SIGQUIT)  # graceful: workers finish
        left += await _stop(serve, signal.SIGTERM)
        await drop_database(pg_admin_dsn, database)
        assert left == [], [(p.pid, p.name()) for p in left]


async def _register(session: aiohttp.ClientSession, email: str) -> aiohttp.ClientResponse:
    async with session.post("/api/v1/auth/register", json={
        "email": email, "password": PASSWORD, "display_name": "Achieng",
    }) as response:
        await response.read()
        return response


def _email() -> str:
    return f"n{secrets.token_hex(6)}@uonbi.ac.ke"


async def test_sign_up_verify_and_log_in_through_nginx(stack: Stack, mail: SmtpServer) -> None:
    email = _email()
    async with stack.session("127.0.0.4") as session:
        async with session.post("/api/v1/auth/register", json={
            "email": email, "password": PASSWORD, "display_name": "Achieng",
        }) as response:
            assert response.status == 201, await response.text()
            assert (await response.json())["is_verified"] is False
        message = await mail.inbox.wait_for(email)
        code = re.search(r"\b(\d{6})\b", message.get_body(("plain",)).get_content())
        assert code, message.get_content()
        async with session.post(
            "/api/v1/auth/otp/verify", json={"email": email, "code": code.group(1)}
        ) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["user"]["is_verified"] is True
        async with session.post(
            "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        ) as response:
            assert response.status == 200, await response.text()
            access = (await response.json())["access"]
        async with session.get(
            "/api/v1/me", headers={"Authorization": f"Bearer {access}"}
        ) as response:
            assert response.status == 200
            assert (await response.json())["user"]["email"] == email


async def test_chat_between_two_users_through_nginx(stack: Stack) -> None:
    a, b, match_id = await make_match(stack.db, stack.config)
    alice = await ChatClient.connect(stack.url, a.token, ssl=stack.tls)
    bob = await ChatClient.connect(stack.url, b.token, ssl=stack.tls)
    try:
        cmid = await alice.send_message(match_id, "tukutane library saa nane?")
        ack = await alice.wait_for(lambda f: f["type"] == "ack" and f["client_msg_id"] == cmid)
        got = await bob.wait_for(lambda f: f["type"] == "message" and f["client_msg_id"] == cmid)
        assert ack["match_id"] == match_id and ack["seq"] == 1
        assert got["body"] == "tukutane library saa nane?"
        assert (got["seq"], got["sender_id"], got["message_id"]) == (
            1, str(a.id), ack["message_id"],
        )
    finally:
        await alice.close()
        await bob.close()


async def test_json_is_gzipped_and_request_ids_are_echoed_and_logged(stack: Stack) -> None:
    async with stack.session("127.0.0.5") as session:
        async with session.get(
            "/api/v1/openapi.json?access_token=hunter2-secret",
            headers={"Accept-Encoding": "gzip", "X-Request-Id": "trace-0123456789"},
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Encoding"] == "gzip"
            assert response.headers["X-Request-Id"] == "trace-0123456789"
            assert (await response.json())["openapi"].startswith("3.")
        async with session.get("/api/v1/campuses") as response:
            assert response.status == 200
            minted = response.headers["X-Request-Id"]
            assert re.fullmatch(r"[0-9a-f]{32}", minted), minted

    async def logged() -> list[str]:
        text = await asyncio.to_thread(stack.layout.access_log.read_text)
        return [line for line in text.splitlines() if "trace-0123456789" in line]

    (line,) = await eventually(logged, within=TIMEOUT)
    assert line.startswith("127.0.0.5 ")
    assert '"GET /api/v1/openapi.json HTTP/1.1" 200' in line
    assert "hunter2" not in stack.layout.access_log.read_text()


async def test_per_ip_limits_count_each_client_address_apart(stack: Stack) -> None:
    """The app limits registrations per client address. Through nginx every
    request comes from nginx's own address, so this holds only when the app
    reads the client's from X-Forwarded-For: 127.0.0.2 using up its limit
    leaves 127.0.0.3 its own."""
    async with stack.session("127.0.0.2") as first, stack.session("127.0.0.3") as second:
        for _ in range(REGISTRATIONS_PER_HOUR):
            assert (await _register(first, _email())).status == 201
        async with first.post("/api/v1/auth/register", json={
            "email": _email(), "password": PASSWORD, "display_name": "Achieng",
        }) as refused:
            body = await refused.json()
            assert refused.status == 429, body
            assert "registrations" in body["detail"]  # the app's limit, not nginx's
            assert int(refused.headers["Retry-After"]) > 0
        assert (await _register(second, _email())).status == 201


async def test_a_flood_from_one_address_is_refused_by_nginx_not_its_neighbours(
    stack: Stack,
) -> None:
    async with stack.session("127.0.0.6") as flood, stack.session("127.0.0.7") as neighbour:
        statuses = []
        for _ in range(120):  # the auth zone lets 61 through at once
            async with flood.get("/api/v1/auth/register") as response:
                statuses.append(response.status)
                if response.status == 429:
                    refused = await response.json()
                    retry_after = response.headers["Retry-After"]
                    break
        assert statuses[-1] == 429 and len(statuses) > 30, statuses
        assert refused == {"error": "rate_limited", "status_code": 429,
                           "detail": {"limit": "gateway"}}
        assert int(retry_after) >= 1
        async with neighbour.get("/api/v1/auth/register") as response:
            assert response.status == 405  # reaches the app: GET is not allowed there


async def test_assets_and_photos_are_cached_long_and_plain_http_redirects(stack: Stack) -> None:
    async with stack.session("127.0.0.8") as session:
        async with session.get(ASSET) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert "hashed asset" in await response.text()
        async with session.get(f"/media/{PHOTO}") as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert await response.read() == (stack.config.media_root / PHOTO).read_bytes()
        async with session.get(f"/media/{'f' * 32}.jpg") as response:
            assert response.status == 404  # not on disk: a node answers, in JSON
            assert (await response.json())["error"] == "not_found"
        async with session.get("/metrics") as response:
            assert response.status == 404
    async with aiohttp.ClientSession() as plain:
        async with plain.get(f"{stack.http_url}/api/v1/me", allow_redirects=False) as response:
            assert response.status == 308
            assert response.headers["Location"] == "https://127.0.0.1/api/v1/me"
        async with plain.get(f"{stack.http_url}/healthz") as response:
            assert response.status == 200


def test_socket_timeouts_outlast_the_heartbeat() -> None:
    """nginx must never be the one to close a quiet socket: the app closes
    it after WS_HEARTBEAT_SECONDS without a frame."""
    block = re.search(r"location \^~ /ws \{(.*?)\n    \}", SHIPPED.read_text(), re.DOTALL)
    assert block
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        found = re.search(rf"{directive} (\d+)s;", block.group(1))
        assert found, directive
        assert int(found.group(1)) >= 2 * Config().ws_heartbeat



async def test_the_served_scheduler_reports_its_process_and_the_queue(stack: Stack) -> None:
    """`unimatch serve` runs its processes as Ray actors sharing one metrics
    folder: the node's /metrics shows the scheduler's own process gauges and
    the queue gauges it reads from PostgreSQL. (Scraped directly: nginx does
    not forward /metrics.)"""

    async def scraped() -> str | None:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{stack.node_url}/metrics") as response:
                assert response.status == 200
                text = await response.text()
        return text if "unimatch_job_queue_sampled_timestamp_seconds" in text else None

    text = await eventually(scraped, within=TIMEOUT, interval=0.5)
    beats = re.findall(
        r'^unimatch_process_heartbeat_timestamp_seconds\{pid="(\d+)",role="scheduler"\} (\S+)$',
        text, re.MULTILINE,
    )
    assert len(beats) == 1, text
    assert psutil.pid_exists(int(beats[0][0]))
    assert re.search(r'^unimatch_process_resident_memory_bytes\{pid="\d+",role="scheduler"\} '
                     r"[1-9]", text, re.MULTILINE)
    # Every kind the scheduler runs is reported, dead jobs at 0 before any dies.
    assert re.search(r'^unimatch_jobs_dead_last_hour\{kind="send_email"\} 0\.0$', text,
                     re.MULTILINE), text
    assert 'unimatch_job_queue_depth{kind="backup_database",state="due"}' in text
