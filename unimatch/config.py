"""Configuration from environment variables (and an optional `.env` file).

`Config` is a frozen dataclass so it can be pickled into every Ray actor
unchanged: each process builds its own clients from the same values.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from dotenv import dotenv_values


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _jwt_secret(data_dir: Path) -> str:
    """The signing key kept in the data folder, generated on first use."""
    path = data_dir / "jwt_secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path(".unimatch")
    database_url: str | None = None
    # A streaming replica for read-heavy queries (storage/pg.py `Database.read`).
    replica_url: str | None = None
    redis_url: str | None = None
    ray_address: str | None = None
    jwt_secret: str = field(default="", repr=False)
    allowed_email_domains: tuple[str, ...] = (".ac.ke", ".edu")

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_tls: str = "false"
    mail_from: str = "UniMatch <no-reply@unimatch.local>"

    media_root: Path = Path(".unimatch/media")
    public_url: str = ""

    limit_register_per_hour: int = 100
    limit_login_failures: int = 5
    limit_likes_per_day: int = 100
    limit_chat_burst: int = 60
    limit_chat_per_second: float = 10.0

    pg_pool_size: int = 20
    pg_pool_overflow: int = 10
    pg_retries: int = 3
    slow_query_ms: float = 100.0

    shard_hosts: int = max(os.cpu_count() or 1, 1)
    gateways: int = 1
    # Ray calls one gateway keeps in flight to one shard host (see gateway.py).
    gateway_calls_in_flight: int = 2
    # Each shard host also runs a gateway in its process (unimatch.node):
    # calls to the actors it hosts, and pushes to its sockets, skip Ray.
    colocated: bool = False
    passivate_after: float = 900.0
    scheduler_workers: int = 4
    job_lease_seconds: float = 60.0

    access_ttl: int = 15 * 60
    refresh_ttl: int = 30 * 24 * 3600

    ws_heartbeat: float = 30.0
    ws_send_queue: int = 256
    # Chat sends one gateway holds unanswered (queued or at an actor); past
    # it, new sends are refused with an `overloaded` error frame at once.
    ws_max_pending_sends: int = 2000
    max_photo_bytes: int = 5 * 1024 * 1024
    max_photos: int = 6

    namespace: str = "unimatch"
    # Every Redis key is written under this prefix (test runs share a server).
    redis_prefix: str = ""
    # Extra virtual-actor kinds, as (kind, "module:Class") pairs.
    actor_kinds: tuple[tuple[str, str], ...] = ()
    # Webhook deliveries to private, loopback or link-local addresses (SSRF).
    webhook_allow_private: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Config:
        """Build the configuration; `env` wins over a `.env` file in the cwd."""
        merged: dict[str, str] = {}
        if dotenv and Path(".env").exists():
            merged.update({k: v for k, v in dotenv_values(".env").items() if v is not None})
        merged.update(os.environ if env is None else env)
        data_dir = Path(merged.get("UNIMATCH_DATA_DIR", ".unimatch"))
        domains = tuple(
            d.strip().lower() for d in merged.get("ALLOWED_EMAIL_DOMAINS", ".ac.ke,.edu").split(",")
            if d.strip()
        )
        smtp_tls = merged.get("SMTP_TLS", "false").strip().lower()
        if smtp_tls not in {"false", "starttls", "tls"}:
            raise ValueError(f"SMTP_TLS must be false, starttls or tls, got {smtp_tls!r}")
        return cls(
            data_dir=data_dir,
            database_url=merged.get("DATABASE_URL") or None,
            replica_url=merged.get("DATABASE_REPLICA_URL") or None,
            redis_url=merged.get("REDIS_URL") or None,
            ray_address=merged.get("RAY_ADDRESS") or None,
            jwt_secret=merged.get("JWT_SECRET") or _jwt_secret(data_dir),
            allowed_email_domains=domains,
            smtp_host=merged.get("SMTP_HOST") or None,
            smtp_port=_int(merged, "SMTP_PORT", 465 if smtp_tls == "tls" else 25),
            smtp_user=merged.get("SMTP_USER") or None,
            smtp_password=merged.get("SMTP_PASSWORD") or None,
            smtp_tls=smtp_tls,
            mail_from=merged.get("MAIL_FROM", cls.mail_from),
            media_root=Path(merged.get("MEDIA_ROOT") or data_dir / "media"),
            public_url=merged.get("PUBLIC_URL", ""),
            limit_register_per_hour=_int(merged, "LIMIT_REGISTER_PER_HOUR", 100),
            limit_login_failures=_int(merged, "LIMIT_LOGIN_FAILURES", 5),
            limit_likes_per_day=_int(merged, "LIMIT_LIKES_PER_DAY", 100),
            limit_chat_burst=_int(merged, "LIMIT_CHAT_BURST", 60),
            limit_chat_per_second=_float(merged, "LIMIT_CHAT_PER_SECOND", 10.0),
            pg_pool_size=_int(merged, "PG_POOL_SIZE", 20),
            pg_pool_overflow=_int(merged, "PG_POOL_OVERFLOW", 10),
            slow_query_ms=_float(merged, "SLOW_QUERY_MS", 100.0),
            shard_hosts=_int(merged, "SHARD_HOSTS", cls.shard_hosts),
            gateways=_int(merged, "GATEWAYS", 1),
            gateway_calls_in_flight=_int(merged, "GATEWAY_CALLS_IN_FLIGHT", 2),
            colocated=_bool(merged.get("COLOCATED", "false")),
            passivate_after=_float(merged, "PASSIVATE_AFTER_SECONDS", 900.0),
            scheduler_workers=_int(merged, "SCHEDULER_WORKERS", 4),
            ws_heartbeat=_float(merged, "WS_HEARTBEAT_SECONDS", 30.0),
            ws_max_pending_sends=_int(merged, "WS_MAX_PENDING_SENDS", 2000),
            namespace=merged.get("RAY_NAMESPACE", "unimatch"),
            redis_prefix=merged.get("REDIS_PREFIX", ""),
            webhook_allow_private=_bool(merged.get("WEBHOOK_ALLOW_PRIVATE", "false")),
        )

    def with_(self, **changes: object) -> Config:
        return replace(self, **changes)  # type: ignore[arg-type]
