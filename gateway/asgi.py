"""ASGI middleware: verifies every request before the application sees it (any ASGI app).

    app = AgentGatewayMiddleware(app, verifier, routes={"POST /orders": "submit_limit_order"},
                                 public=["/health"])

The ASGI twin of ``gateway.wsgi``, with the same ``routes``, ``public``, ``profiles`` and
mutual-TLS options, and the same order: public paths pass; the path must be in RFC 3986
normal form (400 ``path-not-normal``); the body is read once, at most ``max_body`` bytes
(413 ``body-too-large``) within ``body_timeout`` seconds (408 ``body-timeout``; the timer is
armed only if the body is not already there, decision 0046); then
:meth:`Verifier.evaluate <gateway.verifier.Verifier.evaluate>` decides, and its decision is
logged with the status the application actually sent (``gateway.asgi_log``). Refusals are
the problem documents ``gateway.wsgi`` sends (built by it). The application receives the
body it would have read (replayed from memory) and finds the verified identity in
``scope["state"]["agent"]`` (``request.state.agent`` in Starlette and FastAPI) and the
decision in ``scope["state"]["agentca_decision"]``. WebSocket connections are closed (1008)
unless public: nothing here verifies them.

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
from collections.abc import Callable, Generator, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import quote

from gateway.asgi_log import AsgiApp as AsgiApp
from gateway.asgi_log import Message as Message
from gateway.asgi_log import Receive as Receive
from gateway.asgi_log import Send as Send
from gateway.asgi_log import call_logged
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
    route_match,
    route_value,
)

Scope = MutableMapping[str, Any]

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
    route: str | None = None  # the route template matched (``/orders/{id}``): action records


RouteRules = Callable[[Scope], RouteRule | None]


_NAMES: dict[bytes, str] = {}
"""Header names as received, decoded and lower-cased (the set a deployment sees is small)."""
_MAX_NAMES: Final = 512
_MEMO_PATH: Final = 512
_MAX_RULES: Final = 256


def header_map(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """An ASGI header list as a dict (names lower-case), repeated fields joined with ``", "``
    (RFC 9110 5.3) as WSGI servers do."""
    names = _NAMES
    headers: dict[str, str] = {}
    try:
        for raw_name, raw_value in raw_headers:
            name = names.get(raw_name)
            if name is None:
                name = raw_name.decode("latin-1").lower()
                if len(names) < _MAX_NAMES and len(raw_name) <= 64 and type(raw_name) is bytes:
                    names[raw_name] = name
            value = raw_value.decode("latin-1")
            if name in headers:
                headers[name] = f"{headers[name]}, {value}"
            else:
                headers[name] = value
    except TypeError:  # not bytes (a server that hands over bytearrays): the slow way
        headers = {}
        for raw_name, raw_value in raw_headers:
            name = bytes(raw_name).decode("latin-1").lower()
            value = bytes(raw_value).decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def request_view(
    scope: Scope,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    keep_bodiless_content_type: bool = False,
) -> RequestView:
    """A :class:`RequestView` of an ASGI HTTP request, with the path as the client sent it.

    ``headers``: :func:`header_map` of the scope, if already made. A ``Content-Type`` on a
    request without a body is left out, as ``gateway.wsgi`` does, unless
    ``keep_bodiless_content_type`` (``gateway.mcp``: MCP clients send one on every request)."""
    if headers is None:
        headers = header_map(scope.get("headers", ()))
    if (
        not keep_bodiless_content_type
        and not body
        and "content-type" in headers
        and headers.get("content-length", "") in ("", "0")
    ):
        headers = dict(headers)
        del headers["content-type"]
    raw = scope.get("raw_path")
    if raw:
        path = bytes(raw).decode("latin-1").partition("?")[0]
    else:
        path = quote(str(scope.get("path", "")).encode(), safe="/:@!$&'()*+,;=-._~%")
    server = scope.get("server") or ("", None)
    return RequestView(
        method=str(scope.get("method", "GET")),
        path=path,
        query=bytes(scope.get("query_string", b"")).decode("latin-1"),
        headers=headers,
        body=body,
        authority=headers.get("host", str(server[0] or "")),
        scheme=str(scope.get("scheme", "http")),
    )


def scope_path_problem(scope: Scope) -> str | None:
    """:func:`gateway.wsgi.path_problem` of an ASGI request (the raw and the decoded path)."""
    raw = bytes(scope.get("raw_path") or b"")
    path = str(scope.get("path", ""))
    if len(raw) + len(path) > _MEMO_PATH:  # memoised below: bounded memory, whatever is sent
        return path_problem({"PATH_INFO": path, "RAW_URI": raw.decode("latin-1")})
    return _path_problem(raw, path)


@functools.lru_cache(maxsize=1024)
def _path_problem(raw: bytes, path: str) -> str | None:
    # a pure function of the two paths: the few a deployment serves are checked once
    return path_problem({"PATH_INFO": path, "RAW_URI": raw.decode("latin-1")})


class _Resumed:
    """Awaits an awaitable's iterator that already ran up to its first suspension."""

    __slots__ = ("it", "pending")

    def __init__(self, it: Generator[Any, Any, Message], pending: Any) -> None:
        self.it = it
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Message]:
        it, pending = self.it, self.pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                it.close()
                raise
            except BaseException as exc:  # cancellation (the deadline), forwarded
                try:
                    pending = it.throw(exc)
                except StopIteration as stop:
                    return cast(Message, stop.value)
            else:
                try:
                    pending = it.send(sent)
                except StopIteration as stop:
                    return cast(Message, stop.value)


async def read_body(
    headers: Mapping[str, str], receive: Receive, max_body: int, timeout: float
) -> bytes | Denied | None:
    """The whole request body; a refusal (``Content-Length`` not a number, over ``max_body``
    bytes, not all there within ``timeout`` seconds); None if the client went away.

    The deadline is armed only if a ``receive`` must wait: a body the server already holds
    (the usual small request, read with its headers) costs no timer, and a client that
    trickles its body is still cut off ``timeout`` seconds after the wait began."""
    length = headers.get("content-length")
    if length is not None:
        if not (length.isdigit() and length.isascii()):
            return Denied(Check.MALFORMED, "Content-Length is not a number")
        if int(length) > max_body:
            return Denied(Check.BODY_TOO_LARGE, f"the body is over {max_body} bytes")
    it = receive().__await__()
    try:
        pending = it.send(None)
    except StopIteration as stop:  # there without waiting
        message: Message | None = stop.value
        if not isinstance(message, Mapping):
            return None  # not an ASGI message: nothing to read a body from
        if message.get("type") == "http.request":
            chunk = message.get("body", b"")
            if not message.get("more_body", False) and len(chunk) <= max_body:
                return bytes(chunk)
        waiting = None
    else:
        message, waiting = None, _Resumed(it, pending)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                if message is None:
                    message = await (waiting if waiting is not None else receive())
                    waiting = None
                if message.get("type") != "http.request":
                    return None  # http.disconnect
                chunk = bytes(message.get("body", b""))
                size += len(chunk)
                if size > max_body:
                    return Denied(Check.BODY_TOO_LARGE, f"the body is over {max_body} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
                message = None
    except TimeoutError:
        return Denied(Check.BODY_TIMEOUT, f"the body did not arrive within {timeout:g} s")
    finally:
        if waiting is not None:  # never awaited (an exception before): do not leak it
            it.close()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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
        self._rule_of: dict[tuple[Any, ...], RouteRule] = {}

    def rule(self, scope: Scope) -> RouteRule:
        """What the route of ``scope`` requires: ``rules`` first, then the maps."""
        found = self.rules(scope) if self.rules is not None else None
        method, path = scope.get("method", "GET"), scope.get("path", "")
        scope_name = found.scope if found is not None else None
        template = found.route if found is not None else None
        if scope_name is None:
            scope_name, matched = route_match(self.routes, method, path)
            template = template or matched
        profiles = found.profiles if found is not None else None
        if profiles is None and self.profiles is not None:
            profiles = route_value(self.profiles, method, path)
        flag = self.require_tls_client_cert
        require_tls = (found is not None and found.require_tls_client_cert) or (
            flag(method, path) if callable(flag) else flag
        )
        public = path in self.public or (found is not None and found.public)
        key = (scope_name, public, profiles, bool(require_tls), template)
        try:
            rule = self._rule_of.get(key)
        except TypeError:  # a callable's unhashable answer (a list of profiles): no reuse
            return RouteRule(*key)
        if rule is None:  # one object per distinct rule: the maps hold few
            rule = RouteRule(*key)
            if len(self._rule_of) < _MAX_RULES:
                self._rule_of[key] = rule
        return rule

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind != "websocket":  # lifespan and the like
                return await self.app(scope, receive, send)
            if self.rule(scope).public:
                return await self.app(scope, receive, send)
            return await send({"type": "websocket.close", "code": 1008})
        rule = self.rule(scope)
        if rule.public:
            return await self.app(scope, receive, send)
        problem = scope_path_problem(scope)
        if problem is not None:
            denied = Denied(Check.PATH, problem)
            return await self._refuse(
                scope, send, Decision(False, denial=denied, scope=rule.scope), route=rule.route
            )
        headers = header_map(scope.get("headers", ()))
        body = await read_body(headers, receive, self.max_body, self.body_timeout)
        if body is None:  # the client went away: nobody to answer
            return None
        if isinstance(body, Denied):
            decision = Decision(False, denial=body, scope=rule.scope)
            return await self._refuse(
                scope, send, decision, request_view(scope, b"", headers), rule.route
            )
        req = request_view(scope, body, headers)
        tls: TlsClientCert | None = None
        if rule.require_tls_client_cert:
            try:
                tls = self.client_certs.from_environ(wsgi_environ(scope))
            except Denied as denied:
                decision = Decision(False, denial=denied, scope=rule.scope)
                return await self._refuse(scope, send, decision, req, rule.route)
        if self.verify_in_thread:
            evaluate = functools.partial(
                self.verifier.evaluate,
                req,
                rule.scope,
                rule.profiles,
                tls_client_cert=tls,
                require_tls_client_cert=rule.require_tls_client_cert,
            )
            decision = await asyncio.get_running_loop().run_in_executor(None, evaluate)
        else:
            decision = self.verifier.evaluate(
                req,
                rule.scope,
                rule.profiles,
                tls_client_cert=tls,
                require_tls_client_cert=rule.require_tls_client_cert,
            )
        if not decision.allowed:
            return await self._refuse(scope, send, decision, req, rule.route)
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state[STATE_AGENT] = decision.identity
        state[STATE_DECISION] = decision
        await call_logged(
            self.app, scope, receive, send, body, self.verifier, decision, req, route=rule.route
        )

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        decision: Decision,
        req: RequestView | None = None,
        route: str | None = None,
    ) -> None:
        assert decision.denial is not None
        scope.setdefault("state", {})[STATE_DECISION] = decision
        status = decision.http_status
        self.verifier.log(decision, req or request_view(scope, b""), status, route)
        await send_problem(send, decision.denial, status)
