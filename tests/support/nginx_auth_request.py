"""Debian's nginx running deploy/nginx/agentca-auth-request.conf with only its addresses
changed (the verifier service, the protected server's port, the example upstream's port),
under its own prefix, for tests/integration/test_nginx_auth_request.py."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.nginx import NGINX, _wait_up

SITE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "agentca-auth-request.conf"


def site_config(authz_netloc: str, listen_port: int, app_port: int) -> str:
    """The shipped file with only its addresses replaced."""
    site = SITE.read_text()
    for old, new in (
        ("server 127.0.0.1:8403;", f"server {authz_netloc};"),
        ("server 127.0.0.1:8404;", f"server 127.0.0.1:{app_port};"),
        ("listen 127.0.0.1:8404;", f"listen 127.0.0.1:{app_port};"),
        ("listen 8080;", f"listen 127.0.0.1:{listen_port};"),
    ):
        assert old in site, old
        site = site.replace(old, new)
    return site


@contextmanager
def running_auth_nginx(
    prefix: Path, authz_netloc: str, listen_port: int, app_port: int, timeout: float = 20.0
) -> Iterator[str]:
    """Run nginx with the shipped auth_request site; yields the protected server's URL."""
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "site.conf").write_text(site_config(authz_netloc, listen_port, app_port))
    user = "user root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log warn;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n access_log {prefix}/access.log;\n"
        f" client_body_temp_path {prefix}/body;\n proxy_temp_path {prefix}/proxy;\n"
        f" fastcgi_temp_path {prefix}/fcgi;\n uwsgi_temp_path {prefix}/uwsgi;\n"
        f" scgi_temp_path {prefix}/scgi;\n include {prefix}/site.conf;\n}}\n"
    )
    args = ["-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")]
    check = subprocess.run(
        [NGINX, "-t", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([NGINX, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_up(f"http://127.0.0.1:{app_port}/", proc, timeout)
        yield f"http://127.0.0.1:{listen_port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
