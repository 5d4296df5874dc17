"""cryptography private-key classes whose private half stays in a PKCS#11 token.

Each class is a real subclass of cryptography's abstract key class, so every builder
(certificates, CRLs, OCSP responses) signs through the HSM the same way it would sign with an
in-memory key. ``sign()`` asks the key store to run the mechanism inside the token.
"""

from __future__ import annotations

from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    NoDigestInfo,
    Prehashed,
    encode_dss_signature,
)
from pkcs11 import MGF, Mechanism

from hsm.errors import HSMError, MechanismUnsupported
from hsm.keytypes import KeyType
from hsm.sealed import SealedKey

__all__ = [
    "HsmEcPrivateKey",
    "HsmEd25519PrivateKey",
    "HsmPrivateKey",
    "HsmRsaPrivateKey",
    "digest_info",
    "ecdsa_digest",
    "raw_to_der_signature",
    "rsa_mechanism",
]


class TokenSigner(Protocol):
    """What a key needs from its key store: run one signing mechanism on the token."""

    def _hsm_sign(
        self, label: str, mechanism: Mechanism, data: bytes, param: Any = None
    ) -> bytes: ...


# DER prefixes of PKCS#1 DigestInfo (RFC 8017, section 9.2, note 1), for pre-hashed PKCS#1 v1.5.
_DIGEST_INFO_PREFIX: dict[str, bytes] = {
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_PKCS1_MECHANISM: dict[str, Mechanism] = {
    "sha224": Mechanism.SHA224_RSA_PKCS,
    "sha256": Mechanism.SHA256_RSA_PKCS,
    "sha384": Mechanism.SHA384_RSA_PKCS,
    "sha512": Mechanism.SHA512_RSA_PKCS,
}
_PSS_MECHANISM: dict[str, Mechanism] = {
    "sha224": Mechanism.SHA224_RSA_PKCS_PSS,
    "sha256": Mechanism.SHA256_RSA_PKCS_PSS,
    "sha384": Mechanism.SHA384_RSA_PKCS_PSS,
    "sha512": Mechanism.SHA512_RSA_PKCS_PSS,
}
_HASH_MECHANISM: dict[str, Mechanism] = {
    "sha224": Mechanism.SHA224,
    "sha256": Mechanism.SHA256,
    "sha384": Mechanism.SHA384,
    "sha512": Mechanism.SHA512,
}
_MGF: dict[str, MGF] = {
    "sha224": MGF.SHA224,
    "sha256": MGF.SHA256,
    "sha384": MGF.SHA384,
    "sha512": MGF.SHA512,
}


def raw_to_der_signature(raw: bytes) -> bytes:
    """DER-encode a PKCS#11 ECDSA signature (``r || s``, equal halves) as ``Ecdsa-Sig-Value``."""
    if not raw or len(raw) % 2:
        raise HSMError(f"the token returned a malformed ECDSA signature ({len(raw)} bytes)")
    half = len(raw) // 2
    return encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )


def _hash_name(algorithm: hashes.HashAlgorithm) -> str:
    if algorithm.name not in _HASH_MECHANISM:
        raise MechanismUnsupported(f"hash algorithm {algorithm.name} is not supported for HSM keys")
    return algorithm.name


def ecdsa_digest(data: bytes, algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
    """Return the digest CKM_ECDSA signs: hash ``data``, or check it if ``Prehashed``."""
    if not isinstance(algorithm, ec.ECDSA):
        raise MechanismUnsupported("HSM EC keys sign with ECDSA only")
    if getattr(algorithm, "deterministic_signing", False):
        raise MechanismUnsupported("deterministic ECDSA (RFC 6979) is not available in the HSM")
    chosen = algorithm.algorithm
    if isinstance(chosen, Prehashed):
        if len(data) != chosen.digest_size:
            raise ValueError("the pre-hashed data has the wrong length for its hash algorithm")
        return bytes(data)
    hasher = hashes.Hash(chosen)
    hasher.update(data)
    return hasher.finalize()


def digest_info(digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
    """Wrap a digest in its PKCS#1 ``DigestInfo``, as CKM_RSA_PKCS expects for pre-hashed data."""
    name = algorithm.name
    if name not in _DIGEST_INFO_PREFIX:
        raise MechanismUnsupported(f"hash algorithm {name} is not supported for HSM keys")
    if len(digest) != algorithm.digest_size:
        raise ValueError("the pre-hashed data has the wrong length for its hash algorithm")
    return _DIGEST_INFO_PREFIX[name] + digest


def _pss_salt_length(pad: padding.PSS, hash_size: int, key_size: int) -> int:
    salt: Any = pad._salt_length
    if isinstance(salt, int):
        return salt
    if salt is padding.PSS.DIGEST_LENGTH:
        return hash_size
    if salt is padding.PSS.MAX_LENGTH:
        return (key_size - 1 + 7) // 8 - hash_size - 2
    raise ValueError("PSS salt length AUTO is only valid for verification")


def rsa_mechanism(
    data: bytes,
    pad: padding.AsymmetricPadding,
    algorithm: Prehashed | hashes.HashAlgorithm | NoDigestInfo,
    key_size: int,
) -> tuple[Mechanism, bytes, Any]:
    """Choose the PKCS#11 mechanism, input and parameter for an RSA ``sign()`` call."""
    if isinstance(pad, padding.PKCS1v15):
        if isinstance(algorithm, NoDigestInfo):
            return Mechanism.RSA_PKCS, bytes(data), None
        if isinstance(algorithm, Prehashed):
            return Mechanism.RSA_PKCS, digest_info(bytes(data), algorithm._algorithm), None
        return _PKCS1_MECHANISM[_hash_name(algorithm)], bytes(data), None
    if isinstance(pad, padding.PSS):
        if isinstance(algorithm, NoDigestInfo):
            raise ValueError("NoDigestInfo is only valid with PKCS1v15 padding")
        mgf = pad._mgf
        if not isinstance(mgf, padding.MGF1):
            raise MechanismUnsupported("PSS needs MGF1")
        mgf_name = _hash_name(mgf._algorithm)
        if isinstance(algorithm, Prehashed):
            inner = algorithm._algorithm
            name = _hash_name(inner)
            if len(data) != inner.digest_size:
                raise ValueError("the pre-hashed data has the wrong length for its hash algorithm")
            mechanism = Mechanism.RSA_PKCS_PSS
        else:
            inner = algorithm
            name = _hash_name(algorithm)
            mechanism = _PSS_MECHANISM[name]
        if mgf_name != name:
            # SoftHSM2 rejects it (CKR_ARGUMENTS_BAD) and no profile of ours needs it.
            raise MechanismUnsupported("PSS with an MGF1 hash other than the message hash")
        salt = _pss_salt_length(pad, inner.digest_size, key_size)
        return mechanism, bytes(data), (_HASH_MECHANISM[name], _MGF[mgf_name], salt)
    raise MechanismUnsupported(f"RSA padding {pad.name} is not supported for signing")


class _HsmKeyMixin(SealedKey):
    """State and refusals shared by the three HSM key classes."""

    _store: TokenSigner
    _held_where = "lives in the HSM"


class HsmEcPrivateKey(_HsmKeyMixin, ec.EllipticCurvePrivateKey):
    """An ECDSA key (P-256, P-384) in the token; signs with CKM_ECDSA over a Python-side hash."""

    def __init__(
        self,
        store: TokenSigner,
        label: str,
        key_type: KeyType,
        public_key: ec.EllipticCurvePublicKey,
    ) -> None:
        self._store = store
        self.label = label
        self.key_type = key_type
        self._public_key = public_key

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public_key.curve

    @property
    def key_size(self) -> int:
        return self._public_key.curve.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    def sign(self, data: Any, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        digest = ecdsa_digest(bytes(data), signature_algorithm)
        raw = self._store._hsm_sign(self.label, Mechanism.ECDSA, digest)
        return raw_to_der_signature(raw)

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise MechanismUnsupported(f"the HSM key {self.label!r} is for signing only, not ECDH")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        self._refuse_export()


class HsmRsaPrivateKey(_HsmKeyMixin, rsa.RSAPrivateKey):
    """An RSA key in the token; signs PKCS#1 v1.5 or PSS with SHA-2 inside the token."""

    def __init__(
        self,
        store: TokenSigner,
        label: str,
        key_type: KeyType,
        public_key: rsa.RSAPublicKey,
    ) -> None:
        self._store = store
        self.label = label
        self.key_type = key_type
        self._public_key = public_key

    @property
    def key_size(self) -> int:
        return self._public_key.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public_key

    def sign(
        self,
        data: Any,
        padding: padding.AsymmetricPadding,
        algorithm: Prehashed | hashes.HashAlgorithm | NoDigestInfo,
    ) -> bytes:
        mechanism, message, param = rsa_mechanism(bytes(data), padding, algorithm, self.key_size)
        return self._store._hsm_sign(self.label, mechanism, message, param)

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        raise MechanismUnsupported(
            f"the HSM key {self.label!r} is for signing only, not decryption"
        )

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        self._refuse_export()


class HsmEd25519PrivateKey(_HsmKeyMixin, ed25519.Ed25519PrivateKey):
    """An Ed25519 key in the token; signs with CKM_EDDSA (pure Ed25519)."""

    def __init__(
        self,
        store: TokenSigner,
        label: str,
        key_type: KeyType,
        public_key: ed25519.Ed25519PublicKey,
    ) -> None:
        self._store = store
        self.label = label
        self.key_type = key_type
        self._public_key = public_key

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._public_key

    def sign(self, data: Any) -> bytes:
        return self._store._hsm_sign(self.label, Mechanism.EDDSA, bytes(data))

    def private_bytes_raw(self) -> bytes:
        self._refuse_export()


HsmPrivateKey = HsmEcPrivateKey | HsmRsaPrivateKey | HsmEd25519PrivateKey
"""Any private key the key store hands out."""
