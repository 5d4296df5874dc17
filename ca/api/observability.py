"""Request IDs, issuance metrics and ``GET /metrics`` of the CA API (decision 0031).

``/metrics`` answers only clients in ``metrics_networks`` (loopback by default; behind nginx
``trusted_proxy_hops`` makes the client the one nginx saw, and deploy/nginx refuses the path
anyway); anyone else gets the same 404 as an unknown URL.
"""

from __future__ import annotations

import time

from flask import Flask, Response, abort, current_app, g, request

from ca.api.state import runtime
from ca.config import Settings
from ca.logs import REQUEST_ID_HEADER, current_request_id, request_id
from ca.metrics import CONTENT_TYPE as METRICS_TYPE
from ca.metrics import ScrapeGauge, may_scrape, metrics, parse_networks, render, samples
from ca.observed import PublishedState, published_state
from ca.wiring import Runtime

#: the endpoints that issue certificates, by metric label
ISSUING = {
    "enroll.enroll_agent": "enroll",
    "enroll.renew_agent": "renew",
    "operator.issue_certificate": "direct",
}
ERROR_CODE_KEY = "agentca_error_code"  # flask.g: the error code slug of a refused request


def instrument(rt: Runtime) -> Runtime:
    """Report this worker's HSM signatures and pool use (the runtime factory's wrapper)."""
    from ca.metrics import observe_sign, watch_pool
    from hsm.observe import set_sign_observer

    set_sign_observer(observe_sign)
    watch_pool(rt.engine, "primary")
    read = rt.read_sessions.kw.get("bind") if rt.read_sessions is not None else None
    if read is not None and read is not rt.engine:
        watch_pool(read, "read")
    return rt


def published_gauges(state: PublishedState, now: float) -> list[ScrapeGauge]:
    """The scrape-time gauges of ``state`` (CRL age per issuer and kind, ledger)."""
    crl_age: dict[tuple[str, ...], float] = {
        k: max(0.0, now - v) for k, v in state.crl_this_update.items()
    }
    ledger = [
        ScrapeGauge(
            "agentca_ledger_entries",
            "Entries in the audit ledger",
            samples=samples({(): float(state.ledger_entries)}),
        ),
        ScrapeGauge(
            "agentca_ledger_unchecked_entries",
            "Ledger entries not yet covered by a signed checkpoint",
            samples=samples({(): float(state.ledger_entries - (state.checkpoint_size or 0))}),
        ),
    ]
    if state.checkpoint_at is not None:
        ledger.append(
            ScrapeGauge(
                "agentca_ledger_checkpoint_age_seconds",
                "Seconds since the last signed ledger checkpoint (absent: none yet)",
                samples=samples({(): max(0.0, now - state.checkpoint_at)}),
            )
        )
    return [
        ScrapeGauge(
            "agentca_crl_age_seconds",
            "Seconds since thisUpdate of the published CRL, per issuer and kind (full, delta)",
            ("issuer", "kind"),
            samples(crl_age),
        ),
        *ledger,
    ]


def action_gauges(rt: Runtime) -> list[ScrapeGauge]:
    """The action ledger's size, and the gateway checkpoints found inconsistent: anything
    above 0 means a gateway's log and the CA's ledger disagree (decision 0056), alert on it."""
    return [
        ScrapeGauge(
            "agentca_action_records",
            "Gateway decision records in the action ledger",
            samples=samples({(): float(rt.actions.size())}),
        ),
        ScrapeGauge(
            "agentca_gateway_checkpoints_inconsistent",
            "Gateway checkpoints whose root differs from the records the CA holds (alert > 0)",
            samples=samples({(): float(rt.actions.inconsistent_count())}),
        ),
    ]


def _metrics() -> Response:
    settings: Settings = current_app.extensions["agentca.settings"]
    if not may_scrape(request.remote_addr, parse_networks(settings.metrics_networks)):
        abort(404)
    rt = runtime()
    with rt.sessions() as session:
        state = published_state(session, settings.effective_crl_publish_dir)
    gauges = [*published_gauges(state, time.time()), *action_gauges(rt)]
    resp = Response(render(gauges), mimetype=None)
    resp.headers["Content-Type"] = METRICS_TYPE
    resp.headers["Cache-Control"] = "no-store"
    return resp


def install(app: Flask, settings: Settings) -> None:
    """Request IDs on every answer, issuance counts and latency, and ``GET /metrics``."""
    app.extensions["agentca.settings"] = settings
    app.add_url_rule("/metrics", "metrics", _metrics, methods=["GET"])

    @app.before_request
    def _start() -> None:
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
        g.request_id = rid
        g.agentca_started = time.perf_counter()
        g.agentca_rid_token = current_request_id.set(rid)

    @app.after_request
    def _finish(resp: Response) -> Response:
        rid = g.get("request_id")
        if rid:
            resp.headers[REQUEST_ID_HEADER] = rid
        rule = request.url_rule
        endpoint = ISSUING.get(rule.endpoint) if rule is not None else None
        if endpoint is not None and "agentca_started" in g:
            if resp.status_code < 400:
                outcome = "issued"
            else:
                outcome = g.get(ERROR_CODE_KEY) or f"http-{resp.status_code}"
            m = metrics()
            m.issuance.labels(endpoint, outcome).inc()
            m.issuance_seconds.labels(endpoint, outcome).observe(
                time.perf_counter() - g.agentca_started
            )
        return resp

    @app.teardown_request
    def _forget(_exc: BaseException | None) -> None:
        token = g.pop("agentca_rid_token", None)
        if token is not None:
            current_request_id.reset(token)
