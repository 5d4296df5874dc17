"""FastAPI and Starlette: the ASGI gateway, each route's scope declared as a dependency.

    app = FastAPI()
    AgentGateway(app, verifier)
    Trader = Annotated[AgentIdentity, Depends(requires_scope("submit_limit_order"))]

    @app.post("/orders")
    async def submit(order: Order, agent: Trader): ...      # agent.name, agent.spiffe_id...

    @app.post("/admin/halt", dependencies=[Depends(requires_scope("halt_trading"))])
    async def halt(): ...

    @app.get("/health", dependencies=[Depends(public)])
    async def health(): ...

Every request is verified by ``gateway.asgi.AgentGatewayMiddleware`` before the app routes it:
the middleware matches the request against the app's own routes (Starlette's
``Route.matches``, mounts and hosts included) and reads the route's dependencies
(``requires_scope``, ``public``, ``accepts_profiles``, ``requires_tls_client_cert``), so a
route without a scope is refused (fail closed) and the endpoint never runs for a refused
request. ``requires_scope(...)`` also returns the verified identity (``request.state.agent``).
Plain Starlette apps declare scopes with ``routes={"POST /orders": "..."}`` instead (the same
map ``gateway.wsgi`` takes). Only Starlette is imported here: FastAPI brings pydantic, which
the gateway package must not import.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Host, Match, Mount

from gateway.asgi import (
    BODY_TIMEOUT,
    STATE_DECISION,
    AgentGatewayMiddleware,
    RouteRule,
    Scope,
    problem_parts,
)
from gateway.chain import AgentIdentity
from gateway.client_cert import ClientCertSource
from gateway.problems import Check, Denied
from gateway.verifier import Decision, Verifier
from gateway.wsgi import MAX_BODY, RouteScopes


class Refusal(Exception):
    """Raised by a dependency that finds the request not verified for it (a problem+json
    answer, through the handler :class:`AgentGateway` installs)."""

    def __init__(self, denied: Denied) -> None:
        super().__init__(str(denied))
        self.denied = denied


@dataclass(frozen=True)
class ScopeRequirement:
    """The dependency :func:`requires_scope` returns; resolves to the verified identity.
    (The dependencies here are coroutines so that FastAPI runs them on the event loop, not
    in its thread pool.)"""

    scope: str

    async def __call__(self, request: Request) -> AgentIdentity:
        decision: Decision | None = request.scope.get("state", {}).get(STATE_DECISION)
        if decision is None or not decision.allowed or decision.identity is None:
            raise Refusal(Denied(Check.ERROR, "the agentca gateway did not verify this request"))
        if decision.scope != self.scope:  # e.g. two scopes on one route: never one unchecked
            raise Refusal(
                Denied(
                    Check.SCOPE,
                    f"this route was verified for {decision.scope!r}, not {self.scope!r}",
                )
            )
        return decision.identity


@dataclass(frozen=True)
class ProfileRequirement:
    """The dependency :func:`accepts_profiles` returns (a marker for the middleware)."""

    profiles: tuple[str, ...]

    async def __call__(self) -> None:
        return None


def requires_scope(scope: str) -> ScopeRequirement:
    """``Depends(requires_scope("submit_limit_order"))``: the route needs a verified agent
    holding ``scope``; the dependency's value is its :class:`AgentIdentity`."""
    return ScopeRequirement(scope)


def accepts_profiles(*profiles: str) -> ProfileRequirement:
    """``Depends(accepts_profiles("wimse"))``: the signature profiles this route accepts."""
    return ProfileRequirement(tuple(profiles))


async def public() -> None:
    """``Depends(public)``: let this route through without verification (health checks)."""


async def requires_tls_client_cert() -> None:
    """``Depends(requires_tls_client_cert)``: also require the signing certificate in
    mutual TLS on this route (docs/mtls.md)."""


def match_route(routes: Sequence[BaseRoute], scope: Scope) -> BaseRoute | None:
    """The route Starlette's router would run for ``scope`` (None: no full match)."""
    found = match_route_template(routes, scope)
    return None if found is None else found[0]


def match_route_template(
    routes: Sequence[BaseRoute], scope: Scope, prefix: str = ""
) -> tuple[BaseRoute, str] | None:
    """:func:`match_route` and its path template, mounts' paths included."""
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            path = prefix + str(getattr(route, "path", ""))
            if isinstance(route, Mount | Host):
                inner = prefix if isinstance(route, Host) else path
                return match_route_template(route.routes, {**scope, **child}, inner)
            return route, path
    return None


def route_rule(route: BaseRoute, template: str | None = None) -> RouteRule | None:
    """What ``route``'s dependencies declare (None: nothing, defer to the ``routes`` map);
    ``template``: its path template (``/orders/{id}``, with its mounts'), for the record."""
    scopes: set[str] = set()
    profiles: tuple[str, ...] | None = None
    is_public = tls = False
    pending = [getattr(route, "dependant", None)]
    while pending:
        dependant = pending.pop()
        if dependant is None:
            continue
        call = getattr(dependant, "call", None)
        if isinstance(call, ScopeRequirement):
            scopes.add(call.scope)
        elif isinstance(call, ProfileRequirement):
            profiles = call.profiles
        elif call is public:
            is_public = True
        elif call is requires_tls_client_cert:
            tls = True
        pending.extend(getattr(dependant, "dependencies", ()))
    if not (scopes or profiles or is_public or tls):
        return None if template is None else RouteRule(route=template)
    # two different scopes on one route: verify for one, ScopeRequirement refuses the other
    scope = min(scopes) if scopes else None
    return RouteRule(scope, is_public, profiles, tls, template)


class RouterRules:
    """``rules`` for :class:`~gateway.asgi.AgentGatewayMiddleware` from an app's routes."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self._rules: dict[int, tuple[BaseRoute, RouteRule | None]] = {}

    def __call__(self, scope: Scope) -> RouteRule | None:
        found = match_route_template(self.app.router.routes, scope)
        if found is None:
            return None
        route, template = found
        cached = self._rules.get(id(route))
        if cached is None or cached[0] is not route:
            cached = (route, route_rule(route, template))
            self._rules[id(route)] = cached
        return cached[1]


def _refusal_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    status, headers, body = problem_parts(exc.denied)
    return Response(body, status, headers=dict(headers))


class AgentGateway:
    """Verifies every request of a Starlette or FastAPI app (see the module docstring)."""

    def __init__(
        self,
        app: Starlette,
        verifier: Verifier,
        *,
        routes: RouteScopes | None = None,
        public: Iterable[str] = (),
        max_body: int = MAX_BODY,
        body_timeout: float = BODY_TIMEOUT,
        client_certs: ClientCertSource | None = None,
        require_tls_client_cert: bool = False,
        verify_in_thread: bool = False,
    ) -> None:
        self.verifier = verifier
        options: dict[str, Any] = {
            "verifier": verifier,
            "routes": routes,
            "public": tuple(public),
            "max_body": max_body,
            "rules": RouterRules(app),
            "body_timeout": body_timeout,
            "client_certs": client_certs,
            "require_tls_client_cert": require_tls_client_cert,
            "verify_in_thread": verify_in_thread,
        }
        app.add_middleware(AgentGatewayMiddleware, **options)
        app.add_exception_handler(Refusal, _refusal_response)
        app.state.agentca_gateway = self
