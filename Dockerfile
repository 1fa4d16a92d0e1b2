# syntax=docker/dockerfile:1.7
# The platform's images, built from one file:
#   docker build -t unimatch:local .                    the app (default target):
#                                                       `unimatch serve`, and the Ray
#                                                       head and workers of compose
#   docker build --target gateway -t unimatch-gateway:local .
#                                                       nginx with the web client
# Base images are pinned by version; dependencies come from the hashed lock
# (requirements.lock) in a builder stage, so the runtime image has no
# compiler, no pip cache and no network access at start.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG NODE_IMAGE=node:20.18.1-bookworm-slim
ARG NGINX_IMAGE=nginx:1.27.3

# -- the web client's static export (web/ -> out/) -----------------------------
FROM ${NODE_IMAGE} AS web
WORKDIR /build
# `we[b]` matches the web/ folder when the checkout has one and nothing
# otherwise (pyproject.toml is there so the COPY always has a source): without
# a web client the stage yields an empty out/.
COPY pyproject.toml we[b] ./
RUN --mount=type=cache,target=/root/.npm \
    if [ -f package.json ]; then \
      npm ci --no-audit --no-fund && npm run build; \
    else \
      mkdir -p out; \
    fi

# -- Python dependencies, then the package, into a virtualenv --------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The lock alone first: this layer is rebuilt only when the pins change.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY unimatch ./unimatch
# setuptools comes from the lock too, so the build needs nothing from outside.
RUN pip install --no-deps --no-build-isolation . \
    && python -c "import unimatch.cli"

# -- the gateway: nginx with the web client and the site config ------------------
FROM ${NGINX_IMAGE} AS gateway
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
COPY ops/nginx/unimatch.conf /etc/nginx/conf.d/default.conf
COPY --from=web /build/out /srv/unimatch/web
RUN mkdir -p /srv/unimatch/media /etc/nginx/certs
EXPOSE 80 443
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1/healthz"]
# nginx is PID 1 in exec form already (the base image's CMD).

# -- the app ---------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS app
# curl for health checks; tini is not needed: `unimatch serve` handles SIGTERM
# itself and reaps nothing (Ray's processes are its own children).
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 unimatch \
    && useradd --system --uid 10001 --gid unimatch --home-dir /home/unimatch \
       --create-home --shell /usr/sbin/nologin unimatch \
    && mkdir -p /data/media /data/backups /run/unimatch-metrics \
    && chown -R unimatch:unimatch /data /run/unimatch-metrics
COPY --from=build /opt/venv /opt/venv
COPY --from=web /build/out /opt/unimatch/web
# pg_dump / pg_restore (PostgreSQL 16, bundled with pgserver) on PATH for
# the backup job and for operators (docs/operations.md).
ENV PATH=/opt/venv/bin:/opt/venv/lib/python3.11/site-packages/pgserver/pginstall/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    UNIMATCH_DATA_DIR=/data \
    WEB_ROOT=/opt/unimatch/web \
    PROMETHEUS_MULTIPROC_DIR=/run/unimatch-metrics
USER unimatch
WORKDIR /data
# A fresh named volume takes these folders' owner, so the app can write them.
VOLUME ["/data"]
EXPOSE 8080
# Ready only when PostgreSQL, Redis and the actor system answer (/readyz).
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/readyz"]
# Exec form: `unimatch serve` is PID 1 and gets SIGTERM, which drains it
# (sockets close 1001, jobs finish or are released) before it exits.
STOPSIGNAL SIGTERM
CMD ["unimatch", "serve", "--host", "0.0.0.0", "--port", "8080"]
