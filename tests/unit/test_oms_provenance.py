"""AgentProvenance v2 (the OMS model digest scheme, decision 0049): encoding, strict decoding,
old (v1) certificates unchanged, the policy's scheme check and the SDK's drift check."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import DigestError as SdkDigestError
from agent import ModelDigestScheme as SdkScheme
from agent import ProvenanceDrift, RuntimeProvenance
from agent.provenance import Provenance as SdkProvenance
from ca.errors import CAError, ErrorCode
from ca.extensions import Digest, Provenance
from ca.policy import EnrollmentClaim, InventoryModel, Refusal, Registration, decide
from ca.requests import IssuanceRequest
from gateway import StaticInventory, StatusChecker, Verifier
from tests.support.gateway_pki import MODEL_FILE, Clock, Pki, make_agent, signed_view
from wire import oms
from wire.extensions import (
    ExtensionError,
    ModelDigestScheme,
    decode_provenance,
    read_agent_extensions,
)

OMS = ModelDigestScheme.OMS
MANIFEST = ModelDigestScheme.AGENTCA_MANIFEST
D1, D2, D3 = Digest(b"\x11" * 32), Digest(b"\x22" * 32), Digest(b"\x33" * 48, "sha384")

#: v1 encodings made by main before decision 0049 (pinned: v1 must never change).
V1_PINNED = {
    Provenance("m", D1, D2): (
        "30650c016d302f300b06096086480165030402010420111111111111111111111111111111111111"
        "1111111111111111111111111111302f300b06096086480165030402010420222222222222222222"
        "2222222222222222222222222222222222222222222222"
    ),
    Provenance("claude-3.5-sonnet-v2", Digest(bytes(range(32))), D2, D3): (
        "3081b90c14636c617564652d332e352d736f6e6e65742d7632302f300b0609608648016503040201"
        "0420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f302f300b0609"
        "60864801650304020104202222222222222222222222222222222222222222222222222222222222"
        "222222a03f300b060960864801650304020204303333333333333333333333333333333333333333"
        "33333333333333333333333333333333333333333333333333333333"
    ),
}


def test_v1_encoding_is_unchanged() -> None:
    for value, pinned in V1_PINNED.items():
        assert value.model_digest_scheme is MANIFEST
        assert value.to_der().hex() == pinned
        assert Provenance.from_der(bytes.fromhex(pinned)) == value
        assert decode_provenance(bytes.fromhex(pinned)).model_digest_scheme is MANIFEST


def test_v2_known_answer() -> None:
    value = Provenance("m", D1, D2, model_digest_scheme=OMS)
    der = value.to_der()
    v1_body = bytes.fromhex(next(iter(V1_PINNED.values())))[2:]
    # SEQUENCE { INTEGER 1 (v2), <the v1 fields>, [1] IMPLICIT INTEGER 1 (omsFiles) }
    assert der == bytes([0x30, len(v1_body) + 6]) + b"\x02\x01\x01" + v1_body + b"\x81\x01\x01"
    assert Provenance.from_der(der) == value
    assert decode_provenance(der).model_digest_scheme is OMS
    with_config = Provenance("m", D1, D2, D3, OMS)
    assert Provenance.from_der(with_config.to_der()) == with_config


def tlv(tag: int, body: bytes) -> bytes:
    assert len(body) < 0x80
    return bytes([tag, len(body)]) + body


V1_BODY = bytes.fromhex(next(iter(V1_PINNED.values())))[2:]


@pytest.mark.parametrize(
    ("der", "needle"),
    [
        (tlv(0x30, b"\x02\x01\x01" + V1_BODY), "v2 requires the modelDigestScheme"),
        (tlv(0x30, b"\x02\x01\x01" + V1_BODY + b"\x81\x01\x00"), "not canonical"),  # v2+manifest
        (tlv(0x30, b"\x02\x01\x01" + V1_BODY + b"\x81\x01\x07"), "unsupported model digest"),
        (tlv(0x30, b"\x02\x01\x01" + V1_BODY + b"\x81\x02\x00\x01"), "non-minimal"),
        (tlv(0x30, b"\x02\x01\x01" + V1_BODY + b"\x82\x01\x01"), "v2 requires"),
        (tlv(0x30, V1_BODY + b"\x81\x01\x01"), "unexpected or mis-tagged"),  # v1 + scheme
        (tlv(0x30, b"\x02\x01\x01" + V1_BODY + b"\x81\x01\x01\x81\x01\x01"), "mis-tagged"),
        (tlv(0x30, b"\x02\x01\x01\x81\x01\x01"), "missing or mis-typed"),
        (tlv(0x30, b"\x02\x01\x02" + V1_BODY + b"\x81\x01\x01"), "unsupported version 2"),
    ],
)
def test_v2_strict_decoding(der: bytes, needle: str) -> None:
    with pytest.raises(ExtensionError, match=needle):
        decode_provenance(der)
    with pytest.raises(CAError) as info:
        Provenance.from_der(der)
    assert info.value.code is ErrorCode.INVALID_EXTENSION


def test_oms_model_digest_is_sha256() -> None:
    with pytest.raises(CAError, match="OMS model digest is a sha256"):
        Provenance("m", Digest(b"\x11" * 48, "sha384"), D2, model_digest_scheme=OMS)
    with pytest.raises(SdkDigestError):
        SdkProvenance("m", b"\x11" * 48, b"\x22" * 48, algorithm="sha384", model_digest_scheme=OMS)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(list(ModelDigestScheme)), st.binary(min_size=32, max_size=32), st.booleans())
def test_round_trip_every_scheme(scheme: ModelDigestScheme, model: bytes, config: bool) -> None:
    value = Provenance("m", Digest(model), D2, D3 if config else None, scheme)
    assert Provenance.from_der(value.to_der()) == value
    assert Provenance.from_dict(value.to_dict()) == value
    sdk = SdkProvenance.from_der(value.to_der()) if not config else None
    if sdk is not None:
        assert sdk.model_digest_scheme is scheme and sdk.to_der() == value.to_der()


def test_json_form() -> None:
    assert "model_digest_scheme" not in Provenance("m", D1, D2).to_dict()  # v1 shape unchanged
    oms_json = Provenance("m", D1, D2, model_digest_scheme=OMS).to_dict()
    assert oms_json["model_digest_scheme"] == "oms-v1"
    with pytest.raises(CAError, match="unknown model digest scheme"):
        Provenance.from_dict(oms_json | {"model_digest_scheme": "sha1-tree"})


# ------------------------------------------------------------------------------- the policy

MODEL = "ab" * 32
PROMPT = "cd" * 32
REG = Registration(
    name="exec",
    officer="officer@bank.example",
    environment="prod",
    model_type="m",
    allowed_scopes=("orders:write",),
    allowed_model_digests=(MODEL,),
    allowed_prompt_digests=(PROMPT,),
    allowed_key_types=("ec-p256",),
    max_validity=timedelta(hours=6),
)


def _decide(entry_scheme: str, claim_scheme: ModelDigestScheme) -> IssuanceRequest | Refusal:
    inventory = {(MODEL, "prod"): InventoryModel(MODEL, "m", "prod", True, entry_scheme)}
    prov = Provenance(
        "m", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT), model_digest_scheme=claim_scheme
    )
    claim = EnrollmentClaim(ec.generate_private_key(ec.SECP256R1()).public_key(), prov)
    return decide(REG, inventory, claim, timedelta(hours=1), timedelta(days=1))


def test_policy_certifies_each_scheme_as_registered() -> None:
    old = _decide("agentca-manifest-v1", MANIFEST)
    assert isinstance(old, IssuanceRequest)
    assert old.extensions.provenance.model_digest_scheme is MANIFEST
    new = _decide("oms-v1", OMS)
    assert isinstance(new, IssuanceRequest)
    assert new.extensions.provenance.model_digest_scheme is OMS


@pytest.mark.parametrize(("entry", "claim"), [("oms-v1", MANIFEST), ("agentca-manifest-v1", OMS)])
def test_policy_refuses_a_scheme_relabel(entry: str, claim: ModelDigestScheme) -> None:
    """A downgrade (an OMS-registered digest claimed as a manifest digest) or the reverse."""
    out = _decide(entry, claim)
    assert isinstance(out, Refusal)
    assert any(f"registered under scheme {entry}" in r for r in out.reasons), out.reasons


def test_inventory_default_scheme_is_the_old_one() -> None:
    assert InventoryModel(MODEL, "m", "prod", True).digest_scheme == "agentca-manifest-v1"


# ---------------------------------------------------------------------------- SDK + gateway


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


def _gateway(pki: Pki, clock: Clock, digest: bytes) -> Verifier:
    return Verifier(
        [pki.root],
        StaticInventory([digest.hex()]),
        StatusChecker(refresh=False, clock=clock, fetch=False),
        clock=clock,
        audience=("http://gw.local",),
        trust_domain="agentca.local",
    )


def test_gateway_allows_v1_and_v2_certificates(pki: Pki, tmp_path: Path) -> None:
    clock = Clock()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.bin").write_bytes(MODEL_FILE)
    root = oms.model_digest(tmp_path / "m" / "model.bin").root
    key, cert = pki.issue(model=root, scheme=OMS)
    assert read_agent_extensions(cert).provenance.model_digest_scheme is OMS
    agent = make_agent(tmp_path / "m", pki, clock, cert=cert, key=key, model_scheme=OMS)
    staple = pki.ocsp_response(cert, _good(), this_update=clock())
    d = _gateway(pki, clock, root).decide(
        signed_view(agent, staple=staple)[0], "submit_limit_order"
    )
    assert d.allowed, d.denial
    # an old (v1) certificate, as issued before decision 0049, still verifies
    old_agent = make_agent(tmp_path / "old", pki, clock)
    old_cert = old_agent.credential.certificate  # type: ignore[union-attr]
    assert read_agent_extensions(old_cert).provenance.model_digest_scheme is MANIFEST
    old_staple = pki.ocsp_response(old_cert, _good(), this_update=clock())
    old_digest = read_agent_extensions(old_cert).provenance.model_digest.value
    d = _gateway(pki, clock, old_digest).decide(
        signed_view(old_agent, staple=old_staple)[0], "submit_limit_order"
    )
    assert d.allowed, d.denial


def _good():  # type: ignore[no-untyped-def]
    from ocsp.decision import CertState

    return CertState.GOOD


def test_sdk_refuses_to_sign_on_scheme_or_model_drift(pki: Pki, tmp_path: Path) -> None:
    clock = Clock()
    (tmp_path / "m").mkdir()
    model = tmp_path / "m" / "model.bin"
    model.write_bytes(MODEL_FILE)
    root = oms.model_digest(model).root
    key, cert = pki.issue(model=root, scheme=OMS)
    # same bytes, but the runtime computes the manifest digest: a different claim
    agent = make_agent(tmp_path / "m", pki, clock, cert=cert, key=key)
    with pytest.raises(ProvenanceDrift):
        signed_view(agent, staple=b"")
    agent = make_agent(tmp_path / "m", pki, clock, cert=cert, key=key, model_scheme=OMS)
    signed_view(agent, staple=b"")  # the OMS runtime matches the certificate
    model.write_bytes(MODEL_FILE[::-1])  # same size, other content
    clock.t += 2
    with pytest.raises(ProvenanceDrift):
        signed_view(agent, staple=b"")


def test_runtime_provenance_oms_claim(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"w")
    (tmp_path / "m" / "model.sig").write_bytes(b"{}")
    rt = RuntimeProvenance(
        "m", tmp_path / "m", prompt_bytes=b"p", model_scheme="oms-v1", model_ignore=("model.sig",)
    )
    value = rt.current()
    assert value.model_digest_scheme is SdkScheme.OMS
    assert value.model_digest == hashlib.sha256(hashlib.sha256(b"w").digest()).digest()
    assert decode_provenance(value.to_der()).model_digest_scheme is OMS
    with pytest.raises(SdkDigestError, match="need model_scheme='oms-v1'"):
        RuntimeProvenance("m", tmp_path / "m", prompt_bytes=b"p", model_ignore=("x",))
    with pytest.raises(SdkDigestError, match="unknown model digest scheme"):
        RuntimeProvenance("m", tmp_path / "m", prompt_bytes=b"p", model_scheme="md5")


def test_differences_count_the_scheme() -> None:
    old = SdkProvenance("m", b"\x11" * 32, b"\x22" * 32)
    new = SdkProvenance("m", b"\x11" * 32, b"\x22" * 32, model_digest_scheme=SdkScheme.OMS)
    assert old.differences(new) == ["model"] and new.differences(new) == []


def test_runtime_refuses_an_order_preserving_rename(tmp_path: Path) -> None:
    """Same OMS root (contents and order kept), other names: the SDK will not sign on it."""
    model = tmp_path / "m"
    model.mkdir()
    (model / "a.json").write_bytes(b"1")
    (model / "b.bin").write_bytes(b"2")
    rt = RuntimeProvenance("m", model, prompt_bytes=b"p", model_scheme="oms-v1")
    first = rt.current()
    (model / "a.json").rename(model / "a.json.off")
    assert oms.model_digest(model).root == first.model_digest  # what OMS itself would accept
    with pytest.raises(SdkDigestError, match="renamed with their digest unchanged"):
        rt.refresh()
    (model / "a.json.off").rename(model / "a.json")
    assert rt.refresh() == first
