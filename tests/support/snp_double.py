"""A TEST DOUBLE of the AMD Secure Processor firmware and of AMD's key distribution (SEV-SNP).

This machine has no SEV-SNP hardware, so no genuine attestation report can be produced here.
This module plays AMD's part, for tests only: it generates an ARK (RSA-4096, self-signed with
RSASSA-PSS SHA-384, salt 48, like AMD's), an ASK signed by it, and per "chip" a VCEK (EC P-384,
signed by the ASK with RSASSA-PSS, with AMD's hwID and TCB SPL extensions), and builds
byte-exact 1184-byte ``ATTESTATION_REPORT`` structures (AMD pub. 56860; offsets in
``ca/attestation_snp.py``) signed the way the firmware signs them: ECDSA P-384 over SHA-384 of
bytes 0x000-0x29F, R and S as 72-byte little-endian integers at 0x2A0. The CA-side code that
verifies them (``ca.attestation_snp``) is the production code and does not know this is a
double. The roots are cached per test session (RSA-4096 generation takes a while).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import struct
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from ca.attestation_snp import HWID_OID, envelope
from wire.extensions import Provenance

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
#: bit 17 is reserved and must be one; bit 16 allows SMT; ABI 1.51
DEFAULT_POLICY = (1 << 17) | (1 << 16) | (1 << 8) | 51
MEASUREMENT = bytes.fromhex("4af0aa02" * 12)
SPL = {"bootloader": "3.1", "tee": "3.2", "snp": "3.3", "microcode": "3.8", "fmc": "3.9"}


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test double of AMD"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(
    subject: str,
    issuer: str,
    public: Any,
    signer: rsa.RSAPrivateKey,
    start: dt.datetime,
    end: dt.datetime,
    extensions: list[x509.ExtensionType] = (),  # type: ignore[assignment]
    ca: bool = False,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=1), True)
    for ext in extensions:
        builder = builder.add_extension(ext, False)
    return builder.sign(signer, hashes.SHA384(), rsa_padding=PSS)


def _der_int(value: int) -> bytes:
    body = value.to_bytes(1, "big") if value < 0x80 else b"\x00" + value.to_bytes(1, "big")
    return bytes([0x02, len(body)]) + body


@dataclass
class Roots:
    """A double of one AMD product's ARK and ASK."""

    ark_key: rsa.RSAPrivateKey
    ark: x509.Certificate
    ask_key: rsa.RSAPrivateKey
    ask: x509.Certificate

    def write(self, directory: Path, prefix: str = "") -> tuple[Path, Path]:
        """The ARK and ASK as PEM files in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = directory / f"{prefix}ark.pem", directory / f"{prefix}ask.pem"
        for path, cert in zip(paths, (self.ark, self.ask), strict=True):
            path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return paths


def _rsa4096() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 4096)


def make_roots(product: str = "Genoa") -> Roots:
    """A fresh ARK/ASK pair (RSA-4096, RSASSA-PSS SHA-384), valid for 25 years from 2020."""
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(2045, 1, 1, tzinfo=dt.UTC)
    ark_key, ask_key = _rsa4096(), _rsa4096()
    ark = _cert(
        f"ARK-{product}", f"ARK-{product}", ark_key.public_key(), ark_key, start, end, ca=True
    )
    ask = _cert(
        f"SEV-{product}", f"ARK-{product}", ask_key.public_key(), ark_key, start, end, ca=True
    )
    return Roots(ark_key, ark, ask_key, ask)


@cache
def roots(product: str = "Genoa") -> Roots:
    """The session's ARK/ASK double for ``product`` (generated once)."""
    return make_roots(product)


@dataclass
class Chip:
    """A double of one SEV-SNP chip: its id, its reported TCB and the VCEK derived for them."""

    roots: Roots
    tcb: dict[str, int] = field(
        default_factory=lambda: {"bootloader": 9, "tee": 0, "snp": 23, "microcode": 72}
    )
    chip_id: bytes = field(default_factory=lambda: secrets.token_bytes(64))
    vcek_days: tuple[int, int] = (-30, 365 * 7)
    vcek_key: ec.EllipticCurvePrivateKey = field(init=False)
    vcek: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.vcek_key = ec.generate_private_key(ec.SECP384R1())
        self.vcek = self.issue_vcek()

    def issue_vcek(
        self,
        key: ec.EllipticCurvePrivateKey | None = None,
        signer: rsa.RSAPrivateKey | None = None,
        chip_id: bytes | None = None,
        tcb: dict[str, int] | None = None,
    ) -> x509.Certificate:
        """A VCEK certificate as AMD's KDS issues it (by default for this chip and TCB)."""
        now = dt.datetime.now(dt.UTC)
        exts: list[x509.ExtensionType] = [
            x509.UnrecognizedExtension(HWID_OID, self.chip_id if chip_id is None else chip_id)
        ]
        for part, level in (self.tcb if tcb is None else tcb).items():
            oid = x509.ObjectIdentifier(f"1.3.6.1.4.1.3704.1.{SPL[part]}")
            exts.append(x509.UnrecognizedExtension(oid, _der_int(level)))
        return _cert(
            "SEV-VCEK",
            self.roots.ask.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,  # type: ignore[arg-type]
            (key or self.vcek_key).public_key(),
            signer or self.roots.ask_key,
            now + dt.timedelta(days=self.vcek_days[0]),
            now + dt.timedelta(days=self.vcek_days[1]),
            exts,
        )

    @property
    def vcek_der(self) -> bytes:
        return self.vcek.public_bytes(serialization.Encoding.DER)

    @property
    def turin(self) -> bool:
        """A Turin chip (its TCB has an FMC level; reports carry CPUID family 0x1A)."""
        return "fmc" in self.tcb

    def tcb_bytes(self) -> bytes:
        """The TCB_VERSION: Milan/Genoa boot loader, TEE, 4 reserved, SNP, microcode; Turin
        FMC, boot loader, TEE, SNP, 3 reserved, microcode."""
        t = self.tcb
        if self.turin:
            return bytes([t["fmc"], t["bootloader"], t["tee"], t["snp"], 0, 0, 0, t["microcode"]])
        return bytes([t["bootloader"], t["tee"], 0, 0, 0, 0, t["snp"], t["microcode"]])

    def report(
        self,
        report_data: bytes,
        *,
        version: int = 2,
        policy: int = DEFAULT_POLICY,
        vmpl: int = 0,
        signature_algo: int = 1,
        flags: int = 0,
        measurement: bytes = MEASUREMENT,
        host_data: bytes = b"\x00" * 32,
        tcb: bytes | None = None,
        chip_id: bytes | None = None,
        sign_with: ec.EllipticCurvePrivateKey | None = None,
    ) -> bytes:
        """A signed ATTESTATION_REPORT with these fields, as the firmware returns it."""
        assert len(report_data) == 64 and len(measurement) == 48
        tcb = self.tcb_bytes() if tcb is None else tcb
        raw = bytearray(0x4A0)
        struct.pack_into("<IIQ", raw, 0x000, version, 1, policy)
        raw[0x010:0x020] = b"family-id-test\x00\x00"
        raw[0x020:0x030] = b"image-id-test\x00\x00\x00"
        struct.pack_into("<II", raw, 0x030, vmpl, signature_algo)
        raw[0x038:0x040] = tcb  # CURRENT_TCB
        struct.pack_into("<QI", raw, 0x040, 0b1, flags)  # PLATFORM_INFO: SMT enabled
        raw[0x050:0x090] = report_data
        raw[0x090:0x0C0] = measurement
        raw[0x0C0:0x0E0] = host_data
        raw[0x140:0x160] = secrets.token_bytes(32)  # REPORT_ID
        raw[0x180:0x188] = tcb  # REPORTED_TCB
        if version >= 3:
            family = 0x1A if self.turin else 0x19  # CPUID family, model, stepping
            raw[0x188:0x18B] = bytes([family, 0x11, 0x01])
        raw[0x1A0:0x1E0] = self.chip_id if chip_id is None else chip_id
        raw[0x1E0:0x1E8] = tcb  # COMMITTED_TCB
        raw[0x1F0:0x1F8] = tcb  # LAUNCH_TCB
        der = (sign_with or self.vcek_key).sign(bytes(raw[:0x2A0]), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        raw[0x2A0:0x2E8] = r.to_bytes(72, "little")
        raw[0x2E8:0x330] = s.to_bytes(72, "little")
        return bytes(raw)


def spki_sha256(public_key: Any) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo: the first half of REPORT_DATA."""
    return hashlib.sha256(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).digest()


def claims_bytes(
    agent: str,
    environment: str,
    provenance: Provenance,
    *,
    now: int | None = None,
    lifetime: int = 300,
    **override: Any,
) -> bytes:
    """The claims JSON an agent would put in its envelope (``override`` replaces members)."""
    iat = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "sub": agent,
        "environment": environment,
        "model": {
            "digest": "sha256:" + provenance.model_digest.hex,
            "scheme": provenance.model_digest_scheme.label,
        },
        "prompt": "sha256:" + provenance.prompt_digest.hex,
        "config": None
        if provenance.config_digest is None
        else "sha256:" + provenance.config_digest.hex,
        "iat": iat,
        "exp": iat + lifetime,
        "jti": secrets.token_hex(8),
    }
    claims.update(override)
    return json.dumps({k: v for k, v in claims.items() if v is not ...}).encode()


def evidence(chip: Chip, public_key: Any, claims: bytes, **report: Any) -> bytes:
    """The envelope for ``claims`` and ``public_key``, with a fresh report from ``chip``."""
    data = spki_sha256(public_key) + hashlib.sha256(claims).digest()
    return envelope(chip.report(data, **report), chip.vcek_der, claims)


def write_snp_toml(
    path: Path,
    chip_roots: Roots,
    measurements: dict[str, list[bytes]],
    *,
    entry_id: str = "snp-genoa",
    attestor: str = "amd-sev-snp",
    extra: str = "",
) -> Path:
    """An attestors file with one ``[[sev_snp]]`` entry for ``chip_roots``."""
    ark, ask = chip_roots.write(path.parent / f"{entry_id}-roots")
    table = ", ".join(
        f"{env} = [{', '.join(repr(m.hex()) for m in ms)}]" for env, ms in measurements.items()
    )
    path.write_text(
        f'[[sev_snp]]\nid = "{entry_id}"\nattestor = "{attestor}"\n'
        f'ark_file = "{ark}"\nask_file = "{ask}"\nmeasurements = {{ {table} }}\n{extra}'
    )
    return path
