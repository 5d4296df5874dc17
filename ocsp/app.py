"""The OCSP HTTP app: RFC 6960 appendix A (POST and GET) with RFC 5019 cache headers.

``create_app(settings)`` returns a Flask app. OCSP requests themselves are answered by a lean
WSGI layer in front of Flask (``OcspWsgi``): a profile showed Flask's request context and
routing costing more than the whole cached answer, so the hot path is a body read, one dict
lookup keyed by the raw request bytes and a header list. Flask serves ``/health`` and turns
any other URL or method into a short text answer. Every OCSP-level outcome is HTTP 200
``application/ocsp-response``; error answers carry ``Cache-Control: no-store``.

The responder (database engine, HSM session) is created lazily in each worker process, i.e.
after gunicorn has forked, as the PKCS#11 library requires.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, abort, g, jsonify, request
from werkzeug.exceptions import HTTPException

from ca.config import Settings
from ca.logs import REQUEST_ID_HEADER, current_request_id, request_id
from ca.metrics import CONTENT_TYPE as METRICS_TYPE
from ca.metrics import may_scrape, parse_networks
from ocsp.options import OcspOptions
from ocsp.responder import ERROR_ANSWERS, MALFORMED_ANSWER, Answer, Responder
from ocsp.response import ResponseStatus
from ocsp.tally import ANSWERS, NONE

log = logging.getLogger("agentca.ocsp")

OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
POST_PATHS = frozenset({"/ocsp", "/ocsp/", "/"})
FLASK_PATHS = frozenset({"/health", "/ready", "/metrics"})
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
AnswerFor = Callable[[bytes, dict[str, Any]], Answer | None]


class LazyResponder:
    """Creates this process's responder on first use; a failed attempt is retried later."""

    def __init__(self, factory: Callable[[], Responder]) -> None:
        self._factory = factory
        self._responder: Responder | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> Responder:
        responder = self._responder
        if responder is not None and self._pid == os.getpid():
            return responder
        with self._lock:
            if self._responder is None or self._pid != os.getpid():
                self._responder = self._factory()
                self._pid = os.getpid()
            return self._responder

    def peek(self) -> Responder | None:
        """This process's responder if it is open, else None (never opens it: no I/O)."""
        responder = self._responder
        return responder if responder is not None and self._pid == os.getpid() else None


def _decode_get(path: str) -> bytes | None:
    """The DER request inside a GET path (standard or URL-safe base64), None if invalid."""
    text = path.removeprefix("/ocsp/") if path.startswith("/ocsp/") else path[1:]
    text = text.strip().replace("-", "+").replace("_", "/")
    if not text or len(text) > 16 * 1024:
        return None
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class OcspWsgi:
    """WSGI middleware answering OCSP POST/GET; everything else goes to the Flask app."""

    def __init__(self, inner: WsgiApp, responders: LazyResponder, options: OcspOptions) -> None:
        self.inner = inner
        self.responders = responders
        self.max_body = options.max_request_bytes
        self.shared_cache_seconds = options.shared_cache_seconds

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")
        result: Iterable[bytes] | None = None
        try:
            if method == "POST" and path in POST_PATHS:
                result = self._post(environ, start_response, self._respond)
            elif method == "GET" and path not in FLASK_PATHS:
                result = self._get(environ, path, start_response, self._respond)
            else:
                return self.inner(environ, start_response)
        except Exception:
            log.exception("internal error in the OCSP HTTP layer")
        if result is None:  # an exception (``_respond`` itself always answers)
            return self._refuse(start_response, ERROR_ANSWERS[ResponseStatus.INTERNAL_ERROR])
        return result

    def inline(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes] | None:
        """The answer if it needs no I/O (a refused request, an answer in the hot cache), else
        None: then call the app itself, on the thread that owns the responder, with a fresh
        ``wsgi.input`` (decision 0044). Safe on the event loop while that thread works."""
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")
        try:
            if method == "POST" and path in POST_PATHS:
                return self._post(environ, start_response, self._cached)
            if method == "GET" and path not in FLASK_PATHS:
                return self._get(environ, path, start_response, self._cached)
        except Exception:
            log.exception("internal error in the OCSP HTTP layer (inline)")
        return None

    def busy(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes] | None:
        """``tryLater`` for an OCSP request the worker has no room to queue; None for other
        URLs (the worker answers 503)."""
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")
        if (method == "POST" and path in POST_PATHS) or (
            method == "GET" and path not in FLASK_PATHS
        ):
            return self._refuse(start_response, ERROR_ANSWERS[ResponseStatus.TRY_LATER])
        return None

    def tick(self) -> None:
        """The responder thread's timer: poll the status feed when due (never raises; opens
        nothing before the first request has)."""
        responder = self.responders.peek()
        if responder is not None:
            try:
                responder.poll_if_due()
            except Exception:
                log.exception("OCSP feed poll failed")

    def prefetch(self, environs: list[dict[str, Any]]) -> None:
        """Before the responder thread answers several queued requests: read their stored
        answers in one query (``Responder.prefetch``). Leaves every ``wsgi.input`` unread."""
        responder = self.responders.peek()
        if responder is None or len(environs) < 2:
            return
        ders = []
        for environ in environs:
            method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
            if method == "POST" and path in POST_PATHS:
                stream = environ.get("wsgi.input")
                body = stream.getvalue() if isinstance(stream, io.BytesIO) else None
                if body:
                    ders.append(body)
            elif method == "GET" and path not in FLASK_PATHS:
                der = _decode_get(path)
                if der is not None:
                    ders.append(der)
        responder.prefetch(ders)

    def _cached(self, der: bytes, environ: dict[str, Any]) -> Answer | None:
        responder = self.responders.peek()
        return responder.cached(der) if responder is not None else None

    def _respond(self, der: bytes, environ: dict[str, Any]) -> Answer:
        try:
            responder = self.responders.get()
        except Exception:
            log.exception("the OCSP responder cannot start")
            answer = ERROR_ANSWERS[ResponseStatus.TRY_LATER]
            ANSWERS.add(answer.label, NONE)
            return answer
        return responder.respond(der, environ.get("REMOTE_ADDR") or "")

    def _post(
        self, environ: dict[str, Any], start_response: StartResponse, answer_for: AnswerFor
    ) -> Iterable[bytes] | None:
        ctype = environ.get("CONTENT_TYPE", "")
        if ctype != OCSP_REQUEST and ctype.split(";", 1)[0].strip().lower() != OCSP_REQUEST:
            return self._refuse(start_response, MALFORMED_ANSWER)
        length_text = environ.get("CONTENT_LENGTH") or ""
        stream = environ["wsgi.input"]
        if length_text:
            try:
                length = int(length_text)
            except ValueError:
                return self._refuse(start_response, MALFORMED_ANSWER)
            if length <= 0 or length > self.max_body:
                return self._refuse(start_response, MALFORMED_ANSWER)
            body = stream.read(length)
        else:
            body = stream.read(self.max_body + 1)
            if len(body) > self.max_body:
                return self._refuse(start_response, MALFORMED_ANSWER)
        answer = answer_for(body, environ)
        return None if answer is None else self._send(start_response, answer)

    def _get(
        self,
        environ: dict[str, Any],
        path: str,
        start_response: StartResponse,
        answer_for: AnswerFor,
    ) -> Iterable[bytes] | None:
        der = _decode_get(path)
        if der is None:
            return self._refuse(start_response, MALFORMED_ANSWER)
        answer = answer_for(der, environ)
        if answer is None:
            return None
        if answer.status is not ResponseStatus.SUCCESSFUL:
            return self._send(start_response, answer)
        max_age = max(0, int(answer.next_update_ts - self.responders.get().clock()))
        headers = [
            ("Content-Type", OCSP_RESPONSE),
            (
                "Cache-Control",
                f"max-age={max_age}, s-maxage={min(max_age, self.shared_cache_seconds)}, "
                "public, no-transform, must-revalidate",
            ),
            ("Last-Modified", answer.last_modified),
            ("Expires", answer.expires),
            ("ETag", answer.etag),
            ("X-Agentca-Worker", str(os.getpid())),
        ]
        match = environ.get("HTTP_IF_NONE_MATCH")
        if match and (match.strip() == "*" or answer.etag in match):
            start_response("304 Not Modified", headers)
            return [b""]
        headers.append(("Content-Length", str(len(answer.der))))
        start_response("200 OK", headers)
        return [answer.der]

    @classmethod
    def _refuse(cls, start_response: StartResponse, answer: Answer) -> Iterable[bytes]:
        """Send an error answer the responder never saw, counted in the answer tally."""
        ANSWERS.add(answer.label, NONE)
        return cls._send(start_response, answer)

    @staticmethod
    def _send(start_response: StartResponse, answer: Answer) -> Iterable[bytes]:
        headers = [
            ("Content-Type", OCSP_RESPONSE),
            ("Content-Length", str(len(answer.der))),
            ("X-Agentca-Worker", str(os.getpid())),
        ]
        if answer.status is not ResponseStatus.SUCCESSFUL:
            headers.append(("Cache-Control", "no-store"))
        start_response("200 OK", headers)
        return [answer.der]


def _flush_answers() -> None:
    from ocsp.metrics import flush

    flush()


def create_app(
    settings: Settings,
    options: OcspOptions | None = None,
    responder_factory: Callable[[], Responder] | None = None,
) -> Flask:
    """The OCSP responder app for ``settings`` (the responder opens lazily per process)."""
    opts = options or OcspOptions()
    if responder_factory is None:

        def responder_factory() -> Responder:
            from ocsp.metrics import instrument
            from ocsp.wiring import open_responder

            rt = open_responder(settings, opts)
            app.extensions["agentca_ocsp_runtime"] = rt  # for /ready: key store and clock
            instrument(rt)
            return rt.responder

    app = Flask("agentca.ocsp")
    responders = LazyResponder(responder_factory)
    app.extensions["agentca_ocsp"] = responders
    app.extensions["agentca_ocsp_flush"] = _flush_answers  # the worker calls it every second
    networks = parse_networks(settings.metrics_networks)
    ocsp_wsgi = OcspWsgi(app.wsgi_app, responders, opts)
    app.wsgi_app = ocsp_wsgi  # type: ignore[method-assign]
    # ocsp.worker answers these on its event loop and calls the app on its responder thread
    app.extensions["agentca_ocsp_inline"] = ocsp_wsgi.inline
    app.extensions["agentca_ocsp_busy"] = ocsp_wsgi.busy
    app.extensions["agentca_ocsp_tick"] = ocsp_wsgi.tick
    app.extensions["agentca_ocsp_prefetch"] = ocsp_wsgi.prefetch

    @app.get("/health")
    def health() -> tuple[Response, int]:
        """200 once this worker can answer (issuers known); reports the database state."""
        try:
            responder = responders.get()
            responder.poll()
            ready, db_ok = responder.ready, responder.database_ok
        except Exception:
            log.exception("OCSP health check failed")
            ready = db_ok = False
        body = jsonify(
            status="ok" if ready else "unavailable",
            database="ok" if db_ok else "unreachable",
            worker=os.getpid(),
        )
        body.headers["Cache-Control"] = "no-store"
        return body, 200 if ready else 503

    @app.get("/ready")
    def ready() -> tuple[Response, int]:
        """Readiness: the database, the HSM and the clock (see ``ocsp.readiness``)."""
        from ocsp.readiness import readiness_report

        body, ok = readiness_report(responders, app.extensions.get("agentca_ocsp_runtime"))
        resp = jsonify(worker=os.getpid(), **body)
        resp.headers["Cache-Control"] = "no-store"
        return resp, 200 if ok else 503

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus metrics, for clients in ``metrics_networks`` only (404 for others)."""
        if not may_scrape(request.remote_addr, networks):
            abort(404)
        from ocsp.metrics import exposition

        try:
            responder: Responder | None = responders.get()
        except Exception:
            log.exception("the OCSP responder cannot start")
            responder = None
        resp = Response(exposition(responder), mimetype=None)
        resp.headers["Content-Type"] = METRICS_TYPE
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.before_request
    def _request_id() -> None:
        g.request_id = request_id(request.headers.get(REQUEST_ID_HEADER))
        g.rid_token = current_request_id.set(g.request_id)

    @app.after_request
    def _echo_request_id(resp: Response) -> Response:
        if "request_id" in g:
            resp.headers[REQUEST_ID_HEADER] = g.request_id
        return resp

    @app.teardown_request
    def _forget_request_id(_exc: BaseException | None) -> None:
        token = g.pop("rid_token", None)
        if token is not None:
            current_request_id.reset(token)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        text = f"{exc.code} {exc.name}\n"
        return Response(text, status=exc.code or 500, mimetype="text/plain")

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.exception("internal error", exc_info=exc)
        return Response("500 Internal Server Error\n", status=500, mimetype="text/plain")

    return app
