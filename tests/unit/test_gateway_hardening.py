"""Issue 9 regressions for the gateway (offline, fake clock): status bound to the certificate
(the staple-priming attack), caches entered only by verified requests, status and nonces per
(issuer, serial), audience binding, SPIFFE ID checks, path normal form, and decision log
lines that equal the response actually sent."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from flask import Flask, g, jsonify

from agent.client import Agent
from gateway import AgentGatewayMiddleware, StaticInventory, StatusChecker, Verifier, decision_log
from gateway.chain import issuer_hashes
from gateway.flask_ext import AgentGateway, requires_scope
from gateway.httpsig import RequestView, component_value
from ocsp.decision import CertState
from tests.support.gateway_pki import Clock, Pki, make_agent, model_digest, signed_view

SCOPE = "submit_limit_order"
AUDIENCE = "http://gw.local"
DECISIONS = "agentca.gateway.decisions"


class Responder:
    """A fake OCSP responder for several hierarchies: answers each CertID from the PKI whose
    issuing-CA key it names, with the state set for (that PKI, serial)."""

    def __init__(self, clock: Clock, *pkis: Pki) -> None:
        self.clock = clock
        self.pkis = pkis
        self.certs: dict[tuple[int, int], x509.Certificate] = {}
        self.revoked: set[tuple[int, int]] = set()
        self.calls = 0

    def add(self, pki: Pki, cert: x509.Certificate, revoked: bool = False) -> None:
        key = (self.pkis.index(pki), cert.serial_number)
        self.certs[key] = cert
        if revoked:
            self.revoked.add(key)

    def state(self, pki: Pki, cert: x509.Certificate) -> CertState:
        revoked = (self.pkis.index(pki), cert.serial_number) in self.revoked
        return CertState.REVOKED if revoked else CertState.GOOD

    def __call__(self, url: str, request: bytes, timeout: float) -> bytes:
        self.calls += 1
        req = ocsp.load_der_ocsp_request(request)
        nonce = req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        for i, pki in enumerate(self.pkis):
            if issuer_hashes(pki.issuing)["sha256"][1] == req.issuer_key_hash:
                cert = self.certs[(i, req.serial_number)]
                return pki.ocsp_response(
                    cert, self.state(pki, cert), this_update=int(self.clock()), nonce=nonce
                )
        raise AssertionError("unknown issuer")


def verifier_for(
    clock: Clock,
    *pkis: Pki,
    fetcher: Any = None,
    audience: Any = AUDIENCE,
    **status_kw: Any,
) -> Verifier:
    status = StatusChecker(
        refresh=False, clock=clock, fetch=fetcher is not None, fetcher=fetcher, **status_kw
    )
    return Verifier(
        [p.root for p in pkis],
        StaticInventory([model_digest().hex()]),
        status,
        clock=clock,
        audience=audience,
        trust_domain="agentca.local",
    )


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, Any]] = _Flushed()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == DECISIONS and record.levelno == logging.INFO:
            self.lines.append(json.loads(record.getMessage()))


class _Flushed(list[dict[str, Any]]):
    """The lines so far: reading waits for the decision-log writer to catch up first."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        assert decision_log.flush()
        return super().__iter__()

    def __len__(self) -> int:
        assert decision_log.flush()
        return super().__len__()


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    """The decision log lines written during the test, parsed, as they are written."""
    logger = logging.getLogger(DECISIONS)
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def with_header(req: RequestView, name: str, value: str | None) -> RequestView:
    headers = dict(req.headers)
    if value is None:
        headers.pop(name, None)
    else:
        headers[name] = value
    return RequestView(**{**req.__dict__, "headers": headers})


def junk_signature(req: RequestView) -> RequestView:
    return with_header(
        req, "signature", "agentca=:" + base64.b64encode(b"\x01" * 64).decode() + ":"
    )


def staple_header(der: bytes) -> str:
    return ":" + base64.b64encode(der).decode() + ":"


# -- item 1: the staple-priming attack -------------------------------------------------------
@pytest.mark.parametrize("fetch", [False, True], ids=["offline", "fetching"])
def test_priming_with_another_agents_staple_is_denied_and_logged(
    pki: Pki, tmp_path: Path, log_lines: list[dict[str, Any]], fetch: bool
) -> None:
    """Revoked agent B sends A's certificate + A's fresh 'good' staple + a junk signature
    (refused), then its own requests stapling the same bytes: every one is refused, as B,
    and each refusal is in the decision log."""
    clock = Clock()
    responder = Responder(clock, pki)
    a = make_agent(tmp_path / "a", pki, clock)
    b = make_agent(tmp_path / "b", pki, clock)
    responder.add(pki, a.credential.certificate)
    responder.add(pki, b.credential.certificate, revoked=True)
    v = verifier_for(clock, pki, fetcher=responder if fetch else None)
    a_staple = pki.ocsp_response(a.credential.certificate, this_update=clock())

    priming = junk_signature(signed_view(a, staple=a_staple)[0])
    assert priming.headers["agentca-ocsp"] == staple_header(a_staple)
    first = v.decide(priming, SCOPE)
    assert first.denial is not None and first.denial.check.value == "signature-invalid"
    outcomes = []
    for _ in range(5):
        clock.t += 0.15  # the staple stays fresh (max_age 1 s)
        req = signed_view(b, staple=a_staple)[0]
        assert req.headers["agentca-ocsp"] == staple_header(a_staple)  # the very same bytes
        d = v.decide(req, SCOPE)
        outcomes.append(d.denial.check.value if d.denial else "allowed")
    assert "allowed" not in outcomes
    assert set(outcomes) == {"status-unknown"}  # A's staple is not about B's certificate
    b_serial = b.credential.serial_hex
    denied_b = [ln for ln in log_lines if ln["serial"] == b_serial]
    assert len(denied_b) == 5
    for line in denied_b:
        assert line["decision"] == "deny" and line["http_status"] == 401
        assert line["check"] == "status-unknown"
        assert "no answer for this certificate" in line["detail"]
    # ... and without a staple B's own status is found revoked (when the gateway may fetch)
    clock.t += 0.1
    d = v.decide(signed_view(b, staple=b"")[0], SCOPE)
    assert d.denial is not None
    assert d.denial.check.value == ("certificate-revoked" if fetch else "status-unknown")


def test_a_legitimately_cached_staple_does_not_vouch_for_another_certificate(
    pki: Pki, tmp_path: Path
) -> None:
    clock = Clock()
    a = make_agent(tmp_path / "a", pki, clock)
    b = make_agent(tmp_path / "b", pki, clock)
    v = verifier_for(clock, pki)
    a_staple = pki.ocsp_response(a.credential.certificate, this_update=clock())
    assert v.decide(signed_view(a, staple=a_staple)[0], SCOPE).allowed  # cached for A
    d = v.decide(signed_view(b, staple=a_staple)[0], SCOPE)
    assert d.denial is not None and d.denial.check.value == "status-unknown"
    d = v.decide(signed_view(a, staple=a_staple)[0], SCOPE)
    assert d.allowed and d.status_source == "staple"


def test_refused_requests_leave_nothing_in_the_shared_caches(pki: Pki, tmp_path: Path) -> None:
    clock = Clock()
    a = make_agent(tmp_path / "a", pki, clock)
    responder = Responder(clock, pki)
    responder.add(pki, a.credential.certificate)
    v = verifier_for(clock, pki, fetcher=responder)
    staple = pki.ocsp_response(a.credential.certificate, this_update=clock())
    v.decide(junk_signature(signed_view(a, staple=staple)[0]), SCOPE)
    v.decide(junk_signature(signed_view(a, staple=b"")[0]), SCOPE)
    assert len(v.chains) == 0 and v.status._status == {}
    assert responder.calls == 0  # no network I/O for an unverified request
    assert v.decide(signed_view(a, staple=b"")[0], SCOPE).status_source == "fetch"
    assert len(v.chains) == 1 and responder.calls == 1
    assert v.decide(signed_view(a, staple=b"")[0], SCOPE).status_source == "cache"
    # the chain cache is keyed by the certificate, not by the header text
    req = signed_view(a, staple=staple)[0]
    assert v.decide(req, SCOPE).allowed and len(v.chains) == 1


def test_status_is_cached_per_issuer_not_per_serial(tmp_path: Path) -> None:
    """Two hierarchies issue the same serial: one's 'good' must not vouch for the other."""
    clock = Clock()
    pki1, pki2 = Pki.create(), Pki.create()
    x = make_agent(tmp_path / "x", pki1, clock)
    y = make_agent(tmp_path / "y", pki2, clock)
    assert x.credential.certificate.serial_number == y.credential.certificate.serial_number
    responder = Responder(clock, pki1, pki2)
    responder.add(pki1, x.credential.certificate)
    responder.add(pki2, y.credential.certificate, revoked=True)
    v = verifier_for(clock, pki1, pki2, fetcher=responder)
    assert v.decide(signed_view(x, staple=b"")[0], SCOPE).status_source == "fetch"
    d = v.decide(signed_view(y, staple=b"")[0], SCOPE)
    assert d.denial is not None and d.denial.check.value == "certificate-revoked"
    d = v.decide(signed_view(x, staple=b"")[0], SCOPE)  # y's revocation is not x's
    assert d.allowed and d.status_source == "cache", d.denial


def test_a_revoked_staple_is_not_remembered_from_a_refused_request(
    pki: Pki, tmp_path: Path
) -> None:
    clock = Clock()
    a = make_agent(tmp_path / "a", pki, clock)
    v = verifier_for(clock, pki)
    revoked = pki.ocsp_response(a.credential.certificate, CertState.REVOKED, this_update=clock())
    assert v.decide(signed_view(a, staple=revoked)[0], SCOPE).denial is not None
    good = pki.ocsp_response(a.credential.certificate, this_update=clock())
    assert v.decide(signed_view(a, staple=good)[0], SCOPE).allowed


def test_nonces_are_kept_per_certificate(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.client

    clock = Clock()
    a = make_agent(tmp_path / "a", pki, clock)
    b = make_agent(tmp_path / "b", pki, clock)
    v = verifier_for(clock, pki)
    monkeypatch.setattr(agent.client.secrets, "token_urlsafe", lambda n: "the-same-nonce-xyz")
    for who in (a, b):
        staple = pki.ocsp_response(who.credential.certificate, this_update=clock())
        assert v.decide(signed_view(who, staple=staple)[0], SCOPE).allowed
    staple = pki.ocsp_response(a.credential.certificate, this_update=clock())
    d = v.decide(signed_view(a, staple=staple)[0], SCOPE)
    assert d.denial is not None and d.denial.check.value == "nonce-replayed"


def test_client_cert_chain_is_bounded(pki: Pki, tmp_path: Path) -> None:
    clock = Clock()
    a = make_agent(tmp_path / "a", pki, clock)
    v = verifier_for(clock, pki)
    req = signed_view(a, staple=pki.ocsp_response(a.credential.certificate, this_update=clock()))[0]
    member = req.headers["client-cert-chain"]
    d = v.decide(with_header(req, "client-cert-chain", ", ".join([member] * 5)), SCOPE)
    assert d.denial is not None and d.denial.check.value == "malformed-credentials"


# -- item 8: audience ------------------------------------------------------------------------
def test_the_same_signed_request_is_refused_by_another_service(pki: Pki, tmp_path: Path) -> None:
    clock = Clock()
    a = make_agent(tmp_path / "a", pki, clock)
    staple = pki.ocsp_response(a.credential.certificate, this_update=clock())
    req = signed_view(a, staple=staple)[0]
    assert 'wimse-aud="http://gw.local"' in req.headers["signature-input"]
    assert '"@authority"' in req.headers["signature-input"]
    here = verifier_for(clock, pki)
    other = verifier_for(clock, pki, audience="https://payments.internal")
    assert here.decide(req, SCOPE).allowed
    d = other.decide(req, SCOPE)
    assert d.denial is not None and d.denial.check.value == "audience-mismatch"
    assert d.denial.check.status == 401
    # a request for another host with the right audience still fails: @authority is covered
    moved = RequestView(**{**req.__dict__, "authority": "evil.example"})
    d = verifier_for(clock, pki).decide(moved, SCOPE)
    assert d.denial is not None and d.denial.check.value == "signature-invalid"


def test_audience_is_required_configuration_and_in_every_signature(
    pki: Pki, tmp_path: Path
) -> None:
    clock = Clock()
    with pytest.raises(TypeError):
        Verifier([pki.root], StaticInventory([]), trust_domain="agentca.local")  # type: ignore[call-arg]
    for empty in ("", [], [" "]):
        with pytest.raises(ValueError, match="audience"):
            verifier_for(clock, pki, audience=empty)
    a = make_agent(tmp_path / "a", pki, clock)
    staple = pki.ocsp_response(a.credential.certificate, this_update=clock())
    req = signed_view(a, staple=staple)[0]
    stripped = req.headers["signature-input"].replace(';wimse-aud="http://gw.local"', "")
    d = verifier_for(clock, pki).decide(with_header(req, "signature-input", stripped), SCOPE)
    assert d.denial is not None and d.denial.check.value == "audience-mismatch"
    # the configured form is normalised like the agent's: scheme/host case, default port
    loose = verifier_for(clock, pki, audience="HTTP://GW.local:80/")
    assert loose.decide(signed_view(a, staple=staple)[0], SCOPE).allowed


def test_explicit_audience_and_no_authority_for_rewriting_proxies(pki: Pki, tmp_path: Path) -> None:
    clock = Clock()
    key, cert = pki.issue()
    a = make_agent(tmp_path / "a", pki, clock, cert=cert, key=key)
    a.audience, a.cover_authority = "spiffe://agentca.local/service/orders", False
    v = verifier_for(clock, pki, audience="spiffe://agentca.local/service/orders")
    req = signed_view(a, staple=pki.ocsp_response(cert, this_update=clock()))[0]
    assert '"@authority"' not in req.headers["signature-input"]
    rewritten = RequestView(**{**req.__dict__, "authority": "10.0.0.7:8080"})
    assert v.decide(rewritten, SCOPE).allowed


def test_authority_is_normalised_like_rfc_9421() -> None:
    req = RequestView("GET", "/", "", {}, authority="GW.Local:80", scheme="http")
    assert component_value("@authority", req) == "gw.local"
    req = RequestView("GET", "/", "", {}, authority="gw.local:8443", scheme="https")
    assert component_value("@authority", req) == "gw.local:8443"


# -- item 10: SPIFFE ID ----------------------------------------------------------------------
def _with_san(pki: Pki, uris: list[str]) -> tuple[Any, x509.Certificate]:
    key, cert = pki.issue()
    builder = x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
    builder = builder.public_key(key.public_key()).serial_number(cert.serial_number + 10**6)
    builder = builder.not_valid_before(cert.not_valid_before_utc)
    builder = builder.not_valid_after(cert.not_valid_after_utc)
    for ext in cert.extensions:
        value: Any = ext.value
        if isinstance(value, x509.SubjectAlternativeName):
            if not uris:
                continue
            value = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris])
        builder = builder.add_extension(value, ext.critical)
    if not uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("agent.example")]), False
        )
    return key, builder.sign(pki.issuing_key, hashes.SHA256())


@pytest.mark.parametrize(
    "uris",
    [
        ["spiffe://evil.example/agent/ExecutionAgent-ETH-01"],  # another trust domain
        ["spiffe://agentca.local/agent/OtherAgent"],  # does not name the CN
        ["spiffe://agentca.local/service/ExecutionAgent-ETH-01"],  # not an agent path
        ["spiffe://agentca.local/agent/ExecutionAgent-ETH-01/x"],
        ["spiffe://agentca.local/agent/ExecutionAgent-ETH-01", "https://agent.example/"],
        [],  # no URI SAN at all
    ],
    ids=["trust-domain", "name", "path", "subpath", "two-uris", "none"],
)
def test_spiffe_id_must_match_the_trust_domain_and_the_cn(
    pki: Pki, tmp_path: Path, uris: list[str]
) -> None:
    clock = Clock()
    key, cert = _with_san(pki, uris)
    agent = make_agent(tmp_path / "s", pki, clock, cert=cert, key=key)
    d = verifier_for(clock, pki).decide(
        signed_view(agent, staple=pki.ocsp_response(cert, this_update=clock()))[0], SCOPE
    )
    assert d.denial is not None and d.denial.check.value == "chain-invalid", d.denial


def test_trust_domain_is_required_configuration(pki: Pki) -> None:
    with pytest.raises(TypeError):
        Verifier([pki.root], StaticInventory([]), audience=AUDIENCE)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="trust"):
        Verifier([pki.root], StaticInventory([]), audience=AUDIENCE, trust_domain="Bad/Domain")


# -- item 7: paths in normal form ------------------------------------------------------------
TRAVERSALS = [
    "/book/../admin/withdraw",
    "/book/%2e%2e/admin/withdraw",
    "/book/%2E%2E/admin/withdraw",
    "/book/..%2Fadmin%2Fwithdraw",
    "/book/.%2e/admin/withdraw",
    "/book/./x",
    "/book//x",
    "/book/%41",
    "/book/%zz",
    "/book/..%5Cadmin",
    "/book/a%00",
]


def _apps(verifier: Verifier) -> dict[str, Flask]:
    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        status = "201 Created" if environ["PATH_INFO"] == "/made" else "200 OK"
        start_response(status, [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    wsgi = Flask("w")
    wsgi.wsgi_app = AgentGatewayMiddleware(  # type: ignore[method-assign]
        inner,
        verifier,
        {"POST /book/*": SCOPE, "POST /admin/*": "halt_trading", "POST /made": SCOPE},
    )
    flask_app = Flask("f")
    AgentGateway(flask_app, verifier)

    @flask_app.post("/book/<path:rest>")
    @requires_scope(SCOPE)
    def book(rest: str) -> Any:
        return jsonify(rest=rest, agent=g.agent.name)

    @flask_app.post("/admin/withdraw")
    @requires_scope("halt_trading")
    def withdraw() -> Any:
        return jsonify(withdrawn=True)

    @flask_app.post("/made")
    @requires_scope(SCOPE)
    def made() -> Any:
        return jsonify(made=True), 201

    @flask_app.post("/undeclared")
    def undeclared() -> Any:
        return jsonify(ok=True)

    return {"wsgi": wsgi, "flask": flask_app}


def _post(app: Flask, agent: Agent, pki: Pki, clock: Clock, path: str) -> Any:
    staple = pki.ocsp_response(agent.credential.certificate, this_update=clock())
    body = b'{"side":"buy"}'
    _, headers = signed_view(agent, "POST", f"http://localhost{path}", body, staple=staple)
    return app.test_client().post(path, data=body, headers=headers)


@pytest.mark.parametrize("shell", ["wsgi", "flask"])
@pytest.mark.parametrize("path", TRAVERSALS)
def test_non_normal_paths_are_refused_with_400(
    pki: Pki, tmp_path: Path, shell: str, path: str, log_lines: list[dict[str, Any]]
) -> None:
    clock = Clock()
    agent = make_agent(tmp_path / "p", pki, clock)
    app = _apps(verifier_for(clock, pki, audience="http://localhost"))[shell]
    reply = _post(app, agent, pki, clock, path)
    assert reply.status_code == 400, (path, reply.status_code, reply.data)
    assert reply.mimetype == "application/problem+json"
    assert reply.json["check"] == "path-not-normal"
    assert reply.json["type"] == "https://agentca.dev/problems/gateway/path-not-normal"
    assert [(ln["decision"], ln["http_status"], ln["check"]) for ln in log_lines] == [
        ("deny", 400, "path-not-normal")
    ]


@pytest.mark.parametrize("shell", ["wsgi", "flask"])
def test_normal_paths_still_pass(pki: Pki, tmp_path: Path, shell: str) -> None:
    clock = Clock()
    agent = make_agent(tmp_path / "n", pki, clock)
    app = _apps(verifier_for(clock, pki, audience="http://localhost"))[shell]
    for path in ("/book/eth-usd", "/book/a.b/c~d", "/book/caf%C3%A9", "/book/x/"):
        reply = _post(app, agent, pki, clock, path)
        assert reply.status_code == 200, (path, reply.data)
    from gateway.wsgi import path_problem

    assert path_problem({"PATH_INFO": "/a b", "RAW_URI": "/a%20b"}) is None


# -- item 10: the decision log equals the response -------------------------------------------
@pytest.mark.parametrize("shell", ["wsgi", "flask"])
def test_decision_log_records_the_status_actually_sent(
    pki: Pki, tmp_path: Path, shell: str, log_lines: list[dict[str, Any]]
) -> None:
    clock = Clock()
    agent = make_agent(tmp_path / "l", pki, clock)
    app = _apps(verifier_for(clock, pki, audience="http://localhost"))[shell]
    sent = []
    for path in ("/undeclared", "/made", "/admin/withdraw"):
        reply = _post(app, agent, pki, clock, path)
        sent.append((path, reply.status_code, reply.json.get("check") if reply.json else None))
    assert sent == [
        ("/undeclared", 403, "scope-denied"),
        ("/made", 201, None),
        ("/admin/withdraw", 403, "scope-denied"),
    ]
    logged = [(ln["path"], ln["http_status"], ln["check"]) for ln in log_lines]
    assert logged == sent
    assert [ln["decision"] for ln in log_lines] == ["deny", "allow", "deny"]


def test_flask_bounds_a_body_without_content_length(pki: Pki, tmp_path: Path) -> None:
    import io

    clock = Clock()
    verifier = verifier_for(clock, pki, audience="http://localhost")
    app = Flask("b")
    AgentGateway(app, verifier, max_body=1000)
    read: list[int] = []

    @app.post("/made")
    @requires_scope(SCOPE)
    def made() -> Any:
        return jsonify(ok=True)

    stream = io.BytesIO(b"x" * 100_000)
    reply = app.test_client().post(
        "/made",
        input_stream=stream,
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    read.append(stream.tell())
    assert reply.status_code == 401 and reply.json["check"] == "malformed-credentials"
    assert read[0] <= 64 * 1024  # never read the whole stream
