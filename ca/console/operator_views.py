"""Operator pages: dashboard, agents, certificates, revocation, tokens, models and scopes.

Reads go through the read sessions and queries the JSON API uses; every action calls the one
core operation its API endpoint calls (registry, authority, token stores), with the console
user as the ledger actor.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Response, redirect, request
from werkzeug.wrappers import Response as WerkzeugResponse

from ca.api.auth import READERS, WRITERS
from ca.api.schemas import NewApiToken, NewRegistration
from ca.api.state import runtime
from ca.api.validation import parse
from ca.console import guard
from ca.console.drift_view import drift_summary, state_path
from ca.console.lists import (
    CertificateSearch,
    agents_page,
    dashboard_counts,
    search_certificates,
)
from ca.console.ocsp_check import OcspAnswer, ask
from ca.console.web import console, render
from ca.errors import CAError, ErrorCode
from ca.extensions import read_agent_extensions
from ca.ledger.actions import ActionFilter, action_page
from ca.ledger.entries import Checkpoint
from ca.queries import read_arc_state
from ca.revocation import RevocationReason
from ca.roles import Role, parse_role

EXPIRING = timedelta(days=7)
DECISIONS = 20  # an agent's newest gateway decisions on its page
_CURSOR = re.compile(r"^[0-9]{1,18}$")
#: reasons offered for revocation (hold has its own button; removeFromCRL is release)
REASONS = [
    r
    for r in RevocationReason
    if r not in (RevocationReason.REMOVE_FROM_CRL, RevocationReason.CERTIFICATE_HOLD)
]


def cursor(name: str = "before") -> int | None:
    """A keyset cursor from the query string (a non-negative integer), or None."""
    raw = request.args.get(name, "")
    if not raw:
        return None
    if not _CURSOR.match(raw):
        raise CAError(ErrorCode.BAD_REQUEST, f"'{name}' must be a non-negative integer")
    return int(raw)


def checkpoint_age(cp: Checkpoint | None, now: datetime) -> timedelta | None:
    if cp is None:
        return None
    signed = datetime.fromisoformat(cp.timestamp.replace("Z", "+00:00"))
    return now - signed


def _words(raw: str) -> list[str]:
    return [w for w in re.split(r"[\s,]+", raw) if w]


def _confirmed() -> None:
    if request.form.get("confirm") != "yes":
        raise CAError(ErrorCode.BAD_REQUEST, "tick the confirmation box to go ahead")


# -- dashboard --------------------------------------------------------------------------------
@console.get("/")
@guard.page(READERS)
def dashboard() -> Response:
    """Counts of live, expiring and revoked certificates; CRL and checkpoint freshness; the
    open drift alerts."""
    rt = runtime()
    now = rt.authority.clock()
    with guard.read_session() as s:
        counts = dashboard_counts(s.connection(), now, EXPIRING)
        drift = drift_summary(state_path(rt.settings.data_dir), s.connection())
    cp = rt.ledger.latest_checkpoint()
    return render(
        "dashboard.html",
        title="Dashboard",
        counts=counts,
        now=now,
        checkpoint=cp,
        checkpoint_age=checkpoint_age(cp, now),
        crl_age=(now - counts.last_crl) if counts.last_crl else None,
        ledger_size=rt.ledger.size(),
        drift=drift,
    )


# -- agents -----------------------------------------------------------------------------------
@console.get("/agents")
@guard.page(READERS)
def agents() -> Response:
    """Registrations in name order, keyset pages of 50 (``after`` the last name shown)."""
    after = request.args.get("after", "")
    if len(after) > 64 or "\x00" in after:
        raise CAError(ErrorCode.BAD_REQUEST, "'after' is an agent name (at most 64 characters)")
    with guard.read_session() as s:
        found = agents_page(s, after or None)
    return render("agents.html", title="Agents", agents=found.agents, next_after=found.next_after)


@console.get("/agents/<name>")
@guard.page(READERS)
def agent(name: str) -> Response:
    """One registration, its newest certificates, (operators) its enrollment tokens and
    (operators and auditors, once the action ledger holds records) its newest gateway
    decisions."""
    rt = runtime()
    reg = rt.read_registry.get_agent(name)
    with guard.read_session() as s:
        certs = search_certificates(s.connection(), CertificateSearch(agent=name), None)
    is_operator = guard.user().role is Role.OPERATOR
    tokens = rt.enrollment_tokens.list_tokens(name, every=True)[:20] if is_operator else []
    decisions = None  # no section: an empty action ledger, or a role that may not read it
    if guard.user().role in guard.AUDIT_READERS:
        size = rt.actions.size()
        if size:
            decisions = action_page(rt.actions, size, ActionFilter(agent=name), None, DECISIONS)
    return render(
        "agent.html",
        title=f"Agent {name}",
        agent=reg,
        certificates=certs,
        tokens=tokens,
        decisions=decisions,
        now=rt.authority.clock(),
    )


@console.get("/agents/new")
@guard.page(WRITERS)
def new_agent_form() -> Response:
    return render("agent_new.html", title="Register an agent", form={})


@console.post("/agents")
@guard.action(WRITERS)
def register_agent() -> WerkzeugResponse:
    """Register an agent: the API's body model validates, the registry registers."""
    f = request.form
    data: dict[str, object] = {
        "name": f.get("name", "").strip(),
        "officer": f.get("officer", "").strip(),
        "environment": f.get("environment", "").strip(),
        "model_type": f.get("model_type", "").strip(),
        "scopes": _words(f.get("scopes", "")),
        "model_digests": _words(f.get("model_digests", "")),
        "prompt_digests": _words(f.get("prompt_digests", "")),
    }
    if f.get("organization", "").strip():
        data["organization"] = f["organization"].strip()
    hours = f.get("max_validity_hours", "").strip()
    if hours:
        if not hours.isdigit() or not 0 < int(hours) <= 24 * 366:
            raise CAError(ErrorCode.BAD_REQUEST, "the maximum validity is a number of hours")
        data["max_validity_seconds"] = int(hours) * 3600
    body = parse(NewRegistration, data)
    kwargs: dict[str, object] = {}
    if body.max_validity_seconds is not None:
        kwargs["max_validity"] = timedelta(seconds=body.max_validity_seconds)
    reg = runtime().registry.register_agent(
        name=body.name,
        officer=body.officer,
        environment=body.environment,
        model_type=body.model_type,
        scopes=body.scopes,
        model_digests=body.model_digests,
        prompt_digests=body.prompt_digests,
        config_digests=[],
        organization=body.organization,
        actor=guard.user().actor,
        **kwargs,  # type: ignore[arg-type]
    )
    return redirect(f"{guard.PATH}/agents/{reg.name}", 303)


@console.post("/agents/<name>/enrollment-tokens")
@guard.action(WRITERS)
def create_enrollment_token(name: str) -> Response:
    """A one-time enrollment token, shown on this answer only (never cached)."""
    rt = runtime()
    minutes = request.form.get("ttl_minutes", "").strip()
    if minutes and (not minutes.isdigit() or not 0 < int(minutes) <= 7 * 24 * 60):
        raise CAError(ErrorCode.BAD_REQUEST, "the lifetime is 1 to 10080 minutes")
    ttl = timedelta(minutes=int(minutes)) if minutes else rt.settings.enrollment_ttl
    token, expires = rt.enrollment_tokens.create(name, ttl, guard.user().actor)
    return render(
        "secret.html",
        title="Enrollment token",
        what=f"One-time enrollment token for {name}",
        secret=token,
        expires=expires,
        back=f"{guard.PATH}/agents/{name}",
    )


@console.post("/enrollment-tokens/<handle>/revoke")
@guard.action(WRITERS)
def revoke_enrollment_token(handle: str) -> WerkzeugResponse:
    info = runtime().enrollment_tokens.revoke(handle, guard.user().actor)
    return redirect(f"{guard.PATH}/agents/{info.agent}", 303)


# -- certificates -----------------------------------------------------------------------------
@console.get("/certificates")
@guard.page(READERS)
def certificates() -> Response:
    """Search by serial, agent, officer, model type and status; keyset pages of 50."""
    a = request.args
    search = CertificateSearch(
        serial=a.get("serial", "").strip() or None,
        agent=a.get("agent", "").strip() or None,
        officer=a.get("officer", "").strip() or None,
        model_type=a.get("model_type", "").strip() or None,
        status=a.get("status", "").strip() or None,
    )
    with guard.read_session() as s:
        found = search_certificates(s.connection(), search, cursor())
    query = {k: v for k, v in search.__dict__.items() if v}
    return render(
        "certificates.html",
        title="Certificates",
        page=found,
        search=search,
        query=query,
        now=runtime().authority.clock(),
    )


@console.get("/certificates/<serial>")
@guard.page(READERS)
def certificate(serial: str) -> Response:
    """One certificate: record, decoded agent extensions, SPIFFE ID, chain and PEM; with
    ``?ocsp=1`` what its OCSP responder answers now (asked on demand, never on every view)."""
    rt = runtime()
    record = rt.read_queries.get(serial)
    cert = record.certificate
    extensions = spiffe = pem = None
    ocsp_now: OcspAnswer | None = None
    if cert is not None:
        with guard.read_session() as s:
            arcs = read_arc_state(s).every_arc
        extensions = read_agent_extensions(cert, arcs).to_dict()
        spiffe = [
            str(u)
            for u in cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.UniformResourceIdentifier)
        ]
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        if request.args.get("ocsp") == "1":
            ocsp_now = ask(cert, rt.authority.issuer(record.issuer_name).certificate)
    return render(
        "certificate.html",
        title=f"Certificate {record.serial_hex}",
        record=record,
        extensions=extensions,
        spiffe=spiffe,
        pem=pem,
        chain=[c.subject.rfc4514_string() for c in rt.authority.chain()],
        on_hold=record.revocation_reason is RevocationReason.CERTIFICATE_HOLD,
        ocsp=ocsp_now,
        reasons=REASONS,
        now=rt.authority.clock(),
    )


@console.get("/certificates/<serial>/revoke")
@guard.page(WRITERS)
def revoke_form(serial: str) -> Response:
    """Confirm a revocation or hold, with a reason."""
    record = runtime().read_queries.get(serial)
    return render(
        "revoke.html",
        title="Revoke",
        record=record,
        reasons=REASONS,
        hold=request.args.get("hold") == "1",
    )


@console.post("/certificates/<serial>/revoke")
@guard.action(WRITERS)
def revoke(serial: str) -> WerkzeugResponse:
    """Revoke (with the reason chosen) or put on hold; the authority's revoke does both."""
    _confirmed()
    if request.form.get("hold") == "1":
        reason = RevocationReason.CERTIFICATE_HOLD
    else:
        reason = RevocationReason.parse(request.form.get("reason") or "unspecified")
        if reason is RevocationReason.CERTIFICATE_HOLD:
            raise CAError(ErrorCode.BAD_REQUEST, "use the hold button to put on hold")
    record = runtime().authority.revoke(serial, reason, guard.user().actor)
    return redirect(f"{guard.PATH}/certificates/{record.serial_hex}", 303)


@console.post("/certificates/<serial>/release")
@guard.action(WRITERS)
def release(serial: str) -> WerkzeugResponse:
    """Release a certificate from hold."""
    _confirmed()
    record = runtime().authority.release_hold(serial, guard.user().actor)
    return redirect(f"{guard.PATH}/certificates/{record.serial_hex}", 303)


# -- API tokens -------------------------------------------------------------------------------
@console.get("/api-tokens")
@guard.page(WRITERS)
def api_tokens() -> Response:
    rt = runtime()
    return render(
        "api_tokens.html",
        title="API tokens",
        tokens=rt.api_tokens.list(),
        now=rt.authority.clock(),
        roles=[Role.OPERATOR, Role.AUDITOR, Role.READ_ONLY],
    )


@console.post("/api-tokens")
@guard.action(WRITERS)
def create_api_token() -> Response:
    """Create an API token (never issuer-verbatim: the local CLI only); shown once."""
    f = request.form
    data: dict[str, object] = {"name": f.get("name", "").strip(), "role": f.get("role", "")}
    days = f.get("ttl_days", "").strip()
    if days:
        if not days.isdigit() or not 0 < int(days) <= 3660:
            raise CAError(ErrorCode.BAD_REQUEST, "the lifetime is a number of days")
        data["ttl_seconds"] = int(days) * 86400
    body = parse(NewApiToken, data)
    if parse_role(body.role) is Role.ISSUER_VERBATIM:
        raise CAError(
            ErrorCode.FORBIDDEN,
            "issuer-verbatim tokens are created only with the local CLI, never here",
        )
    ttl = timedelta(seconds=body.ttl_seconds) if body.ttl_seconds is not None else None
    secret, info = runtime().api_tokens.create(body.name, body.role, guard.user().actor, ttl)
    return render(
        "secret.html",
        title="API token",
        what=f"API token {info.name} ({info.role.value})",
        secret=secret,
        expires=info.expires_at,
        back=f"{guard.PATH}/api-tokens",
    )


@console.post("/api-tokens/<name>/revoke")
@guard.action(WRITERS)
def revoke_api_token(name: str) -> WerkzeugResponse:
    runtime().api_tokens.revoke(name, guard.user().actor)
    return redirect(f"{guard.PATH}/api-tokens", 303)


# -- models and scopes ------------------------------------------------------------------------
@console.get("/models")
@guard.page(READERS)
def models() -> Response:
    return render(
        "models.html", title="Model inventory", models=runtime().read_registry.list_models()
    )


@console.get("/scopes")
@guard.page(READERS)
def scopes() -> Response:
    return render("scopes.html", title="Scopes", scopes=runtime().read_registry.list_scopes())
