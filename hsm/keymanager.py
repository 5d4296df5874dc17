"""The one key seam: what the CA, the CRL publisher, the ledger and the OCSP tier need from a
key store. ``hsm.KeyStore`` (PKCS#11) and ``hsm.SoftKeyStore`` (software, tests and dev mode)
implement it; ``tests/contract/test_key_manager.py`` runs one suite against both.

Keys come back as cryptography private-key objects, so every certificate, CRL and OCSP
builder signs with them unchanged; a PKCS#11 key never leaves its token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeAlias, runtime_checkable

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from hsm.keytypes import KeyType
from hsm.status import HsmStatus

__all__ = ["KeyManager", "SigningKey"]

SigningKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@runtime_checkable
class KeyManager(Protocol):
    """Generate, find and use signing keys by label.

    ``generate`` raises ``hsm.KeyExists`` for a taken label and ``hsm.MechanismUnsupported``
    for a key type the store cannot make; ``get`` raises ``hsm.KeyNotFound``; a store that
    cannot be reached raises ``hsm.HSMUnavailable``. ``close`` releases sessions; a closed
    store reopens on its next use.
    """

    def generate(self, label: str, key_type: KeyType) -> SigningKey: ...

    def get(self, label: str) -> SigningKey: ...

    def exists(self, label: str) -> bool: ...

    def labels(self) -> list[str]: ...

    def supports(self, key_type: KeyType) -> bool: ...

    def status(self) -> HsmStatus: ...

    def set_guard(self, guard: Callable[[], None] | None) -> None: ...

    def close(self) -> None: ...
