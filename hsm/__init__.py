"""The key seam: PKCS#11 key store and cryptography key adapters for HSM-resident keys."""

from hsm.errors import (
    HSMError,
    HSMUnavailable,
    KeyExists,
    KeyNotExtractable,
    KeyNotFound,
    MechanismUnsupported,
    PinIncorrect,
    TokenNotFound,
)
from hsm.keys import HsmEcPrivateKey, HsmEd25519PrivateKey, HsmPrivateKey, HsmRsaPrivateKey
from hsm.keystore import HsmStatus, KeyStore, TokenConfig
from hsm.keytypes import KeyType
from hsm.softhsm import ensure_softhsm_token, find_pkcs11_module, read_pin_file

__all__ = [
    "HSMError",
    "HSMUnavailable",
    "HsmEcPrivateKey",
    "HsmEd25519PrivateKey",
    "HsmPrivateKey",
    "HsmRsaPrivateKey",
    "HsmStatus",
    "KeyExists",
    "KeyNotExtractable",
    "KeyNotFound",
    "KeyStore",
    "KeyType",
    "MechanismUnsupported",
    "PinIncorrect",
    "TokenConfig",
    "TokenNotFound",
    "ensure_softhsm_token",
    "find_pkcs11_module",
    "read_pin_file",
]
