"""Fixtures against the real services: a fresh PostgreSQL database per run, a
key prefix of its own on the real Redis, and a real local Ray."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from tests.ceph_s3 import CephS3
from tests.mailsink import Inbox, SmtpServer, free_port
from unimatch.domain.config import Config
from unimatch.http.app import open_media_store
from unimatch.storage.cache import Cache, connect_redis
from unimatch.storage.media_store import MediaStore
from unimatch.storage.migrations import apply_migrations
from unimatch.storage.pg import Database

# Single-machine Ray stays on loopback (see DESIGN.md).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_worker_niceness", "0")

PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = f"{os.getpid()}_{secrets.token_hex(4)}"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def dsn_for(admin_dsn: str, database: str) -> str:
    base, _, query = admin_dsn.partition("?")
    base = base.rpartition("/")[0]
    return f"{base}/{database}" + (f"?{query}" if query else "")


async def _as_admin(admin_dsn: str, statement: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


async def create_database(admin_dsn: str, name: str) -> str:
    """Create database `name` on the admin DSN's server; its DSN."""
    await _as_admin(admin_dsn, f'CREATE DATABASE "{name}"')
    return dsn_for(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    await _as_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def services() -> Iterator[tuple[str, str]]:
    """(PostgreSQL admin DSN, Redis URL): the machine's servers, or embedded
    ones started for this run when none answers on the default ports."""
    from unimatch.server.embedded import EmbeddedPostgres, EmbeddedRedis

    # TEST_SERVICES=embedded forces the embedded servers even when the
    # machine's answer (to check that path).
    force = os.environ.get("TEST_SERVICES") == "embedded"
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    admin_dsn, redis_url = PG_ADMIN_DSN, TEST_REDIS_URL
    # Not under pytest's basetemp: as root, pgserver runs the server as a user
    # of its own, and every pytest session that starts (another run on the
    # machine) closes /tmp/pytest-of-<user> to anyone else again.
    root = Path(tempfile.mkdtemp(prefix="unimatch-services-"))
    try:
        if force or ("TEST_PG_ADMIN_DSN" not in os.environ
                      and not _reachable("127.0.0.1", 5432)):
            postgres = EmbeddedPostgres(root)
            started.append(postgres)
            admin_dsn = dsn_for(postgres.start(), "postgres")
        if force or ("TEST_REDIS_URL" not in os.environ
                      and not _reachable("127.0.0.1", 6379)):
            redis = EmbeddedRedis(root)
            started.append(redis)
            redis_url = redis.start()
        yield admin_dsn, redis_url
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_dsn(services: tuple[str, str]) -> str:
    return services[0]


@pytest.fixture(scope="session")
async def pg_dsn(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A database of this run's own, migrated, dropped at the end."""
    name = f"unimatch_test_{RUN_ID}"
    dsn = await create_database(pg_admin_dsn, name)
    await apply_migrations(dsn)
    yield dsn
    await drop_database(pg_admin_dsn, name)


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    return f"test:{RUN_ID}:"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("unimatch-data")


@pytest.fixture(scope="session")
async def mail() -> AsyncIterator[SmtpServer]:
    """The run's SMTP server: every mail the platform sends lands in
    `mail.inbox`, whichever job runner delivered it."""
    server = SmtpServer(Inbox(asyncio.get_running_loop()), free_port())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def config(
    pg_dsn: str,
    services: tuple[str, str],
    redis_prefix: str,
    data_dir: Path,
    mail: SmtpServer,
) -> Config:
    return Config(
        data_dir=data_dir,
        database_url=pg_dsn,
        redis_url=services[1],
        smtp_host="127.0.0.1",
        smtp_port=mail.port,
        # HS256 wants a key of at least 32 bytes (PyJWT warns below that).
        jwt_secret="test-secret-" + RUN_ID + "-" + "k" * 32,
        media_root=data_dir / "media",
        redis_prefix=redis_prefix,
        nodes=2,
        pg_pool_size=5,
        pg_pool_overflow=5,
        namespace=f"unimatch-test-{RUN_ID}",
        actor_kinds=(("counter", "tests.actor_kinds:Counter"),),
        # Webhook receivers in tests listen on loopback, over http, on any port.
        webhook_allow_private=True,
        webhook_allow_http=True,
        webhook_ports=None,
    )


@pytest.fixture(scope="session")
async def db(config: Config) -> AsyncIterator[Database]:
    assert config.database_url
    database = await Database.connect(config.database_url, size=5, overflow=5)
    yield database
    await database.close()


@pytest.fixture(scope="session")
async def cache(config: Config) -> AsyncIterator[Cache]:
    assert config.redis_url
    client = connect_redis(config.redis_url)
    yield Cache(client, config.redis_prefix)
    keys = [key async for key in client.scan_iter(match=config.redis_prefix + "*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(scope="session")
def ray_cluster(config: Config) -> Iterator[None]:
    """A local Ray of this run's own, shut down (with all its processes) at the end."""
    import ray

    ray.init(
        namespace=config.namespace,
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def platform(config: Config, ray_cluster: None) -> Iterator[object]:
    """The whole platform (two nodes and the scheduler) in this run's Ray,
    serving on a free loopback port; `platform.url` is its base URL."""
    from unimatch.server.platform import Platform

    started = Platform.start(config, "127.0.0.1", 0)
    yield started
    started.stop()


@pytest.fixture
async def http(platform) -> AsyncIterator[object]:
    """An HTTP client session against the running platform's gateway."""
    import aiohttp

    async with aiohttp.ClientSession(base_url=platform.url) as session:
        yield session


# How long this run's Ceph took to serve S3, told in the run's summary.
_ceph_started_in: list[float] = []


def pytest_terminal_summary(terminalreporter) -> None:
    for seconds in _ceph_started_in:
        terminalreporter.write_line(
            f"S3 tests: a real Ceph RADOS gateway (mon, memstore OSD, radosgw) "
            f"served in {seconds:.1f} s")


@pytest.fixture(scope="session")
async def ceph_s3() -> AsyncIterator[CephS3]:
    """A real S3-compatible server of this run's own (tests/ceph_s3.py),
    started when a test first asks, stopped with all its daemons at the end."""
    server = await CephS3.start()
    _ceph_started_in.append(server.started_in)
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def s3_config(config: Config, ceph_s3: CephS3) -> Config:
    """The run's configuration with MEDIA_STORE=s3, on a bucket of its own."""
    s3 = config.with_(
        media_store="s3",
        s3_endpoint_url=ceph_s3.endpoint_url,
        s3_bucket=f"unimatch-test-{RUN_ID.replace('_', '-')}",
        s3_access_key_id=ceph_s3.access_key,
        s3_secret_access_key=ceph_s3.secret_key,
        s3_region="us-east-1",
    )
    async with get_session().create_client(
        "s3", endpoint_url=s3.s3_endpoint_url, region_name=s3.s3_region,
        aws_access_key_id=s3.s3_access_key_id, aws_secret_access_key=s3.s3_secret_access_key,
        config=AioConfig(s3={"addressing_style": "path"}),
    ) as client:
        await client.create_bucket(Bucket=s3.s3_bucket)
    return s3


@pytest.fixture(params=["local", "s3"])
def store_config(request: pytest.FixtureRequest, config: Config) -> Config:
    """The run's configuration with each media store in turn."""
    if request.param == "local":
        return config
    s3: Config = request.getfixturevalue("s3_config")
    return s3


@pytest.fixture
async def media_store(store_config: Config) -> AsyncIterator[MediaStore]:
    """The media store `store_config` names, opened as the app opens it."""
    store = await open_media_store(store_config)
    yield store
    await store.close()
