"""Flask extension: ``@requires_scope("submit_limit_order")`` on each protected view.

    gateway = AgentGateway(app, verifier)

    @app.post("/orders")
    @requires_scope("submit_limit_order")
    def submit():
        agent = g.agent            # AgentIdentity: name, spiffe_id, scopes, officer, serial...

Every request is verified before its view runs. Views without ``@requires_scope`` are refused
(fail closed) unless marked ``@public``; refusals are ``application/problem+json``. Paths not
in RFC 3986 normal form are refused with 400 ``path-not-normal`` (see ``gateway.wsgi``). The
decision is logged once the response is final (``after_request``), with its real status.
``@requires_tls_client_cert`` (or ``require_tls_client_cert=True`` for every view) also
requires the signing certificate in mutual TLS (docs/mtls.md, ``gateway.client_cert``).
``@accepts_profiles("wimse")`` sets the signature profiles a view accepts (default: the
verifier's; docs/wimse.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from gateway.client_cert import ClientCertSource, TlsClientCert
from gateway.httpsig import RequestView
from gateway.problems import Check, Denied
from gateway.verifier import Decision, Verifier
from gateway.wsgi import ACCEPT_SIGNATURE, path_problem, request_view

F = TypeVar("F", bound=Callable[..., Any])
SCOPE_ATTR = "_agentca_scope"
PUBLIC_ATTR = "_agentca_public"
PROFILES_ATTR = "_agentca_profiles"
ATTESTED_ATTR = "_agentca_attested"
TLS_ATTR = "_agentca_require_tls_client_cert"


def requires_scope(scope: str) -> Callable[[F], F]:
    """Require a verified agent holding ``scope`` for this view."""

    def mark(view: F) -> F:
        setattr(view, SCOPE_ATTR, scope)
        return view

    return mark


def accepts_profiles(*profiles: str) -> Callable[[F], F]:
    """Accept these signature profiles (``"agentca"``, ``"wimse"``) on this view."""

    def mark(view: F) -> F:
        setattr(view, PROFILES_ATTR, tuple(profiles))
        return view

    return mark


def requires_tls_client_cert(view: F) -> F:
    """Also require the signing certificate in mutual TLS for this view (channel binding)."""
    setattr(view, TLS_ATTR, True)
    return view


def requires_attested_provenance(*attestors: str) -> Callable[[F], F]:
    """Deny this view to certificates whose provenance is self-declared (check
    ``provenance-not-attested``); with ``attestors``, only those attestors count."""

    def mark(view: F) -> F:
        setattr(view, ATTESTED_ATTR, frozenset(attestors) if attestors else True)
        return view

    return mark


def public(view: F) -> F:
    """Let this view through without any agent verification (health checks and the like)."""
    setattr(view, PUBLIC_ATTR, True)
    return view


def problem(denied: Denied, status: int | None = None) -> Response:
    """The problem+json response for a refusal (``status``: default ``denied.check.status``)."""
    status = denied.check.status if status is None else status
    resp = Response(
        json.dumps({**denied.problem(), "status": status}),
        status=status,
        mimetype="application/problem+json",
    )
    resp.headers["Cache-Control"] = "no-store"
    if status == 401:
        resp.headers["Accept-Signature"] = ACCEPT_SIGNATURE
    return resp


class AgentGateway:
    """Verifies every request of a Flask app; puts the identity in ``flask.g.agent``."""

    def __init__(
        self,
        app: Flask | None = None,
        verifier: Verifier | None = None,
        max_body: int = 1 << 20,
        *,
        client_certs: ClientCertSource | None = None,
        require_tls_client_cert: bool = False,
    ) -> None:
        self.verifier = verifier
        self.max_body = max_body
        self.client_certs = client_certs or ClientCertSource()
        self.require_tls_client_cert = require_tls_client_cert
        if app is not None:
            self.init_app(app, verifier)

    def init_app(self, app: Flask, verifier: Verifier | None = None) -> None:
        if verifier is not None:
            self.verifier = verifier
        if self.verifier is None:
            raise ValueError("AgentGateway needs a Verifier")
        app.extensions["agentca_gateway"] = self
        app.before_request(self._before)
        app.after_request(self._after)

    def _before(self) -> Response | None:
        view = request.endpoint and request.url_rule and self._view()
        if view is not None and getattr(view, PUBLIC_ATTR, False):
            return None
        scope = getattr(view, SCOPE_ATTR, None) if view is not None else None
        problem_text = path_problem(request.environ)
        if problem_text is not None:
            return self._refuse(Denied(Check.PATH, problem_text), scope)
        too_large = Denied(Check.MALFORMED, f"body over {self.max_body} bytes")
        length = request.content_length
        if length is not None and length > self.max_body:
            return self._refuse(too_large, scope)
        # Bounded also without Content-Length (chunked: werkzeug stops reading at the limit,
        # so read one byte more to tell); the view reads the cached, verified bytes.
        limit = request.max_content_length
        cap = self.max_body + 1
        request.max_content_length = cap if limit is None else min(limit, cap)
        try:
            body = request.get_data(cache=True)
        except RequestEntityTooLarge:
            return self._refuse(too_large, scope)
        if len(body) > self.max_body:
            return self._refuse(too_large, scope)
        req = request_view(request.environ, body)
        assert self.verifier is not None
        require_tls = self.require_tls_client_cert or getattr(view, TLS_ATTR, False)
        tls: TlsClientCert | None = None
        if require_tls:
            try:
                tls = self.client_certs.from_environ(request.environ)
            except Denied as denied:
                return self._refuse(denied, scope)
        profiles = getattr(view, PROFILES_ATTR, None) if view is not None else None
        attested = getattr(view, ATTESTED_ATTR, False) if view is not None else False
        decision = self.verifier.evaluate(
            req,
            scope,
            profiles,
            tls_client_cert=tls,
            require_tls_client_cert=require_tls,
            require_attestation=attested,
        )
        g.agentca_decision = decision
        g.agentca_request = req
        if not decision.allowed:
            assert decision.denial is not None
            return problem(decision.denial, decision.http_status)
        g.agent = decision.identity
        return None

    def _refuse(self, denied: Denied, scope: str | None) -> Response:
        g.agentca_decision = Decision(False, denial=denied, scope=scope)
        g.agentca_request = request_view(request.environ, b"")
        return problem(denied)

    def _after(self, response: Response) -> Response:
        decision: Decision | None = g.get("agentca_decision")
        req: RequestView | None = g.get("agentca_request")
        if decision is not None and req is not None and not g.get("agentca_logged"):
            g.agentca_logged = True
            assert self.verifier is not None
            rule = request.url_rule  # the route template (``/orders/<int:id>``), never the path
            route = None if rule is None else rule.rule
            self.verifier.log(decision, req, response.status_code, route)
        return response

    @staticmethod
    def _view() -> Any:
        from flask import current_app

        return current_app.view_functions.get(request.endpoint or "")
