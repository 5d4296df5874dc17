"""Review of the SEV-SNP attestor (branch snp): an adversary who controls the agent host but
not AMD's keys nor the CA. The reports and VCEKs come from the test double of the AMD firmware
(``tests/support/snp_double.py``); the verifier is the production code."""

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
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from ca.attestation import AttestationError, AttestorSet, load_attestors
from ca.attestation_snp import HWID_OID, SnpAttestor, envelope
from ca.errors import CAError
from ca.extensions import Digest, Provenance
from ca.policy import EnrollmentClaim, attestation_reasons
from tests.support import snp_double as double
from tests.unit.helpers import MODEL, PROMPT
from tests.unit.test_attestation import REG

NOW = int(time.time())
PROV = Provenance("claude-x", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT))
SHA384 = hashes.SHA384()
#: the order of P-384
N = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)


@pytest.fixture(scope="module")
def chip() -> double.Chip:
    return double.Chip(double.roots())


@pytest.fixture(scope="module")
def attestor(tmp_path_factory: pytest.TempPathFactory) -> AttestorSet:
    path = tmp_path_factory.mktemp("revsnp") / "attestors.toml"
    loaded = load_attestors(
        double.write_snp_toml(path, double.roots(), {"prod": [double.MEASUREMENT]})
    )
    assert isinstance(loaded, AttestorSet)
    return loaded


def claims(**override: Any) -> bytes:
    return double.claims_bytes("exec-agent", "prod", PROV, now=NOW, **override)


def make(
    chip: double.Chip, key: Any = None, body: bytes | None = None, **report: Any
) -> tuple[Any, bytes]:
    key = key or ec.generate_private_key(ec.SECP256R1()).public_key()
    return key, double.evidence(chip, key, claims() if body is None else body, **report)


def refused(attestor: Any, evidence: bytes, env: str = "prod") -> AttestationError:
    with pytest.raises(AttestationError) as info:
        attestor.verify(evidence, env, NOW)
    return info.value


def report_of(evidence: bytes) -> bytes:
    return base64.b64decode(json.loads(evidence)["report"])


def with_report(evidence: bytes, raw: bytes) -> bytes:
    doc = json.loads(evidence)
    doc["report"] = base64.b64encode(raw).decode()
    return json.dumps(doc).encode()


# ---------------------------------------------------------------------------- claims bytes


def test_claims_that_are_not_utf8_json_are_refused(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    """RFC 8259 8.1: JSON between systems is UTF-8 without a BOM; the claims bytes are what
    REPORT_DATA commits to, so another encoding of them is another document to a second reader
    (an auditor re-reading the claims as UTF-8 sees no JSON at all)."""
    text = claims().decode()
    for body in (text.encode("utf-16"), text.encode("utf-32-le"), b"\xef\xbb\xbf" + text.encode()):
        assert refused(attestor, make(chip, body=body)[1]).reason == "attestation-malformed"
    # the envelope too: ASCII with NUL bytes is UTF-16-LE to json.loads(bytes)
    _, good = make(chip)
    utf16 = good.decode().encode("utf-16-le")
    assert refused(attestor, utf16).reason == "attestation-malformed"


def test_claims_with_another_agent_or_environment_are_refused_by_the_policy(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    for agent, env, word in (
        ("other-agent", "prod", "agent"),
        ("exec-agent", "staging", "environment"),
    ):
        body = double.claims_bytes(agent, env, PROV, now=NOW)
        key, evidence = make(chip, body=body)
        st = attestor.verify(evidence, "prod", NOW)  # the measurement list is the registration's
        reasons = attestation_reasons(REG, EnrollmentClaim(key, PROV, attestation=st))
        assert len(reasons) == 1 and reasons[0].startswith("attestation-mismatch"), reasons
        assert word in reasons[0]


def test_claims_far_in_the_future_or_unbounded_are_refused(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    far = claims(iat=NOW + 10**6, exp=NOW + 10**6 + 60)
    assert refused(attestor, make(chip, body=far)[1]).reason == "attestation-not-yet-valid"
    unbounded = claims(exp=2**40 - 1)
    assert refused(attestor, make(chip, body=unbounded)[1]).reason == "attestation-lifetime"
    assert (
        refused(attestor, make(chip, body=claims(exp=2**40))[1]).reason == "attestation-malformed"
    )


# ------------------------------------------------------------------------------- the report


def test_a_host_requested_report_vmpl_is_refused(attestor: AttestorSet, chip: double.Chip) -> None:
    """The hypervisor can ask the firmware for a report with its own REPORT_DATA
    (SNP_HV_REPORT_REQ, ABI 1.56); such reports carry VMPL 0xFFFFFFFF."""
    for vmpl in (0xFFFFFFFF, 0x80000000, 4):
        assert refused(attestor, make(chip, vmpl=vmpl)[1]).reason == "attestation-vmpl", vmpl


def test_signature_scalars_out_of_range_or_misencoded(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    _, evidence = make(chip)
    good = report_of(evidence)
    r = int.from_bytes(good[0x2A0:0x2E8], "little")
    s = int.from_bytes(good[0x2E8:0x330], "little")
    variants = {
        "r + n": (r + N, s),
        "s + n": (r, s + N),
        "r zero": (0, s),
        "s zero": (r, 0),
        "both zero": (0, 0),
        "r = n": (N, s),
        "padding byte": (r | (1 << 8 * 60), s),
    }
    for name, (vr, vs) in variants.items():
        raw = bytearray(good)
        raw[0x2A0:0x2E8] = vr.to_bytes(72, "little")
        raw[0x2E8:0x330] = vs.to_bytes(72, "little")
        assert (
            refused(attestor, with_report(evidence, bytes(raw))).reason == "attestation-signature"
        ), name
    # big-endian R and S (a wrong reading of the ABI) do not verify
    raw = bytearray(good)
    raw[0x2A0:0x2E8] = bytes(24) + r.to_bytes(48, "big")
    raw[0x2E8:0x330] = bytes(24) + s.to_bytes(48, "big")
    assert refused(attestor, with_report(evidence, bytes(raw))).reason == "attestation-signature"


def test_report_data_halves_swapped_or_another_key(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    body = claims()
    swapped = hashlib.sha256(body).digest() + double.spki_sha256(key)
    evidence = envelope(chip.report(swapped), chip.vcek_der, body)
    assert refused(attestor, evidence).reason == "attestation-report-data"
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    st = attestor.verify(double.evidence(chip, other, body), "prod", NOW)
    reasons = attestation_reasons(REG, EnrollmentClaim(key, PROV, attestation=st))
    assert [x.split(":")[0] for x in reasons] == ["attestation-key-mismatch"]


# ---------------------------------------------------------------------------- the VCEK chain


def test_genoa_chain_when_milan_is_pinned(tmp_path: Path) -> None:
    milan = double.roots("Milan")
    pinned = load_attestors(
        double.write_snp_toml(tmp_path / "m.toml", milan, {"prod": [double.MEASUREMENT]})
    )
    genoa_chip = double.Chip(double.roots("Genoa"))
    assert refused(pinned, make(genoa_chip)[1]).reason == "attestation-unknown-key"
    # a VCEK signed by an attacker's self-made "ASK" of the same name
    fake = double.make_roots("Milan")
    forged = double.Chip(milan)
    forged.vcek = forged.issue_vcek(signer=fake.ask_key)
    assert refused(pinned, make(forged)[1]).reason == "attestation-unknown-key"
    # an ASK not signed by the configured ARK (self-signed) is a configuration error
    _, self_ask = fake.write(tmp_path / "fake")
    text = (tmp_path / "m.toml").read_text()
    ask_path = next(p for p in (tmp_path / "snp-genoa-roots").iterdir() if p.name == "ask.pem")
    (tmp_path / "bad.toml").write_text(text.replace(str(ask_path), str(self_ask)))
    with pytest.raises(CAError, match="did not sign the ASK"):
        load_attestors(tmp_path / "bad.toml")


def _vcek_with(
    chip: double.Chip,
    extensions: list[x509.ExtensionType],
    signer: Any = None,
    algorithm: Any = SHA384,
    rsa_padding: Any = double.PSS,
) -> bytes:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SEV-VCEK")]))
        .issuer_name(chip.roots.ask.subject)
        .public_key(chip.vcek_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
    )
    for ext in extensions:
        builder = builder.add_extension(ext, False)
    signer = signer or chip.roots.ask_key
    if isinstance(signer, rsa.RSAPrivateKey):
        cert = builder.sign(signer, algorithm, rsa_padding=rsa_padding)
    else:
        cert = builder.sign(signer, algorithm)
    return cert.public_bytes(serialization.Encoding.DER)


def _spl(chip: double.Chip, skip: str = "", **raw: bytes) -> list[x509.ExtensionType]:
    out: list[x509.ExtensionType] = []
    for part, level in chip.tcb.items():
        if part == skip:
            continue
        oid = x509.ObjectIdentifier(f"1.3.6.1.4.1.3704.1.{double.SPL[part]}")
        out.append(x509.UnrecognizedExtension(oid, raw.get(part, double._der_int(level))))
    return out


def test_vcek_extensions_missing_misencoded_or_unlike_the_report(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    body = claims()
    report = chip.report(double.spki_sha256(key) + hashlib.sha256(body).digest())
    hwid = x509.UnrecognizedExtension(HWID_OID, chip.chip_id)
    cases = {
        "no hwID": _spl(chip),
        "short hwID": [x509.UnrecognizedExtension(HWID_OID, chip.chip_id[:63]), *_spl(chip)],
        "8-byte hwID": [x509.UnrecognizedExtension(HWID_OID, chip.chip_id[:8]), *_spl(chip)],
        "hwID other chip": [x509.UnrecognizedExtension(HWID_OID, bytes(64)), *_spl(chip)],
        "no snp SPL": [hwid, *_spl(chip, skip="snp")],
        "non-minimal SPL": [hwid, *_spl(chip, snp=b"\x02\x02\x00\x17")],
        "negative SPL": [hwid, *_spl(chip, snp=b"\x02\x01\xe9")],
        "SPL as OCTET STRING": [hwid, *_spl(chip, snp=b"\x04\x01\x17")],
        "SPL 256": [hwid, *_spl(chip, snp=b"\x02\x02\x01\x17")],
        "extra fmc SPL": [
            hwid,
            *_spl(chip),
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.9"), b"\x02\x01\x00"
            ),
        ],
    }
    for name, exts in cases.items():
        err = refused(attestor, envelope(report, _vcek_with(chip, exts), body))
        assert err.reason in {"attestation-chain", "attestation-tcb"}, (name, err)
    # the DER-wrapped hwID AMD does not use is tolerated, and still compared
    wrapped = x509.UnrecognizedExtension(HWID_OID, b"\x04\x40" + chip.chip_id)
    assert attestor.verify(
        envelope(report, _vcek_with(chip, [wrapped, *_spl(chip)]), body), "prod", NOW
    )


def test_vcek_with_a_duplicated_hwid_extension(attestor: AttestorSet, chip: double.Chip) -> None:
    from asn1crypto import x509 as ax509

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    body = claims()
    report = chip.report(double.spki_sha256(key) + hashlib.sha256(body).digest())
    decoy = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.5")  # same encoded length as hwID's OID
    der = _vcek_with(
        chip,
        [
            x509.UnrecognizedExtension(HWID_OID, chip.chip_id),
            x509.UnrecognizedExtension(decoy, bytes(64)),
            *_spl(chip),
        ],
    )
    cert = ax509.Certificate.load(der)
    # rewrite the decoy's OID as hwID's and re-sign with the ASK (AMD would never, but the
    # parser must refuse rather than pick one)
    tbs = cert["tbs_certificate"]
    for ext in tbs["extensions"]:
        if ext["extn_id"].dotted == decoy.dotted_string:
            ext["extn_id"] = HWID_OID.dotted_string
    tbs_der = tbs.dump(force=True)
    signature = chip.roots.ask_key.sign(tbs_der, double.PSS, hashes.SHA384())
    cert["tbs_certificate"] = ax509.TbsCertificate.load(tbs_der)
    cert["signature_value"] = signature
    forged = cert.dump(force=True)
    err = refused(attestor, envelope(report, forged, body))
    assert err.reason == "attestation-chain", err


def test_vceks_signed_with_other_algorithms_raise_only_attestation_error(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    body = claims()
    report = chip.report(double.spki_sha256(key) + hashlib.sha256(body).digest())
    exts = [x509.UnrecognizedExtension(HWID_OID, chip.chip_id), *_spl(chip)]
    ask = chip.roots.ask_key
    variants = [
        _vcek_with(chip, exts, ask, hashes.SHA384(), padding.PKCS1v15()),
        _vcek_with(
            chip, exts, ask, hashes.SHA256(), padding.PSS(padding.MGF1(hashes.SHA256()), 48)
        ),
        _vcek_with(
            chip, exts, ask, hashes.SHA384(), padding.PSS(padding.MGF1(hashes.SHA256()), 48)
        ),
        _vcek_with(
            chip, exts, ask, hashes.SHA384(), padding.PSS(padding.MGF1(hashes.SHA384()), 32)
        ),
        _vcek_with(chip, exts, ec.generate_private_key(ec.SECP384R1()), hashes.SHA384()),
        _vcek_with(chip, exts, ed25519.Ed25519PrivateKey.generate(), None),
    ]
    for i, der in enumerate(variants):
        try:
            attestor.verify(envelope(report, der, body), "prod", NOW)
        except AttestationError as exc:
            err = exc
        else:
            raise AssertionError(f"variant {i} accepted")
        assert err.reason in {"attestation-chain", "attestation-unknown-key"}, (i, err)
    # the same key and extensions signed as AMD signs: accepted (the variants differ only there)
    assert attestor.verify(envelope(report, _vcek_with(chip, exts), body), "prod", NOW)


# ------------------------------------------------------------------------------ routing


def test_routing_edge_cases_raise_only_attestation_error(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    _, good = make(chip)
    cases = [
        b"\xef\xbb\xbf" + good,  # a BOM: not a JSON object to the router, then not a JWS
        b"\x0b" + good,  # vertical tab: stripped by the router, not by JSON
        b"\x1c" + good,  # a str.strip() blank, not a bytes.lstrip() one
        good + b".e30.e30",
        b"e30." + good + b".e30",
        b"{}.e30.e30",
        b"[" + good + b"]",
        good.replace(b'"type"', b'"typ\\u0065"'),  # an escaped member name is the same member
    ]
    for case in cases[:-1]:
        with pytest.raises(AttestationError):
            attestor.verify(case, "prod", NOW)
    assert attestor.verify(cases[-1], "prod", NOW).method == "sev-snp-v1"


# ---------------------------------------------------------------------- statement identity


def test_one_report_is_one_statement_whatever_the_envelope(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    key, evidence = make(chip)
    doc = json.loads(evidence)
    report = report_of(evidence)
    reissued = chip.issue_vcek().public_bytes(serialization.Encoding.DER)  # another VCEK copy
    twins = [
        evidence,
        json.dumps(dict(reversed(list(doc.items())))).encode(),
        json.dumps(doc, indent=2).encode(),
        b"  \n" + evidence + b"\r\n",
        envelope(report, reissued, base64.urlsafe_b64decode(doc["claims"] + "==")),
        evidence.replace(b'"type"', b'"\\u0074ype"'),
    ]
    digests = {attestor.verify(t, "prod", NOW).statement_sha256 for t in twins}
    assert digests == {hashlib.sha256(report[:0x2A0]).digest()}
    # a report differing in anything signed is another statement
    others = {
        attestor.verify(make(chip, key)[1], "prod", NOW).statement_sha256,  # another jti
        attestor.verify(make(chip, key, body=claims(jti="x"))[1], "prod", NOW).statement_sha256,
    }
    assert not others & digests and len(others) == 2


def test_an_environment_with_an_empty_measurement_list_is_a_config_error(tmp_path: Path) -> None:
    path = double.write_snp_toml(
        tmp_path / "e.toml", double.roots(), {"prod": [double.MEASUREMENT]}
    )
    text = path.read_text().replace(f"['{double.MEASUREMENT.hex()}']", "[]")
    path.write_text(text)
    with pytest.raises(CAError, match="launch digests"):
        load_attestors(path)


def test_measurement_allow_list_case_and_length(tmp_path: Path, chip: double.Chip) -> None:
    upper = double.MEASUREMENT.hex().upper()
    path = double.write_snp_toml(
        tmp_path / "u.toml", double.roots(), {"prod": [double.MEASUREMENT]}
    )
    path.write_text(path.read_text().replace(double.MEASUREMENT.hex(), upper))
    loaded = load_attestors(path)
    assert loaded.verify(make(chip)[1], "prod", NOW).method == "sev-snp-v1"
    for bad in ("0x" + upper[2:], upper + "0", upper[:-1], " " + upper[1:]):
        path.write_text(path.read_text().replace(upper, bad))
        with pytest.raises(CAError):
            load_attestors(path)
        path.write_text(path.read_text().replace(bad, upper))
    # a report whose measurement differs in its last byte only is refused
    near = double.MEASUREMENT[:-1] + bytes([double.MEASUREMENT[-1] ^ 1])
    assert refused(loaded, make(chip, measurement=near)[1]).reason == "attestation-measurement"


def test_two_entries_of_one_product_for_one_environment(tmp_path: Path, chip: double.Chip) -> None:
    """Two [[sev_snp]] entries with the same ASK for the same environment (e.g. two image
    lines): each entry whose ASK issued the VCEK is tried, so a measurement listed only in the
    second entry is admitted by that entry (it was refused, the first entry deciding alone)."""
    other = bytes.fromhex("55" * 48)
    a = double.write_snp_toml(tmp_path / "a.toml", double.roots(), {"prod": [other]}, entry_id="a")
    b = double.write_snp_toml(
        tmp_path / "b.toml", double.roots(), {"prod": [double.MEASUREMENT]}, entry_id="b"
    )
    both = tmp_path / "both.toml"
    both.write_text(a.read_text() + "\n" + b.read_text())
    loaded = load_attestors(both)
    assert isinstance(loaded, AttestorSet) and isinstance(loaded.snp, SnpAttestor)
    assert loaded.verify(make(chip)[1], "prod", NOW).key_id == "b"


def test_claims_of_every_json_type_raise_only_attestation_error(
    attestor: AttestorSet, chip: double.Chip
) -> None:
    rng = random.Random(0x5A5)
    values: list[Any] = [
        None,
        True,
        0,
        -1,
        2**40,
        2**64,
        1.5,
        float("nan"),
        "",
        "x" * 200,
        "\u202e",
        "\ud800",
        [],
        [1],
        {},
        {"digest": None, "scheme": []},
        {"digest": "sha256:" + MODEL, "scheme": {}},
    ]
    base = json.loads(claims())
    passed = 0
    for _ in range(150):
        doc = dict(base)
        for name in rng.sample(sorted(base), rng.randrange(1, 3)):
            doc[name] = rng.choice(values)
        body = json.dumps(doc).encode()
        try:
            attestor.verify(make(chip, body=body)[1], "prod", NOW)
            passed += 1
        except AttestationError as exc:
            assert exc.reason.startswith("attestation-")
    assert passed < 10


def test_odd_configurations_are_one_line_config_errors(tmp_path: Path) -> None:
    good = double.write_snp_toml(
        tmp_path / "g.toml", double.roots(), {"prod": [double.MEASUREMENT]}
    )
    text = good.read_text()
    ark = str(tmp_path / "snp-genoa-roots" / "ark.pem")
    ec_key = ec.generate_private_key(ec.SECP384R1())
    ec_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ARK-x")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ARK-x")]))
        .public_key(ec_key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
        .sign(ec_key, hashes.SHA384())
    )
    (tmp_path / "ec.pem").write_bytes(ec_cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "der.pem").write_bytes(double.roots().ark.public_bytes(serialization.Encoding.DER))
    (tmp_path / "dir.pem").mkdir()
    cases = [
        "sev_snp = [1]\n",
        "[[sev_snp]]\n",
        text.replace(ark, str(tmp_path / "ec.pem")),
        text.replace(ark, str(tmp_path / "der.pem")),
        text.replace(ark, str(tmp_path / "dir.pem")),
        text.replace(f"'{double.MEASUREMENT.hex()}'", "1"),
        text.replace(f"['{double.MEASUREMENT.hex()}']", f"'{double.MEASUREMENT.hex()}'"),
        text + "max_vmpl = true\n",
        text + "max_vmpl = -1\n",
        text + "min_tcb = { snp = true }\n",
        text + "min_tcb = []\n",
        text + "clock_skew_seconds = 301\n",
        text + "max_lifetime_seconds = 0\n",
        text.replace('id = "snp-genoa"', 'id = ""'),
        text.replace('attestor = "amd-sev-snp"', 'attestor = "a b"'),
        text.replace("measurements = {", "measurements = 1 #"),
        "\xff",
    ]
    for i, case in enumerate(cases):
        path = tmp_path / f"c{i}.toml"
        path.write_bytes(case.encode("latin-1") if case == "\xff" else case.encode())
        with pytest.raises(CAError) as info:
            load_attestors(path)
        assert "\n" not in str(info.value), i


def _resigned(chip: double.Chip, raw: bytearray) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    der = chip.vcek_key.sign(bytes(raw[:0x2A0]), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    raw[0x2A0:0x2E8] = r.to_bytes(72, "little")
    raw[0x2E8:0x330] = s.to_bytes(72, "little")
    return bytes(raw)


def test_a_guest_launched_under_a_tcb_below_the_minimum(tmp_path: Path, chip: double.Chip) -> None:
    strict = load_attestors(
        double.write_snp_toml(
            tmp_path / "t.toml",
            double.roots(),
            {"prod": [double.MEASUREMENT]},
            extra="min_tcb = { snp = 20 }\n",
        )
    )
    _, evidence = make(chip)  # REPORTED_TCB snp 23
    raw = bytearray(report_of(evidence))
    raw[0x1F0 + 6] = 19  # LAUNCH_TCB: launched under SNP firmware SPL 19
    evidence = with_report(evidence, _resigned(chip, raw))
    assert refused(strict, evidence).reason == "attestation-tcb"
