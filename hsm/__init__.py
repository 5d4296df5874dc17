"""The key seam (``KeyManager``): the PKCS#11 key store, a software store for tests and dev
mode, and cryptography key adapters for HSM-resident keys."""

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
from hsm.keymanager import KeyManager, SigningKey
from hsm.keys import HsmEcPrivateKey, HsmEd25519PrivateKey, HsmPrivateKey, HsmRsaPrivateKey
from hsm.keystore import KeyStore, TokenConfig
from hsm.keytypes import KeyType
from hsm.softhsm import ensure_softhsm_token, find_pkcs11_module, read_pin_file
from hsm.softkeys import SoftKeyStore
from hsm.status import HsmStatus

__all__ = [
    "HSMError",
    "HSMUnavailable",
    "HsmEcPrivateKey",
    "HsmEd25519PrivateKey",
    "HsmPrivateKey",
    "HsmRsaPrivateKey",
    "HsmStatus",
    "KeyExists",
    "KeyManager",
    "KeyNotExtractable",
    "KeyNotFound",
    "KeyStore",
    "KeyType",
    "MechanismUnsupported",
    "PinIncorrect",
    "SigningKey",
    "SoftKeyStore",
    "TokenConfig",
    "TokenNotFound",
    "ensure_softhsm_token",
    "find_pkcs11_module",
    "read_pin_file",
]
