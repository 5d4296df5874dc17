"""The agent's private key: software (P-256 by default) or, optionally, a PKCS#11 token key.

The PKCS#11 path uses agentca's ``hsm`` adapter *if it is installed*; the SDK itself depends
on ``cryptography`` only. Every key is a ``cryptography`` private-key object either way.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from agent.errors import AgentError

AgentKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

KEY_TYPES = ("ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072")


def generate_key(key_type: str = "ec-p256") -> AgentKey:
    """A new software key (``ec-p256`` unless told otherwise)."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type.startswith("rsa-") and key_type in KEY_TYPES:
        return rsa.generate_private_key(65537, int(key_type[4:]))
    raise AgentError(f"unsupported key type {key_type!r} (one of {', '.join(KEY_TYPES)})")


def save_key(key: AgentKey, path: str | os.PathLike[str]) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, mode 0600 (created atomically)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, target)


def load_key(path: str | os.PathLike[str], password: bytes | None = None) -> AgentKey:
    """Load a PEM private key (P-256, P-384, Ed25519 or RSA)."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password)
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)) and not (
        isinstance(key, rsa.RSAPrivateKey)
    ):
        raise AgentError(f"unsupported key type {type(key).__name__}")
    return key


def load_or_create_key(path: str | os.PathLike[str], key_type: str = "ec-p256") -> AgentKey:
    """The key stored at ``path``, generated and saved on first use."""
    if Path(path).exists():
        return load_key(path)
    key = generate_key(key_type)
    save_key(key, path)
    return key


def pkcs11_key(
    label: str,
    module_path: str,
    token_label: str,
    pin_file: str,
    generate_type: str | None = "ec-p256",
    softhsm2_conf: str | None = None,
) -> AgentKey:
    """A key held in a PKCS#11 token, through agentca's optional ``hsm`` adapter.

    ``generate_type`` creates the key (non-extractable) if ``label`` does not exist yet.
    Raises :class:`AgentError` if the ``hsm`` package is not installed.
    """
    try:
        hsm: Any = importlib.import_module("hsm")
    except ImportError:
        raise AgentError("PKCS#11 keys need agentca's 'hsm' package installed") from None
    config = hsm.TokenConfig(
        module_path=module_path,
        token_label=token_label,
        user_pin=hsm.read_pin_file(pin_file),
        softhsm2_conf=softhsm2_conf,
    )
    store = hsm.KeyStore(config)
    if not store.exists(label):
        if generate_type is None:
            raise AgentError(f"no key {label!r} in token {token_label!r}")
        return store.generate(label, hsm.KeyType(generate_type))  # type: ignore[no-any-return]
    return store.get(label)  # type: ignore[no-any-return]
