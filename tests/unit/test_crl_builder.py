"""The streamed DER CRL builder against cryptography's parser, with software keys."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from ca.crl import (
    CrlSpec,
    RevokedEntry,
    build_crl,
    build_crl_bytes,
    encode_entries,
    iter_revoked,
    read_crl_info,
    revoked_serials,
)
from ca.errors import CAError
from ca.profile import build_root_certificate
from ca.revocation import RevocationReason
from tests.unit.helpers import NOW, software_hierarchy

REASONS = [None, *(r for r in RevocationReason if r is not RevocationReason.UNSPECIFIED)]


def _ca(key: CertificateIssuerPrivateKeyTypes) -> x509.Certificate:
    return build_root_certificate(
        key, "CRL Test CA", "Test Org", 99, NOW - timedelta(days=1), NOW + timedelta(days=9000)
    )


def _entries(n: int, when: datetime = NOW) -> list[RevokedEntry]:
    return [
        RevokedEntry((1 << 158) + 7919 * i, when - timedelta(seconds=i), REASONS[i % len(REASONS)])
        for i in range(n)
    ]


def _spec(number: int = 1, **kw: object) -> CrlSpec:
    values: dict[str, object] = {
        "this_update": NOW,
        "next_update": NOW + timedelta(hours=2),
        "number": number,
    }
    values.update(kw)
    return CrlSpec(**values)  # type: ignore[arg-type]


KEYS = {
    "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa-2048": lambda: rsa.generate_private_key(65537, 2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("key_type", sorted(KEYS))
@pytest.mark.parametrize("count", [0, 1, 2500])
def test_parses_and_verifies(key_type: str, count: int) -> None:
    key = KEYS[key_type]()
    ca = _ca(key)
    entries = _entries(count)
    der = build_crl_bytes(ca, key, _spec(7, freshest_url="http://h/crl/x-delta.crl"), entries)
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.subject
    assert crl.last_update_utc == NOW and crl.next_update_utc == NOW + timedelta(hours=2)
    assert len(crl) == count
    if key_type == "ed25519":
        assert crl.signature_hash_algorithm is None
    else:
        want = hashes.SHA384 if key_type == "ec-p384" else hashes.SHA256
        assert isinstance(crl.signature_hash_algorithm, want)
    for want_entry, got in zip(entries, crl, strict=True):
        assert got.serial_number == want_entry.serial
        assert got.revocation_date_utc == want_entry.revoked_at
        if want_entry.reason is None:
            assert len(got.extensions) == 0
        else:
            reason = got.extensions.get_extension_for_oid(CRLEntryExtensionOID.CRL_REASON)
            assert reason.value.reason == RevocationReason(want_entry.reason).x509_flag
    exts = crl.extensions
    assert exts.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = exts.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    freshest = exts.get_extension_for_class(x509.FreshestCRL)
    assert not freshest.critical
    point = freshest.value[0].full_name
    assert point == [x509.UniformResourceIdentifier("http://h/crl/x-delta.crl")]
    with pytest.raises(x509.ExtensionNotFound):
        exts.get_extension_for_class(x509.DeltaCRLIndicator)


def test_unspecified_reason_has_no_entry_extension() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca(key)
    der = build_crl_bytes(ca, key, _spec(), [RevokedEntry(5, NOW, 0), RevokedEntry(6, NOW, 1)])
    first, second = list(x509.load_der_x509_crl(der))
    assert len(first.extensions) == 0
    assert len(second.extensions) == 1


def test_delta_crl_indicator_and_remove_from_crl() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca(key)
    entries = [
        RevokedEntry(10, NOW, int(RevocationReason.CERTIFICATE_HOLD)),
        RevokedEntry(11, NOW, int(RevocationReason.REMOVE_FROM_CRL)),
    ]
    der = build_crl_bytes(ca, key, _spec(9, base_number=4), entries)
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(key.public_key())
    indicator = crl.extensions.get_extension_for_oid(ExtensionOID.DELTA_CRL_INDICATOR)
    assert indicator.critical and indicator.value.crl_number == 4
    with pytest.raises(x509.ExtensionNotFound):
        crl.extensions.get_extension_for_class(x509.FreshestCRL)
    reasons = [e.extensions.get_extension_for_class(x509.CRLReason).value.reason for e in crl]
    assert reasons == [x509.ReasonFlags.certificate_hold, x509.ReasonFlags.remove_from_crl]
    info = read_crl_info(io.BytesIO(der))
    assert (info.number, info.base_number, info.is_delta) == (9, 4, True)


@pytest.mark.parametrize(
    ("when", "tag"),
    [
        (datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), 0x17),  # UTCTime
        (datetime(2050, 1, 1, 0, 0, 0, tzinfo=UTC), 0x18),  # GeneralizedTime
        (datetime(1999, 6, 1, 8, 30, 0, tzinfo=UTC), 0x17),
    ],
)
def test_utctime_until_2049_then_generalizedtime(when: datetime, tag: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca(key)
    spec = CrlSpec(this_update=when, next_update=when + timedelta(days=400), number=3)
    der = build_crl_bytes(ca, key, spec, [RevokedEntry(77, when, 1)])
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(key.public_key())
    assert crl.last_update_utc == when
    assert crl.next_update_utc == when + timedelta(days=400)
    assert crl[0].revocation_date_utc == when
    entry_der = encode_entries([RevokedEntry(77, when, None)])
    assert entry_der[2 + 3] == tag  # SEQUENCE hdr, INTEGER 77 (3 bytes), then the Time tag


def test_times_are_truncated_to_seconds_and_must_be_aware() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca(key)
    der = build_crl_bytes(ca, key, _spec(), [RevokedEntry(1, NOW.replace(microsecond=999), 1)])
    assert next(iter(x509.load_der_x509_crl(der))).revocation_date_utc == NOW
    with pytest.raises(ValueError):
        build_crl_bytes(ca, key, _spec(), [RevokedEntry(1, NOW.replace(tzinfo=None), 1)])


def test_large_serials_and_high_bit_serials() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca(key)
    serials = [1, 127, 128, 255, 256, (1 << 159) - 1, 1 << 159, (1 << 160) - 1]
    der = build_crl_bytes(ca, key, _spec(), [RevokedEntry(s, NOW, None) for s in serials])
    assert [e.serial_number for e in x509.load_der_x509_crl(der)] == serials
    assert revoked_serials(der) == frozenset(serials)


def test_lookup_set_and_entry_iterator_round_trip() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca(key)
    entries = _entries(3000)
    der = build_crl_bytes(ca, key, _spec(), entries)
    serials = revoked_serials(der)
    assert serials == {e.serial for e in entries}
    assert (1 << 158) in serials and 12345 not in serials
    assert list(iter_revoked(der)) == entries
    assert revoked_serials(build_crl_bytes(ca, key, _spec(), [])) == frozenset()


def test_streams_into_a_file_and_reports_counts() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca(key)
    out = io.BytesIO(b"garbage that must be overwritten" * 100)
    built = build_crl(out, ca, key, _spec(), iter(_entries(50_000)))
    data = out.getvalue()
    assert built.entries == 50_000 and built.size == len(data)
    crl = x509.load_der_x509_crl(data)
    assert len(crl) == 50_000 and crl.is_signature_valid(key.public_key())


def test_read_crl_info_of_complete_crl() -> None:
    _, _, issuing_key, issuing = software_hierarchy()
    der = build_crl_bytes(
        issuing,
        issuing_key,
        _spec(12, freshest_url="http://127.0.0.1:8400/crl/issuing-delta.crl"),
        _entries(3),
    )
    info = read_crl_info(io.BytesIO(der))
    assert info.number == 12 and info.base_number is None and not info.is_delta
    assert info.this_update == NOW and info.next_update == NOW + timedelta(hours=2)
    assert info.freshest_url == "http://127.0.0.1:8400/crl/issuing-delta.crl"
    with pytest.raises(CAError):
        read_crl_info(io.BytesIO(b"\x30\x03\x02\x01\x00"))


def test_spec_is_checked() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca(key)
    with pytest.raises(CAError):
        build_crl_bytes(ca, key, _spec(next_update=NOW))
    with pytest.raises(CAError):
        build_crl_bytes(ca, key, _spec(3, base_number=3))
    with pytest.raises(ValueError):
        build_crl_bytes(ca, key, _spec(), [RevokedEntry(1, NOW, 7)])  # 7 is not a reason


def test_matches_cryptography_builder_structure() -> None:
    """Same entries through cryptography's builder give the same TBS entries and extensions."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca(key)
    entries = _entries(20)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(NOW)
        .next_update(NOW + timedelta(hours=2))
    )
    for e in entries:
        rb = x509.RevokedCertificateBuilder().serial_number(e.serial).revocation_date(e.revoked_at)
        if e.reason is not None:
            rb = rb.add_extension(x509.CRLReason(RevocationReason(e.reason).x509_flag), False)
        builder = builder.add_revoked_certificate(rb.build())
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False
    ).add_extension(x509.CRLNumber(1), False)
    reference = builder.sign(key, hashes.SHA256())
    ours = x509.load_der_x509_crl(build_crl_bytes(ca, key, _spec(1), entries))
    ours_tbs, ref_tbs = ours.tbs_certlist_bytes, reference.tbs_certlist_bytes
    assert ours_tbs == ref_tbs


def test_outer_length_boundary_whatever_the_signature_length() -> None:
    """Around 65,536 bytes the outer header size depends on the ECDSA signature length: the
    builder reserves for the longest signature and shifts once when it came out shorter."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca(key)
    entries = _entries(1250)

    def build(pad: int) -> bytes:
        spec = _spec(freshest_url="http://h/" + "a" * pad + ".crl")
        return build_crl_bytes(ca, key, spec, entries)

    base_pad = 100
    for _ in range(3):  # converge on the pad that puts the content length near 65,536
        base_pad += 65536 + 4 - len(build(base_pad))
    sizes = set()
    for pad in range(base_pad - 4, base_pad + 4):
        for _ in range(4):  # ECDSA signatures vary in length (70-72 bytes)
            der = build(pad)
            crl = x509.load_der_x509_crl(der)
            assert crl.is_signature_valid(key.public_key())
            assert len(crl) == 1250
            info = read_crl_info(io.BytesIO(der))
            assert info.freshest_url == "http://h/" + "a" * pad + ".crl" and info.number == 1
            sizes.add(len(der))
    assert min(sizes) < 65536 + 4 < max(sizes)


def test_time_encoder_matches_plain_encoding() -> None:
    import random

    from ca.crl import _time, _TimeEncoder

    encode = _TimeEncoder()
    rng = random.Random(7)
    start = datetime(1950, 1, 1, tzinfo=UTC)
    samples = [start + timedelta(seconds=rng.randrange(0, 110 * 365 * 86400)) for _ in range(5000)]
    samples += [datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2050, 1, 1, tzinfo=UTC)]
    for when in samples:
        assert encode(when) == _time(when), when
    other_zone = datetime(2030, 1, 1, 1, 30, tzinfo=UTC).astimezone(timezone(timedelta(hours=5)))
    assert encode(other_zone) == _time(other_zone) == b"\x17\x0d300101013000Z"
