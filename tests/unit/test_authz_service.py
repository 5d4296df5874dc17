"""The verifier service's WSGI shell and route file, without servers (the end-to-end test with
nginx is tests/integration/test_nginx_auth_request.py): what it answers, with which headers,
and that its configuration is refused with one clear line."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from gateway import StaticInventory, StatusChecker, Verifier
from gateway.authz_routes import RouteConfigError, load_routes, parse_routes
from gateway.authz_server import main
from gateway.authz_service import AuthzService, header_value
from tests.support.gateway_pki import Clock, Pki, make_agent, model_digest, signed_view

ROUTES = {"GET /book": "query_anonymized_order_book", "GET /admin/*": "halt_trading"}


@pytest.fixture
def world(tmp_path: Path) -> tuple[AuthzService, Any, Pki, Clock]:
    pki, clock = Pki.create(), Clock()
    agent = make_agent(tmp_path, pki, clock)
    status = StatusChecker(max_age=3600, fetch=False, refresh=False, clock=clock)
    verifier = Verifier(
        [pki.root], StaticInventory([model_digest().hex()]), status, clock=clock,
        audience="http://gw.local", trust_domain="agentca.local",
    )  # fmt: skip
    return AuthzService(verifier, ROUTES, max_per_client=2), agent, pki, clock


def call(app: AuthzService, environ: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def auth_environ(
    headers: dict[str, str], method: str = "GET", uri: str = "/book"
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/_agentca/auth", "RAW_URI": "/_agentca/auth",
        "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO(b""), "HTTP_HOST": "gw.local",
        "HTTP_X_ORIGINAL_METHOD": method, "HTTP_X_ORIGINAL_URI": uri,
        "HTTP_X_ORIGINAL_BODY": "length= te=",
    }  # fmt: skip
    for name, value in headers.items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


def signed(world: Any, method: str = "GET", path: str = "/book") -> dict[str, str]:
    _, agent, pki, clock = world
    staple = pki.ocsp_response(agent.credential.certificate, this_update=clock())
    return signed_view(agent, method, "http://gw.local" + path, b"", staple, None)[1]


def test_allowed_answers_200_with_the_identity_headers(world: Any) -> None:
    status, headers, body = call(world[0], auth_environ(signed(world)))
    assert status == 200 and body == b""
    assert headers["Agentca-Agent"] == "ExecutionAgent-ETH-01"
    assert headers["Agentca-Spiffe-Id"] == "spiffe://agentca.local/agent/ExecutionAgent-ETH-01"
    assert headers["Agentca-Scope"] == "query_anonymized_order_book"
    assert headers["Agentca-Model-Digest"] == model_digest().hex()
    assert "Agentca-Config-Digest" not in headers  # none in this certificate


def test_refusal_carries_the_problem_in_body_and_headers(world: Any) -> None:
    status, headers, body = call(
        world[0], auth_environ(signed(world, path="/admin/x"), uri="/book")
    )
    assert status == 401  # signed for /admin/x, asked about /book
    assert headers["Content-Type"] == "application/problem+json"
    assert json.loads(headers["Agentca-Problem"]) == json.loads(body)
    assert json.loads(body)["check"] == "signature-invalid"
    assert headers["Agentca-Status"] == "401" and "Accept-Signature" in headers
    env = auth_environ(signed(world, path="/admin/x"), uri="/admin/x")
    status, headers, body = call(world[0], env)
    assert status == 403 and json.loads(body)["check"] == "scope-denied"


@pytest.mark.parametrize(
    "change",
    [
        {"HTTP_X_ORIGINAL_BODY": "length=12 te="},
        {"HTTP_X_ORIGINAL_BODY": "length= te=chunked"},
        {"HTTP_X_ORIGINAL_METHOD": "POST"},  # HTTP/2 needs no Content-Length for a body
    ],
)
def test_a_body_the_service_cannot_see_is_refused(world: Any, change: dict[str, str]) -> None:
    env = auth_environ(signed(world))
    env.update(change)
    status, _, body = call(world[0], env)
    assert status == 401 and json.loads(body)["check"] == "content-digest-mismatch"


def test_a_proxy_without_the_framing_header_is_refused(world: Any) -> None:
    env = auth_environ(signed(world))
    del env["HTTP_X_ORIGINAL_BODY"]
    status, _, body = call(world[0], env)
    assert status == 401 and "X-Original-Body" in json.loads(body)["detail"]


def test_bad_calls_are_problems(world: Any) -> None:
    env = auth_environ(signed(world))
    del env["HTTP_X_ORIGINAL_URI"]
    assert call(world[0], env)[0] == 401
    env = auth_environ(signed(world), uri="/a/../book")
    assert call(world[0], env)[0] == 400
    env = auth_environ({})
    env["PATH_INFO"] = "/elsewhere"
    assert call(world[0], env)[0] == 404
    env = auth_environ(signed(world))
    env["PATH_INFO"] = "/_agentca/forward"  # no --forward-to
    assert call(world[0], env)[0] == 401
    env = auth_environ({})
    env["PATH_INFO"] = "/health"
    assert call(world[0], env)[0] == 200


def test_requests_in_flight_per_client_are_bounded(world: Any) -> None:
    app: AuthzService = world[0]
    hold, entered = threading.Event(), threading.Barrier(3)
    real = app.verifier.evaluate
    calls = iter(range(1000))

    def slow(*args: Any, **kwargs: Any) -> Any:
        if next(calls) < 2:  # the first two stay in flight until released
            entered.wait(5)
            hold.wait(5)
        return real(*args, **kwargs)

    app.verifier.evaluate = slow  # type: ignore[method-assign]
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(call(app, auth_environ(signed(world)))[0]))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    entered.wait(5)  # both in flight for 127.0.0.1
    status, headers, body = call(app, auth_environ(signed(world)))
    other = auth_environ(signed(world))
    other["REMOTE_ADDR"] = "10.0.0.9"
    other_status = call(app, other)[0]  # another client is not held up
    hold.set()
    for t in threads:
        t.join(5)
    assert status == 429 and headers["Agentca-Status"] == "429"
    assert json.loads(body)["type"].endswith("/too-many-requests")
    assert other_status == 200
    assert results == [200, 200]
    assert call(app, auth_environ(signed(world)))[0] == 200  # slots given back


def test_header_values_stay_printable_ascii() -> None:
    assert header_value("ExecutionAgent-ETH-01") == "ExecutionAgent-ETH-01"
    assert header_value("Agënt\r\nX: y") == "Ag%C3%ABnt%0D%0AX: y"
    assert header_value("100%") == "100%25"


def test_route_files(tmp_path: Path) -> None:
    good = tmp_path / "routes.toml"
    good.write_text('[routes]\n"GET /book" = "read"\n"POST /orders/*" = "write"\n')
    assert load_routes(good) == {"GET /book": "read", "POST /orders/*": "write"}
    as_json = tmp_path / "routes.json"
    as_json.write_text(json.dumps({"routes": {"DELETE /x": "admin"}}))
    assert load_routes(as_json) == {"DELETE /x": "admin"}
    for bad in (
        {"routes": {"get /book": "read"}},
        {"routes": {"GET book": "read"}},
        {"routes": {"GET /a/*/b": "read"}},
        {"routes": {"GET /a/../b": "read"}},
        {"routes": {"GET /book": ""}},
        {"routes": {"GET /book": 3}},
        {"routes": {}},
        {"route": {"GET /book": "read"}},
    ):
        with pytest.raises(RouteConfigError):
            parse_routes(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[routes\n")
    with pytest.raises(RouteConfigError, match="not valid TOML"):
        load_routes(broken)
    with pytest.raises(RouteConfigError, match="cannot read"):
        load_routes(tmp_path / "missing.toml")


def test_the_server_refuses_a_bad_configuration_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text('[routes]\n"GET /book" = 7\n')
    anchor = tmp_path / "root.pem"
    anchor.write_text("not a certificate")
    base = ["--trust-anchor", str(anchor), "--audience", "http://gw", "--trust-domain", "d"]
    with pytest.raises(SystemExit) as exc:
        main(["--routes", str(routes), *base, "--authorised-model", "00"])
    assert exc.value.code == 2 and "the scope must be a scope name" in capsys.readouterr().err
    routes.write_text('[routes]\n"GET /book" = "read"\n')
    with pytest.raises(SystemExit):
        main(["--routes", str(routes), *base, "--authorised-model", "00"])
    assert "--trust-anchor" in capsys.readouterr().err
    anchor.write_bytes(Pki.create().root.public_bytes(Encoding.PEM))
    with pytest.raises(SystemExit):
        main(["--routes", str(routes), *base, "--authorised-model", "00", "--workers", "2"])
    assert "needs --redis-url" in capsys.readouterr().err


def forward_environ(world: Any, body: bytes, sent_body: bytes | None = None) -> dict[str, Any]:
    _, agent, pki, clock = world
    staple = pki.ocsp_response(agent.credential.certificate, this_update=clock())
    headers = signed_view(agent, "POST", "http://gw.local/orders", body, staple)[1]
    headers["Agentca-Agent"] = "Mallory"  # a client's own identity header
    sent = body if sent_body is None else sent_body
    env = auth_environ(headers, "POST", "/orders")
    env.update(PATH_INFO="/_agentca/forward", RAW_URI="/_agentca/forward",
               CONTENT_LENGTH=str(len(sent)), CONTENT_TYPE=headers["Content-Type"],
               **{"wsgi.input": io.BytesIO(sent)})  # fmt: skip
    del env["HTTP_CONTENT_TYPE"]
    return env


def test_forward_mode_checks_the_body_and_forwards_the_identity(world: Any) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from gateway.authz_forward import Upstream

    seen: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(({k.lower(): v for k, v in self.headers.items()}, data))
            self.send_response(201)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base: AuthzService = world[0]
        routes = {"POST /orders": "submit_limit_order"}
        upstream = Upstream("127.0.0.1", server.server_port, timeout=5)
        app = AuthzService(base.verifier, routes, upstream=upstream)
        body = b'{"side":"buy","price":"1","qty":"1"}'
        status, _, answer = call(app, forward_environ(world, body))
        assert (status, answer) == (201, b"ok")
        headers, data = seen[-1]
        assert data == body
        assert headers["agentca-agent"] == "ExecutionAgent-ETH-01"
        assert headers["agentca-scope"] == "submit_limit_order"
        assert headers["host"] == "gw.local" and "signature" in headers
        assert not any(k.startswith("x-original-") for k in headers)
        status, _, answer = call(app, forward_environ(world, body, body.replace(b"1", b"9")))
        assert status == 401 and json.loads(answer)["check"] == "content-digest-mismatch"
        assert len(seen) == 1  # the tampered body never reached the upstream
    finally:
        server.shutdown()
        server.server_close()
    dead = AuthzService(world[0].verifier, routes, upstream=upstream)  # nothing listens now
    status, headers, answer = call(dead, forward_environ(world, body))
    assert status == 502 and headers["Content-Type"] == "application/problem+json"
    assert json.loads(answer)["type"].endswith("/upstream-unavailable")
