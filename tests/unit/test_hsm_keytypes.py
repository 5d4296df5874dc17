"""Pure parts of the key seam: key-type parsing, signature encodings, mechanism choice."""

from __future__ import annotations

import copy
import hashlib

import pytest
from asn1crypto.algos import DigestInfo
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st
from pkcs11 import MGF, Mechanism

from hsm import HsmEcPrivateKey, KeyNotExtractable, KeyType, MechanismUnsupported
from hsm.keys import digest_info, ecdsa_digest, raw_to_der_signature, rsa_mechanism


def test_parse_accepts_every_value_case_and_blank_insensitively() -> None:
    for member in KeyType:
        assert KeyType.parse(member.value) is member
        assert KeyType.parse(f"  {member.value.upper()} ") is member
    assert [m.value for m in KeyType] == [
        "ec-p256",
        "ec-p384",
        "rsa-2048",
        "rsa-3072",
        "rsa-4096",
        "ed25519",
    ]


def test_parse_error_lists_the_choices() -> None:
    with pytest.raises(ValueError) as info:
        KeyType.parse("dsa-1024")
    message = str(info.value)
    assert "'dsa-1024'" in message
    for member in KeyType:
        assert member.value in message


def test_key_type_properties() -> None:
    assert KeyType.EC_P384.is_ec and not KeyType.EC_P384.is_rsa
    assert KeyType.RSA_3072.is_rsa and KeyType.RSA_3072.key_size == 3072
    assert not KeyType.ED25519.is_ec and not KeyType.ED25519.is_rsa
    assert str(KeyType.EC_P256) == "ec-p256"


@given(st.integers(1, 2**384 - 1), st.integers(1, 2**384 - 1), st.sampled_from([32, 48, 66]))
def test_raw_signature_is_der_encoded(r: int, s: int, size: int) -> None:
    r, s = r % 2 ** (8 * size) or 1, s % 2 ** (8 * size) or 1
    raw = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    assert decode_dss_signature(raw_to_der_signature(raw)) == (r, s)


@pytest.mark.parametrize("raw", [b"", b"\x01\x02\x03"])
def test_malformed_raw_signature_is_rejected(raw: bytes) -> None:
    from hsm import HSMError

    with pytest.raises(HSMError):
        raw_to_der_signature(raw)


@pytest.mark.parametrize("algorithm", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()])
def test_ecdsa_digest_hashes_or_passes_prehashed(algorithm: hashes.HashAlgorithm) -> None:
    expected = hashlib.new(algorithm.name, b"data").digest()
    assert ecdsa_digest(b"data", ec.ECDSA(algorithm)) == expected
    assert ecdsa_digest(expected, ec.ECDSA(utils.Prehashed(algorithm))) == expected
    with pytest.raises(ValueError):
        ecdsa_digest(expected[:-1], ec.ECDSA(utils.Prehashed(algorithm)))


def test_ecdsa_digest_refuses_deterministic_signing() -> None:
    with pytest.raises(MechanismUnsupported):
        ecdsa_digest(b"x", ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


@pytest.mark.parametrize(
    ("algorithm", "oid_name"),
    [
        (hashes.SHA224(), "sha224"),
        (hashes.SHA256(), "sha256"),
        (hashes.SHA384(), "sha384"),
        (hashes.SHA512(), "sha512"),
    ],
)
def test_digest_info_is_valid_der(algorithm: hashes.HashAlgorithm, oid_name: str) -> None:
    digest = bytes(range(algorithm.digest_size))
    parsed = DigestInfo.load(digest_info(digest, algorithm))
    assert parsed["digest_algorithm"]["algorithm"].native == oid_name
    assert parsed["digest"].native == digest


def test_rsa_mechanism_choices() -> None:
    data = b"m" * 32
    assert rsa_mechanism(data, padding.PKCS1v15(), hashes.SHA256(), 2048) == (
        Mechanism.SHA256_RSA_PKCS,
        data,
        None,
    )
    mech, payload, param = rsa_mechanism(
        data, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()), 2048
    )
    assert mech is Mechanism.RSA_PKCS and payload.endswith(data) and param is None
    assert rsa_mechanism(data, padding.PKCS1v15(), utils.NoDigestInfo(), 2048)[0] is (
        Mechanism.RSA_PKCS
    )
    pss_max = padding.PSS(padding.MGF1(hashes.SHA384()), padding.PSS.MAX_LENGTH)
    assert rsa_mechanism(data, pss_max, hashes.SHA384(), 2048) == (
        Mechanism.SHA384_RSA_PKCS_PSS,
        data,
        (Mechanism.SHA384, MGF.SHA384, 256 - 48 - 2),
    )
    pss_digest = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    assert rsa_mechanism(data, pss_digest, utils.Prehashed(hashes.SHA256()), 3072) == (
        Mechanism.RSA_PKCS_PSS,
        data,
        (Mechanism.SHA256, MGF.SHA256, 32),
    )
    with pytest.raises(MechanismUnsupported):
        rsa_mechanism(
            data,
            padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None),
            hashes.SHA256(),
            2048,
        )
    with pytest.raises(MechanismUnsupported):
        rsa_mechanism(data, padding.PKCS1v15(), hashes.SHA1(), 2048)
    with pytest.raises(ValueError):
        rsa_mechanism(
            data,
            padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO),
            hashes.SHA256(),
            2048,
        )


class _InMemorySigner:
    """Stands in for the token: CKM_ECDSA over a digest, returning r || s."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.key = key

    def _hsm_sign(
        self, label: str, mechanism: Mechanism, data: bytes, param: object = None
    ) -> bytes:
        assert mechanism is Mechanism.ECDSA
        der = self.key.sign(data, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_ec_adapter_is_a_real_cryptography_key_that_refuses_export() -> None:
    inner = ec.generate_private_key(ec.SECP256R1())
    key = HsmEcPrivateKey(_InMemorySigner(inner), "k", KeyType.EC_P256, inner.public_key())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.key_size == 256 and isinstance(key.curve, ec.SECP256R1)
    signature = key.sign(b"data", ec.ECDSA(hashes.SHA256()))
    inner.public_key().verify(signature, b"data", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(KeyNotExtractable, match="'k'"):
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    with pytest.raises(KeyNotExtractable):
        key.private_numbers()
    assert copy.deepcopy(key) is key
    assert "k" in repr(key) and "ec-p256" in repr(key)
