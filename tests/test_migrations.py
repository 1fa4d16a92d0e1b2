"""Migrations apply in order, re-apply as a no-op, and two processes that
start at once do not collide."""

from __future__ import annotations

import asyncio
import secrets
import sys

import asyncpg

from tests.conftest import create_database, drop_database
from unimatch.storage.migrations import apply_migrations, discover


async def _fresh_database(admin_dsn: str) -> tuple[str, str]:
    name = f"unimatch_mig_{secrets.token_hex(4)}"
    return name, await create_database(admin_dsn, name)


async def test_migrations_apply_once_and_reapply_as_noop(pg_admin_dsn: str) -> None:
    name, dsn = await _fresh_database(pg_admin_dsn)
    try:
        versions = [m.version for m in discover()]
        assert versions == sorted(versions) and len(versions) >= 2
        assert await apply_migrations(dsn) == versions
        assert await apply_migrations(dsn) == []
        conn = await asyncpg.connect(dsn)
        try:
            recorded = [r["version"] for r in
                        await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
            campuses = await conn.fetchval("SELECT count(*) FROM campuses")
            interests = await conn.fetchval("SELECT count(*) FROM interests")
        finally:
            await conn.close()
        assert recorded == versions
        assert campuses >= 40 and interests >= 40
    finally:
        await drop_database(pg_admin_dsn, name)


async def test_concurrent_migrate_processes_do_not_collide(pg_admin_dsn: str) -> None:
    name, dsn = await _fresh_database(pg_admin_dsn)
    env_dsn = {"DATABASE_URL": dsn, "REDIS_URL": "redis://127.0.0.1:6379/0",
               "JWT_SECRET": "x" * 32}
    try:
        import os

        env = {**os.environ, **env_dsn}
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "unimatch.server.cli", "migrate",
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(3)
        ]
        outputs = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in procs)), timeout=120
        )
        assert [p.returncode for p in procs] == [0, 0, 0], outputs
        counts = sorted(int(out.split()[1]) for out, _ in
                        ((o.decode(), e) for o, e in outputs))
        total = len(discover())
        # Exactly one process applied everything; the others found nothing to do.
        assert counts == [0, 0, total]
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        finally:
            await conn.close()
        assert rows == total
    finally:
        await drop_database(pg_admin_dsn, name)
