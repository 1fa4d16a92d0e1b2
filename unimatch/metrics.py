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
    "unimatch_actor_call_retries_total", "Calls retried because a shard host was unavailable"
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
