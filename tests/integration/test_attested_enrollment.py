"""Runtime attestation through the real CA, OCSP responder and gateway (decision 0051).

An orchestrator key (EC P-256) is configured for the agents' environment, another for a
staging environment. An agent registered with ``--require-attestation`` enrolls only with a
fresh statement from its launcher binding its key to the provenance it runs; every refusal
(missing, expired, foreign key, another key, other digests) is a 403 problem naming the
reason, writes no certificate record and leaves the one-time token usable: the last attempt
with the same token succeeds. The certificate records the attestor (``AgentAttestation``),
which decodes back exactly and which ``openssl asn1parse`` shows. The gateway's attested route
admits it and denies a self-declared agent (``provenance-not-attested``). A renewal needs a
fresh statement: the one the current certificate was issued on is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from agent import Agent, CAResponseError, generate_key
from examples.scenario import ENVIRONMENT, MODEL_TYPE, OFFICER, Scenario
from tests.support.attestor import Orchestrator, write_attestors
from wire.extensions import Attestation, Digest, read_agent_extensions
from wire.oids import DEFAULT_ARC

NAME = "AttestedAgent"
ORCH = Orchestrator("orchestrator.prod", "orch-prod-1")
STAGING = Orchestrator("orchestrator.staging", "orch-staging-1", "ed25519")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[Scenario]:
    s = Scenario.create(tmp_path_factory.mktemp("attest") / "work", pg_module_url)
    s.setup()
    path = write_attestors(s.work / "attestors", [(ORCH, [ENVIRONMENT]), (STAGING, ["staging"])])
    s.env["AGENTCA_ATTESTORS_FILE"] = str(path)
    reg = json.loads(s.cli("agent", "show", "ExecutionAgent-ETH-01", "--json"))
    s.cli(
        "agent", "register", NAME, "--officer", OFFICER, "--environment", ENVIRONMENT,
        "--model-type", MODEL_TYPE, "--model-digest", reg["model_digests"][0],
        "--prompt-digest", reg["prompt_digests"][0], "--scope", "query_anonymized_order_book",
        "--require-attestation",
    )  # fmt: skip
    with s.servers(max_status_age=1.0, inventory_refresh=0.3):
        yield s


def attested_agent(s: Scenario, attestation_file: Path) -> Agent:
    a = s.new_agent(attestation=attestation_file)
    a.name = NAME
    return a


def write(path: Path, token: str) -> Path:
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def records(s: Scenario) -> list[str]:
    return s.cli("list", "--agent", NAME, "--json").splitlines()


def refusal(a: Agent, token: str) -> list[str]:
    with pytest.raises(CAResponseError) as info:
        a.enroll(token)
    assert info.value.status == 403, info.value.problem
    assert info.value.problem["type"].endswith("policy-refused"), info.value.problem
    reasons: list[str] = info.value.problem["reasons"]
    return reasons


def test_attested_enrollment_refusals_gateway_and_renewal(scenario: Scenario) -> None:
    s = scenario
    shown = json.loads(s.cli("agent", "show", NAME, "--json"))
    assert shown["require_attestation"] is True
    file = s.work / "attestation.jwt"
    a = attested_agent(s, file)
    public = a.key.public_key()
    prov = a.provenance.current().to_wire()
    token = s.cli("token", "create", NAME, "--ttl", "15m")
    before = records(s)

    no_attestation = s.new_agent()
    no_attestation.name, no_attestation.key = NAME, a.key
    assert any(r.startswith("attestation-missing") for r in refusal(no_attestation, token))
    cases = {
        "attestation-expired": ORCH.attest(
            NAME, ENVIRONMENT, public, prov, 60, int(time.time()) - 200
        ),
        "attestation-foreign-key": STAGING.attest(NAME, ENVIRONMENT, public, prov),
        "attestation-key-mismatch": ORCH.attest(
            NAME, ENVIRONMENT, generate_key().public_key(), prov
        ),
        "attestation-unknown-key": Orchestrator("orchestrator.prod", "orch-9").attest(
            NAME, ENVIRONMENT, public, prov
        ),
    }
    other = type(prov)(prov.model_type, prov.model_digest, Digest(hashlib.sha256(b"x").digest()))
    cases["attestation-mismatch"] = ORCH.attest(NAME, ENVIRONMENT, public, other)
    for reason, statement in cases.items():
        reasons = refusal(attested_agent(s, write(file, statement)), token)
        assert any(r.startswith(reason) for r in reasons), (reason, reasons)
    assert records(s) == before  # no certificate record for any refusal

    statement = ORCH.attest(NAME, ENVIRONMENT, public, prov)
    write(file, statement)
    a.enroll(token)  # the same one-time token: no refusal consumed it
    cert = a.credential.certificate
    marker = read_agent_extensions(cert).attestation
    payload = base64.urlsafe_b64decode(statement.split(".")[1] + "==")
    assert marker == Attestation(
        "orchestrator-jws-v1", ORCH.attestor, ORCH.key_id, json.loads(payload)["iat"],
        Digest(hashlib.sha256(payload).digest()),
    )  # fmt: skip
    shown_cert = json.loads(s.cli("show", a.credential.serial_hex, "--json"))
    assert json.dumps(shown_cert).count('"attestor": "orchestrator.prod"') == 1, shown_cert
    ext = cert.extensions.get_extension_for_oid(DEFAULT_ARC.attestation)
    assert not ext.critical
    der_file = s.work / "attestation-ext.der"
    der_file.write_bytes(ext.value.value)  # type: ignore[attr-defined]
    parsed = subprocess.run(
        ["openssl", "asn1parse", "-inform", "DER", "-in", str(der_file)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert ":orchestrator-jws-v1" in parsed and ":orch-prod-1" in parsed, parsed
    assert "GENERALIZEDTIME" in parsed and "sha256" in parsed, parsed
    pem = s.work / "attested.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    whole = subprocess.run(
        ["openssl", "asn1parse", "-in", str(pem)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert DEFAULT_ARC.attestation.dotted_string in whole

    # the gateway: the attested route admits it, and denies a self-declared agent
    reply = a.request("GET", s.gateway_url + "/attested/book")
    assert reply.status == 200, reply.body
    assert json.loads(reply.body)["attested_by"] == "orchestrator.prod"
    plain = s.new_agent()
    plain.enroll(s.enrollment_token())
    assert read_agent_extensions(plain.credential.certificate).attestation is None
    reply = plain.request("GET", s.gateway_url + "/attested/book")
    assert reply.status == 403, reply.body
    problem = json.loads(reply.body)
    assert problem["type"].endswith("provenance-not-attested"), problem
    assert plain.request("GET", s.gateway_url + "/book").status == 200

    # renewal: the statement of the current certificate is spent; a fresh one renews
    with pytest.raises(CAResponseError) as info:
        a.renew()
    assert info.value.status == 403
    assert any(r.startswith("attestation-reused") for r in info.value.problem["reasons"])
    write(file, ORCH.attest(NAME, ENVIRONMENT, public, prov))
    old_serial = a.credential.serial_hex
    a.renew()
    assert a.credential.serial_hex != old_serial
    renewed = read_agent_extensions(a.credential.certificate).attestation
    assert renewed is not None and renewed.statement_digest != marker.statement_digest


def test_pkcs10_enrollment_carries_the_attestation_in_a_header(scenario: Scenario) -> None:
    """``application/pkcs10`` clients send the statement in ``Agentca-Attestation``; a
    non-ASCII or garbage header is a problem+json refusal, never a 500."""
    from agent.csr import build_csr
    from tests.integration.http import call

    s = scenario
    a = attested_agent(s, s.work / "unused.jwt")
    prov = a.provenance.current()
    der = build_csr(a.key, NAME, prov).public_bytes(serialization.Encoding.DER)
    token = s.cli("token", "create", NAME, "--ttl", "15m")
    garbage = call(s.ca_url, "POST", "/v1/enroll", der, token=token,
                   content_type="application/pkcs10",
                   headers={"Agentca-Attestation": "x" * 9000})  # fmt: skip
    assert garbage.status == 431, garbage.body  # the server's header bound comes first
    assert garbage.content_type == "application/problem+json"
    garbage = call(s.ca_url, "POST", "/v1/enroll", der, token=token,
                   content_type="application/pkcs10",
                   headers={"Agentca-Attestation": "not-a-jws"})  # fmt: skip
    assert garbage.status == 403, garbage.body
    assert "attestation-malformed" in garbage.body.decode()
    statement = ORCH.attest(NAME, ENVIRONMENT, a.key.public_key(), prov.to_wire())
    reply = call(s.ca_url, "POST", "/v1/enroll", der, token=token,
                 content_type="application/pkcs10", accept="application/pkix-cert",
                 headers={"Agentca-Attestation": statement})  # fmt: skip
    assert reply.status == 201, reply.body
    from cryptography import x509

    marker = read_agent_extensions(x509.load_der_x509_certificate(reply.body)).attestation
    assert marker is not None and marker.key_id == ORCH.key_id
