"""WSGI middleware: verifies every request before the application sees it.

    app.wsgi_app = AgentGatewayMiddleware(app.wsgi_app, verifier,
                                          routes={"POST /orders": "submit_limit_order"})

``routes`` maps ``"METHOD /path"`` (exact) or ``"METHOD /prefix/*"`` to the required scope,
or is a callable ``(method, path) -> scope | None``. A route with no entry is refused
(``scope-denied``) unless its path is in ``public``. The verified identity is put in
``environ["agentca.agent"]`` (an :class:`~gateway.chain.AgentIdentity`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from gateway.httpsig import RequestView
from gateway.problems import Check, Denied
from gateway.verifier import Decision, Verifier

ENVIRON_KEY = "agentca.agent"
ENVIRON_DECISION = "agentca.decision"
MAX_BODY = 1024 * 1024
ACCEPT_SIGNATURE = (
    'agentca=("@method" "@path" "@query" "content-digest" "content-type" "client-cert" '
    '"client-cert-chain" "agentca-provenance");tag="agentca"'
)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
RouteScopes = Mapping[str, str] | Callable[[str, str], str | None]


def request_view(environ: Mapping[str, Any], body: bytes) -> RequestView:
    """A :class:`RequestView` of a WSGI request, with the path as the client sent it."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw and raw.startswith("/"):
        path, _, query = raw.partition("?")
    else:
        script = environ.get("SCRIPT_NAME", "")
        path_info = environ.get("PATH_INFO", "")
        path = quote((script + path_info).encode("latin-1"), safe="/:@!$&'()*+,;=-._~%")
        query = environ.get("QUERY_STRING", "")
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = value
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        headers["content-length"] = environ["CONTENT_LENGTH"]
    return RequestView(
        method=environ.get("REQUEST_METHOD", "GET"),
        path=path,
        query=query,
        headers=headers,
        body=body,
        authority=environ.get("HTTP_HOST", environ.get("SERVER_NAME", "")),
        scheme=environ.get("wsgi.url_scheme", "http"),
    )


def read_body(environ: dict[str, Any], limit: int = MAX_BODY) -> bytes | None:
    """Read the whole body (None if larger than ``limit``) and put it back for the app."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if length > limit or length < 0:
        return None
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return bytes(body)


def problem_response(denied: Denied, start_response: StartResponse) -> list[bytes]:
    """Send the RFC 9457 problem document for ``denied``."""
    body = json.dumps(denied.problem()).encode()
    status = denied.check.status
    headers = [
        ("Content-Type", "application/problem+json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    if status == 401:
        headers.append(("Accept-Signature", ACCEPT_SIGNATURE))
    start_response(f"{status} {'Unauthorized' if status == 401 else 'Forbidden'}", headers)
    return [body]


def scope_for(routes: RouteScopes, method: str, path: str) -> str | None:
    if callable(routes):
        return routes(method, path)
    exact = routes.get(f"{method} {path}")
    if exact is not None:
        return exact
    best: tuple[int, str] | None = None
    for key, scope in routes.items():
        m, _, pattern = key.partition(" ")
        matches = m == method and pattern.endswith("*") and path.startswith(pattern[:-1])
        if matches and (best is None or len(pattern) > best[0]):
            best = (len(pattern), scope)
    return None if best is None else best[1]


class AgentGatewayMiddleware:
    """Verify, then call the wrapped app with the identity in the environ (or refuse)."""

    def __init__(
        self,
        app: WsgiApp,
        verifier: Verifier,
        routes: RouteScopes,
        public: Iterable[str] = (),
        max_body: int = MAX_BODY,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.routes = routes
        self.public = frozenset(public)
        self.max_body = max_body

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in self.public:
            return self.app(environ, start_response)
        body = read_body(environ, self.max_body)
        if body is None:
            return problem_response(
                Denied(Check.MALFORMED, f"body missing length or over {self.max_body} bytes"),
                start_response,
            )
        req = request_view(environ, body)
        scope = scope_for(self.routes, req.method, path)
        decision: Decision
        if scope is None:
            decision = self.verifier.decide(req, None)
            if decision.allowed:
                decision.allowed = False
                decision.denial = Denied(
                    Check.SCOPE, f"no scope is declared for {req.method} {path}"
                )
        else:
            decision = self.verifier.decide(req, scope)
        environ[ENVIRON_DECISION] = decision
        if not decision.allowed:
            assert decision.denial is not None
            return problem_response(decision.denial, start_response)
        environ[ENVIRON_KEY] = decision.identity
        return self.app(environ, start_response)
