"""Runtime attestation (decision 0051): the JWS attestor, the policy rules, the AgentAttestation
codec. Each attack of the attacker's review has its test here: another key, a reused
statement, alg=none, HS256 with the public key as secret, an unconfigured kid, a key of
another environment, a huge token, expiry by skew, extra header members."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ca.attestation import (
    MAX_EVIDENCE_BYTES,
    AttestationError,
    AttestorKey,
    JwsAttestor,
    load_attestors,
)
from ca.errors import CAError
from ca.extensions import Attestation, Digest, Provenance
from ca.policy import EnrollmentClaim, InventoryModel, Refusal, Registration, decide
from ca.requests import IssuanceRequest
from tests.support.attestor import Orchestrator, claims_for, write_attestors
from tests.unit.helpers import MODEL, PROMPT
from wire import der
from wire import extensions as wire_ext

NOW = 1_800_000_000
REG = Registration(
    name="exec-agent",
    officer="officer@bank.example",
    environment="prod",
    model_type="claude-x",
    allowed_scopes=("submit_limit_order",),
    allowed_model_digests=(MODEL,),
    allowed_prompt_digests=(PROMPT,),
    allowed_key_types=("ec-p256", "ed25519"),
    max_validity=timedelta(hours=6),
    require_attestation=True,
)
INVENTORY = {(MODEL, "prod"): InventoryModel(MODEL, "claude-x", "prod", True)}
PROV = Provenance("claude-x", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture(params=["ec-p256", "ed25519"])
def orch(request: pytest.FixtureRequest) -> Orchestrator:
    return Orchestrator("orchestrator.prod", "orch-1", request.param)


def attestor_for(orch: Orchestrator, envs: tuple[str, ...] = ("prod",), **kw: int) -> JwsAttestor:
    public = orch.key.public_key()
    assert isinstance(public, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey))
    return JwsAttestor([AttestorKey(orch.key_id, orch.attestor, frozenset(envs), public, **kw)])


def agent_key() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


def refused(attestor: JwsAttestor, token: str | bytes, env: str = "prod", now: int = NOW) -> str:
    raw = token.encode() if isinstance(token, str) else token
    with pytest.raises(AttestationError) as info:
        attestor.verify(raw, env, now)
    return info.value.reason


# ---------------------------------------------------------------------------------- attestor


def test_a_valid_statement_binds_key_and_provenance(orch: Orchestrator) -> None:
    key = agent_key()
    token = orch.attest("exec-agent", "prod", key, PROV, now=NOW)
    st = attestor_for(orch).verify(token.encode(), "prod", NOW + 10)
    assert (st.attestor, st.key_id, st.agent, st.environment) == (
        "orchestrator.prod",
        "orch-1",
        "exec-agent",
        "prod",
    )
    assert st.model_digest.hex == MODEL and st.prompt_digest.hex == PROMPT
    assert st.config_digest is None
    assert (st.issued_at, st.expires_at) == (NOW, NOW + 300)


def test_alg_none_and_hs256_with_the_public_key_as_secret_are_refused(orch: Orchestrator) -> None:
    claims = claims_for(orch.attestor, "exec-agent", "prod", agent_key(), PROV, now=NOW)
    payload = _b64(json.dumps(claims).encode())
    head = _b64(
        json.dumps({"alg": "none", "kid": "orch-1", "typ": "agentca-attestation+jwt"}).encode()
    )
    attestor = attestor_for(orch)
    assert refused(attestor, f"{head}.{payload}.AA") == "attestation-algorithm"
    assert refused(attestor, f"{head}.{payload}.") == "attestation-malformed"
    # forged by hand: joserfc itself refuses a public key as an HMAC secret
    hs_head = _b64(b'{"alg":"HS256","kid":"orch-1","typ":"agentca-attestation+jwt"}')
    mac = hmac.new(orch.public_pem(), f"{hs_head}.{payload}".encode(), hashlib.sha256)
    hs = f"{hs_head}.{payload}.{_b64(mac.digest())}"
    assert refused(attestor, hs) == "attestation-algorithm"
    other = "Ed25519" if orch.alg == "ES256" else "ES256"
    switched = orch.sign(claims, {"alg": orch.alg, "kid": "orch-1", "typ": "x"})
    assert refused(attestor, switched) == "attestation-malformed"  # typ
    head2 = _b64(
        json.dumps({"alg": other, "kid": "orch-1", "typ": "agentca-attestation+jwt"}).encode()
    )
    assert refused(attestor, f"{head2}.{payload}.AAAA") == "attestation-algorithm"


def test_unknown_kid_foreign_environment_and_wrong_signer(orch: Orchestrator) -> None:
    key = agent_key()
    attestor = attestor_for(orch)
    stranger = Orchestrator("orchestrator.prod", "orch-9", orch.kind)
    assert refused(attestor, stranger.attest("exec-agent", "prod", key, PROV, now=NOW)) == (
        "attestation-unknown-key"
    )
    impostor = Orchestrator("orchestrator.prod", "orch-1", orch.kind)  # same kid, other key
    assert refused(attestor, impostor.attest("exec-agent", "prod", key, PROV, now=NOW)) == (
        "attestation-signature"
    )
    staging = attestor_for(orch, envs=("staging",))
    assert refused(staging, orch.attest("exec-agent", "prod", key, PROV, now=NOW)) == (
        "attestation-foreign-key"
    )
    claims = claims_for("orchestrator.dev", "exec-agent", "prod", key, PROV, now=NOW)
    assert refused(attestor, orch.sign(claims)) == "attestation-issuer"


def test_freshness_window_skew_and_lifetime(orch: Orchestrator) -> None:
    key = agent_key()
    attestor = attestor_for(orch, skew=30, max_lifetime=600)
    token = orch.attest("exec-agent", "prod", key, PROV, lifetime=300, now=NOW)
    attestor.verify(token.encode(), "prod", NOW + 300 + 29)  # expired, but within the skew
    assert refused(attestor, token, now=NOW + 300 + 30) == "attestation-expired"
    assert refused(attestor, token, now=NOW - 31) == "attestation-not-yet-valid"
    attestor.verify(token.encode(), "prod", NOW - 29)
    long = orch.attest("exec-agent", "prod", key, PROV, lifetime=601, now=NOW)
    assert refused(attestor, long) == "attestation-lifetime"


def test_huge_and_malformed_tokens_are_refused_before_parsing(orch: Orchestrator) -> None:
    attestor = attestor_for(orch)
    assert refused(attestor, b"a" * (MAX_EVIDENCE_BYTES + 1)) == "attestation-too-large"
    assert refused(attestor, "not a jws") == "attestation-malformed"
    assert refused(attestor, "\u00e9.a.b".encode()) == "attestation-malformed"
    assert refused(attestor, "%%%.a.b") == "attestation-malformed"
    deep = _b64(b"[" * 5000)
    assert refused(attestor, f"{deep}.a.b") == "attestation-malformed"


def test_extra_header_members_claims_and_duplicates_are_refused(orch: Orchestrator) -> None:
    key = agent_key()
    attestor = attestor_for(orch)
    claims = claims_for(orch.attestor, "exec-agent", "prod", key, PROV, now=NOW)
    embedded = {"alg": orch.alg, "kid": "orch-1", "typ": "agentca-attestation+jwt"}
    embedded["jku"] = "https://attacker.example/keys.json"
    assert refused(attestor, orch.sign(claims, embedded)) == "attestation-malformed"
    assert refused(attestor, orch.sign({**claims, "admin": True})) == "attestation-malformed"
    assert refused(attestor, orch.sign({**claims, "cnf": {"jkt": "x"}})) == "attestation-malformed"
    bad_model = {**claims, "model": {"digest": "sha256:" + MODEL, "scheme": "other"}}
    assert refused(attestor, orch.sign(bad_model)) == "attestation-malformed"
    head = _b64(b'{"alg":"ES256","kid":"orch-1","kid":"orch-2"}')
    assert refused(attestor, f"{head}.e30.AA") == "attestation-malformed"


def test_a_header_or_payload_that_is_not_utf8_json_is_refused(orch: Orchestrator) -> None:
    """RFC 8259 8.1: JSON exchanged is UTF-8 without a byte order mark; ``json.loads`` of
    bytes would also read UTF-16 and UTF-32, so another reader could see another document."""
    from joserfc import jwk, jws

    key = agent_key()
    attestor = attestor_for(orch)
    claims = json.dumps(claims_for(orch.attestor, "exec-agent", "prod", key, PROV, now=NOW))
    head = {"alg": orch.alg, "kid": "orch-1", "typ": "agentca-attestation+jwt"}
    signer = (
        jwk.OKPKey.import_key(orch.key)
        if isinstance(orch.key, ed25519.Ed25519PrivateKey)
        else jwk.ECKey.import_key(orch.key)
    )
    for payload in (
        claims.encode("utf-16"),
        claims.encode("utf-32"),
        b"\xef\xbb\xbf" + claims.encode(),
    ):
        token = jws.serialize_compact(head, payload, signer, algorithms=[orch.alg])
        assert refused(attestor, token) == "attestation-malformed"
    good = jws.serialize_compact(head, claims.encode(), signer, algorithms=[orch.alg])
    assert attestor.verify(good.encode(), "prod", NOW).agent == "exec-agent"
    sig = good.split(".", 1)[1]
    assert refused(attestor, _b64(json.dumps(head).encode("utf-16")) + "." + sig) == (
        "attestation-malformed"
    )


# ------------------------------------------------------------------------------------ policy


def _decide(claim: EnrollmentClaim, reg: Registration = REG) -> IssuanceRequest | Refusal:
    return decide(reg, INVENTORY, claim, timedelta(hours=1), timedelta(days=7))


def _statement(orch: Orchestrator, key: object, prov: Provenance = PROV, **kw: str):  # type: ignore[no-untyped-def]
    agent, env = kw.get("agent", "exec-agent"), kw.get("env", "prod")
    token = orch.attest(agent, env, key, prov, now=NOW)
    return attestor_for(orch, envs=(env,)).verify(token.encode(), env, NOW)


def test_policy_grants_an_attested_claim_with_the_marker(orch: Orchestrator) -> None:
    key = agent_key()
    st = _statement(orch, key)
    out = _decide(EnrollmentClaim(key, PROV, attestation=st))
    assert isinstance(out, IssuanceRequest)
    marker = out.extensions.attestation
    assert marker == Attestation(
        "orchestrator-jws-v1", "orchestrator.prod", "orch-1", NOW, Digest(st.statement_sha256)
    )


def test_policy_refusals_name_the_attestation_reason(orch: Orchestrator) -> None:
    key = agent_key()
    missing = _decide(EnrollmentClaim(key, PROV))
    assert isinstance(missing, Refusal) and missing.reasons[0].startswith("attestation-missing")
    other_key = _decide(EnrollmentClaim(key, PROV, attestation=_statement(orch, agent_key())))
    assert isinstance(other_key, Refusal)
    assert other_key.reasons[0].startswith("attestation-key-mismatch")
    other_prompt = Provenance("claude-x", Digest.sha256_hex(MODEL), Digest.sha256_hex("22" * 32))
    st = _statement(orch, key, other_prompt)
    out = _decide(EnrollmentClaim(key, PROV, attestation=st))
    assert isinstance(out, Refusal)
    assert out.reasons == (
        "attestation-mismatch: the CSR's prompt digest differ from the attested",
    )
    oms = Provenance(
        "claude-x",
        Digest.sha256_hex(MODEL),
        Digest.sha256_hex(PROMPT),
        model_digest_scheme=wire_ext.ModelDigestScheme.OMS,
    )
    out = _decide(EnrollmentClaim(key, PROV, attestation=_statement(orch, key, oms)))
    assert isinstance(out, Refusal) and "model digest" in out.reasons[0]
    out = _decide(EnrollmentClaim(key, PROV, attestation=_statement(orch, key, agent="other")))
    assert isinstance(out, Refusal) and "attested agent 'other'" in out.reasons[0]
    out = _decide(EnrollmentClaim(key, PROV, attestation=_statement(orch, key, env="dev")))
    assert isinstance(out, Refusal) and "attested environment 'dev'" in out.reasons[0]
    err = _decide(EnrollmentClaim(key, PROV, attestation_error="attestation-expired: old"))
    assert isinstance(err, Refusal) and err.reasons == ("attestation-expired: old",)
    st = _statement(orch, key)
    reused = _decide(
        EnrollmentClaim(key, PROV, attestation=st, spent_statement=st.statement_sha256)
    )
    assert isinstance(reused, Refusal) and reused.reasons[0].startswith("attestation-reused")


def test_not_required_and_not_sent_is_self_declared() -> None:
    reg = Registration(**{**REG.__dict__, "require_attestation": False})
    out = _decide(EnrollmentClaim(agent_key(), PROV), reg)
    assert isinstance(out, IssuanceRequest) and out.extensions.attestation is None


# ------------------------------------------------------------------------------------- codec


def test_attestation_der_roundtrip_and_strictness() -> None:
    a = Attestation("orchestrator-jws-v1", "orch", "k1", NOW, Digest(bytes(range(32))))
    raw = a.to_der()
    assert wire_ext.decode_attestation(raw) == a
    assert Attestation.from_der(raw) == a
    with pytest.raises(wire_ext.ExtensionError, match="version 0 is the DEFAULT"):
        wire_ext.decode_attestation(
            der.seq(
                der.integer(0), *[der.tlv(t, b) for t, b in der.children(der.read_one(raw, 0x30))]
            )
        )
    with pytest.raises(wire_ext.ExtensionError):
        wire_ext.decode_attestation(raw + b"\x00")
    items = der.children(der.read_one(raw, 0x30))
    bad_time = der.seq(*[der.tlv(t, b"20261301000000Z" if t == 0x18 else b) for t, b in items])
    with pytest.raises(wire_ext.ExtensionError, match="attestedAt"):
        wire_ext.decode_attestation(bad_time)
    frac = der.seq(*[der.tlv(t, b"20260101000000.5Z" if t == 0x18 else b) for t, b in items])
    with pytest.raises(wire_ext.ExtensionError, match="GeneralizedTime"):
        wire_ext.decode_attestation(frac)
    with pytest.raises(wire_ext.ExtensionError):
        Attestation("m", " x", "k", NOW, Digest(bytes(32)))


# ------------------------------------------------------------------------------------ config


def test_load_attestors_accepts_p256_and_ed25519_only(tmp_path: Path) -> None:
    ec_orch = Orchestrator("orchestrator.prod", "orch-ec")
    ed_orch = Orchestrator("orchestrator.prod", "orch-ed", "ed25519")
    path = write_attestors(tmp_path, [(ec_orch, ["prod"]), (ed_orch, ["prod", "staging"])])
    attestor = load_attestors(path)
    assert sorted(attestor.keys) == ["orch-ec", "orch-ed"]
    assert attestor.keys["orch-ed"].environments == frozenset({"prod", "staging"})
    rsa_pem = tmp_path / "rsa.pem"
    from cryptography.hazmat.primitives import serialization

    rsa_pem.write_bytes(
        rsa.generate_private_key(65537, 2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    toml = tmp_path / "rsa.toml"
    toml.write_text(
        f'[[attestor]]\nkey_id = "r"\nattestor = "a"\nenvironments = ["prod"]\n'
        f'public_key_file = "{rsa_pem}"\n'
    )
    with pytest.raises(CAError, match="only EC P-256 and Ed25519"):
        load_attestors(toml)
    dup = tmp_path / "dup.toml"
    dup.write_text(path.read_text().replace("orch-ed", "orch-ec"))
    with pytest.raises(CAError, match="repeated"):
        load_attestors(dup)
    secret = tmp_path / "secret.toml"
    secret.write_text(path.read_text() + 'private_key = "x"\n')
    with pytest.raises(CAError):
        load_attestors(secret)


def test_the_statement_digest_ignores_signature_malleability_and_blanks() -> None:
    """A renewal cannot pass the spent statement off as new by re-encoding it."""
    orch = Orchestrator("orchestrator.prod", "orch-1")
    attestor = attestor_for(orch)
    token = orch.attest("exec-agent", "prod", agent_key(), PROV, now=NOW)
    head, payload, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "==")
    r, s_value = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    flipped = f"{head}.{payload}.{_b64(r.to_bytes(32, 'big') + (n - s_value).to_bytes(32, 'big'))}"
    first = attestor.verify(token.encode(), "prod", NOW)
    # cryptography accepts the high-s twin: before the fix it made a "new" statement
    digests = {first.statement_sha256}
    for variant in (flipped, f"  {token}\n"):
        assert variant != token
        digests.add(attestor.verify(variant.encode(), "prod", NOW).statement_sha256)
    assert digests == {first.statement_sha256}
    reused = _decide(
        EnrollmentClaim(
            agent_key(), PROV, attestation=first, spent_statement=first.statement_sha256
        )
    )
    assert isinstance(reused, Refusal) and "attestation-reused" in reused.reasons[0]
