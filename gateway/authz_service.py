"""The verifier as an HTTP service, for upstreams that are not Python (nginx ``auth_request``,
Envoy ``ext_authz`` in HTTP mode). A thin WSGI shell around the one core,
:meth:`Verifier.evaluate` + :meth:`Verifier.log`; served by gunicorn::

    python -m gateway.authz_service --routes routes.toml --trust-anchor root.pem \\
        --ca-url http://127.0.0.1:8400 --inventory-token-file gateway.token \\
        --audience https://api.example --trust-domain agentca.local --redis-url redis://...

Endpoints (listen on loopback or a private network only: the service trusts the
``X-Original-*`` headers its proxy sets, see deploy/nginx/agentca-auth-request.conf):

``/_agentca/auth``
    The ``auth_request`` subrequest. The original request is ``X-Original-Method``,
    ``X-Original-URI`` (as sent, with the query), ``X-Original-Proto``, ``Host`` and the
    client's headers; Envoy, which sends no ``X-Original-URI``, calls
    ``/_agentca/auth/<original path>`` with the original method (its ``path_prefix``).
    Allowed: 200 with the identity in ``Agentca-*`` response headers (:data:`IDENTITY`).
    Refused: the problem document, its status (401, 403; 400 for a non-normal path or a WIMSE
    refusal; 503 when the replay cache is down) and the same document in ``Agentca-Problem``
    and ``Agentca-Status`` headers, which nginx turns into the client's answer (nginx passes
    only 401 and 403 from a subrequest, and never its body). A request that announces a body
    (``X-Original-Body: length=N te=T``, which nginx must send), or whose method takes one
    (anything but :data:`BODYLESS`), is refused here when no body came with it: its body
    cannot be checked against ``Content-Digest`` (decision 0041).
``/_agentca/forward``
    Routes with a body: the whole request, body included, is verified and then forwarded to
    ``--forward-to`` with the identity headers (``gateway.authz_forward``).
``/health``
    200 ``{"status":"ok"}``.

Bounds: header size and count (gunicorn), the body (``--max-body``), requests in flight per
client address (``X-Real-IP``, set by the proxy; ``--max-per-client``, 429 beyond), the worker
deadline (gunicorn ``timeout``) and the forward deadline. Nothing answers a traceback: an
unexpected error is a ``verification-error`` refusal, logged.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import quote, unquote

from gateway.authz_forward import Upstream, UpstreamError, forward
from gateway.chain import AgentIdentity
from gateway.httpsig import RequestView
from gateway.problems import PROBLEM_BASE, Check, Denied
from gateway.verifier import Decision, Verifier
from gateway.wsgi import ACCEPT_SIGNATURE, MAX_BODY, path_problem, route_match

log = logging.getLogger("agentca.gateway.authz")

AUTH_PATH: Final = "/_agentca/auth"
FORWARD_PATH: Final = "/_agentca/forward"
HEALTH_PATH: Final = "/health"
BODYLESS: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})  # auth_request routes
PROBLEM_HEADER: Final = "Agentca-Problem"
STATUS_HEADER: Final = "Agentca-Status"
MAX_PROBLEM_HEADER: Final = 2048  # nginx's default proxy_buffer_size holds it with the rest
# The identity response headers (and request headers on the forward path). A client's own
# headers of these names never reach the upstream: nginx's proxy_set_header replaces them,
# the forwarder drops them.
IDENTITY: Final = (
    "Agentca-Agent",
    "Agentca-Spiffe-Id",
    "Agentca-Scope",
    "Agentca-Scopes",
    "Agentca-Serial",
    "Agentca-Officer",
    "Agentca-Environment",
    "Agentca-Model-Digest",
    "Agentca-Prompt-Digest",
    "Agentca-Config-Digest",
)
_ORIGINAL = ("x-original-method", "x-original-uri", "x-original-proto", "x-original-body")
_DROP_UPSTREAM = frozenset(h.lower() for h in IDENTITY) | frozenset(_ORIGINAL) | {"x-real-ip"}
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")

StartResponse = Callable[..., Any]
Routes = Mapping[str, str] | Callable[[str, str], str | None]


def header_value(text: str) -> str:
    """``text`` as a header value: printable ASCII as is, anything else percent-encoded
    (UTF-8), so a certificate's Unicode name cannot break the header block."""
    return text if text.isascii() and text.isprintable() and "%" not in text else quote(text, _SAFE)


def identity_headers(ident: AgentIdentity, scope: str | None) -> list[tuple[str, str]]:
    """The ``Agentca-*`` headers that tell the upstream who called (:data:`IDENTITY`)."""
    values = (
        ident.name,
        ident.spiffe_id,
        scope or "",
        " ".join(ident.scopes),
        ident.serial,
        ident.officer,
        ident.environment,
        ident.model_digest,
        ident.prompt_digest,
        ident.config_digest or "",
    )
    return [(name, header_value(v)) for name, v in zip(IDENTITY, values, strict=True) if v]


def problem_headers(problem: Mapping[str, object], status: int) -> list[tuple[str, str]]:
    """The refusal's response headers, the problem document among them (for nginx)."""
    body = json.dumps({**problem, "status": status}, separators=(",", ":"))
    if len(body) > MAX_PROBLEM_HEADER:  # an over-long detail (it may quote the path)
        short = {**problem, "status": status, "detail": str(problem.get("detail", ""))[:256]}
        body = json.dumps(short, separators=(",", ":"))
    headers = [
        ("Content-Type", "application/problem+json"),
        ("Cache-Control", "no-store"),
        (STATUS_HEADER, str(status)),
        (PROBLEM_HEADER, body),  # json.dumps escapes every non-ASCII and control character
    ]
    if status == 401:
        headers.append(("Accept-Signature", ACCEPT_SIGNATURE))
    return headers


class _PerClient:
    """Requests in flight per client address, at most ``limit`` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._busy: dict[str, int] = {}

    @contextmanager
    def slot(self, client: str) -> Iterator[bool]:
        with self._lock:
            busy = self._busy.get(client, 0)
            granted = busy < self.limit
            if granted:
                self._busy[client] = busy + 1
        try:
            yield granted
        finally:
            if granted:
                with self._lock:
                    left = self._busy[client] - 1
                    if left:
                        self._busy[client] = left
                    else:
                        del self._busy[client]


class _Refused(Exception):
    def __init__(self, denied: Denied, req: RequestView | None = None) -> None:
        super().__init__(denied.detail)
        self.denied = denied
        self.req = req


def _headers_of(environ: Mapping[str, Any]) -> dict[str, str]:
    return {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }


def _announces_body(headers: Mapping[str, str]) -> bool:
    """Whether the original request has a body, from ``X-Original-Body: length=N te=T``
    (nginx: ``"length=$content_length te=$http_transfer_encoding"``, never empty, so a proxy
    that forgets it is refused rather than trusted). Envoy-style calls carry the body."""
    if "x-original-uri" not in headers:
        return False
    framing = headers.get("x-original-body")
    if framing is None:
        raise _Refused(Denied(Check.MALFORMED, "the proxy sent no X-Original-Body framing"))
    fields = dict(part.partition("=")[::2] for part in framing.split())
    return fields.get("length", "") not in ("", "0") or bool(fields.get("te", ""))


def original_request(
    environ: Mapping[str, Any], body: bytes, prefix: str, received: Mapping[str, str] | None = None
) -> RequestView:
    """The :class:`RequestView` of the request the proxy is asking about (the path as the
    client sent it); ``prefix`` is the endpoint path, stripped for Envoy-style calls;
    ``received``: the call's headers, lower-case (default: from ``environ``)."""
    headers = dict(_headers_of(environ) if received is None else received)
    uri = headers.get("x-original-uri")
    if uri is None:  # Envoy: the original path follows the endpoint's path
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
        uri = raw[len(prefix) :] if raw.startswith(prefix + "/") else ""
    if not uri.startswith("/"):
        raise _Refused(Denied(Check.MALFORMED, "X-Original-URI (the request as sent) is missing"))
    method = headers.get("x-original-method") or environ.get("REQUEST_METHOD", "GET")
    path, _, query = uri.partition("?")
    authority = headers.get("host", "")  # the proxy passes the client's Host
    scheme = headers.get("x-original-proto") or environ.get("wsgi.url_scheme", "http")
    for name in _ORIGINAL:
        headers.pop(name, None)
    headers.pop("x-real-ip", None)
    if body and environ.get("CONTENT_TYPE"):  # no body, no content type to protect
        headers["content-type"] = environ["CONTENT_TYPE"]
    return RequestView(method, path, query, headers, body, authority, scheme)


class AuthzService:
    """The WSGI app of the verifier service (see the module docstring)."""

    def __init__(
        self,
        verifier: Verifier,
        routes: Routes,
        *,
        upstream: Upstream | None = None,
        max_body: int = MAX_BODY,
        max_per_client: int = 32,
        profiles: Iterable[str] | None = None,
    ) -> None:
        self.verifier = verifier
        self.routes = routes
        self.upstream = upstream
        self.max_body = max_body
        self.profiles = None if profiles is None else tuple(profiles)
        self._clients = _PerClient(max_per_client)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == HEALTH_PATH:
            return _send(start_response, 200, [("Content-Type", "application/json")],
                         b'{"status":"ok"}')  # fmt: skip
        if path == AUTH_PATH or path.startswith(AUTH_PATH + "/"):
            endpoint = AUTH_PATH
        elif path == FORWARD_PATH or path.startswith(FORWARD_PATH + "/"):
            endpoint = FORWARD_PATH
        else:
            problem = {
                "type": PROBLEM_BASE + "not-found",
                "title": "No such endpoint",
                "detail": f"the verifier service answers {AUTH_PATH} and {FORWARD_PATH}",
            }
            return self._refuse(start_response, problem, 404)
        headers = _headers_of(environ)
        client = headers.get("x-real-ip") or environ.get("REMOTE_ADDR", "")
        with self._clients.slot(client) as granted:
            if not granted:
                return self._refuse(start_response, _too_many(self._clients.limit), 429)
            try:
                return self._handle(environ, start_response, endpoint, headers)
            except Exception:  # never a traceback: fail closed, log it
                log.exception("verifier service error")
                denied = Denied(Check.ERROR, "the verifier service failed")
                return self._refuse(start_response, denied.problem(), 503)

    def _handle(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        endpoint: str,
        headers: Mapping[str, str],
    ) -> Iterable[bytes]:
        try:
            body = self._body(environ, endpoint)
            req = original_request(environ, body, endpoint, headers)
            if endpoint == AUTH_PATH and not body:
                self._bodiless(req, headers)
            problem = path_problem({"RAW_URI": _uri(req), "PATH_INFO": _decoded(req.path)})
            if problem is not None:
                raise _Refused(Denied(Check.PATH, problem), req)
        except _Refused as refused:
            req = refused.req or RequestView(environ.get("REQUEST_METHOD", "GET"), "", "", {})
            decision = Decision(False, denial=refused.denied)
            return self._deny(start_response, decision, req)
        scope, route = route_match(self.routes, req.method, _decoded(req.path))
        decision = self.verifier.evaluate(req, scope, self.profiles)
        if not decision.allowed:
            return self._deny(start_response, decision, req, route)
        assert decision.identity is not None
        ident = identity_headers(decision.identity, scope)
        if endpoint == AUTH_PATH:
            self.verifier.log(decision, req, 200, route)
            return _send(start_response, 200, [*ident, ("Cache-Control", "no-store")], b"")
        return self._forward(start_response, decision, req, ident, route)

    def _body(self, environ: dict[str, Any], endpoint: str) -> bytes:
        if endpoint == FORWARD_PATH and self.upstream is None:
            raise _Refused(Denied(Check.MALFORMED, "this service forwards nowhere (--forward-to)"))
        return _read(environ, self.max_body)

    @staticmethod
    def _bodiless(req: RequestView, headers: Mapping[str, str]) -> None:
        """Refuse what may carry a body the service cannot see: a method that takes one, or
        a request whose framing announces one (HTTP/2 needs no Content-Length)."""
        if req.method not in BODYLESS or _announces_body(headers):
            raise _Refused(
                Denied(
                    Check.CONTENT_DIGEST,
                    f"a {req.method} request may have a body, which auth_request does not show "
                    f"the verifier: the route must go through {FORWARD_PATH} (decision 0041)",
                ),
                req,
            )

    def _forward(
        self,
        start_response: StartResponse,
        decision: Decision,
        req: RequestView,
        ident: list[tuple[str, str]],
        route: str | None = None,
    ) -> Iterable[bytes]:
        assert self.upstream is not None
        headers = {k: v for k, v in req.headers.items() if k not in _DROP_UPSTREAM}
        headers["host"] = req.authority
        for name, value in ident:
            headers[name.lower()] = value
        try:
            answer = forward(self.upstream, req.method, _uri(req), headers, req.body)
        except UpstreamError as exc:
            self.verifier.log(decision, req, 502, route)
            problem = {
                "type": PROBLEM_BASE + "upstream-unavailable",
                "title": "Upstream unavailable",
                "detail": str(exc),
            }
            return self._refuse(start_response, problem, 502)
        self.verifier.log(decision, req, answer.status, route)
        start_response(f"{answer.status} {answer.reason or 'Status'}",
                       [*answer.headers, ("Content-Length", str(len(answer.body)))])  # fmt: skip
        return [answer.body]

    def _deny(
        self,
        start_response: StartResponse,
        decision: Decision,
        req: RequestView,
        route: str | None = None,
    ) -> Iterable[bytes]:
        assert decision.denial is not None
        status = decision.http_status or decision.denial.check.status
        self.verifier.log(decision, req, status, route)
        return self._refuse(start_response, decision.denial.problem(), status)

    @staticmethod
    def _refuse(
        start_response: StartResponse, problem: Mapping[str, object], status: int
    ) -> Iterable[bytes]:
        body = json.dumps({**problem, "status": status}).encode()
        return _send(start_response, status, problem_headers(problem, status), body)


def _too_many(limit: int) -> dict[str, object]:
    return {
        "type": PROBLEM_BASE + "too-many-requests",
        "title": "Too many requests in flight",
        "detail": f"at most {limit} requests in flight per client",
    }


def _uri(req: RequestView) -> str:
    return req.path + ("?" + req.query if req.query else "")


def _decoded(path: str) -> str:
    return unquote(path, encoding="latin-1")  # as a WSGI server gives PATH_INFO


def _read(environ: dict[str, Any], limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (else refused), chunked or not."""
    stream = environ["wsgi.input"]
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _Refused(Denied(Check.MALFORMED, "the Content-Length is not a number")) from None
    too_large = Denied(Check.MALFORMED, f"the body is over {limit} bytes")
    if length > limit or length < 0:
        raise _Refused(too_large)
    if length:
        return bytes(stream.read(length))
    if environ.get("HTTP_TRANSFER_ENCODING"):
        data = bytes(stream.read(limit + 1))
        if len(data) > limit:
            raise _Refused(too_large)
        return data
    return b""


def _send(
    start_response: StartResponse, status: int, headers: list[tuple[str, str]], body: bytes
) -> list[bytes]:
    start_response(
        f"{status} {HTTPStatus(status).phrase}", [*headers, ("Content-Length", str(len(body)))]
    )
    return [body]


if __name__ == "__main__":
    from gateway.authz_server import main

    main()
