"""The SPIFFE bundle document (pure): a JWK Set per the SPIFFE Trust Domain and Bundle and
X509-SVID specifications, read back with joserfc and cryptography, not with our own code."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import KeySet

from ca.api.spiffe_bundle import REFRESH_HINT, bundle_document, bundle_json
from ca.errors import CAError, ErrorCode
from ca.profile import build_root_certificate
from ca.records import IssuerRecord
from tests.unit.helpers import NOW, software_hierarchy

SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _root(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, days: int = 0) -> x509.Certificate:
    start = NOW + timedelta(days=days)
    return build_root_certificate(key, "R", "O", 1 << 70, start, start + timedelta(days=3650))


def _spki_of_jwk(jwk: dict[str, object]) -> bytes:
    """The public key of ``jwk`` as SPKI DER, decoded by joserfc.

    joserfc accepts only ``use`` values ``sig`` and ``enc`` (RFC 7517 allows others; SPIFFE
    defines ``x509-svid``), so only the key parameters are handed to it.
    """
    params = {k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y", "n", "e")}
    keyset = KeySet.import_key_set({"keys": [params]})  # type: ignore[list-item]
    (key,) = keyset.keys
    public = key.public_key  # a cryptography key object
    return bytes(public.public_bytes(*SPKI))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP384R1()),
        ec.generate_private_key(ec.SECP256R1()),
        rsa.generate_private_key(65537, 2048),
    ],
    ids=["p384", "p256", "rsa2048"],
)
def test_one_x509_svid_key_per_root_with_its_certificate(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
) -> None:
    root = _root(key)
    doc = json.loads(bundle_json([root]))
    assert set(doc) == {"keys", "spiffe_refresh_hint", "spiffe_sequence"}
    (jwk,) = doc["keys"]
    assert jwk["use"] == "x509-svid"
    assert "kid" not in jwk  # X509-SVID 6.1: MUST NOT be set
    assert len(jwk["x5c"]) == 1
    der = base64.b64decode(jwk["x5c"][0], validate=True)  # standard base64 (RFC 7517 4.7)
    cert = x509.load_der_x509_certificate(der)
    assert cert == root and cert.issuer == cert.subject
    assert _spki_of_jwk(jwk) == root.public_key().public_bytes(*SPKI)
    assert doc["spiffe_refresh_hint"] == REFRESH_HINT > 0
    assert doc["spiffe_sequence"] == int(root.not_valid_before_utc.timestamp())


def test_ec_coordinates_have_the_curve_length() -> None:
    """RFC 7518 6.2.1.2: x and y are the full coordinate length, leading zeros kept."""
    for _ in range(40):  # about one key in 128 has a leading zero byte in x or y
        root = _root(ec.generate_private_key(ec.SECP256R1()))
        (jwk,) = bundle_document([root])["keys"]
        for coordinate in ("x", "y"):
            padded = jwk[coordinate] + "=" * (-len(jwk[coordinate]) % 4)
            assert len(base64.urlsafe_b64decode(padded)) == 32
        assert jwk["crv"] == "P-256" and jwk["kty"] == "EC"


def test_the_sequence_grows_when_a_newer_root_joins() -> None:
    old = _root(ec.generate_private_key(ec.SECP384R1()))
    new = _root(ec.generate_private_key(ec.SECP384R1()), days=30)
    before = bundle_document([old])
    after = bundle_document([old, new])
    assert len(after["keys"]) == 2
    assert after["spiffe_sequence"] > before["spiffe_sequence"]


def test_the_issuing_ca_is_not_an_authority() -> None:
    """Only what the caller passes (the roots) goes in; the route passes parentless issuers."""
    _rk, root, _ik, issuing = software_hierarchy()
    doc = bundle_document([root])
    certs = [x509.load_der_x509_certificate(base64.b64decode(k["x5c"][0])) for k in doc["keys"]]
    assert certs == [root] and issuing not in certs


def test_the_serialisation_is_canonical() -> None:
    root = _root(ec.generate_private_key(ec.SECP384R1()))
    assert bundle_json([root]) == bundle_json([root])
    assert bundle_json([root]).decode() == json.dumps(
        json.loads(bundle_json([root])), sort_keys=True, separators=(",", ":")
    )


def test_no_roots_is_not_initialised() -> None:
    with pytest.raises(CAError) as caught:
        bundle_document([])
    assert caught.value.code is ErrorCode.NOT_INITIALISED


def test_an_unsupported_key_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "E")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1))
        .sign(key, None)
    )  # fmt: skip
    with pytest.raises(CAError) as caught:
        bundle_document([cert])
    assert caught.value.code is ErrorCode.UNSUPPORTED_KEY


# ---------------------------------------------------------------------------------- the route
class _Issuers:
    """The one thing the route asks of the runtime: ``authority.issuers()``."""

    def __init__(self, records: list[IssuerRecord]) -> None:
        self.authority = self
        self._records = records

    def issuers(self) -> list[IssuerRecord]:
        return self._records


def _client(tmp_path: Path, records: list[IssuerRecord]) -> Any:
    from ca.api.app import create_app
    from ca.config import Settings

    def factory() -> Any:
        return _Issuers(records)

    app = create_app(Settings(data_dir=tmp_path), runtime_factory=factory)
    return app.test_client()


def _record(name: str, cert: x509.Certificate, parent: str | None) -> IssuerRecord:
    der = cert.public_bytes(serialization.Encoding.DER)
    return IssuerRecord(name, name, f"{name}-key", "ec-p256", der, parent)


def test_the_route_serves_only_the_roots_with_cache_headers(tmp_path: Path) -> None:
    _rk, root, _ik, issuing = software_hierarchy()
    client = _client(tmp_path, [_record("root", root, None), _record("issuing", issuing, "root")])
    answer = client.get("/spiffe/bundle.json")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    assert answer.get_data() == bundle_json([root])
    assert answer.headers["Cache-Control"] == "public, max-age=300"
    again = client.get("/spiffe/bundle.json", headers={"If-None-Match": answer.headers["ETag"]})
    assert again.status_code == 304 and again.get_data() == b""
    assert again.headers["ETag"] == answer.headers["ETag"]


def test_the_route_without_roots_is_a_503_problem(tmp_path: Path) -> None:
    answer = _client(tmp_path, []).get("/spiffe/bundle.json")
    assert answer.status_code == 503 and answer.mimetype == "application/problem+json"
    assert answer.get_json()["type"].endswith("/not-initialised")


def test_a_weakened_etag_still_revalidates(tmp_path: Path) -> None:
    # A compressing proxy (nginx gzip) turns the strong ETag into W/"..."; If-None-Match
    # uses the weak comparison (RFC 9110 section 13.1.2), so the client still gets a 304.
    _rk, root, _ik, _issuing = software_hierarchy()
    client = _client(tmp_path, [_record("root", root, None)])
    etag = client.get("/spiffe/bundle.json").headers["ETag"]
    again = client.get("/spiffe/bundle.json", headers={"If-None-Match": f"W/{etag}"})
    assert again.status_code == 304
