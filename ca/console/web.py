"""The console blueprint: rendering, response headers, error pages, sign-in and sign-out."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from flask import Blueprint, Response, current_app, g, redirect, render_template, request
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.wrappers import Response as WerkzeugResponse

from ca.api.auth import FAILURES_KEY, READERS
from ca.api.ratelimit import TokenBucket
from ca.api.statuses import http_status
from ca.console import guard
from ca.console.sessions import SessionEnded
from ca.errors import CAError, ErrorCode, as_ca_error
from ca.roles import Role

log = logging.getLogger("agentca.console")
console = Blueprint(
    "console",
    __name__,
    url_prefix=guard.PATH,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

#: the console's pages load nothing but their own stylesheet, and are never framed
CSP = (
    "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SIGNIN_MAX_AGE = 600  # seconds the sign-in form's double-submit cookie lives


def render(template: str, status: int = 200, **context: Any) -> Response:
    """A page, with the signed-in user (if any) and what their role may do."""
    u = getattr(g, "console_user", None)
    role = u.role if u is not None else None
    context.setdefault("title", "agentca")
    body = render_template(
        template,
        user=u,
        csrf_token=u.csrf_token if u is not None else "",
        can_act=role is Role.OPERATOR,
        can_audit=role in guard.AUDIT_READERS,
        **context,
    )
    return Response(body, status, mimetype="text/html")


def visible(value: object, limit: int | None = None) -> str:
    """``value`` as text with every non-printable character (controls, bidirectional
    overrides, zero-width and other format characters, unassigned code points) written as
    ``\\uXXXX``; cut to ``limit`` characters (with an ellipsis) when given."""
    text = "" if value is None else str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _escaped(c: str) -> str:
    n = ord(c)
    return f"\\u{n:04x}" if n <= 0xFFFF else f"\\U{n:08x}"


console.add_app_template_filter(visible, "visible")


@console.after_request
def _headers(resp: Response) -> Response:
    """No framing, nothing from elsewhere, never cached (pages may show secrets once)."""
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Frame-Options"] = "DENY"
    if not request.path.startswith(guard.PATH + "/static/"):
        resp.headers["Cache-Control"] = "no-store"
    return resp


@console.before_request
def _refuse_nul_in_form() -> None:
    if request.method == "POST":
        for key, value in request.form.items(multi=True):
            if "\x00" in key or "\x00" in value:
                raise CAError(ErrorCode.BAD_REQUEST, "form fields must not contain NUL")


@console.errorhandler(CAError)
def _ca_error(exc: CAError) -> Response:
    status = http_status(exc)
    resp = render("error.html", status, title="Refused", error=exc.detail, code=exc.code.slug)
    retry = exc.extra.get("retry_after")
    if isinstance(retry, int):
        resp.headers["Retry-After"] = str(retry)
    return resp


@console.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    return render("error.html", status, title=exc.name, error=exc.description, code=str(status))


@console.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    error = as_ca_error(exc)  # a database outage is named as such; nothing else leaks
    if error.code is ErrorCode.INTERNAL:
        log.error("console error on %s %s", request.method, request.path, exc_info=exc)
    return _ca_error(error)


@console.route("/<path:rest>", methods=["GET", "POST"])
def _unknown(rest: str) -> Response:
    raise NotFound("no such console page")


# -- sign-in and sign-out ---------------------------------------------------------------------
_ENDED = {
    "signed-out": "You are signed out.",
    "idle-timeout": "Your session ended after a period of inactivity. Sign in again.",
    "session-expired": "Your session reached its maximum lifetime. Sign in again.",
    "token-revoked": "The API token of your session was revoked.",
    "token-expired": "The API token of your session has expired.",
}


@console.get("/sign-in")
def sign_in_form() -> Response:
    """The sign-in form, with a fresh double-submit token against login CSRF."""
    token = guard.new_signin_token()
    ended = _ENDED.get(request.args.get("ended", ""))
    resp = render(
        "sign_in.html",
        title="Sign in",
        signin_token=token,
        next=guard.safe_next(request.args.get("next")),
        notice=ended,
    )
    guard.set_cookie(resp, guard.SIGNIN_COOKIE, token, SIGNIN_MAX_AGE)
    return resp


@console.post("/sign-in")
def sign_in() -> WerkzeugResponse:
    """Exchange an API token for a new session (a new id every time: no fixation)."""
    guard.refuse_foreign_post()
    if not guard.same(request.form.get("signin_token"), request.cookies.get(guard.SIGNIN_COOKIE)):
        raise CAError(
            ErrorCode.FORBIDDEN, "the sign-in form expired or was not sent by this console"
        )
    bucket: TokenBucket | None = current_app.extensions.get(FAILURES_KEY)
    key = guard.client()
    if bucket is not None and bucket.peek(key) > 0:
        raise CAError(
            ErrorCode.RATE_LIMITED, "too many failed sign-ins; wait and retry", retry_after=5
        )
    token = request.form.get("token", "").strip()
    try:
        sid, _ = guard.store().sign_in(token, key)
    except CAError as exc:
        if bucket is not None and exc.code is ErrorCode.UNAUTHENTICATED:
            bucket.take(key)
        raise
    old = request.cookies.get(guard.COOKIE)
    if old:
        with contextlib.suppress(SessionEnded):  # the session this one replaces
            guard.store().sign_out(guard.store().lookup(old))
    resp = redirect(guard.safe_next(request.form.get("next")), 303)
    guard.set_cookie(resp, guard.COOKIE, sid, None)
    guard.clear_cookie(resp, guard.SIGNIN_COOKIE)
    return resp


@console.post("/sign-out")
@guard.action(READERS)
def sign_out() -> WerkzeugResponse:
    """End the session (CSRF-checked, so no other site can sign anyone out)."""
    guard.store().sign_out(guard.user())
    resp = redirect(guard.PATH + "/sign-in?ended=signed-out", 303)
    guard.clear_cookie(resp, guard.COOKIE)
    return resp
