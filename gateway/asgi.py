"""ASGI middleware: verifies every request before the application sees it (any ASGI app).

    app = AgentGatewayMiddleware(app, verifier, routes={"POST /orders": "submit_limit_order"},
                                 public=["/health"])

The ASGI twin of ``gateway.wsgi``, with the same ``routes``, ``public``, ``profiles`` and
mutual-TLS options, and the same order: public paths pass; the path must be in RFC 3986
normal form (400 ``path-not-normal``); the body is read once, at most ``max_body`` bytes
(413 ``body-too-large``) within ``body_timeout`` seconds (408 ``body-timeout``); then
:meth:`Verifier.evaluate <gateway.verifier.Verifier.evaluate>` decides, and its decision is
logged with the status the application actually sent. Refusals are the problem documents
``gateway.wsgi`` sends (built by it). The application receives the body it would have read
(replayed from memory) and finds the verified identity in ``scope["state"]["agent"]``
(``request.state.agent`` in Starlette and FastAPI) and the decision in
``scope["state"]["agentca_decision"]``. WebSocket connections are closed (1008) unless public:
nothing here verifies them.

Verification runs inline on the event loop by default: on the hot path (chain and status
cached or stapled) it is about 100-150 us of CPU, which a thread hop would lengthen, not
shorten (the GIL; decision 0040 has the figures). It blocks the loop only when the request
brought no usable status and the gateway must ask the OCSP responder, or on a remote replay
store; ``verify_in_thread=True`` runs every verification in the default executor instead.
``rules`` lets a framework supply what a route requires from its own router
(``gateway.fastapi``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from gateway.client_cert import ClientCertSource, TlsClientCert
from gateway.httpsig import RequestView
from gateway.problems import Check, Denied
from gateway.verifier import Decision, Verifier
from gateway.wsgi import (
    MAX_BODY,
    RouteFlag,
    RouteProfiles,
    RouteScopes,
    path_problem,
    problem_response,
    route_value,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_AGENT: Final = "agent"
STATE_DECISION: Final = "agentca_decision"
BODY_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class RouteRule:
    """What one route requires, as a framework's router declares it (``gateway.fastapi``);
    ``None`` members defer to the middleware's ``routes`` / ``profiles`` maps."""

    scope: str | None = None
    public: bool = False
    profiles: tuple[str, ...] | None = None
    require_tls_client_cert: bool = False


RouteRules = Callable[[Scope], RouteRule | None]


def request_view(scope: Scope, body: bytes) -> RequestView:
    """A :class:`RequestView` of an ASGI HTTP request, with the path as the client sent it.

    Repeated header fields are joined with ``", "`` (RFC 9110 5.3), as WSGI servers do; a
    ``Content-Type`` on a request without a body is left out, as ``gateway.wsgi`` does."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if "content-type" in headers and not body and headers.get("content-length", "") in ("", "0"):
        del headers["content-type"]
    raw = scope.get("raw_path")
    if raw:
        path = raw.decode("latin-1").partition("?")[0]
    else:
        path = quote(scope.get("path", "").encode(), safe="/:@!$&'()*+,;=-._~%")
    server = scope.get("server") or ("", None)
    return RequestView(
        method=scope.get("method", "GET"),
        path=path,
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=body,
        authority=headers.get("host", str(server[0] or "")),
        scheme=scope.get("scheme", "http"),
    )


def wsgi_environ(scope: Scope) -> dict[str, Any]:
    """The WSGI environ keys :meth:`ClientCertSource.from_environ` reads, from an ASGI scope
    (peer address, headers, and the ASGI TLS extension's client certificate when the server
    gives one), and those ``gateway.wsgi.path_problem`` reads."""
    raw = scope.get("raw_path")
    client = scope.get("client") or ("", None)
    environ: dict[str, Any] = {
        "PATH_INFO": scope.get("path", ""),
        "SCRIPT_NAME": "",
        "RAW_URI": raw.decode("latin-1") if raw else "",
        "REMOTE_ADDR": str(client[0] or ""),
    }
    for raw_name, raw_value in scope.get("headers", ()):
        key = "HTTP_" + raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        environ[key] = f"{environ[key]}, {value}" if key in environ else value
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if chain:
        environ["SSL_CLIENT_CERT"] = chain[0]
        for i, pem in enumerate(chain[1:]):
            environ[f"SSL_CLIENT_CERT_CHAIN_{i}"] = pem
    return environ


def problem_parts(
    denied: Denied, status: int | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of the problem document ``gateway.wsgi.problem_response``
    sends for ``denied`` (one builder for every shell)."""
    sent: list[Any] = []
    body = b"".join(problem_response(denied, lambda *args: sent.extend(args), status))
    return int(sent[0].split(" ", 1)[0]), list(sent[1]), body


async def send_problem(send: Send, denied: Denied, status: int | None = None) -> None:
    """Send the problem document for ``denied`` as ASGI messages."""
    code, headers, body = problem_parts(denied, status)
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AgentGatewayMiddleware:
    """Verify, then call the wrapped ASGI app with the identity in ``scope["state"]``."""

    def __init__(
        self,
        app: AsgiApp,
        verifier: Verifier,
        routes: RouteScopes | None = None,
        public: Iterable[str] = (),
        max_body: int = MAX_BODY,
        profiles: RouteProfiles | None = None,
        *,
        rules: RouteRules | None = None,
        body_timeout: float = BODY_TIMEOUT,
        client_certs: ClientCertSource | None = None,
        require_tls_client_cert: RouteFlag = False,
        verify_in_thread: bool = False,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.routes: RouteScopes = routes if routes is not None else {}
        self.public = frozenset(public)
        self.max_body = max_body
        self.profiles = profiles
        self.rules = rules
        self.body_timeout = body_timeout
        self.client_certs = client_certs or ClientCertSource()
        self.require_tls_client_cert = require_tls_client_cert
        self.verify_in_thread = verify_in_thread

    def rule(self, scope: Scope) -> RouteRule:
        """What the route of ``scope`` requires: ``rules`` first, then the maps."""
        found = self.rules(scope) if self.rules is not None else None
        method, path = scope.get("method", "GET"), scope.get("path", "")
        scope_name = found.scope if found is not None else None
        if scope_name is None:
            scope_name = route_value(self.routes, method, path)
        profiles = found.profiles if found is not None else None
        if profiles is None and self.profiles is not None:
            profiles = route_value(self.profiles, method, path)
        flag = self.require_tls_client_cert
        require_tls = (found is not None and found.require_tls_client_cert) or (
            flag(method, path) if callable(flag) else flag
        )
        public = path in self.public or (found is not None and found.public)
        return RouteRule(scope_name, public, profiles, require_tls)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):  # lifespan and the like
            return await self.app(scope, receive, send)
        rule = self.rule(scope)
        if rule.public:
            return await self.app(scope, receive, send)
        if kind != "http":
            return await send({"type": "websocket.close", "code": 1008})
        raw = scope.get("raw_path")
        problem = path_problem(
            {"PATH_INFO": scope.get("path", ""), "RAW_URI": raw.decode("latin-1") if raw else ""}
        )
        if problem is not None:
            denied = Denied(Check.PATH, problem)
            return await self._refuse(scope, send, Decision(False, denial=denied, scope=rule.scope))
        body = await self._read_body(scope, receive)
        if body is None:  # the client went away: nobody to answer
            return None
        if isinstance(body, Denied):
            return await self._refuse(scope, send, Decision(False, denial=body, scope=rule.scope))
        req = request_view(scope, body)
        tls: TlsClientCert | None = None
        if rule.require_tls_client_cert:
            try:
                tls = self.client_certs.from_environ(wsgi_environ(scope))
            except Denied as denied:
                decision = Decision(False, denial=denied, scope=rule.scope)
                return await self._refuse(scope, send, decision, req)
        evaluate = functools.partial(
            self.verifier.evaluate,
            req,
            rule.scope,
            rule.profiles,
            tls_client_cert=tls,
            require_tls_client_cert=rule.require_tls_client_cert,
        )
        if self.verify_in_thread:
            decision = await asyncio.get_running_loop().run_in_executor(None, evaluate)
        else:
            decision = evaluate()
        if not decision.allowed:
            return await self._refuse(scope, send, decision, req)
        state = scope.setdefault("state", {})
        state[STATE_AGENT] = decision.identity
        state[STATE_DECISION] = decision
        await self._call_app(scope, receive, send, body, decision, req)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | Denied | None:
        """The whole body, a refusal (too large, too slow), or None if the client left."""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return Denied(Check.MALFORMED, "Content-Length is not a number")
                if declared > self.max_body:
                    return Denied(Check.BODY_TOO_LARGE, f"the body is over {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        return Denied(
                            Check.BODY_TOO_LARGE, f"the body is over {self.max_body} bytes"
                        )
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            return Denied(
                Check.BODY_TIMEOUT, f"the body did not arrive within {self.body_timeout:g} s"
            )
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _call_app(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
        decision: Decision,
        req: RequestView,
    ) -> None:
        replayed = False
        logged = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: http.disconnect, when it comes

        async def logging_send(message: Message) -> None:
            nonlocal logged
            if not logged and message["type"] == "http.response.start":
                logged = True
                self.verifier.log(decision, req, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, replay, logging_send)
        except BaseException:
            if not logged:
                logged = True
                self.verifier.log(decision, req, 500)
            raise
        if not logged:
            self.verifier.log(decision, req, None)

    async def _refuse(
        self, scope: Scope, send: Send, decision: Decision, req: RequestView | None = None
    ) -> None:
        assert decision.denial is not None
        scope.setdefault("state", {})[STATE_DECISION] = decision
        status = decision.http_status
        self.verifier.log(decision, req or request_view(scope, b""), status)
        await send_problem(send, decision.denial, status)
