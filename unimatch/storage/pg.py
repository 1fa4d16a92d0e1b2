"""The asyncpg pool: retries on connection failure, slow-query log.

`Database` is the only door to PostgreSQL. A connection that cannot be had
is retried `pg_retries` times with a short backoff, then the caller gets
`Unavailable("database_unavailable")`, which the shell turns into a 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from unimatch.domain.errors import Unavailable

log = logging.getLogger("unimatch.sql")

# Errors that mean "the server is not there", as opposed to a bad query.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
)


def _log_slow(threshold_ms: float):
    def logger(record: Any) -> None:
        elapsed_ms = record.elapsed * 1000
        if elapsed_ms >= threshold_ms:
            log.warning(
                "slow query %.1f ms: %s", elapsed_ms, " ".join(record.query.split())[:2000]
            )

    return logger


async def _init_connection(conn: asyncpg.Connection, slow_query_ms: float) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )
    conn.add_query_logger(_log_slow(slow_query_ms))


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without `RESET ALL; UNLISTEN *; ...`: that is a round trip on
    every release, and the platform leaves no session state on a pooled
    connection (settings only with SET LOCAL, advisory locks only per
    transaction, LISTEN removed by its owner). asyncpg still rolls back an
    open transaction and drops listeners before calling this."""


# How long a query waits for a pooled connection before that counts as the
# database being unavailable.
ACQUIRE_TIMEOUT = 10.0


class Database:
    def __init__(self, pool: asyncpg.Pool, *, retries: int = 3, backoff: float = 0.05) -> None:
        self.pool = pool
        self.retries = retries
        self.backoff = backoff

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        size: int = 20,
        overflow: int = 10,
        retries: int = 3,
        slow_query_ms: float = 100.0,
    ) -> Database:
        """Open a pool. It connects lazily, so a database that is down at
        start-up does not stop the process: requests get 503 until it is back."""

        async def init(conn: asyncpg.Connection) -> None:
            await _init_connection(conn, slow_query_ms)

        pool = asyncpg.create_pool(
            dsn,
            min_size=0,
            max_size=size + overflow,
            init=init,
            command_timeout=30,
            timeout=5,
            max_inactive_connection_lifetime=300,
            reset=_keep_session,
        )
        await pool
        return cls(pool, retries=retries)

    async def close(self) -> None:
        await asyncio.wait_for(self.pool.close(), timeout=10)

    async def _acquire(self) -> asyncpg.pool.PoolConnectionProxy:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                # asyncio.timeout, not acquire(timeout=): that one runs the
                # acquisition as a task of its own, on every query.
                async with asyncio.timeout(ACQUIRE_TIMEOUT):
                    return await self.pool.acquire()
            except _CONNECTION_ERRORS as exc:
                if attempt == self.retries:
                    log.error("database unavailable after %d retries: %r", self.retries, exc)
                    raise Unavailable("database_unavailable", code="database_unavailable") from exc
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await self._acquire()
        try:
            yield conn
        except _CONNECTION_ERRORS as exc:
            raise Unavailable("database_unavailable", code="database_unavailable") from exc
        finally:
            await self.pool.release(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def _run(self, method: str, query: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await getattr(conn, method)(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await self._run("fetch", query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self._run("fetchrow", query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._run("fetchval", query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        return await self._run("execute", query, *args)

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1")
