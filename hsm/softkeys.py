"""A software key store behind the same seam as the PKCS#11 ``KeyStore``.

For unit tests and a throwaway development mode only: its keys are ordinary cryptography
private keys held in this process's memory and vanish with it. It behaves like the token
wherever code could notice: the same errors, labels and guard (checked at every signature,
for keys fetched before the guard was set too), signing-only keys that refuse to export their
private half, and ``available = False`` to simulate a lost token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from hsm.errors import (
    HSMUnavailable,
    KeyExists,
    KeyNotFound,
    MechanismUnsupported,
)
from hsm.keymanager import SigningKey
from hsm.keytypes import KeyType
from hsm.sealed import SealedKey
from hsm.status import HsmStatus

__all__ = ["SoftKeyStore"]


def _generate(key_type: KeyType) -> SigningKey:
    if key_type is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=key_type.key_size)


class SoftKeyStore:
    """In-memory keys by label; ``available = False`` simulates a lost token."""

    def __init__(
        self,
        supported: frozenset[KeyType] | None = None,
        name: str = "soft",
    ) -> None:
        self.name = name
        self.available = True
        self._supported = frozenset(KeyType) if supported is None else supported
        self._keys: dict[str, SoftPrivateKey] = {}
        self._guard: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SoftKeyStore name={self.name!r} keys={len(self._keys)}>"

    def _check(self) -> None:
        if not self.available:
            raise HSMUnavailable(f"software key store {self.name!r} is marked unavailable")

    def _before_sign(self) -> None:
        """What the token does before each signature: the guard, then reachability."""
        guard = self._guard
        if guard is not None:
            guard()
        self._check()

    def generate(self, label: str, key_type: KeyType) -> SigningKey:
        """Generate a key labelled ``label``; ``KeyExists`` if taken."""
        self._check()
        if key_type not in self._supported:
            raise MechanismUnsupported(f"store {self.name!r} cannot generate {key_type} keys")
        with self._lock:
            if label in self._keys:
                raise KeyExists(f"a key labelled {label!r} already exists in store {self.name!r}")
            key = _wrap(_generate(key_type), label, key_type, self._before_sign)
            self._keys[label] = key
        return key

    def get(self, label: str) -> SigningKey:
        """The key labelled ``label``; ``KeyNotFound`` if there is none."""
        self._check()
        with self._lock:
            key = self._keys.get(label)
        if key is None:
            raise KeyNotFound(f"no private key labelled {label!r} in store {self.name!r}")
        return key

    def exists(self, label: str) -> bool:
        """True if a key labelled ``label`` exists."""
        self._check()
        with self._lock:
            return label in self._keys

    def labels(self) -> list[str]:
        """Labels of the keys held, sorted."""
        self._check()
        with self._lock:
            return sorted(self._keys)

    def supports(self, key_type: KeyType) -> bool:
        """True if this store can generate ``key_type``."""
        self._check()
        return key_type in self._supported

    def status(self) -> HsmStatus:
        """Always reachable unless marked unavailable."""
        if not self.available:
            return HsmStatus(False, f"software key store {self.name!r} is unavailable", 1.0)
        return HsmStatus(True, f"software key store {self.name!r} answers")

    def set_guard(self, guard: Callable[[], None] | None) -> None:
        """Call ``guard()`` before every signature; it refuses by raising."""
        self._guard = guard

    def close(self) -> None:
        """Nothing to release; the keys stay for this process's lifetime."""


# ---- keys ---------------------------------------------------------------------------------------

BeforeSign = Callable[[], None]


def _wrap(
    key: SigningKey, label: str, key_type: KeyType, before_sign: BeforeSign
) -> SoftPrivateKey:
    """A key whose ``sign`` calls ``before_sign`` first: a subclass instance of the key's own
    cryptography ABC, so builders accept it."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return SoftEd25519PrivateKey(key, label, key_type, before_sign)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return SoftEcPrivateKey(key, label, key_type, before_sign)
    return SoftRsaPrivateKey(key, label, key_type, before_sign)


class _SoftKeyMixin(SealedKey):
    """Label, key type and the refusals an HSM key makes (no export, signing only)."""

    _held_where = "is held by the key store"


class SoftEcPrivateKey(_SoftKeyMixin, ec.EllipticCurvePrivateKey):
    """An ECDSA key of the software store."""

    def __init__(
        self, key: ec.EllipticCurvePrivateKey, label: str, key_type: KeyType, before: BeforeSign
    ) -> None:
        self._key, self.label, self.key_type, self._before = key, label, key_type, before

    def sign(self, data: Any, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        self._before()
        return self._key.sign(data, signature_algorithm)

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise MechanismUnsupported(f"the key {self.label!r} is for signing only, not ECDH")

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._key.curve

    @property
    def key_size(self) -> int:
        return self._key.key_size

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        self._refuse_export()


class SoftRsaPrivateKey(_SoftKeyMixin, rsa.RSAPrivateKey):
    """An RSA key of the software store."""

    def __init__(
        self, key: rsa.RSAPrivateKey, label: str, key_type: KeyType, before: BeforeSign
    ) -> None:
        self._key, self.label, self.key_type, self._before = key, label, key_type, before

    def sign(self, data: Any, padding: Any, algorithm: Any) -> bytes:
        self._before()
        return self._key.sign(data, padding, algorithm)

    def decrypt(self, ciphertext: bytes, padding: Any) -> bytes:
        raise MechanismUnsupported(f"the key {self.label!r} is for signing only, not decryption")

    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    @property
    def key_size(self) -> int:
        return self._key.key_size

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        self._refuse_export()


class SoftEd25519PrivateKey(_SoftKeyMixin, ed25519.Ed25519PrivateKey):
    """An Ed25519 key of the software store."""

    def __init__(
        self, key: ed25519.Ed25519PrivateKey, label: str, key_type: KeyType, before: BeforeSign
    ) -> None:
        self._key, self.label, self.key_type, self._before = key, label, key_type, before

    def sign(self, data: Any) -> bytes:
        self._before()
        return self._key.sign(data)

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._key.public_key()

    def private_bytes_raw(self) -> bytes:
        self._refuse_export()


SoftPrivateKey = SoftEcPrivateKey | SoftRsaPrivateKey | SoftEd25519PrivateKey
"""Any private key the software store hands out."""

if TYPE_CHECKING:
    from hsm.keymanager import KeyManager

    def _conforms(store: SoftKeyStore) -> KeyManager:
        return store  # mypy checks that the software store implements the seam
