"""gateway.mcp without I/O: the ASGI shell in front of a recording app (what reaches the app,
what is refused and how), the tool-scope middleware, and sessions bound to their agent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

from agent import Agent
from gateway import StaticInventory, StatusChecker, Verifier
from gateway.mcp import (
    REFUSED,
    SCOPE_KEY,
    SCOPE_META,
    TOOL_KEY,
    McpGateway,
    ToolScopes,
    requires_scope,
    tool_scope,
)
from tests.support.gateway_pki import Clock, Pki, make_agent, model_digest

URL = "http://mcp.local/mcp"


def make_server() -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer("t")

    @server.tool(meta=requires_scope("query_anonymized_order_book"))
    def get_book() -> str:
        return "book"

    @server.tool(meta=requires_scope("halt_trading"))
    def halt_trading() -> str:
        return "halted"

    @server.tool()
    def undeclared() -> str:
        return "?"

    return server


class Recorder:
    """An ASGI app that records what it was given and answers 200 (with a session id)."""

    def __init__(self, session: str | None = None) -> None:
        self.calls: list[tuple[dict[str, Any], bytes]] = []
        self.session = session

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        self.calls.append((dict(scope), body))
        headers = [(b"content-type", b"application/json")]
        if self.session:
            headers.append((b"mcp-session-id", self.session.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})


def asgi_scope(method: str, headers: dict[str, str], kind: str = "http") -> dict[str, Any]:
    return {
        "type": kind,
        "method": method,
        "path": "/mcp",
        "raw_path": b"/mcp",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


def drive(app: Any, scope: dict[str, Any], body: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request through ``app`` (the body in two chunks); status, headers, body."""
    chunks = [
        {"type": "http.request", "body": body[:5], "more_body": True},
        {"type": "http.request", "body": body[5:], "more_body": False},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    anyio.run(app, scope, receive, send)
    start = next((m for m in sent if m["type"] == "http.response.start"), sent[0])
    headers = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start.get("status", start.get("code", 0)), headers, out


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(pki: Pki, clock: Clock) -> Verifier:
    return Verifier(
        [pki.root],
        StaticInventory([model_digest().hex()]),
        StatusChecker(refresh=False, clock=clock, fetch=False),
        clock=clock,
        audience="http://mcp.local",
        trust_domain="agentca.local",
    )


def agent_for(tmp_path: Path, pki: Pki, clock: Clock, subdir: str = "a", **issue: Any) -> Agent:
    key, cert = pki.issue(**issue)
    a = make_agent(tmp_path / subdir, pki, clock, cert=cert, key=key)
    from agent.staple import Staple
    from tests.support.gateway_pki import T0

    a.staple = Staple(pki.ocsp_response(cert, this_update=clock()), "good", T0, None, clock())
    return a


def signed(a: Agent, body: bytes, method: str = "POST", **extra: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Host": "mcp.local", **extra}
    if method != "POST":
        headers.pop("Content-Type")
    headers.update(a.sign(method, URL, headers, body or None, auto_staple=False).headers)
    return headers


def call(tool: str, rid: int = 1) -> bytes:
    msg = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": tool}}
    return json.dumps(msg).encode()


# ------------------------------------------------------------------------------ the shell
def test_a_call_within_scope_reaches_the_app_with_its_body_and_identity(
    tmp_path: Path, pki: Pki, clock: Clock, verifier: Verifier
) -> None:
    app = Recorder()
    gw = McpGateway(app, make_server(), verifier, "query_anonymized_order_book")
    body = call("get_book")
    status, _, _ = drive(
        gw, asgi_scope("POST", signed(agent_for(tmp_path, pki, clock), body)), body
    )
    assert status == 200
    [(scope, seen)] = app.calls
    assert seen == body  # read once by the gateway, given back whole
    assert scope[SCOPE_KEY].name == "ExecutionAgent-ETH-01"
    assert scope[TOOL_KEY] == "get_book"


@pytest.mark.parametrize("tool", ["halt_trading", "undeclared", "no_such_tool"])
def test_a_call_outside_the_scopes_is_a_jsonrpc_error_with_the_problem(
    tmp_path: Path, pki: Pki, clock: Clock, verifier: Verifier, tool: str
) -> None:
    app = Recorder()
    gw = McpGateway(app, make_server(), verifier, "query_anonymized_order_book")
    body = call(tool, rid=42)
    status, headers, out = drive(
        gw, asgi_scope("POST", signed(agent_for(tmp_path, pki, clock), body)), body
    )
    assert status == 403 and not app.calls
    assert headers["content-type"] == "application/json"
    msg = json.loads(out)
    assert msg["id"] == 42 and msg["error"]["code"] == REFUSED
    assert msg["error"]["data"]["check"] == "scope-denied"
    assert msg["error"]["data"]["status"] == 403


def test_unsigned_get_is_a_problem_document(verifier: Verifier) -> None:
    app = Recorder()
    gw = McpGateway(app, make_server(), verifier, "query_anonymized_order_book")
    status, headers, out = drive(gw, asgi_scope("GET", {"Host": "mcp.local"}), b"")
    assert status == 401 and not app.calls
    assert headers["content-type"] == "application/problem+json"
    assert "accept-signature" in headers
    assert json.loads(out)["check"] == "credentials-missing"


def test_oversized_body_and_websocket_never_reach_the_app(verifier: Verifier) -> None:
    app = Recorder()
    gw = McpGateway(app, make_server(), verifier, "query_anonymized_order_book", max_body=8)
    status, _, out = drive(gw, asgi_scope("POST", {"Host": "mcp.local"}), b"x" * 20)
    # the ASGI shell's body reader (gateway.asgi.read_body, decision 0046): 413, as there
    assert status == 413 and json.loads(out)["check"] == "body-too-large"
    status, _, _ = drive(gw, asgi_scope("GET", {}, kind="websocket"), b"")
    assert status == 1008 and not app.calls


def test_a_session_belongs_to_the_agent_that_opened_it(
    tmp_path: Path, pki: Pki, clock: Clock, verifier: Verifier
) -> None:
    app = Recorder(session="s-1")
    gw = McpGateway(app, make_server(), verifier, "query_anonymized_order_book")
    owner = agent_for(tmp_path, pki, clock, "owner")
    other = agent_for(tmp_path, pki, clock, "other", name="OtherAgent")
    init = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}'
    assert drive(gw, asgi_scope("POST", signed(owner, init)), init)[0] == 200
    listing = b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}'
    on_session = {"Mcp-Session-Id": "s-1"}
    status, _, out = drive(gw, asgi_scope("POST", signed(other, listing, **on_session)), listing)
    assert status == 404 and json.loads(out)["error"]["message"] == "Session not found"
    assert drive(gw, asgi_scope("POST", signed(owner, listing, **on_session)), listing)[0] == 200
    assert len(app.calls) == 2


# ------------------------------------------------------------------- the MCP middleware
class _Request:
    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope


def ctx(method: str, params: dict[str, Any] | None, scope: dict[str, Any] | None) -> Any:
    return ServerRequestContext(
        session=None,  # type: ignore[arg-type]
        lifespan_context={},
        protocol_version="2025-06-18",
        method=method,
        params=params,
        request=None if scope is None else _Request(scope),
    )


def test_tools_list_keeps_only_the_granted_scopes(tmp_path: Path, pki: Pki, clock: Clock) -> None:
    from gateway.chain import AgentIdentity

    ident = AgentIdentity(
        "a", "spiffe://agentca.local/agent/a", ("read",), "o", "production", None,
        "01", "f", "m", "md", "pd", None, "t",
    )  # fmt: skip
    tools = [
        {"name": "r", "_meta": {SCOPE_META: "read"}},
        {"name": "w", "_meta": {SCOPE_META: "write"}},
        {"name": "u"},
    ]

    async def listed(_: Any) -> dict[str, Any]:
        return {"tools": tools}

    out = anyio.run(ToolScopes(), ctx("tools/list", None, {SCOPE_KEY: ident}), listed)
    assert [t["name"] for t in out["tools"]] == ["r"]
    none = anyio.run(ToolScopes(), ctx("tools/list", None, None), listed)
    assert none["tools"] == []  # not through the gateway: nothing is listed
    assert tool_scope(tools[0]) == "read" and tool_scope(tools[2]) is None


def test_a_call_must_name_the_tool_the_gateway_authorised() -> None:
    from gateway.chain import AgentIdentity

    ident = AgentIdentity(
        "a", "spiffe://agentca.local/agent/a", ("read",), "o", "production", None,
        "01", "f", "m", "md", "pd", None, "t",
    )  # fmt: skip

    async def ran(_: Any) -> dict[str, Any]:
        return {"ran": True}

    mw = ToolScopes()
    ok = ctx("tools/call", {"name": "r"}, {SCOPE_KEY: ident, TOOL_KEY: "r"})
    assert anyio.run(mw, ok, ran) == {"ran": True}
    for params, scope in (
        ({"name": "w"}, {SCOPE_KEY: ident, TOOL_KEY: "r"}),  # another tool than authorised
        ({"name": "r"}, {SCOPE_KEY: ident, TOOL_KEY: None}),  # not authorised as a call
        ({"name": "r"}, None),  # not through the gateway (stdio)
    ):
        with pytest.raises(MCPError):
            anyio.run(mw, ctx("tools/call", params, scope), ran)


def test_requires_scope_merges_meta_and_refuses_an_empty_scope() -> None:
    assert requires_scope("x", {"k": 1}) == {"k": 1, SCOPE_META: "x"}
    with pytest.raises(ValueError):
        requires_scope("")
