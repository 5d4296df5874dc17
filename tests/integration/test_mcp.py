"""MCP end to end over real HTTP (issue 16 item 5): the order book as an MCP tool server
(examples/orderbook_mcp.py, the official ``mcp`` SDK's streamable HTTP app behind
``gateway.mcp``) served by uvicorn in two subprocesses sharing one redis-server replay cache,
the real CA API and OCSP responder (examples/scenario.py), and enrolled agents as MCP
clients (``agent.mcp.signed_transport``). Shown: an allowed tool call, ``tools/list``
filtered by the certificate's scopes, a scope denied, a revoked agent denied within 1 s, a
replay denied by the other process, a tampered body denied, Redis down refused with 503
(never a 500) and then recovered, and a session another agent cannot use."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from agent import Agent, RuntimeProvenance, generate_key, model_digest, prompt_digest_file
from agent.client import HttpReply, send
from agent.httpsig import content_digest
from agent.mcp import signed_transport
from examples.scenario import (
    AGENT,
    ENVIRONMENT,
    MODEL_TYPE,
    OFFICER,
    TRUST_DOMAIN,
    Scenario,
    free_port,
)
from gateway.mcp import REFUSED, SCOPE_META
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

READER = "ReaderAgent-ETH-02"  # holds query_anonymized_order_book only
ORDER = {"side": "buy", "price": "101.5", "qty": "2"}
RPC_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@dataclass
class McpServer:
    url: str  # the origin
    authority: str

    @property
    def endpoint(self) -> str:
        return self.url + "/mcp"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[Scenario]:
    s = Scenario.create(tmp_path_factory.mktemp("mcp") / "work", pg_module_url)
    s.setup()
    model = model_digest(s.model_dir).hex()
    prompt = prompt_digest_file(s.prompt_file).hex()
    with s.servers(gateway=False):
        s.cli(
            "agent", "register", READER, "--officer", OFFICER, "--environment", ENVIRONMENT,
            "--model-type", MODEL_TYPE, "--model-digest", model, "--prompt-digest", prompt,
            "--organization", "Enterprise Inc", "--scope", "query_anonymized_order_book",
            "--max-validity", "12h",
        )  # fmt: skip
        yield s


def _server_args(s: Scenario, port: int, audience: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "examples.orderbook_mcp", "--port", str(port),
        "--ca-url", s.ca_url, "--trust-anchor", str(s.root_pem),
        "--inventory-token-file", str(s.work / "gateway.token"),
        "--max-status-age", "1.0", "--inventory-refresh", "0.5",
        "--audience", audience, "--trust-domain", TRUST_DOMAIN, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def servers(scenario: Scenario, redis_server: RedisServer) -> Iterator[tuple[McpServer, McpServer]]:
    """Two processes of one service (audience = the first one's origin), one Redis."""
    ports = free_port(), free_port()
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    with scenario._process(
        "mcp-a", _server_args(scenario, ports[0], urls[0], "--redis-url", redis_server.url),
        urls[0] + "/health",
    ), scenario._process(
        "mcp-b", _server_args(scenario, ports[1], urls[0], "--redis-url", redis_server.url),
        urls[1] + "/health",
    ):  # fmt: skip
        yield (
            McpServer(urls[0], f"127.0.0.1:{ports[0]}"),
            McpServer(urls[1], f"127.0.0.1:{ports[1]}"),
        )


@pytest.fixture(scope="module")
def agent(scenario: Scenario) -> Agent:
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token())
    return a


@pytest.fixture(scope="module")
def reader(scenario: Scenario) -> Agent:
    runtime = RuntimeProvenance(
        MODEL_TYPE, scenario.model_dir, prompt_path=scenario.prompt_file, recheck_seconds=0.0
    )
    a = Agent(
        READER, generate_key("ec-p256"), runtime, scenario.ca_url, organization="Enterprise Inc"
    )
    a.enroll(scenario.cli("token", "create", READER, "--ttl", "15m"))
    return a


# ------------------------------------------------------------------------------- helpers
def rpc(method: str, params: dict[str, Any] | None = None, rid: int = 1) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        msg["params"] = params
    return json.dumps(msg).encode()


def call_body(tool: str, arguments: dict[str, Any] | None = None) -> bytes:
    return rpc("tools/call", {"name": tool, "arguments": arguments or {}})


def signed_headers(a: Agent, server: McpServer, body: bytes, **sign: Any) -> dict[str, str]:
    headers = dict(RPC_HEADERS)
    headers.update(a.sign("POST", server.endpoint, headers, body, **sign).headers)
    return headers


def post(server: McpServer, headers: dict[str, str], body: bytes, host: str = "") -> HttpReply:
    if host:
        headers = {**headers, "Host": host}
    return send("POST", server.endpoint, headers, body)


def refusal(reply: HttpReply) -> str:
    """The check of a refused JSON-RPC request (a JSON-RPC error carrying the problem)."""
    assert reply.headers["content-type"] == "application/json", reply.body
    msg = json.loads(reply.body)
    assert msg["error"]["code"] == REFUSED, msg
    doc = msg["error"]["data"]
    assert doc["type"] == "https://agentca.dev/problems/gateway/" + doc["check"]
    assert doc["status"] == reply.status
    return str(doc["check"])


def result_of(reply: HttpReply) -> dict[str, Any]:
    assert reply.status == 200, (reply.status, reply.body)
    msg = json.loads(reply.body)
    assert "result" in msg, msg
    return dict(msg["result"])


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


# -------------------------------------------------------------------- through the client
def test_allowed_tool_call_and_tools_listed_by_scope(
    servers: tuple[McpServer, McpServer], agent: Agent
) -> None:
    a, _ = servers

    async def session() -> tuple[dict[str, str | None], Any, Any]:
        async with Client(signed_transport(agent, a.endpoint)) as client:
            listed = await client.list_tools()
            placed = await client.call_tool("submit_limit_order", ORDER)
            book = await client.call_tool("get_book", {})
            scopes = {t.name: (t.meta or {}).get(SCOPE_META) for t in listed.tools}
            return scopes, placed, book

    scopes, placed, book = run(session())
    assert scopes == {
        "get_book": "query_anonymized_order_book",
        "submit_limit_order": "submit_limit_order",
    }  # halt_trading is not listed: the certificate lacks its scope
    assert not placed.is_error, placed
    order = placed.structured_content
    assert order["agent"] == AGENT and order["serial"] == agent.credential.serial_hex
    assert ["101.5", "2"] in book.structured_content["buy"]


def test_tools_list_and_calls_follow_the_readers_scopes(
    servers: tuple[McpServer, McpServer], reader: Agent
) -> None:
    a, _ = servers

    async def session() -> tuple[list[str], MCPError | None]:
        async with Client(signed_transport(reader, a.endpoint)) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            try:
                await client.call_tool("submit_limit_order", ORDER)
            except MCPError as exc:
                return names, exc
            return names, None

    names, refused = run(session())
    assert names == ["get_book"]
    assert refused is not None and refused.code == REFUSED
    assert refused.error.data["check"] == "scope-denied"
    assert refused.error.data["status"] == 403


# ---------------------------------------------------------------------- raw HTTP requests
def test_scope_outside_the_certificate_is_denied(
    servers: tuple[McpServer, McpServer], agent: Agent
) -> None:
    a, _ = servers
    body = call_body("halt_trading")
    reply = post(a, signed_headers(agent, a, body), body)
    assert reply.status == 403 and refusal(reply) == "scope-denied"
    # a tool nobody declared a scope for (or that does not exist) is refused the same way
    body = call_body("no_such_tool")
    reply = post(a, signed_headers(agent, a, body), body)
    assert reply.status == 403 and refusal(reply) == "scope-denied"


def test_unsigned_requests_are_denied(servers: tuple[McpServer, McpServer]) -> None:
    a, _ = servers
    reply = post(a, dict(RPC_HEADERS), rpc("tools/list"))
    assert reply.status == 401 and refusal(reply) == "credentials-missing"
    assert "accept-signature" in reply.headers
    note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
    unsigned_note = post(a, dict(RPC_HEADERS), note)  # no id: a problem document
    assert unsigned_note.status == 401
    assert unsigned_note.headers["content-type"] == "application/problem+json"
    stream = send("GET", a.endpoint, {"Accept": "text/event-stream"}, None)
    assert stream.status == 401
    assert stream.headers["content-type"] == "application/problem+json"
    assert json.loads(stream.body)["check"] == "credentials-missing"


def test_tampered_body_is_denied(servers: tuple[McpServer, McpServer], agent: Agent) -> None:
    a, _ = servers
    body = call_body("submit_limit_order", ORDER)
    tampered = call_body("submit_limit_order", {**ORDER, "qty": "2000"})
    reply = post(a, signed_headers(agent, a, body), tampered)
    assert reply.status == 401 and refusal(reply) == "content-digest-mismatch"
    headers = signed_headers(agent, a, body)
    headers["Content-Digest"] = content_digest(tampered)  # the attacker's own digest
    reply = post(a, headers, tampered)
    assert reply.status == 401 and refusal(reply) == "signature-invalid"
    # another tool in the same signed envelope: the body is covered as a whole
    halt = call_body("get_book")
    reply = post(a, signed_headers(agent, a, body), halt)
    assert reply.status == 401 and refusal(reply) == "content-digest-mismatch"


def test_replay_is_denied_by_another_process_sharing_redis(
    servers: tuple[McpServer, McpServer], agent: Agent
) -> None:
    a, b = servers
    body = call_body("submit_limit_order", ORDER)
    headers = signed_headers(agent, a, body)
    first = post(a, headers, body)
    assert not result_of(first).get("isError"), first.body
    # the same bytes to the other process of the service (same authority, behind a balancer)
    again = post(b, headers, body, host=a.authority)
    assert again.status == 401 and refusal(again) == "nonce-replayed"
    # ... and a fresh request reaches that process
    fresh = signed_headers(agent, a, body)
    assert not result_of(post(b, fresh, body, host=a.authority)).get("isError")


def test_revoked_agent_is_denied_within_one_second(
    scenario: Scenario, servers: tuple[McpServer, McpServer]
) -> None:
    from tests.integration.http import call

    a, _ = servers
    agent = scenario.new_agent()
    agent.enroll(scenario.enrollment_token())
    agent.refresh_staple()
    body = call_body("get_book")
    assert result_of(post(a, signed_headers(agent, a, body), body))
    serial = agent.credential.serial_hex
    revoked = call(
        scenario.ca_url, "POST", f"/v1/certificates/{serial}/revoke", {"reason": "keyCompromise"},
        token=scenario.operator_token,
    )  # fmt: skip
    assert revoked.status == 200, revoked.body
    revoked_at = time.monotonic()
    while True:  # the agent keeps stapling its last 'good' response
        reply = post(a, signed_headers(agent, a, body, auto_staple=False), body)
        elapsed = time.monotonic() - revoked_at
        if reply.status != 200 or elapsed > 5:
            break
        time.sleep(0.01)
    assert reply.status == 401 and refusal(reply) == "certificate-revoked"
    assert elapsed <= 1.0, f"revocation took {elapsed:.3f} s to reach the MCP server"


def test_one_tool_is_authorised_whatever_the_json_parser_keeps(
    servers: tuple[McpServer, McpServer], agent: Agent
) -> None:
    """A tool name given twice: whichever one a parser keeps, the SDK never runs a tool the
    gateway did not authorise (halt_trading, which the certificate lacks)."""
    a, _ = servers
    for first, second in (("get_book", "halt_trading"), ("halt_trading", "get_book")):
        body = (
            '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":'
            f'{{"name":"{first}","name":"{second}","arguments":{{}}}}}}'
        ).encode()
        reply = post(a, signed_headers(agent, a, body), body)
        assert b"halted" not in reply.body, reply.body
        if reply.status == 200:  # authorised get_book, and get_book ran
            msg = json.loads(reply.body)
            assert "buy" in msg["result"]["structuredContent"] or "error" in msg, msg
        else:
            assert reply.status == 403 and refusal(reply) == "scope-denied"


def test_redis_down_fails_closed_then_recovers(
    servers: tuple[McpServer, McpServer], agent: Agent, redis_server: RedisServer
) -> None:
    a, _ = servers
    body = call_body("get_book")
    redis_server.stop()
    try:
        reply = post(a, signed_headers(agent, a, body), body)
        assert reply.status == 503 and refusal(reply) == "replay-cache-unavailable"
    finally:
        redis_server.start()
    deadline = time.monotonic() + 5
    while True:
        reply = post(a, signed_headers(agent, a, body), body)
        if reply.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert result_of(reply)


# --------------------------------------------------------------- stateful (legacy) sessions
@pytest.fixture(scope="module")
def stateful(scenario: Scenario) -> Iterator[McpServer]:
    """One process with Mcp-Session-Id sessions and SSE responses (its own replay cache)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = _server_args(scenario, port, url, "--session", "stateful")
    with scenario._process("mcp-stateful", args, url + "/health"):
        yield McpServer(url, f"127.0.0.1:{port}")


def test_legacy_session_over_sse(stateful: McpServer, agent: Agent) -> None:
    async def session() -> tuple[list[str], Any]:
        async with Client(signed_transport(agent, stateful.endpoint), mode="legacy") as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            return names, await client.call_tool("submit_limit_order", ORDER)

    names, placed = run(session())
    assert names == ["get_book", "submit_limit_order"]
    assert not placed.is_error and placed.structured_content["agent"] == AGENT


def test_a_session_belongs_to_the_agent_that_opened_it(
    stateful: McpServer, agent: Agent, reader: Agent
) -> None:
    init = rpc(
        "initialize",
        {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    )
    opened = post(stateful, signed_headers(agent, stateful, init), init)
    assert opened.status == 200, opened.body
    sid = opened.headers["mcp-session-id"]
    listing = rpc("tools/list", rid=2)
    for who, expected in ((reader, 404), (agent, 200)):
        headers = {**RPC_HEADERS, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
        if who is agent:
            note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
            sent = post(stateful, {**headers, **who.sign("POST", stateful.endpoint, headers,
                                                          note).headers}, note)  # fmt: skip
            assert sent.status == 202, sent.body
        signed = {**headers, **who.sign("POST", stateful.endpoint, headers, listing).headers}
        reply = post(stateful, signed, listing)
        assert reply.status == expected, (who.name, reply.status, reply.body)
        if expected == 404:  # the gateway's answer, not the SDK's (which does not know owners)
            assert json.loads(reply.body)["error"]["message"] == "Session not found"
    gone = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
    signed = {**gone, **reader.sign("DELETE", stateful.endpoint, gone).headers}
    assert send("DELETE", stateful.endpoint, signed, None).status == 404  # not the reader's
