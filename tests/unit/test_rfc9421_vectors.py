"""RFC 9421 Appendix B.2: both RFC 9421 cores (gateway verifier, agent signer) rebuild the
published signature bases byte for byte; the gateway core verifies the published signatures
(rsa-pss-sha512, ecdsa-p256-sha256, ed25519); the deterministic ones (ed25519, and HMAC, which
the gateway deliberately does not accept) are reproduced exactly. Data: tests/data/rfc9421."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from agent import httpsig as agent_sig
from gateway import httpsig
from gateway.httpsig import RequestView

DATA = Path(__file__).resolve().parents[1] / "data" / "rfc9421"
VECTORS: list[dict[str, Any]] = json.loads((DATA / "vectors.json").read_text())["vectors"]


def message(name: str) -> tuple[str, dict[str, str], bytes]:
    """(start line, lower-case headers, body) of a stored HTTP/1.1 message."""
    head, _, body = (DATA / name).read_bytes().partition(b"\r\n\r\n")
    start, *lines = head.decode("ascii").split("\r\n")
    headers = {}
    for line in lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return start, headers, body


def view_of(vector: dict[str, Any]) -> RequestView:
    start, headers, body = message(vector["message"])
    headers["signature-input"] = vector["signature_input"]
    headers["signature"] = vector["signature"]
    if start.startswith("HTTP/"):
        return RequestView("", "", "", headers, body, status=int(start.split()[1]))
    method, target, _ = start.split(" ")
    path, _, query = target.partition("?")
    return RequestView(method, path, query, headers, body, headers["host"], "https")


def test_the_data_is_consistent() -> None:
    for name in ("test-request.http", "test-response.http"):
        _, headers, body = message(name)
        digest = base64.b64encode(hashlib.sha512(body).digest()).decode()
        assert headers["content-digest"] == f"sha-512=:{digest}:"
        assert int(headers["content-length"]) == len(body)
    assert [v["section"] for v in VECTORS] == [f"B.2.{i}" for i in range(1, 7)]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["section"] for v in VECTORS])
def test_gateway_core_rebuilds_the_base(vector: dict[str, Any]) -> None:
    req = view_of(vector)
    sig = httpsig.parse_labelled(req.headers, vector["label"])
    assert httpsig.signature_base(sig, req) == vector["base"].encode()


@pytest.mark.parametrize(
    "vector",
    [v for v in VECTORS if v["algorithm"] in ("rsa-pss-sha512", "ecdsa-p256-sha256", "ed25519")],
    ids=lambda v: v["section"],
)
def test_gateway_core_verifies_the_published_signature(vector: dict[str, Any]) -> None:
    req = view_of(vector)
    sig = httpsig.parse_labelled(req.headers, vector["label"])
    key: Any = load_pem_public_key((DATA / vector["key"]).read_bytes())
    base = httpsig.signature_base(sig, req)
    assert httpsig.verify(key, vector["algorithm"], sig.signature, base)
    # and fails closed on any other base or signature
    assert not httpsig.verify(key, vector["algorithm"], sig.signature, base + b" ")
    flipped = bytes([sig.signature[0] ^ 1]) + sig.signature[1:]
    assert not httpsig.verify(key, vector["algorithm"], flipped, base)


def test_ed25519_is_reproduced_exactly() -> None:
    (vector,) = [v for v in VECTORS if v["section"] == "B.2.6"]
    key = load_pem_private_key((DATA / vector["private_key"]).read_bytes(), None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    req = view_of(vector)
    sig = httpsig.parse_labelled(req.headers, vector["label"])
    ours = agent_sig.sign_base(key, httpsig.signature_base(sig, req))
    assert f"{vector['label']}={agent_sig.sf_bytes(ours)}" == vector["signature"]


def test_hmac_is_reproduced_exactly() -> None:
    (vector,) = [v for v in VECTORS if v["section"] == "B.2.5"]
    secret = base64.b64decode((DATA / vector["key"]).read_text())
    req = view_of(vector)
    sig = httpsig.parse_labelled(req.headers, vector["label"])
    mac = hmac.new(secret, httpsig.signature_base(sig, req), hashlib.sha256).digest()
    assert mac == sig.signature
    # the gateway accepts no symmetric algorithm: a shared secret is no agent identity
    assert not httpsig.verify(secret, "hmac-sha256", sig.signature, vector["base"].encode())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "vector",
    [v for v in VECTORS if v["section"] in ("B.2.1", "B.2.3", "B.2.5", "B.2.6")],
    ids=lambda v: v["section"],
)
def test_agent_core_builds_the_same_base(vector: dict[str, Any]) -> None:
    """The signer's core (request components only: no @query-param, no @status)."""
    start, headers, _ = message(vector["message"])
    method, target, _ = start.split(" ")
    url = "https://" + headers["host"] + target
    _, _, params_value = vector["signature_input"].partition("=")
    inner = params_value[1 : params_value.index(")")]
    covered = [c.strip('"') for c in inner.split(" ")] if inner else []
    base = agent_sig.signature_base(method, url, headers, covered, params_value)
    assert base == vector["base"].encode()
