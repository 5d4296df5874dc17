"""RFC 9457 problem details for every error the HTTP edge can return."""

from __future__ import annotations

import json
import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from ca.errors import PROBLEM_BASE, CAError, ErrorCode, as_ca_error

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("agentca.api")


def problem_response(error: CAError) -> Response:
    """Serialise ``error`` as ``application/problem+json`` with its HTTP status."""
    body = error.problem(instance=request.path if request else None)
    resp = Response(json.dumps(body), status=error.code.http_status, mimetype=PROBLEM_JSON)
    resp.headers["Cache-Control"] = "no-store"
    retry_after = error.extra.get("retry_after")
    if isinstance(retry_after, int):
        resp.headers["Retry-After"] = str(retry_after)
    if error.code is ErrorCode.UNAUTHENTICATED:  # RFC 9110 section 15.5.2, RFC 6750 section 3
        resp.headers["WWW-Authenticate"] = 'Bearer realm="agentca"'
    return resp


def install_problem_handlers(app: Flask) -> None:
    """Map CAError, HTTP errors and unexpected exceptions to problem+json (never a trace)."""

    @app.errorhandler(CAError)
    def _ca_error(exc: CAError) -> Response:
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
        resp = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
        if status == 405 and exc.get_response().headers.get("Allow"):
            resp.headers["Allow"] = exc.get_response().headers["Allow"]
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        error = as_ca_error(exc)
        if error.code.http_status >= 500:
            log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(error)
