"""Serials, revocation reasons, durations, configuration layering and CSR checks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca.config import load_settings
from ca.csr import load_csr
from ca.errors import CAError, ErrorCode
from ca.revocation import RevocationReason
from ca.serials import new_serial, parse_serial, serial_to_hex
from cli.context import parse_duration


def test_serials_are_random_positive_and_at_least_64_bits():
    serials = {new_serial() for _ in range(2000)}
    assert len(serials) == 2000
    assert all(64 < s.bit_length() <= 159 for s in serials)
    # top bits vary: the values are not a counter
    assert len({s >> 150 for s in serials}) > 100


def test_serial_text_round_trip():
    s = new_serial()
    assert parse_serial(serial_to_hex(s)) == s
    assert parse_serial("0x0A:BC") == 0xABC
    for bad in ("", "xyz", "0", "1" * 41):
        with pytest.raises(ValueError):
            parse_serial(bad)


def test_revocation_reasons_parse_every_spelling():
    assert RevocationReason.parse("keyCompromise") is RevocationReason.KEY_COMPROMISE
    assert RevocationReason.parse("key-compromise") is RevocationReason.KEY_COMPROMISE
    assert RevocationReason.parse("6") is RevocationReason.CERTIFICATE_HOLD
    assert RevocationReason.PRIVILEGE_WITHDRAWN.text == "privilegeWithdrawn"
    with pytest.raises(CAError) as err:
        RevocationReason.parse("bogus")
    assert "keyCompromise" in err.value.detail
    with pytest.raises(CAError):
        RevocationReason.parse("removeFromCRL")


def test_durations():
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("30m") == timedelta(minutes=30)
    with pytest.raises(CAError) as err:
        parse_duration("12 parsecs")
    assert err.value.code is ErrorCode.INVALID_VALIDITY


def test_settings_layering(tmp_path):
    cfg = tmp_path / "agentca.toml"
    cfg.write_text(
        '[agentca]\ntrust_domain = "from.file"\nworkers = 4\norganization = "File Org"\n'
    )
    s = load_settings({"AGENTCA_WORKERS": "3", "AGENTCA_DATA_DIR": str(tmp_path)}, cfg)
    assert s.trust_domain == "from.file"  # file beats default
    assert s.workers == 3  # environment beats file
    assert s.effective_database_url == f"sqlite:///{tmp_path}/agentca.sqlite3"
    assert s.effective_pin_file == tmp_path / "secrets/user.pin"


def test_settings_refuse_unknown_keys_bad_values_and_inline_pins(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("trust_domian = 'typo'\n")
    with pytest.raises(
        CAError, match=r"'trust_domian' is not a setting \(did you mean trust_domain"
    ):
        load_settings({}, cfg)
    with pytest.raises(CAError, match="workers"):
        load_settings({"AGENTCA_WORKERS": "many"})
    with pytest.raises(CAError, match="AGENTCA_HSM_PIN_FILE"):
        load_settings({"AGENTCA_HSM_PIN": "1234"})
    with pytest.raises(CAError, match="does not exist"):
        load_settings({}, tmp_path / "missing.toml")


def _csr(key=None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def test_csr_pem_and_der_load():
    pem = _csr()
    assert load_csr(pem).is_signature_valid
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    assert load_csr(der).is_signature_valid


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", ErrorCode.BAD_CSR),
        (b"not a csr", ErrorCode.BAD_CSR),
        (
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            ErrorCode.BAD_CSR,
        ),
        (b"\x30" * 20000, ErrorCode.TOO_LARGE),
    ],
)
def test_malformed_csrs_are_refused(data, code):
    with pytest.raises(CAError) as err:
        load_csr(data)
    assert err.value.code is code


def test_csr_with_broken_signature_is_refused():
    der = x509.load_pem_x509_csr(_csr()).public_bytes(serialization.Encoding.DER)
    assert der.count(b"\x0c\x01a") == 1  # the subject CN, a UTF8String "a"
    tampered = der.replace(b"\x0c\x01a", b"\x0c\x01b")  # still valid DER, signature now wrong
    with pytest.raises(CAError) as err:
        load_csr(tampered)
    assert err.value.code is ErrorCode.CSR_SIGNATURE


def test_csr_with_unsupported_key_is_refused():
    with pytest.raises(CAError) as err:
        load_csr(_csr(ec.generate_private_key(ec.SECP521R1())))
    assert err.value.code is ErrorCode.UNSUPPORTED_KEY
