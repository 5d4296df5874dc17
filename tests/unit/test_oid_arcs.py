"""The OID arc as a CA property (decision 0022): the OidArc value, its warnings, reading
certificates and CSRs under accepted arcs, the CA's arc history and the metadata parser."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca import lint
from ca.arcs import ArcState, PreviousArc, arc_setting, decode_previous, encode_previous
from ca.config import Settings
from ca.errors import CAError, ErrorCode
from ca.extensions import agent_x509_extensions, read_csr_provenance
from ca.profile import AgentCertificateSpec, CertificateUrls, agent_certificate_builder
from tests.unit.helpers import NOW, sample_extensions, software_hierarchy
from wire import csr_attributes, der
from wire.ca_metadata import MetadataError, arcs_from_metadata
from wire.extensions import ExtensionError, agent_arc, found_arcs, read_agent_extensions
from wire.oids import (
    DEFAULT_ARC,
    LARGE_ARC_REFUSED_BY,
    LEGACY_ARC,
    OidArc,
    OidArcError,
    arc_warnings,
    large_components,
)

ARC_A = OidArc("1.3.6.1.4.1.99999.7")
ARC_B = OidArc("1.3.6.1.4.1.99999.8")
URLS = CertificateUrls("http://o/ocsp", "http://o/ca.der", "http://o/ca.crl")
_, _, ISSUING_KEY, ISSUING = software_hierarchy()


# --- the value --------------------------------------------------------------------------------


def test_the_derived_oids_hang_off_the_arc() -> None:
    a = OidArc("1.3.6.1.4.1.32473.2026")
    assert a == DEFAULT_ARC
    assert a.provenance.dotted_string == "1.3.6.1.4.1.32473.2026.1.1"
    assert a.authorization.dotted_string == "1.3.6.1.4.1.32473.2026.1.2"
    assert a.accountability.dotted_string == "1.3.6.1.4.1.32473.2026.1.3"
    assert a.policy_agent_v1.dotted_string == "1.3.6.1.4.1.32473.2026.2.1"
    assert a.kp_agent_request_signing.dotted_string == "1.3.6.1.4.1.32473.2026.3.1"
    assert a.kp_ledger_signing.dotted_string == "1.3.6.1.4.1.32473.2026.3.2"
    assert a.csr_provenance.dotted_string == "1.3.6.1.4.1.32473.2026.4.1"
    assert a.module == "1.3.6.1.4.1.32473.2026.0.1"
    assert a.names[a.provenance.dotted_string] == "id-agentca-provenance"
    assert a.attestation.dotted_string == "1.3.6.1.4.1.32473.2026.1.4"
    assert a.names[a.attestation.dotted_string] == "id-agentca-attestation"
    assert len(a.names) == 8 and len(set(a.names.values())) == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.dotted = "1.2"  # type: ignore[misc]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "3.1",
        "1.40",
        "01.2",
        "1.02.3",
        "1..2",
        " 1.2",
        "1.2 ",
        "1.2.a",
        "1.2.-3",
        "1.2.\u0663",
        "1." + ".".join(["200"] * 40),
    ],
)
def test_a_bad_arc_is_refused(text: str) -> None:
    with pytest.raises(OidArcError):
        OidArc(text)


@pytest.mark.parametrize(
    "text",
    [
        "1.3.6.1.5.5.7",  # PKIX: agentRequestSigning would be serverAuth, provenance AIA
        "1.3.6.1.5.5.7.3",
        "2.5.29",  # id-ce
        "2.5",
        "1.2.840.113549.1.9",  # PKCS#9: CSR attributes
        "2.16.840.1.113730",
        "1.3.6.1",  # a prefix: .4.1 would be the PEN arc itself, .2.1 mib-2
        "1.3",
        "1.2",
        "1.3.6.1.4.1",  # the PEN arc without a PEN: .1.1 is PEN 1's arc
        "2.25",  # the UUID arc without a UUID
    ],
)
def test_an_arc_colliding_with_standard_oids_is_refused(text: str) -> None:
    with pytest.raises(OidArcError, match=r"standard arc|registration arc"):
        OidArc(text)


def test_under_pkix_the_derived_oids_would_be_standard_ones() -> None:
    """Why the arcs above are refused: the OIDs agentca would mint are PKIX's own."""
    derived = {"1.1": "authorityInfoAccess", "3.1": "serverAuth", "3.2": "clientAuth"}
    for tail, name in derived.items():
        assert x509.ObjectIdentifier(f"1.3.6.1.5.5.7.{tail}")._name == name


@pytest.mark.parametrize("text", ["2.999.5", "2.50", "1.3.6.1.4.1.55", "2.25.12345", "1.3.6.1.50"])
def test_arcs_beside_the_standard_ones_are_accepted(text: str) -> None:
    assert OidArc(text).dotted == text


@pytest.mark.parametrize("text", [f"1.3.6.1.4.1.{2**128}", f"2.{2**130}", f"2.25.{2**200}"])
def test_a_component_too_large_for_cryptography_is_an_arc_error(text: str) -> None:
    """wire.der encodes any size, rust-asn1 (cryptography) stops at 2**128: refused up front,
    not a ValueError at the first certificate issued under the arc."""
    with pytest.raises(OidArcError, match="too large"):
        OidArc(text)


def _cryptography_takes(text: str) -> bool:
    try:
        x509.ObjectIdentifier(text)
    except BaseException:
        return False
    return True


@pytest.mark.parametrize(
    "text",
    [f"2.25.{2**128 - 1}", f"2.25.{2**128}", f"2.{2**128 - 81}", f"2.{2**128 - 80}",
     f"2.{2**128 - 1}", f"1.3.6.1.4.1.{2**128 - 1}", f"1.39.{2**128 - 1}.{2**128 - 1}"],
)  # fmt: skip
def test_the_size_bound_is_exactly_cryptographys(text: str) -> None:
    """The bound is checked without cryptography (so importing wire.oids stays light) and
    matches it exactly, the combined first subidentifier (40 * first + second, where
    rust-asn1 panics instead of raising) included."""
    takes = _cryptography_takes(text + ".9.9")
    try:
        OidArc(text)
    except OidArcError as exc:
        assert not takes and "too large" in str(exc)
    else:
        assert takes


def test_importing_the_arcs_does_not_load_cryptography() -> None:
    code = "import sys, wire.oids; print('cryptography' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_longest_arc_still_leaves_room_for_the_derived_oids() -> None:
    arc = OidArc("1.9." + ".".join(["1"] * (der.MAX_OID_BYTES - 3)))
    assert len(der.encode_oid_content(arc.module)) == der.MAX_OID_BYTES
    with pytest.raises(OidArcError, match="too long"):
        OidArc(arc.dotted + ".1")


def test_large_components_and_their_warning_name_go_and_gnutls() -> None:
    assert large_components(LEGACY_ARC.dotted) == (40108673889173621464063845417476256764,)
    assert large_components("1.3.6.1.4.1.2147483647.1") == ()
    assert large_components("1.3.6.1.4.1.2147483648.1") == (2147483648,)
    (warning,) = arc_warnings(LEGACY_ARC)
    assert "2**31" in warning
    for verifier in LARGE_ARC_REFUSED_BY:
        assert verifier in warning
    assert "Go crypto/x509" in warning and "GnuTLS" in warning and "SPIRE" in warning


def test_the_example_arc_warns_and_a_pen_arc_does_not() -> None:
    (warning,) = arc_warnings(DEFAULT_ARC)
    assert "RFC 5612" in warning and "--oid-arc" in warning and "1.3.6.1.4.1.<PEN>" in warning
    assert OidArc("1.3.6.1.4.1.32473").is_example
    assert not OidArc("1.3.6.1.4.1.324731.1").is_example
    assert arc_warnings(ARC_A) == []


def test_the_setting_empty_is_the_default_and_a_bad_one_is_a_config_error() -> None:
    assert arc_setting("") == DEFAULT_ARC
    assert arc_setting(" 1.3.6.1.4.1.99999.7 ") == ARC_A
    with pytest.raises(CAError) as info:
        arc_setting("1.3.6.01")
    assert info.value.code is ErrorCode.CONFIG
    with pytest.raises(CAError) as info:
        Settings(oid_arc="9.9")
    assert info.value.code is ErrorCode.CONFIG and "oid_arc" in info.value.detail
    assert Settings(oid_arc=ARC_A.dotted).oid_arc == ARC_A.dotted


# --- certificates under arcs ------------------------------------------------------------------


def _spec(arc: OidArc) -> AgentCertificateSpec:
    return AgentCertificateSpec(
        serial=0x1234567890ABCDEF,
        agent_name="agent-1",
        organization="Enterprise Inc",
        trust_domain="agents.example",
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        extensions=sample_extensions(("a", "b")),
        not_before=NOW - timedelta(seconds=60),
        not_after=NOW + timedelta(hours=1),
        oid_arc=arc,
    )


def _issue(arc: OidArc) -> x509.Certificate:
    return lint.sign_agent_certificate(_spec(arc), ISSUING, ISSUING_KEY, URLS)


def test_a_certificate_carries_every_oid_under_the_issuers_arc() -> None:
    cert = _issue(ARC_B)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH, ARC_B.kp_agent_request_signing]
    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier for p in policies] == [ARC_B.policy_agent_v1]
    for oid in ARC_B.agent_extension_oids:
        assert cert.extensions.get_extension_for_oid(oid).critical is False
    assert found_arcs(cert) == (ARC_B.dotted,)
    assert read_agent_extensions(cert, (ARC_A, ARC_B)).arc == ARC_B


def test_the_default_reading_accepts_the_default_and_the_legacy_arc() -> None:
    assert read_agent_extensions(_issue(DEFAULT_ARC)).arc == DEFAULT_ARC
    assert read_agent_extensions(_issue(LEGACY_ARC)).arc == LEGACY_ARC
    with pytest.raises(ExtensionError, match="no agent extensions under an accepted OID arc"):
        read_agent_extensions(_issue(ARC_A))


def test_an_arc_not_accepted_is_refused_naming_found_and_accepted() -> None:
    cert = _issue(ARC_A)
    with pytest.raises(ExtensionError) as info:
        read_agent_extensions(cert, (ARC_B, LEGACY_ARC))
    text = str(info.value)
    assert f"found under: {ARC_A}" in text
    assert f"accepted: {ARC_B}, {LEGACY_ARC}" in text


def _with_extra(arc: OidArc, extra: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    builder = agent_certificate_builder(_spec(arc), ISSUING, URLS)
    for value, critical in extra:
        builder = builder.add_extension(value, critical)
    return builder.sign(ISSUING_KEY, hashes.SHA256())


def test_a_certificate_with_agent_extensions_under_two_arcs_is_refused() -> None:
    both = _with_extra(ARC_A, list(agent_x509_extensions(sample_extensions(("a",)), ARC_B)))
    for arcs in ((ARC_A, ARC_B), (ARC_A,), (ARC_B,)):
        with pytest.raises(ExtensionError, match="more than one OID arc") as info:
            read_agent_extensions(both, arcs)
        assert ARC_A.dotted in str(info.value) and ARC_B.dotted in str(info.value)
    # one stray extension of another arc is enough
    stray = agent_x509_extensions(sample_extensions(("a",)), ARC_B)[2]
    with pytest.raises(ExtensionError, match="more than one OID arc"):
        agent_arc(_with_extra(ARC_A, [stray]), (ARC_A,))


def test_the_lint_holds_the_certificate_to_the_issuers_arc() -> None:
    cert = _issue(ARC_A)
    lint.lint_certificate(cert, sample_extensions(("a", "b")), ARC_A)
    with pytest.raises(lint.LintError, match="no agent extensions under an accepted OID arc"):
        lint.lint_certificate(cert, sample_extensions(("a", "b")), ARC_B)


def test_pkix_extensions_are_not_mistaken_for_an_arc() -> None:
    cert = _with_extra(
        ARC_A,
        [
            (
                x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.3"), b"\x30\x00"),
                False,
            )
        ],
    )
    assert read_agent_extensions(cert, (ARC_A,)).arc == ARC_A


# --- CSR attribute ----------------------------------------------------------------------------


def _csr(*arcs: OidArc) -> x509.CertificateSigningRequest:
    """A CSR whose provenance attribute appears once under each of ``arcs``."""
    key = ec.generate_private_key(ec.SECP256R1())
    prov = sample_extensions(("a",)).provenance.to_der()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent-1")])
    if len(arcs) == 1:
        return csr_attributes.build_csr(key, name, prov, arcs[0])
    alg, sign = csr_attributes.signature_algorithm(key)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    attrs = b"".join(sorted(csr_attributes.provenance_attribute(prov, a) for a in arcs))
    info = der.seq(der.integer(0), name.public_bytes(), spki, der.tlv(0xA0, attrs))
    return x509.load_der_x509_csr(der.seq(info, alg, der.bit_string(sign(info))))


def test_the_csr_attribute_is_read_under_the_accepted_arcs_only() -> None:
    csr = _csr(ARC_B)
    assert read_csr_provenance(csr, (ARC_B,)) == sample_extensions(("a",)).provenance
    assert read_csr_provenance(csr, (ARC_A, ARC_B)) is not None
    assert read_csr_provenance(csr, (ARC_A,)) is None
    assert read_csr_provenance(_csr(DEFAULT_ARC)) is not None


def test_a_csr_claiming_provenance_under_two_arcs_is_refused() -> None:
    csr = _csr(ARC_A, ARC_B)
    assert read_csr_provenance(csr, (ARC_A,)) is not None  # only one of them is ours
    with pytest.raises(CAError) as info:
        read_csr_provenance(csr, (ARC_A, ARC_B))
    assert info.value.code is ErrorCode.INVALID_EXTENSION
    assert "more than once" in info.value.detail


# --- the CA's arc history ---------------------------------------------------------------------


def test_moving_keeps_the_old_arc_for_the_longest_certificate_lifetime() -> None:
    keep = timedelta(hours=168)
    state = ArcState(ARC_A).moved_to(ARC_B, NOW, keep)
    assert state.current == ARC_B
    assert state.previous == (PreviousArc(ARC_A, NOW + keep),)
    assert state.accepted(NOW) == (ARC_B, ARC_A)
    assert state.accepted(NOW + keep - timedelta(seconds=1)) == (ARC_B, ARC_A)
    assert state.accepted(NOW + keep) == (ARC_B,)
    assert state.every_arc == (ARC_B, ARC_A)
    later = state.moved_to(DEFAULT_ARC, NOW + timedelta(hours=1), keep)
    assert later.accepted(NOW + timedelta(hours=1)) == (DEFAULT_ARC, ARC_B, ARC_A)
    back = later.moved_to(ARC_A, NOW + timedelta(hours=2), keep)  # ARC_A is current again
    assert back.current == ARC_A and ARC_A not in [p.arc for p in back.previous]
    expired = state.moved_to(DEFAULT_ARC, NOW + keep, keep)  # ARC_A has aged out
    assert [p.arc for p in expired.previous] == [ARC_B]
    assert ArcState(ARC_A).moved_to(ARC_A, NOW, keep) == ArcState(ARC_A)


def test_the_stored_history_round_trips_and_corruption_is_an_error() -> None:
    previous = (PreviousArc(ARC_A, NOW), PreviousArc(LEGACY_ARC, NOW + timedelta(hours=1)))
    assert decode_previous(encode_previous(previous)) == previous
    assert decode_previous("") == ()
    for bad in ("{", "[{}]", '[{"arc": "9.9", "until": "2026-01-01T00:00:00+00:00"}]'):
        with pytest.raises(CAError) as info:
            decode_previous(bad)
        assert info.value.code is ErrorCode.INTERNAL


# --- the metadata document --------------------------------------------------------------------


def test_arcs_from_metadata() -> None:
    doc = {"oid_arc": ARC_B.dotted, "accepted_oid_arcs": [ARC_B.dotted, ARC_A.dotted]}
    arcs = arcs_from_metadata(json.dumps(doc))
    assert arcs.oid_arc == ARC_B and arcs.accepted_oid_arcs == (ARC_B, ARC_A)
    assert arcs_from_metadata(doc) == arcs
    assert arcs_from_metadata(json.dumps(doc).encode()) == arcs


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("[]", "not a JSON object"),
        ("{", "not JSON"),
        ({"accepted_oid_arcs": ["1.9"]}, "'oid_arc'"),
        ({"oid_arc": "1.9", "accepted_oid_arcs": "1.9"}, "'accepted_oid_arcs'"),
        ({"oid_arc": "1.9", "accepted_oid_arcs": []}, "at least one"),
        ({"oid_arc": "1.9", "accepted_oid_arcs": ["1.8"]}, "not in 'accepted_oid_arcs'"),
        ({"oid_arc": "1.02", "accepted_oid_arcs": ["1.02"]}, "DER-encodable"),
        ({"oid_arc": "1.9", "accepted_oid_arcs": ["1.9", "1.3.6.1.5.5.7"]}, "standard arc"),
        ({"oid_arc": f"1.9.{2**128}", "accepted_oid_arcs": [f"1.9.{2**128}"]}, "too large"),
    ],
)
def test_a_bad_metadata_document_is_refused(doc: object, message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        arcs_from_metadata(doc)  # type: ignore[arg-type]
