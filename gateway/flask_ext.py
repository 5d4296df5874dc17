"""Flask extension: ``@requires_scope("submit_limit_order")`` on each protected view.

    gateway = AgentGateway(app, verifier)

    @app.post("/orders")
    @requires_scope("submit_limit_order")
    def submit():
        agent = g.agent            # AgentIdentity: name, spiffe_id, scopes, officer, serial...

Every request is verified before its view runs. Views without ``@requires_scope`` are refused
(fail closed) unless marked ``@public``; refusals are ``application/problem+json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, g, request

from gateway.problems import Check, Denied
from gateway.verifier import Verifier
from gateway.wsgi import ACCEPT_SIGNATURE, request_view

F = TypeVar("F", bound=Callable[..., Any])
SCOPE_ATTR = "_agentca_scope"
PUBLIC_ATTR = "_agentca_public"


def requires_scope(scope: str) -> Callable[[F], F]:
    """Require a verified agent holding ``scope`` for this view."""

    def mark(view: F) -> F:
        setattr(view, SCOPE_ATTR, scope)
        return view

    return mark


def public(view: F) -> F:
    """Let this view through without any agent verification (health checks and the like)."""
    setattr(view, PUBLIC_ATTR, True)
    return view


def problem(denied: Denied) -> Response:
    """The problem+json response for a refusal."""
    resp = Response(
        json.dumps(denied.problem()),
        status=denied.check.status,
        mimetype="application/problem+json",
    )
    resp.headers["Cache-Control"] = "no-store"
    if denied.check.status == 401:
        resp.headers["Accept-Signature"] = ACCEPT_SIGNATURE
    return resp


class AgentGateway:
    """Verifies every request of a Flask app; puts the identity in ``flask.g.agent``."""

    def __init__(
        self, app: Flask | None = None, verifier: Verifier | None = None, max_body: int = 1 << 20
    ) -> None:
        self.verifier = verifier
        self.max_body = max_body
        if app is not None:
            self.init_app(app, verifier)

    def init_app(self, app: Flask, verifier: Verifier | None = None) -> None:
        if verifier is not None:
            self.verifier = verifier
        if self.verifier is None:
            raise ValueError("AgentGateway needs a Verifier")
        app.extensions["agentca_gateway"] = self
        app.before_request(self._before)

    def _before(self) -> Response | None:
        view = request.endpoint and request.url_rule and self._view()
        if view is not None and getattr(view, PUBLIC_ATTR, False):
            return None
        scope = getattr(view, SCOPE_ATTR, None) if view is not None else None
        length = request.content_length or 0
        if length > self.max_body:
            return problem(Denied(Check.MALFORMED, f"body over {self.max_body} bytes"))
        body = request.get_data(cache=True)
        req = request_view(request.environ, body)
        assert self.verifier is not None
        decision = self.verifier.decide(req, scope)
        g.agentca_decision = decision
        if decision.allowed and scope is None:
            decision.allowed = False
            decision.denial = Denied(Check.SCOPE, f"no scope is declared for {request.path}")
        if not decision.allowed:
            assert decision.denial is not None
            return problem(decision.denial)
        g.agent = decision.identity
        return None

    @staticmethod
    def _view() -> Any:
        from flask import current_app

        return current_app.view_functions.get(request.endpoint or "")
