"""Who may see and do what in the console: the session cookie, CSRF tokens and roles.

Every view is wrapped by :func:`page` (reads) or :func:`action` (POSTs). ``page`` loads the
session named by the cookie (or redirects to sign-in, keeping a local ``next`` path) and
checks the role; ``action`` also requires the session's CSRF token in the form, compared in
constant time. Roles are the API's (ca/api/auth.py): operators act, auditors read the
ledgers, read-only tokens read the rest and are answered 403 on any action.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import quote

from flask import current_app, g, redirect, request
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as WerkzeugResponse

from ca.api.auth import READERS, WRITERS, client_key
from ca.api.state import runtime
from ca.console.sessions import ConsoleSessions, ConsoleUser, SessionEnded
from ca.errors import CAError, ErrorCode
from ca.roles import Role

F = TypeVar("F", bound=Callable[..., Any])
COOKIE = "agentca_console"
SIGNIN_COOKIE = "agentca_console_signin"  # double-submit token of the sign-in form
PATH = "/console"
AUDIT_READERS = frozenset({Role.OPERATOR, Role.AUDITOR})
_LOCAL = re.compile(r"/console(/[A-Za-z0-9._~/?=&%+-]*)?")  # fullmatch: no "$" before "\n"


def store() -> ConsoleSessions:
    """The session store of this process (built on first use from the runtime)."""
    found: ConsoleSessions | None = current_app.extensions.get("agentca.console_sessions")
    if found is None:
        rt = runtime()
        found = ConsoleSessions(
            rt.sessions,
            rt.api_tokens,
            rt.authority.clock,
            timedelta(seconds=rt.settings.console_idle_seconds),
            timedelta(seconds=rt.settings.console_session_seconds),
        )
        current_app.extensions["agentca.console_sessions"] = found
    return found


def read_session() -> Session:
    """A session for reads: the read replica's when configured, as the API's lists use."""
    rt = runtime()
    return (rt.read_sessions or rt.sessions)()


def secure_cookies() -> bool:
    """Secure cookies over TLS (as the request or the trusted proxy says) or when set."""
    return bool(request.is_secure or runtime().settings.console_secure_cookie)


def set_cookie(resp: WerkzeugResponse, name: str, value: str, max_age: int | None) -> None:
    """A console cookie: HttpOnly, SameSite=Strict, Path=/console, Secure over TLS."""
    resp.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        secure=secure_cookies(),
        httponly=True,
        samesite="Strict",
    )


def clear_cookie(resp: WerkzeugResponse, name: str) -> None:
    resp.delete_cookie(name, path=PATH, secure=secure_cookies(), httponly=True, samesite="Strict")


def safe_next(raw: str | None) -> str:
    """``raw`` if it is a local console path, else the dashboard (no open redirect)."""
    if raw and _LOCAL.fullmatch(raw) and "//" not in raw and ".." not in raw:
        return raw
    return PATH + "/"


def user() -> ConsoleUser:
    """The signed-in user of the current request."""
    u: ConsoleUser = g.console_user
    return u


def new_signin_token() -> str:
    return secrets.token_urlsafe(32)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens (absent never matches)."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


#: ``Sec-Fetch-Site`` values of a form this console served (or the user's own navigation)
_OWN_FETCH = frozenset({"same-origin", "none"})


def refuse_foreign_post() -> None:
    """A POST the browser says came from another origin (even a sibling subdomain, which
    could toss cookies) is refused; browsers that send no ``Sec-Fetch-Site`` rely on the
    CSRF token and SameSite alone."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in _OWN_FETCH:
        raise CAError(ErrorCode.FORBIDDEN, f"a form from another site ({site[:16]}) is refused")


def _load(roles: frozenset[Role]) -> WerkzeugResponse | None:
    sid = request.cookies.get(COOKIE, "")
    try:
        g.console_user = store().lookup(sid)
    except SessionEnded as ended:
        if request.method not in ("GET", "HEAD"):  # an action is never replayed after sign-in
            raise CAError(ErrorCode.UNAUTHENTICATED, "your console session has ended") from None
        target = request.full_path if request.query_string else request.path
        resp = redirect(
            f"{PATH}/sign-in?ended={quote(ended.reason)}&next={quote(safe_next(target))}",
            303,
        )
        if sid:
            clear_cookie(resp, COOKIE)
        return resp
    if user().role not in roles:
        raise CAError(
            ErrorCode.FORBIDDEN,
            f"role '{user().role.value}' may not {request.method} {request.path}",
        )
    return None


def page(roles: frozenset[Role] = READERS) -> Callable[[F], F]:
    """Decorator for a read view: a live session whose role is one of ``roles``."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            refused = _load(roles)
            return refused if refused is not None else view(*args, **kwargs)

        wrapper.__dict__["console_roles"] = roles
        return wrapper  # type: ignore[return-value]

    return decorate


def action(roles: frozenset[Role] = WRITERS) -> Callable[[F], F]:
    """Decorator for a POST: a live session, not sent from another site, the session's CSRF
    token in the form (checked before the role, so nothing is learnt without it), and a role
    in ``roles``."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            refused = _load(READERS)
            if refused is not None:
                return refused
            refuse_foreign_post()
            if not same(request.form.get("csrf_token"), user().csrf_token):
                raise CAError(ErrorCode.FORBIDDEN, "the form's CSRF token is missing or wrong")
            if user().role not in roles:
                raise CAError(
                    ErrorCode.FORBIDDEN,
                    f"role '{user().role.value}' may not {request.method} {request.path}",
                )
            return view(*args, **kwargs)

        wrapper.__dict__["console_roles"] = roles
        return wrapper  # type: ignore[return-value]

    return decorate


def client() -> str:
    return client_key()
