"""Verify an OpenSSF Model Signing (OMS v1.0) signature bundle offline, with ``cryptography``.

``model_signing sign key`` and ``model_signing sign certificate`` write a Sigstore bundle (JSON,
media type ``application/vnd.dev.sigstore.bundle.v0.3+json``) holding a DSSE envelope over an
in-toto statement (:mod:`wire.oms`). This module checks such a bundle against the trust anchors
an operator configured per model producer (public keys and/or CA certificates) and, given the
model directory, that the directory is exactly what the statement lists, file by file.

Why a module of our own rather than ``model_signing.verify``: that package needs pyOpenSSL,
which pins an older ``cryptography`` than agentca runs, and its verifier is looser than a CA
should be (it builds the DSSE PAE with a fixed payload type, accepts a pre-1.0 PAE, and
checks certificate chains at the leaf's notBefore, so an expired certificate never stops
verifying). Here:

* the bundle is at most :data:`MAX_BUNDLE_BYTES`, strict JSON (no duplicate member, no NaN),
  with exactly one DSSE signature, of payload type ``application/vnd.in-toto+json``, and the
  PAE is computed over the envelope's own payload type (DSSE v1.0);
* a key bundle is checked against the configured public keys (its ``hint`` must be the
  SHA-256 of the key's PEM, as model-signing writes it, when present); ECDSA P-256/P-384/P-521
  with the curve's hash (what model-signing signs with), Ed25519, RSA PKCS#1 v1.5 or PSS with
  SHA-256;
* a certificate bundle's chain must lead to a configured CA certificate, verified *now*
  (``cryptography.x509.verification``; at most :data:`MAX_CHAIN` certificates), and the leaf
  must be for code signing (not a CA; a keyUsage allowing digitalSignature and an
  extendedKeyUsage naming codeSigning, whichever is present), and so must every intermediate
  whose extendedKeyUsage is present;
* Sigstore keyless bundles (a Fulcio certificate and a Rekor entry) need the network to check
  the transparency log and the Fulcio roots; they are refused with that reason.

Nothing here reads the network or the clock except the chain's validation time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from wire.digests import DigestError, StrPath
from wire.oms import GIT_PATHS, PAYLOAD_TYPE, Resource, model_digest, statement_digest

#: The bundle media types model-signing writes (v0.3) or older Sigstore clients wrote.
BUNDLE_MEDIA_TYPES: Final = (
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
)
#: A bundle larger than this is refused before it is parsed (a statement of ~50 000 files).
MAX_BUNDLE_BYTES: Final = 8 * 1024 * 1024
#: Most certificates a bundle's chain may carry (leaf included).
MAX_CHAIN: Final = 8

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
Method = Literal["key", "certificate"]


class SignatureError(ValueError):
    """The bundle is malformed, not trusted, or does not match the model."""


@dataclass(frozen=True)
class Producer:
    """One configured model producer: its name and what it signs with."""

    name: str
    public_keys: tuple[PublicKey, ...] = ()
    roots: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class VerifiedModel:
    """What a verified bundle proves: who signed which root digest over which files."""

    producer: str
    method: Method
    #: the signing key's SHA-256 (hex, over its PEM SPKI), or the leaf certificate's subject
    signer: str
    #: the leaf certificate's SHA-256 fingerprint (hex), empty for a key bundle
    certificate_sha256: str
    root: bytes
    resources: tuple[Resource, ...]
    ignore_paths: tuple[str, ...]
    bundle_sha256: str


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SignatureError(f"duplicate JSON member {key!r}")
        out[key] = value
    return out


def _constant(name: str) -> None:
    raise SignatureError(f"JSON constant {name} is not allowed")


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(
            data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, SignatureError):
            raise
        raise SignatureError(f"{what} is not valid JSON") from None


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what} is not valid base64") from None


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding that is signed."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def key_id(key: PublicKey) -> str:
    """SHA-256 (hex) of the key's PEM SubjectPublicKeyInfo: model-signing's key ``hint``."""
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def _verify_raw(key: object, sig: bytes, message: bytes) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = key.curve.key_size
            chosen = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}.get(size)
            if chosen is None:
                return False
            key.verify(sig, message, ec.ECDSA(chosen))
            return True
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, message)
            return True
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                return False
            for pad in (
                padding.PKCS1v15(),
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            ):
                try:
                    key.verify(sig, message, pad, hashes.SHA256())
                    return True
                except InvalidSignature:
                    continue
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        return False
    return False


def load_producer(name: str, pem_files: Iterable[StrPath]) -> Producer:
    """A producer from PEM files holding public keys and/or CA certificates."""
    keys: list[PublicKey] = []
    roots: list[x509.Certificate] = []
    for path in pem_files:
        try:
            with open(os.fspath(path), "rb") as fh:
                data = fh.read(1024 * 1024)
        except OSError as exc:
            raise SignatureError(f"producer {name}: cannot read {path}: {exc.strerror}") from None
        blocks = [b"-----BEGIN" + b for b in data.split(b"-----BEGIN")[1:]]
        for block in blocks:
            try:
                if block.startswith(b"-----BEGIN CERTIFICATE-----"):
                    roots.append(x509.load_pem_x509_certificate(block))
                elif block.startswith(b"-----BEGIN PUBLIC KEY-----"):
                    key = serialization.load_pem_public_key(block)
                    if not isinstance(key, PublicKey):
                        raise SignatureError(f"producer {name}: unsupported key type in {path}")
                    keys.append(key)
                else:
                    raise SignatureError(
                        f"producer {name}: {path} holds a PEM block that is neither a "
                        "PUBLIC KEY nor a CERTIFICATE"
                    )
            except ValueError as exc:
                if isinstance(exc, SignatureError):
                    raise
                raise SignatureError(f"producer {name}: {path}: unreadable PEM") from None
        if not blocks:
            raise SignatureError(f"producer {name}: {path} holds no PEM block")
    if not keys and not roots:
        raise SignatureError(f"producer {name} has no public key or CA certificate")
    return Producer(name, tuple(keys), tuple(roots))


def parse_producers(entries: Sequence[str]) -> tuple[Producer, ...]:
    """Producers from ``NAME=PATH`` settings (one PEM file each; a name may repeat)."""
    files: dict[str, list[str]] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise SignatureError(f"model producer {entry!r} is not NAME=PEM-FILE")
        files.setdefault(name.strip(), []).append(path.strip())
    return tuple(load_producer(n, p) for n, p in files.items())


def _signing_refusal(cert: x509.Certificate) -> str | None:
    """Why ``cert`` may not sign a model, or None (RFC 5280 4.2.1.3, 4.2.1.9, 4.2.1.12): a CA
    certificate never signs; a keyUsage present must allow digitalSignature, an
    extendedKeyUsage present must name codeSigning (a TLS or mail certificate of the same CA
    does not sign models); one of the two must be present, as model-signing requires."""
    try:
        exts = cert.extensions
    except (ValueError, x509.DuplicateExtension):  # DuplicateExtension is not a ValueError
        return "has malformed extensions"
    try:
        if exts.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "is a CA certificate"
    except x509.ExtensionNotFound:
        pass
    try:
        usage: x509.KeyUsage | None = exts.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    try:
        eku: x509.ExtendedKeyUsage | None = exts.get_extension_for_class(
            x509.ExtendedKeyUsage
        ).value
    except x509.ExtensionNotFound:
        eku = None
    if usage is None and eku is None:
        return "allows neither digital signatures nor code signing"
    if usage is not None and not usage.digital_signature:
        return "has a keyUsage without digitalSignature"
    if eku is not None and not _for_code_signing(eku):
        return "has an extendedKeyUsage without codeSigning"
    return None


def _for_code_signing(eku: x509.ExtendedKeyUsage) -> bool:
    return (
        ExtendedKeyUsageOID.CODE_SIGNING in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
    )


def _ca_for_code_signing(
    policy: verification.Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None
) -> None:
    """A CA certificate's extendedKeyUsage, when present, must allow code signing: it replaces
    the check ``build_client_verifier`` makes (TLS client authentication), which refused a
    code-signing sub-CA and accepted a TLS-client one."""
    if eku is not None and not _for_code_signing(eku):
        raise ValueError("a CA certificate's extendedKeyUsage does not allow codeSigning")


def _verify_chain(
    chain: list[x509.Certificate], producers: Sequence[Producer], now: datetime
) -> Producer:
    """The producer whose CA certificates the chain leads to (verified at ``now``)."""
    leaf, intermediates = chain[0], chain[1:]
    refusal = _signing_refusal(leaf)
    if refusal is not None:
        raise SignatureError(f"the signing certificate {refusal}")
    ee = verification.ExtensionPolicy.permit_all()
    ca = verification.ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _ca_for_code_signing
    )
    errors: list[str] = []
    for producer in producers:
        if not producer.roots:
            continue
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(list(producer.roots)))
            .time(now)
            .max_chain_depth(MAX_CHAIN)
            .extension_policies(ca_policy=ca, ee_policy=ee)
            .build_client_verifier()
        )
        try:
            verifier.verify(leaf, intermediates)
            return producer
        except verification.VerificationError as exc:
            errors.append(f"{producer.name}: {exc}")
    detail = "; ".join(errors) or "no producer has a CA certificate"
    raise SignatureError(f"the certificate chain leads to no trusted producer ({detail})")


def _material(bundle: Mapping[str, Any]) -> Mapping[str, Any]:
    material = bundle.get("verificationMaterial")
    if not isinstance(material, dict):
        raise SignatureError("the bundle has no verificationMaterial")
    kinds = [k for k in ("publicKey", "x509CertificateChain", "certificate") if k in material]
    if len(kinds) != 1:
        raise SignatureError(
            "the bundle must carry exactly one of a public key or a certificate chain"
        )
    if "certificate" in material or material.get("tlogEntries"):
        raise SignatureError(
            "Sigstore keyless bundles (Fulcio certificate, Rekor entry) need the network to "
            "verify and are not accepted offline; sign with a key or a certificate chain"
        )
    return material


def verify_bundle(
    data: bytes, producers: Sequence[Producer], *, now: datetime | None = None
) -> VerifiedModel:
    """Check a bundle's signature against ``producers``; the statement's digests, not the files."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise SignatureError(f"the signature bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    if not producers:
        raise SignatureError("no model producer is configured (setting model_producers)")
    bundle = _json(data, "the signature bundle")
    if not isinstance(bundle, dict):
        raise SignatureError("the signature bundle is not a JSON object")
    if bundle.get("mediaType") not in BUNDLE_MEDIA_TYPES:
        raise SignatureError(f"unsupported bundle media type {bundle.get('mediaType')!r}")
    material = _material(bundle)
    envelope = bundle.get("dsseEnvelope")
    if not isinstance(envelope, dict) or "messageSignature" in bundle:
        raise SignatureError("the bundle must hold a DSSE envelope (and no message signature)")
    payload_type = envelope.get("payloadType")
    if payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"the DSSE payload type is {payload_type!r}, not {PAYLOAD_TYPE}")
    payload = _b64(envelope.get("payload"), "the DSSE payload")
    sigs = envelope.get("signatures")
    if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict):
        raise SignatureError("the DSSE envelope must carry exactly one signature")
    sig = _b64(sigs[0].get("sig"), "the DSSE signature")
    message = pae(payload_type, payload)

    producer: Producer | None = None
    signer = cert_sha = ""
    method: Method
    if "publicKey" in material:
        method = "key"
        hint = (
            material["publicKey"].get("hint") if isinstance(material["publicKey"], dict) else None
        )
        if hint is not None and not isinstance(hint, str):
            raise SignatureError("the public key hint must be a string")
        for candidate in producers:
            for key in candidate.public_keys:
                kid = key_id(key)
                if hint and hint != kid:
                    continue
                if _verify_raw(key, sig, message):
                    producer, signer = candidate, kid
                    break
            if producer is not None:
                break
        if producer is None:
            raise SignatureError("the signature does not verify with any configured producer key")
    else:
        method = "certificate"
        raw = material["x509CertificateChain"]
        certs = raw.get("certificates") if isinstance(raw, dict) else None
        if not isinstance(certs, list) or not certs or len(certs) > MAX_CHAIN:
            raise SignatureError(f"the certificate chain must hold 1 to {MAX_CHAIN} certificates")
        chain: list[x509.Certificate] = []
        for i, item in enumerate(certs):
            der = _b64(item.get("rawBytes") if isinstance(item, dict) else None, f"certificate {i}")
            try:
                chain.append(x509.load_der_x509_certificate(der))
            except ValueError:
                raise SignatureError(f"certificate {i} of the chain is not DER X.509") from None
        producer = _verify_chain(chain, producers, now or datetime.now(UTC))
        if not _verify_raw(chain[0].public_key(), sig, message):
            raise SignatureError("the signature does not verify with the signing certificate's key")
        signer = chain[0].subject.rfc4514_string()
        cert_sha = chain[0].fingerprint(hashes.SHA256()).hex()

    statement = _json(payload, "the in-toto statement")
    if not isinstance(statement, dict):
        raise SignatureError("the in-toto statement is not a JSON object")
    try:
        root, resources = statement_digest(statement)
    except DigestError as exc:
        raise SignatureError(f"the signed statement is not an OMS v1.0 statement: {exc}") from None
    ser = statement["predicate"]["serialization"]
    ignore = ser.get("ignore_paths", [])
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise SignatureError("the statement's ignore_paths must be a list of strings")
    if ser.get("allow_symlinks", False) is not False:
        raise SignatureError("a statement made with allow_symlinks is not accepted")
    return VerifiedModel(
        producer=producer.name,
        method=method,
        signer=signer,
        certificate_sha256=cert_sha,
        root=root,
        resources=resources,
        ignore_paths=tuple(ignore),
        bundle_sha256=hashlib.sha256(data).hexdigest(),
    )


def extra_ignores(verified: VerifiedModel) -> tuple[str, ...]:
    """The statement's ignored paths beyond OMS's git paths (e.g. the signature file)."""
    return tuple(p for p in verified.ignore_paths if p not in GIT_PATHS)


def verify_model(
    path: StrPath,
    data: bytes,
    producers: Sequence[Producer],
    *,
    ignore: Iterable[str] = (),
    now: datetime | None = None,
) -> VerifiedModel:
    """:func:`verify_bundle`, then hash ``path`` (OMS rules) and check it file by file.

    The statement's own ignored paths are honoured (model-signing lists the signature file
    there); an ignored path that is absolute, leaves the directory or names a directory is
    refused. The directory
    must hold exactly the signed files, each with its signed digest.
    """
    verified = verify_bundle(data, producers, now=now)
    wanted = (*extra_ignores(verified), *ignore)
    for p in wanted:
        if os.path.isabs(p) or ".." in p.replace("\\", "/").split("/"):
            raise SignatureError(f"ignored path {p!r} is not inside the model directory")
        # an ignored directory would leave a whole tree unbound (a loader may read it): only
        # single files (e.g. the signature itself) may be left out
        if os.path.isdir(os.path.join(os.fspath(path), p)):
            raise SignatureError(f"the statement ignores the directory {p!r}: refused")
    try:
        actual = model_digest(path, ignore=wanted)
    except DigestError as exc:
        raise SignatureError(f"cannot digest the model: {exc}") from None
    signed = {r.name: r.sha256 for r in verified.resources}
    found = {r.name: r.sha256 for r in actual.resources}
    for name in sorted(found):
        if name not in signed:
            raise SignatureError(f"file {name!r} is in the model but not in the signed statement")
        if found[name] != signed[name]:
            raise SignatureError(f"file {name!r} does not match its signed digest")
    for name in sorted(signed):
        if name not in found:
            raise SignatureError(f"signed file {name!r} is missing from the model")
    if actual.root != verified.root:  # names and digests agree, so only the order could differ
        raise SignatureError("the model's OMS digest does not equal the signed digest")
    return verified
