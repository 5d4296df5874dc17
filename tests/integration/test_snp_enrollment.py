"""SEV-SNP evidence through the real CA (decision 0051 "TEE quotes"), SQLite and PostgreSQL.

The CA runtime (SoftHSM2 keys, the real database) is configured with a ``[[sev_snp]]`` entry
and the registration requires attestation. The reports come from the test double of the AMD
firmware (``tests/support/snp_double.py``): this machine has no SEV-SNP hardware. An agent
enrolls with the envelope, in the runtime and over HTTP (the JSON body through a real werkzeug
server, the SDK's file reader included, and the ``Agentca-Attestation`` header through the
Flask app and under ``agentca serve``, where a header field over gunicorn's 8190 bytes is a
problem+json 4xx), and its certificate's ``AgentAttestation`` says ``sev-snp-v1``. A
measurement that is not allowed, or a report for another key, is refused with
``policy-refused``: no certificate row is written and the token stays usable.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from agent.attestation import AttestationSource
from ca.api.app import create_app
from ca.config import Settings
from ca.errors import CAError, ErrorCode
from ca.extensions import Digest, Provenance, read_agent_extensions
from ca.store.models import Certificate
from ca.wiring import Runtime
from tests.integration.conftest import register_for_issue, run_cli
from tests.integration.http import call, serve_in_thread
from tests.integration.servers import agentca_server
from tests.integration.test_crash_safe_enrollment import MODEL, PROMPT, _csr, _register, _token
from tests.support import snp_double as double

NAME = "crash-agent"
PROV = Provenance("m", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT))


@pytest.fixture
def setup(ca_runtime: Runtime, ca_settings: Settings, tmp_path: Path) -> tuple[Runtime, Settings]:
    path = double.write_snp_toml(
        tmp_path / "attestors.toml", double.roots(), {"prod": [double.MEASUREMENT]}
    )
    settings = dataclasses.replace(ca_settings, attestors_file=str(path))
    ca_runtime.enrollment.settings = dataclasses.replace(
        ca_runtime.enrollment.settings, attestors_file=str(path)
    )
    _register(ca_runtime)
    ca_runtime.registry.update_agent(NAME, require_attestation=True, actor="test")
    return ca_runtime, settings


@pytest.fixture(scope="module")
def chip() -> double.Chip:
    return double.Chip(double.roots())


def _evidence(chip: double.Chip, public_key: Any, **report: Any) -> bytes:
    claims = double.claims_bytes(NAME, "prod", PROV, now=int(time.time()))
    return double.evidence(chip, public_key, claims, **report)


def _rows(rt: Runtime) -> int:
    with rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Certificate)) or 0)


def _refusal(rt: Runtime, token: str, csr: bytes, evidence: bytes) -> list[str]:
    with pytest.raises(CAError) as info:
        rt.enrollment.enroll(token, csr, attestation=evidence)
    assert info.value.code is ErrorCode.POLICY_REFUSED, info.value
    return [r.split(":")[0] for r in info.value.extra.get("reasons", [])]


def _marker_of(cert: x509.Certificate | str, evidence: bytes) -> None:
    if isinstance(cert, str):
        cert = x509.load_pem_x509_certificate(cert.encode())
    marker = read_agent_extensions(cert).attestation
    assert marker is not None
    assert (marker.method, marker.attestor, marker.key_id) == (
        "sev-snp-v1",
        "amd-sev-snp",
        "snp-genoa",
    )
    report = base64.b64decode(json.loads(evidence)["report"])
    assert marker.statement_digest.value == hashlib.sha256(report[:0x2A0]).digest()


def test_snp_evidence_enrolls_and_refusals_write_nothing(
    setup: tuple[Runtime, Settings], chip: double.Chip
) -> None:
    rt, _ = setup
    key, csr = _csr()
    token = _token(rt)
    # refused first: a measurement not allowed for prod, then a report for another key
    bad_measurement = _evidence(chip, key.public_key(), measurement=bytes(48))
    assert _refusal(rt, token, csr, bad_measurement) == ["attestation-measurement"]
    other_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert _refusal(rt, token, csr, _evidence(chip, other_key)) == ["attestation-key-mismatch"]
    assert _rows(rt) == 0
    # the same token then enrolls with valid evidence
    evidence = _evidence(chip, key.public_key())
    record = rt.enrollment.enroll(token, csr, attestation=evidence)
    assert record.status == "issued" and record.certificate is not None
    _marker_of(record.certificate, evidence)
    assert _rows(rt) == 1
    # the same report for a second certificate: one statement, one certificate
    assert _refusal(rt, _token(rt), csr, evidence) == ["attestation-reused"]
    assert _rows(rt) == 1


def test_snp_evidence_over_http_json_body_and_header(
    setup: tuple[Runtime, Settings], chip: double.Chip, tmp_path: Path
) -> None:
    rt, settings = setup
    app = create_app(settings, runtime_factory=lambda: rt)
    # the JSON body, through a real HTTP server; the file read by the agent SDK's reader
    key, csr = _csr()
    statement_file = tmp_path / "snp-evidence.json"
    statement_file.write_bytes(_evidence(chip, key.public_key()) + b"\n")
    sent = AttestationSource(statement_file).read()
    assert len(sent) > 3000  # a report, a VCEK certificate and the claims
    with serve_in_thread(app) as base:
        reply = call(
            base, "POST", "/v1/enroll", {"csr": csr.decode(), "attestation": sent}, token=_token(rt)
        )
        assert reply.status == 201, reply.body
        _marker_of(reply.json["certificate_pem"], sent.encode())
        # a refusal is a problem+json 403 naming the reason, nothing written
        before = _rows(rt)
        key2, csr2 = _csr()
        wrong = _evidence(chip, key2.public_key(), measurement=bytes(48)).decode()
        reply = call(
            base,
            "POST",
            "/v1/enroll",
            {"csr": csr2.decode(), "attestation": wrong},
            token=_token(rt),
        )
        assert reply.status == 403, reply.body
        assert reply.content_type.startswith("application/problem+json")
        assert any(r.startswith("attestation-measurement") for r in reply.json["reasons"])
        assert _rows(rt) == before
    # the header of an application/pkcs10 request (the Flask app; a head is at most 16 KiB
    # under the CA's worker, so the JSON body is the documented way for SNP evidence)
    key3, csr3 = _csr()
    evidence = _evidence(chip, key3.public_key())
    reply = app.test_client().post(
        "/v1/enroll",
        data=csr3,
        headers={
            "Content-Type": "application/pkcs10",
            "Authorization": f"Bearer {_token(rt)}",
            "Agentca-Attestation": evidence.decode(),
        },
    )
    assert reply.status_code == 201, reply.data
    _marker_of(reply.get_json()["certificate_pem"], evidence)


def test_snp_evidence_through_agentca_serve(tmp_path: Path, chip: double.Chip) -> None:
    """The production server (gunicorn, the CA's worker): the JSON body carries the envelope,
    the header carries a real-size one, and a header field over gunicorn's 8190 bytes is a
    problem+json refusal, never a 500 (docs/agents.md: use the JSON body)."""
    data_dir = tmp_path / "data"
    attestors = double.write_snp_toml(
        tmp_path / "attestors.toml", double.roots(), {"prod": [double.MEASUREMENT]}
    )
    env = {"AGENTCA_ATTESTORS_FILE": str(attestors)}
    with agentca_server(["serve", "--workers", "1"], data_dir, "/health", env=env) as (base, _):
        register_for_issue(data_dir, NAME, MODEL, PROMPT, environment="prod", env=env)
        done = run_cli("agent", "update", NAME, "--require-attestation", data_dir=data_dir)
        assert done.returncode == 0, done.stderr

        def token() -> str:
            made = run_cli("token", "create", NAME, data_dir=data_dir, env=env)
            assert made.returncode == 0, made.stderr
            return made.stdout.strip().splitlines()[-1]

        key, csr = _csr()
        evidence = _evidence(chip, key.public_key())
        reply = call(
            base,
            "POST",
            "/v1/enroll",
            {"csr": csr.decode(), "attestation": evidence.decode()},
            token=token(),
        )
        assert reply.status == 201, reply.body
        _marker_of(reply.json["certificate_pem"], evidence)

        key2, csr2 = _csr()
        evidence2 = _evidence(chip, key2.public_key())
        assert 3000 < len(evidence2) < 8000
        reply = call(
            base,
            "POST",
            "/v1/enroll",
            csr2,
            token=token(),
            content_type="application/pkcs10",
            headers={"Agentca-Attestation": evidence2.decode()},
        )
        assert reply.status == 201, reply.body
        _marker_of(reply.json["certificate_pem"], evidence2)

        key3, csr3 = _csr()
        big_claims = double.claims_bytes(NAME, "prod", PROV, now=int(time.time()), jti="j" * 128)
        big = double.evidence(chip, key3.public_key(), big_claims).decode() + " " * 5000
        reply = call(
            base,
            "POST",
            "/v1/enroll",
            csr3,
            token=token(),
            content_type="application/pkcs10",
            headers={"Agentca-Attestation": big},
        )
        assert reply.status in (400, 431), (reply.status, reply.body)  # not a policy refusal
        assert reply.content_type.startswith("application/problem+json"), reply.headers
        # the same evidence in the JSON body is accepted (blanks around it are ignored)
        reply = call(
            base, "POST", "/v1/enroll", {"csr": csr3.decode(), "attestation": big}, token=token()
        )
        assert reply.status == 201, reply.body
