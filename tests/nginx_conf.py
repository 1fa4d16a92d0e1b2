"""ops/nginx/unimatch.conf rendered for a run without root paths: the
shipped file with its ports, paths and upstream substituted (one source of
truth), inside a minimal main config whose every path lies under a prefix.

`python -m tests.nginx_conf` renders it into a temporary prefix and runs
`nginx -t` on it (CI does this before the tests).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "ops" / "nginx" / "unimatch.conf"
MAKE_CERT = ROOT / "ops" / "nginx" / "make-cert.sh"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MIME_TYPES = Path("/etc/nginx/mime.types")
_NODES = re.compile(r"# nodes:begin\n.*?# nodes:end\n", re.DOTALL)


@dataclass(frozen=True)
class Layout:
    """Where a rendered nginx lives and listens."""

    prefix: Path
    http_port: int
    https_port: int
    upstreams: Sequence[str]
    web_root: Path
    media_parent: Path  # holds `media/`, as /srv/unimatch does
    certs: Path

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    @property
    def main_conf(self) -> Path:
        return self.prefix / "nginx.conf"


def _replace(text: str, old: str, new: str) -> str:
    if old not in text:
        raise AssertionError(f"{SHIPPED.name} no longer contains {old!r}: update {__name__}")
    return text.replace(old, new)


def render_site(layout: Layout) -> str:
    """The shipped site config with this layout's ports, paths and nodes."""
    text = SHIPPED.read_text()
    servers = "".join(f"    server {address};\n" for address in layout.upstreams)
    text, count = _NODES.subn(servers, text)
    if count != 1:
        raise AssertionError(f"{SHIPPED.name}: expected one '# nodes:begin/end' block")
    text = _replace(text, "    listen [::]:80;\n", "")
    text = _replace(text, "    listen [::]:443 ssl http2;\n", "")
    text = _replace(text, "listen 80;", f"listen 127.0.0.1:{layout.http_port};")
    text = _replace(
        text, "listen 443 ssl http2;", f"listen 127.0.0.1:{layout.https_port} ssl http2;"
    )
    text = _replace(text, "root /srv/unimatch/web;", f"root {layout.web_root};")
    text = _replace(text, "root /srv/unimatch;", f"root {layout.media_parent};")
    text = _replace(text, "/etc/nginx/certs/", f"{layout.certs}/")
    text = _replace(text, "/var/log/nginx/", f"{layout.prefix}/logs/")
    return text


def render(layout: Layout) -> Path:
    """Write the main config and the site under `layout.prefix`; the main
    config's path."""
    for sub in ("logs", "temp"):
        (layout.prefix / sub).mkdir(parents=True, exist_ok=True)
    site = layout.prefix / "unimatch.conf"
    site.write_text(render_site(layout))
    temp = layout.prefix / "temp"
    # As root, workers would run as `nobody` and could not read the test's files.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    layout.main_conf.write_text(
        f"{user}worker_processes 1;\n"
        f"pid {layout.prefix}/nginx.pid;\n"
        f"error_log {layout.prefix}/logs/error.log notice;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    include {MIME_TYPES};\n"
        "    default_type application/octet-stream;\n"
        f"    access_log {layout.prefix}/logs/other.access.log;\n"
        f"    client_body_temp_path {temp}/body;\n"
        f"    proxy_temp_path {temp}/proxy;\n"
        f"    fastcgi_temp_path {temp}/fastcgi;\n"
        f"    uwsgi_temp_path {temp}/uwsgi;\n"
        f"    scgi_temp_path {temp}/scgi;\n"
        f"    include {site};\n"
        "}\n"
    )
    return layout.main_conf


def make_cert(folder: Path) -> None:
    """The self-signed pair of ops/nginx/make-cert.sh, into `folder`."""
    subprocess.run(
        [str(MAKE_CERT), str(folder)], check=True, capture_output=True, timeout=60
    )


def nginx_command(layout: Layout, *extra: str) -> list[str]:
    return [NGINX, "-p", str(layout.prefix), "-c", str(layout.main_conf), *extra]


def check() -> int:
    """Render into a temporary prefix and `nginx -t` it; nginx's exit code."""
    with tempfile.TemporaryDirectory(prefix="nginx-check-") as tmp:
        base = Path(tmp)
        layout = Layout(
            prefix=base / "nginx", http_port=8080, https_port=8443,
            upstreams=["127.0.0.1:8081", "127.0.0.1:8082"],
            web_root=base / "web", media_parent=base, certs=base / "certs",
        )
        make_cert(layout.certs)
        render(layout)
        result = subprocess.run(nginx_command(layout, "-t", "-q"), timeout=60)
        return result.returncode


if __name__ == "__main__":
    sys.exit(check())
