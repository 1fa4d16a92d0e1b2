"""Every Prometheus metric of the platform, declared once with fixed labels.

Labels are route templates, kinds and outcomes: never raw paths or user ids.
Actors run in other processes; `serve` points PROMETHEUS_MULTIPROC_DIR at a
shared folder so `/metrics` on any gateway shows the whole node.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

HTTP_REQUESTS = Counter(
    "unimatch_http_requests_total", "HTTP requests served", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "unimatch_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
CACHE_ERRORS = Counter("unimatch_cache_errors_total", "Redis operations that failed", ["op"])
CACHE_LOOKUPS = Counter(
    "unimatch_cache_lookups_total", "Cache lookups by cache and result", ["cache", "result"]
)
DB_UNAVAILABLE = Counter(
    "unimatch_db_unavailable_total", "Requests that found PostgreSQL unavailable"
)
DB_REPLICA_FALLBACKS = Counter(
    "unimatch_db_replica_fallbacks_total",
    "Reads meant for the replica that the primary served, by reason "
    "(unreachable, timeout, conflict, down: skipped after a recent failure)",
    ["reason"],
)
ACTOR_CALLS = Counter(
    "unimatch_actor_calls_total", "Virtual actor calls handled", ["kind", "outcome"]
)
ACTOR_CALL_LATENCY = Histogram(
    "unimatch_actor_call_seconds",
    "Time a virtual actor call spends in its mailbox and handler",
    ["kind"],
    buckets=_LATENCY_BUCKETS,
)
ACTOR_ACTIVATIONS = Counter(
    "unimatch_actor_activations_total", "Virtual actor activations", ["kind"]
)
ACTOR_PASSIVATIONS = Counter(
    "unimatch_actor_passivations_total", "Virtual actor passivations", ["kind"]
)
ACTOR_RETRIES = Counter(
    "unimatch_actor_call_retries_total", "Calls retried because a node was unavailable"
)
# A cluster's membership (unimatch.actors.directory.Membership).
CLUSTER_NODES_LIVE = Gauge(
    "unimatch_cluster_nodes_live", "Nodes this process routes to", multiprocess_mode="max"
)
CLUSTER_MEMBERSHIP_CHANGES = Counter(
    "unimatch_cluster_membership_changes_total", "Changes of the live node set seen"
)
# A message row refused by the (match_id, seq) unique index: two activations
# of one match wrote at once. The design keeps this at zero; the database is
# the last line, and the send is retried after reloading last_seq.
SINGLE_WRITER_CONFLICTS = Counter(
    "unimatch_single_writer_conflicts_total",
    "Writes refused because another activation of the entity wrote first",
)
ACTOR_OVERLOADED = Counter(
    "unimatch_actor_calls_refused_total",
    "Calls refused with `overloaded` because the actor's mailbox was full",
    ["kind"],
)
ACTORS_ACTIVE = Gauge(
    "unimatch_actors_active", "Active virtual actors", ["kind"], multiprocess_mode="livesum"
)
WS_CONNECTIONS = Gauge(
    "unimatch_ws_connections", "Open WebSocket connections", multiprocess_mode="livesum"
)
WS_FRAMES = Counter("unimatch_ws_frames_total", "WebSocket frames", ["direction", "type"])
WS_CLOSED = Counter("unimatch_ws_closed_total", "WebSocket closes by code", ["code"])
JOBS = Counter("unimatch_jobs_total", "Jobs finished by kind and outcome", ["kind", "outcome"])
JOB_LATENCY = Histogram(
    "unimatch_job_seconds", "Job run time", ["kind"], buckets=_LATENCY_BUCKETS
)
MESSAGES = Counter("unimatch_chat_messages_total", "Chat messages committed")
MATCHES = Counter("unimatch_matches_total", "Matches formed")
SWIPES = Counter("unimatch_swipes_total", "Swipes recorded", ["action"])


def render() -> tuple[bytes, str]:
    """The exposition for `/metrics`: all processes of this node when the
    multiprocess folder is set, else this process alone."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

# Chat (WebSocket and group commit).
CHAT_COMMIT_BATCH = Histogram(
    "unimatch_chat_commit_batch_size",
    "Messages per group-commit transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
WS_SEND_LATENCY = Histogram(
    "unimatch_ws_send_ack_seconds",
    "From a send frame read by the gateway to its ack queued",
    buckets=_LATENCY_BUCKETS,
)
WS_SENDS_SHED = Counter(
    "unimatch_ws_sends_shed_total", "Chat sends refused because the gateway was overloaded"
)
WS_PENDING_SENDS = Gauge(
    "unimatch_ws_pending_sends",
    "Chat sends a gateway holds unanswered",
    multiprocess_mode="livesum",
)
WS_SLOW_CLOSED = Counter(
    "unimatch_ws_slow_closed_total", "Sockets closed 4008, by reason", ["reason"]
)

# Notifications, webhooks and moderation.
NOTIFICATION_PUSHES = Counter(
    "unimatch_notification_pushes_total", "Notification frames pushed after commit", ["outcome"]
)
WEBHOOK_ATTEMPTS = Counter(
    "unimatch_webhook_attempts_total",
    "Webhook delivery attempts by outcome (delivered, http_error, network_error, refused)",
    ["outcome"],
)
REPORTS_FILED = Counter("unimatch_reports_total", "Reports filed, by reason", ["reason"])
MODERATION_ACTIONS = Counter(
    "unimatch_moderation_actions_total",
    "Moderation actions (dismiss, warn, suspend, ban, unsuspend)",
    ["action"],
)

# The media store (uploaded photos): `store` is local or s3, `op` put, get,
# exists or delete; `outcome` ok, missing (no such file) or error.
MEDIA_STORE_OPS = Counter(
    "unimatch_media_store_ops_total", "Media store operations", ["store", "op", "outcome"]
)
MEDIA_STORE_LATENCY = Histogram(
    "unimatch_media_store_seconds",
    "Media store operation latency (for get: until the first byte is ready)",
    ["store", "op"],
    buckets=_LATENCY_BUCKETS,
)

# Security limits.
WORK_REFUSED = Counter(
    "unimatch_work_refused_total",
    "CPU-heavy jobs refused with 503 because their bounded pool was full",
    ["pool"],
)
RATELIMIT_DEGRADED = Counter(
    "unimatch_ratelimit_degraded_total",
    "Rate-limit decisions taken without Redis: by this process's own limiter (local) "
    "or allowed unchecked (open)",
    ["mode"],
)
PASSWORD_CHECKS = Counter(
    "unimatch_password_checks_total", "Passwords hashed or verified with argon2", ["op"]
)
METRICS_REFUSED = Counter(
    "unimatch_metrics_refused_total", "Requests for /metrics from addresses not allowed"
)

# Per-process health, one series per live process (role, and `pid` which the
# multiprocess collector adds), set by `unimatch.domain.process_metrics` on a timer:
# prometheus-client's own ProcessCollector reports nothing in multiprocess
# mode. The CPU time is a gauge holding a running total: `rate()` it.
PROCESS_CPU = Gauge(
    "unimatch_process_cpu_seconds", "User and system CPU time of the process so far",
    ["role"], multiprocess_mode="liveall",
)
PROCESS_RSS = Gauge(
    "unimatch_process_resident_memory_bytes", "Resident memory of the process",
    ["role"], multiprocess_mode="liveall",
)
PROCESS_OPEN_FDS = Gauge(
    "unimatch_process_open_fds", "Open file descriptors (sockets included)",
    ["role"], multiprocess_mode="liveall",
)
PROCESS_MAX_FDS = Gauge(
    "unimatch_process_max_fds", "The process's file descriptor limit",
    ["role"], multiprocess_mode="liveall",
)
PROCESS_START_TIME = Gauge(
    "unimatch_process_start_time_seconds", "When the process started (Unix time)",
    ["role"], multiprocess_mode="liveall",
)
PROCESS_HEARTBEAT = Gauge(
    "unimatch_process_heartbeat_timestamp_seconds",
    "When the process last sampled itself (Unix time): stale when it died or its event "
    "loop is stuck",
    ["role"], multiprocess_mode="liveall",
)
EVENT_LOOP_LAG = Gauge(
    "unimatch_event_loop_lag_seconds",
    "How late the sampler's last timer fired: time the event loop was busy elsewhere",
    ["role"], multiprocess_mode="liveall",
)
DB_POOL_IN_USE = Gauge(
    "unimatch_db_pool_in_use_connections", "PostgreSQL connections checked out of the pool",
    ["role", "pool"], multiprocess_mode="liveall",
)
DB_POOL_MAX = Gauge(
    "unimatch_db_pool_max_connections", "The most connections the pool may open",
    ["role", "pool"], multiprocess_mode="liveall",
)

# The job queue as PostgreSQL holds it, refreshed by the scheduler. Every
# scheduler reports the same numbers, so the highest wins ("livemax").
JOB_QUEUE_DEPTH = Gauge(
    "unimatch_job_queue_depth",
    "Jobs by kind and state: due (queued, run_at passed), delayed (retry or later run_at), "
    "running",
    ["kind", "state"], multiprocess_mode="livemax",
)
JOB_QUEUE_OLDEST = Gauge(
    "unimatch_job_queue_oldest_seconds",
    "How long the oldest due job of the kind has waited for a worker (0: none waits)",
    ["kind"], multiprocess_mode="livemax",
)
JOBS_DEAD_LAST_HOUR = Gauge(
    "unimatch_jobs_dead_last_hour",
    "Jobs of the kind that went dead in the last hour (retries exhausted, permanent "
    "errors, or their worker lost on the final attempt)",
    ["kind"], multiprocess_mode="livemax",
)
JOB_QUEUE_SAMPLED = Gauge(
    "unimatch_job_queue_sampled_timestamp_seconds",
    "When the job queue gauges were last read from PostgreSQL (Unix time)",
    multiprocess_mode="livemax",
)
