"""The ASGI middleware under uvicorn over real HTTP against slow and hostile clients (decision
0046): the body deadline is armed only when the middleware must wait for the body, so these
check that every way of making it wait is still cut off with a 408 problem+json at the
deadline (a body trickled byte by byte, a chunked body that never ends, headers and then
silence), that a body declared too large is refused before it is read, that a request whose
body came with its headers is served, and that each refusal is in the decision log with the
status sent."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway import StaticInventory, StatusChecker, Verifier, decision_log
from gateway.asgi import AgentGatewayMiddleware
from tests.support.gateway_pki import Clock, Pki, make_agent, model_digest, signed_view
from tests.unit.test_gateway_asgi import _Lines

pytestmark = pytest.mark.integration

SCOPE = "submit_limit_order"
TIMEOUT = 0.5  # the middleware's body_timeout in these tests


class App:
    """Answers 201 with the body, which the middleware hands over as one message."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.calls += 1
        message = await receive()
        assert message["type"] == "http.request" and not message.get("more_body")
        body = message["body"]
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


@pytest.fixture(scope="module")
def served(pki: Pki) -> Iterator[tuple[int, App, list[dict[str, Any]]]]:
    """uvicorn in a thread serving the middleware on a free port; its log lines."""
    clock = Clock()
    verifier = Verifier(
        [pki.root],
        StaticInventory([model_digest().hex()]),
        StatusChecker(refresh=False, fetch=False, clock=clock),
        clock=clock,
        audience="http://gw.local",
        trust_domain="agentca.local",
    )
    app = App()
    mw = AgentGatewayMiddleware(
        app, verifier, {"POST /orders": SCOPE}, max_body=1000, body_timeout=TIMEOUT
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(mw, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    logger = logging.getLogger("agentca.gateway.decisions")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        yield port, app, handler.lines
    finally:
        server.should_exit = True
        thread.join(10)
        decision_log.flush()
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert not thread.is_alive()


def signed_head(pki: Pki, tmp_path: Path, body: bytes, length: bool = True) -> bytes:
    """The request line and headers of a signed POST /orders (no body)."""
    clock = Clock()
    agent = make_agent(tmp_path / "agent", pki, clock)
    staple = pki.ocsp_response(agent.credential.certificate, this_update=clock())
    _, headers = signed_view(agent, "POST", "http://gw.local/orders", body, staple=staple)
    lines = ["POST /orders HTTP/1.1", "Host: gw.local"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}" if length else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(sock: socket.socket) -> tuple[int, bytes]:
    """Read one response (Content-Length framed); its status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(fields["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        rest += chunk
    assert fields.get("content-type", "application/problem+json").startswith("application/")
    return status, rest[:length]


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


BODY = b'{"side":"buy","price":"101.5","qty":"2"}'


def test_a_body_sent_with_its_headers_is_served(
    served: tuple[int, App, list[dict[str, Any]]], pki: Pki, tmp_path: Path
) -> None:
    port, app, lines = served
    before = app.calls
    with connect(port) as sock:
        sock.sendall(signed_head(pki, tmp_path, BODY) + BODY)
        status, body = answer(sock)
    assert (status, body, app.calls) == (201, BODY, before + 1)
    decision_log.flush()
    assert (lines[-1]["decision"], lines[-1]["http_status"]) == ("allow", 201)


@pytest.mark.parametrize("how", ["trickled", "chunked-forever", "silent"])
def test_a_body_that_keeps_the_gateway_waiting_is_cut_off_at_the_deadline(
    served: tuple[int, App, list[dict[str, Any]]], pki: Pki, tmp_path: Path, how: str
) -> None:
    port, app, lines = served
    before = app.calls
    with connect(port) as sock:
        sock.sendall(signed_head(pki, tmp_path, BODY, length=how != "chunked-forever"))
        started = time.monotonic()
        if how != "silent":  # one byte (chunk) every 50 ms: never the whole body in time
            sock.setblocking(False)
            status = None
            for i in range(200):
                piece = BODY[i : i + 1] if how == "trickled" else b"1\r\nx\r\n"
                try:
                    sock.sendall(piece)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    break
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break  # the answer is coming
                except BlockingIOError:
                    pass
                time.sleep(0.05)
            sock.setblocking(True)
            sock.settimeout(5)
        status, body = answer(sock)
        elapsed = time.monotonic() - started
    assert status == 408, body
    problem = json.loads(body)
    assert problem["check"] == "body-timeout" and problem["status"] == 408
    assert TIMEOUT * 0.8 <= elapsed < TIMEOUT + 2.0, elapsed
    assert app.calls == before
    decision_log.flush()
    assert (lines[-1]["check"], lines[-1]["http_status"]) == ("body-timeout", 408)


def test_a_body_declared_too_large_is_refused_before_it_is_read(
    served: tuple[int, App, list[dict[str, Any]]], pki: Pki, tmp_path: Path
) -> None:
    port, app, _ = served
    before = app.calls
    big = b"x" * 5000
    with connect(port) as sock:
        sock.sendall(signed_head(pki, tmp_path, big))  # and never the body
        started = time.monotonic()
        status, body = answer(sock)
    assert status == 413 and json.loads(body)["check"] == "body-too-large"
    assert time.monotonic() - started < TIMEOUT  # not after waiting for the body
    assert app.calls == before
