"""Flask application factory for the CA API.

The runtime (database engine, HSM session) is opened lazily on the first request of each
worker, i.e. after gunicorn has forked, as the PKCS#11 library requires.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from flask import Blueprint, Flask, Response, jsonify, request
from sqlalchemy import text
from werkzeug.middleware.proxy_fix import ProxyFix

from ca.api import observability
from ca.api.auth import FAILURES_KEY
from ca.api.problems import install_problem_handlers
from ca.api.ratelimit import TokenBucket
from ca.api.state import LazyRuntime, runtime
from ca.config import Settings
from ca.errors import CAError, ErrorCode
from ca.wiring import Runtime, open_runtime

PEM_CHAIN = "application/pem-certificate-chain"
PKIX_CERT = "application/pkix-cert"


public = Blueprint("public", __name__)


@public.get("/health")
def health() -> Response:
    """Liveness: the process answers and the database does; reports the HSM without failing
    on it (a lost token recovers by itself; restarting would not help). See ``/ready``."""
    rt = runtime()
    with rt.engine.connect() as conn:
        conn.execute(text("select 1"))
    return jsonify(
        status="ok",
        initialised=rt.authority.is_initialised(),
        hsm=rt.keys.status().to_dict()["status"],
    )


@public.get("/ready")
def ready() -> tuple[Response, int]:
    """Readiness: 200 only if the database answers, the HSM answers and the clock agrees with
    the database server's within ``max_clock_skew_seconds``; 503 (and why) otherwise."""
    body, ok = readiness_report(runtime())
    resp = jsonify(body)
    resp.headers["Cache-Control"] = "no-store"
    if not ok:
        resp.headers["Retry-After"] = "1"
    return resp, 200 if ok else 503


def readiness_report(rt: Runtime) -> tuple[dict[str, object], bool]:
    """The readiness body of one CA API process and whether it is ready."""
    try:
        with rt.engine.connect() as conn:
            conn.execute(text("select 1"))
        database: dict[str, object] = {"status": "ok"}
    except Exception as exc:  # reported, never raised: readiness must answer
        database = {"status": "unreachable", "detail": type(exc).__name__}
    hsm = rt.keys.status()
    clock = rt.clock_check
    if clock is not None and clock.due(time.monotonic()):
        clock.refresh()
    bound = rt.settings.max_clock_skew_seconds
    clock_body = clock.reading().to_dict(bound) if clock is not None else {"status": "ok"}
    ok = database["status"] == "ok" and hsm.ok and clock_body["status"] == "ok"
    body: dict[str, object] = {
        "status": "ready" if ok else "not-ready",
        "database": database,
        "hsm": hsm.to_dict(),
        "clock": clock_body,
    }
    return body, ok


@public.get("/ca/chain.pem")
def ca_chain() -> Response:
    """The issuing CA certificate followed by the root, PEM."""
    certs = runtime().authority.chain()
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return _cacheable(Response(pem, mimetype=PEM_CHAIN), 3600)


@public.get("/ca/<name>.der")
@public.get("/ca/<name>.pem")
def ca_certificate(name: str) -> Response:
    """One CA certificate (the caIssuers URL in agent certificates points here)."""
    cert = runtime().authority.issuer(name).certificate
    if request.path.endswith(".pem"):
        return _cacheable(
            Response(
                cert.public_bytes(serialization.Encoding.PEM), mimetype="application/x-pem-file"
            ),
            3600,
        )
    return _cacheable(
        Response(cert.public_bytes(serialization.Encoding.DER), mimetype=PKIX_CERT), 3600
    )


@public.get("/certificates/<serial>")
def certificate(serial: str) -> Response:
    """A certificate by serial: JSON record, or the certificate itself when asked for.

    ``Accept: application/pkix-cert`` gives DER; ``application/x-pem-file`` or ``?format=pem``
    gives PEM; otherwise JSON with the PEM inside.
    """
    record = runtime().read_queries.get(serial)
    cert = record.certificate
    wanted = request.accept_mimetypes.best_match(
        ["application/json", PKIX_CERT, "application/x-pem-file"], default="application/json"
    )
    fmt = request.args.get("format")
    if cert is not None and (fmt == "der" or (fmt is None and wanted == PKIX_CERT)):
        return Response(cert.public_bytes(serialization.Encoding.DER), mimetype=PKIX_CERT)
    if cert is not None and (fmt == "pem" or (fmt is None and wanted == "application/x-pem-file")):
        return Response(
            cert.public_bytes(serialization.Encoding.PEM), mimetype="application/x-pem-file"
        )
    if fmt not in (None, "json", "pem", "der"):
        raise CAError(ErrorCode.BAD_REQUEST, "format must be one of json, pem, der")
    body = record.to_dict()
    body["certificate_pem"] = (
        cert.public_bytes(serialization.Encoding.PEM).decode() if cert is not None else None
    )
    return jsonify(body)


def _cacheable(resp: Response, max_age: int) -> Response:
    resp.headers["Cache-Control"] = f"public, max-age={max_age}"
    return resp


def create_app(settings: Settings, runtime_factory: Callable[[], Runtime] | None = None) -> Flask:
    """Build the CA API for ``settings`` (the runtime opens lazily per process)."""
    # No static folder: Flask's default would serve files from the working directory.
    app = Flask("agentca.ca", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = True  # type: ignore[attr-defined]
    # The runtime this app opens is instrumented (HSM sign times, pool use); one a caller
    # hands in is the caller's to instrument.
    app.extensions["agentca"] = LazyRuntime(
        runtime_factory or (lambda: observability.instrument(open_runtime(settings)))
    )
    app.extensions["agentca.enroll_bucket"] = TokenBucket(
        settings.enroll_rate_per_second, settings.enroll_burst
    )
    app.extensions[FAILURES_KEY] = TokenBucket(
        settings.auth_failure_rate_per_second, settings.auth_failure_burst
    )
    if settings.trusted_proxy_hops > 0:
        # Behind deploy/nginx-ca.conf: the client address rate limits are kept per comes
        # from X-Forwarded-For as the trusted proxies set it, never from the client itself.
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    install_problem_handlers(app)
    observability.install(app, settings)

    @app.after_request
    def _security_headers(resp: Response) -> Response:
        """No sniffing, no framing, no caching of anything a credential unlocked; no CORS
        headers at all, so browsers keep other origins from reading any answer."""
        resp.headers["X-Content-Type-Options"] = "nosniff"
        # the console sets its own (stylesheet from 'self'); everything else loads nothing
        resp.headers.setdefault(
            "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"
        )
        resp.headers["Referrer-Policy"] = "no-referrer"
        if "Authorization" in request.headers and "Cache-Control" not in resp.headers:
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.before_request
    def _refuse_nul_in_query() -> None:
        """NUL bytes are never meaningful in our parameters, and PostgreSQL cannot store them."""
        if "\x00" in request.path:
            raise CAError(ErrorCode.BAD_REQUEST, "the path must not contain NUL")
        for key, value in request.args.items(multi=True):
            if "\x00" in key or "\x00" in value:
                raise CAError(ErrorCode.BAD_REQUEST, "query parameters must not contain NUL")

    from ca.api.action_routes import actions_api
    from ca.api.enroll_routes import enroll
    from ca.api.ledger_routes import ledger_api
    from ca.api.metadata import metadata
    from ca.api.openapi import openapi
    from ca.api.operator_routes import operator
    from ca.api.spiffe_bundle import spiffe_bundle
    from ca.api.wit import wit

    for blueprint in (public, enroll, operator, openapi, ledger_api, spiffe_bundle, wit, metadata):
        app.register_blueprint(blueprint)
    app.register_blueprint(actions_api)
    from ca.api.crl_routes import crl

    app.register_blueprint(crl, publish_dir=settings.effective_crl_publish_dir)
    from ca.console.routes import register_console

    register_console(app)  # the web console under /console (decision 0054)
    return app
