"""The ASGI shell (gateway/asgi.py) driven with ASGI messages, no server: the body is read once
and replayed to the app byte for byte (also when it arrives in chunks), bounded in size
(413, without reading a declared-too-large body) and in time (408), refusals are the WSGI
shell's problem documents, the decision log records the status sent, and the FastAPI
integration (gateway/fastapi.py) takes each route's scope from its dependencies."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request

from gateway import StaticInventory, StatusChecker, Verifier, decision_log
from gateway.asgi import AgentGatewayMiddleware, Message, Scope
from gateway.chain import AgentIdentity
from gateway.fastapi import AgentGateway, public, requires_scope
from tests.support.gateway_pki import Clock, Pki, make_agent, model_digest, signed_view

SCOPE = "submit_limit_order"
BODY = b'{"side":"buy","price":"101.5","qty":"2"}'
URL = "http://gw.local/orders?venue=x"
SubmitAgent = Annotated[AgentIdentity, Depends(requires_scope(SCOPE))]


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    logger = logging.getLogger("agentca.gateway.decisions")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        decision_log.flush()
        logger.removeHandler(handler)
        logger.setLevel(level)


def verifier(pki: Pki, clock: Clock) -> Verifier:
    status = StatusChecker(refresh=False, fetch=False, clock=clock)
    return Verifier(
        [pki.root],
        StaticInventory([model_digest().hex()]),
        status,
        clock=clock,
        audience="http://gw.local",
        trust_domain="agentca.local",
    )


def http_scope(headers: dict[str, str], method: str = "POST", url: str = URL) -> Scope:
    path, _, query = url.removeprefix("http://gw.local").partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("gw.local", 80),
    }


class Echo:
    """An ASGI app that reads the whole body through ``receive`` and answers it back."""

    def __init__(self) -> None:
        self.calls = 0
        self.agent: AgentIdentity | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.calls += 1
        self.agent = scope["state"]["agent"]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": body})


def run(
    app: Any, scope: Scope, chunks: list[bytes], stall: bool = False
) -> tuple[int, dict[str, str], bytes, int]:
    """Send ``chunks`` as http.request messages; the status, headers and body sent back,
    and how many messages the app side received."""
    pending = list(chunks)
    received = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal received
        if not pending:
            if stall:
                await asyncio.sleep(3600)
            return {"type": "http.disconnect"}
        received += 1
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending) or stall}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], headers, body, received


def signed(pki: Pki, tmp_path: Path, clock: Clock, body: bytes = BODY) -> dict[str, str]:
    agent = make_agent(tmp_path / "agent", pki, clock)
    staple = pki.ocsp_response(agent.credential.certificate, this_update=clock())
    _, headers = signed_view(agent, "POST", URL, body, staple=staple)
    return {**headers, "Host": "gw.local", "Content-Length": str(len(body))}


def test_the_app_reads_the_verified_body_again(
    pki: Pki, tmp_path: Path, log_lines: list[dict[str, Any]]
) -> None:
    clock = Clock()
    app = Echo()
    mw = AgentGatewayMiddleware(app, verifier(pki, clock), {"POST /orders": SCOPE})
    headers = signed(pki, tmp_path, clock)
    # the body in three chunks: verified as a whole, handed to the app as one message
    status, _, body, received = run(mw, http_scope(headers), [BODY[:5], BODY[5:20], BODY[20:]])
    assert (status, body, received, app.calls) == (201, BODY, 3, 1)
    assert app.agent is not None and app.agent.name == "ExecutionAgent-ETH-01"
    decision_log.flush()
    assert [(ln["decision"], ln["http_status"]) for ln in log_lines] == [("allow", 201)]


def test_a_body_over_the_limit_is_refused_with_413(
    pki: Pki, tmp_path: Path, log_lines: list[dict[str, Any]]
) -> None:
    clock = Clock()
    app = Echo()
    mw = AgentGatewayMiddleware(app, verifier(pki, clock), {"POST /orders": SCOPE}, max_body=100)
    big = b"x" * 101
    headers = signed(pki, tmp_path, clock, big)
    # declared too large: refused without reading a byte
    status, hdrs, body, received = run(mw, http_scope(headers), [big])
    assert (status, received, app.calls) == (413, 0, 0)
    assert hdrs["content-type"] == "application/problem+json"
    assert json.loads(body)["check"] == "body-too-large"
    # no Content-Length (chunked): reading stops at the first chunk past the limit
    del headers["Content-Length"]
    status, _, body, received = run(mw, http_scope(headers), [b"x" * 60, b"x" * 60, b"x" * 60])
    assert (status, received, app.calls) == (413, 2, 0)
    assert json.loads(body) == {
        "type": "https://agentca.dev/problems/gateway/body-too-large",
        "title": "Request body is too large",
        "status": 413,
        "detail": "the body is over 100 bytes",
        "check": "body-too-large",
    }
    decision_log.flush()
    assert [(ln["check"], ln["http_status"]) for ln in log_lines] == [("body-too-large", 413)] * 2


def test_a_body_that_does_not_arrive_in_time_is_refused_with_408(pki: Pki, tmp_path: Path) -> None:
    clock = Clock()
    app = Echo()
    mw = AgentGatewayMiddleware(
        app, verifier(pki, clock), {"POST /orders": SCOPE}, body_timeout=0.2
    )
    headers = signed(pki, tmp_path, clock)
    status, _, body, _ = run(mw, http_scope(headers), [BODY[:10]], stall=True)
    assert status == 408 and json.loads(body)["check"] == "body-timeout"
    assert app.calls == 0


def test_refusals_are_the_wsgi_problem_documents(pki: Pki, tmp_path: Path) -> None:
    clock = Clock()
    app = Echo()
    mw = AgentGatewayMiddleware(app, verifier(pki, clock), {"POST /orders": SCOPE})
    headers = signed(pki, tmp_path, clock)
    status, hdrs, body, _ = run(mw, http_scope(headers), [BODY.replace(b"2", b"9")])
    assert status == 401 and json.loads(body)["check"] == "content-digest-mismatch"
    assert hdrs["cache-control"] == "no-store" and "accept-signature" in hdrs
    status, _, body, _ = run(mw, http_scope({}, "GET", "http://gw.local/a/../orders"), [b""])
    assert status == 400 and json.loads(body)["check"] == "path-not-normal"
    assert app.calls == 0


def test_fastapi_routes_declare_their_scope_as_a_dependency(pki: Pki, tmp_path: Path) -> None:
    clock = Clock()
    api = FastAPI()
    AgentGateway(api, verifier(pki, clock))

    @api.post("/orders", status_code=201)
    async def submit(request: Request, agent: SubmitAgent) -> dict[str, Any]:
        return {"agent": agent.name, "body": (await request.body()).decode()}

    @api.post("/admin/halt", dependencies=[Depends(requires_scope("halt_trading"))])
    async def halt() -> dict[str, bool]:
        return {"halted": True}

    @api.post("/undeclared")
    async def undeclared() -> dict[str, bool]:
        return {"ran": True}

    @api.get("/health", dependencies=[Depends(public)])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    status, _, body, _ = run(api, http_scope(signed(pki, tmp_path, clock)), [BODY])
    assert status == 201, body
    assert json.loads(body) == {"agent": "ExecutionAgent-ETH-01", "body": BODY.decode()}
    for path in ("/admin/halt", "/undeclared"):
        url = "http://gw.local" + path
        agent = make_agent(tmp_path / "agent", pki, clock)
        staple = pki.ocsp_response(agent.credential.certificate, this_update=clock())
        _, headers = signed_view(agent, "POST", url, BODY, staple=staple)
        status, _, body, _ = run(api, http_scope({**headers, "Host": "gw.local"}, url=url), [BODY])
        assert status == 403 and json.loads(body)["check"] == "scope-denied", path
    status, _, body, _ = run(api, http_scope({}, "GET", "http://gw.local/health"), [b""])
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_a_scope_dependency_without_the_gateway_refuses_and_websockets_are_closed(
    pki: Pki, tmp_path: Path
) -> None:
    from gateway.fastapi import Refusal, _refusal_response

    bare = FastAPI()  # requires_scope used, the gateway forgotten: refused, never served
    bare.add_exception_handler(Refusal, _refusal_response)

    @bare.post("/orders")
    async def submit(agent: SubmitAgent) -> dict[str, str]:
        return {"agent": agent.name}

    status, hdrs, body, _ = run(bare, http_scope({}), [BODY])
    assert status == 401 and hdrs["content-type"] == "application/problem+json"
    assert json.loads(body)["check"] == "verification-error"

    clock = Clock()
    mw = AgentGatewayMiddleware(Echo(), verifier(pki, clock), {"POST /orders": SCOPE})
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(mw({"type": "websocket", "path": "/orders", "headers": []}, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_routes_of_a_mounted_app_are_found(pki: Pki, tmp_path: Path) -> None:
    clock = Clock()
    outer, inner = FastAPI(), FastAPI()
    AgentGateway(outer, verifier(pki, clock))
    outer.mount("/v1", inner)

    @inner.post("/orders", status_code=201)
    async def submit(agent: SubmitAgent) -> dict[str, str]:
        return {"agent": agent.name}

    url = "http://gw.local/v1/orders"
    agent = make_agent(tmp_path / "agent", pki, clock)
    staple = pki.ocsp_response(agent.credential.certificate, this_update=clock())
    _, headers = signed_view(agent, "POST", url, BODY, staple=staple)
    status, _, body, _ = run(outer, http_scope({**headers, "Host": "gw.local"}, url=url), [BODY])
    assert status == 201, body
    assert json.loads(body) == {"agent": "ExecutionAgent-ETH-01"}
