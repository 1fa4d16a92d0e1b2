"""Configuration from environment variables (and an optional `.env` file).

`Config` is a frozen dataclass so it can be pickled into every Ray actor
unchanged: each process builds its own clients from the same values.

Uploaded photos live in one media store, chosen by `MEDIA_STORE`:
`local` (the default) keeps them in `MEDIA_ROOT` on this machine, fit for one
machine only; `s3` keeps them in a bucket of an S3-compatible object store
(MinIO, Ceph RGW, AWS S3) that every machine of a cluster shares, given by
`S3_ENDPOINT_URL` (unset: AWS for `S3_REGION`), `S3_BUCKET`,
`S3_ACCESS_KEY_ID`, `S3_SECRET_ACCESS_KEY` and `S3_REGION` (default
`us-east-1`). With `s3` and any of the bucket or keys missing, the
configuration is refused (`check_media_store`).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

# The static export of the web client, beside the package in a checkout.
_DEFAULT_WEB_ROOT = Path(__file__).resolve().parents[2] / "web" / "out"


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


# HS256 keys and the keys derived from this one need at least 256 bits.
MIN_SECRET_BYTES = 32
LOOPBACK_CIDRS = ("127.0.0.0/8", "::1/128")


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _cidrs(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    values = _list(env, name, default)
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ValueError(f"{name}: {value!r} is not an address or CIDR") from exc
    return values


def _ports(env: Mapping[str, str], name: str) -> tuple[int, ...] | None:
    """`*` allows every port (None); otherwise a comma list."""
    raw = env.get(name, "").strip()
    if raw == "*":
        return None
    try:
        return tuple(int(p) for p in _list(env, name, ("80", "443")))
    except ValueError as exc:
        raise ValueError(f"{name} must be a comma list of ports or *, got {raw!r}") from exc


def check_secret(secret: str) -> str:
    """Refuse a signing key too short to be safe (a generated one is 64 bytes)."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes; leave it unset to "
            "have one generated"
        )
    return secret


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


def default_nodes() -> int:
    """One node per two cores: on two cores one node carries the most chat
    (a second node shares the same cores and adds Ray hops); see README."""
    return max(1, (os.cpu_count() or 2) // 2)


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
    # "local" (media_root) or "s3" (the bucket below); see the module docstring.
    media_store: str = "local"
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = field(default=None, repr=False)
    s3_region: str = "us-east-1"
    web_root: Path = _DEFAULT_WEB_ROOT
    public_url: str = ""

    limit_register_per_hour: int = 100
    limit_login_failures: int = 5
    limit_likes_per_day: int = 100
    limit_chat_burst: int = 60
    limit_chat_per_second: float = 10.0
    # Login attempts in 15 minutes across every address for one account, and
    # across every account from one address (students share NAT addresses).
    limit_login_per_account: int = 20
    limit_login_per_ip: int = 100
    # OTP and reset-code checks in 15 minutes per address and per account.
    limit_otp_verify_per_ip: int = 100
    limit_otp_verify_per_account: int = 10
    # Codes (verification or reset) mailed to one account in 24 hours.
    limit_codes_per_day: int = 10
    limit_photo_uploads_per_hour: int = 20
    # Password hashing in flight per process: running, then waiting; past
    # both, 503 with Retry-After.
    password_hash_workers: int = 2
    password_hash_queue: int = 16
    photo_decode_workers: int = 2
    photo_decode_queue: int = 4
    # A refresh token presented again this soon after its use gets the same
    # new pair (a retry, a second tab) instead of revoking its family.
    refresh_reuse_grace: float = 10.0

    # Peers whose X-Forwarded-For is believed, and how many proxies of ours
    # stand in front of the app (see unimatch.http.client_address).
    trusted_proxies: tuple[str, ...] = LOOPBACK_CIDRS
    trusted_proxy_hops: int = 1
    # TCP peers that may read /metrics.
    metrics_allow: tuple[str, ...] = LOOPBACK_CIDRS

    pg_pool_size: int = 20
    pg_pool_overflow: int = 10
    pg_retries: int = 3
    slow_query_ms: float = 100.0

    # Server processes on this machine, each a gateway and a host of actors
    # (unimatch.server.node). One per two cores: see the README for the
    # measurements behind it.
    nodes: int = field(default_factory=lambda: default_nodes())
    # Messages one virtual actor may have waiting; past it, `overloaded`.
    mailbox_limit: int = 1000
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
    webhook_allow_http: bool = False
    # Ports a webhook URL may name; None allows any.
    webhook_ports: tuple[int, ...] | None = (80, 443)

    # Logs: one JSON line per event on stdout ("json"), or "text" for people.
    log_format: str = "json"
    log_level: str = "INFO"
    # Errors go to Sentry when set (unimatch.domain.sentry); PII is never sent.
    sentry_dsn: str | None = field(default=None, repr=False)
    # Daily database dumps (and report files) kept in data_dir/backups.
    backup_keep: int = 7
    # Where pg_dump / pg_restore live; None: the newest found (see scheduler/backup.py).
    pg_bin_dir: Path | None = None

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
        log_format = merged.get("LOG_FORMAT", "json").strip().lower() or "json"
        if log_format not in {"json", "text"}:
            raise ValueError(f"LOG_FORMAT must be json or text, got {log_format!r}")
        log_level = merged.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
        return cls(
            data_dir=data_dir,
            database_url=merged.get("DATABASE_URL") or None,
            replica_url=merged.get("DATABASE_REPLICA_URL") or None,
            redis_url=merged.get("REDIS_URL") or None,
            ray_address=merged.get("RAY_ADDRESS") or None,
            jwt_secret=check_secret(merged.get("JWT_SECRET") or _jwt_secret(data_dir)),
            allowed_email_domains=domains,
            smtp_host=merged.get("SMTP_HOST") or None,
            smtp_port=_int(merged, "SMTP_PORT", 465 if smtp_tls == "tls" else 25),
            smtp_user=merged.get("SMTP_USER") or None,
            smtp_password=merged.get("SMTP_PASSWORD") or None,
            smtp_tls=smtp_tls,
            mail_from=merged.get("MAIL_FROM", cls.mail_from),
            media_root=Path(merged.get("MEDIA_ROOT") or data_dir / "media"),
            **_media_store_settings(merged),
            web_root=Path(merged.get("WEB_ROOT") or _DEFAULT_WEB_ROOT),
            public_url=merged.get("PUBLIC_URL", ""),
            limit_register_per_hour=_int(merged, "LIMIT_REGISTER_PER_HOUR", 100),
            limit_login_failures=_int(merged, "LIMIT_LOGIN_FAILURES", 5),
            limit_likes_per_day=_int(merged, "LIMIT_LIKES_PER_DAY", 100),
            limit_chat_burst=_int(merged, "LIMIT_CHAT_BURST", 60),
            limit_chat_per_second=_float(merged, "LIMIT_CHAT_PER_SECOND", 10.0),
            limit_login_per_account=_int(merged, "LIMIT_LOGIN_PER_ACCOUNT", 20),
            limit_login_per_ip=_int(merged, "LIMIT_LOGIN_PER_IP", 100),
            limit_otp_verify_per_ip=_int(merged, "LIMIT_OTP_VERIFY_PER_IP", 100),
            limit_otp_verify_per_account=_int(merged, "LIMIT_OTP_VERIFY_PER_ACCOUNT", 10),
            limit_codes_per_day=_int(merged, "LIMIT_CODES_PER_DAY", 10),
            limit_photo_uploads_per_hour=_int(merged, "LIMIT_PHOTO_UPLOADS_PER_HOUR", 20),
            password_hash_workers=_int(merged, "PASSWORD_HASH_WORKERS", 2),
            password_hash_queue=_int(merged, "PASSWORD_HASH_QUEUE", 16),
            photo_decode_workers=_int(merged, "PHOTO_DECODE_WORKERS", 2),
            photo_decode_queue=_int(merged, "PHOTO_DECODE_QUEUE", 4),
            refresh_reuse_grace=_float(merged, "REFRESH_REUSE_GRACE_SECONDS", 10.0),
            trusted_proxies=_cidrs(merged, "TRUSTED_PROXIES", LOOPBACK_CIDRS),
            trusted_proxy_hops=max(_int(merged, "TRUSTED_PROXY_HOPS", 1), 1),
            metrics_allow=_cidrs(merged, "METRICS_ALLOW", LOOPBACK_CIDRS),
            pg_pool_size=_int(merged, "PG_POOL_SIZE", 20),
            pg_pool_overflow=_int(merged, "PG_POOL_OVERFLOW", 10),
            slow_query_ms=_float(merged, "SLOW_QUERY_MS", 100.0),
            nodes=_int(merged, "NODES", default_nodes()),
            mailbox_limit=_int(merged, "ACTOR_MAILBOX_LIMIT", 1000),
            passivate_after=_float(merged, "PASSIVATE_AFTER_SECONDS", 900.0),
            scheduler_workers=_int(merged, "SCHEDULER_WORKERS", 4),
            ws_heartbeat=_float(merged, "WS_HEARTBEAT_SECONDS", 30.0),
            ws_max_pending_sends=_int(merged, "WS_MAX_PENDING_SENDS", 2000),
            namespace=merged.get("RAY_NAMESPACE", "unimatch"),
            redis_prefix=merged.get("REDIS_PREFIX", ""),
            webhook_allow_private=_bool(merged.get("WEBHOOK_ALLOW_PRIVATE", "false")),
            log_format=log_format,
            log_level=log_level,
            sentry_dsn=merged.get("SENTRY_DSN") or None,
            webhook_allow_http=_bool(merged.get("WEBHOOK_ALLOW_HTTP", "false")),
            webhook_ports=_ports(merged, "WEBHOOK_PORTS"),
            backup_keep=_int(merged, "BACKUP_KEEP", 7),
            pg_bin_dir=Path(merged["PG_BIN_DIR"]) if merged.get("PG_BIN_DIR") else None,
        )

    def with_(self, **changes: object) -> Config:
        return replace(self, **changes)  # type: ignore[arg-type]


MEDIA_STORES = ("local", "s3")


def _media_store_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """MEDIA_STORE and the S3_* settings, checked (see `check_media_store`)."""
    settings: dict[str, Any] = {
        "media_store": (env.get("MEDIA_STORE") or "local").strip().lower(),
        "s3_endpoint_url": env.get("S3_ENDPOINT_URL") or None,
        "s3_bucket": env.get("S3_BUCKET") or None,
        "s3_access_key_id": env.get("S3_ACCESS_KEY_ID") or None,
        "s3_secret_access_key": env.get("S3_SECRET_ACCESS_KEY") or None,
        "s3_region": env.get("S3_REGION") or "us-east-1",
    }
    check_media_store(Config(**settings))
    return settings


def check_media_store(config: Config) -> None:
    """Refuse a media store that cannot work: an unknown MEDIA_STORE, or
    `s3` without its bucket and keys."""
    if config.media_store not in MEDIA_STORES:
        raise ValueError(f"MEDIA_STORE must be local or s3, got {config.media_store!r}")
    if config.media_store != "s3":
        return
    missing = [name for name, value in (
        ("S3_BUCKET", config.s3_bucket),
        ("S3_ACCESS_KEY_ID", config.s3_access_key_id),
        ("S3_SECRET_ACCESS_KEY", config.s3_secret_access_key),
    ) if not value]
    if missing:
        raise ValueError(f"MEDIA_STORE=s3 needs {', '.join(missing)}: set "
                         f"{'it' if len(missing) == 1 else 'them'} (and S3_ENDPOINT_URL for a "
                         "store other than AWS), or MEDIA_STORE=local for one machine")
