"""``wire.oms_signature``: OMS bundles made by ``model-signing`` and bundles an attacker made.

The reference bundles come from the real ``model_signing`` CLI in ``.venv-oms``
(``scripts/oms-reference-venv.sh``; skipped with that reason when it is absent). The hostile
ones are crafted here with ``cryptography``: a producer key signs statements that are wrong in
one way each, so a refusal can only come from the check under test.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.support import oms_signer
from tests.support.oms_reference import oms_root, oms_statement
from wire.oms_signature import (
    MAX_BUNDLE_BYTES,
    Producer,
    SignatureError,
    key_id,
    load_producer,
    pae,
    verify_bundle,
    verify_model,
)

needs_reference = pytest.mark.skipif(
    not oms_signer.available(),
    reason="no .venv-oms with model-signing: run scripts/oms-reference-venv.sh",
)


def make_model(root: Path) -> Path:
    model = root / "model"
    (model / "weights").mkdir(parents=True)
    (model / "config.json").write_text('{"layers": 2}\n')
    (model / "weights" / "shard-1.bin").write_bytes(bytes(range(256)) * 64)
    (model / "weights" / "shard-2.bin").write_bytes(b"\x00" * 5000)
    (model / ".gitignore").write_text("*.tmp\n")  # ignored by OMS
    return model


def flip_one_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# -- crafted bundles ----------------------------------------------------------------------------
def bundle(
    statement: dict[str, Any] | bytes,
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
    *,
    payload_type: str = "application/vnd.in-toto+json",
    signed_type: str | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    raw = statement if isinstance(statement, bytes) else json.dumps(statement).encode()
    message = pae(signed_type or payload_type, raw)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(message, ec.ECDSA(hashes.SHA256()))
    else:
        sig = key.sign(message)
    body: dict[str, Any] = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": key_id(key.public_key())}},
        "dsseEnvelope": {
            "payload": base64.b64encode(raw).decode(),
            "payloadType": payload_type,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
        },
    }
    body.update(extra or {})
    return json.dumps(body).encode()


def statement_for(
    resources: list[tuple[str, bytes]], ignore: list[str] | None = None
) -> dict[str, Any]:
    root = hashlib.sha256(b"".join(d for _, d in resources)).hexdigest()
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "model", "digest": {"sha256": root}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": [
                    ".git",
                    ".gitattributes",
                    ".github",
                    ".gitignore",
                    *(ignore or []),
                ],
            },
            "resources": [
                {"algorithm": "sha256", "digest": d.hex(), "name": n} for n, d in resources
            ],
        },
    }


def files_of(model: Path) -> list[tuple[str, bytes]]:
    st = oms_statement(model)
    return [(r["name"], bytes.fromhex(r["digest"])) for r in st["predicate"]["resources"]]


@pytest.fixture
def producer_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def acme(producer_key: ec.EllipticCurvePrivateKey) -> Producer:
    return Producer("acme", (producer_key.public_key(),))


def test_a_crafted_bundle_of_the_right_files_verifies(
    tmp_path: Path, producer_key: ec.EllipticCurvePrivateKey, acme: Producer
) -> None:
    model = make_model(tmp_path)
    v = verify_model(model, bundle(statement_for(files_of(model)), producer_key), [acme])
    assert v.producer == "acme" and v.method == "key"
    assert v.root == oms_root(model)
    assert v.signer == key_id(producer_key.public_key())


def test_a_statement_listing_fewer_files_than_the_directory_is_refused(
    tmp_path: Path, producer_key: ec.EllipticCurvePrivateKey, acme: Producer
) -> None:
    model = make_model(tmp_path)
    fewer = [f for f in files_of(model) if f[0] != "weights/shard-2.bin"]
    data = bundle(statement_for(fewer), producer_key)
    verify_bundle(data, [acme])  # the signature alone is fine...
    with pytest.raises(SignatureError, match=r"'weights/shard-2\.bin' is in the model but not"):
        verify_model(model, data, [acme])  # ...but the directory holds an unsigned file


def test_a_signed_file_missing_from_the_directory_is_refused(
    tmp_path: Path, producer_key: ec.EllipticCurvePrivateKey, acme: Producer
) -> None:
    model = make_model(tmp_path)
    data = bundle(statement_for(files_of(model)), producer_key)
    (model / "config.json").unlink()
    with pytest.raises(SignatureError, match=r"signed file 'config\.json' is missing"):
        verify_model(model, data, [acme])


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/passwd", "weights/../../x", "a\\b"])
def test_a_resource_name_escaping_the_directory_is_refused(
    tmp_path: Path, producer_key: ec.EllipticCurvePrivateKey, acme: Producer, name: str
) -> None:
    data = bundle(statement_for([(name, b"\x01" * 32)]), producer_key)
    with pytest.raises(SignatureError, match=r"not an OMS v1\.0 statement"):
        verify_bundle(data, [acme])


@pytest.mark.parametrize("ignored", ["../elsewhere", "/etc"])
def test_an_ignored_path_escaping_the_directory_is_refused(
    tmp_path: Path, producer_key: ec.EllipticCurvePrivateKey, acme: Producer, ignored: str
) -> None:
    model = make_model(tmp_path)
    data = bundle(statement_for(files_of(model), ignore=[ignored]), producer_key)
    with pytest.raises(SignatureError, match="not inside the model directory"):
        verify_model(model, data, [acme])


def test_a_bundle_for_another_model_is_refused(
    tmp_path: Path, producer_key: ec.EllipticCurvePrivateKey, acme: Producer
) -> None:
    model = make_model(tmp_path)
    other = make_model(tmp_path / "other")
    (other / "config.json").write_text('{"layers": 3}\n')
    data = bundle(statement_for(files_of(other)), producer_key)
    with pytest.raises(SignatureError, match=r"'config\.json' does not match its signed digest"):
        verify_model(model, data, [acme])


def test_a_signature_over_a_different_payload_type_is_refused(
    tmp_path: Path, producer_key: ec.EllipticCurvePrivateKey, acme: Producer
) -> None:
    model = make_model(tmp_path)
    st = statement_for(files_of(model))
    with pytest.raises(SignatureError, match="payload type is 'application/json'"):
        verify_bundle(bundle(st, producer_key, payload_type="application/json"), [acme])
    # the envelope says in-toto but the producer signed the bytes as another type: the PAE
    # binds the type, so the signature does not verify
    relabelled = bundle(st, producer_key, signed_type="application/vnd.example+json")
    with pytest.raises(SignatureError, match="does not verify with any configured producer key"):
        verify_bundle(relabelled, [acme])


def test_a_huge_bundle_is_refused_before_parsing(acme: Producer) -> None:
    with pytest.raises(SignatureError, match="larger than"):
        verify_bundle(b"{" + b" " * MAX_BUNDLE_BYTES + b"}", [acme])


def test_malformed_bundles_are_refused_with_a_reason(
    tmp_path: Path, producer_key: ec.EllipticCurvePrivateKey, acme: Producer
) -> None:
    model = make_model(tmp_path)
    good = json.loads(bundle(statement_for(files_of(model)), producer_key))
    cases: list[tuple[bytes, str]] = [
        (b"not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"mediaType": "x", "mediaType": "y"}', "duplicate JSON member"),
        (json.dumps(good | {"mediaType": "application/other"}).encode(), "media type"),
        (json.dumps({k: v for k, v in good.items() if k != "dsseEnvelope"}).encode(), "DSSE"),
    ]
    two = json.loads(json.dumps(good))
    two["dsseEnvelope"]["signatures"] *= 2
    cases.append((json.dumps(two).encode(), "exactly one signature"))
    keyless = json.loads(json.dumps(good))
    keyless["verificationMaterial"] = {"certificate": {"rawBytes": "AA=="}, "tlogEntries": [{}]}
    cases.append((json.dumps(keyless).encode(), "need the network"))
    bad_b64 = json.loads(json.dumps(good))
    bad_b64["dsseEnvelope"]["payload"] = "%%%"
    cases.append((json.dumps(bad_b64).encode(), "not valid base64"))
    for data, reason in cases:
        with pytest.raises(SignatureError, match=reason):
            verify_bundle(data, [acme])


def test_a_duplicate_member_inside_the_signed_statement_is_refused(
    tmp_path: Path, producer_key: ec.EllipticCurvePrivateKey, acme: Producer
) -> None:
    model = make_model(tmp_path)
    text = json.dumps(statement_for(files_of(model)))
    # two subjects members: parsers disagree on which one wins, so the statement is refused
    twice = text.replace('"subject":', '"subject": [], "subject":', 1).encode()
    with pytest.raises(SignatureError, match="duplicate JSON member 'subject'"):
        verify_bundle(bundle(twice, producer_key), [acme])


def test_ed25519_producer_keys_verify(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    key = ed25519.Ed25519PrivateKey.generate()
    v = verify_model(
        model, bundle(statement_for(files_of(model)), key), [Producer("ed", (key.public_key(),))]
    )
    assert v.producer == "ed"


def test_producer_files_are_checked(tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_text("nothing here\n")
    with pytest.raises(SignatureError, match="holds no PEM block"):
        load_producer("x", [tmp_path / "empty.pem"])
    (tmp_path / "priv.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(SignatureError, match="neither a PUBLIC KEY nor a CERTIFICATE"):
        load_producer("x", [tmp_path / "priv.pem"])
    with pytest.raises(SignatureError, match="cannot read"):
        load_producer("x", [tmp_path / "missing.pem"])


# -- bundles made by model-signing ----------------------------------------------------------------
@needs_reference
def test_model_signing_key_bundle_is_accepted_and_a_changed_byte_refused(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    oms_signer.write_key(tmp_path / "acme.key")
    oms_signer.sign_with_key(model, tmp_path / "acme.key", model / "model.sig")
    oms_signer.verify_with_key(model, Path(f"{tmp_path}/acme.key.pub"), model / "model.sig")
    acme = load_producer("acme", [f"{tmp_path}/acme.key.pub"])
    data = (model / "model.sig").read_bytes()
    v = verify_model(model, data, [acme])
    assert v.producer == "acme" and v.method == "key"
    # the digest we certify is model-signing's digest for the directory (signature left out)
    assert v.root == oms_root(model, ignore=["model.sig"])
    assert "model.sig" in v.ignore_paths
    flip_one_byte(model / "weights" / "shard-1.bin")
    with pytest.raises(SignatureError, match=r"'weights/shard-1\.bin' does not match its signed"):
        verify_model(model, data, [acme])


@needs_reference
def test_model_signing_bundle_from_an_untrusted_key_is_refused(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    oms_signer.write_key(tmp_path / "mallory.key")
    oms_signer.write_key(tmp_path / "acme.key")
    oms_signer.sign_with_key(model, tmp_path / "mallory.key", tmp_path / "model.sig")
    acme = load_producer("acme", [f"{tmp_path}/acme.key.pub"])
    with pytest.raises(SignatureError, match="does not verify with any configured producer key"):
        verify_model(model, (tmp_path / "model.sig").read_bytes(), [acme])


@needs_reference
def test_model_signing_certificate_bundle_verifies_to_the_producer_root(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    chain = oms_signer.write_chain(tmp_path, "acme")
    oms_signer.sign_with_certificate(model, chain, tmp_path / "model.sig")
    data = (tmp_path / "model.sig").read_bytes()
    other = oms_signer.write_chain(tmp_path, "other")
    producers = [load_producer("other", [other["root"]]), load_producer("acme", [chain["root"]])]
    v = verify_model(model, data, producers)
    assert (v.producer, v.method, v.signer) == ("acme", "certificate", "CN=acme model release")
    assert v.root == oms_root(model)
    # checked now, not at the leaf's notBefore: an expired certificate no longer verifies
    with pytest.raises(SignatureError, match="leads to no trusted producer"):
        verify_bundle(data, producers, now=datetime.now(UTC) + timedelta(days=400))
    # a chain to a root nobody configured is refused, naming the producers tried
    with pytest.raises(SignatureError, match="leads to no trusted producer"):
        verify_model(model, data, [producers[0]])
    # the producer's public key alone does not accept a certificate bundle either
    with pytest.raises(SignatureError, match="leads to no trusted producer"):
        verify_model(model, data, [load_producer("acme-key", [f"{chain['key']}.pub"])])


def test_a_statement_ignoring_a_directory_is_refused(
    tmp_path: Path, producer_key: ec.EllipticCurvePrivateKey, acme: Producer
) -> None:
    model = make_model(tmp_path)
    (model / "adapters").mkdir()
    (model / "adapters" / "override.json").write_text('{"rank": 64}\n')
    signed = [f for f in files_of(model) if not f[0].startswith("adapters/")]
    data = bundle(statement_for(signed, ignore=["adapters"]), producer_key)
    with pytest.raises(SignatureError, match="ignores the directory 'adapters'"):
        verify_model(model, data, [acme])


def test_a_huge_bundle_file_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    from ca.errors import CAError
    from ca.model_signatures import read_bundle

    big = tmp_path / "model.sig"
    with open(big, "wb") as fh:
        fh.truncate(MAX_BUNDLE_BYTES * 64)  # sparse: 512 MiB the reader must not load
    with pytest.raises(CAError, match="larger than"):
        read_bundle(big)
    with pytest.raises(CAError, match="larger than"):
        read_bundle("/dev/zero")


def test_no_configured_producer_refuses_the_signature_as_policy() -> None:
    from ca.config import Settings
    from ca.errors import CAError, ErrorCode
    from ca.model_signatures import check_bundle

    with pytest.raises(CAError, match="no model producer is configured") as info:
        check_bundle(Settings(), b"{}")
    assert info.value.code is ErrorCode.POLICY_REFUSED
