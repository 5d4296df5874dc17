"""deploy/nginx/agentca.conf in front of a real CA API and OCSP responder (issue 14 item 3).

Debian's nginx runs the shipped file with only its addresses and paths changed: OCSP GET
answers are cached (a second GET is a HIT that never reaches the responder), POST passes
through uncached, a revocation is seen through the cache within s-maxage plus the responder's
freshness bound (2 s), the CA API is served over TLS, and nginx's own refusals (body too
large) are RFC 9457 problem documents.
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509 import ocsp

from tests.integration.conftest import run_cli
from tests.integration.servers import agentca_server, wait_http
from tests.integration.test_ocsp_interop import der_request, init_ca, issue, serve
from tests.support.nginx import NGINX, running_nginx, tls_pair

# shared_cache_seconds (1) + nginx's whole-second cache clock (up to 1 more) + status_freshness (1)
BOUND = 3.0

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists() and not os.environ.get("CI"), reason="nginx is not installed"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("nginx-ca")
    work = tmp_path_factory.mktemp("nginx-work")
    init_ca(data_dir, {}, work)
    certs = {n: issue(data_dir, {}, work, n) for n in ("cached", "revoked")}
    with (
        serve(data_dir, {}) as (ocsp_base, _o),
        agentca_server(["serve", "--workers", "1"], data_dir, "/health") as (ca_base, _c),
    ):
        pem, key = tls_pair(work)
        with running_nginx(
            work / "nginx",
            urllib.parse.urlsplit(ca_base).netloc,
            urllib.parse.urlsplit(ocsp_base).netloc,
            (pem, key),
        ) as nginx:
            wait_http(f"http://{nginx.http}/health", timeout=20)
            yield {
                "data_dir": data_dir, "work": work, "certs": certs, "pem": pem,
                "http": nginx.http, "https_port": nginx.https_port,
            }  # fmt: skip


def _get(stack: dict[str, Any], der: bytes) -> tuple[str, str]:
    path = "/ocsp/" + urllib.parse.quote(base64.b64encode(der).decode(), safe="")
    conn = http.client.HTTPConnection(stack["http"], timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body[:200])
        parsed = ocsp.load_der_ocsp_response(body)
        return parsed.certificate_status.name, resp.getheader("X-Cache-Status", "")
    finally:
        conn.close()


def _post(stack: dict[str, Any], der: bytes) -> tuple[str, str]:
    conn = http.client.HTTPConnection(stack["http"], timeout=10)
    try:
        conn.request("POST", "/ocsp", der, {"Content-Type": "application/ocsp-request"})
        resp = conn.getresponse()
        parsed = ocsp.load_der_ocsp_response(resp.read())
        return parsed.certificate_status.name, resp.getheader("X-Cache-Status", "")
    finally:
        conn.close()


def test_ocsp_get_is_cached_and_post_passes_through(stack: dict[str, Any]) -> None:
    pem, _serial = stack["certs"]["cached"]
    der = der_request(stack["work"] / "issuing.pem", pem)
    first = _get(stack, der)
    second = _get(stack, der)
    assert first == ("GOOD", "MISS") and second == ("GOOD", "HIT"), (first, second)
    # past s-maxage on nginx's whole-second clock (an answer cached at t=10.0 with s-maxage=1
    # is fresh until the clock reads 12): the cache asks the responder again
    time.sleep(2.1)
    assert _get(stack, der)[1] in {"EXPIRED", "REVALIDATED", "MISS"}
    posts = {_post(stack, der) for _ in range(3)}
    assert posts and all(state == "GOOD" and cache != "HIT" for state, cache in posts), posts


def test_revocation_reaches_clients_behind_the_cache_within_the_bound(
    stack: dict[str, Any],
) -> None:
    pem, serial = stack["certs"]["revoked"]
    der = der_request(stack["work"] / "issuing.pem", pem)
    assert _get(stack, der)[0] == "GOOD"
    assert _get(stack, der) == ("GOOD", "HIT")
    done = run_cli("revoke", serial, "--reason", "keyCompromise", data_dir=stack["data_dir"])
    assert done.returncode == 0, done.stderr
    committed = time.monotonic()
    samples: list[tuple[float, str, str]] = []
    while not samples or samples[-1][0] < BOUND + 1.0:
        sent = time.monotonic() - committed
        state, cache = _get(stack, der)
        samples.append((sent, state, cache))
        time.sleep(0.05)
    late = [s for s in samples if s[0] > BOUND]
    assert late and all(state == "REVOKED" for _, state, _ in late), samples
    assert any(cache == "HIT" for _, state, cache in late if state == "REVOKED"), samples


def test_ca_api_over_tls_and_problem_documents_from_nginx(stack: dict[str, Any]) -> None:
    context = ssl.create_default_context(cafile=str(stack["pem"]))
    conn = http.client.HTTPSConnection(
        "127.0.0.1", stack["https_port"], context=context, timeout=10
    )
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        resp.read()
        conn.request(
            "POST", "/v1/agents", b"{" + b" " * 100_000 + b"}", {"Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 413 and resp.getheader("Content-Type") == "application/problem+json"
        assert b'"status":413' in body, body
    finally:
        conn.close()


def test_a_stalled_client_is_cut_while_others_are_served(stack: dict[str, Any]) -> None:
    host, port = stack["http"].split(":")
    slow = socket.create_connection((host, int(port)), timeout=20)
    try:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        pem, _ = stack["certs"]["cached"]
        assert _get(stack, der_request(stack["work"] / "issuing.pem", pem))[0] == "GOOD"
        started = time.monotonic()
        while slow.recv(4096):  # nginx closes it (client_header_timeout 5s)
            pass
        assert 3 < time.monotonic() - started < 10
    finally:
        slow.close()
