"""Debian's nginx running deploy/nginx/agentca.conf with only its addresses and paths changed,
for tests/integration/test_nginx.py, the topology test and ``make bench-ocsp``.

The shipped file is an http{}-level include; a small nginx.conf around it gives nginx its
own prefix (pid, logs, temp and cache directories) and an access log that records
``$upstream_cache_status`` for every request, so a caller can count cache hits.
"""

from __future__ import annotations

import collections
import datetime
import ipaddress
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NGINX = "/usr/sbin/nginx"
SITE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "agentca.conf"
# one access-log line per request: cache status ("-" when the location does not cache),
# HTTP status, method, URI
LOG_FORMAT = "log_format agentca_cache '$upstream_cache_status $status $request_method $uri';"


@dataclass(frozen=True)
class Nginx:
    """A running nginx: ``http`` is host:port of the OCSP server, ``https_port`` the CA API's."""

    prefix: Path
    http: str
    https_port: int
    proc: subprocess.Popen[bytes]

    @property
    def access_log(self) -> Path:
        """The access log, one ``LOG_FORMAT`` line per request."""
        return self.prefix / "access.log"

    def cache_statuses(self, method: str = "GET") -> collections.Counter[str]:
        """How many ``method`` requests had each ``$upstream_cache_status`` (HIT, MISS, ...)."""
        counts: collections.Counter[str] = collections.Counter()
        with self.access_log.open() as log:
            for line in log:
                fields = line.split()
                if len(fields) >= 3 and fields[2] == method:
                    counts[fields[0]] += 1
        return counts


def tls_pair(work: Path) -> tuple[Path, Path]:
    """A self-signed P-256 server certificate for 127.0.0.1 and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agentca test proxy")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem, key_pem = work / "server.pem", work / "server.key"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pem, key_pem


def site_config(
    ca_netloc: str, ocsp_netloc: str, http_port: int, https_port: int, cache: Path,
    tls: tuple[Path, Path],
) -> str:  # fmt: skip
    """deploy/nginx/agentca.conf with only its addresses and paths replaced."""
    site = SITE.read_text()
    for old, new in (
        ("127.0.0.1:8400", ca_netloc),
        ("127.0.0.1:8401", ocsp_netloc),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        ("/var/cache/nginx/agentca-ocsp", str(cache)),
        ("/etc/agentca/tls/server.pem", str(tls[0])),
        ("/etc/agentca/tls/server.key", str(tls[1])),
    ):
        assert old in site, old
        site = site.replace(old, new)
    return site


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # nginx answered (the upstream's health does not matter here)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def running_nginx(
    prefix: Path, ca_netloc: str, ocsp_netloc: str, tls: tuple[Path, Path],
    workers: int | str = 1, ports: tuple[int, int] | None = None, timeout: float = 20.0,
) -> Iterator[Nginx]:  # fmt: skip
    """Run nginx with the shipped site under ``prefix`` (OCSP on ``ports[0]``, the CA API
    on ``ports[1]``; default: free ports); stopped and its cache removed after."""
    (prefix / "cache").mkdir(parents=True)
    http_port, https_port = ports or (_free_port(), _free_port())
    site = site_config(ca_netloc, ocsp_netloc, http_port, https_port, prefix / "cache", tls)
    (prefix / "agentca.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes {workers};\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log warn;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n {LOG_FORMAT}\n access_log {prefix}/access.log agentca_cache;\n"
        f" client_body_temp_path {prefix}/body;\n proxy_temp_path {prefix}/proxy;\n"
        f" fastcgi_temp_path {prefix}/fcgi;\n uwsgi_temp_path {prefix}/uwsgi;\n"
        f" scgi_temp_path {prefix}/scgi;\n include {prefix}/agentca.conf;\n}}\n"
    )
    args = ["-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")]
    check = subprocess.run(
        [NGINX, "-t", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([NGINX, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_up(f"http://127.0.0.1:{http_port}/nothing-here", proc, timeout)
        yield Nginx(prefix, f"127.0.0.1:{http_port}", https_port, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(prefix / "cache", ignore_errors=True)
