"""The SDKs take their OID arcs from configuration or the CA metadata (decision 0022): a full
gateway Verifier accepts an agent under an accepted arc and refuses one under another arc at
the chain check; the agent SDK puts its CSR attribute under the CA's arc."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.errors import AgentError
from gateway import StaticInventory, StatusChecker, Verifier
from gateway.problems import Check
from gateway.verifier import oid_arcs_from_metadata
from tests.support.gateway_pki import Clock, Pki, make_agent, model_digest, signed_view
from wire import csr_attributes
from wire.ca_metadata import MetadataError
from wire.oids import DEFAULT_ARC, OidArc

SCOPE = "submit_limit_order"
ARC_B = OidArc("1.3.6.1.4.1.99999.8")


def _verifier(pki: Pki, clock: Clock, **kw: Any) -> Verifier:
    return Verifier(
        [pki.root],
        StaticInventory([model_digest().hex()]),
        StatusChecker(refresh=False, clock=clock, fetch=False),
        clock=clock,
        audience="http://gw.local",
        trust_domain="agentca.local",
        **kw,
    )


def test_the_gateway_accepts_the_arcs_it_is_given_and_refuses_others(tmp_path: Path) -> None:
    pki, clock = Pki.create(), Clock()
    agent = make_agent(tmp_path, pki, clock)  # certificate under the default arc
    staple = pki.ocsp_response(agent.credential.certificate, this_update=clock())

    default = _verifier(pki, clock)
    assert default.decide(signed_view(agent, staple=staple)[0], SCOPE).allowed

    metadata = json.dumps(
        {"oid_arc": ARC_B.dotted, "accepted_oid_arcs": [ARC_B.dotted, DEFAULT_ARC.dotted]}
    )
    both = _verifier(pki, clock, oid_arcs=oid_arcs_from_metadata(metadata))
    assert both.chains.oid_arcs == (ARC_B, DEFAULT_ARC)
    assert both.decide(signed_view(agent, staple=staple)[0], SCOPE).allowed

    only_b = _verifier(pki, clock, oid_arcs=[ARC_B.dotted])
    decision = only_b.decide(signed_view(agent, staple=staple)[0], SCOPE)
    assert not decision.allowed and decision.denial is not None
    assert decision.denial.check is Check.CHAIN
    assert f"found under: {DEFAULT_ARC}; accepted: {ARC_B}" in decision.denial.detail
    assert len(only_b.chains) == 0


def test_a_gateway_refuses_bad_arcs_and_bad_metadata() -> None:
    pki, clock = Pki.create(), Clock()
    with pytest.raises(ValueError, match="not a DER-encodable OID arc"):
        _verifier(pki, clock, oid_arcs=["1.3.6.01"])
    with pytest.raises(ValueError, match="at least one"):
        _verifier(pki, clock, oid_arcs=[])
    with pytest.raises(MetadataError):
        oid_arcs_from_metadata("{}")


def test_the_agent_puts_its_csr_attribute_under_the_cas_arc(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, Pki.create(), Clock())
    assert agent.oid_arc == DEFAULT_ARC
    _, der = agent._csr_pem()
    assert csr_attributes.read_provenance_attribute(_tbs(der), (DEFAULT_ARC,)) is not None
    agent.use_ca_metadata({"oid_arc": ARC_B.dotted, "accepted_oid_arcs": [ARC_B.dotted]})
    assert (agent.oid_arc, agent.oid_arcs) == (ARC_B, (ARC_B,))
    _, der = agent._csr_pem()
    assert csr_attributes.read_provenance_attribute(_tbs(der), (DEFAULT_ARC,)) is None
    assert csr_attributes.read_provenance_attribute(_tbs(der), (ARC_B,)) is not None
    with pytest.raises(AgentError, match="CA metadata"):
        agent.use_ca_metadata({"oid_arc": ARC_B.dotted})


def _tbs(csr_der: bytes) -> bytes:
    from cryptography import x509

    return x509.load_der_x509_csr(csr_der).tbs_certrequest_bytes


def _mixed_arc_certificate(pki: Pki, eku_arc: OidArc) -> tuple[Any, Any]:
    """An agent certificate of the trusted issuing CA with its extensions under ARC_B but the
    agentRequestSigning EKU of ``eku_arc`` (what a CA bug or a forged profile would sign)."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from ca.profile import signature_hash

    key, cert = pki.issue()
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(cert.serial_number + 1000)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
    )
    for ext in cert.extensions:
        value = ext.value
        if isinstance(value, x509.ExtendedKeyUsage):
            value = x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, eku_arc.kp_agent_request_signing]
            )
        elif ext.oid in DEFAULT_ARC.agent_extension_oids:
            index = DEFAULT_ARC.agent_extension_oids.index(ext.oid)
            value = x509.UnrecognizedExtension(ARC_B.agent_extension_oids[index], value.value)
        elif isinstance(value, x509.CertificatePolicies):
            value = x509.CertificatePolicies([x509.PolicyInformation(ARC_B.policy_agent_v1, None)])
        builder = builder.add_extension(value, ext.critical)
    return key, builder.sign(pki.issuing_key, signature_hash(pki.issuing_key))


def test_the_gateway_refuses_an_eku_under_one_accepted_arc_and_extensions_under_another(
    tmp_path: Path,
) -> None:
    pki, clock = Pki.create(), Clock()
    gateway = _verifier(pki, clock, oid_arcs=[ARC_B, DEFAULT_ARC])
    # control: the same construction with the EKU under ARC_B is accepted
    key, matched = _mixed_arc_certificate(pki, ARC_B)
    agent = make_agent(tmp_path / "ok", pki, clock, cert=matched, key=key, oid_arcs=(ARC_B,))
    staple = pki.ocsp_response(matched, this_update=clock())
    assert gateway.decide(signed_view(agent, staple=staple)[0], SCOPE).allowed

    key, mixed = _mixed_arc_certificate(pki, DEFAULT_ARC)
    agent = make_agent(tmp_path / "mixed", pki, clock, cert=mixed, key=key, oid_arcs=(ARC_B,))
    staple = pki.ocsp_response(mixed, this_update=clock())
    decision = gateway.decide(signed_view(agent, staple=staple)[0], SCOPE)
    assert not decision.allowed and decision.denial is not None
    assert decision.denial.check is Check.CHAIN
    assert "agentRequestSigning EKU is not under the arc of its agent extensions" in (
        decision.denial.detail
    )
