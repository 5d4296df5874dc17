"""The gateway's decisions, offline with a fake clock: each check refuses with its own
problem type, in the documented order, and nothing ever escapes as an exception."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask, g, jsonify
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import (
    AgentGatewayMiddleware,
    CrlSet,
    ReplayCache,
    StaticInventory,
    StatusChecker,
    Verifier,
    decision_log,
)
from gateway.flask_ext import AgentGateway, public, requires_scope
from gateway.httpsig import RequestView
from ocsp.decision import CertState
from tests.support.gateway_pki import Clock, Pki, make_agent, model_digest, signed_view, view
from tests.unit.helpers import software_hierarchy

SCOPE = "submit_limit_order"
AUDIENCES = ("http://gw.local", "http://localhost")
CONFIG: dict[str, Any] = {"audience": AUDIENCES, "trust_domain": "agentca.local"}


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


class Env:
    def __init__(self, pki: Pki, tmp: Path, **status_kw: Any) -> None:
        self.pki, self.clock = pki, Clock()
        self.agent = make_agent(tmp, pki, self.clock)
        self.fetched: list[str] = []
        self.fetch_state = CertState.GOOD
        status_kw.setdefault("fetch", False)
        self.status = StatusChecker(
            refresh=False, clock=self.clock, fetcher=self._fetch, **status_kw
        )
        self.inventory = StaticInventory([model_digest().hex()])
        self.verifier = Verifier(
            [pki.root], self.inventory, self.status, clock=self.clock, **CONFIG
        )

    def _fetch(self, url: str, request: bytes, timeout: float) -> bytes:
        from cryptography.x509 import ocsp

        self.fetched.append(url)
        nonce = ocsp.load_der_ocsp_request(request).extensions[0].value.nonce
        cert = self.agent.credential.certificate
        return self.pki.ocsp_response(cert, self.fetch_state, this_update=self.clock(), nonce=nonce)

    def staple(self, state: CertState = CertState.GOOD, age: float = 0.0) -> bytes:
        cert = self.agent.credential.certificate
        return self.pki.ocsp_response(cert, state, this_update=self.clock() - age)

    def request(self, staple: bytes | None = None, **kw: Any) -> RequestView:
        return signed_view(
            self.agent, staple=staple if staple is not None else self.staple(), **kw
        )[0]

    def check(self, req: RequestView, scope: str | None = SCOPE) -> str | None:
        d = self.verifier.decide(req, scope)
        return None if d.allowed else d.denial.check.value  # type: ignore[union-attr]


@pytest.fixture
def env(pki: Pki, tmp_path: Path) -> Env:
    return Env(pki, tmp_path)


def replace(req: RequestView, **changes: Any) -> RequestView:
    data = {**req.__dict__, **changes}
    return RequestView(**data)


def with_header(req: RequestView, name: str, value: str | None) -> RequestView:
    headers = dict(req.headers)
    if value is None:
        headers.pop(name, None)
    else:
        headers[name] = value
    return replace(req, headers=headers)


def test_allows_and_passes_the_identity(env: Env) -> None:
    d = env.verifier.decide(env.request(), SCOPE)
    assert d.allowed and d.status_source == "staple"
    assert d.identity is not None
    assert d.identity.name == "ExecutionAgent-ETH-01"
    assert d.identity.spiffe_id == "spiffe://agentca.local/agent/ExecutionAgent-ETH-01"
    assert d.identity.officer == "compliance-officer@enterprise.io"
    assert SCOPE in d.identity.scopes


def test_scope_and_replay(env: Env) -> None:
    req = env.request()
    assert env.check(req, "halt_trading") == "scope-denied"
    assert env.check(req) == "nonce-replayed"  # the nonce was consumed by the first decision


def test_message_alterations(env: Env) -> None:
    req = env.request()
    assert env.check(replace(req, body=req.body + b" ")) == "content-digest-mismatch"
    assert env.check(replace(req, path="/admin/halt")) == "signature-invalid"
    assert env.check(replace(req, query="venue=y")) == "signature-invalid"
    assert env.check(replace(req, method="PUT")) == "signature-invalid"
    assert env.check(with_header(req, "content-type", "text/plain")) == "signature-invalid"
    assert env.check(req) is None


def test_time_window(pki: Pki, tmp_path: Path) -> None:
    env = Env(pki, tmp_path, max_age=1000.0)  # keep the staple fresh: test only the window
    req = env.request()
    env.clock.t += 61
    assert env.check(req) == "signature-expired"
    env.clock.t -= 61
    staple = env.staple()
    env.clock.t += 30
    future = env.request(staple=staple)
    env.clock.t -= 30
    assert env.check(future) == "signature-expired"  # created in the future
    long = with_header(req, "signature-input", req.headers["signature-input"].replace(
        "expires=", "expires=1"))  # fmt: skip
    assert env.check(long) in ("signature-expired",)


def test_covered_components_are_required(env: Env) -> None:
    req = env.request()
    text = req.headers["signature-input"]
    for component in ("@method", "@path", "@query", "content-digest", "client-cert",
                      "agentca-provenance", "agentca-ocsp", "content-type"):  # fmt: skip
        stripped = text.replace(f'"{component}" ', "").replace(f' "{component}"', "")
        assert env.check(with_header(req, "signature-input", stripped)) == "covered-components"


def test_missing_and_malformed_credentials(env: Env) -> None:
    req = env.request()
    for name in ("signature", "signature-input", "client-cert"):
        assert env.check(with_header(req, name, None)) == "credentials-missing"
    assert env.check(with_header(req, "client-cert", ":AAAA:")) == "malformed-credentials"
    assert env.check(with_header(req, "signature", "agentca=1")) == "malformed-credentials"


def test_other_ca_and_expiry(env: Env, pki: Pki, tmp_path: Path) -> None:
    rk, root, ik, issuing = software_hierarchy()
    other = Pki(rk, root, ik, issuing)
    key, cert = other.issue()
    rogue = make_agent(tmp_path / "r", other, env.clock, cert=cert, key=key)
    (tmp_path / "r").mkdir(exist_ok=True)
    req = signed_view(rogue, staple=b"")[0]
    assert env.check(req) == "chain-invalid"
    req = env.request(staple=b"")
    env.clock.t += 13 * 3600  # the certificate check comes first
    assert env.check(req) == "certificate-expired"


def test_a_certificate_without_the_signing_eku_is_refused(
    env: Env, pki: Pki, tmp_path: Path
) -> None:
    from cryptography import x509

    key, cert = pki.issue()
    builder = x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
    builder = builder.public_key(key.public_key()).serial_number(cert.serial_number + 99)
    builder = builder.not_valid_before(cert.not_valid_before_utc)
    builder = builder.not_valid_after(cert.not_valid_after_utc)
    for ext in cert.extensions:
        if isinstance(ext.value, x509.ExtendedKeyUsage):
            ext_value: Any = x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH])
        else:
            ext_value = ext.value
        builder = builder.add_extension(ext_value, ext.critical)
    from cryptography.hazmat.primitives import hashes

    plain = builder.sign(pki.issuing_key, hashes.SHA256())
    agent = make_agent(tmp_path / "p", pki, env.clock, cert=plain, key=key)
    assert env.check(signed_view(agent, staple=b"")[0]) == "chain-invalid"


def test_status_from_staple_cache_fetch_and_crl(env: Env, pki: Pki, tmp_path: Path) -> None:
    assert env.check(env.request(staple=env.staple(CertState.REVOKED))) == "certificate-revoked"
    assert env.status.known_revoked() == []  # a staple of a refused request is not kept
    own = Env(pki, tmp_path / "own", fetch=True)
    own.fetch_state = CertState.REVOKED
    assert own.check(own.request(staple=b"")) == "certificate-revoked"
    own.fetch_state = CertState.GOOD
    assert own.check(own.request()) == "certificate-revoked"  # the gateway's own answer: kept
    assert len(own.fetched) == 1
    fresh = Env(pki, tmp_path / "b")
    assert fresh.check(fresh.request(staple=fresh.staple(age=2.0))) == "status-unknown"  # stale
    assert fresh.check(fresh.request(staple=b"")) == "status-unknown"  # none, fetching disabled
    fetching = Env(pki, tmp_path / "c", fetch=True)
    d = fetching.verifier.decide(fetching.request(staple=b""), SCOPE)
    assert d.allowed and d.status_source == "fetch"
    d = fetching.verifier.decide(fetching.request(staple=b""), SCOPE)
    assert d.allowed and d.status_source == "cache"
    fetching.clock.t += 1.5
    assert fetching.verifier.decide(fetching.request(staple=b""), SCOPE).status_source == "fetch"
    assert len(fetching.fetched) == 2


def test_staple_must_be_signed_by_the_issuers_responder(env: Env, pki: Pki) -> None:
    cert = env.agent.credential.certificate
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    forged = pki.ocsp_response(cert, this_update=env.clock(), signer_key=rogue_key)
    assert env.check(env.request(staple=forged)) == "status-unknown"
    by_issuer = pki.ocsp_response(
        cert, this_update=env.clock(), signer_key=pki.issuing_key, signer_cert=pki.issuing
    )
    assert env.check(env.request(staple=by_issuer)) is None


def test_crl_fallback(pki: Pki, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    crls = CrlSet()
    e = Env(pki, tmp_path, crls=crls)
    now = datetime.fromtimestamp(e.clock(), UTC)
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(e.agent.credential.certificate.serial_number)
        .revocation_date(now)
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.issuing.subject)
        .last_update(now)
        .next_update(now + timedelta(hours=1))
    )
    good_crl = crl
    crl = crl.add_revoked_certificate(revoked)
    crls.add(crl.sign(pki.issuing_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER),
             pki.issuing)  # fmt: skip
    assert e.check(e.request(staple=b"")) == "certificate-revoked"
    crls2 = CrlSet()
    e2 = Env(pki, tmp_path / "x", crls=crls2)
    der = good_crl.sign(pki.issuing_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    crls2.add(der, pki.issuing)
    d = e2.verifier.decide(e2.request(staple=b""), SCOPE)
    assert d.allowed and d.status_source == "crl"


def test_provenance(env: Env, pki: Pki, tmp_path: Path) -> None:
    req = env.request()
    declared = req.headers["agentca-provenance"]
    drifted = declared.replace("prompt=:", "prompt=:AAAA")
    assert env.check(with_header(req, "agentca-provenance", drifted)) in (
        "signature-invalid",  # the header is covered, so tampering breaks the signature
    )
    env.verifier.inventory = StaticInventory([])
    assert env.check(env.request()) == "model-not-authorised"


def test_forced_drift_is_refused_by_the_gateway(env: Env) -> None:
    from agent.provenance import Provenance

    agent = env.agent
    agent.provenance.set_prompt(b"a drifted prompt")
    agent.check_ready = lambda: agent.provenance.current()  # type: ignore[method-assign]
    assert env.check(env.request()) == "provenance-mismatch"
    assert isinstance(agent.provenance.current(), Provenance)


def test_replay_cache_is_bounded_and_never_reopens() -> None:
    cache = ReplayCache(max_entries=3)
    for i in range(3):
        assert cache.add(f"n{i}", 100 + i, 200.0, 150.0)
    assert not cache.add("n1", 101, 200.0, 150.0)
    assert cache.add("n3", 110, 200.0, 150.0)  # evicts n0 (created 100) and raises the floor
    assert len(cache) == 3
    assert not cache.add("n0", 100, 200.0, 150.0)  # evicted, but below the floor
    assert cache.add("late", 111, 200.0, 300.0)  # expired entries are purged first


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["signature-input", "signature", "client-cert", "client-cert-chain",
                     "agentca-ocsp", "agentca-provenance", "content-digest"]),
    st.text(max_size=200),
)  # fmt: skip
def test_garbage_never_escapes(name: str, value: str) -> None:
    env = _GARBAGE_ENV
    req = with_header(env.request(), name, value)
    d = env.verifier.decide(req, SCOPE)
    assert d.denial is not None or d.allowed
    if d.denial is not None:
        assert d.denial.check.value != "verification-error", d.denial.detail


_GARBAGE_ENV: Env


@pytest.fixture(autouse=True, scope="module")
def _garbage_env(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    global _GARBAGE_ENV
    _GARBAGE_ENV = Env(pki, tmp_path_factory.mktemp("garbage"))
    yield


def test_every_decision_is_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="agentca.gateway.decisions"):
        req = env.request()
        env.check(req)
        env.check(req)
        assert decision_log.flush()
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert [line["decision"] for line in lines] == ["allow", "deny"]
    assert lines[1]["check"] == "nonce-replayed" and lines[1]["agent"] == "ExecutionAgent-ETH-01"


# -- WSGI middleware and Flask extension -----------------------------------------------------
def _app() -> Flask:
    app = Flask("t")

    @app.post("/orders")
    @requires_scope(SCOPE)
    def orders() -> Any:
        return jsonify(agent=g.agent.name, serial=g.agent.serial)

    @app.get("/health")
    @public
    def health() -> Any:
        return jsonify(ok=True)

    @app.get("/undeclared")
    def undeclared() -> Any:
        return jsonify(ok=True)

    return app


def _client_headers(env: Env, path: str, method: str = "POST") -> tuple[dict[str, str], bytes]:
    body = b'{"side":"buy"}' if method == "POST" else b""
    _, headers = signed_view(
        env.agent, method, f"http://localhost{path}", body, staple=env.staple(),
        content_type="application/json" if body else None,
    )  # fmt: skip
    return headers, body


def test_flask_extension(env: Env) -> None:
    app = _app()
    AgentGateway(app, env.verifier)
    client = app.test_client()
    headers, body = _client_headers(env, "/orders")
    ok = client.post("/orders", data=body, headers=headers)
    assert ok.status_code == 200 and ok.json == {
        "agent": "ExecutionAgent-ETH-01",
        "serial": env.agent.credential.serial_hex,
    }
    again = client.post("/orders", data=body, headers=headers)
    assert again.status_code == 401 and again.mimetype == "application/problem+json"
    assert again.json["type"] == "https://agentca.dev/problems/gateway/nonce-replayed"
    assert "Accept-Signature" in again.headers
    assert client.get("/health").status_code == 200
    headers, _ = _client_headers(env, "/undeclared", "GET")
    assert client.get("/undeclared", headers=headers).json["check"] == "scope-denied"


def test_wsgi_middleware(env: Env) -> None:
    seen: list[Any] = []

    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["agentca.agent"])
        assert environ["wsgi.input"].read() == b'{"side":"buy"}'
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    app = Flask("w")
    app.wsgi_app = AgentGatewayMiddleware(  # type: ignore[method-assign]
        inner, env.verifier, {"POST /orders": SCOPE}, public=["/health"]
    )
    client = app.test_client()
    headers, body = _client_headers(env, "/orders")
    assert client.post("/orders", data=body, headers=headers).status_code == 200
    assert seen[0].name == "ExecutionAgent-ETH-01"
    headers, body = _client_headers(env, "/orders")
    denied = client.post("/orders", data=body + b" ", headers=headers)
    assert denied.status_code == 401 and denied.json["check"] == "content-digest-mismatch"
    headers, body = _client_headers(env, "/other")
    assert client.post("/other", data=body, headers=headers).json["check"] == "scope-denied"
    assert view("GET", "http://x/", {}).path == "/"


_names = st.from_regex(r"@?[a-z][a-z0-9-]{0,10}", fullmatch=True)
_strings = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
_values = st.integers(-(10**14), 10**14) | _strings


@settings(max_examples=300, deadline=None)
@given(st.lists(_names, max_size=6, unique=True),
       st.dictionaries(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), _values, max_size=5),
       st.binary(max_size=80))  # fmt: skip
def test_fast_signature_parse_equals_the_general_parser(
    covered: list[str], params: dict[str, Any], sig: bytes
) -> None:
    from gateway import httpsig
    from wire import sf

    params = {**params, "tag": "agentca"}
    inner = sf.InnerList(tuple(sf.Item(c) for c in covered), tuple(params.items()))
    raw_input = "agentca=" + sf.serialize_inner_list(inner)
    raw_sig = "agentca=" + sf.serialize_bare(sig)
    fast = httpsig.parse_signature({"signature-input": raw_input, "signature": raw_sig}, "agentca")
    general = httpsig.parse_signature(  # a trailing space defeats the fast path only
        {"signature-input": raw_input + " ", "signature": raw_sig}, "agentca"
    )
    assert fast == general


def test_requests_auth_hook_is_verified(env: Env) -> None:
    requests = pytest.importorskip("requests")
    env.agent.refresh_staple = lambda: None  # type: ignore[assignment, method-assign]
    from agent.staple import Staple

    env.agent.staple = Staple(env.staple(), "good", __import__("datetime").datetime.now(), None, 0)
    prepared = requests.Request(
        "POST", "http://gw.local/orders?venue=x", json={"side": "buy"}, auth=env.agent.auth()
    ).prepare()
    req = view("POST", prepared.url, dict(prepared.headers), prepared.body)
    assert env.check(req) is None
