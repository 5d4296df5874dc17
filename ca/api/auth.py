"""Authentication and authorisation at the HTTP edge (bearer tokens, checked every request)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import g, request

from ca.api.state import runtime
from ca.errors import CAError, ErrorCode
from ca.registry import ApiPrincipal, Role

F = TypeVar("F", bound=Callable[..., Any])
READERS = frozenset({Role.OPERATOR, Role.AUDITOR, Role.READ_ONLY})
WRITERS = frozenset({Role.OPERATOR})


def bearer_token() -> str:
    """The bearer token of the current request, or an ``UNAUTHENTICATED`` error."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise CAError(
            ErrorCode.UNAUTHENTICATED,
            "send 'Authorization: Bearer <token>'",
        )
    return token.strip()


def require(roles: frozenset[Role]) -> Callable[[F], F]:
    """Decorator: the caller's API token must carry one of ``roles``."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = runtime().registry.authenticate(bearer_token())
            if principal is None:
                raise CAError(ErrorCode.UNAUTHENTICATED, "unknown or disabled API token")
            if principal.role not in roles:
                raise CAError(
                    ErrorCode.FORBIDDEN,
                    f"role '{principal.role.value}' may not {request.method} {request.path}",
                )
            g.principal = principal
            return view(*args, **kwargs)

        wrapper.__dict__["agentca_roles"] = roles
        return wrapper  # type: ignore[return-value]

    return decorate


def principal() -> ApiPrincipal:
    """The authenticated caller of the current request."""
    p: ApiPrincipal = g.principal
    return p
