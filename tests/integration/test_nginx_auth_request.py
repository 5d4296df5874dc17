"""nginx auth_request in front of a non-Python upstream (issue 16 item 3), end to end: the real
CA and OCSP responder (examples/scenario.py), two verifier services (python -m
gateway.authz_service) sharing one redis-server, each behind Debian's nginx running
deploy/nginx/agentca-auth-request.conf, whose upstream is a static nginx location."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent import Agent
from agent.client import HttpReply, send
from agent.httpsig import content_digest
from examples.scenario import AGENT, TRUST_DOMAIN, Scenario, free_port
from tests.support.nginx import NGINX
from tests.support.nginx_auth_request import running_auth_nginx
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

ORDER = {"side": "buy", "price": "101.5", "qty": "2"}
ROUTES = """\
[routes]
"GET /book" = "query_anonymized_order_book"
"POST /orders" = "submit_limit_order"
"GET /admin/*" = "halt_trading"
"POST /admin/halt" = "halt_trading"
"""


@dataclass
class Edge:
    """One nginx and the verifier service behind it."""

    url: str
    service: str


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[Scenario]:
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    s = Scenario.create(tmp_path_factory.mktemp("auth-request") / "work", pg_module_url)
    s.setup()
    with s.servers(gateway=False):
        yield s


@pytest.fixture(scope="module")
def edges(scenario: Scenario, redis_server: RedisServer) -> Iterator[list[Edge]]:
    routes = scenario.work / "routes.toml"
    routes.write_text(ROUTES)
    ports = [(free_port(), free_port(), free_port()) for _ in range(2)]
    urls = [f"http://127.0.0.1:{listen}" for _, listen, _ in ports]
    from contextlib import ExitStack

    with ExitStack() as stack:
        out = []
        for i, (svc, listen, app) in enumerate(ports):
            args = [
                sys.executable, "-m", "gateway.authz_service", "--port", str(svc),
                "--routes", str(routes), "--trust-anchor", str(scenario.root_pem),
                "--ca-url", scenario.ca_url,
                "--inventory-token-file", str(scenario.work / "gateway.token"),
                "--inventory-refresh", "0.5", "--max-status-age", "1",
                "--audience", urls[0], "--audience", urls[1], "--trust-domain", TRUST_DOMAIN,
                "--redis-url", redis_server.url, "--forward-to", f"http://127.0.0.1:{app}",
                "--workers", "2", "--threads", "4",
            ]  # fmt: skip
            service = f"http://127.0.0.1:{svc}"
            stack.enter_context(scenario._process(f"authz-{i}", args, service + "/health"))
            prefix = scenario.work / f"nginx-{i}"
            url = stack.enter_context(running_auth_nginx(prefix, f"127.0.0.1:{svc}", listen, app))
            out.append(Edge(url, service))
        yield out


@pytest.fixture(scope="module")
def agent(scenario: Scenario) -> Agent:
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token())
    return a


def check_of(reply: HttpReply, status: int) -> str:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["content-type"] == "application/problem+json", reply.headers
    doc = json.loads(reply.body)
    assert doc["status"] == status
    assert doc["type"] == "https://agentca.dev/problems/gateway/" + doc["check"]
    return str(doc["check"])


def signed(a: Agent, method: str, url: str, body: bytes | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    headers.update(a.sign(method, url, headers, body).headers)
    return headers


def upstream_saw(reply: HttpReply) -> dict[str, Any]:
    assert reply.status == 200, reply.body
    doc: dict[str, Any] = json.loads(reply.body)
    assert doc["upstream"] == "static"
    return doc


def test_allowed_request_reaches_the_upstream_with_the_identity(
    edges: list[Edge], agent: Agent
) -> None:
    url = edges[0].url + "/book"
    headers = signed(agent, "GET", url)
    headers["Agentca-Agent"] = "Mallory"  # a client's own identity header is replaced
    doc = upstream_saw(send("GET", url, headers, None))
    assert doc["agent"] == AGENT
    assert doc["spiffe_id"] == f"spiffe://{TRUST_DOMAIN}/agent/{AGENT}"
    assert doc["scope"] == "query_anonymized_order_book"
    assert "submit_limit_order" in doc["scopes"].split()
    assert doc["serial"] == agent.credential.serial_hex
    prov = agent.provenance.current()
    assert doc["model_digest"] == prov.model_digest.hex()
    assert doc["prompt_digest"] == prov.prompt_digest.hex()


def test_a_body_goes_through_the_service_and_is_checked(edges: list[Edge], agent: Agent) -> None:
    url = edges[0].url + "/orders"
    body = json.dumps(ORDER).encode()
    doc = upstream_saw(send("POST", url, signed(agent, "POST", url, body), body))
    assert doc["method"] == "POST" and doc["agent"] == AGENT
    assert doc["scope"] == "submit_limit_order"
    # the same request with another body: refused before the upstream
    tampered = json.dumps({**ORDER, "qty": "2000"}).encode()
    reply = send("POST", url, signed(agent, "POST", url, body), tampered)
    assert check_of(reply, 401) == "content-digest-mismatch"
    # ... and with the attacker's own Content-Digest the signature fails
    headers = signed(agent, "POST", url, body)
    headers["Content-Digest"] = content_digest(tampered)
    assert check_of(send("POST", url, headers, tampered), 401) == "signature-invalid"


def test_a_body_on_an_auth_request_route_is_refused(edges: list[Edge], agent: Agent) -> None:
    """auth_request shows the service no body: a route it guards takes none."""
    url = edges[0].url + "/admin/halt"
    body = json.dumps({"halt": True}).encode()
    reply = send("POST", url, signed(agent, "POST", url, body), body)
    assert check_of(reply, 401) == "content-digest-mismatch"
    assert "/_agentca/forward" in json.loads(reply.body)["detail"]


def test_scope_denied(edges: list[Edge], agent: Agent) -> None:
    url = edges[0].url + "/admin/status"
    assert check_of(send("GET", url, signed(agent, "GET", url), None), 403) == "scope-denied"
    url = edges[0].url + "/unrouted"
    assert check_of(send("GET", url, signed(agent, "GET", url), None), 403) == "scope-denied"


def test_unsigned_and_non_normal_paths_are_problems(edges: list[Edge], agent: Agent) -> None:
    reply = send("GET", edges[0].url + "/book", {}, None)
    assert check_of(reply, 401) == "credentials-missing"
    assert "agentca=" in reply.headers["accept-signature"]
    url = edges[0].url + "/admin/../book"
    reply = send("GET", url, signed(agent, "GET", url), None)
    assert check_of(reply, 400) == "path-not-normal"


def test_a_replay_through_the_other_nginx_and_service_is_refused(
    edges: list[Edge], agent: Agent
) -> None:
    url = edges[0].url + "/book"
    headers = signed(agent, "GET", url)
    upstream_saw(send("GET", url, headers, None))
    # the other host, its own verifier process: the same Host and bytes, one Redis
    headers["Host"] = url.split("/")[2]
    again = send("GET", edges[1].url + "/book", headers, None)
    assert check_of(again, 401) == "nonce-replayed"


def _revoke(s: Scenario, serial: str) -> float:
    from tests.integration.http import call

    reply = call(
        s.ca_url, "POST", f"/v1/certificates/{serial}/revoke", {"reason": "keyCompromise"},
        token=s.operator_token,
    )  # fmt: skip
    assert reply.status == 200, reply.body
    return time.monotonic()


def test_revoked_agent_is_denied_within_one_second(scenario: Scenario, edges: list[Edge]) -> None:
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token())
    a.refresh_staple()
    url = edges[0].url + "/book"
    upstream_saw(send("GET", url, signed(a, "GET", url), None))
    revoked_at = _revoke(scenario, a.credential.serial_hex)
    while True:
        headers = a.sign("GET", url, {}, None, auto_staple=False).headers
        reply = send("GET", url, headers, None)
        elapsed = time.monotonic() - revoked_at
        if reply.status != 200 or elapsed > 5:
            break
        time.sleep(0.01)
    assert check_of(reply, 401) == "certificate-revoked"
    assert elapsed <= 1.0, f"revocation took {elapsed:.3f} s to reach the verifier"


def test_redis_down_is_503_problem_then_recovers(
    edges: list[Edge], agent: Agent, redis_server: RedisServer
) -> None:
    book, orders = edges[0].url + "/book", edges[0].url + "/orders"
    body = json.dumps(ORDER).encode()
    redis_server.stop()
    try:
        reply = send("GET", book, signed(agent, "GET", book), None)
        assert check_of(reply, 503) == "replay-cache-unavailable"
        reply = send("POST", orders, signed(agent, "POST", orders, body), body)
        assert check_of(reply, 503) == "replay-cache-unavailable"
    finally:
        redis_server.start()
    deadline = time.monotonic() + 5
    while True:
        reply = send("GET", book, signed(agent, "GET", book), None)
        if reply.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    upstream_saw(reply)
    upstream_saw(send("POST", orders, signed(agent, "POST", orders, body), body))


def test_garbage_headers_are_problems_never_500(edges: list[Edge], agent: Agent) -> None:
    url = edges[0].url + "/book"
    for name, value in (
        ("Signature-Input", "agentca=garbage(("),
        ("Signature", "agentca=:AAAA:"),
        ("Client-Cert", ":bm90IGEgY2VydA==:"),
        ("Agentca-OCSP", "12"),
        ("Agentca-Provenance", "%%%"),
    ):
        headers = signed(agent, "GET", url)
        headers[name] = value
        reply = send("GET", url, headers, None)
        assert reply.status in (401, 403), (name, reply.status, reply.body)
        assert reply.headers["content-type"] == "application/problem+json"
        assert json.loads(reply.body)["check"] != "verification-error"


def test_verifier_down_is_503_problem_never_500(scenario: Scenario, agent: Agent) -> None:
    """nginx turns a verifier that does not answer into 503 verifier-unavailable."""
    dead, listen, app = free_port(), free_port(), free_port()
    prefix = scenario.work / "nginx-dead"
    with running_auth_nginx(prefix, f"127.0.0.1:{dead}", listen, app) as url:
        for method, path, body in (("GET", "/book", None), ("POST", "/orders", b"{}")):
            reply = send(method, url + path, signed(agent, method, url + path, body), body)
            assert reply.status == 503, (path, reply.status, reply.body)
            assert reply.headers["content-type"] == "application/problem+json"
            doc = json.loads(reply.body)
            assert doc["type"].endswith("/verifier-unavailable") and doc["status"] == 503


def test_nginx_refusals_are_problems_too(edges: list[Edge], agent: Agent) -> None:
    url = edges[0].url + "/orders"
    big = b"{" + b" " * (1 << 20) + b"}"
    reply = send("POST", url, signed(agent, "POST", url, big), big)
    assert reply.status == 413 and reply.headers["content-type"] == "application/problem+json"
    headers = signed(agent, "GET", edges[0].url + "/book")
    headers["X-Padding"] = "x" * 20000
    reply = send("GET", edges[0].url + "/book", headers, None)
    assert reply.status == 431 and reply.headers["content-type"] == "application/problem+json"
    assert json.loads(reply.body)["status"] == 431
