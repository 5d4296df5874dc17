"""The key types the key store can generate inside a token."""

from __future__ import annotations

import enum


class KeyType(enum.Enum):
    """A private-key algorithm and size, named as operators type it (``ec-p256``)."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    ED25519 = "ed25519"

    @classmethod
    def parse(cls, text: str) -> KeyType:
        """Return the key type named by ``text`` (case and surrounding blanks ignored)."""
        wanted = text.strip().lower()
        for member in cls:
            if member.value == wanted:
                return member
        choices = ", ".join(member.value for member in cls)
        raise ValueError(f"unknown key type {text!r}; choose one of: {choices}")

    @property
    def is_ec(self) -> bool:
        """True for the NIST elliptic curves (ECDSA)."""
        return self in (KeyType.EC_P256, KeyType.EC_P384)

    @property
    def is_rsa(self) -> bool:
        """True for RSA key types."""
        return self.value.startswith("rsa-")

    @property
    def key_size(self) -> int:
        """Size in bits: the curve's order size, the RSA modulus, or 256 for Ed25519."""
        return {
            KeyType.EC_P256: 256,
            KeyType.EC_P384: 384,
            KeyType.RSA_2048: 2048,
            KeyType.RSA_3072: 3072,
            KeyType.RSA_4096: 4096,
            KeyType.ED25519: 256,
        }[self]

    def __str__(self) -> str:
        return self.value
