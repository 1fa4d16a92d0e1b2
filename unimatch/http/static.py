"""The web client: the static export of `web/` (`WEB_ROOT`, default
`web/out`) served at `/`, from the same origin as `/api/v1` and `/ws`.

- `/_next/static/*` are content-hashed: cached for a year, immutable.
- Pages are HTML that must be revalidated (`no-cache`), so a new release is
  picked up at once. A path names its page as `out/<path>.html` (or
  `<path>/index.html`); client routes carry their ids in query strings
  (`/chat?m=<id>`), so no dynamic segment needs a fallback.
- Every page goes out with a strict Content-Security-Policy: scripts only
  from this origin plus the page's own inline bootstrap scripts by SHA-256
  hash (computed from the file, never `'unsafe-inline'`), styles and
  connections only from this origin, no framing, no plugins.

The catch-all route is added after every other route, so the API, the
sockets and the operations endpoints always win; paths under their prefixes
never fall through to a page.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from unimatch.domain.errors import NotFound
from unimatch.http.keys import CONFIG

log = logging.getLogger("unimatch.http")

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
HASHED_PREFIX = "/_next/static/"
# Paths that belong to the platform, never to the web client.
_RESERVED = ("/api/", "/ws", "/media/", "/metrics", "/healthz", "/readyz")
_INLINE_SCRIPT = re.compile(
    rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL | re.IGNORECASE
)
_BASE_POLICY = (
    "default-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",
    "font-src 'self'",
    "connect-src 'self'",
    "media-src 'self'",
    "worker-src 'self'",
    "manifest-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def content_security_policy(html: bytes) -> str:
    """The policy for one page: its inline scripts allowed by hash only."""
    hashes = sorted({
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
        if body.strip()
    })
    script_src = " ".join(["script-src 'self'", *hashes])
    return "; ".join([_BASE_POLICY[0], script_src, *_BASE_POLICY[1:]])


@dataclass
class _Page:
    mtime_ns: int
    policy: str


class WebRoot:
    """The export folder and the policies of its pages (recomputed when a
    page changes on disk, so a rebuild needs no restart)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._pages: dict[Path, _Page] = {}

    def resolve(self, path: str) -> Path | None:
        """The file for a request path, or None. Never leaves the root."""
        relative = path.lstrip("/")
        candidates = (
            [self.root / "index.html"]
            if relative == ""
            else [self.root / relative, self.root / f"{relative}.html",
                  self.root / relative / "index.html"]
        )
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved.is_relative_to(self.root) and resolved.is_file():
                return resolved
        return None

    def policy_for(self, page: Path) -> str:
        mtime = page.stat().st_mtime_ns
        cached = self._pages.get(page)
        if cached is None or cached.mtime_ns != mtime:
            cached = _Page(mtime, content_security_policy(page.read_bytes()))
            self._pages[page] = cached
        return cached.policy


WEB_ROOT = web.AppKey("web_root", WebRoot)


def _headers_for(root: WebRoot, path: str, file: Path) -> dict[str, str]:
    headers = dict(SECURITY_HEADERS)
    if path.startswith(HASHED_PREFIX):
        headers["Cache-Control"] = IMMUTABLE
    else:
        headers["Cache-Control"] = REVALIDATE
    if file.suffix == ".html":
        headers["Content-Security-Policy"] = root.policy_for(file)
    return headers


async def serve_web_client(request: web.Request) -> web.StreamResponse:
    path = request.path
    if path.startswith(_RESERVED):
        allowed = _methods_at(request)
        if allowed:  # a platform route that takes other methods: 405, not the catch-all
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise NotFound("no such resource")
    root = request.app[WEB_ROOT]
    file = await asyncio.to_thread(root.resolve, path)
    status = 200
    if file is None:
        if path.startswith(HASHED_PREFIX):
            raise NotFound("no such file")
        file = await asyncio.to_thread(root.resolve, "/404")
        status = 404
        if file is None:
            raise NotFound(
                "the web client is not built: run `npm --prefix web run build`"
            )
    headers = await asyncio.to_thread(_headers_for, root, path, file)
    if status != 200:
        body = await asyncio.to_thread(file.read_bytes)
        return web.Response(body=body, status=status, content_type="text/html", headers=headers)
    return web.FileResponse(file, headers=headers)


def _methods_at(request: web.Request) -> set[str]:
    """The methods the platform's own routes take at this path (none: no
    such route)."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.canonical == "/{path}":
            continue
        for route in resource:
            if route.method != "GET" and resource.get_info() and _matches(resource, request.path):
                allowed.add(route.method)
    return allowed


def _matches(resource: web.AbstractResource, path: str) -> bool:
    info = resource.get_info()
    if "path" in info:
        return info["path"] == path
    pattern = info.get("pattern")
    return bool(pattern is not None and pattern.fullmatch(path))


def setup_web_client(app: web.Application) -> None:
    """Serve the export at `/`; call after every other route is added."""
    root = WebRoot(app[CONFIG].web_root)
    if not root.root.is_dir():
        log.info("web client not built (%s missing): only the API is served", root.root)
    app[WEB_ROOT] = root
    app.router.add_get("/{path:.*}", serve_web_client)
