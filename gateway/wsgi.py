"""WSGI middleware: verifies every request before the application sees it.

    app.wsgi_app = AgentGatewayMiddleware(app.wsgi_app, verifier,
                                          routes={"POST /orders": "submit_limit_order"})

``routes`` maps ``"METHOD /path"`` (exact) or ``"METHOD /prefix/*"`` to the required scope,
or is a callable ``(method, path) -> scope | None``. A route with no entry is refused
(``scope-denied``) unless its path is in ``public``. The verified identity is put in
``environ["agentca.agent"]`` (an :class:`~gateway.chain.AgentIdentity`). ``profiles`` maps
routes the same way to the signature profiles they accept (``("wimse",)``, ``("agentca",
"wimse")``); a route without an entry accepts the verifier's ``profiles``.

Paths are matched only in RFC 3986 normal form: a request whose path has a dot segment
(``.``/``..``, also percent-encoded), an encoded slash or backslash, a percent-encoded unreserved
character, an empty segment (``//``) or a control character is refused with 400
``path-not-normal`` before anything else (see docs/decisions/0005).

Mutual TLS (docs/mtls.md): ``require_tls_client_cert`` (a bool, or a callable
``(method, path) -> bool`` per route) makes a route require the agent certificate in TLS as
well, byte-identical to the one that signs; ``client_certs`` says where the TLS certificate is
found (a :class:`~gateway.client_cert.ClientCertSource`: trusted proxies, ``SSL_CLIENT_CERT``).

``attested`` maps routes the same way to their attestation rule (decision 0051): ``True`` (any
attestor the CA trusts) or a frozenset of attestor names; those routes deny a certificate
with self-declared provenance (``provenance-not-attested``).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import quote

from gateway.client_cert import ClientCertSource, TlsClientCert
from gateway.httpsig import RequestView
from gateway.problems import Check, Denied
from gateway.verifier import Attested, Decision, Verifier

ENVIRON_KEY = "agentca.agent"
ENVIRON_DECISION = "agentca.decision"
MAX_BODY = 1024 * 1024
ACCEPT_SIGNATURE = (
    'agentca=("@method" "@authority" "@path" "@query" "content-digest" "content-type" '
    '"client-cert" "client-cert-chain" "agentca-ocsp" "agentca-provenance");tag="agentca"'
)
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%(.?.?)")
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9\-_~!$&'()*+,;=:@/]*")  # no '%', no '.', no '\'

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
RouteScopes = Mapping[str, str] | Callable[[str, str], str | None]
RouteProfiles = Mapping[str, tuple[str, ...]] | Callable[[str, str], tuple[str, ...] | None]
RouteFlag = bool | Callable[[str, str], bool]
T = TypeVar("T")


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
    # A request without a body has no content type to protect: wsgiref (and servers built on
    # it) invent CONTENT_TYPE=text/plain when the client sent none, which would otherwise make
    # every signed GET fail for an uncovered content-type.
    if environ.get("CONTENT_TYPE") and (
        body or environ.get("CONTENT_LENGTH", "0") not in ("", "0")
    ):
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


def _segments_problem(path: str, what: str, lowest: int) -> str | None:
    if not path.startswith("/"):
        return f"the {what} path must start with '/'"
    if "\\" in path:
        return f"the {what} path holds a backslash"
    if any(ord(c) < lowest or ord(c) == 0x7F for c in path):
        return f"the {what} path holds a control character" + (" or space" if lowest > 32 else "")
    if "//" in path:
        return f"the {what} path holds an empty segment ('//')"
    for segment in path.split("/"):
        if segment in (".", ".."):
            return f"the {what} path holds a dot segment ({segment!r})"
    return None


def path_problem(environ: Mapping[str, Any]) -> str | None:
    """Why the request path is not in RFC 3986 normal form (None if it is).

    Checks the path as sent (``RAW_URI``/``REQUEST_URI`` when the server gives it) and the
    decoded ``PATH_INFO`` that routes are matched against: no dot segments, no empty
    segments, no backslash or control characters, and no percent-encoding except of
    characters that must stay encoded (an encoded slash, backslash, control character or
    unreserved character is refused: RFC 3986 6.2.2 normalises the last, and the others
    would make the routed path differ from the signed one).
    """
    script = environ.get("SCRIPT_NAME", "")
    path_info = script + environ.get("PATH_INFO", "")
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    raw_path = raw.partition("?")[0] if raw.startswith("/") else ""
    if (
        raw_path
        and _PLAIN_PATH.fullmatch(raw_path)
        and "//" not in raw_path
        and raw_path == path_info
    ):
        return None  # the usual case: nothing encoded, no dots at all
    if raw_path:
        for m in _PCT.finditer(raw_path):
            hexdigits = m.group(1)
            if len(hexdigits) != 2 or not all(c in "0123456789abcdefABCDEF" for c in hexdigits):
                return "the path holds a malformed percent-encoding"
            char = chr(int(hexdigits, 16))
            if char in _UNRESERVED:
                return f"the path percent-encodes the unreserved character {char!r}"
            if char in "/\\" or ord(char) < 0x20 or ord(char) == 0x7F:
                return f"the path percent-encodes {char!r}"
        if any(ord(c) > 0x7E for c in raw_path):
            return "the request path holds a non-ASCII character (not a URI)"
        problem = _segments_problem(raw_path, "request", 0x21)
        if problem:
            return problem
    return _segments_problem(path_info or "/", "decoded", 0x20)


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


def problem_response(
    denied: Denied, start_response: StartResponse, status: int | None = None
) -> list[bytes]:
    """Send the RFC 9457 problem document for ``denied`` (status: ``status``, by default
    ``denied.check.status``)."""
    status = denied.check.status if status is None else status
    body = json.dumps({**denied.problem(), "status": status}).encode()
    headers = [
        ("Content-Type", "application/problem+json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    if status == 401:
        headers.append(("Accept-Signature", ACCEPT_SIGNATURE))
    start_response(f"{status} {HTTPStatus(status).phrase}", headers)
    return [body]


def scope_for(routes: RouteScopes, method: str, path: str) -> str | None:
    """The scope ``routes`` requires for ``method path`` (None: no entry)."""
    return route_value(routes, method, path)


def route_value(
    routes: Mapping[str, T] | Callable[[str, str], T | None], method: str, path: str
) -> T | None:
    """The entry of ``routes`` for ``method path``: exact ``"METHOD /path"``, else the
    longest matching ``"METHOD /prefix/*"``, or what a callable answers."""
    return route_match(routes, method, path)[0]


def route_match(
    routes: Mapping[str, T] | Callable[[str, str], T | None], method: str, path: str
) -> tuple[T | None, str | None]:
    """:func:`route_value` and the route template it matched (``/orders``, ``/reports/*``;
    None for a callable, which has no template, or no match): the action record's route."""
    if callable(routes):
        return routes(method, path), None
    exact = routes.get(f"{method} {path}")
    if exact is not None:
        return exact, path
    best: tuple[str, T] | None = None
    for key, value in routes.items():
        m, _, pattern = key.partition(" ")
        matches = m == method and pattern.endswith("*") and path.startswith(pattern[:-1])
        if matches and (best is None or len(pattern) > len(best[0])):
            best = (pattern, value)
    return (None, None) if best is None else (best[1], best[0])


class AgentGatewayMiddleware:
    """Verify, then call the wrapped app with the identity in the environ (or refuse)."""

    def __init__(
        self,
        app: WsgiApp,
        verifier: Verifier,
        routes: RouteScopes,
        public: Iterable[str] = (),
        max_body: int = MAX_BODY,
        profiles: RouteProfiles | None = None,
        *,
        client_certs: ClientCertSource | None = None,
        require_tls_client_cert: RouteFlag = False,
        attested: Mapping[str, Attested] | None = None,
    ) -> None:
        self.app = app
        self.attested = attested
        self.verifier = verifier
        self.routes = routes
        self.profiles = profiles
        self.public = frozenset(public)
        self.max_body = max_body
        self.client_certs = client_certs or ClientCertSource()
        self.require_tls_client_cert = require_tls_client_cert

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in self.public:
            return self.app(environ, start_response)
        problem = path_problem(environ)
        if problem is not None:
            return self._refuse(environ, Decision(False, denial=Denied(Check.PATH, problem)),
                                request_view(environ, b""), start_response)  # fmt: skip
        body = read_body(environ, self.max_body)
        if body is None:
            denied = Denied(Check.MALFORMED, f"body missing length or over {self.max_body} bytes")
            return self._refuse(environ, Decision(False, denial=denied),
                                request_view(environ, b""), start_response)  # fmt: skip
        req = request_view(environ, body)
        scope, route = route_match(self.routes, req.method, path)
        flag = self.require_tls_client_cert
        require_tls = flag(req.method, path) if callable(flag) else flag
        tls: TlsClientCert | None = None
        if require_tls:
            try:
                tls = self.client_certs.from_environ(environ)
            except Denied as denied:
                return self._refuse(environ, Decision(False, denial=denied, scope=scope),
                                    req, start_response, route)  # fmt: skip
        accepted = None if self.profiles is None else route_value(self.profiles, req.method, path)
        attested = None if self.attested is None else route_value(self.attested, req.method, path)
        decision = self.verifier.evaluate(
            req,
            scope,
            accepted,
            tls_client_cert=tls,
            require_tls_client_cert=require_tls,
            # an empty set of attestors accepts none (as the verifier), never "none required"
            require_attestation=False if attested is None else attested,
        )
        if not decision.allowed:
            return self._refuse(environ, decision, req, start_response, route)
        environ[ENVIRON_DECISION] = decision
        environ[ENVIRON_KEY] = decision.identity
        logged = False

        def logging_start_response(status: str, *args: Any) -> Any:
            nonlocal logged
            if not logged:
                logged = True
                self.verifier.log(decision, req, _status_code(status), route)
            return start_response(status, *args)

        try:
            return self.app(environ, logging_start_response)
        except BaseException:
            if not logged:
                logged = True
                self.verifier.log(decision, req, 500, route)
            raise

    def _refuse(
        self,
        environ: dict[str, Any],
        decision: Decision,
        req: RequestView,
        start_response: StartResponse,
        route: str | None = None,
    ) -> list[bytes]:
        assert decision.denial is not None
        environ[ENVIRON_DECISION] = decision
        self.verifier.log(decision, req, decision.http_status, route)
        return problem_response(decision.denial, start_response, decision.http_status)


def _status_code(status: str) -> int | None:
    try:
        return int(status.split(" ", 1)[0])
    except ValueError:
        return None
