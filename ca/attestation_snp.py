"""AMD SEV-SNP attestation reports as enrollment evidence (method ``sev-snp-v1``, decision 0051).

An agent inside an SEV-SNP confidential VM asks the AMD Secure Processor (``/dev/sev-guest``,
``SNP_GET_REPORT``) for an ``ATTESTATION_REPORT`` whose 64-byte ``REPORT_DATA`` it chooses:
``SHA-256(SPKI DER of the CSR key) || SHA-256(claims bytes)``. It sends the report, the VCEK
certificate of its chip (from AMD's KDS or the host's certificate table) and the claims bytes
in a small JSON envelope. :class:`SnpAttestor` checks, with nothing but configuration and
``now``: the VCEK chains to the configured ASK and ARK (RSASSA-PSS SHA-384, validity periods),
its hwID and TCB extensions are the report's chip and reported TCB, the report's ECDSA P-384
signature, version, signing key, guest policy (no debug guest), VMPL, launch measurement
(allow-listed per environment), minimum TCB, and that ``REPORT_DATA`` commits to the claims.
The claims (agent, environment, model, prompt, config, iat, exp) then become an
:class:`~ca.attestation.AttestedStatement` whose key hash is the first half of ``REPORT_DATA``;
the policy compares it with the CSR as it does for a JWS.

The verification is real and complete. This machine has no SEV-SNP hardware, so the tests'
reports come from a test double of the AMD firmware (``tests/support/snp_double.py``) with a
generated ARK/ASK/VCEK; nothing here knows it is a double.

Evidence (ASCII JSON, at most :data:`MAX_SNP_EVIDENCE_BYTES`, repeated members refused)::

    {"type": "agentca-sev-snp-v1",
     "report": base64(the 1184-byte ATTESTATION_REPORT),
     "vcek": base64(DER of the VCEK certificate),
     "claims": base64url-unpadded(the claims JSON bytes)}

The claims are carried as bytes, so no canonical form is needed: the second half of
``REPORT_DATA`` is SHA-256 of exactly those decoded bytes. Claims: ``sub``, ``environment``,
``model`` ``{digest, scheme}``, ``prompt``, ``config`` (``null`` or a digest), ``iat``, ``exp``
and optionally ``jti``; nothing else.

Report layout: AMD "SEV Secure Nested Paging Firmware ABI Specification" (pub. 56860),
Table "ATTESTATION_REPORT Structure" (rev. 1.55-1.58), as also written in google/go-sev-guest
``abi/abi.go`` and virtee/sev ``src/firmware/guest/types/snp.rs``; all fields little-endian:

==========  ====  ===========================================================
offset      size  field
==========  ====  ===========================================================
0x000       4     VERSION (2; 3 and 4 add CPUID and build bytes; 5 mitigations)
0x004       4     GUEST_SVN
0x008       8     POLICY (bit 16 SMT, 17 reserved=1, 18 MIGRATE_MA, 19 DEBUG, ...)
0x010       16    FAMILY_ID
0x020       16    IMAGE_ID
0x030       4     VMPL
0x034       4     SIGNATURE_ALGO (1: ECDSA P-384 with SHA-384)
0x038       8     CURRENT_TCB
0x040       8     PLATFORM_INFO
0x048       4     flags: bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 4:2 SIGNING_KEY
                  (0 VCEK, 1 VLEK, 7 none)
0x050       64    REPORT_DATA
0x090       48    MEASUREMENT (launch digest)
0x0C0       32    HOST_DATA
0x0E0       48    ID_KEY_DIGEST
0x110       48    AUTHOR_KEY_DIGEST
0x140       32    REPORT_ID
0x160       32    REPORT_ID_MA
0x180       8     REPORTED_TCB (the TCB the VCEK is derived for)
0x188       1     CPUID_FAM_ID (version >= 3; 0x19 Milan/Genoa, 0x1A Turin)
0x1A0       64    CHIP_ID
0x1E0       8     COMMITTED_TCB
0x1F0       8     LAUNCH_TCB
0x2A0       512   SIGNATURE: R (72 bytes LE), S (72 bytes LE), 368 reserved (zero)
==========  ====  ===========================================================

The signature covers bytes 0x000-0x29F. A TCB_VERSION is, for Milan and Genoa, byte 0 boot
loader, 1 TEE, 6 SNP, 7 microcode; for Turin byte 0 FMC, 1 boot loader, 2 TEE, 3 SNP,
7 microcode. VCEK extensions (AMD pub. 57230, "VCEK Certificate and KDS Interface", Table 10):
``1.3.6.1.4.1.3704.1.3.{1,2,3,8,9}`` blSPL, teeSPL, snpSPL, ucodeSPL, fmcSPL (DER INTEGERs),
``1.3.6.1.4.1.3704.1.4`` hwID (the 64-byte chip id; AMD writes it without a DER wrapper).

Not supported (refused, never half-checked): VLEK-signed reports (``SIGNING_KEY`` 1), reports
with the chip key masked, report versions above 5, migration-agent guests unless configured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import SignatureAlgorithmOID

from ca.attestation import (
    DEFAULT_MAX_LIFETIME,
    DEFAULT_SKEW,
    AttestationError,
    AttestedStatement,
    _b64url,
    _json_object,
    _text,
    claimed_run,
)
from ca.errors import CAError, ErrorCode

METHOD_SNP: Final = "sev-snp-v1"
ENVELOPE_TYPE: Final = "agentca-sev-snp-v1"
#: the largest SNP envelope accepted, before any parsing (a real one is about 4 KiB)
MAX_SNP_EVIDENCE_BYTES: Final = 16 * 1024
MAX_VCEK_BYTES: Final = 4 * 1024
MAX_CLAIMS_BYTES: Final = 2 * 1024

REPORT_SIZE: Final = 0x4A0  # 1184
SIGNED_END: Final = 0x2A0  # the signature covers [0x000, 0x2A0)
KNOWN_VERSIONS: Final = frozenset({2, 3, 4, 5})
SIG_ALGO_ECDSA_P384_SHA384: Final = 1
SIGNING_KEY_VCEK: Final = 0
POLICY_SMT: Final = 1 << 16
POLICY_MIGRATE_MA: Final = 1 << 18
POLICY_DEBUG: Final = 1 << 19
TURIN_FAMILY: Final = 0x1A
#: AMD's RSASSA-PSS parameters for the ARK, ASK and VCEK signatures (SHA-384, MGF1, 48)
AMD_PSS_SALT: Final = 48

_AMD_SNP_OID: Final = "1.3.6.1.4.1.3704.1"
_SPL_OIDS: Final = {
    "bootloader": x509.ObjectIdentifier(f"{_AMD_SNP_OID}.3.1"),
    "tee": x509.ObjectIdentifier(f"{_AMD_SNP_OID}.3.2"),
    "snp": x509.ObjectIdentifier(f"{_AMD_SNP_OID}.3.3"),
    "microcode": x509.ObjectIdentifier(f"{_AMD_SNP_OID}.3.8"),
    "fmc": x509.ObjectIdentifier(f"{_AMD_SNP_OID}.3.9"),
}
HWID_OID: Final = x509.ObjectIdentifier(f"{_AMD_SNP_OID}.4")
TCB_PARTS: Final = ("fmc", "bootloader", "tee", "snp", "microcode")

_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_B64_RE: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_MEASUREMENT_RE: Final = re.compile(r"[0-9a-f]{96}")
_CLAIMS: Final = frozenset({"sub", "environment", "model", "prompt", "config", "iat", "exp"})


def _malformed(detail: str) -> AttestationError:
    return AttestationError("attestation-malformed", detail)


# ------------------------------------------------------------------------------------ report


@dataclass(frozen=True)
class Tcb:
    """A TCB_VERSION's security patch levels (``fmc`` only on Turin, else None)."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def parse(cls, raw: bytes, turin: bool) -> Tcb:
        """The 8-byte TCB_VERSION ``raw`` in the Milan/Genoa or the Turin layout."""
        if turin:
            return cls(raw[1], raw[2], raw[3], raw[7], raw[0])
        return cls(raw[0], raw[1], raw[6], raw[7])

    def parts(self) -> dict[str, int]:
        """The levels by name (``fmc`` left out when absent)."""
        out = {"bootloader": self.bootloader, "tee": self.tee, "snp": self.snp}
        out["microcode"] = self.microcode
        if self.fmc is not None:
            out["fmc"] = self.fmc
        return out


@dataclass(frozen=True)
class SnpReport:
    """The fields of an ATTESTATION_REPORT this attestor reads (offsets: module docstring)."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    vmpl: int
    signature_algo: int
    signing_key: int
    mask_chip_key: bool
    report_data: bytes
    measurement: bytes
    host_data: bytes
    report_id: bytes
    reported_tcb: Tcb
    #: the TCB the guest was launched under (it stays when the host updates the firmware)
    launch_tcb: Tcb
    chip_id: bytes
    turin: bool

    @property
    def signed(self) -> bytes:
        """The bytes the firmware signs: 0x000-0x29F."""
        return self.raw[:SIGNED_END]

    @classmethod
    def parse(cls, raw: bytes) -> SnpReport:
        """Parse ``raw`` (exactly 1184 bytes); :class:`AttestationError` if it cannot be."""
        if len(raw) != REPORT_SIZE:
            raise _malformed(f"the report is {len(raw)} bytes, not {REPORT_SIZE}")
        version, guest_svn, policy = struct.unpack_from("<IIQ", raw, 0x000)
        vmpl, signature_algo = struct.unpack_from("<II", raw, 0x030)
        (flags,) = struct.unpack_from("<I", raw, 0x048)
        turin = version >= 3 and raw[0x188] == TURIN_FAMILY
        return cls(
            raw=raw,
            version=version,
            guest_svn=guest_svn,
            policy=policy,
            vmpl=vmpl,
            signature_algo=signature_algo,
            signing_key=(flags >> 2) & 0b111,
            mask_chip_key=bool(flags & 0b10),
            report_data=raw[0x050:0x090],
            measurement=raw[0x090:0x0C0],
            host_data=raw[0x0C0:0x0E0],
            report_id=raw[0x140:0x160],
            reported_tcb=Tcb.parse(raw[0x180:0x188], turin),
            launch_tcb=Tcb.parse(raw[0x1F0:0x1F8], turin),
            chip_id=raw[0x1A0:0x1E0],
            turin=turin,
        )

    def signature(self) -> bytes:
        """The DER ECDSA signature of R and S (72-byte little-endian integers at 0x2A0)."""
        sig = self.raw[SIGNED_END:]
        if any(sig[144:]):
            raise AttestationError(
                "attestation-signature", "the signature's reserved bytes are not zero"
            )
        r = int.from_bytes(sig[0:72], "little")
        s = int.from_bytes(sig[72:144], "little")
        return encode_dss_signature(r, s)


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SnpTrust:
    """One ``[[sev_snp]]`` entry: AMD roots, allowed measurements per environment, limits."""

    entry_id: str
    attestor: str
    ark: x509.Certificate
    ask: x509.Certificate
    #: environment -> the launch measurements (48 bytes each) allowed there
    measurements: Mapping[str, frozenset[bytes]]
    min_tcb: Mapping[str, int] = field(default_factory=dict)
    max_vmpl: int = 0
    allow_migration_agent: bool = False
    max_lifetime: int = DEFAULT_MAX_LIFETIME
    skew: int = DEFAULT_SKEW

    @property
    def environments(self) -> frozenset[str]:
        """The environments this entry is trusted for."""
        return frozenset(self.measurements)


def _check_pss(cert: x509.Certificate, what: str) -> None:
    """``cert`` is signed with AMD's RSASSA-PSS SHA-384 (MGF1 SHA-384, salt 48), nothing else."""
    try:
        params = cert.signature_algorithm_parameters
        digest = cert.signature_hash_algorithm
    except (ValueError, UnsupportedAlgorithm):
        params = digest = None
    if (
        cert.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS
        or not isinstance(digest, hashes.SHA384)
        or not isinstance(params, padding.PSS)
        or getattr(params, "_salt_length", None) != AMD_PSS_SALT
        or not isinstance(getattr(getattr(params, "_mgf", None), "_algorithm", None), hashes.SHA384)
    ):
        raise AttestationError(
            "attestation-chain", f"the {what} is not signed with RSASSA-PSS SHA-384 (salt 48)"
        )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate, what: str) -> bool:
    """Whether ``issuer`` signed ``cert`` (names and the PSS signature)."""
    _check_pss(cert, what)
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _within(cert: x509.Certificate, now: int, what: str) -> None:
    start = int(cert.not_valid_before_utc.timestamp())
    end = int(cert.not_valid_after_utc.timestamp())
    if now < start:
        raise AttestationError("attestation-chain", f"the {what} is not valid before {start}")
    if now > end:
        raise AttestationError("attestation-chain", f"the {what} expired at {end}")


def check_roots(ark: x509.Certificate, ask: x509.Certificate, name: str) -> None:
    """The ARK is a self-signed RSA-4096 root and it signed the ASK (at configuration time)."""
    for what, cert in (("ARK", ark), ("ASK", ask)):
        try:
            key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm):
            key = None
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 4096:
            raise CAError(ErrorCode.CONFIG, f"sev_snp {name!r}: the {what} must be RSA-4096")
    try:
        ok = _issued_by(ark, ark, "ARK") and _issued_by(ask, ark, "ASK")
    except AttestationError as exc:
        raise CAError(ErrorCode.CONFIG, f"sev_snp {name!r}: {exc.detail}") from None
    if not ok:
        raise CAError(
            ErrorCode.CONFIG,
            f"sev_snp {name!r}: the ARK is not self-signed or did not sign the ASK",
        )


# ------------------------------------------------------------------------------------ envelope


@dataclass(frozen=True)
class SnpEvidence:
    """A parsed envelope: the report, the VCEK and the claims bytes ``REPORT_DATA`` binds."""

    report: SnpReport
    vcek: x509.Certificate
    claims_bytes: bytes


def _b64(value: object, what: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > limit * 4 // 3 + 4:
        raise _malformed(f"'{what}' must be base64 of at most {limit} bytes")
    if not _B64_RE.fullmatch(value):
        raise _malformed(f"'{what}' is not base64")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(f"'{what}' is not base64") from None


def parse_envelope(evidence: bytes) -> SnpEvidence:
    """The envelope's parts, or :class:`AttestationError` (size, JSON, members, encodings)."""
    if len(evidence) > MAX_SNP_EVIDENCE_BYTES:
        raise AttestationError(
            "attestation-too-large",
            f"SEV-SNP evidence over {MAX_SNP_EVIDENCE_BYTES} bytes ({len(evidence)})",
        )
    try:
        text = evidence.decode("ascii")
    except UnicodeDecodeError:
        raise _malformed("the SEV-SNP envelope is not ASCII JSON") from None
    # parsed as text: from bytes, ``json`` would detect UTF-16/32 in ASCII NUL patterns
    doc = _json_object(text, "the SEV-SNP envelope")
    if doc.get("type") != ENVELOPE_TYPE:
        shown = str(doc.get("type"))[:40]
        raise _malformed(f"unknown evidence type {shown!r} (expected {ENVELOPE_TYPE!r})")
    if set(doc) != {"type", "report", "vcek", "claims"}:
        raise _malformed("the SEV-SNP envelope has exactly type, report, vcek and claims")
    report = SnpReport.parse(_b64(doc["report"], "report", REPORT_SIZE))
    vcek_der = _b64(doc["vcek"], "vcek", MAX_VCEK_BYTES)
    try:
        vcek = x509.load_der_x509_certificate(vcek_der)
    except ValueError:
        raise _malformed("'vcek' is not a DER X.509 certificate") from None
    claims = doc["claims"]
    if not isinstance(claims, str) or len(claims) > MAX_CLAIMS_BYTES * 4 // 3 + 4:
        raise _malformed(f"'claims' must be base64url of at most {MAX_CLAIMS_BYTES} bytes")
    return SnpEvidence(report, vcek, _b64url(claims))


# ------------------------------------------------------------------------------------ attestor


def _small_int(value: bytes) -> int | None:
    """A DER INTEGER 0..255 (as AMD writes the SPL extensions), else None."""
    if len(value) == 3 and value[:2] == b"\x02\x01" and value[2] < 0x80:
        return value[2]
    if len(value) == 4 and value[:2] == b"\x02\x02" and value[2] == 0 and value[3] >= 0x80:
        return value[3]
    return None


def _vcek_extensions(vcek: x509.Certificate) -> tuple[bytes, dict[str, int]]:
    """The VCEK's hwID and TCB levels; :class:`AttestationError` if any is unreadable."""
    found: dict[x509.ObjectIdentifier, bytes] = {}
    try:
        for ext in vcek.extensions:
            if isinstance(ext.value, x509.UnrecognizedExtension):
                found[ext.oid] = ext.value.value
    except Exception:  # cryptography raises several types for a malformed extension list
        raise AttestationError("attestation-chain", "the VCEK's extensions are malformed") from None
    hwid = found.get(HWID_OID)
    if hwid is not None and len(hwid) == 66 and hwid[:2] == b"\x04\x40":
        hwid = hwid[2:]  # tolerate a DER OCTET STRING wrapper
    if hwid is None or len(hwid) != 64:
        raise AttestationError("attestation-chain", "the VCEK has no 64-byte hwID extension")
    levels = {}
    for name, oid in _SPL_OIDS.items():
        raw = found.get(oid)
        if raw is None:
            continue
        level = _small_int(raw)
        if level is None:
            raise AttestationError("attestation-chain", f"the VCEK's {name} SPL is malformed")
        levels[name] = level
    return hwid, levels


class SnpAttestor:
    """SEV-SNP attestation reports signed by a VCEK chaining to a configured ARK and ASK."""

    method = METHOD_SNP

    def __init__(self, entries: Iterable[SnpTrust]) -> None:
        self.entries: dict[str, SnpTrust] = {}
        for entry in entries:
            if entry.entry_id in self.entries:
                raise CAError(ErrorCode.CONFIG, f"sev_snp id {entry.entry_id!r} is repeated")
            self.entries[entry.entry_id] = entry

    def verify(self, evidence: bytes, environment: str, now: int) -> AttestedStatement:
        """See :class:`~ca.attestation.Attestor`; the reasons are ``attestation-*`` slugs."""
        parsed = parse_envelope(evidence)
        report = parsed.report
        candidates = [e for e in self.entries.values() if environment in e.environments]
        if not candidates:
            raise AttestationError(
                "attestation-foreign-key",
                f"no SEV-SNP attestor is trusted for environment {environment!r}",
            )
        if report.version not in KNOWN_VERSIONS:
            raise _malformed(f"report version {report.version} is not a known one (2..5)")
        if report.signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
            raise AttestationError(
                "attestation-algorithm",
                f"signature_algo {report.signature_algo} is not 1 (ECDSA P-384 SHA-384)",
            )
        if report.signing_key != SIGNING_KEY_VCEK or report.mask_chip_key:
            raise AttestationError(
                "attestation-algorithm", "only reports signed with the chip's VCEK are accepted"
            )
        issuers = self._issuers(parsed.vcek, candidates)
        self._check_vcek(parsed.vcek, report)
        self._check_signature(parsed.vcek, report)
        # every entry whose ASK issued the VCEK is tried (two image lines of one product for
        # one environment): the first that admits the guest decides; else the first refusal
        refusals: list[AttestationError] = []
        for entry in issuers:
            try:
                for what, cert in (("ARK", entry.ark), ("ASK", entry.ask), ("VCEK", parsed.vcek)):
                    _within(cert, now, what)
                self._check_guest(entry, report, environment)
                return self._statement(entry, parsed, environment, now)
            except AttestationError as exc:
                refusals.append(exc)
        raise refusals[0]

    @staticmethod
    def _issuers(vcek: x509.Certificate, candidates: list[SnpTrust]) -> list[SnpTrust]:
        found = [entry for entry in candidates if _issued_by(vcek, entry.ask, "VCEK")]
        if not found:
            names = ", ".join(e.entry_id for e in candidates)
            raise AttestationError(
                "attestation-unknown-key", f"the VCEK was not issued by the ASK of {names}"
            )
        return found

    @staticmethod
    def _check_vcek(vcek: x509.Certificate, report: SnpReport) -> None:
        try:
            key = vcek.public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise AttestationError("attestation-chain", "the VCEK's key is unreadable") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
            raise AttestationError("attestation-chain", "the VCEK's key is not EC P-384")
        hwid, levels = _vcek_extensions(vcek)
        if hwid != report.chip_id:
            raise AttestationError(
                "attestation-chain", "the VCEK is for another chip than the report's CHIP_ID"
            )
        reported = report.reported_tcb.parts()
        if set(levels) != set(reported) or levels != reported:
            raise AttestationError(
                "attestation-tcb",
                f"the VCEK is for TCB {levels}, the report's REPORTED_TCB is {reported}",
            )

    @staticmethod
    def _check_signature(vcek: x509.Certificate, report: SnpReport) -> None:
        key = vcek.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        try:
            key.verify(report.signature(), report.signed, ec.ECDSA(hashes.SHA384()))
        except (InvalidSignature, ValueError):
            raise AttestationError(
                "attestation-signature", "the report's signature does not verify with the VCEK"
            ) from None

    @staticmethod
    def _check_guest(entry: SnpTrust, report: SnpReport, environment: str) -> None:
        if report.policy & POLICY_DEBUG:
            raise AttestationError(
                "attestation-debug-guest", "the guest policy allows debugging (bit 19)"
            )
        if report.policy & POLICY_MIGRATE_MA and not entry.allow_migration_agent:
            raise AttestationError(
                "attestation-policy", "the guest policy allows a migration agent (bit 18)"
            )
        if report.vmpl > entry.max_vmpl:
            raise AttestationError(
                "attestation-vmpl", f"VMPL {report.vmpl} is above the allowed {entry.max_vmpl}"
            )
        if report.measurement not in entry.measurements[environment]:
            raise AttestationError(
                "attestation-measurement",
                f"measurement {report.measurement.hex()[:32]}... is not allowed for "
                f"environment {environment!r} ({entry.entry_id})",
            )
        # the TCB the VCEK vouches for now, and the one the guest was launched under: a guest
        # started on vulnerable firmware stays suspect after the host updates the firmware
        for name, tcb in (("REPORTED_TCB", report.reported_tcb), ("LAUNCH_TCB", report.launch_tcb)):
            have = tcb.parts()
            low = [
                f"{k} {have.get(k)} < {v}" for k, v in entry.min_tcb.items() if have.get(k, -1) < v
            ]
            if low:
                raise AttestationError(
                    "attestation-tcb", f"{name} below the minimum: {', '.join(sorted(low))}"
                )

    @staticmethod
    def _statement(
        entry: SnpTrust, parsed: SnpEvidence, environment: str, now: int
    ) -> AttestedStatement:
        report = parsed.report
        if hashlib.sha256(parsed.claims_bytes).digest() != report.report_data[32:]:
            raise AttestationError(
                "attestation-report-data",
                "REPORT_DATA[32:64] is not SHA-256 of the claims sent",
            )
        try:  # UTF-8 without a BOM (RFC 8259 8.1): one reading of the bytes REPORT_DATA binds
            text = parsed.claims_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("the claims are not UTF-8") from None
        if text.startswith("\ufeff"):
            raise _malformed("the claims start with a byte order mark")
        claims = _json_object(text, "the claims")
        unknown = sorted(set(claims) - _CLAIMS - {"jti"})
        missing = sorted(_CLAIMS - set(claims))
        if unknown or missing:
            raise _malformed(f"claims: unknown {unknown[:4]}, missing {missing}"[:160])
        if "jti" in claims:
            _text(claims, "jti")
        run = claimed_run(claims, entry.max_lifetime, entry.skew, now)
        # the signed bytes, not the whole report: an ECDSA signature is malleable
        # (s, n - s); the signed bytes carry REPORT_DATA, so they bind the claims too
        return run.statement(
            METHOD_SNP,
            entry.attestor,
            entry.entry_id,
            report.report_data[:32],
            hashlib.sha256(report.signed).digest(),
        )


# ---------------------------------------------------------------------------- configuration


_SNP_KEYS: Final = frozenset(
    {
        "id",
        "attestor",
        "ark_file",
        "ask_file",
        "measurements",
        "min_tcb",
        "max_vmpl",
        "allow_migration_agent",
        "max_lifetime_seconds",
        "clock_skew_seconds",
    }
)


def _load_cert(path: object, what: str, name: str) -> x509.Certificate:
    if not isinstance(path, str) or not path:
        raise CAError(ErrorCode.CONFIG, f"sev_snp {name!r}: {what}_file is required")
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError):
        raise CAError(
            ErrorCode.CONFIG, f"sev_snp {name!r}: cannot read a PEM certificate from {path}"
        ) from None


def _bounded(
    entry: Mapping[str, Any], key: str, default: int, low: int, high: int, name: str
) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CAError(ErrorCode.CONFIG, f"sev_snp {name!r}: {key} must be {low}..{high}")
    return value


def snp_trust(entry: object, source: Path) -> SnpTrust:
    """One ``[[sev_snp]]`` table of the attestors file ``source`` (docs/operators.md)."""
    if not isinstance(entry, dict) or set(entry) - _SNP_KEYS:
        raise CAError(
            ErrorCode.CONFIG, f"attestors file {source}: sev_snp keys are {sorted(_SNP_KEYS)}"
        )
    name, who = entry.get("id"), entry.get("attestor")
    if not isinstance(name, str) or not _ID_RE.fullmatch(name):
        raise CAError(ErrorCode.CONFIG, f"attestors file {source}: bad sev_snp id {name!r}")
    if not isinstance(who, str) or not _ID_RE.fullmatch(who):
        raise CAError(ErrorCode.CONFIG, f"sev_snp {name!r}: bad attestor {who!r}")
    ark, ask = (
        _load_cert(entry.get("ark_file"), "ark", name),
        _load_cert(entry.get("ask_file"), "ask", name),
    )
    check_roots(ark, ask, name)
    table = entry.get("measurements")
    if not isinstance(table, dict) or not table:
        raise CAError(
            ErrorCode.CONFIG, f"sev_snp {name!r}: measurements = {{ environment = [hex, ...] }}"
        )
    measurements: dict[str, frozenset[bytes]] = {}
    for env, values in table.items():
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and _MEASUREMENT_RE.fullmatch(v.lower()) for v in values)
        ):
            raise CAError(
                ErrorCode.CONFIG,
                f"sev_snp {name!r}: measurements.{env} must list 96-hex-digit launch digests",
            )
        measurements[env] = frozenset(bytes.fromhex(v) for v in values)
    min_tcb = entry.get("min_tcb", {})
    if (
        not isinstance(min_tcb, dict)
        or set(min_tcb) - set(TCB_PARTS)
        or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255
            for v in min_tcb.values()
        )
    ):
        raise CAError(
            ErrorCode.CONFIG, f"sev_snp {name!r}: min_tcb levels are 0..255 of {list(TCB_PARTS)}"
        )
    migration = entry.get("allow_migration_agent", False)
    if not isinstance(migration, bool):
        raise CAError(ErrorCode.CONFIG, f"sev_snp {name!r}: allow_migration_agent is a boolean")
    return SnpTrust(
        entry_id=name,
        attestor=who,
        ark=ark,
        ask=ask,
        measurements=measurements,
        min_tcb=dict(min_tcb),
        max_vmpl=_bounded(entry, "max_vmpl", 0, 0, 3, name),
        allow_migration_agent=migration,
        max_lifetime=_bounded(entry, "max_lifetime_seconds", DEFAULT_MAX_LIFETIME, 1, 3600, name),
        skew=_bounded(entry, "clock_skew_seconds", DEFAULT_SKEW, 0, 300, name),
    )


def envelope(report: bytes, vcek_der: bytes, claims: bytes) -> bytes:
    """The evidence an agent sends for ``report`` (what a launcher or the agent writes)."""
    return json.dumps(
        {
            "type": ENVELOPE_TYPE,
            "report": base64.b64encode(report).decode(),
            "vcek": base64.b64encode(vcek_der).decode(),
            "claims": base64.urlsafe_b64encode(claims).rstrip(b"=").decode(),
        }
    ).encode()
