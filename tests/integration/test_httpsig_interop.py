"""RFC 9421 interop with an independent implementation, and Workload Identity Tokens, over
real HTTP: a CA API on SoftHSM2 (SQLite) issues the agent's certificate through ``/v1/enroll``
and mints WITs through ``/v1/wit``; a WSGI gateway (real HTTP server, real Verifier) checks
signed requests.

* http-message-signatures 3.0.0 verifies what the agent SDK signs, in both profiles (its own
  signature-base builder and algorithm; its ``verify()`` front door insists on ``keyid``,
  which neither profile sends (the key travels in ``Client-Cert``; RFC 9421 makes ``keyid``
  optional and WIMSE forbids it), so the test calls the builder that ``verify()`` calls).
* the gateway verifies what that library signs, in both profiles, with the CA-issued
  certificate and its key, through a real HTTP request.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp as x509_ocsp
from http_message_signatures import HTTPMessageVerifier
from http_message_signatures.algorithms import ECDSA_P256_SHA256
from http_sf.compat import Dictionary, Item
from werkzeug.serving import make_server

from agent import Agent, RuntimeProvenance
from agent.client import send
from ca.api.app import create_app
from ca.responder_certs import ensure_responder_certs
from ca.wiring import Runtime, open_runtime
from gateway import AgentGatewayMiddleware, StaticInventory, StatusChecker, Verifier
from gateway.wit import WitVerifier, fetch_jwks, key_thumbprint
from ocsp.options import OcspOptions
from ocsp.wiring import open_responder
from tests.integration.conftest import settings_for
from tests.integration.http import call, serve_in_thread
from tests.support.gateway_pki import MODEL_FILE, PROMPT, model_digest

pytestmark = pytest.mark.integration

AGENT = "interop-agent"
SCOPE = "submit_limit_order"
ORDER = b'{"side":"buy","qty":"2"}'


class World:
    def __init__(self, ca_url: str, rt: Runtime, work: Path) -> None:
        self.ca_url, self.rt, self.work = ca_url, rt, work
        self.op = rt.api_tokens.create("ops", "operator")[0]
        self.gateway_url = ""
        self.apps: dict[str, Any] = {}

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return call(self.ca_url, method, path, body, token=self.op)

    def agent(self, profile: str = "agentca", **kw: Any) -> Agent:
        (self.work / "model.bin").write_bytes(MODEL_FILE)
        runtime = RuntimeProvenance("claude-x", self.work / "model.bin", prompt_bytes=PROMPT)
        key = ec.generate_private_key(ec.SECP256R1())
        a = Agent(AGENT, key, runtime, self.ca_url, profile=profile, **kw)
        token = self.api("POST", f"/v1/agents/{AGENT}/enrollment-tokens").json["token"]
        a.enroll(token)
        a.staple = None
        return a

    def staple(self, cert: x509.Certificate) -> bytes:
        issuing = self.rt.authority.chain()[0]
        der = (
            x509_ocsp.OCSPRequestBuilder()
            .add_certificate(cert, issuing, hashes.SHA256())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        responder = open_responder(self.rt.settings, OcspOptions())
        try:
            return responder.responder.respond(der).der
        finally:
            responder.close()


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    ident = environ["agentca.agent"]
    body = json.dumps({"agent": ident.name, "spiffe_id": ident.spiffe_id}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, hsm_config: Any) -> Iterator[World]:
    work = tmp_path_factory.mktemp("httpsig-interop")
    settings = settings_for(
        work, f"sqlite:///{work}/ca.sqlite3", hsm_config, enroll_rate_per_second=1000,
        enroll_burst=1000,
    )  # fmt: skip
    rt = open_runtime(settings, create=True)
    rt.authority.initialise("ec-p384", "ec-p256")
    ensure_responder_certs(settings, rt.sessions, rt.keys)
    with serve_in_thread(create_app(settings, runtime_factory=lambda: rt)) as ca_url:
        w = World(ca_url, rt, work)
        assert w.api("POST", "/v1/scopes", {"name": SCOPE}).status == 201
        model = {"digest": model_digest().hex(), "model_type": "claude-x", "environment": "prod"}
        assert w.api("POST", "/v1/models", model).status == 201
        reg = {
            "name": AGENT,
            "officer": "officer@bank.example",
            "environment": "prod",
            "model_type": "claude-x",
            "scopes": [SCOPE],
            "model_digests": [model_digest().hex()],
            "prompt_digests": [hashlib.sha256(PROMPT).hexdigest()],
            "key_types": ["ec-p256"],
        }
        r = w.api("POST", "/v1/agents", reg)
        assert r.status == 201, r.body
        # the gateway: one real HTTP server; each test picks the app (verifier) it serves
        server = make_server("127.0.0.1", 0, lambda e, s: w.apps["current"](e, s), threaded=True)
        import threading

        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        w.gateway_url = f"http://127.0.0.1:{server.server_port}"
        try:
            yield w
        finally:
            server.shutdown()
            thread.join(5)
    rt.engine.dispose()


def gateway(w: World, **verifier_kw: Any) -> Verifier:
    verifier = Verifier(
        [w.rt.authority.chain()[1]],
        StaticInventory([model_digest().hex()]),
        StatusChecker(max_age=3600, fetch=False, refresh=False),
        audience=w.gateway_url,
        trust_domain=w.rt.settings.trust_domain,
        **verifier_kw,
    )
    w.apps["current"] = AgentGatewayMiddleware(_app, verifier, routes={"POST /orders": SCOPE})
    return verifier


def wit_verifier(w: World) -> WitVerifier:
    jwks = fetch_jwks(w.ca_url + "/ca/wit-jwks.json")
    return WitVerifier(jwks, w.rt.settings.effective_public_base_url)


# -- the independent library verifies the agent SDK -------------------------------------------
def library_verify(method: str, url: str, headers: dict[str, str], body: bytes, tag: str) -> Any:
    """Verify with http-message-signatures' own base builder and ECDSA algorithm."""
    message = requests.Request(method, url, headers=headers, data=body).prepare()
    verifier = HTTPMessageVerifier(signature_algorithm=ECDSA_P256_SHA256, key_resolver=None)
    ((label, sig_input, signature),) = list(
        verifier._get_sig_inputs_and_signatures(message, expect_tag=tag)
    )
    cert = x509.load_der_x509_certificate(base64.b64decode(headers["Client-Cert"].strip(":")))
    base, _, elements = verifier._build_signature_base(
        message, covered_component_ids=list(sig_input), signature_params=sig_input.params
    )
    ECDSA_P256_SHA256(public_key=cert.public_key()).verify(
        signature=signature.value, message=base.encode()
    )
    return label, dict(sig_input.params), elements


@pytest.mark.parametrize("profile", ["agentca", "wimse"])
def test_library_verifies_what_the_sdk_signs(world: World, profile: str) -> None:
    a = world.agent(profile, use_wit=profile == "wimse")
    url = world.gateway_url + "/orders?venue=x"
    headers = {"Content-Type": "application/json"}
    headers.update(a.sign("POST", url, headers, ORDER, auto_staple=False).headers)
    tag = "agentca" if profile == "agentca" else "wimse-workload-to-workload"
    label, params, elements = library_verify("POST", url, headers, ORDER, tag)
    if profile == "wimse":
        assert label == "wimse" and "alg" not in params and "keyid" not in params
        assert params["wimse-aud"] == world.gateway_url + "/orders"
        assert elements['"@path"'] == "/orders" and elements['"@query"'] == "?venue=x"
        assert elements['"workload-identity-token"'] == a.wit
    else:
        assert label == "agentca" and params["alg"] == "ecdsa-p256-sha256"
    # the library refuses the same headers on another request
    with pytest.raises(InvalidSignature):
        library_verify("POST", url.replace("venue=x", "venue=y"), headers, ORDER, tag)


# -- the gateway verifies what the library signs, over real HTTP -----------------------------
def library_sign(
    w: World,
    a: Agent,
    profile: str,
    covered: list[str],
    extra_headers: dict[str, str],
    body: bytes,
    path: str = "/orders?venue=x",
) -> dict[str, str]:
    """Headers of a request signed by http-message-signatures with the agent's key."""
    cred = a.credential
    der = cred.certificate.public_bytes(serialization.Encoding.DER)
    chain = cred.chain[0].public_bytes(serialization.Encoding.DER)
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    headers = {
        "Content-Type": "application/json",
        "Content-Digest": f"sha-256=:{digest}:",
        "Client-Cert": ":" + base64.b64encode(der).decode() + ":",
        "Client-Cert-Chain": ":" + base64.b64encode(chain).decode() + ":",
        "Agentca-OCSP": ":" + base64.b64encode(w.staple(cred.certificate)).decode() + ":",
        "Agentca-Provenance": (
            f"model=:{base64.b64encode(model_digest()).decode()}:, "
            f"prompt=:{base64.b64encode(hashlib.sha256(PROMPT).digest()).decode()}:"
        ),
        **extra_headers,
    }
    url = w.gateway_url + path
    message = requests.Request("POST", url, headers=headers, data=body).prepare()
    created = int(time.time())
    params: dict[str, Any] = collections.OrderedDict(
        created=created, expires=created + 30, nonce=base64.urlsafe_b64encode(
            hashlib.sha256(str(time.time_ns()).encode()).digest()[:18]).decode(),
    )  # fmt: skip
    if profile == "wimse":
        params["tag"] = "wimse-workload-to-workload"
        params["wimse-aud"] = w.gateway_url + path.partition("?")[0]
        label = "wimse"
    else:
        params["wimse-aud"] = w.gateway_url
        params["tag"] = "agentca"
        params["alg"] = "ecdsa-p256-sha256"
        label = "agentca"
    verifier = HTTPMessageVerifier(signature_algorithm=ECDSA_P256_SHA256, key_resolver=None)

    base, params_node, _ = verifier._build_signature_base(
        message, covered_component_ids=[Item(c) for c in covered], signature_params=params
    )
    signature = ECDSA_P256_SHA256(private_key=a.key).sign(base.encode())
    headers["Signature-Input"] = str(Dictionary({label: params_node}))
    headers["Signature"] = str(Dictionary({label: signature}))
    return headers


IDENTITY = ["client-cert", "client-cert-chain", "agentca-ocsp", "agentca-provenance"]
COVERED = {
    "agentca": ["@method", "@authority", "@path", "@query", "content-type", "content-digest"],
    "wimse": ["@method", "@path", "@query", "content-type", "content-digest"],  # -07
}


@pytest.mark.parametrize("profile", ["agentca", "wimse"])
def test_gateway_verifies_what_the_library_signs(world: World, profile: str) -> None:
    gateway(world, profiles=("agentca", "wimse"))
    a = world.agent()
    headers = library_sign(world, a, profile, COVERED[profile] + IDENTITY, {}, ORDER)
    r = send("POST", world.gateway_url + "/orders?venue=x", headers, ORDER)
    assert r.status == 200, r.body
    assert r.json()["spiffe_id"] == f"spiffe://{world.rt.settings.trust_domain}/agent/{AGENT}"
    # the same signature over another body is refused (and so is its replay)
    refused = 400 if profile == "wimse" else 401  # draft 3.5: not 401 for WIMSE
    r = send("POST", world.gateway_url + "/orders?venue=x", headers, b'{"qty":"2000"}')
    assert r.status == refused and r.json()["check"] == "content-digest-mismatch"
    assert r.json()["status"] == refused
    r = send("POST", world.gateway_url + "/orders?venue=x", headers, ORDER)
    assert r.status == refused and r.json()["check"] == "nonce-replayed"


def test_gateway_verifies_a_library_signed_wit_request(world: World) -> None:
    gateway(world, profiles=("wimse",), wit=wit_verifier(world), require_wit=True)
    a = world.agent("wimse", use_wit=True)
    token = a.fetch_wit()
    wit = {"Workload-Identity-Token": token}
    covered = COVERED["wimse"] + ["workload-identity-token"] + IDENTITY
    r = send("POST", world.gateway_url + "/orders", library_sign(world, a, "wimse", covered, wit,
             ORDER, "/orders"), ORDER)  # fmt: skip
    assert r.status == 200, r.body
    # without the WIT (required here) or with the WIT left out of the signature: refused
    r = send("POST", world.gateway_url + "/orders",
             library_sign(world, a, "wimse", COVERED["wimse"] + IDENTITY, {}, ORDER, "/orders"),
             ORDER)  # fmt: skip
    assert r.status == 400 and r.json()["check"] == "credentials-missing"
    r = send("POST", world.gateway_url + "/orders",
             library_sign(world, a, "wimse", COVERED["wimse"] + IDENTITY, wit, ORDER, "/orders"),
             ORDER)  # fmt: skip
    assert r.status == 400 and r.json()["check"] == "covered-components"
    # the agentca profile is not accepted on this deployment (an agentca refusal: 401)
    r = send("POST", world.gateway_url + "/orders",
             library_sign(world, a, "agentca", COVERED["agentca"] + IDENTITY, {}, ORDER,
                          "/orders"), ORDER)  # fmt: skip
    assert r.status == 401 and r.json()["check"] == "credentials-missing"


def test_sdk_wimse_requests_pass_the_gateway_over_http(world: World) -> None:
    gateway(world, profiles=("wimse",), wit=wit_verifier(world), require_wit=True)
    a = world.agent("wimse", use_wit=True)
    a.staple = None
    r = a.request("POST", world.gateway_url + "/orders", json_body={"qty": "2"})
    # no staple and no OCSP fetch allowed on this gateway: status unknown, after the WIT passed
    assert r.status == 400 and r.json()["check"] == "status-unknown", r.body
    from agent.staple import Staple

    now = datetime.now(UTC)
    a.staple = Staple(world.staple(a.credential.certificate), "good", now, None, time.time())
    json_type = {"Content-Type": "application/json"}
    signed = a.sign("POST", world.gateway_url + "/orders", json_type, ORDER, auto_staple=False)
    r = send("POST", world.gateway_url + "/orders", {**json_type, **signed.headers}, ORDER)
    assert r.status == 200, r.body
    # a raw body without a Content-Type: the SDK names one before signing (urllib would add
    # an unsigned one, which the gateway refuses as an uncovered content-type)
    r = a.request("POST", world.gateway_url + "/orders", body=ORDER)
    assert r.status == 200, r.body


# -- the WIT endpoint ------------------------------------------------------------------------
def test_wit_minted_by_the_hsm_key_verifies_with_the_published_jwks(world: World) -> None:
    a = world.agent("wimse")
    token = a.fetch_wit(lifetime_seconds=300)
    head, payload, _ = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    jwks = fetch_jwks(world.ca_url + "/ca/wit-jwks.json")
    (jwk,) = jwks["keys"]
    issuing, root = world.rt.authority.chain()
    assert header == {"typ": "wit+jwt", "alg": "ES256", "kid": jwk["kid"]}
    assert jwk["kid"] == key_thumbprint(issuing.public_key()) and "d" not in jwk
    assert [base64.b64decode(c) for c in jwk["x5c"]] == [
        c.public_bytes(serialization.Encoding.DER) for c in (issuing, root)
    ]
    assert claims["exp"] - claims["iat"] == 300
    assert claims["sub"] == f"spiffe://{world.rt.settings.trust_domain}/agent/{AGENT}"
    verified = wit_verifier(world).verify(token, time.time())
    assert verified.cnf_thumbprint == key_thumbprint(a.credential.certificate.public_key())
    assert verified.cnf_alg == "ES256" and verified.jti == claims["jti"]


def _wit_body(a: Agent, created: int | None = None, lifetime: int | None = None,
              signed_lifetime: int | None = None) -> dict[str, Any]:  # fmt: skip
    from agent.csr import sign_statement
    from agent.wimse import wit_request_statement

    created = int(time.time()) if created is None else created
    der = a.credential.certificate.public_bytes(serialization.Encoding.DER)
    statement = wit_request_statement(created, der, signed_lifetime)
    body: dict[str, Any] = {
        "certificate": a.credential.certificate.public_bytes(serialization.Encoding.PEM).decode(),
        "created": created,
        "proof": base64.b64encode(sign_statement(a.key, statement)).decode(),
    }
    if lifetime is not None:
        body["lifetime_seconds"] = lifetime
    return body


def test_wit_endpoint_refusals(world: World) -> None:
    a = world.agent("wimse")
    cases = [
        (_wit_body(a, lifetime=600, signed_lifetime=60), 401, "unauthenticated"),
        (_wit_body(a, created=int(time.time()) - 600), 401, "unauthenticated"),
        (_wit_body(a, created=int(time.time()) + 120), 401, "unauthenticated"),
        (_wit_body(a, lifetime=7200, signed_lifetime=7200), 400, "bad-request"),
        ({**_wit_body(a), "proof": "%%%"}, 400, "bad-request"),
    ]
    for body, status, slug in cases:
        r = call(world.ca_url, "POST", "/v1/wit", body)
        assert r.status == status and r.json["type"].endswith(slug), r.body
    # a foreign CA's certificate fails (a renewal proof: tests/unit/test_wimse_review.py)
    other = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, AGENT)])
    foreign = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(other.public_key()).serial_number(7)
        .not_valid_before(a.credential.certificate.not_valid_before_utc)
        .not_valid_after(a.credential.certificate.not_valid_after_utc)
        .sign(other, hashes.SHA256())
    )  # fmt: skip
    body = _wit_body(a)
    body["certificate"] = foreign.public_bytes(serialization.Encoding.PEM).decode()
    r = call(world.ca_url, "POST", "/v1/wit", body)
    assert r.status == 401 and "not issued by this CA" in r.json["detail"]
    # held, then revoked: no WIT
    serial = format(a.credential.certificate.serial_number, "x")
    r = world.api("POST", f"/v1/certificates/{serial}/revoke", {"reason": "certificateHold"})
    assert r.status == 200, r.body
    r = call(world.ca_url, "POST", "/v1/wit", _wit_body(a))
    assert r.status == 401 and "revoked" in r.json["detail"], r.body
