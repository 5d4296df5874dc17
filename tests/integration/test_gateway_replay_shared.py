"""Two gateway processes sharing one Redis replay cache, over real HTTP (issue 16 items 1-2):
the Flask order book under gunicorn and the FastAPI one under uvicorn, each as two processes
on their own ports serving one origin (as workers behind a load balancer do), with the real
CA, OCSP responder and redis-server. For each: an allowed request, a scope denied, a tampered
body, a revoked agent refused within a second, the exact same signed request refused by the
*other* process (``nonce-replayed``), and with Redis stopped a 503 problem+json
``replay-cache-unavailable`` (never a 500) that turns back into service once Redis is back."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from agent import Agent
from agent.client import HttpReply, send
from examples.scenario import AGENT, Scenario
from tests.integration.http import call
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

ORIGIN = "http://orderbook.shared"  # the one origin both processes serve (their audience)
ORDER = {"side": "buy", "price": "101.5", "qty": "2"}
POST = b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
KINDS = {
    "flask-gunicorn": ("examples.orderbook", "--server", "gunicorn"),
    "fastapi-uvicorn": ("examples.orderbook_asgi",),
}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[Scenario]:
    s = Scenario.create(tmp_path_factory.mktemp("replay-shared") / "work", pg_module_url)
    s.setup()
    with s.servers(gateway=False):
        yield s


@pytest.fixture(scope="module", params=sorted(KINDS))
def gateways(
    request: pytest.FixtureRequest, scenario: Scenario, redis_server: RedisServer
) -> Iterator[tuple[str, str, list[Path]]]:
    """Two processes of one kind on one Redis: their URLs and their log files."""
    module, *extra = KINDS[request.param]
    with ExitStack() as stack:
        urls = [
            stack.enter_context(
                scenario.gateway(module, *extra, redis_url=redis_server.url, audience=ORIGIN)
            )
            for _ in range(2)
        ]
        yield urls[0], urls[1], scenario.logs[-2:]


@pytest.fixture(scope="module")
def agent(scenario: Scenario) -> Agent:
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token())
    return a


def signed(
    a: Agent, path: str = "/orders", body: Any = ORDER, **kw: Any
) -> tuple[dict[str, str], bytes]:
    """Headers and body of a request signed for the shared origin (Host included)."""
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Host": ORIGIN.removeprefix("http://")}
    headers.update(a.sign("POST", ORIGIN + path, headers, raw, **kw).headers)
    return headers, raw


def to(url: str, headers: dict[str, str], body: bytes, path: str = "/orders") -> HttpReply:
    return send("POST", url + path, headers, body, 10.0)


def check_of(reply: HttpReply) -> str:
    assert reply.headers["content-type"] == "application/problem+json", reply.body
    doc = json.loads(reply.body)
    assert doc["type"] == "https://agentca.dev/problems/gateway/" + doc["check"]
    assert doc["status"] == reply.status
    return str(doc["check"])


def test_allowed_on_both_processes(gateways: tuple[str, str, list[Path]], agent: Agent) -> None:
    for url in gateways[:2]:
        reply = to(url, *signed(agent))
        assert reply.status == 201, reply.body
        order = json.loads(reply.body)
        assert order["agent"] == AGENT and order["serial"] == agent.credential.serial_hex
        assert order["price"] == "101.5"


def test_scope_not_in_the_certificate_is_denied(
    gateways: tuple[str, str, list[Path]], agent: Agent
) -> None:
    reply = to(gateways[0], *signed(agent, "/admin/halt", {}), "/admin/halt")
    assert reply.status == 403 and check_of(reply) == "scope-denied"


def test_tampered_body_is_denied(gateways: tuple[str, str, list[Path]], agent: Agent) -> None:
    headers, _ = signed(agent)
    tampered = json.dumps({**ORDER, "qty": "2000"}).encode()
    reply = to(gateways[1], headers, tampered)
    assert reply.status == 401 and check_of(reply) == "content-digest-mismatch"


def test_a_replay_sent_to_the_other_process_is_refused(
    gateways: tuple[str, str, list[Path]], agent: Agent
) -> None:
    first, second, _ = gateways
    headers, body = signed(agent)
    assert to(first, headers, body).status == 201
    again = to(second, headers, body)
    assert again.status == 401 and check_of(again) == "nonce-replayed"
    assert check_of(to(first, headers, body)) == "nonce-replayed"
    # and the other way round
    headers, body = signed(agent)
    assert to(second, headers, body).status == 201
    assert check_of(to(first, headers, body)) == "nonce-replayed"


def test_revoked_agent_is_denied_within_one_second(
    gateways: tuple[str, str, list[Path]], scenario: Scenario
) -> None:
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token())
    a.refresh_staple()
    assert to(gateways[0], *signed(a)).status == 201
    reply = call(
        scenario.ca_url, "POST", f"/v1/certificates/{a.credential.serial_hex}/revoke",
        {"reason": "keyCompromise"}, token=scenario.operator_token,
    )  # fmt: skip
    assert reply.status == 200, reply.body
    revoked_at = time.monotonic()
    while True:  # the agent keeps stapling its last "good" answer
        reply = to(gateways[0], *signed(a, auto_staple=False))
        elapsed = time.monotonic() - revoked_at
        if reply.status != 201 or elapsed > 5:
            break
        time.sleep(0.01)
    assert reply.status == 401 and check_of(reply) == "certificate-revoked"
    assert elapsed <= 1.0, f"revocation took {elapsed:.3f} s to reach the gateway"


def test_redis_stopped_fails_closed_with_503_and_recovers(
    gateways: tuple[str, str, list[Path]], agent: Agent, redis_server: RedisServer
) -> None:
    first, second, logs = gateways
    redis_server.stop()
    try:
        for url in (first, second):
            for _ in range(3):  # the first attempt (connection refused) and the quick refusals
                reply = to(url, *signed(agent))
                assert reply.status == 503, reply.body
                assert check_of(reply) == "replay-cache-unavailable"
                assert reply.headers.get("cache-control") == "no-store"
    finally:
        redis_server.start()
    for url in (first, second):  # each process tries Redis again after its retry_after
        deadline = time.monotonic() + 5
        while True:
            reply = to(url, *signed(agent))
            if reply.status == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert reply.status == 201, reply.body
    prefix = "agentca.gateway.decisions "
    deadline = time.monotonic() + 5
    while b"replay-cache-unavailable" not in logs[0].read_bytes():
        assert time.monotonic() < deadline, "no decision line for the 503"
        time.sleep(0.1)
    text = logs[0].read_text()
    lines = [json.loads(ln[len(prefix) :]) for ln in text.splitlines() if ln.startswith(prefix)]
    refused = [ln for ln in lines if ln["check"] == "replay-cache-unavailable"]
    assert len(refused) >= 3 and all(ln["http_status"] == 503 for ln in refused)
    assert "refusing signed requests (fail-closed)" in text


# ------------------------------------------- the ASGI shell over real HTTP (uvicorn, one process)
@pytest.fixture(scope="module")
def asgi(scenario: Scenario) -> Iterator[tuple[str, Path]]:
    """The FastAPI order book alone, on its per-process replay cache; its URL and log."""
    with scenario.gateway("examples.orderbook_asgi", "--body-timeout", "1") as url:
        yield url, scenario.logs[-1]


def test_asgi_allowed_requests_are_logged_with_the_status_sent(
    asgi: tuple[str, Path], agent: Agent
) -> None:
    url, log = asgi
    placed = agent.request("POST", url + "/orders", json_body=ORDER)
    assert placed.status == 201, placed.body
    book = agent.request("GET", url + "/book")  # no body, no Content-Type
    assert book.status == 200 and json.loads(book.body)["buy"] == [["101.5", "2"]]
    assert call(url, "GET", "/health").json == {"status": "ok"}  # public
    prefix = "agentca.gateway.decisions "
    deadline = time.monotonic() + 5
    while True:
        lines = [
            json.loads(ln[len(prefix) :])
            for ln in log.read_text().splitlines()
            if ln.startswith(prefix)
        ]
        if len(lines) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(ln["decision"], ln["method"], ln["path"], ln["http_status"]) for ln in lines] == [
        ("allow", "POST", "/orders", 201),
        ("allow", "GET", "/book", 200),
    ]
    assert lines[0]["agent"] == AGENT and lines[0]["scope"] == "submit_limit_order"


def test_asgi_refuses_unsigned_and_non_normal_requests(asgi: tuple[str, Path]) -> None:
    url, _ = asgi
    unsigned = send("GET", url + "/book", {}, b"", 10.0)
    assert unsigned.status == 401 and check_of(unsigned) == "credentials-missing"
    assert unsigned.headers["accept-signature"].startswith('agentca=("@method"')
    dotted = send("GET", url + "/book/%2e%2e/admin/halt", {}, b"", 10.0)
    assert dotted.status == 400 and check_of(dotted) == "path-not-normal"


def _exchange(url: str, head: bytes, parts: list[bytes]) -> tuple[bytes, float]:
    """Send ``head`` then ``parts`` on one connection (the server may stop reading: a broken
    pipe is fine) and read one response; it and the seconds it took after ``head``."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        started = time.monotonic()
        try:
            for part in parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while True:
            header, sep, rest = answer.partition(b"\r\n\r\n")
            if sep:
                length = re.search(rb"(?i)content-length: *(\d+)", header)
                if length and len(rest) >= int(length.group(1)):
                    break
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
        return answer, time.monotonic() - started


def test_asgi_bounds_the_body_in_size_and_time(asgi: tuple[str, Path]) -> None:
    url, _ = asgi
    over = 1024 * 1024 + 1
    # declared too large: answered before the body is sent
    answer, _ = _exchange(url, POST + f"Content-Length: {over}\r\n\r\n".encode(), [])
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"check": "body-too-large"' in answer
    assert b"application/problem+json" in answer
    # chunked, no Content-Length: refused once the body passes the limit
    chunk = b"x" * 65536
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 20 + [b"0\r\n\r\n"]
    answer, _ = _exchange(url, POST + b"Transfer-Encoding: chunked\r\n\r\n", parts)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    # a body slower than --body-timeout (1 s)
    answer, waited = _exchange(url, POST + b"Content-Length: 100\r\n\r\n", [b"0123456789"])
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"check": "body-timeout"' in answer
    assert 0.9 <= waited < 5, waited
