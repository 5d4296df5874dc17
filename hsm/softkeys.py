"""A software key store behind the same seam as the PKCS#11 ``KeyStore``.

For unit tests and a throwaway development mode only: its keys are ordinary cryptography
private keys held in this process's memory and vanish with it. It honours the same errors,
guard and labels as the token, so code tested against it behaves the same on an HSM.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from hsm.errors import HSMUnavailable, KeyExists, KeyNotFound, MechanismUnsupported
from hsm.keymanager import SigningKey
from hsm.keytypes import KeyType
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
        self._keys: dict[str, SigningKey] = {}
        self._guard: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def _check(self) -> None:
        if not self.available:
            raise HSMUnavailable(f"software key store {self.name!r} is marked unavailable")

    def _guarded(self, key: SigningKey) -> SigningKey:
        guard = self._guard
        if guard is None:
            return key
        return _guard_key(key, guard)

    def generate(self, label: str, key_type: KeyType) -> SigningKey:
        """Generate a key labelled ``label``; ``KeyExists`` if taken."""
        self._check()
        if key_type not in self._supported:
            raise MechanismUnsupported(f"store {self.name!r} cannot generate {key_type} keys")
        with self._lock:
            if label in self._keys:
                raise KeyExists(f"a key labelled {label!r} already exists in store {self.name!r}")
            key = _generate(key_type)
            self._keys[label] = key
        return self._guarded(key)

    def get(self, label: str) -> SigningKey:
        """The key labelled ``label``; ``KeyNotFound`` if there is none."""
        self._check()
        with self._lock:
            key = self._keys.get(label)
        if key is None:
            raise KeyNotFound(f"no key labelled {label!r} in store {self.name!r}")
        return self._guarded(key)

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
        """Call ``guard()`` before every signature (keys fetched afterwards)."""
        self._guard = guard

    def close(self) -> None:
        """Nothing to release; the keys stay for this process's lifetime."""


def _guard_key(key: SigningKey, guard: Callable[[], None]) -> SigningKey:
    """A key whose ``sign`` calls ``guard`` first: a subclass instance of the key's own
    cryptography ABC, so builders accept it."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return _GuardedEd25519(key, guard)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _GuardedEc(key, guard)
    return _GuardedRsa(key, guard)


class _GuardedEc(ec.EllipticCurvePrivateKey):
    def __init__(self, key: ec.EllipticCurvePrivateKey, guard: Callable[[], None]) -> None:
        self._key, self._guard = key, guard

    def sign(self, data: Any, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        self._guard()
        return self._key.sign(data, signature_algorithm)

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        return self._key.exchange(algorithm, peer_public_key)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._key.curve

    @property
    def key_size(self) -> int:
        return self._key.key_size

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        return self._key.private_numbers()

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> bytes:
        return self._key.private_bytes(encoding, format, encryption_algorithm)

    def __copy__(self) -> _GuardedEc:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _GuardedEc:
        return self


class _GuardedRsa(rsa.RSAPrivateKey):
    def __init__(self, key: rsa.RSAPrivateKey, guard: Callable[[], None]) -> None:
        self._key, self._guard = key, guard

    def sign(self, data: Any, padding: Any, algorithm: Any) -> bytes:
        self._guard()
        return self._key.sign(data, padding, algorithm)

    def decrypt(self, ciphertext: bytes, padding: Any) -> bytes:
        return self._key.decrypt(ciphertext, padding)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    @property
    def key_size(self) -> int:
        return self._key.key_size

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        return self._key.private_numbers()

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> bytes:
        return self._key.private_bytes(encoding, format, encryption_algorithm)

    def __copy__(self) -> _GuardedRsa:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _GuardedRsa:
        return self


class _GuardedEd25519(ed25519.Ed25519PrivateKey):
    def __init__(self, key: ed25519.Ed25519PrivateKey, guard: Callable[[], None]) -> None:
        self._key, self._guard = key, guard

    def sign(self, data: Any) -> bytes:
        self._guard()
        return self._key.sign(data)

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._key.public_key()

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> bytes:
        return self._key.private_bytes(encoding, format, encryption_algorithm)

    def private_bytes_raw(self) -> bytes:
        return self._key.private_bytes_raw()

    def __copy__(self) -> _GuardedEd25519:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _GuardedEd25519:
        return self
