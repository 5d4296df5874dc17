"""Authentication and authorisation at the HTTP edge (bearer tokens, checked every request)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request

from ca.api.ratelimit import TokenBucket
from ca.api.state import runtime
from ca.apitokens import ApiPrincipal, Role
from ca.errors import CAError, ErrorCode

F = TypeVar("F", bound=Callable[..., Any])
READERS = frozenset({Role.OPERATOR, Role.AUDITOR, Role.READ_ONLY})
WRITERS = frozenset({Role.OPERATOR})
ISSUERS = frozenset({Role.OPERATOR, Role.ISSUER_VERBATIM})  # POST /v1/certificates only


# RFC 6750 section 2.1: b64token. Anything else is refused before it reaches the database.
_BEARER = re.compile(r"^Bearer ([A-Za-z0-9._~+/-]+=*)$", re.IGNORECASE)
FAILURES_KEY = "agentca.auth_failures"


def bearer_token() -> str:
    """The bearer token of the current request, or an ``UNAUTHENTICATED`` error.

    Exactly one ``Authorization`` header, scheme ``Bearer`` (any case), one space, a
    b64token; a second header, other schemes, or stray spaces and characters are refused.
    """
    values = request.headers.getlist("Authorization")
    if len(values) > 1:
        raise CAError(ErrorCode.UNAUTHENTICATED, "send exactly one Authorization header")
    m = _BEARER.match(values[0]) if values else None
    if m is None or len(values[0]) > 512:
        raise CAError(ErrorCode.UNAUTHENTICATED, "send 'Authorization: Bearer <token>'")
    return m.group(1)


def client_key() -> str:
    """The client address rate limits are kept per (after ProxyFix, when configured)."""
    return request.remote_addr or "unknown"


def _refuse_when_failing(bucket: TokenBucket | None) -> None:
    """A client that keeps sending bad credentials is slowed down before any lookup."""
    if bucket is None:
        return
    wait = bucket.peek(client_key())
    if wait > 0:
        raise CAError(
            ErrorCode.RATE_LIMITED,
            f"too many failed authentications; retry in {wait:.1f} s",
            retry_after=max(1, math.ceil(wait)),
        )


def authenticate() -> ApiPrincipal:
    """The caller's principal; failed attempts count against the client's allowance."""
    bucket: TokenBucket | None = current_app.extensions.get(FAILURES_KEY)
    _refuse_when_failing(bucket)
    try:
        return runtime().api_tokens.authenticate(bearer_token())
    except CAError as exc:
        if bucket is not None and exc.code is ErrorCode.UNAUTHENTICATED:
            bucket.take(client_key())
        raise


def require(roles: frozenset[Role]) -> Callable[[F], F]:
    """Decorator: the caller's API token must carry one of ``roles``."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = authenticate()
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
