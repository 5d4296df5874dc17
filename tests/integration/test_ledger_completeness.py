"""Every state-changing API endpoint and CLI command writes exactly its ledger entries.

The API half checks the table below against the OpenAPI document, so a new write endpoint
without an expectation fails here."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.csr import sign_statement
from ca.api.app import create_app
from ca.api.openapi import build_document
from ca.extensions import Digest, Provenance, build_agent_csr
from ca.proof import renewal_statement
from ca.wiring import Runtime, open_runtime
from tests.integration.conftest import issue_args, run_cli, settings_for, write_agent_csr
from tests.integration.http import call, serve_in_thread
from wire.renewal import wit_request_statement

MODEL, PROMPT = "a1" * 32, "c3" * 32


def events_after(engine: sa.Engine, seq: int) -> list[str]:
    with engine.connect() as conn:
        return [
            r[0]
            for r in conn.execute(
                sa.text("SELECT event FROM ledger_entries WHERE seq >= :s ORDER BY seq"), {"s": seq}
            )
        ]


def size(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT size FROM ledger_head")).scalar() or 0)


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, hsm_config: Any
) -> Iterator[tuple[str, Runtime, str]]:
    work = tmp_path_factory.mktemp("ledger-api")
    s = settings_for(work, f"sqlite:///{work}/ca.sqlite3", hsm_config)
    rt = open_runtime(s, create=True)
    rt.authority.initialise("ec-p256", "ec-p256")
    token = rt.api_tokens.create("ops", "operator")[0]
    with serve_in_thread(create_app(s, runtime_factory=lambda: rt)) as base:
        yield base, rt, token
    rt.engine.dispose()


def _csr(model: str = MODEL) -> tuple[Any, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = build_agent_csr(
        key, "ledger-agent", Provenance("m", Digest.sha256_hex(model), Digest.sha256_hex(PROMPT))
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def _gateway(rt: Runtime) -> str:
    """Register gateway ``gw-ledger`` (its own ledger entry) and return its token."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rt.gateways.add("gw-ledger", pem, "test")
    return rt.api_tokens.create("gw-ledger", "gateway")[0]


def _action_batch() -> dict[str, Any]:
    from wire.actions import ActionBatch, ActionRecord

    record = ActionRecord(
        "gw-ledger", 0, "2026-12-07T09:00:00.000000Z", "r-0", "allow", "GET", "/v1/book"
    )
    return ActionBatch("gw-ledger", (record,)).to_json()


def test_every_write_endpoint_writes_its_entries(api: tuple[str, Runtime, str]) -> None:
    base, rt, token = api
    engine = rt.engine
    state: dict[str, Any] = {}

    def op(method: str, path: str, body: Any = None, bearer: str | None = token) -> Any:
        r = call(base, method, path, body, token=bearer)
        assert r.status in (200, 201), (path, r.status, r.body)
        return r.json

    def enroll() -> None:
        key, csr = _csr()
        r = op("POST", "/v1/enroll", {"csr": csr}, bearer=state["enroll_token"])
        state["key"], state["cert"] = key, r["certificate_pem"]

    def renew() -> None:
        created = int(time.time())
        _key, csr = _csr()
        der = x509.load_pem_x509_csr(csr.encode()).public_bytes(serialization.Encoding.DER)
        current = x509.load_pem_x509_certificate(state["cert"].encode())
        statement = renewal_statement(
            created, der, current.public_bytes(serialization.Encoding.DER)
        )
        proof = state["key"].sign(statement, ec.ECDSA(hashes.SHA256()))
        op(
            "POST",
            "/v1/renew",
            {
                "certificate": state["cert"],
                "csr": csr,
                "created": created,
                "proof": base64.b64encode(proof).decode(),
            },
            bearer=None,
        )

    def workload_identity_token() -> None:
        created = int(time.time())
        der = x509.load_pem_x509_certificate(state["cert"].encode()).public_bytes(
            serialization.Encoding.DER
        )
        proof = sign_statement(state["key"], wit_request_statement(created, der, 120))
        body = {
            "certificate": state["cert"],
            "created": created,
            "lifetime_seconds": 120,
            "proof": base64.b64encode(proof).decode(),
        }
        op("POST", "/v1/wit", body, bearer=None)

    def token_for_agent() -> None:
        state["enroll_token"] = op("POST", "/v1/agents/ledger-agent/enrollment-tokens")["token"]

    def issue() -> None:
        _k, csr = _csr()
        state["serial"] = op(
            "POST",
            "/v1/certificates",
            {"csr": csr, "agent": "ledger-agent", "scopes": ["read_book"]},
        )["serial"]

    steps: list[tuple[str, str, Callable[[], Any], list[str]]] = [
        (
            "post",
            "/v1/scopes",
            lambda: op("POST", "/v1/scopes", {"name": "read_book"}),
            ["scope.added"],
        ),
        (
            "post",
            "/v1/models",
            lambda: op(
                "POST", "/v1/models", {"digest": MODEL, "model_type": "m", "environment": "prod"}
            ),
            ["model.added"],
        ),
        (
            "post",
            "/v1/agents",
            lambda: op(
                "POST",
                "/v1/agents",
                {
                    "name": "ledger-agent",
                    "officer": "o@example.com",
                    "environment": "prod",
                    "model_type": "m",
                    "scopes": ["read_book"],
                    "model_digests": [MODEL],
                    "prompt_digests": [PROMPT],
                },
            ),
            ["agent.registered"],
        ),
        (
            "patch",
            "/v1/agents/{name}",
            lambda: op("PATCH", "/v1/agents/ledger-agent", {"max_validity_seconds": 7200}),
            ["agent.updated"],
        ),
        (
            "post",
            "/v1/agents/{name}/enrollment-tokens",
            token_for_agent,
            ["enrollment_token.created"],
        ),
        (
            "post",
            "/v1/enroll",
            enroll,
            ["enrollment_token.used", "certificate.reserved", "certificate.issued"],
        ),
        ("post", "/v1/wit", workload_identity_token, ["wit.issued"]),
        (
            "post",
            "/v1/renew",
            renew,  # the renewed certificate is revoked as superseded (decision 0008)
            ["certificate.reserved", "certificate.issued", "certificate.revoked"],
        ),
        ("post", "/v1/certificates", issue, ["certificate.reserved", "certificate.issued"]),
        (
            "post",
            "/v1/certificates/{serial}/revoke",
            lambda: op(
                "POST", f"/v1/certificates/{state['serial']}/revoke", {"reason": "certificateHold"}
            ),
            ["certificate.revoked"],
        ),
        (
            "post",
            "/v1/revocations",
            lambda: op("POST", "/v1/revocations", {"agent": "ledger-agent"}),
            ["certificate.revoked"],  # the renewal; the enrolled certificate was superseded
        ),
        (
            "post",
            "/v1/models/{digest}/retire",
            lambda: op("POST", f"/v1/models/{MODEL}/retire", {"revoke": True}),
            ["model.retired"],
        ),
        (
            "post",
            "/v1/agents/{name}/disable",
            lambda: op("POST", "/v1/agents/ledger-agent/disable"),
            ["agent.updated"],
        ),
        (
            "post",
            "/v1/api-tokens",
            lambda: op("POST", "/v1/api-tokens", {"name": "ci", "role": "auditor"}),
            ["api_token.created"],
        ),
        (
            "post",
            "/v1/api-tokens/{name}/revoke",
            lambda: op("POST", "/v1/api-tokens/ci/revoke"),
            ["api_token.revoked"],
        ),
        (
            "post",
            "/v1/ledger/checkpoints",
            lambda: op("POST", "/v1/ledger/checkpoints"),
            ["audit.signer.created"],
        ),
        (
            "post",
            "/v1/actions",  # records go to the action ledger (decision 0056), none here
            lambda: op("POST", "/v1/actions", _action_batch(), bearer=gateway_token),
            [],
        ),
    ]
    gateway_token = _gateway(rt)
    for _method, path, action, expected in steps:
        before = size(engine)
        action()
        assert events_after(engine, before) == expected, path
    # a second checkpoint reuses the signer: no entry
    before = size(engine)
    op("POST", "/v1/ledger/checkpoints")
    assert events_after(engine, before) == []
    # every state-changing operation in the API document is covered above
    writes = {
        (m, p)
        for p, ops in build_document()["paths"].items()
        for m in ops
        if m in ("post", "patch", "put", "delete")
    }
    assert writes == {(m, p) for m, p, _a, _e in steps}


def test_every_state_changing_cli_command_writes_its_entries(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / "agentca.sqlite3"

    def entries(*args: str) -> list[str]:
        engine = sa.create_engine(f"sqlite:///{db}") if db.exists() else None
        before = size(engine) if engine else 0
        r = run_cli(*args, data_dir=data)
        assert r.returncode == 0, r.stderr
        engine = engine or sa.create_engine(f"sqlite:///{db}")
        try:
            return events_after(engine, before)
        finally:
            engine.dispose()

    csr = tmp_path / "a.csr"
    write_agent_csr(csr, "cli-agent", MODEL, PROMPT)
    issue = issue_args(csr, "cli-agent", MODEL, PROMPT)
    # init also publishes the first delegated OCSP signer of each CA (decision 0018)
    assert entries("init") == ["ca.initialised"] + ["ocsp.signer.rotated"] * 2
    assert entries("scope", "add", "read_book") == ["scope.added"]
    assert entries("model", "add", MODEL, "--model-type", "m", "--environment", "prod") == [
        "model.added"
    ]
    assert entries(
        "agent",
        "register",
        "cli-agent",
        "--officer",
        "o@example.com",
        "--environment",
        "prod",
        "--model-type",
        "m",
        "--scope",
        "read_book",
        "--model-digest",
        MODEL,
        "--prompt-digest",
        PROMPT,
    ) == ["agent.registered"]
    assert entries("agent", "disable", "cli-agent") == ["agent.updated"]
    assert entries("agent", "enable", "cli-agent") == ["agent.updated"]
    assert entries("token", "create", "cli-agent") == ["enrollment_token.created"]
    assert entries("apitoken", "create", "auditor1", "--role", "auditor") == ["api_token.created"]
    assert entries("apitoken", "revoke", "auditor1") == ["api_token.revoked"]
    assert entries(*issue) == ["certificate.reserved", "certificate.issued"]
    serial = run_cli("list", "--json", "--limit", "1", data_dir=data).stdout
    import json

    serial = json.loads(serial)["serial"]
    assert entries("revoke", serial, "--reason", "certificateHold") == ["certificate.revoked"]
    assert entries("revoke", serial, "--reason", "keyCompromise") == ["certificate.revoked"]
    entries(*issue)
    assert entries("revoke", "--agent", "cli-agent") == ["certificate.revoked"]
    entries(*issue)
    assert entries("model", "retire", MODEL, "--revoke") == ["model.retired", "certificate.revoked"]
    assert entries("ledger", "checkpoint") == ["audit.signer.created"]
    assert entries("ledger", "checkpoint") == []
    assert entries("audit", "rotate-certificate", "--dry-run") == []
    assert entries("audit", "rotate-certificate", "--yes") == ["audit.certificate_rotated"]
    # signers are current since init; a forced rotation replaces both (root and issuing)
    assert entries("ocsp", "rotate-signer", "--if-needed") == []
    assert entries("ocsp", "rotate-signer") == ["ocsp.signer.rotated"] * 2
    # publishing CRLs changes no CA state: nothing to record
    assert entries("crl", "publish") == []
    # read-only commands write nothing
    for args in (
        ["list"],
        ["show", serial],
        ["agent", "list"],
        ["model", "list"],
        ["scope", "list"],
        ["apitoken", "list"],
        ["chain"],
        ["audit", "certificate"],
    ):
        assert entries(*args) == [], args
