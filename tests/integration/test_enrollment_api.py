"""Enrollment, renewal and operator endpoints over real HTTP, on SQLite and PostgreSQL.

The app runs in this process (werkzeug on loopback) so it can share the process-wide SoftHSM2
token and record which documented operations the tests exercised.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from flask import request as flask_request
from sqlalchemy import func, select

from ca.api.app import create_app
from ca.api.openapi import build_document
from ca.extensions import Digest, Provenance, build_agent_csr, read_agent_extensions
from ca.proof import renewal_statement
from ca.store.models import Certificate, EnrollmentToken
from ca.wiring import Runtime, open_runtime
from tests.integration.conftest import settings_for
from tests.integration.http import Reply, call, serve_in_thread

MODEL_A = "a1" * 32
MODEL_B = "b2" * 32
PROMPT = "c3" * 32
HIT: set[tuple[str, str]] = set()
NONCONFORMING: list[str] = []  # JSON answers that do not match their documented schema
DOCUMENT = build_document()


def _check_answer(method: str, rule: str, resp: Any) -> None:
    """Validate a JSON answer against the schema the document gives for its status."""
    from jsonschema import Draft202012Validator

    mimetype = resp.mimetype
    if mimetype not in ("application/json", "application/problem+json"):
        return
    path = rule.replace("<", "{").replace(">", "}")
    responses = DOCUMENT["paths"][path][method]["responses"]
    answer = responses.get(str(resp.status_code), responses["default"])
    if "$ref" in answer:
        answer = DOCUMENT["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    schema = answer.get("content", {}).get(mimetype, {}).get("schema")
    if schema is None:
        NONCONFORMING.append(f"{method} {path} {resp.status_code}: {mimetype} not documented")
        return
    validator = Draft202012Validator({**schema, "components": DOCUMENT["components"]})
    for error in validator.iter_errors(resp.get_json()):
        NONCONFORMING.append(f"{method} {path} {resp.status_code}: {error.message}")


class Env:
    """The running app plus tokens and helpers for one backend."""

    def __init__(self, base: str, rt: Runtime, work: Path) -> None:
        self.base, self.rt, self.work = base, rt, work
        self.op = rt.api_tokens.create("ops", "operator")[0]
        self.auditor = rt.api_tokens.create("audit", "auditor")[0]
        self.reader = rt.api_tokens.create("reader", "read-only")[0]

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = "op", **kw: Any
    ) -> Reply:
        secret = {"op": self.op, "auditor": self.auditor, "reader": self.reader}.get(
            token or "", token
        )
        return call(self.base, method, path, body, token=secret, **kw)

    def certificate_rows(self) -> int:
        with self.rt.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(Certificate)) or 0)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, hsm_config
) -> Iterator[Env]:
    work = tmp_path_factory.mktemp(f"enroll-{request.param}")
    url = (
        f"sqlite:///{work}/ca.sqlite3"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_module_url")
    )
    settings = settings_for(
        work, url, hsm_config, enroll_rate_per_second=1000, enroll_burst=1000, max_validity_hours=48
    )
    rt = open_runtime(settings, create=True)
    rt.authority.initialise("ec-p384", "ec-p256")
    app = create_app(settings, runtime_factory=lambda: rt)

    @app.after_request
    def _record(resp):
        if flask_request.url_rule is not None:
            HIT.add((flask_request.method.lower(), flask_request.url_rule.rule))
            _check_answer(flask_request.method.lower(), flask_request.url_rule.rule, resp)
        return resp

    with serve_in_thread(app) as base:
        e = Env(base, rt, work)
        _setup_inventory(e)
        yield e
    rt.engine.dispose()


def _setup_inventory(e: Env) -> None:
    for name in ("query_order_book", "submit_limit_order", "withdraw_funds"):
        assert e.call("POST", "/v1/scopes", {"name": name, "description": name}).status == 201
    for digest in (MODEL_A, MODEL_B):
        r = e.call(
            "POST",
            "/v1/models",
            {"digest": digest, "model_type": "claude-x", "environment": "prod"},
        )
        assert r.status == 201, r.body
    for name, model in (("exec-agent", MODEL_A), ("other-agent", MODEL_B)):
        r = e.call(
            "POST",
            "/v1/agents",
            {
                "name": name,
                "officer": "officer@bank.example",
                "environment": "prod",
                "model_type": "claude-x",
                "scopes": ["query_order_book", "submit_limit_order"],
                "model_digests": [model],
                "prompt_digests": [PROMPT],
                "key_types": ["ec-p256"],
                "max_validity_seconds": 6 * 3600,
                "organization": "Bank",
            },
        )
        assert r.status == 201, r.body


def _token(e: Env, agent: str = "exec-agent", ttl: int | None = None) -> str:
    r = e.call(
        "POST", f"/v1/agents/{agent}/enrollment-tokens", {"ttl_seconds": ttl} if ttl else None
    )
    assert r.status == 201, r.body
    return str(r.json["token"])


def _csr(
    key: Any = None, model: str = MODEL_A, prompt: str = PROMPT, model_type: str = "claude-x"
) -> tuple[Any, bytes]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = build_agent_csr(
        key,
        "exec-agent",
        Provenance(model_type, Digest.sha256_hex(model), Digest.sha256_hex(prompt)),
    )
    return key, csr.public_bytes(serialization.Encoding.PEM)


def _enroll(e: Env, token: str, csr: bytes, **extra: Any) -> Reply:
    return call(e.base, "POST", "/v1/enroll", {"csr": csr.decode(), **extra}, token=token)


def _assert_problem(r: Reply, status: int, slug: str) -> dict[str, Any]:
    assert r.status == status, (r.status, r.body)
    assert r.content_type == "application/problem+json", r.content_type
    problem: dict[str, Any] = r.json
    assert problem["status"] == status and problem["type"].endswith("/" + slug), problem
    assert "Traceback" not in r.body.decode()
    return problem


# -- the full flow ----------------------------------------------------------------------------
def test_enroll_verify_reuse_renew_revoke(env: Env) -> None:
    token = _token(env)
    key, csr = _csr()
    r = _enroll(env, token, csr)
    assert r.status == 201, r.body
    cert = x509.load_pem_x509_certificate(r.json["certificate_pem"].encode())
    chain = [x509.load_pem_x509_certificate(p.encode()) for p in r.json["chain_pem"]]
    (env.work / "agent.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (env.work / "issuing.pem").write_bytes(chain[0].public_bytes(serialization.Encoding.PEM))
    (env.work / "root.pem").write_bytes(chain[1].public_bytes(serialization.Encoding.PEM))
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(env.work / "root.pem"),
            "-untrusted",
            str(env.work / "issuing.pem"),
            str(env.work / "agent.pem"),
        ],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    ext = read_agent_extensions(cert)
    assert ext.authorization.scopes == ("query_order_book", "submit_limit_order")
    assert ext.accountability.officer == "officer@bank.example"
    assert ext.accountability.environment == "prod"
    assert ext.accountability.organization == "Bank"
    assert ext.provenance.model_digest.hex == MODEL_A and ext.provenance.prompt_digest.hex == PROMPT
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= __import__("datetime").timedelta(
        hours=6, minutes=1
    )

    again = _enroll(env, token, _csr()[1])
    _assert_problem(again, 401, "unauthenticated")

    # renew with the current key, onto a new key
    new_key, new_csr = _csr()
    renewed = _renew(env, cert, key, new_csr)
    assert renewed.status == 201, renewed.body
    new_cert = x509.load_pem_x509_certificate(renewed.json["certificate_pem"].encode())
    assert new_cert.public_key() == new_key.public_key()
    assert read_agent_extensions(new_cert).authorization.scopes == ext.authorization.scopes

    # a stale proof, and a proof by another key, are refused
    stale = _renew(env, new_cert, new_key, _csr()[1], created=int(time.time()) - 3600)
    _assert_problem(stale, 401, "unauthenticated")
    forged = _renew(env, new_cert, ec.generate_private_key(ec.SECP256R1()), _csr()[1])
    _assert_problem(forged, 401, "unauthenticated")

    revoked = env.call(
        "POST", f"/v1/certificates/{new_cert.serial_number:x}/revoke", {"reason": "keyCompromise"}
    )
    assert revoked.status == 200 and revoked.json["revocation_reason"] == "keyCompromise"
    after = _renew(env, new_cert, new_key, _csr()[1])
    assert "revoked" in _assert_problem(after, 401, "unauthenticated")["detail"]


def _renew(
    env: Env, cert: x509.Certificate, key: Any, csr_pem: bytes, created: int | None = None
) -> Reply:
    created = int(time.time()) if created is None else created
    csr_der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    statement = renewal_statement(created, csr_der, cert_der)
    proof = key.sign(statement, ec.ECDSA(hashes.SHA256()))
    return call(
        env.base,
        "POST",
        "/v1/renew",
        {
            "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "csr": csr_pem.decode(),
            "created": created,
            "proof": base64.b64encode(proof).decode(),
        },
    )


def test_enroll_with_pkcs10_der_and_pem_chain_answer(env: Env) -> None:
    token = _token(env)
    _key, csr = _csr()
    der = x509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER)
    r = call(
        env.base,
        "POST",
        "/v1/enroll?scopes=submit_limit_order",
        der,
        token=token,
        content_type="application/pkcs10",
        accept="application/pem-certificate-chain",
    )
    assert r.status == 201, r.body
    certs = x509.load_pem_x509_certificates(r.body)
    assert len(certs) == 3
    assert read_agent_extensions(certs[0]).authorization.scopes == ("submit_limit_order",)


# -- refusals ---------------------------------------------------------------------------------
def _refused(env: Env, reply_factory: Any, status: int, slug: str, needle: str = "") -> None:
    before = env.certificate_rows()
    problem = _assert_problem(reply_factory(), status, slug)
    if needle:
        assert needle in problem["detail"], problem
    assert env.certificate_rows() == before


def test_expired_token(env: Env) -> None:
    token = _token(env, ttl=1)
    time.sleep(1.2)
    _refused(env, lambda: _enroll(env, token, _csr()[1]), 401, "unauthenticated", "expired")


def test_unknown_token(env: Env) -> None:
    _refused(env, lambda: _enroll(env, "aca_enroll_bogus", _csr()[1]), 401, "unauthenticated")


def test_csr_with_bad_signature(env: Env) -> None:
    token = _token(env)
    der = x509.load_pem_x509_csr(_csr()[1]).public_bytes(serialization.Encoding.DER)
    tampered = der.replace(b"exec-agent", b"exec-agenT")
    _refused(
        env,
        lambda: call(
            env.base, "POST", "/v1/enroll", tampered, token=token, content_type="application/pkcs10"
        ),
        400,
        "csr-signature-invalid",
    )
    # the token survives a refused request
    assert _enroll(env, token, _csr()[1]).status == 201


def test_scopes_beyond_registration(env: Env) -> None:
    token = _token(env)
    _refused(
        env,
        lambda: _enroll(env, token, _csr()[1], scopes=["withdraw_funds"]),
        403,
        "policy-refused",
        "withdraw_funds",
    )


def test_model_not_in_inventory(env: Env) -> None:
    token = _token(env)
    _refused(
        env,
        lambda: _enroll(env, token, _csr(model="dd" * 32)[1]),
        403,
        "policy-refused",
        "not in the inventory",
    )


def test_prompt_not_allowed(env: Env) -> None:
    token = _token(env)
    _refused(
        env,
        lambda: _enroll(env, token, _csr(prompt="ee" * 32)[1]),
        403,
        "policy-refused",
        "prompt digest",
    )


def test_key_type_not_allowed(env: Env) -> None:
    token = _token(env)
    rsa_key = rsa.generate_private_key(65537, 2048)
    _refused(
        env,
        lambda: _enroll(env, token, _csr(key=rsa_key)[1]),
        403,
        "policy-refused",
        "key type rsa-2048",
    )


def test_validity_above_maximum(env: Env) -> None:
    token = _token(env)
    _refused(
        env,
        lambda: _enroll(env, token, _csr()[1], validity_seconds=7 * 3600),
        403,
        "policy-refused",
        "exceeds the maximum",
    )


def test_csr_without_provenance(env: Env) -> None:
    token = _token(env)
    key = ec.generate_private_key(ec.SECP256R1())
    plain = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    _refused(env, lambda: _enroll(env, token, plain), 403, "policy-refused", "provenance")


def test_missing_wrong_and_underprivileged_api_tokens(env: Env) -> None:
    _refused(env, lambda: env.call("GET", "/v1/agents", token=None), 401, "unauthenticated")
    _refused(
        env, lambda: env.call("GET", "/v1/agents", token="aca_api_wrong"), 401, "unauthenticated"
    )
    some = env.call("GET", "/v1/certificates?limit=1", token="auditor").json
    serial = some[0]["serial"] if some else "abcdef"
    _refused(
        env,
        lambda: env.call(
            "POST",
            f"/v1/certificates/{serial}/revoke",
            {"reason": "keyCompromise"},
            token="auditor",
        ),
        403,
        "forbidden",
    )
    _refused(
        env, lambda: env.call("POST", "/v1/scopes", {"name": "x"}, token="reader"), 403, "forbidden"
    )
    assert env.call("GET", "/v1/agents", token="auditor").status == 200
    assert env.call("GET", "/v1/agents", token="reader").status == 200


def test_oversized_body(env: Env) -> None:
    token = _token(env)
    big = b"-----BEGIN CERTIFICATE REQUEST-----\n" + b"A" * 200_000
    _refused(
        env,
        lambda: call(
            env.base, "POST", "/v1/enroll", big, token=token, content_type="application/pkcs10"
        ),
        413,
        "request-entity-too-large",
    )


def test_wrong_content_type(env: Env) -> None:
    token = _token(env)
    _refused(
        env,
        lambda: call(env.base, "POST", "/v1/enroll", b"x", token=token, content_type="text/plain"),
        415,
        "unsupported-media-type",
    )


def test_disabled_agent_cannot_enroll(env: Env) -> None:
    token = _token(env, agent="other-agent")
    assert env.call("POST", "/v1/agents/other-agent/disable").status == 200
    try:
        _refused(
            env,
            lambda: _enroll(env, token, _csr(model=MODEL_B)[1]),
            403,
            "policy-refused",
            "disabled",
        )
    finally:
        r = env.call("PATCH", "/v1/agents/other-agent", {"status": "active"})
        assert r.status == 200 and r.json["status"] == "active"


# -- config digests and look-alike identifiers (issue 9 item 10) ------------------------------
def _sdk_agent(env: Env, name: str, config: dict[str, Any] | None) -> Any:
    from agent import Agent, RuntimeProvenance, generate_key

    model_dir = env.work / "cfg-model"
    if not model_dir.exists():
        model_dir.mkdir()
        (model_dir / "weights.bin").write_bytes(b"weights of the configured model")
    return Agent(
        name,
        generate_key(),
        RuntimeProvenance("claude-x", model_dir, prompt_bytes=b"You trade.", config=config),
        env.base,
    )


def test_config_digest_is_certified_only_when_the_registration_allows_it(env: Env) -> None:
    from agent import CAResponseError, config_digest, model_digest, prompt_digest

    config = {"temperature": 0.2, "tools": ["order_book"]}
    allowed = config_digest(config).hex()
    probe = _sdk_agent(env, "cfg-agent", config)
    model = model_digest(env.work / "cfg-model").hex()
    r = env.call(
        "POST", "/v1/models", {"digest": model, "model_type": "claude-x", "environment": "prod"}
    )
    assert r.status == 201, r.body
    body = {
        "officer": "officer@bank.example",
        "environment": "prod",
        "model_type": "claude-x",
        "scopes": ["query_order_book"],
        "model_digests": [model],
        "prompt_digests": [prompt_digest(b"You trade.").hex()],
        "key_types": ["ec-p256"],
    }
    r = env.call("POST", "/v1/agents", {**body, "name": "cfg-agent", "config_digests": [allowed]})
    assert r.status == 201, r.body
    assert r.json["config_digests"] == [allowed]
    r = env.call("POST", "/v1/agents", {**body, "name": "plain-agent"})
    assert r.status == 201 and r.json["config_digests"] == [], r.body

    # the SDK declares the running config digest in its CSR; the registration allows it
    cred = probe.enroll(_token(env, "cfg-agent"))
    certified = read_agent_extensions(cred.certificate).provenance.config_digest
    assert certified is not None and certified.hex == allowed
    renewed = probe.renew()  # renewal runs through the same policy
    assert read_agent_extensions(renewed.certificate).provenance.config_digest == certified

    # another configuration is refused, and so is one without a config digest
    for name, cfg, needle in (
        ("cfg-agent", {"temperature": 1.5}, "is not allowed for this agent"),
        ("cfg-agent", None, "declares no config digest; this agent requires one"),
        ("plain-agent", config, "this agent's registration allows none"),
    ):
        before = env.certificate_rows()
        with pytest.raises(CAResponseError) as info:
            _sdk_agent(env, name, cfg).enroll(_token(env, name))
        assert info.value.status == 403, info.value
        assert info.value.problem["type"].endswith("/policy-refused")
        assert any(needle in reason for reason in info.value.problem["reasons"]), info.value.problem
        assert env.certificate_rows() == before  # nothing signed, nothing recorded

    # PATCH changes the list; an empty list clears it again
    r = env.call("PATCH", "/v1/agents/plain-agent", {"config_digests": [allowed]})
    assert r.status == 200 and r.json["config_digests"] == [allowed], r.body
    _sdk_agent(env, "plain-agent", config).enroll(_token(env, "plain-agent"))
    r = env.call("PATCH", "/v1/agents/plain-agent", {"config_digests": []})
    assert r.status == 200 and r.json["config_digests"] == [], r.body
    r = env.call("PATCH", "/v1/agents/plain-agent", {"config_digests": ["nothex"]})
    _assert_problem(r, 400, "invalid-digest")


def test_look_alike_agent_names_and_environments_are_conflicts(env: Env) -> None:
    body = {
        "officer": "officer@bank.example",
        "environment": "prod",
        "model_type": "claude-x",
        "scopes": ["query_order_book"],
        "model_digests": [MODEL_A],
        "prompt_digests": [PROMPT],
    }
    r = env.call("POST", "/v1/agents", {**body, "name": "AgentA"})
    assert r.status == 201, r.body
    for twin in ("agenta", "AGENTA", "AgentA"):
        problem = _assert_problem(
            env.call("POST", "/v1/agents", {**body, "name": twin}), 409, "conflict"
        )
        assert "AgentA" in problem["detail"] or twin == "AgentA", problem
    r = env.call("POST", "/v1/agents", {**body, "name": "Agent0"})
    assert r.status == 201, r.body
    _assert_problem(env.call("POST", "/v1/agents", {**body, "name": "agentO"}), 409, "conflict")
    # an environment spelled with a Cyrillic 'o' (U+043E) is refused outright; one in another case
    # conflicts with the environment in use
    problem = _assert_problem(
        env.call("POST", "/v1/agents", {**body, "name": "cyr", "environment": "pr\u043ed"}),
        400,
        "invalid-name",
    )
    assert "ASCII" in problem["detail"]
    _assert_problem(
        env.call(
            "POST",
            "/v1/models",
            {"digest": MODEL_A, "model_type": "claude-x", "environment": "Prod"},
        ),
        409,
        "conflict",
    )
    _assert_problem(
        env.call(
            "POST",
            "/v1/models",
            {"digest": MODEL_A, "model_type": "cl\u0430ude-x", "environment": "qa"},
        ),
        400,
        "invalid-name",
    )
    # organisations: one script, no invisible characters
    for org in ("B\u0430nk", "Bank\u200b", "Bank\u202e"):
        _assert_problem(
            env.call("POST", "/v1/agents", {**body, "name": "org-agent", "organization": org}),
            400,
            "invalid-name",
        )
    r = env.call(
        "POST", "/v1/agents", {**body, "name": "org-agent", "organization": "Société Générale"}
    )
    assert r.status == 201 and r.json["organization"] == "Société Générale", r.body
    # scopes that only look like catalogue entries
    _assert_problem(env.call("POST", "/v1/scopes", {"name": "query_order_b0ok"}), 409, "conflict")


def test_the_database_refuses_look_alike_names_even_past_the_check(env: Env) -> None:
    """Two concurrent registrations both pass the pre-check; the unique key stops the second."""
    from datetime import UTC, datetime

    from sqlalchemy.exc import IntegrityError

    from ca.names import identifier_key
    from ca.store.models import AgentRegistration

    def row(name: str) -> AgentRegistration:
        now = datetime.now(UTC)
        return AgentRegistration(
            name=name, name_key=identifier_key(name), officer="o@example.com", environment="prod",
            model_type="claude-x", allowed_scopes="query_order_book",
            allowed_model_digests=MODEL_A, allowed_prompt_digests=PROMPT,
            allowed_key_types="ec-p256", max_validity_seconds=3600, status="active",
            created_at=now, updated_at=now,
        )  # fmt: skip

    with env.rt.sessions.begin() as s:
        s.add(row("RaceAgent"))
    with pytest.raises(IntegrityError), env.rt.sessions.begin() as s:
        s.add(row("raceagent"))


# -- bulk revocation and retirement ------------------------------------------------------------
def _issue_for(env: Env, agent: str, model: str) -> str:
    r = _enroll(env, _token(env, agent=agent), _csr(model=model)[1])
    assert r.status == 201, r.body
    return str(r.json["serial"])


def test_bulk_revocation_by_model_digest_is_exact(env: Env) -> None:
    a = {_issue_for(env, "exec-agent", MODEL_A) for _ in range(3)}
    b = {_issue_for(env, "other-agent", MODEL_B) for _ in range(2)}
    live_a_before = {
        c["serial"]
        for c in env.call(
            "GET", f"/v1/certificates?model_digest={MODEL_A}&status=issued&limit=10000"
        ).json
    }
    assert a <= live_a_before
    r = env.call("POST", "/v1/revocations", {"model_digest": MODEL_A, "reason": "superseded"})
    assert r.status == 200, r.body
    assert set(r.json["revoked"]) == live_a_before
    for serial in b:
        assert env.call("GET", f"/certificates/{serial}", token=None).json["status"] == "issued"
    for serial in a:
        rec = env.call("GET", f"/certificates/{serial}", token=None).json
        assert rec["status"] == "revoked" and rec["revocation_reason"] == "superseded"
    empty = env.call("POST", "/v1/revocations", {"reason": "superseded"})
    _assert_problem(empty, 400, "bad-request")


def test_retiring_a_model_blocks_issuance_and_can_revoke(env: Env) -> None:
    serial = _issue_for(env, "other-agent", MODEL_B)
    token = _token(env, agent="other-agent")
    r = env.call(
        "POST",
        f"/v1/models/{MODEL_B}/retire",
        {"environment": "prod", "revoke": True, "reason": "privilegeWithdrawn"},
    )
    assert r.status == 200, r.body
    assert serial in r.json["revoked"]
    _refused(
        env, lambda: _enroll(env, token, _csr(model=MODEL_B)[1]), 403, "policy-refused", "retired"
    )
    listed = env.call("GET", "/v1/models?status=retired").json
    assert [m["digest"] for m in listed] == [MODEL_B]
    # re-activate for other tests
    assert (
        env.call(
            "POST",
            "/v1/models",
            {"digest": MODEL_B, "model_type": "claude-x", "environment": "prod"},
        ).status
        == 201
    )


def test_reads_and_operator_issue(env: Env) -> None:
    assert env.call("GET", "/v1/scopes", token="reader").status == 200
    assert env.call("GET", "/v1/agents/exec-agent", token="reader").json["name"] == "exec-agent"
    _assert_problem(env.call("GET", "/v1/agents/nobody"), 404, "not-found")
    registered = env.call(
        "POST",
        "/v1/agents",
        {
            "name": "manual-agent",
            "officer": "officer@bank.example",
            "environment": "prod",
            "model_type": "claude-x",
            "scopes": ["submit_limit_order"],
            "model_digests": [MODEL_A],
            "prompt_digests": [PROMPT],
        },
    )
    assert registered.status == 201, registered.body
    _key, csr = _csr()
    r = env.call(
        "POST",
        "/v1/certificates",
        {
            "csr": csr.decode(),
            "agent": "manual-agent",
            "scopes": ["submit_limit_order"],
            "model_type": "claude-x",
            "model_digest": MODEL_A,
            "prompt_digest": PROMPT,
            "officer": "officer@bank.example",
            "environment": "prod",
            "validity_seconds": 600,
        },
    )
    assert r.status == 201, r.body
    assert r.headers["location"] == f"/certificates/{r.json['serial']}"
    listed = env.call("GET", "/v1/certificates?agent=manual-agent", token="auditor").json
    assert [c["serial"] for c in listed] == [r.json["serial"]]


def test_token_rows_store_only_hashes(env: Env) -> None:
    token = _token(env)
    with env.rt.sessions() as s:
        hashes_ = set(s.scalars(select(EnrollmentToken.token_hash)))
    assert token not in hashes_ and all(len(h) == 64 for h in hashes_)


def test_rate_limit_on_enrollment(env: Env) -> None:
    from ca.api.ratelimit import TokenBucket

    bucket = TokenBucket(rate=1, burst=2)
    assert bucket.take("a", now=0.0) == 0 and bucket.take("a", now=0.0) == 0
    assert bucket.take("a", now=0.0) > 0
    assert bucket.take("b", now=0.0) == 0
    assert bucket.take("a", now=1.0) == 0


# -- OpenAPI ----------------------------------------------------------------------------------
def test_openapi_document_validates_and_is_in_the_repo(env: Env) -> None:
    import json

    from openapi_spec_validator import validate

    served = env.call("GET", "/openapi.json", token=None)
    assert served.status == 200
    validate(served.json)
    repo_copy = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
    assert repo_copy == build_document() == served.json


def test_every_route_is_documented_and_every_documented_route_exists(env: Env) -> None:
    app = create_app(env.rt.settings, runtime_factory=lambda: env.rt)
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("console."):
            continue  # the web console is HTML pages, not the API (decision 0054)
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((method.lower(), path))
    documented = {(m, p) for p, ops in build_document()["paths"].items() for m in ops}
    assert routes == documented


def test_flask_static_route_does_not_serve_the_working_directory(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flask's default static folder was <cwd>/static: files there were served to anyone."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "secret.txt").write_text("not for clients")
    app = create_app(env.rt.settings, runtime_factory=lambda: env.rt)
    assert all(rule.endpoint != "static" for rule in app.url_map.iter_rules())
    with serve_in_thread(app) as base:
        _assert_problem(call(base, "GET", "/static/secret.txt"), 404, "not-found")


def test_deeply_nested_json_is_a_bad_request_not_a_server_error(env: Env) -> None:
    """30,000 nested arrays made json.loads raise RecursionError: a 500 with a traceback."""
    depth = 30_000
    body = b'{"name": ' + b"[" * depth + b"]" * depth + b"}"
    reply = env.call("POST", "/v1/scopes", body, content_type="application/json")
    assert "deeper" in _assert_problem(reply, 400, "bad-request")["detail"]
    dup = b'{"name": "dup-a", "name": "dup-b"}'  # silently took the last value before
    reply = env.call("POST", "/v1/scopes", dup, content_type="application/json")
    assert "twice" in _assert_problem(reply, 400, "bad-request")["detail"]


def _checkpoint_rows(env: Env) -> int:
    from ca.store.models import LedgerCheckpointRow

    with env.rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(LedgerCheckpointRow)) or 0)


def test_ledger_export_only_reads_and_streams(env: Env) -> None:
    """GET /v1/ledger/export signed and stored a checkpoint on every call (a read that wrote),
    and built the whole export in memory before sending it."""
    import json

    if _checkpoint_rows(env) == 0:
        _assert_problem(env.call("GET", "/v1/ledger/export", token="auditor"), 404, "not-found")
        assert _checkpoint_rows(env) == 0
        assert env.call("POST", "/v1/ledger/checkpoints").status == 201
    before = _checkpoint_rows(env)
    latest = env.call("GET", "/v1/ledger/checkpoint", token=None).json
    for query in ("", "?format=csv", "?agent=exec-agent"):
        reply = env.call("GET", "/v1/ledger/export" + query, token="auditor")
        assert reply.status == 200, reply.body
        assert "content-length" not in reply.headers  # streamed, not buffered
        first = reply.body.split(b"\n", 1)[0].lstrip(b"#")
        assert json.loads(first)["checkpoint"] == latest
    assert _checkpoint_rows(env) == before


def test_ledger_consistency_needs_an_auditor_and_proves(env: Env) -> None:
    """The consistency endpoint was public and rebuilt the tree from every leaf on each call."""
    from wire.merkle import MerkleTree, verify_consistency

    size = env.rt.ledger.size()
    path = f"/v1/ledger/consistency?from=1&to={size}"
    _assert_problem(env.call("GET", path, token=None), 401, "unauthenticated")
    _assert_problem(env.call("GET", path, token="reader"), 403, "forbidden")
    bad = env.call("GET", "/v1/ledger/consistency?from=1&to=1e3", token="auditor")
    _assert_problem(bad, 400, "bad-request")
    tree = MerkleTree(list(env.rt.ledger.leaf_hashes(size)))
    for old in sorted({1, size // 2 or 1, size}):
        reply = env.call("GET", f"/v1/ledger/consistency?from={old}&to={size}", token="auditor")
        assert reply.status == 200, reply.body
        proof = [bytes.fromhex(h) for h in reply.json["proof"]]
        assert verify_consistency(old, size, tree.root(old), tree.root(size), proof)


# -- API token lifecycle (issue 9 item 9) -------------------------------------------------------
def _ledger_events(env: Env, event: str) -> list[dict[str, Any]]:
    import json

    from ca.store.models import LedgerEntryRow

    with env.rt.sessions() as s:
        rows = s.scalars(select(LedgerEntryRow).where(LedgerEntryRow.event == event))
        return [json.loads(r.body) for r in rows]


def test_api_tokens_are_created_listed_used_and_revoked_over_the_api(env: Env) -> None:
    """API tokens never expired and could not be revoked ('disabled_at' was never set)."""
    from datetime import UTC, datetime, timedelta

    name = f"ci-reader-{env.rt.settings.database_url[:6]}"
    created = env.call(
        "POST", "/v1/api-tokens", {"name": name, "role": "read-only", "ttl_seconds": 3600}
    )
    assert created.status == 201, created.body
    assert created.headers["cache-control"] == "no-store"  # the answer carries a secret
    secret = created.json["token"]
    expires = datetime.fromisoformat(created.json["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(minutes=1)
    assert env.call("GET", "/v1/scopes", token=secret).status == 200
    listed = {t["name"]: t for t in env.call("GET", "/v1/api-tokens").json}
    mine = listed[name]
    assert mine["status"] == "active" and mine["role"] == "read-only"
    assert mine["last_used_at"] is not None and mine["created_by"] == "api:ops"
    assert "token" not in mine and secret not in str(listed)
    for who in ("auditor", "reader", secret):  # operator-only endpoints
        _assert_problem(env.call("GET", "/v1/api-tokens", token=who), 403, "forbidden")
    too_long = {"name": name + "-x", "role": "auditor", "ttl_seconds": 400 * 86400}
    _assert_problem(env.call("POST", "/v1/api-tokens", too_long), 400, "invalid-validity")
    revoked = env.call("POST", f"/v1/api-tokens/{name}/revoke")
    assert revoked.status == 200 and revoked.json["status"] == "revoked"
    assert revoked.json["revoked_by"] == "api:ops"
    refused = env.call("GET", "/v1/scopes", token=secret)
    assert "revoked" in _assert_problem(refused, 401, "unauthenticated")["detail"]
    assert refused.headers["www-authenticate"].startswith("Bearer")
    _assert_problem(env.call("POST", f"/v1/api-tokens/{name}/revoke"), 409, "conflict")
    _assert_problem(env.call("POST", "/v1/api-tokens/no-such/revoke"), 404, "not-found")
    taken = env.call("POST", "/v1/api-tokens", {"name": name, "role": "read-only"})
    _assert_problem(taken, 409, "conflict")  # names are never reused
    assert [b for b in _ledger_events(env, "api_token.created") if b["name"] == name]
    revocations = [b for b in _ledger_events(env, "api_token.revoked") if b["name"] == name]
    assert len(revocations) == 1 and revocations[0]["role"] == "read-only"


def test_expired_api_tokens_are_refused(env: Env) -> None:
    from datetime import UTC, datetime, timedelta

    from ca.apitokens import ApiTokens

    past = datetime.now(UTC) - timedelta(hours=2)
    secret, info = ApiTokens(env.rt.sessions, lambda: past).create(
        f"old-{env.rt.settings.database_url[:6]}", "operator", ttl=timedelta(hours=1)
    )
    assert info.expires_at < datetime.now(UTC)
    refused = env.call("GET", "/v1/agents", token=secret)
    assert "expired" in _assert_problem(refused, 401, "unauthenticated")["detail"]
    listed = {t["name"]: t for t in env.call("GET", "/v1/api-tokens").json}
    assert listed[info.name]["status"] == "expired"


def test_last_use_is_written_at_most_once_a_minute(env: Env) -> None:
    from datetime import UTC, datetime, timedelta

    from ca.apitokens import ApiTokens

    now = [datetime.now(UTC)]
    tokens = ApiTokens(env.rt.sessions, lambda: now[0])
    secret, info = tokens.create(f"busy-{env.rt.settings.database_url[:6]}", "auditor")

    def last_used() -> datetime | None:
        return next(t.last_used_at for t in tokens.list() if t.name == info.name)

    assert last_used() is None
    first = now[0]
    tokens.authenticate(secret)
    assert last_used() == first
    now[0] = first + timedelta(seconds=59)
    tokens.authenticate(secret)
    assert last_used() == first  # no write within the minute
    now[0] = first + timedelta(seconds=61)
    tokens.authenticate(secret)
    assert last_used() == now[0]


def test_bearer_header_parsing_is_strict(env: Env) -> None:
    """Stray spaces, other schemes, two headers or junk characters never reach the lookup."""
    for header in (f"Bearer  {env.op}", f"Basic {env.op}", f"Bearer {env.op} x", "Bearer"):
        r = call(env.base, "GET", "/v1/agents", headers={"Authorization": header})
        _assert_problem(r, 401, "unauthenticated")
    r = call(env.base, "GET", "/v1/agents", headers={"Authorization": f"bearer {env.op}"})
    assert r.status == 200  # the scheme is case-insensitive (RFC 9110 section 11.1)


def test_workload_identity_token_and_its_jwks(env: Env) -> None:
    """POST /v1/wit and GET /ca/wit-jwks.json (details: tests/integration/test_httpsig_interop)."""
    import base64
    import json
    import time

    from agent.csr import sign_statement
    from agent.wimse import wit_request_statement

    key, csr = _csr()
    r = _enroll(env, _token(env), csr)
    assert r.status == 201, r.body
    pem = r.json["certificate_pem"]
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    created = int(time.time())
    proof = sign_statement(key, wit_request_statement(created, der, 120))
    body = {"certificate": pem, "created": created, "lifetime_seconds": 120,
            "proof": base64.b64encode(proof).decode()}  # fmt: skip
    r = call(env.base, "POST", "/v1/wit", body)
    assert r.status == 201 and r.json["token_type"] == "wit+jwt", r.body
    assert r.json["expires_at_unix"] - created in range(115, 125)
    # iss is where the CA is reached, also when public_base_url is left empty (its default)
    claims = json.loads(base64.urlsafe_b64decode(r.json["token"].split(".")[1] + "=="))
    assert claims["iss"] == env.rt.settings.effective_public_base_url != ""
    _assert_problem(call(env.base, "POST", "/v1/wit", {**body, "lifetime_seconds": 60}), 401,
                    "unauthenticated")  # fmt: skip
    jwks = call(env.base, "GET", "/ca/wit-jwks.json")
    assert jwks.status == 200 and jwks.content_type == "application/jwk-set+json"


def test_a_wit_for_a_certificate_not_on_record_is_unauthenticated(env: Env) -> None:
    """Signed by the issuing CA key yet not on record: 401, as docs/wimse.md says (not the
    404 of a certificate lookup), and the lookup is within the signing issuer."""
    from datetime import UTC, datetime, timedelta

    from agent.csr import sign_statement
    from agent.wimse import wit_request_statement

    issuer = env.rt.authority.hierarchy.signing_issuer()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ghost")])
    ghost = (
        x509.CertificateBuilder().subject_name(name).issuer_name(issuer.certificate.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier("spiffe://agentca.local/agent/ghost")]), False)
        .sign(issuer.key, hashes.SHA256())  # type: ignore[arg-type]
    )  # fmt: skip
    der = ghost.public_bytes(serialization.Encoding.DER)
    created = int(time.time())
    proof = sign_statement(key, wit_request_statement(created, der, None))
    body = {
        "certificate": ghost.public_bytes(serialization.Encoding.PEM).decode(),
        "created": created,
        "proof": base64.b64encode(proof).decode(),
    }
    problem = _assert_problem(call(env.base, "POST", "/v1/wit", body), 401, "unauthenticated")
    assert "not on record" in problem["detail"]


def test_zz_every_documented_operation_was_exercised(env: Env) -> None:
    """Runs last in this module: the tests above must have called every documented operation."""
    assert env.call("GET", "/health", token=None).status == 200
    ready = env.call("GET", "/ready", token=None)
    assert ready.status == 200, ready.body  # database, HSM and clock all fine here
    metrics = env.call("GET", "/metrics", token=None)  # the test client is 127.0.0.1
    assert metrics.status == 200 and b"agentca_issuance_total" in metrics.body
    for path in (
        "/ca/chain.pem",
        "/ca/issuing.der",
        "/ca/root.pem",
        "/spiffe/bundle.json",
        "/ca/metadata.json",
    ):
        assert env.call("GET", path, token=None).status == 200
    crl = env.call("GET", "/crl/issuing.crl", token=None)  # not published in this data dir
    _assert_problem(crl, 404, "not-found")
    created = env.call("POST", "/v1/ledger/checkpoints")
    assert created.status == 201, created.body
    latest = env.call("GET", "/v1/ledger/checkpoint", token=None).json
    assert latest["tree_size"] == created.json["tree_size"]
    proof = env.call(
        "GET", f"/v1/ledger/consistency?from=1&to={latest['tree_size']}", token="auditor"
    )
    assert proof.status == 200 and proof.json["to_size"] == latest["tree_size"]
    _assert_problem(env.call("GET", "/v1/ledger/export", token="reader"), 403, "forbidden")
    # the action ledger takes gateway tokens only (test_action_ledger_api.py)
    _assert_problem(env.call("POST", "/v1/actions", {"v": 1}), 403, "forbidden")
    export = env.call("GET", "/v1/ledger/export?agent=exec-agent", token="auditor")
    assert export.status == 200 and export.body.count(b"\n") > 2
    documented = {
        (m, p.replace("{", "<").replace("}", ">"))
        for p, ops in build_document()["paths"].items()
        for m in ops
    }
    missing = documented - HIT
    assert not missing, sorted(missing)
    assert not NONCONFORMING, sorted(set(NONCONFORMING))


def test_nul_bytes_are_bad_requests_not_server_errors(env: Env) -> None:
    """Found by schema fuzzing on PostgreSQL: a NUL in a filter reached the database."""
    _assert_problem(env.call("GET", "/v1/certificates?agent=a%00b"), 400, "bad-request")
    _assert_problem(env.call("POST", "/v1/scopes", {"name": "a\u0000b"}), 400, "bad-request")
    _assert_problem(env.call("GET", "/v1/agents/x%00y"), 400, "bad-request")
