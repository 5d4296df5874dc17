"""The SEV-SNP attestor (``ca.attestation_snp``, decision 0051 "TEE quotes").

The verifier is the production code; the reports, VCEKs, ASK and ARK come from the test double
of the AMD firmware and KDS (``tests/support/snp_double.py``): this machine has no SEV-SNP
hardware. AMD's real Milan ARK and ASK are loaded once, to show the root checks accept AMD's
own RSASSA-PSS certificates. Every refusal has its test, and a fuzz test feeds random,
truncated and mutated envelopes and reports: only ``AttestationError`` may come out.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.attestation import AttestationError, AttestorSet, JwsAttestor, load_attestors
from ca.attestation_snp import (
    MAX_SNP_EVIDENCE_BYTES,
    METHOD_SNP,
    SnpAttestor,
    check_roots,
    envelope,
)
from ca.errors import CAError, ErrorCode
from ca.extensions import Digest, Provenance
from ca.policy import EnrollmentClaim, attestation_reasons
from tests.support import snp_double as double
from tests.support.attestor import Orchestrator, write_attestors
from tests.unit.helpers import MODEL, PROMPT
from tests.unit.test_attestation import REG

NOW = int(time.time())
PROV = Provenance("claude-x", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT))
OTHER_MEASUREMENT = bytes.fromhex("77" * 48)
DATA = Path(__file__).resolve().parents[1] / "data" / "amd"


@pytest.fixture(scope="module")
def chip() -> double.Chip:
    return double.Chip(double.roots())


@pytest.fixture(scope="module")
def attestor(tmp_path_factory: pytest.TempPathFactory) -> AttestorSet:
    path = tmp_path_factory.mktemp("snp") / "attestors.toml"
    loaded = load_attestors(
        double.write_snp_toml(
            path,
            double.roots(),
            {"prod": [double.MEASUREMENT], "staging": [OTHER_MEASUREMENT]},
            extra="min_tcb = { snp = 20, microcode = 70 }\n",
        )
    )
    assert isinstance(loaded, AttestorSet)
    return loaded


def make(
    chip: double.Chip,
    key: Any = None,
    *,
    claims: bytes | None = None,
    **report: Any,
) -> tuple[Any, bytes]:
    key = key or ec.generate_private_key(ec.SECP256R1()).public_key()
    claims = (
        claims if claims is not None else double.claims_bytes("exec-agent", "prod", PROV, now=NOW)
    )
    return key, double.evidence(chip, key, claims, **report)


def refused(attestor: Any, evidence: bytes, env: str = "prod", now: int = NOW) -> AttestationError:
    with pytest.raises(AttestationError) as info:
        attestor.verify(evidence, env, now)
    return info.value


def parts(evidence: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(evidence)
    return doc


def with_report(evidence: bytes, raw: bytes) -> bytes:
    doc = parts(evidence)
    doc["report"] = base64.b64encode(raw).decode()
    return json.dumps(doc).encode()


def report_of(evidence: bytes) -> bytes:
    return base64.b64decode(parts(evidence)["report"])


# ------------------------------------------------------------------------------- acceptance


def test_a_valid_report_yields_the_statement(attestor: AttestorSet, chip: double.Chip) -> None:
    key, evidence = make(chip)
    st = attestor.verify(evidence, "prod", NOW)
    assert st.method == METHOD_SNP == "sev-snp-v1"
    assert (st.attestor, st.key_id) == ("amd-sev-snp", "snp-genoa")
    assert st.spki_sha256 == double.spki_sha256(key)
    assert (st.agent, st.environment, st.issued_at, st.expires_at) == (
        "exec-agent",
        "prod",
        NOW,
        NOW + 300,
    )
    assert st.model_digest.value == PROV.model_digest.value
    assert st.prompt_digest.value == PROV.prompt_digest.value and st.config_digest is None
    # one value per statement: the signed bytes (not the malleable signature)
    assert st.statement_sha256 == hashlib.sha256(report_of(evidence)[:0x2A0]).digest()
    # the policy accepts it for the CSR's key and provenance
    assert attestation_reasons(REG, EnrollmentClaim(key, PROV, attestation=st)) == []


def test_versions_3_to_5_and_padding_blanks_are_accepted(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    for version in (3, 4, 5):
        _, evidence = make(chip, version=version)
        assert attestor.verify(b"  " + evidence + b"\n", "prod", NOW).method == METHOD_SNP


def test_a_malleated_signature_is_the_same_statement(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    _, evidence = make(chip)
    raw = bytearray(report_of(evidence))
    n = int(  # the order of P-384
        "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
        16,
    )
    s = int.from_bytes(raw[0x2E8:0x330], "little")
    raw[0x2E8:0x330] = (n - s).to_bytes(72, "little")
    twin = with_report(evidence, bytes(raw))
    assert attestor.verify(twin, "prod", NOW).statement_sha256 == (
        attestor.verify(evidence, "prod", NOW).statement_sha256
    )


def test_the_key_hash_in_report_data_is_compared_with_the_csr(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    _, evidence = make(chip)  # REPORT_DATA carries another key's hash than the CSR's
    st = attestor.verify(evidence, "prod", NOW)
    csr_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    reasons = attestation_reasons(REG, EnrollmentClaim(csr_key, PROV, attestation=st))
    assert [r.split(":")[0] for r in reasons] == ["attestation-key-mismatch"]
    other = Provenance("claude-x", Digest.sha256_hex(MODEL), Digest.sha256_hex("ee" * 32))
    claims = double.claims_bytes("exec-agent", "prod", other, now=NOW)
    key, evidence = make(chip, claims=claims)
    st = attestor.verify(evidence, "prod", NOW)
    reasons = attestation_reasons(REG, EnrollmentClaim(key, PROV, attestation=st))
    assert reasons == ["attestation-mismatch: the CSR's prompt digest differ from the attested"]


# ---------------------------------------------------------------------------------- refusals


def test_a_vcek_of_another_ask_is_an_unknown_key(attestor: AttestorSet) -> None:
    stranger = double.Chip(double.roots("Milan"))
    assert refused(attestor, make(stranger)[1]).reason == "attestation-unknown-key"


def test_a_vcek_signed_by_another_key_under_the_asks_name(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    forged = double.Chip(double.roots())
    forged.vcek = forged.issue_vcek(signer=double.roots("Milan").ask_key)
    assert refused(attestor, make(forged)[1]).reason == "attestation-unknown-key"


def test_an_expired_or_not_yet_valid_vcek_is_refused(attestor: AttestorSet) -> None:
    old = double.Chip(double.roots(), vcek_days=(-400, -1))
    err = refused(attestor, make(old)[1])
    assert err.reason == "attestation-chain" and "VCEK expired" in err.detail
    future = double.Chip(double.roots(), vcek_days=(2, 30))
    err = refused(attestor, make(future)[1])
    assert err.reason == "attestation-chain" and "VCEK is not valid before" in err.detail


def test_a_report_signed_by_another_key_is_refused(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    _, evidence = make(chip, sign_with=ec.generate_private_key(ec.SECP384R1()))
    assert refused(attestor, evidence).reason == "attestation-signature"


@pytest.mark.parametrize("offset", [0x010, 0x050, 0x070, 0x090, 0x0C0, 0x0E0, 0x140, 0x29F])
def test_a_flipped_byte_in_the_signed_area_is_refused(
    attestor: AttestorSet, chip: double.Chip, offset: int
) -> None:
    _, evidence = make(chip)
    raw = bytearray(report_of(evidence))
    raw[offset] ^= 0x01
    assert refused(attestor, with_report(evidence, bytes(raw))).reason == "attestation-signature"


def test_signature_bytes_and_reserved_bytes_are_checked(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    _, evidence = make(chip)
    for offset in (0x2A0, 0x2E8, 0x330, 0x49F):  # R, S, then the reserved tail
        raw = bytearray(report_of(evidence))
        raw[offset] ^= 0x80
        assert refused(attestor, with_report(evidence, bytes(raw))).reason == (
            "attestation-signature"
        ), hex(offset)


def test_a_debug_guest_is_refused(attestor: AttestorSet, chip: double.Chip) -> None:
    _, evidence = make(chip, policy=double.DEFAULT_POLICY | (1 << 19))
    err = refused(attestor, evidence)
    assert err.reason == "attestation-debug-guest" and "bit 19" in err.detail


def test_a_migration_agent_is_refused_unless_allowed(
    attestor: AttestorSet, chip: double.Chip, tmp_path: Path
) -> None:
    key, evidence = make(chip, policy=double.DEFAULT_POLICY | (1 << 18))
    assert refused(attestor, evidence).reason == "attestation-policy"
    allowed = load_attestors(
        double.write_snp_toml(
            tmp_path / "a.toml",
            double.roots(),
            {"prod": [double.MEASUREMENT]},
            extra="allow_migration_agent = true\n",
        )
    )
    assert allowed.verify(evidence, "prod", NOW).spki_sha256 == double.spki_sha256(key)


def test_a_measurement_not_allowed_for_the_environment(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    _, evidence = make(chip, measurement=bytes(48))
    assert refused(attestor, evidence).reason == "attestation-measurement"
    # allowed in staging only: refused for prod, and prod's for staging
    _, staging = make(chip, measurement=OTHER_MEASUREMENT)
    assert refused(attestor, staging, "prod").reason == "attestation-measurement"
    assert refused(attestor, make(chip)[1], "staging").reason == "attestation-measurement"


def test_an_environment_without_an_entry_is_foreign(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    assert refused(attestor, make(chip)[1], "dev").reason == "attestation-foreign-key"


def test_vmpl_above_the_maximum(attestor: AttestorSet, chip: double.Chip, tmp_path: Path) -> None:
    _, evidence = make(chip, vmpl=1)
    err = refused(attestor, evidence)
    assert err.reason == "attestation-vmpl" and "VMPL 1" in err.detail
    looser = load_attestors(
        double.write_snp_toml(
            tmp_path / "v.toml",
            double.roots(),
            {"prod": [double.MEASUREMENT]},
            extra="max_vmpl = 1\n",
        )
    )
    assert looser.verify(evidence, "prod", NOW).method == METHOD_SNP
    assert refused(looser, make(chip, vmpl=2)[1]).reason == "attestation-vmpl"


def test_reported_tcb_below_the_minimum_or_unlike_the_vceks(attestor: AttestorSet) -> None:
    old = double.Chip(double.roots(), tcb={"bootloader": 9, "tee": 0, "snp": 19, "microcode": 72})
    err = refused(attestor, make(old)[1])
    assert err.reason == "attestation-tcb" and "snp 19 < 20" in err.detail
    lying = double.Chip(double.roots())
    lying.vcek = lying.issue_vcek(tcb={"bootloader": 9, "tee": 0, "snp": 25, "microcode": 72})
    err = refused(attestor, make(lying)[1])
    assert err.reason == "attestation-tcb" and "REPORTED_TCB" in err.detail


def test_the_turin_tcb_layout(attestor: AttestorSet, tmp_path: Path) -> None:
    turin = double.Chip(
        double.roots(), tcb={"fmc": 1, "bootloader": 2, "tee": 3, "snp": 21, "microcode": 71}
    )
    key, evidence = make(turin, version=3)  # CPUID family 0x1A: FMC first, SNP at byte 3
    assert attestor.verify(evidence, "prod", NOW).spki_sha256 == double.spki_sha256(key)
    # read in the Milan/Genoa layout (version 2: no CPUID byte) the levels are not the VCEK's
    assert refused(attestor, make(turin, version=2)[1]).reason == "attestation-tcb"
    strict = load_attestors(
        double.write_snp_toml(
            tmp_path / "t.toml",
            double.roots(),
            {"prod": [double.MEASUREMENT]},
            extra="min_tcb = { fmc = 2 }\n",
        )
    )
    err = refused(strict, evidence)
    assert err.reason == "attestation-tcb" and "fmc 1 < 2" in err.detail
    # a minimum FMC level refuses a Milan/Genoa report, which has none
    assert refused(strict, make(double.Chip(double.roots()))[1]).reason == "attestation-tcb"


def test_a_vcek_of_another_chip(attestor: AttestorSet, chip: double.Chip) -> None:
    _, evidence = make(chip, chip_id=bytes(range(64)))
    err = refused(attestor, evidence)
    assert err.reason == "attestation-chain" and "CHIP_ID" in err.detail


def test_the_signature_algorithm_and_signing_key_are_checked(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    assert refused(attestor, make(chip, signature_algo=2)[1]).reason == "attestation-algorithm"
    vlek = make(chip, flags=1 << 2)[1]  # SIGNING_KEY = 1: a VLEK, not supported
    assert refused(attestor, vlek).reason == "attestation-algorithm"
    masked = make(chip, flags=1 << 1)[1]  # MASK_CHIP_KEY
    assert refused(attestor, masked).reason == "attestation-algorithm"


@pytest.mark.parametrize("version", [0, 1, 6, 2**32 - 1])
def test_unknown_report_versions(attestor: AttestorSet, chip: double.Chip, version: int) -> None:
    err = refused(attestor, make(chip, version=version)[1])
    assert err.reason == "attestation-malformed" and "version" in err.detail


def test_claims_not_committed_by_report_data(attestor: AttestorSet, chip: double.Chip) -> None:
    _, evidence = make(chip)
    doc = parts(evidence)
    other = double.claims_bytes("exec-agent", "prod", PROV, now=NOW)
    doc["claims"] = base64.urlsafe_b64encode(other).rstrip(b"=").decode()
    err = refused(attestor, json.dumps(doc).encode())
    assert err.reason == "attestation-report-data"


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (NOW - 31, "attestation-not-yet-valid"),
        (NOW - 30, None),
        (NOW + 300 + 29, None),
        (NOW + 300 + 30, "attestation-expired"),
    ],
)
def test_claims_freshness_with_skew(
    attestor: AttestorSet, chip: double.Chip, now: int, reason: str | None
) -> None:
    _, evidence = make(chip)
    if reason is None:
        assert attestor.verify(evidence, "prod", now).issued_at == NOW
    else:
        assert refused(attestor, evidence, now=now).reason == reason


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"lifetime": 901}, "attestation-lifetime"),
        ({"exp": NOW}, "attestation-malformed"),
        ({"iat": "now"}, "attestation-malformed"),
        ({"sub": ...}, "attestation-malformed"),
        ({"extra": 1}, "attestation-malformed"),
        ({"model": {"digest": "sha256:" + MODEL}}, "attestation-malformed"),
        ({"model": {"digest": "sha256:" + MODEL, "scheme": "no-such"}}, "attestation-malformed"),
        ({"prompt": "md5:00"}, "attestation-malformed"),
        ({"config": 7}, "attestation-malformed"),
    ],
)
def test_bad_claims(
    attestor: AttestorSet, chip: double.Chip, override: dict[str, Any], reason: str
) -> None:
    lifetime = override.pop("lifetime", 300)
    claims = double.claims_bytes("exec-agent", "prod", PROV, now=NOW, lifetime=lifetime, **override)
    assert refused(attestor, make(chip, claims=claims)[1]).reason == reason


def test_claims_that_are_not_json(attestor: AttestorSet, chip: double.Chip) -> None:
    for claims in (b"", b"[]", b"{", b'{"sub":"a","sub":"b"}', b"\xff\xfe"):
        assert refused(attestor, make(chip, claims=claims)[1]).reason == "attestation-malformed"


def test_envelope_shape(attestor: AttestorSet, chip: double.Chip) -> None:
    _, good = make(chip)
    doc = parts(good)
    cases: list[bytes] = [
        b"{",
        b"{}",
        b'{"type": "agentca-sev-snp-v2"}',
        json.dumps({**doc, "type": "agentca-tdx-v1"}).encode(),
        json.dumps({**doc, "extra": 1}).encode(),
        json.dumps({k: v for k, v in doc.items() if k != "vcek"}).encode(),
        json.dumps({**doc, "report": doc["report"][:-8]}).encode(),
        json.dumps({**doc, "report": "!" + doc["report"][1:]}).encode(),
        json.dumps({**doc, "report": 7}).encode(),
        json.dumps({**doc, "vcek": base64.b64encode(b"not a certificate").decode()}).encode(),
        json.dumps({**doc, "claims": "***"}).encode(),
        good[:-1] + b',"type":"agentca-sev-snp-v1"}',  # a repeated member
        '{"type": "agentca-sev-snp-v1", "x": "\u00e9"}'.encode(),
        b'{"type":' + b"[" * 10_000,
        b"{" + b"[" * 100_000,
    ]
    for case in cases:
        err = refused(attestor, case)
        assert err.reason in {"attestation-malformed", "attestation-too-large"}, (case[:60], err)


def test_oversize_evidence_is_refused_before_parsing(attestor: AttestorSet) -> None:
    huge = b'{"type":"agentca-sev-snp-v1","pad":"' + b"A" * MAX_SNP_EVIDENCE_BYTES + b'"}'
    assert refused(attestor, huge).reason == "attestation-too-large"


# --------------------------------------------------------------------- multiplexing and config


def test_the_set_routes_jws_and_snp(tmp_path: Path, chip: double.Chip) -> None:
    orch = Orchestrator("orchestrator.prod", "orch-1")
    jws_file = write_attestors(tmp_path / "jws", [(orch, ["prod"])])
    snp_file = double.write_snp_toml(
        tmp_path / "snp.toml", double.roots(), {"prod": [double.MEASUREMENT]}
    )
    both = tmp_path / "both.toml"
    both.write_text(jws_file.read_text() + "\n" + snp_file.read_text())
    loaded = load_attestors(both)
    assert isinstance(loaded, AttestorSet) and isinstance(loaded.snp, SnpAttestor)
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    token = orch.attest("exec-agent", "prod", key, PROV).encode()
    assert loaded.verify(token, "prod", int(time.time())).method == "orchestrator-jws-v1"
    assert loaded.verify(make(chip, key)[1], "prod", NOW).method == "sev-snp-v1"
    # each kind needs its own configuration
    jws_only = load_attestors(jws_file)
    assert isinstance(jws_only, JwsAttestor)
    assert refused(jws_only, make(chip)[1]).reason == "attestation-malformed"
    snp_only = load_attestors(snp_file)
    assert refused(snp_only, token).reason == "attestation-unconfigured"
    assert refused(AttestorSet(JwsAttestor([])), make(chip)[1]).reason == (
        "attestation-unconfigured"
    )


def test_the_real_amd_milan_roots_load() -> None:
    ark = x509.load_pem_x509_certificate((DATA / "ark-milan.pem").read_bytes())
    ask = x509.load_pem_x509_certificate((DATA / "ask-milan.pem").read_bytes())
    check_roots(ark, ask, "milan")  # AMD's own RSASSA-PSS SHA-384 signatures verify
    with pytest.raises(CAError, match="did not sign the ASK"):
        check_roots(ark, double.roots().ask, "mixed")


def _config_error(tmp_path: Path, text: str) -> CAError:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(CAError) as info:
        load_attestors(path)
    assert info.value.code is ErrorCode.CONFIG
    assert "\n" not in str(info.value)
    return info.value


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    good = double.write_snp_toml(
        tmp_path / "g.toml", double.roots(), {"prod": [double.MEASUREMENT]}
    )
    text = good.read_text()
    ark = tmp_path / "snp-genoa-roots" / "ark.pem"
    m = double.MEASUREMENT.hex()
    small_key = rsa.generate_private_key(65537, 2048)
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    small = double._cert(
        "ARK-x",
        "ARK-x",
        small_key.public_key(),
        small_key,
        start,
        dt.datetime(2040, 1, 1, tzinfo=dt.UTC),
    )
    (tmp_path / "small.pem").write_bytes(small.public_bytes(serialization.Encoding.PEM))
    assert "RSA-4096" in str(
        _config_error(tmp_path, text.replace(str(ark), str(tmp_path / "small.pem")))
    )
    assert "did not sign" in str(
        _config_error(tmp_path, text.replace(str(ark), str(DATA / "ark-milan.pem")))
    )
    assert "launch digests" in str(_config_error(tmp_path, text.replace(m, m[:-2])))
    assert "launch digests" in str(_config_error(tmp_path, text.replace(f"'{m}'", "")))
    assert "sev_snp keys" in str(_config_error(tmp_path, text + "secret = 1\n"))
    assert "max_vmpl" in str(_config_error(tmp_path, text + "max_vmpl = 4\n"))
    assert "min_tcb" in str(_config_error(tmp_path, text + "min_tcb = { snp = 256 }\n"))
    assert "min_tcb" in str(_config_error(tmp_path, text + "min_tcb = { spl_5 = 1 }\n"))
    assert "boolean" in str(_config_error(tmp_path, text + 'allow_migration_agent = "yes"\n'))
    assert "repeated" in str(_config_error(tmp_path, text + "\n" + text))
    assert "only [[attestor]] and [[sev_snp]]" in str(_config_error(tmp_path, "sev_snp = 1\n"))
    assert "cannot read a PEM" in str(
        _config_error(tmp_path, text.replace(str(ark), str(tmp_path / "absent.pem")))
    )


# ------------------------------------------------------------------------------------- fuzz


def test_fuzzed_evidence_raises_only_attestation_error(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    rng = random.Random(0x5EF)
    _, good = make(chip)
    doc = parts(good)
    report = report_of(good)
    vcek = base64.b64decode(doc["vcek"])
    claims = double.claims_bytes("exec-agent", "prod", PROV, now=NOW)
    cases: list[bytes] = [rng.randbytes(rng.randrange(0, 600)) for _ in range(150)]
    cases += [b"{" + rng.randbytes(rng.randrange(0, 300)) for _ in range(100)]
    cases += [good[: rng.randrange(len(good))] for _ in range(100)]
    for _ in range(250):
        mutated = bytearray(good)
        for _ in range(rng.randrange(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        cases.append(bytes(mutated))
    for _ in range(250):  # valid JSON, mutated binary parts (report, VCEK DER, claims)
        r, v, c = bytearray(report), bytearray(vcek), bytearray(claims)
        target = rng.choice([r, v, c])
        for _ in range(rng.randrange(1, 4)):
            target[rng.randrange(len(target))] = rng.randrange(256)
        if rng.random() < 0.2:
            del target[rng.randrange(len(target)) :]
        cases.append(envelope(bytes(r), bytes(v), bytes(c)))
    passed = 0
    for case in cases:
        try:
            attestor.verify(case, "prod", NOW)
            passed += 1
        except AttestationError as exc:
            assert exc.reason.startswith("attestation-"), exc
    # a mutation that lands on nothing checked may pass, but almost all must be refused
    assert passed < len(cases) // 20
