"""The key seam against real SoftHSM2: generation, signing, builders, errors, fork, threads."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import secrets
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, ObjectClass

import hsm.softhsm
from hsm import (
    HsmEcPrivateKey,
    HsmEd25519PrivateKey,
    HsmRsaPrivateKey,
    KeyExists,
    KeyNotExtractable,
    KeyNotFound,
    KeyStore,
    KeyType,
    MechanismUnsupported,
    TokenConfig,
    TokenNotFound,
    ensure_softhsm_token,
    read_pin_file,
)
from hsm.errors import HSMError, PinFileError
from tests.integration.conftest_hsm import run_python

pytestmark = pytest.mark.integration

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def keys(hsm_keystore: KeyStore) -> dict[KeyType, Any]:
    """One freshly generated key per supported key type."""
    out: dict[KeyType, Any] = {}
    for key_type in KeyType:
        if hsm_keystore.supports(key_type):
            out[key_type] = hsm_keystore.generate(f"seam-{key_type.value}", key_type)
    return out


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _hash_for(key: Any) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _self_signed(key: Any, cn: str = "hsm test") -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, _hash_for(key))
    )


# ---- generation, the builder seam ----------------------------------------------------------------


def test_every_key_type_is_supported_by_softhsm(hsm_keystore: KeyStore) -> None:
    assert all(hsm_keystore.supports(kt) for kt in KeyType)


@pytest.mark.parametrize("key_type", list(KeyType), ids=str)
def test_every_key_type_signs_a_certificate_that_verifies(
    keys: dict[KeyType, Any], key_type: KeyType
) -> None:
    key = keys[key_type]
    expected = {
        "ec": HsmEcPrivateKey,
        "rsa": HsmRsaPrivateKey,
        "ed25519": HsmEd25519PrivateKey,
    }[key_type.value.split("-")[0]]
    assert isinstance(key, expected)
    assert key.key_type is key_type and key.label == f"seam-{key_type.value}"
    cert = _self_signed(key)
    cert.verify_directly_issued_by(cert)
    assert cert.public_key() == key.public_key()


def test_rsa_pss_certificate_verifies(keys: dict[KeyType, Any]) -> None:
    key = keys[KeyType.RSA_2048]
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("pss"))
        .issuer_name(_name("pss"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(key, hashes.SHA256(), rsa_padding=pss)
    )
    cert.verify_directly_issued_by(cert)


@pytest.mark.parametrize("key_type", list(KeyType), ids=str)
def test_crl_builder_signs_with_hsm_key(keys: dict[KeyType, Any], key_type: KeyType) -> None:
    key = keys[key_type]
    revoked = x509.RevokedCertificateBuilder().serial_number(42).revocation_date(NOW).build()
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(_name("crl issuer"))
        .last_update(NOW)
        .next_update(NOW + dt.timedelta(days=1))
        .add_revoked_certificate(revoked)
        .sign(key, _hash_for(key))
    )
    assert crl.is_signature_valid(key.public_key())
    assert crl.get_revoked_certificate_by_serial_number(42) is not None


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.RSA_2048, KeyType.ED25519], ids=str)
def test_ocsp_response_builder_signs_with_hsm_key(
    keys: dict[KeyType, Any], key_type: KeyType
) -> None:
    key = keys[key_type]
    issuer = _self_signed(key, "ocsp issuer")
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("leaf"))
        .issuer_name(issuer.subject)
        .public_key(leaf_key.public_key())
        .serial_number(7)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(key, _hash_for(key))
    )
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf,
            issuer=issuer,
            algorithm=hashes.SHA256(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=NOW,
            next_update=NOW + dt.timedelta(hours=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
        .sign(key, _hash_for(key))
    )
    parsed = ocsp.load_der_ocsp_response(response.public_bytes(serialization.Encoding.DER))
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(
            parsed.signature, parsed.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256()
        )
    elif isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(parsed.signature, parsed.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    else:
        public.verify(parsed.signature, parsed.tbs_response_bytes)


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384], ids=str)
@pytest.mark.parametrize("hash_cls", [hashes.SHA256, hashes.SHA384, hashes.SHA512])
def test_ecdsa_hashes_and_prehashed(
    keys: dict[KeyType, Any], key_type: KeyType, hash_cls: type[hashes.HashAlgorithm]
) -> None:
    key, data = keys[key_type], b"message to sign"
    algorithm = ec.ECDSA(hash_cls())
    key.public_key().verify(key.sign(data, algorithm), data, algorithm)
    digest = hashes.Hash(hash_cls())
    digest.update(data)
    prehashed = key.sign(digest.finalize(), ec.ECDSA(utils.Prehashed(hash_cls())))
    key.public_key().verify(prehashed, data, algorithm)


@pytest.mark.parametrize("hash_cls", [hashes.SHA256, hashes.SHA384, hashes.SHA512])
def test_rsa_pkcs1_and_pss_with_hashes_and_prehashed(
    keys: dict[KeyType, Any], hash_cls: type[hashes.HashAlgorithm]
) -> None:
    key, data = keys[KeyType.RSA_2048], b"message to sign"
    public = key.public_key()
    digest = hashes.Hash(hash_cls())
    digest.update(data)
    prehashed = utils.Prehashed(hash_cls())
    for pad in (
        padding.PKCS1v15(),
        padding.PSS(padding.MGF1(hash_cls()), padding.PSS.MAX_LENGTH),
        padding.PSS(padding.MGF1(hash_cls()), padding.PSS.DIGEST_LENGTH),
        padding.PSS(padding.MGF1(hash_cls()), 0),
    ):
        public.verify(key.sign(data, pad, hash_cls()), data, pad, hash_cls())
        public.verify(key.sign(digest.copy().finalize(), pad, prehashed), data, pad, hash_cls())
    if hash_cls is not hashes.SHA256:
        mixed = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
        with pytest.raises(MechanismUnsupported, match="MGF1"):
            key.sign(data, mixed, hash_cls())


def test_ed25519_signature_matches_rfc8032_verifier(keys: dict[KeyType, Any]) -> None:
    key = keys[KeyType.ED25519]
    key.public_key().verify(key.sign(b"abc"), b"abc")
    assert len(key.public_key().public_bytes_raw()) == 32


# ---- non-extractability --------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", list(KeyType), ids=str)
def test_private_key_is_sensitive_and_not_extractable(
    hsm_keystore: KeyStore,
    keys: dict[KeyType, Any],
    key_type: KeyType,
) -> None:
    key = keys[key_type]
    secret_attr = Attribute.PRIVATE_EXPONENT if key_type.is_rsa else Attribute.VALUE

    def inspect(session: Any) -> tuple[Any, Any]:
        (priv,) = session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: key.label}
        )
        (pub,) = session.get_objects(
            {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: key.label}
        )
        flags = {
            a: priv[a]
            for a in (
                Attribute.TOKEN,
                Attribute.PRIVATE,
                Attribute.SENSITIVE,
                Attribute.EXTRACTABLE,
                Attribute.SIGN,
                Attribute.NEVER_EXTRACTABLE,
                Attribute.LOCAL,
            )
        }
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            priv[secret_attr]  # the token itself refuses
        return flags, (priv[Attribute.ID], pub[Attribute.ID], pub[Attribute.TOKEN])

    flags, (priv_id, pub_id, pub_on_token) = hsm_keystore.call_with_session(inspect)
    assert flags == {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.NEVER_EXTRACTABLE: True,
        Attribute.LOCAL: True,
    }
    assert priv_id == pub_id and len(priv_id) == 16 and pub_on_token is True

    with pytest.raises(KeyNotExtractable, match=key.label):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    if isinstance(key, HsmEd25519PrivateKey):
        with pytest.raises(KeyNotExtractable):
            key.private_bytes_raw()
    else:
        with pytest.raises(KeyNotExtractable):
            key.private_numbers()
    assert copy.copy(key) is key and copy.deepcopy(key) is key


def test_signing_only_keys_refuse_ecdh_and_decrypt(keys: dict[KeyType, Any]) -> None:
    ec_key, rsa_key = keys[KeyType.EC_P256], keys[KeyType.RSA_2048]
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(MechanismUnsupported):
        ec_key.exchange(ec.ECDH(), peer)
    with pytest.raises(MechanismUnsupported):
        rsa_key.decrypt(b"x" * 256, padding.PKCS1v15())


# ---- lookup and errors ---------------------------------------------------------------------------


def test_get_exists_labels_and_reopen(hsm_config: TokenConfig, keys: dict[KeyType, Any]) -> None:
    other = KeyStore(hsm_config)  # a second store on the same token, fresh lookups
    key = other.get("seam-ec-p256")
    assert isinstance(key, HsmEcPrivateKey) and key.key_type is KeyType.EC_P256
    assert key.public_key() == keys[KeyType.EC_P256].public_key()
    for key_type in KeyType:
        assert other.get(f"seam-{key_type.value}").key_type is key_type
    assert other.exists("seam-rsa-2048") and not other.exists("no-such-key")
    assert {f"seam-{kt.value}" for kt in KeyType} <= set(other.labels())
    other.close()  # logs the token out for the whole process; the first store recovers
    data = b"after close"
    sig = keys[KeyType.EC_P256].sign(data, ec.ECDSA(hashes.SHA256()))
    keys[KeyType.EC_P256].public_key().verify(sig, data, ec.ECDSA(hashes.SHA256()))
    again = other.get("seam-ec-p256")
    assert isinstance(again, HsmEcPrivateKey)
    assert again.sign(data, ec.ECDSA(hashes.SHA256()))


def test_missing_key_raises_key_not_found(hsm_keystore: KeyStore) -> None:
    with pytest.raises(KeyNotFound, match="'absent'"):
        hsm_keystore.get("absent")


def test_duplicate_label_raises_key_exists(hsm_keystore: KeyStore) -> None:
    hsm_keystore.generate("dup", KeyType.EC_P256)
    with pytest.raises(KeyExists, match="'dup'"):
        hsm_keystore.generate("dup", KeyType.RSA_2048)
    assert hsm_keystore.labels().count("dup") == 1


def test_missing_token_label_raises_token_not_found(hsm_config: TokenConfig) -> None:
    store = KeyStore(
        TokenConfig(
            hsm_config.module_path, "no-such-token", hsm_config.user_pin, hsm_config.softhsm2_conf
        )
    )
    with pytest.raises(TokenNotFound, match="'no-such-token'"):
        store.labels()


def test_missing_module_raises_token_not_found(tmp_path: Path) -> None:
    missing = str(tmp_path / "libnothing.so")
    store = KeyStore(TokenConfig(missing, "agentca", "1234"))  # __init__ does no I/O
    with pytest.raises(TokenNotFound, match=r"libnothing\.so"):
        store.exists("x")


def test_wrong_pin_raises_pin_incorrect_in_a_fresh_process(tmp_path: Path) -> None:
    code = """
import dataclasses, json, sys
from pathlib import Path
from hsm import KeyStore, PinIncorrect, ensure_softhsm_token
cfg = ensure_softhsm_token(Path(sys.argv[1]), label="pin-test")
bad = dataclasses.replace(cfg, user_pin="not-" + cfg.user_pin[:8])
try:
    KeyStore(bad).labels()
except PinIncorrect as exc:
    text = str(exc)
    leak = cfg.user_pin in text or bad.user_pin in text
    print(json.dumps({"message": text, "leak": leak,
                      "repr_leak": cfg.user_pin in repr(cfg), "slug": exc.code_slug}))
else:
    print(json.dumps({"message": None}))
KeyStore(cfg).labels()  # the right PIN still works afterwards
"""
    proc = run_python(code, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["message"] == "the HSM PIN for token 'pin-test' is incorrect"
    assert result["leak"] is False and result["repr_leak"] is False
    assert result["slug"] == "hsm-pin-incorrect"


def test_second_token_config_in_one_process_is_refused_clearly(
    hsm_keystore: KeyStore, tmp_path: Path
) -> None:
    hsm_keystore.labels()  # module loaded with the session token's SOFTHSM2_CONF
    other = KeyStore(
        TokenConfig(hsm_keystore.config.module_path, "x", "1234", str(tmp_path / "softhsm2.conf"))
    )
    with pytest.raises(hsm.HSMError, match="one SoftHSM2 configuration per process"):
        other.labels()


# ---- fork and threads ----------------------------------------------------------------------------


def test_signing_works_in_a_forked_child(keys: dict[KeyType, Any]) -> None:
    key = keys[KeyType.EC_P256]
    rsa_key = keys[KeyType.RSA_2048]
    key.sign(b"warm", ec.ECDSA(hashes.SHA256()))  # the parent has a live, logged-in session
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: sign through the inherited objects, report through the pipe
        try:
            os.close(read_fd)
            out = {
                "pid": os.getpid(),
                "ec": key.sign(b"from child", ec.ECDSA(hashes.SHA256())).hex(),
                "rsa": rsa_key.sign(b"from child", padding.PKCS1v15(), hashes.SHA256()).hex(),
            }
        except BaseException as exc:  # report anything, never return into pytest
            out = {"error": repr(exc)}
        os.write(write_fd, json.dumps(out).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        report = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert "error" not in report, report
    assert report["pid"] != os.getpid()
    key.public_key().verify(bytes.fromhex(report["ec"]), b"from child", ec.ECDSA(hashes.SHA256()))
    rsa_key.public_key().verify(
        bytes.fromhex(report["rsa"]), b"from child", padding.PKCS1v15(), hashes.SHA256()
    )
    # The parent's session is unaffected by the child's re-initialisation.
    sig = key.sign(b"parent again", ec.ECDSA(hashes.SHA256()))
    key.public_key().verify(sig, b"parent again", ec.ECDSA(hashes.SHA256()))


def test_twenty_threads_signing_through_one_store(
    hsm_config: TokenConfig, keys: dict[KeyType, Any]
) -> None:
    key = keys[KeyType.EC_P256]
    second = KeyStore(hsm_config).get(key.label)  # another session in the same process as well
    assert isinstance(second, HsmEcPrivateKey)
    algorithm = ec.ECDSA(hashes.SHA256())
    errors: list[BaseException] = []
    results: list[tuple[bytes, bytes]] = []
    results_lock = threading.Lock()
    barrier = threading.Barrier(20)

    def worker(n: int) -> None:
        signer = second if n % 5 == 0 else key
        try:
            barrier.wait()
            local = []
            for i in range(50):
                data = f"{n}:{i}".encode()
                local.append((data, signer.sign(data, algorithm)))
            with results_lock:
                results.extend(local)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 1000
    for data, sig in results:
        key.public_key().verify(sig, data, algorithm)


# ---- provisioning --------------------------------------------------------------------------------


def test_ensure_softhsm_token_files_modes_and_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    real_run = subprocess.run

    def recording_run(args: list[str], **kwargs: Any) -> Any:
        calls.append({"args": list(args), **kwargs})
        return real_run(args, **kwargs)

    monkeypatch.setattr("hsm.softhsm.subprocess.run", recording_run)
    config = ensure_softhsm_token(tmp_path, label="prov")
    user_pin = read_pin_file(tmp_path / "secrets" / "user.pin")
    so_pin = read_pin_file(tmp_path / "secrets" / "so.pin")
    assert config.user_pin == user_pin and user_pin != so_pin and len(user_pin) >= 24
    assert config.token_label == "prov" and config.softhsm2_conf == str(
        tmp_path / "hsm" / "softhsm2.conf"
    )

    for name in ("user.pin", "so.pin"):
        assert stat.S_IMODE((tmp_path / "secrets" / name).stat().st_mode) == 0o600
    for directory in ("secrets", "hsm", "hsm/tokens"):
        assert stat.S_IMODE((tmp_path / directory).stat().st_mode) == 0o700
    conf = (tmp_path / "hsm" / "softhsm2.conf").read_text()
    assert f"directories.tokendir = {tmp_path / 'hsm' / 'tokens'}" in conf
    assert "objectstore.backend = file" in conf and "log.level = ERROR" in conf
    assert any((tmp_path / "hsm" / "tokens").iterdir())  # the token exists on disk

    assert len(calls) == 1
    (call,) = calls
    assert call["args"] == hsm.softhsm.init_token_command()
    argv_text = " ".join(call["args"])
    assert user_pin not in argv_text and so_pin not in argv_text
    assert all(user_pin not in v and so_pin not in v for v in call["env"].values())
    assert user_pin in call["input"] and so_pin in call["input"]  # PINs travel on stdin
    assert call["env"]["SOFTHSM2_CONF"] == config.softhsm2_conf

    again = ensure_softhsm_token(tmp_path, label="prov")  # reuses token and PINs
    assert again == config and again.user_pin == config.user_pin
    assert read_pin_file(tmp_path / "secrets" / "so.pin") == so_pin


def test_a_token_directory_that_is_away_is_never_replaced_by_a_new_token(tmp_path: Path) -> None:
    config = ensure_softhsm_token(tmp_path, label="away")
    tokens = tmp_path / "hsm" / "tokens"
    os.rename(tokens, str(tokens) + ".away")
    with pytest.raises(TokenNotFound, match="missing while the token's PIN files exist"):
        ensure_softhsm_token(tmp_path, label="away")
    assert not tokens.exists()  # nothing was created in its place
    os.rename(str(tokens) + ".away", tokens)
    assert ensure_softhsm_token(tmp_path, label="away") == config


def test_one_pin_file_without_the_other_creates_nothing(tmp_path: Path) -> None:
    ensure_softhsm_token(tmp_path, label="half")
    tokens = tmp_path / "hsm" / "tokens"
    os.rename(tokens, str(tokens) + ".away")
    (tmp_path / "secrets" / "so.pin").unlink()
    with pytest.raises(HSMError, match=r"so\.pin' is missing while the other exists"):
        ensure_softhsm_token(tmp_path, label="half")
    assert not tokens.exists() and not (tmp_path / "secrets" / "so.pin").exists()


def test_an_open_that_may_not_create_never_provisions(tmp_path: Path) -> None:
    with pytest.raises(TokenNotFound, match="no SoftHSM2 token was provisioned"):
        ensure_softhsm_token(tmp_path, label="open", create=False)
    assert not (tmp_path / "hsm").exists() and not (tmp_path / "secrets").exists()
    ensure_softhsm_token(tmp_path, label="open")
    for pin in (tmp_path / "secrets").iterdir():  # the secrets are away, the token too
        pin.unlink()
    os.rename(tmp_path / "hsm" / "tokens", tmp_path / "tokens.away")
    with pytest.raises(TokenNotFound, match="never provisioned here, or the secrets are away"):
        ensure_softhsm_token(tmp_path, label="open", create=False)
    assert not list((tmp_path / "secrets").iterdir())
    assert not (tmp_path / "hsm" / "tokens").exists()


def test_a_failed_first_provisioning_leaves_no_pin_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_run(*args: Any, **kwargs: Any) -> Any:
        raise subprocess.TimeoutExpired("init", 120)

    monkeypatch.setattr("hsm.softhsm.subprocess.run", failing_run)
    with pytest.raises(subprocess.TimeoutExpired):
        ensure_softhsm_token(tmp_path, label="retry")
    assert not list((tmp_path / "secrets").iterdir())
    monkeypatch.undo()
    assert ensure_softhsm_token(tmp_path, label="retry").token_label == "retry"


def test_provisioned_token_works_in_a_fresh_process(tmp_path: Path) -> None:
    code = """
import sys
from pathlib import Path
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hsm import KeyStore, KeyType, ensure_softhsm_token
cfg = ensure_softhsm_token(Path(sys.argv[1]), label="fresh")
with KeyStore(cfg) as store:
    key = store.generate("k", KeyType.EC_P256)
    algorithm = ec.ECDSA(hashes.SHA256())
    key.public_key().verify(key.sign(b"x", algorithm), b"x", algorithm)
    print(store.labels())
"""
    proc = run_python(code, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['k']"
    proc = run_python(code.replace('generate("k", KeyType.EC_P256)', 'get("k")'), str(tmp_path))
    assert proc.returncode == 0, proc.stderr


def test_read_pin_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PinFileError, match="does not exist"):
        read_pin_file(tmp_path / "nope.pin")
    (tmp_path / "empty.pin").write_text("\n")
    with pytest.raises(PinFileError, match="is empty"):
        read_pin_file(tmp_path / "empty.pin")
    (tmp_path / "ok.pin").write_text("s3cret\n")
    assert read_pin_file(tmp_path / "ok.pin") == "s3cret"


def test_find_pkcs11_module_finds_softhsm() -> None:
    assert hsm.softhsm.find_pkcs11_module() == "/usr/lib/softhsm/libsofthsm2.so"


def test_a_module_reinitialisation_voids_every_stores_handles(
    hsm_config: TokenConfig, hsm_keystore: KeyStore
) -> None:
    """Two stores in one process (the CA token and the responder token, as in the scheduler).
    After the module is re-initialised (token recovery and SoftHSM2 retries do it), the numbers
    of the first store's session and key handles are handed out again to the second store's new
    session and key. Before the fix, the first store then signed with the second store's key."""
    from hsm import keystore as ks
    from tests.integration.conftest_hsm import RESPONDER_TOKEN, responder_token_pin

    algorithm = ec.ECDSA(hashes.SHA256())
    mine = hsm_keystore.generate(f"reinit-a-{secrets.token_hex(4)}", KeyType.EC_P256)
    mine.sign(b"a", algorithm)  # the first store now holds a session and a key handle
    pin = responder_token_pin(hsm_config).read_text().strip()
    other = KeyStore(
        TokenConfig(hsm_config.module_path, RESPONDER_TOKEN, pin, hsm_config.softhsm2_conf)
    )
    try:
        with ks._LOCK:  # what KeyStore._open_session does between attempts
            ks._bump_generation(hsm_config.module_path)
            ks._reinitialize(ks._LIBS[hsm_config.module_path])
        theirs = other.generate(f"reinit-b-{secrets.token_hex(4)}", KeyType.EC_P256)
        theirs.public_key().verify(theirs.sign(b"b", algorithm), b"b", algorithm)
        mine.public_key().verify(mine.sign(b"a", algorithm), b"a", algorithm)
    finally:
        other.close()
