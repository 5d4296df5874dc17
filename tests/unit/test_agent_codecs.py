"""The agent SDK's own encoders and digests against the CA's implementations (byte for
byte), the RFC 9421 / RFC 9530 test vectors, and the agent's refusal to sign on drift."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

import ca.digests as ca_digests
from agent import (
    CertificateExpired,
    NotEnrolled,
    ProvenanceDrift,
    RuntimeProvenance,
    config_digest,
    model_digest,
    prompt_digest,
)
from agent import httpsig as agent_httpsig
from agent.client import Agent
from agent.csr import build_csr, renewal_statement, sign_statement
from agent.errors import AgentError
from agent.provenance import Provenance as AgentProvenance
from ca.extensions import Digest, Provenance, build_agent_csr, read_csr_provenance
from ca.proof import renewal_statement as ca_renewal_statement
from ca.proof import verify_statement
from gateway import httpsig as gateway_httpsig
from gateway.httpsig import ParsedSignature
from tests.support.gateway_pki import PROMPT, Clock, Pki, make_agent, view

model_types = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S")), min_size=1, max_size=40
)
digests = st.binary(min_size=32, max_size=32)


@settings(max_examples=150, deadline=None)
@given(model_types, digests, digests, st.none() | digests)
def test_provenance_der_matches_the_ca(mt: str, m: bytes, p: bytes, c: bytes | None) -> None:
    ours = AgentProvenance(mt, m, p, c)
    theirs = Provenance(mt, Digest(m), Digest(p), None if c is None else Digest(c))
    assert ours.to_der() == theirs.to_der()
    assert AgentProvenance.from_der(theirs.to_der()) == ours


def test_provenance_decoder_rejects_non_canonical_input() -> None:
    der = AgentProvenance("m", b"\x01" * 32, b"\x02" * 32).to_der()
    for bad in (der + b"\x00", der[:-1], b"\x31" + der[1:], der[:1] + b"\x81" + der[1:]):
        with pytest.raises(AgentError):
            AgentProvenance.from_der(bad)


@pytest.mark.parametrize("config", [None, b"\x03" * 32])
def test_csr_is_byte_identical_to_the_cas(config: bytes | None) -> None:
    key = ed25519.Ed25519PrivateKey.generate()  # deterministic signatures
    ours = AgentProvenance("llama-3.1-8b-instruct", os.urandom(32), os.urandom(32), config)
    theirs = Provenance.from_der(ours.to_der())
    a = build_csr(key, "ExecutionAgent-ETH-01", ours, "Enterprise Inc")
    b = build_agent_csr(key, "ExecutionAgent-ETH-01", theirs, "Enterprise Inc")
    assert a.public_bytes(serialization.Encoding.DER) == b.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(65537, 2048),
    ],
    ids=["p256", "p384", "rsa"],
)
def test_csr_is_read_back_by_the_ca(key: object) -> None:
    ours = AgentProvenance("m-1", os.urandom(32), os.urandom(32))
    csr = build_csr(key, "Agent-1", ours)  # type: ignore[arg-type]
    assert csr.is_signature_valid
    got = read_csr_provenance(csr)
    assert got is not None and got.to_der() == ours.to_der()


def test_renewal_proof_is_what_the_ca_verifies() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    args = (1700000000, b"csr", b"cert", ("a", "b"), 3600)
    assert renewal_statement(*args) == ca_renewal_statement(*args)
    data = renewal_statement(*args)
    assert verify_statement(key.public_key(), sign_statement(key, data), data)


def test_digests_match_the_cas_and_the_documented_example(tmp_path: Path) -> None:
    root = tmp_path / "demo-model"
    (root / "weights").mkdir(parents=True)
    (root / "config.json").write_bytes(b'{"architecture":"llama","layers":2}\n')
    (root / "weights" / "shard-00001.bin").write_bytes(b"abc")
    (root / "weights" / "shard-00002.bin").write_bytes(b"def")
    (root / ".hidden").write_bytes(b"x")
    (root / "Z.bin").write_bytes(b"z")
    (root / "link.bin").symlink_to(root / "Z.bin")
    assert model_digest(root) == ca_digests.model_digest(root)
    (root / ".hidden").unlink()
    (root / "Z.bin").unlink()
    (root / "link.bin").unlink()
    assert model_digest(root).hex() == (
        "4cb65429e3a0a222befac653ddcc301258011b42e995d73f2d1d68a6edfc217d"
    )
    single = root / "config.json"
    assert model_digest(single) == ca_digests.model_digest(single)
    assert prompt_digest(b"p\r\n") == ca_digests.prompt_digest(b"p\r\n")
    cfg = {"temperature": 0, "tools": ["submit_limit_order"]}
    assert config_digest(cfg).hex() == (
        "43bf1973f446f9b6ecbbb447e2a018cd4d85daedf6ab9468b9822fceaa164b43"
    )
    assert config_digest(cfg) == ca_digests.config_digest(cfg)


def test_digest_errors_match(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "escape").symlink_to("/etc/hostname")
    for bad in (tmp_path / "empty", tmp_path / "out", tmp_path / "missing"):
        with pytest.raises(AgentError):
            model_digest(bad)
        with pytest.raises(Exception):  # noqa: B017 - the CA raises its own CAError
            ca_digests.model_digest(bad)


# -- RFC 9421 / RFC 9530 test vectors ---------------------------------------------------------
# RFC 9421 appendix B.1.4 (test-key-ed25519) and B.2.6 (signing a request using ed25519).
ED25519_KEY = (
    b"-----BEGIN PRIVATE KEY-----\n"
    b"MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n"
    b"-----END PRIVATE KEY-----\n"
)
B26_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" '
    '"content-length");created=1618884473;keyid="test-key-ed25519"'
)
B26_SIGNATURE = (
    "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
)
B2_HEADERS = {
    "Host": "example.com",
    "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
    "Content-Type": "application/json",
    "Content-Digest": "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu"
    "7BNNyealdVLvRwEmTHWXvJwew==:",
    "Content-Length": "18",
}
COVERED = ("date", "@method", "@path", "@authority", "content-type", "content-length")


def test_rfc9421_b26_signature_base_and_signature_are_reproduced() -> None:
    key = serialization.load_pem_private_key(ED25519_KEY, None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    params = agent_httpsig.signature_params(
        COVERED, [("created", 1618884473), ("keyid", "test-key-ed25519")]
    )
    base = agent_httpsig.signature_base(
        "POST", "https://example.com/foo?param=Value&Pet=dog", B2_HEADERS, COVERED, params
    )
    assert base.decode() == B26_BASE
    assert base64.b64encode(agent_httpsig.sign_base(key, base)).decode() == B26_SIGNATURE


def test_rfc9421_b26_verifies_with_the_gateway() -> None:
    key = serialization.load_pem_private_key(ED25519_KEY, None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    headers = {
        **B2_HEADERS,
        "Signature-Input": 'sig-b26=("date" "@method" "@path" "@authority" "content-type" '
        '"content-length");created=1618884473;keyid="test-key-ed25519";tag="t"',
        "Signature": f"sig-b26=:{B26_SIGNATURE}:",
    }
    req = view("POST", "https://example.com/foo?param=Value&Pet=dog", headers)
    parsed = gateway_httpsig.parse_signature(req.headers, "t")
    # The vector has no tag: rebuild its @signature-params without ours.
    untagged = ParsedSignature(
        parsed.label,
        parsed.covered,
        parsed.params,
        parsed.params_value.replace(';tag="t"', ""),
        parsed.signature,
    )
    base = gateway_httpsig.signature_base(untagged, req)
    assert base.decode() == B26_BASE
    assert gateway_httpsig.verify(key.public_key(), "ed25519", untagged.signature, base)
    assert not gateway_httpsig.verify(key.public_key(), "ed25519", untagged.signature, base + b" ")


def test_rfc9530_content_digest_example() -> None:
    body = b'{"hello": "world"}'
    value = agent_httpsig.content_digest(body)
    assert value == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    assert gateway_httpsig.content_digest_ok(value, body)
    assert not gateway_httpsig.content_digest_ok(value, body + b" ")


def test_ecdsa_signatures_are_raw_r_s() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sig = agent_httpsig.sign_base(key, b"base")
    assert len(sig) == 64
    assert gateway_httpsig.verify(key.public_key(), "ecdsa-p256-sha256", sig, b"base")
    key384 = ec.generate_private_key(ec.SECP384R1())
    sig = agent_httpsig.sign_base(key384, b"base")
    assert len(sig) == 96
    assert gateway_httpsig.verify(key384.public_key(), "ecdsa-p384-sha384", sig, b"base")


# -- the agent refuses to sign -------------------------------------------------------------
def test_agent_refuses_to_sign_on_prompt_or_model_drift(tmp_path: Path) -> None:
    pki, clock = Pki.create(), Clock()
    agent = make_agent(tmp_path, pki, clock)
    agent.sign("GET", "http://gw/book", auto_staple=False, auto_renew=False)
    agent.provenance.set_prompt(PROMPT + b" ")
    with pytest.raises(ProvenanceDrift, match="prompt"):
        agent.sign("GET", "http://gw/book", auto_staple=False, auto_renew=False)
    agent.provenance.set_prompt(PROMPT)
    agent.sign("GET", "http://gw/book", auto_staple=False, auto_renew=False)
    (tmp_path / "model.bin").write_bytes(b"other weights")
    agent.provenance.refresh()
    with pytest.raises(ProvenanceDrift, match="model"):
        agent.sign("GET", "http://gw/book", auto_staple=False, auto_renew=False)


def test_runtime_provenance_notices_file_changes(tmp_path: Path) -> None:
    (tmp_path / "m.bin").write_bytes(b"w")
    (tmp_path / "p.txt").write_bytes(b"one")
    clock = Clock(0.0)
    rt = RuntimeProvenance("m", tmp_path / "m.bin", prompt_path=tmp_path / "p.txt", clock=clock)
    first = rt.current()
    (tmp_path / "p.txt").write_bytes(b"two, longer")
    assert rt.current() == first  # within the recheck interval
    clock.t = 2.0
    assert rt.current().prompt_digest == hashlib.sha256(b"two, longer").digest()


def test_agent_refuses_without_or_with_an_expired_certificate(tmp_path: Path) -> None:
    pki, clock = Pki.create(), Clock()
    agent = make_agent(tmp_path, pki, clock)
    clock.t += 13 * 3600
    with pytest.raises(CertificateExpired):
        agent.sign("GET", "http://gw/book", auto_staple=False, auto_renew=False)
    bare = Agent("A", ec.generate_private_key(ec.SECP256R1()), agent.provenance, "http://x")
    with pytest.raises(NotEnrolled):
        bare.sign("GET", "http://gw/book")


def test_signed_headers_cover_what_the_design_requires(tmp_path: Path) -> None:
    pki, clock = Pki.create(), Clock()
    agent = make_agent(tmp_path, pki, clock)
    signed = agent.sign(
        "POST", "http://gw/orders?x=1", {"Content-Type": "application/json"}, b"{}",
        auto_staple=False, auto_renew=False,
    )  # fmt: skip
    h = signed.headers
    assert h["Content-Digest"] == agent_httpsig.content_digest(b"{}")
    assert h["Client-Cert"].startswith(":") and h["Client-Cert-Chain"].count(":") == 2
    sig_input = h["Signature-Input"]
    for component in ("@method", "@path", "@query", "content-digest", "content-type",
                      "client-cert", "client-cert-chain", "agentca-provenance"):  # fmt: skip
        assert f'"{component}"' in sig_input
    assert ';tag="agentca"' in sig_input and f';nonce="{signed.nonce}"' in sig_input
    assert f";created={int(clock.t)};expires={int(clock.t) + 30}" in sig_input
    assert h["Signature"].startswith("agentca=:")
