"""The SPIFFE bundle endpoint of a running CA API, and agent certificates as X509-SVIDs.

``agentca serve`` over a CA made by ``agentca init`` with the default settings answers
``GET /spiffe/bundle.json`` with a JWK Set whose one ``x509-svid`` key is the root CA (the
same bytes ``agentca chain --root-only`` writes; the JWK's public key decoded by hand with
cryptography equals the certificate's); cache headers and 304 on ``If-None-Match``. An
agent certificate issued by ``agentca issue`` meets the X509-SVID leaf rules and verifies
under the bundle's root with cryptography's verifier.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from tests.integration.servers import agentca_server
from tests.integration.test_ocsp_interop import init_ca, issue

pytestmark = pytest.mark.integration

TRUST_DOMAIN = "agentca.local"  # ca.config.Settings.trust_domain's default
# SPIFFE ID (SPIFFE-ID.md 2.1, 2.2): lowercase trust domain, non-empty path segments.
SPIFFE_ID = re.compile(r"spiffe://([a-z0-9._-]+)((?:/[A-Za-z0-9._-]+)+)")
CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}


@dataclass(frozen=True)
class Served:
    base: str
    root: x509.Certificate
    issuing: x509.Certificate
    agent: x509.Certificate


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("bundle-ca") / "data"
    work = tmp_path_factory.mktemp("bundle-work")
    init_ca(data_dir, {}, work)
    agent, _ = issue(data_dir, {}, work, "svid-agent")

    def load(path: Path) -> x509.Certificate:
        return x509.load_pem_x509_certificate(path.read_bytes())

    with agentca_server(["serve", "--workers", "1"], data_dir, "/health") as (base, _p):
        yield Served(base, load(work / "root.pem"), load(work / "issuing.pem"), load(agent))


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=10
        ) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def _b64url_int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def jwk_public_key(jwk: dict[str, Any]) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """Decode the JWK's key parameters (RFC 7518 section 6) without agentca's code."""
    if jwk["kty"] == "EC":
        numbers = ec.EllipticCurvePublicNumbers(
            _b64url_int(jwk["x"]), _b64url_int(jwk["y"]), CURVES[jwk["crv"]]
        )
        return numbers.public_key()
    assert jwk["kty"] == "RSA"
    return rsa.RSAPublicNumbers(_b64url_int(jwk["e"]), _b64url_int(jwk["n"])).public_key()


# ---------------------------------------------------------------------------------- endpoint
def test_the_bundle_is_the_root_as_one_x509_svid_jwk(served: Served) -> None:
    status, headers, body = fetch(served.base + "/spiffe/bundle.json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert isinstance(doc["spiffe_sequence"], int) and doc["spiffe_sequence"] > 0
    assert isinstance(doc["spiffe_refresh_hint"], int) and doc["spiffe_refresh_hint"] > 0
    (jwk,) = doc["keys"]
    assert jwk["use"] == "x509-svid" and "kid" not in jwk
    (x5c,) = jwk["x5c"]
    cert = x509.load_der_x509_certificate(base64.b64decode(x5c, validate=True))
    assert cert == served.root
    assert jwk_public_key(jwk) == served.root.public_key()
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-384"  # agentca init's default root key


def test_the_bundle_is_cacheable_and_revalidates(served: Served) -> None:
    _, headers, body = fetch(served.base + "/spiffe/bundle.json")
    cache = headers["Cache-Control"]
    assert cache.startswith("public, max-age=")
    max_age = int(cache.removeprefix("public, max-age="))
    assert 0 < max_age <= json.loads(body)["spiffe_refresh_hint"]
    etag = headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    status, again, empty = fetch(served.base + "/spiffe/bundle.json", {"If-None-Match": etag})
    assert (status, empty, again["ETag"]) == (304, b"", etag)
    status, _, body2 = fetch(served.base + "/spiffe/bundle.json", {"If-None-Match": '"other"'})
    assert status == 200 and body2 == body


def test_the_bundle_is_in_the_openapi_document(served: Served) -> None:
    _, _, body = fetch(served.base + "/openapi.json")
    op = json.loads(body)["paths"]["/spiffe/bundle.json"]["get"]
    assert op["security"] == []
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/SpiffeBundle"}


# ---------------------------------------------------------------------------------- X509-SVID
def test_the_agent_certificate_is_an_x509_svid_leaf(served: Served) -> None:
    """X509-SVID 4 and 5.2: one spiffe URI SAN with a path, cA false, digitalSignature and
    neither keyCertSign nor cRLSign; the leaf EKU includes clientAuth."""
    cert = served.agent
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    assert len(uris) == 1
    match = SPIFFE_ID.fullmatch(uris[0])
    assert match, uris
    assert match.group(1) == TRUST_DOMAIN and match.group(2) == "/agent/svid-agent"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign and not ku.crl_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku


def test_the_agent_verifies_under_the_bundle_root(served: Served) -> None:
    """What a SPIFFE verifier does: trust the bundle's x5c, take the rest from the peer."""
    _, _, body = fetch(served.base + "/spiffe/bundle.json")
    roots = [
        x509.load_der_x509_certificate(base64.b64decode(k["x5c"][0]))
        for k in json.loads(body)["keys"]
        if k["use"] == "x509-svid"
    ]
    verifier = PolicyBuilder().store(Store(roots)).build_client_verifier()
    verified = verifier.verify(served.agent, [served.issuing])
    assert verified.chain[-1] == served.root
    assert [str(u) for u in verified.subjects or []] == [
        f"<UniformResourceIdentifier(value='spiffe://{TRUST_DOMAIN}/agent/svid-agent')>"
    ]
