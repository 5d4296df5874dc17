"""Renewal re-checks the SEV-SNP attestation rules (decision 0051), SQLite and PostgreSQL.

The real CA runtime (SoftHSM2 keys, the real database), a ``[[sev_snp]]`` entry, a
registration that requires attestation; the reports come from the AMD firmware test double
(``tests/support/snp_double.py``: no SEV-SNP hardware here). An agent enrolled on one report
renews with the proof of its current key (the ``agentca-renew-v2`` statement, as the agent SDK
signs it). The same report again is refused ``attestation-reused`` (``policy-refused``), no
report at all ``attestation-missing``: no certificate row, no ledger entry, the current
certificate still valid. A fresh report (new claims ``iat``, so new ``REPORT_DATA``) renews:
the new certificate's ``AgentAttestation`` carries the new report's digest and time, the old
certificate is superseded, and the fresh report cannot renew the new certificate again.
The last test does the same over HTTP with the agent SDK, whose attestation file is re-read
on every renewal.
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
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from agent import Agent, CAResponseError, RuntimeProvenance
from ca.api.app import create_app
from ca.config import Settings
from ca.csr import load_csr
from ca.enrollment import RenewalRequest
from ca.errors import CAError, ErrorCode
from ca.extensions import Digest, Provenance, read_agent_extensions
from ca.proof import renewal_statement
from ca.records import CertStatus
from ca.revocation import RevocationReason
from ca.store.models import Certificate, LedgerEntryRow
from ca.wiring import Runtime
from tests.integration.http import serve_in_thread
from tests.integration.test_crash_safe_enrollment import MODEL, PROMPT, _csr, _register, _token
from tests.support import snp_double as double

NAME = "crash-agent"
ENV = "prod"
PROV = Provenance("m", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT))
SPENT_BY_CURRENT = (
    "attestation-reused: the current certificate was issued on this attestation; "
    "a renewal needs a fresh one"
)


@pytest.fixture
def setup(ca_runtime: Runtime, ca_settings: Settings, tmp_path: Path) -> tuple[Runtime, Settings]:
    path = double.write_snp_toml(
        tmp_path / "attestors.toml", double.roots(), {ENV: [double.MEASUREMENT]}
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


def _evidence(chip: double.Chip, public_key: Any, iat: int, prov: Provenance = PROV) -> bytes:
    return double.evidence(chip, public_key, double.claims_bytes(NAME, ENV, prov, now=iat))


def _report(evidence: bytes) -> bytes:
    return base64.b64decode(json.loads(evidence)["report"])


def _count(rt: Runtime, table: Any) -> int:
    with rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


def _renewal(key: ec.EllipticCurvePrivateKey, current: bytes, evidence: bytes | None) -> Any:
    """A renewal of ``current`` (DER) for the same key, proved as the agent SDK proves it."""
    _, csr = _csr(key)
    created = int(time.time())
    csr_der = load_csr(csr).public_bytes(serialization.Encoding.DER)
    proof = key.sign(renewal_statement(created, csr_der, current), ec.ECDSA(hashes.SHA256()))
    pem = x509.load_der_x509_certificate(current).public_bytes(serialization.Encoding.PEM)
    return RenewalRequest(pem, csr, created, proof, attestation=evidence)


def _refused(rt: Runtime, req: RenewalRequest) -> list[str]:
    with pytest.raises(CAError) as info:
        rt.enrollment.renew(req)
    assert info.value.code is ErrorCode.POLICY_REFUSED, info.value
    return [r.split(":")[0] for r in info.value.extra.get("reasons", [])]


def test_snp_renewal_needs_a_fresh_report(
    setup: tuple[Runtime, Settings], chip: double.Chip
) -> None:
    rt, _ = setup
    key = ec.generate_private_key(ec.SECP256R1())
    first_iat = int(time.time()) - 10
    first = _evidence(chip, key.public_key(), first_iat)
    record = rt.enrollment.enroll(_token(rt), _csr(key)[1], attestation=first)
    assert record.status == "issued" and record.certificate_der is not None
    current = record.certificate_der
    marker = read_agent_extensions(x509.load_der_x509_certificate(current)).attestation
    assert marker is not None
    assert marker.statement_digest.value == hashlib.sha256(_report(first)[:0x2A0]).digest()

    rows, entries = _count(rt, Certificate), _count(rt, LedgerEntryRow)
    with pytest.raises(CAError) as info:
        rt.enrollment.renew(_renewal(key, current, first))
    # the renewal policy names it (before the single-use check of the reservation would)
    assert info.value.extra["reasons"] == [SPENT_BY_CURRENT], info.value.extra
    # blanks around the envelope do not make it another report
    assert _refused(rt, _renewal(key, current, b"\n " + first + b"\n")) == ["attestation-reused"]
    assert _refused(rt, _renewal(key, current, None)) == ["attestation-missing"]
    assert (_count(rt, Certificate), _count(rt, LedgerEntryRow)) == (rows, entries)
    assert rt.authority.get(record.serial_hex).status is CertStatus.ISSUED

    # a fresh report: new claims iat, so new REPORT_DATA, so another statement digest
    fresh = _evidence(chip, key.public_key(), first_iat + 5)
    assert _report(fresh)[0x50:0x90] != _report(first)[0x50:0x90]
    renewed = rt.enrollment.renew(_renewal(key, current, fresh))
    assert renewed.status == "issued" and renewed.certificate_der is not None
    assert renewed.serial_hex != record.serial_hex
    new_marker = read_agent_extensions(
        x509.load_der_x509_certificate(renewed.certificate_der)
    ).attestation
    assert new_marker is not None
    assert (new_marker.method, new_marker.attestor, new_marker.key_id) == (
        "sev-snp-v1", "amd-sev-snp", "snp-genoa",
    )  # fmt: skip
    assert new_marker.attested_at == first_iat + 5
    assert new_marker.statement_digest.value == hashlib.sha256(_report(fresh)[:0x2A0]).digest()
    assert new_marker.statement_digest != marker.statement_digest
    old = rt.authority.get(record.serial_hex)
    assert old.status is CertStatus.REVOKED
    assert old.revocation_reason is RevocationReason.SUPERSEDED
    # the report the new certificate was issued on cannot renew it again
    again = _renewal(key, renewed.certificate_der, fresh)
    assert _refused(rt, again) == ["attestation-reused"]
    assert _count(rt, Certificate) == rows + 1


def test_snp_renewal_through_the_agent_sdk(
    setup: tuple[Runtime, Settings], chip: double.Chip, tmp_path: Path
) -> None:
    """Over HTTP (the Flask app under a real werkzeug server): the SDK re-reads the envelope
    file on each renewal, so the launcher's rewrite of the file is what renews."""
    rt, settings = setup
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(bytes(range(256)) * 16)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("You trade carefully.\n")
    runtime = RuntimeProvenance("m", model, prompt_path=prompt, recheck_seconds=0.0)
    wire_prov = runtime.current().to_wire()
    rt.registry.add_model(wire_prov.model_digest.hex, "m", ENV)
    rt.registry.register_agent(
        "sdk-agent", "o@example.com", ENV, "m", ["read_book"], [wire_prov.model_digest.hex],
        [wire_prov.prompt_digest.hex], require_attestation=True,
    )  # fmt: skip
    evidence_file = tmp_path / "snp-evidence.json"
    key = ec.generate_private_key(ec.SECP256R1())

    def launch(iat: int) -> bytes:
        claims = double.claims_bytes("sdk-agent", ENV, wire_prov, now=iat)
        evidence = double.evidence(chip, key.public_key(), claims)
        evidence_file.write_bytes(evidence + b"\n")
        return evidence

    app = create_app(settings, runtime_factory=lambda: rt)
    with serve_in_thread(app) as base:
        agent = Agent("sdk-agent", key, runtime, base, attestation=evidence_file)
        first = launch(int(time.time()) - 10)
        agent.enroll(_token(rt, "sdk-agent"))
        assert agent.credential is not None
        serial = agent.credential.serial_hex
        rows = _count(rt, Certificate)
        with pytest.raises(CAResponseError) as info:
            agent.renew()  # the file still holds the report of the current certificate
        assert info.value.status == 403, info.value.problem
        assert info.value.problem["type"].endswith("policy-refused"), info.value.problem
        assert [r.split(":")[0] for r in info.value.problem["reasons"]] == ["attestation-reused"]
        assert _count(rt, Certificate) == rows and agent.credential.serial_hex == serial

        fresh = launch(int(time.time()))
        assert fresh != first
        agent.renew()
        assert agent.credential.serial_hex != serial
        marker = read_agent_extensions(agent.credential.certificate).attestation
        assert marker is not None and marker.method == "sev-snp-v1"
        assert marker.statement_digest.value == hashlib.sha256(_report(fresh)[:0x2A0]).digest()
