"""The WIMSE profile (draft-ietf-wimse-http-signature-07) beside the agentca profile, and
Workload Identity Tokens minted by ``ca.wit`` and verified by ``gateway.wit``, offline."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agent import httpsig as agent_sig
from agent import wimse as agent_wimse
from agent.client import Agent
from ca import wit as ca_wit
from gateway import StaticInventory, StatusChecker, Verifier
from gateway.httpsig import RequestView, parse_signature
from gateway.problems import Check, Denied
from gateway.profiles import WIMSE_TAG, profiles_named
from gateway.wit import WitVerifier
from tests.support.gateway_pki import Clock, Pki, make_agent, model_digest, signed_view
from wire import renewal

SCOPE = "submit_limit_order"
URL = "http://gw.local/orders?venue=x"
CONFIG: dict[str, Any] = {"audience": ("http://gw.local",), "trust_domain": "agentca.local"}
ISS = "http://ca.local"


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


class Env:
    def __init__(self, pki: Pki, tmp: Path, **verifier_kw: Any) -> None:
        self.pki, self.clock = pki, Clock()
        self.agent = make_agent(tmp, pki, self.clock)
        self.agent.profile = "wimse"
        self.status = StatusChecker(refresh=False, clock=self.clock, fetch=False)
        self.jwks = ca_wit.wit_jwks(pki.issuing, [pki.issuing, pki.root])
        verifier_kw.setdefault("profiles", ("agentca", "wimse"))
        self.verifier = Verifier(
            [pki.root],
            StaticInventory([model_digest().hex()]),
            self.status,
            clock=self.clock,
            **CONFIG,
            **verifier_kw,
        )

    def staple(self) -> bytes:
        return self.pki.ocsp_response(self.agent.credential.certificate, this_update=self.clock())

    def request(self, url: str = URL, **kw: Any) -> tuple[RequestView, dict[str, str]]:
        return signed_view(self.agent, url=url, staple=self.staple(), **kw)

    def check(self, req: RequestView, profiles: tuple[str, ...] | None = None) -> str | None:
        d = self.verifier.decide(req, SCOPE, profiles)
        return None if d.allowed else d.denial.check.value  # type: ignore[union-attr]

    def mint(self, key: ec.EllipticCurvePrivateKey | None = None, **kw: Any) -> str:
        cert = self.agent.credential.certificate
        if key is not None:
            _, cert = self.pki.issue(key)
        now = datetime.fromtimestamp(self.clock(), UTC)
        args: dict[str, Any] = {"lifetime": timedelta(minutes=10)} | kw
        signing = args.pop("signing_key", self.pki.issuing_key)
        return ca_wit.mint_wit(signing, args.pop("iss", ISS), cert, now, **args).token

    def with_wit(self, token: str) -> None:
        self.agent.use_wit = True
        self.agent.wit, self.agent.wit_expires = token, self.clock() + 3600


@pytest.fixture
def env(pki: Pki, tmp_path: Path) -> Env:
    return Env(pki, tmp_path)


def resign(
    agent: Agent, req: RequestView, url: str, covered: list[str], params: str
) -> RequestView:
    """``req`` signed again by ``agent``'s key over ``covered`` with ``params`` verbatim."""
    headers = dict(req.headers)
    params_value = agent_sig.signature_params(covered, []) + params
    base = agent_sig.signature_base(req.method, url, headers, covered, params_value)
    sig = agent_sig.sign_base(agent.key, base)
    headers["signature-input"] = f"wimse={params_value}"
    headers["signature"] = f"wimse={agent_sig.sf_bytes(sig)}"
    return RequestView(**{**req.__dict__, "headers": headers})


def replace_header(req: RequestView, name: str, value: str) -> RequestView:
    return RequestView(**{**req.__dict__, "headers": {**req.headers, name: value}})


def test_wimse_signature_follows_the_draft(env: Env) -> None:
    req, headers = env.request()
    # -07 (WGLC, #297): @path and @query, not @request-target
    assert headers["Signature-Input"].startswith('wimse=("@method" "@authority" "@path" "@query" ')
    sig = parse_signature(req.headers, WIMSE_TAG)
    assert {"keyid", "alg"}.isdisjoint(sig.params)
    assert set(sig.params) == {"created", "expires", "nonce", "tag", "wimse-aud"}
    assert sig.params["wimse-aud"] == "http://gw.local/orders"  # target URI without query
    for name in ("content-type", "content-digest", "client-cert", "agentca-provenance"):
        assert name in sig.covered
    assert "@request-target" not in sig.covered
    assert env.check(req) is None


def test_a_draft_07_signature_without_authority_is_accepted(env: Env) -> None:
    """What a -07 peer sends: @method @path @query, no @authority, no @request-target."""
    req, _ = env.request()
    sig = parse_signature(req.headers, WIMSE_TAG)
    rest = [c for c in sig.covered if c not in ("@method", "@authority", "@request-target")]
    covered = ["@method", "@path", "@query", *[c for c in rest if c not in ("@path", "@query")]]
    params = sig.params_value[sig.params_value.index(")") + 1 :]
    assert env.check(resign(env.agent, req, URL, covered, params)) is None


def test_request_target_instead_of_path_and_query_is_refused(env: Env) -> None:
    """A -06 style signature over @request-target does not meet -07's @path and @query."""
    req, _ = env.request()
    sig = parse_signature(req.headers, WIMSE_TAG)
    covered = [c for c in sig.covered if c not in ("@path", "@query")]
    covered.insert(1, "@request-target")
    params = sig.params_value[sig.params_value.index(")") + 1 :]
    assert env.check(resign(env.agent, req, URL, covered, params)) == "covered-components"


def test_profiles_are_accepted_per_deployment_and_per_route(pki: Pki, tmp_path: Path) -> None:
    only_agentca = Env(pki, tmp_path / "a", profiles=("agentca",))
    wimse_req, _ = only_agentca.request()
    assert only_agentca.check(wimse_req) == "credentials-missing"
    # a route that accepts wimse on a verifier whose default is agentca
    assert only_agentca.check(wimse_req, profiles=("wimse",)) is None
    only_agentca.agent.profile = "agentca"
    agentca_req, headers = only_agentca.request()
    assert 'tag="agentca"' in headers["Signature-Input"]
    assert only_agentca.check(agentca_req, profiles=("wimse",)) == "credentials-missing"
    assert only_agentca.check(agentca_req) is None
    with pytest.raises(ValueError, match="profiles"):
        profiles_named(("wimse", "jwt"))


@pytest.mark.parametrize("extra", [';keyid="k1"', ';alg="ecdsa-p256-sha256"'])
def test_keyid_and_alg_are_refused(env: Env, extra: str) -> None:
    req, _ = env.request()
    sig = parse_signature(req.headers, WIMSE_TAG)
    p = sig.params
    params = (
        f';created={p["created"]};expires={p["expires"]};nonce="{p["nonce"]}"'
        f';tag="{WIMSE_TAG}";wimse-aud="http://gw.local/orders"'
    )
    assert env.check(resign(env.agent, req, URL, list(sig.covered), params)) is None
    req, _ = env.request()
    sig = parse_signature(req.headers, WIMSE_TAG)
    p = sig.params
    params = (
        f';created={p["created"]};expires={p["expires"]};nonce="{p["nonce"]}"'
        f';tag="{WIMSE_TAG}";wimse-aud="http://gw.local/orders"' + extra
    )
    assert env.check(resign(env.agent, req, URL, list(sig.covered), params)) == (
        "malformed-credentials"
    )


@pytest.mark.parametrize(
    "drop", ["@path", "@query", "@method", "content-digest", "content-type", "client-cert"]
)
def test_required_components(env: Env, drop: str) -> None:
    req, _ = env.request()
    sig = parse_signature(req.headers, WIMSE_TAG)
    covered = [c for c in sig.covered if c != drop]
    params = sig.params_value[sig.params_value.index(")") + 1 :]
    assert env.check(resign(env.agent, req, URL, covered, params)) == "covered-components"


@pytest.mark.parametrize(
    ("audience", "check"),
    [
        ("http://gw.local", None),
        ("http://gw.local/orders", None),
        ("http://GW.local:80/orders", None),
        ("http://gw.local/other", "audience-mismatch"),
        ("http://evil.example/orders", "audience-mismatch"),
        ("http://gw.local/orders?venue=x", "audience-mismatch"),
    ],
)
def test_audience(env: Env, audience: str, check: str | None) -> None:
    env.agent.audience = audience
    req, _ = env.request()
    assert env.check(req) == check


def wit_env(pki: Pki, tmp: Path, **kw: Any) -> Env:
    jwks = ca_wit.wit_jwks(pki.issuing, [pki.issuing, pki.root])
    return Env(pki, tmp, wit=WitVerifier(jwks, ISS), **kw)


def test_wit_is_verified_and_bound_to_the_certificate(pki: Pki, tmp_path: Path) -> None:
    e = wit_env(pki, tmp_path)
    token = e.mint()
    header, claims = (json.loads(base64.urlsafe_b64decode(p + "==")) for p in token.split(".")[:2])
    assert header["typ"] == "wit+jwt" and header["alg"] == "ES256"
    assert claims["sub"] == "spiffe://agentca.local/agent/ExecutionAgent-ETH-01"
    assert claims["cnf"]["jwk"]["alg"] == "ES256" and "d" not in claims["cnf"]["jwk"]
    assert claims["exp"] - claims["iat"] == 600 and claims["iss"] == ISS and claims["jti"]
    e.with_wit(token)
    req, headers = e.request()
    assert headers["Workload-Identity-Token"] == token
    assert "workload-identity-token" in parse_signature(req.headers, WIMSE_TAG).covered
    d = e.verifier.decide(req, SCOPE)
    assert d.allowed and d.extra["wit_jti"] == claims["jti"]


def test_wit_refusals(pki: Pki, tmp_path: Path) -> None:
    e = wit_env(pki, tmp_path)
    other_key = ec.generate_private_key(ec.SECP256R1())
    cases = {
        "another key's WIT": (e.mint(key=other_key), "signature-invalid"),
        "signed by another key": (e.mint(signing_key=other_key), "signature-invalid"),
        "another issuer": (e.mint(iss="http://evil"), "signature-invalid"),
        "expired": (e.mint(lifetime=timedelta(seconds=-30)), "signature-expired"),
        "not a JWT": ("abc", "malformed-credentials"),
    }
    good = e.mint()
    head, body, sig = good.split(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged["sub"] = "spiffe://agentca.local/agent/Other"
    forged_body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    cases["claims changed"] = (f"{head}.{forged_body}.{sig}", "signature-invalid")
    for what, (token, check) in cases.items():
        e.with_wit(token)
        req, _ = e.request()
        assert e.check(req) == check, what


def test_wit_required_and_uncovered(pki: Pki, tmp_path: Path) -> None:
    e = wit_env(pki, tmp_path, require_wit=True)
    req, _ = e.request()
    assert e.check(req) == "credentials-missing"
    e.with_wit(e.mint())
    req, _ = e.request()
    assert e.check(req) is None
    # the WIT travels but the signature does not cover it
    req, _ = e.request()
    sig = parse_signature(req.headers, WIMSE_TAG)
    covered = [c for c in sig.covered if c != "workload-identity-token"]
    params = sig.params_value[sig.params_value.index(")") + 1 :]
    assert e.check(resign(e.agent, req, URL, covered, params)) == "covered-components"
    # a gateway that verifies no WIT refuses one rather than ignore it
    plain = Env(pki, tmp_path / "plain")
    plain.with_wit(e.mint())
    req, _ = plain.request()
    assert plain.check(req) == "malformed-credentials"
    # the agentca profile neither covers nor reads a WIT header
    plain.agent.profile = "agentca"
    req, _ = plain.request()
    assert plain.check(replace_header(req, "workload-identity-token", "junk")) is None
    with pytest.raises(ValueError, match="require_wit"):
        Env(pki, tmp_path / "x", require_wit=True)


def test_hsm_style_key_signs_without_exporting(pki: Pki, tmp_path: Path) -> None:
    """joserfc signs through :class:`ca.wit.HsmJwsAlgorithm` with a key that refuses export."""
    real = pki.issuing_key

    class NoExport(ec.EllipticCurvePrivateKey):
        curve = real.curve
        key_size = real.key_size

        def public_key(self) -> ec.EllipticCurvePublicKey:
            return real.public_key()

        def sign(self, data: Any, algorithm: Any) -> bytes:
            return real.sign(data, algorithm)

        def exchange(self, *a: Any) -> bytes:
            raise AssertionError("no ECDH")

        def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
            raise AssertionError("exported the private key")

        def private_bytes(self, *a: Any) -> bytes:
            raise AssertionError("exported the private key")

        def __copy__(self) -> NoExport:
            return self

        def __deepcopy__(self, memo: Any) -> NoExport:
            return self

    e = wit_env(pki, tmp_path)
    token = e.mint(signing_key=NoExport())
    claims = WitVerifier(e.jwks, ISS).verify(token, e.clock())
    assert claims.sub.endswith("/agent/ExecutionAgent-ETH-01")


def test_wit_request_statement_is_one_function() -> None:
    """The agent signs and the CA verifies the WIT request statement of wire.renewal."""
    assert agent_wimse.wit_request_statement is ca_wit.wit_request_statement
    assert agent_wimse.wit_request_statement is renewal.wit_request_statement
    assert renewal.wit_request_statement(1, b"c", None) == renewal.renewal_statement(
        1, renewal.WIT_REQUEST_CONTEXT, b"c", None, None
    )
    assert agent_wimse.audience_of("HTTPS://Svc.Example:443/a/b?q=1#f") == "https://svc.example/a/b"


def _shell_headers(e: Env, profile: str, path: str = "/orders") -> tuple[dict[str, str], bytes]:
    e.agent.profile = profile
    body = b'{"side":"buy"}'
    _, headers = signed_view(e.agent, "POST", f"http://gw.local{path}", body, staple=e.staple())
    return headers, body


def test_wsgi_and_flask_shells_override_profiles_per_route(pki: Pki, tmp_path: Path) -> None:
    from flask import Flask, g, jsonify

    from gateway import AgentGatewayMiddleware
    from gateway.flask_ext import AgentGateway, accepts_profiles, requires_scope

    e = Env(pki, tmp_path, profiles=("agentca",))

    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wsgi = Flask("w")
    wsgi.wsgi_app = AgentGatewayMiddleware(  # type: ignore[method-assign]
        inner,
        e.verifier,
        {"POST /orders": SCOPE, "POST /legacy": SCOPE},
        profiles={"POST /orders": ("wimse",)},
    )
    client = wsgi.test_client()
    headers, body = _shell_headers(e, "wimse")
    assert (
        client.post("/orders", data=body, headers=headers, base_url="http://gw.local").status_code
        == 200
    )
    headers, body = _shell_headers(e, "agentca")
    denied = client.post("/orders", data=body, headers=headers, base_url="http://gw.local")
    assert denied.json["check"] == "credentials-missing"
    assert denied.status_code == 401 and "Accept-Signature" in denied.headers
    headers, body = _shell_headers(e, "wimse", "/legacy")  # no override: the verifier's agentca
    denied = client.post("/legacy", data=body, headers=headers, base_url="http://gw.local")
    assert denied.json["check"] == "credentials-missing"
    assert denied.status_code == 401  # an agentca route answers as agentca does
    # a refused WIMSE request on a WIMSE route is a 400 (draft 3.5), problem body alike
    headers, body = _shell_headers(e, "wimse")
    denied = client.post("/orders", data=body + b" ", headers=headers, base_url="http://gw.local")
    assert denied.status_code == 400 and denied.json["check"] == "content-digest-mismatch"
    assert denied.json["status"] == 400 and "Accept-Signature" not in denied.headers

    app = Flask("f")
    AgentGateway(app, e.verifier)

    @app.post("/orders")
    @requires_scope(SCOPE)
    @accepts_profiles("wimse")
    def orders() -> Any:
        return jsonify(agent=g.agent.name)

    client = app.test_client()
    headers, body = _shell_headers(e, "wimse")
    ok = client.post("/orders", data=body, headers=headers, base_url="http://gw.local")
    assert ok.status_code == 200 and ok.json == {"agent": "ExecutionAgent-ETH-01"}
    again = client.post("/orders", data=body, headers=headers, base_url="http://gw.local")
    assert again.status_code == 400 and again.json["check"] == "nonce-replayed"
    headers, body = _shell_headers(e, "agentca")
    denied = client.post("/orders", data=body, headers=headers, base_url="http://gw.local")
    assert denied.json["check"] == "credentials-missing" and denied.status_code == 401


@pytest.mark.parametrize("kind", ["p256", "p384", "ed25519", "rsa"])
def test_wit_signing_key_types(pki: Pki, tmp_path: Path, kind: str) -> None:
    """Every issuing-CA key type agentca supports signs WITs that joserfc verifies."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key: Any = {
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
        "rsa": lambda: rsa.generate_private_key(65537, 2048),
    }[kind]()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "WIT issuer")])
    now = datetime.fromtimestamp(Clock()(), UTC)
    issuer = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
        .sign(key, None if kind == "ed25519" else ca_wit.hashes.SHA256())
    )  # fmt: skip
    _, cert = pki.issue()
    token = ca_wit.mint_wit(key, ISS, cert, now, timedelta(minutes=5)).token
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert (
        header["alg"]
        == {"p256": "ES256", "p384": "ES384", "ed25519": "EdDSA", "rsa": "RS256"}[kind]
    )
    claims = WitVerifier(ca_wit.wit_jwks(issuer, [issuer]), ISS).verify(token, now.timestamp())
    assert claims.sub == ca_wit.subject_of(cert)
    # and the JWKS of another key of the same type does not verify it
    other = ca_wit.wit_jwks(pki.issuing, [pki.issuing])
    with pytest.raises(Denied) as refused:
        WitVerifier(other, ISS).verify(token, now.timestamp())
    assert refused.value.check is Check.SIGNATURE


def test_a_new_certificate_drops_the_wit(env: Env) -> None:
    env.with_wit(env.mint())
    assert env.agent.wit is not None
    from agent.client import Credential

    _, cert = env.pki.issue(env.agent.key)  # type: ignore[arg-type]
    env.agent._install(Credential(cert, (env.pki.issuing, env.pki.root)))
    assert env.agent.wit is None and env.agent.wit_expires == 0.0


def test_wit_for_an_ed25519_agent(pki: Pki, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    e = wit_env(pki, tmp_path)
    key = ed25519.Ed25519PrivateKey.generate()
    _, cert = pki.issue(key)  # type: ignore[arg-type]
    e.agent = make_agent(tmp_path / "ed", pki, e.clock, cert=cert, key=key)  # type: ignore[arg-type]
    e.agent.profile = "wimse"
    e.with_wit(e.mint())
    claims = json.loads(base64.urlsafe_b64decode(e.agent.wit.split(".")[1] + "=="))  # type: ignore[union-attr]
    assert claims["cnf"]["jwk"] == {
        **claims["cnf"]["jwk"],
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
    }
    req, _ = e.request()
    assert e.check(req) is None


def test_a_wimse_nonce_is_refused_again_whoever_sends_it(env: Env, tmp_path: Path) -> None:
    """-07 (WGLC #297): recipients reject duplicate nonces without regard to sender."""
    first, _ = env.request()
    assert env.check(first) is None
    nonce = parse_signature(first.headers, WIMSE_TAG).params["nonce"]
    other = make_agent(
        tmp_path / "other", env.pki, env.clock, key=ec.generate_private_key(ec.SECP256R1())
    )
    other.profile = "wimse"
    staple = env.pki.ocsp_response(other.credential.certificate, this_update=env.clock())
    req, _ = signed_view(other, url=URL, staple=staple)
    sig = parse_signature(req.headers, WIMSE_TAG)
    params = sig.params_value[sig.params_value.index(")") + 1 :]
    params = params.replace(f'nonce="{sig.params["nonce"]}"', f'nonce="{nonce}"')
    assert env.check(resign(other, req, URL, list(sig.covered), params)) == "nonce-replayed"
    # the agentca profile keeps its nonces per certificate
    env.agent.profile = other.profile = "agentca"
    mine, _ = env.request()
    assert env.check(mine) is None


@pytest.mark.parametrize(("flag", "check"), [("?1", "malformed-credentials"), ("?0", None)])
def test_a_required_signed_response_is_refused(env: Env, flag: str, check: str | None) -> None:
    """-07 3.4: a server that must sign the response (wimse-sign-response true) and cannot
    MUST NOT answer with a successful unsigned response; this gateway signs no responses."""
    req, _ = env.request()
    sig = parse_signature(req.headers, WIMSE_TAG)
    params = sig.params_value[sig.params_value.index(")") + 1 :] + f";wimse-sign-response={flag}"
    assert env.check(resign(env.agent, req, URL, list(sig.covered), params)) == check
