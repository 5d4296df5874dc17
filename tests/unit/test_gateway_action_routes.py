"""Every shell records the route template it matched, never the raw path (decision 0055)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from werkzeug.test import Client

from gateway import StaticInventory, Verifier
from gateway.action_log import RECORDS, ActionLog, keygen
from gateway.asgi import AgentGatewayMiddleware as AsgiGateway
from gateway.authz_service import AuthzService
from gateway.fastapi import AgentGateway as StarletteGateway
from gateway.flask_ext import AgentGateway as FlaskGateway
from gateway.flask_ext import requires_scope
from gateway.mcp import action_route
from gateway.wsgi import AgentGatewayMiddleware as WsgiGateway
from tests.support.gateway_pki import Pki


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Verifier, ActionLog]]:
    keygen(tmp_path / "k.pem")
    actions = ActionLog(tmp_path / "log", "routes-1", tmp_path / "k.pem")
    verifier = Verifier(
        [Pki.create().root],
        StaticInventory([]),
        audience="http://gw.local",
        trust_domain="agentca.local",
        actions=actions,
    )
    try:
        yield verifier, actions
    finally:
        actions.close()


def routes_recorded(actions: ActionLog) -> list[str]:
    assert actions.flush()
    lines = (actions.directory / RECORDS).read_bytes().splitlines()
    return [json.loads(line)["route"] for line in lines]


def ok_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


def test_wsgi_records_the_routes_key(setup: tuple[Verifier, ActionLog]) -> None:
    verifier, actions = setup
    app = WsgiGateway(ok_app, verifier, {"POST /orders": "a", "GET /reports/*": "b"})
    client = Client(app)
    assert client.post("/orders").status_code == 401  # unsigned: refused, still recorded
    assert client.get("/reports/2026/q3-7781").status_code == 401
    assert client.get("/elsewhere/123").status_code == 401
    assert routes_recorded(actions) == ["/orders", "/reports/*", "(none)"]


def test_flask_records_the_url_rule(setup: tuple[Verifier, ActionLog]) -> None:
    verifier, actions = setup
    app = Flask("routes")
    FlaskGateway(app, verifier)

    @app.get("/orders/<int:order_id>")
    @requires_scope("a")
    def order(order_id: int) -> str:
        return "x"

    client = app.test_client()
    assert client.get("/orders/981273").status_code == 401
    assert client.get("/nothing/here").status_code == 401
    assert routes_recorded(actions) == ["/orders/<int:order_id>", "(none)"]


def call_asgi(app: Any, method: str, path: str) -> int:
    scope = {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(),
        "query_string": b"", "headers": [(b"host", b"gw.local")], "scheme": "http",
        "client": ("127.0.0.1", 1), "server": ("gw.local", 80),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return int(sent[0]["status"])


def test_asgi_and_starlette_record_the_route_path(setup: tuple[Verifier, ActionLog]) -> None:
    verifier, actions = setup

    async def ok(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never reached unsigned")

    plain = AsgiGateway(ok, verifier, {"GET /book/*": "a"})
    assert call_asgi(plain, "GET", "/book/eth-usd") == 401

    async def page(request: Any) -> PlainTextResponse:
        return PlainTextResponse("x")

    app = Starlette(routes=[Mount("/api", routes=[Route("/orders/{order_id}", page)])])
    StarletteGateway(app, verifier, routes={"GET /api/orders/*": "a"})
    assert call_asgi(app, "GET", "/api/orders/5521") == 401
    assert call_asgi(app, "GET", "/unknown/1") == 401
    assert routes_recorded(actions) == ["/book/*", "/api/orders/{order_id}", "(none)"]


def test_the_nginx_service_records_the_routes_key(setup: tuple[Verifier, ActionLog]) -> None:
    verifier, actions = setup
    service = AuthzService(verifier, {"GET /book": "a"})
    reply = Client(service).get(
        "/_agentca/auth",
        headers={"X-Original-URI": "/book?depth=5", "X-Original-Method": "GET",
                 "X-Original-Body": "length= te=", "Host": "gw.local"},
    )  # fmt: skip
    assert reply.status_code == 401
    assert routes_recorded(actions) == ["/book"]


def test_mcp_routes_name_only_known_methods_and_tools() -> None:
    assert action_route("POST", {"method": "tools/list"}) == "mcp tools/list"
    assert action_route("POST", {"method": "tools/call"}, "submit") == "mcp tools/call submit"
    assert action_route("POST", {"method": "tools/call"}) == "mcp tools/call (unknown)"
    assert action_route("POST", {"method": "x" * 500}) == "mcp other"
    assert action_route("POST", {"result": {}}) == "mcp response"
    assert action_route("GET", None) == "mcp GET"


def test_the_verifier_service_takes_an_action_log_in_one_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from gateway.authz_server import _check, _parser, build_service, main

    (tmp_path / "routes.toml").write_text('[routes]\n"GET /book" = "read"\n')
    (tmp_path / "root.pem").write_bytes(Pki.create().root.public_bytes(Encoding.PEM))
    keygen(tmp_path / "k.pem")
    argv = ["--routes", str(tmp_path / "routes.toml"), "--trust-anchor",
            str(tmp_path / "root.pem"), "--audience", "http://gw.local", "--trust-domain",
            "agentca.local", "--authorised-model", "00", "--gateway-id", "authz-1",
            "--action-log-dir", str(tmp_path / "log"), "--action-key-file",
            str(tmp_path / "k.pem")]  # fmt: skip
    with pytest.raises(SystemExit):
        main([*argv, "--workers", "2", "--redis-url", "redis://127.0.0.1:1/0"])
    assert "needs --workers 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--action-token-file", str(tmp_path / "t")])
    assert "--ca-url, which is missing" in capsys.readouterr().err
    parser = _parser()
    args = parser.parse_args(argv)
    service = build_service(args, _check(args, parser))
    actions = service.verifier.actions
    assert actions is not None
    try:
        reply = Client(service).get(
            "/_agentca/auth",
            headers={"X-Original-URI": "/book", "X-Original-Method": "GET",
                     "X-Original-Body": "length= te=", "Host": "gw.local"},
        )  # fmt: skip
        assert reply.status_code == 401
        assert routes_recorded(actions) == ["/book"]
    finally:
        actions.close()
