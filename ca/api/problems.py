"""RFC 9457 problem details for every error the HTTP edge can return."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Final

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from ca.api.statuses import http_status
from ca.errors import CAError, ErrorCode, as_ca_error

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE: Final = "https://agentca.dev/problems/"
log = logging.getLogger("agentca.api")


class ExpectedFailureLog:
    """One line per expected 5xx (database or HSM unavailable, storage full), at most one a
    second per code; the lines a flood suppressed are counted on the next one.

    A PostgreSQL outage produced a full traceback per 503 (5,277 for 5,367 answers, issue 10
    item 8). Only an exception that maps to ``internal`` is unexpected and gets a traceback.
    """

    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[ErrorCode, float] = {}
        self._suppressed: dict[ErrorCode, int] = {}

    def __call__(self, error: CAError, method: str, path: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(error.code)
            if last is not None and now - last < self.interval:
                self._suppressed[error.code] = self._suppressed.get(error.code, 0) + 1
                return
            self._last[error.code] = now
            suppressed = self._suppressed.pop(error.code, 0)
        more = f" (and {suppressed} more in the last {self.interval:g} s)" if suppressed else ""
        self.logger.warning(
            "%d %s on %s %s: %s%s",
            http_status(error),
            error.code.slug,
            method,
            path,
            error.detail,
            more,
        )


def type_uri(code: ErrorCode) -> str:
    """The RFC 9457 ``type`` of an error code, e.g. ``https://agentca.dev/problems/conflict``."""
    return PROBLEM_BASE + code.slug


def problem_body(error: CAError, instance: str | None = None) -> dict[str, Any]:
    """The RFC 9457 problem details object for ``error`` (its ``extra`` members included)."""
    body: dict[str, Any] = {
        "type": type_uri(error.code),
        "title": error.title,
        "status": http_status(error),
        "detail": error.detail,
    }
    if instance:
        body["instance"] = instance
    body.update(error.extra)
    return body


def problem_response(error: CAError) -> Response:
    """Serialise ``error`` as ``application/problem+json`` with its HTTP status."""
    body = problem_body(error, instance=request.path if request else None)
    rid = g.get("request_id") if request else None
    if rid:
        body["request_id"] = rid
    resp = Response(json.dumps(body), status=http_status(error), mimetype=PROBLEM_JSON)
    resp.headers["Cache-Control"] = "no-store"
    retry_after = error.extra.get("retry_after")
    if isinstance(retry_after, int):
        resp.headers["Retry-After"] = str(retry_after)
    elif resp.status_code == 503:
        # every 503 is temporary here (HSM, database, clock): say when to try again even if
        # the failure gave no time (e.g. a key read as missing while the token is away)
        resp.headers["Retry-After"] = "1"
    if error.code is ErrorCode.UNAUTHENTICATED:  # RFC 9110 section 15.5.2, RFC 6750 section 3
        resp.headers["WWW-Authenticate"] = 'Bearer realm="agentca"'
    return resp


def install_problem_handlers(app: Flask) -> None:
    """Map CAError, HTTP errors and unexpected exceptions to problem+json (never a trace in
    the answer). Expected 5xx log one rate-limited line; only ``internal`` logs a traceback."""
    expected = ExpectedFailureLog(log)

    def _report(error: CAError, exc: BaseException) -> None:
        g.agentca_error_code = error.code.slug  # the issuance metric's outcome label
        if error.code is ErrorCode.INTERNAL:
            log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        elif http_status(error) >= 500:
            expected(error, request.method, request.path)

    @app.errorhandler(CAError)
    def _ca_error(exc: CAError) -> Response:
        _report(exc, exc)
        return problem_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        slug = (exc.name or "error").lower().replace(" ", "-")
        body = {
            "type": PROBLEM_BASE + slug,
            "title": exc.name,
            "status": status,
            "detail": exc.description,
            "instance": request.path,
        }
        rid = g.get("request_id")
        if rid:
            body["request_id"] = rid
        resp = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
        if status == 405 and exc.get_response().headers.get("Allow"):
            resp.headers["Allow"] = exc.get_response().headers["Allow"]
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        error = as_ca_error(exc)
        _report(error, exc)
        return problem_response(error)
