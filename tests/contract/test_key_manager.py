"""The key seam's contract (``hsm.KeyManager``), run against both implementations.

``pkcs11``: ``hsm.KeyStore`` on a real SoftHSM2 token (the process-wide token of
``tests/integration/conftest_hsm.py``; marked ``integration``). ``software``:
``hsm.SoftKeyStore``. Labels carry a random suffix because the token outlives one test.
"""

from __future__ import annotations

import copy
import datetime as dt
import pickle
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, ObjectClass

from hsm import (
    KeyExists,
    KeyManager,
    KeyNotExtractable,
    KeyNotFound,
    KeyStore,
    KeyType,
    MechanismUnsupported,
    SoftKeyStore,
)

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
ABC_OF = {
    KeyType.EC_P256: ec.EllipticCurvePrivateKey,
    KeyType.EC_P384: ec.EllipticCurvePrivateKey,
    KeyType.RSA_2048: rsa.RSAPrivateKey,
    KeyType.RSA_3072: rsa.RSAPrivateKey,
    KeyType.RSA_4096: rsa.RSAPrivateKey,
    KeyType.ED25519: ed25519.Ed25519PrivateKey,
}


class Refused(Exception):
    """What the test guard raises."""


@pytest.fixture(
    params=[pytest.param("pkcs11", marks=pytest.mark.integration), "software"], scope="module"
)
def store(request: pytest.FixtureRequest) -> Iterator[KeyManager]:
    """Each implementation of the seam in turn."""
    pkcs11 = request.param == "pkcs11"
    keys: KeyManager = request.getfixturevalue("hsm_keystore") if pkcs11 else SoftKeyStore()
    yield keys
    keys.set_guard(None)


def _label(what: str) -> str:
    return f"contract-{what}-{secrets.token_hex(4)}"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _hash_for(key: Any) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _self_signed(key: Any) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name("contract"))
        .issuer_name(_name("contract"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, _hash_for(key))
    )


def _sign_and_verify(key: Any, data: bytes = b"contract") -> None:
    public = key.public_key()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        public.verify(key.sign(data, ec.ECDSA(hashes.SHA256())), data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        pkcs1 = padding.PKCS1v15()
        public.verify(key.sign(data, pkcs1, hashes.SHA256()), data, pkcs1, hashes.SHA256())
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
        public.verify(key.sign(data, pss, hashes.SHA256()), data, pss, hashes.SHA256())
    else:
        public.verify(key.sign(data), data)


@pytest.fixture(scope="module")
def keys(store: KeyManager) -> dict[KeyType, Any]:
    """One key per key type, generated once per implementation."""
    return {kt: store.generate(_label(kt.value), kt) for kt in KeyType if store.supports(kt)}


# ---- generation and signing -------------------------------------------------------------------


def test_both_implement_the_protocol(store: KeyManager) -> None:
    assert isinstance(store, KeyManager)


def test_every_key_type_is_supported(store: KeyManager) -> None:
    assert all(store.supports(kt) for kt in KeyType)


@pytest.mark.parametrize("key_type", list(KeyType), ids=str)
def test_generated_key_is_a_cryptography_key_that_signs(
    keys: dict[KeyType, Any], key_type: KeyType
) -> None:
    key = keys[key_type]
    assert isinstance(key, ABC_OF[key_type])
    if key_type is not KeyType.ED25519:
        assert key.key_size == key_type.key_size
    _sign_and_verify(key)


@pytest.mark.parametrize("key_type", list(KeyType), ids=str)
def test_certificate_builder_signs_with_the_key(
    keys: dict[KeyType, Any], key_type: KeyType
) -> None:
    key = keys[key_type]
    cert = _self_signed(key)
    cert.verify_directly_issued_by(cert)
    assert cert.public_key() == key.public_key()


def test_get_returns_the_same_key(store: KeyManager, keys: dict[KeyType, Any]) -> None:
    for key_type, key in keys.items():
        found = store.get(key.label)
        assert isinstance(found, ABC_OF[key_type])
        assert found.public_key() == key.public_key()
        _sign_and_verify(found)


# ---- labels and errors ------------------------------------------------------------------------


def test_duplicate_label_raises_key_exists(store: KeyManager) -> None:
    label = _label("dup")
    store.generate(label, KeyType.EC_P256)
    with pytest.raises(KeyExists, match=label):
        store.generate(label, KeyType.RSA_2048)
    assert store.labels().count(label) == 1


def test_unknown_label_raises_key_not_found(store: KeyManager) -> None:
    label = _label("absent")
    with pytest.raises(KeyNotFound, match=label):
        store.get(label)
    assert not store.exists(label)


def test_labels_and_exists(store: KeyManager, keys: dict[KeyType, Any]) -> None:
    mine = {key.label for key in keys.values()}
    listed = store.labels()
    assert listed == sorted(listed)
    assert mine <= set(listed)
    assert all(store.exists(label) for label in mine)


def test_unsupported_key_type_raises_mechanism_unsupported() -> None:
    limited = SoftKeyStore(supported=frozenset({KeyType.EC_P256}))
    assert not limited.supports(KeyType.RSA_4096)
    with pytest.raises(MechanismUnsupported):
        limited.generate(_label("rsa"), KeyType.RSA_4096)


# ---- guard, status, close ---------------------------------------------------------------------


def _refuse() -> None:
    raise Refused("the clock is off")


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.RSA_2048, KeyType.ED25519], ids=str)
def test_guard_refuses_signing_when_it_raises(
    store: KeyManager, keys: dict[KeyType, Any], key_type: KeyType
) -> None:
    key = keys[key_type]  # fetched before the guard was set: it still applies
    calls: list[int] = []
    try:
        store.set_guard(lambda: calls.append(1))
        _sign_and_verify(key)
        assert calls
        store.set_guard(_refuse)
        with pytest.raises(Refused):
            _sign_and_verify(key)
        with pytest.raises(Refused):
            _self_signed(store.get(key.label))
    finally:
        store.set_guard(None)
    _sign_and_verify(key)


def test_status_is_ok(store: KeyManager) -> None:
    status = store.status()
    assert status.ok and status.to_dict()["status"] == "ok"


def test_close_then_reuse(store: KeyManager, keys: dict[KeyType, Any]) -> None:
    key = keys[KeyType.EC_P256]
    store.close()
    _sign_and_verify(key)
    store.close()
    again = store.get(key.label)
    _sign_and_verify(again)
    fresh = store.generate(_label("after-close"), KeyType.EC_P256)
    _sign_and_verify(fresh)
    assert store.status().ok


# ---- the private half stays inside --------------------------------------------------------------


@pytest.mark.parametrize("key_type", list(KeyType), ids=str)
@pytest.mark.parametrize("fetched", [False, True], ids=["generated", "got"])
def test_private_half_cannot_be_exported(
    store: KeyManager, keys: dict[KeyType, Any], key_type: KeyType, fetched: bool
) -> None:
    key = store.get(keys[key_type].label) if fetched else keys[key_type]
    with pytest.raises(KeyNotExtractable, match=key.label):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    with pytest.raises(KeyNotExtractable):
        if isinstance(key, ed25519.Ed25519PrivateKey):
            key.private_bytes_raw()
        else:
            key.private_numbers()
    assert copy.copy(key) is key and copy.deepcopy(key) is key
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(KeyNotExtractable, match=key.label):
            pickle.dumps(key, protocol)


def test_keys_sign_only(keys: dict[KeyType, Any]) -> None:
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(MechanismUnsupported):
        keys[KeyType.EC_P256].exchange(ec.ECDH(), peer)
    with pytest.raises(MechanismUnsupported):
        keys[KeyType.RSA_2048].decrypt(b"x" * 256, padding.PKCS1v15())


@pytest.mark.parametrize(
    "store", [pytest.param("pkcs11", marks=pytest.mark.integration)], indirect=True
)
@pytest.mark.parametrize("key_type", list(KeyType), ids=str)
def test_pkcs11_private_keys_are_sensitive_and_not_extractable(
    store: KeyManager, keys: dict[KeyType, Any], key_type: KeyType
) -> None:
    assert isinstance(store, KeyStore)
    label = keys[key_type].label

    def flags(session: Any) -> dict[Attribute, Any]:
        (priv,) = session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label}
        )
        wanted = (Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.NEVER_EXTRACTABLE)
        return {a: priv[a] for a in wanted}

    assert store.call_with_session(flags) == {
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.NEVER_EXTRACTABLE: True,
    }


def test_software_store_marked_unavailable_behaves_like_a_lost_token() -> None:
    from hsm import HSMUnavailable

    soft = SoftKeyStore(name="lost")
    key = soft.generate(_label("lost"), KeyType.EC_P256)
    soft.available = False
    assert not soft.status().ok
    with pytest.raises(HSMUnavailable):
        soft.get(key.label)
    with pytest.raises(HSMUnavailable):
        _sign_and_verify(key)
    soft.available = True
    _sign_and_verify(soft.get(key.label))
