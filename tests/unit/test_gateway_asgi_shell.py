"""The ASGI shells' shared parts (decision 0046), driven with ASGI messages: the body reader
arms its deadline only when it must wait and still cuts a slow body off (ASGI middleware and
MCP gateway alike), the decision is logged by ``gateway.asgi_log`` with the status sent (500
when the app raises, null when it never answers or is cancelled), and the header and path
shortcuts give what the plain code gives."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway import decision_log
from gateway.asgi import (
    AgentGatewayMiddleware,
    Message,
    Scope,
    header_map,
    read_body,
    scope_path_problem,
)
from gateway.mcp import McpGateway
from gateway.problems import Check, Denied
from gateway.wsgi import path_problem
from tests.support.gateway_pki import Clock, Pki, make_agent, signed_view
from tests.unit import test_gateway_asgi as asgi_tests
from tests.unit.test_gateway_asgi import BODY, SCOPE, URL, Echo, http_scope, verifier
from tests.unit.test_gateway_mcp import make_server

pki = asgi_tests.pki  # the fixtures of the ASGI shell's tests
log_lines = asgi_tests.log_lines


def signed(pki: Pki, tmp_path: Path, clock: Clock) -> dict[str, str]:
    agent = make_agent(tmp_path / "agent", pki, clock)
    staple = pki.ocsp_response(agent.credential.certificate, this_update=clock())
    _, headers = signed_view(agent, "POST", URL, BODY, staple=staple)
    return {**headers, "Host": "gw.local", "Content-Length": str(len(BODY))}


def drive(app: Any, scope: Scope, receive: Any) -> tuple[int, bytes, float]:
    """Run one request; the status and body sent, and how long it took."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(app(scope, receive, send), 5)  # a broken deadline fails, not hangs
        return loop.time() - started

    elapsed = asyncio.run(main())
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return (sent[0]["status"] if sent else 0), body, elapsed


def late(messages: list[Message], delay: float) -> Any:
    """A ``receive`` that waits ``delay`` seconds before each message (forever after them)."""
    pending = list(messages)

    async def receive() -> Message:
        await asyncio.sleep(delay if pending else 3600)
        return pending.pop(0)

    return receive


def test_a_body_that_must_be_waited_for_is_read_and_the_wait_is_bounded(
    pki: Pki, tmp_path: Path, log_lines: list[dict[str, Any]]
) -> None:
    clock = Clock()
    app = Echo()
    mw = AgentGatewayMiddleware(
        app, verifier(pki, clock), {"POST /orders": SCOPE}, body_timeout=0.5
    )
    headers = signed(pki, tmp_path, clock)
    # each chunk after a wait: the first receive suspends, the deadline is armed then
    chunks = [
        {"type": "http.request", "body": BODY[:9], "more_body": True},
        {"type": "http.request", "body": BODY[9:], "more_body": False},
    ]
    status, body, _ = drive(mw, http_scope(headers), late(chunks, 0.05))
    assert (status, body, app.calls) == (201, BODY, 1)
    # the same wait for every chunk, but more chunks than the deadline allows: the deadline
    # covers the whole body, not each receive
    many = [{"type": "http.request", "body": b"x", "more_body": True} for _ in range(40)]
    status, body, elapsed = drive(mw, http_scope(headers), late(many, 0.05))
    assert status == 408 and json.loads(body)["check"] == "body-timeout"
    assert 0.45 <= elapsed < 1.5, elapsed
    # nothing ever comes
    status, body, elapsed = drive(mw, http_scope(headers), late([], 0))
    assert status == 408 and 0.45 <= elapsed < 1.5
    assert app.calls == 1
    decision_log.flush()
    assert [ln["http_status"] for ln in log_lines] == [201, 408, 408]


def test_the_mcp_gateway_cuts_a_slow_body_off_too(
    pki: Pki, log_lines: list[dict[str, Any]]
) -> None:
    app = Echo()
    gw = McpGateway(
        app, make_server(), verifier(pki, Clock()), "query_anonymized_order_book", body_timeout=0.3
    )
    scope = http_scope({"Host": "mcp.local", "Content-Length": "100"}, url="http://gw.local/mcp")
    trickle = [{"type": "http.request", "body": b"{", "more_body": True}] * 100
    status, body, elapsed = drive(gw, scope, late(trickle, 0.05))
    assert status == 408 and json.loads(body)["check"] == "body-timeout"
    assert 0.25 <= elapsed < 1.5 and app.calls == 0
    # declared too large: refused without reading
    scope = http_scope(
        {"Host": "mcp.local", "Content-Length": str(10**7)}, url="http://gw.local/mcp"
    )
    status, body, _ = drive(gw, scope, late([], 0))
    assert status == 413 and json.loads(body)["check"] == "body-too-large"
    # a Content-Length that is not a number (or two of them, joined): refused
    scope = http_scope({"Host": "mcp.local"}, url="http://gw.local/mcp")
    scope["headers"] += [(b"content-length", b"5"), (b"content-length", b"5")]
    status, body, _ = drive(gw, scope, late([], 0))
    assert status == 401 and json.loads(body)["check"] == "malformed-credentials"
    decision_log.flush()
    assert [ln["http_status"] for ln in log_lines] == [408, 413, 401]


class Misbehaving:
    """An app that raises, returns without answering, or hangs until cancelled."""

    def __init__(self, how: str) -> None:
        self.how = how

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        assert (await receive())["body"] == BODY
        if self.how == "raise":
            raise RuntimeError("boom")
        if self.how == "hang":
            await asyncio.sleep(3600)


@pytest.mark.parametrize(("how", "logged"), [("raise", 500), ("silent", None), ("hang", None)])
@pytest.mark.parametrize("shell", ["asgi", "mcp"])
def test_the_decision_is_logged_whatever_the_app_does(
    pki: Pki, tmp_path: Path, log_lines: list[dict[str, Any]], how: str, logged: int | None,
    shell: str,
) -> None:  # fmt: skip
    clock = Clock()
    app = Misbehaving(how)
    if shell == "asgi":
        gw: Any = AgentGatewayMiddleware(app, verifier(pki, clock), {"POST /orders": SCOPE})
        headers = signed(pki, tmp_path, clock)
    else:
        gw = McpGateway(app, make_server(), verifier(pki, clock), SCOPE)
        headers = signed(pki, tmp_path, clock)
    message = {"type": "http.request", "body": BODY, "more_body": False}

    async def receive() -> Message:
        return message

    async def main() -> None:
        task = asyncio.ensure_future(gw(http_scope(headers), receive, _ignore))
        if how == "hang":
            await asyncio.sleep(0.1)
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    decision_log.flush()
    assert [(ln["decision"], ln["http_status"]) for ln in log_lines] == [("allow", logged)]


async def _ignore(message: Message) -> None:
    pass


def test_read_body_refuses_before_reading_and_hands_back_the_exact_body() -> None:
    async def once() -> Message:
        return {"type": "http.request", "body": b"abc", "more_body": False}

    async def gone() -> Message:
        return {"type": "http.disconnect"}

    def run(headers: dict[str, str], receive: Any) -> bytes | Denied | None:
        return asyncio.run(read_body(headers, receive, 10, 1.0))

    assert run({}, once) == b"abc"
    assert run({"content-length": "3"}, once) == b"abc"
    assert run({}, gone) is None
    for bad in ("-1", "+3", "3 ", "1_0", "٣", ""):
        refusal = run({"content-length": bad}, once)
        assert isinstance(refusal, Denied) and refusal.check is Check.MALFORMED, bad
    refusal = run({"content-length": "11"}, once)
    assert isinstance(refusal, Denied) and refusal.check is Check.BODY_TOO_LARGE


def test_header_map_and_the_path_shortcut_give_what_the_plain_code_gives() -> None:
    raw = [(b"Host", b"gw.local"), (b"X-A", b"1"), (b"x-a", b"2"), (b"content-type", b"a/b")]
    expected = {"host": "gw.local", "x-a": "1, 2", "content-type": "a/b"}
    assert header_map(raw) == header_map(raw) == expected
    assert header_map([(bytearray(n), bytearray(v)) for n, v in raw]) == expected
    for path in ("/orders", "/a/../orders", "/a//b", "/%6Frders", "/o%2Fr", "/" + "a" * 600):
        for _ in range(2):  # memoised the second time
            scope = {"path": path, "raw_path": path.encode()}
            expect = path_problem({"PATH_INFO": path, "RAW_URI": path})
            assert scope_path_problem(scope) == expect, path
    decoded = {"path": "/orders/../x", "raw_path": b"/orders/%2E%2E/x"}
    assert scope_path_problem(decoded) is not None


def test_rules_are_shared_per_value_and_an_unhashable_answer_still_works(
    pki: Pki, tmp_path: Path
) -> None:
    clock = Clock()
    app = Echo()
    lists = AgentGatewayMiddleware(
        app, verifier(pki, clock), {"POST /orders": SCOPE}, profiles=lambda m, p: ["agentca"]
    )
    status, body, _ = drive(lists, http_scope(signed(pki, tmp_path, clock)), _once(BODY))
    assert status == 201 and body == BODY
    plain = AgentGatewayMiddleware(app, verifier(pki, clock), {"POST /orders": SCOPE})
    first, again = plain.rule(http_scope({})), plain.rule(http_scope({}))
    assert first is again and (first.scope, first.public) == (SCOPE, False)
    other = plain.rule(http_scope({}, "GET", "http://gw.local/elsewhere"))
    assert other.scope is None and not other.public


def _once(body: bytes) -> Any:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
