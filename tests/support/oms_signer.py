"""The ``model-signing`` CLI as the reference OMS signer, run from ``.venv-oms`` (tests only).

``model_signing`` cannot import next to cryptography 51 (it needs pyOpenSSL, which pins
cryptography<51), so ``scripts/oms-reference-venv.sh`` makes a venv of its own and the tests
call its ``model_signing`` CLI in a subprocess. Keys and certificate chains are made here.
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("AGENTCA_OMS_VENV", ROOT / ".venv-oms"))
CLI = VENV / "bin" / "model_signing"


def available() -> bool:
    """True if the reference venv exists (made by scripts/oms-reference-venv.sh)."""
    return CLI.exists() and (VENV / ".agentca-oms-stamp").exists()


def write_key(
    path: Path, key: ec.EllipticCurvePrivateKey | None = None
) -> ec.EllipticCurvePrivateKey:
    """Write a P-256 private key (PEM) and its public key (``path`` + ``.pub``)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    Path(f"{path}.pub").write_bytes(pub)
    return key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    days: int = 30,
) -> x509.Certificate:
    now = datetime.now(UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    else:
        b = b.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def write_chain(where: Path, org: str) -> dict[str, Path]:
    """A root CA, an intermediate and a code-signing leaf; returns their PEM paths and key."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert(f"{org} Root", root_key, f"{org} Root", root_key, ca=True)
    inter = _cert(f"{org} Models CA", inter_key, f"{org} Root", root_key, ca=True)
    leaf = _cert(f"{org} model release", leaf_key, f"{org} Models CA", inter_key, ca=False)
    pem = serialization.Encoding.PEM
    out = {
        "root": where / f"{org}-root.pem",
        "intermediate": where / f"{org}-inter.pem",
        "leaf": where / f"{org}-leaf.pem",
        "key": where / f"{org}-leaf.key",
    }
    out["root"].write_bytes(root.public_bytes(pem))
    out["intermediate"].write_bytes(inter.public_bytes(pem))
    out["leaf"].write_bytes(leaf.public_bytes(pem))
    write_key(out["key"], leaf_key)
    return out


def _run(args: list[str]) -> None:
    done = subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"model_signing {args[:2]} failed: {done.stdout}{done.stderr}")


def sign_with_key(model: Path, key: Path, signature: Path) -> None:
    """``model_signing sign key MODEL --private_key KEY --signature SIG``."""
    _run(["sign", "key", str(model), "--private_key", str(key), "--signature", str(signature)])


def sign_with_certificate(model: Path, chain: dict[str, Path], signature: Path) -> None:
    """``model_signing sign certificate`` with the leaf, its key and the intermediate."""
    _run(
        [
            "sign",
            "certificate",
            str(model),
            "--private_key",
            str(chain["key"]),
            "--signing_certificate",
            str(chain["leaf"]),
            "--certificate_chain",
            str(chain["intermediate"]),
            "--signature",
            str(signature),
        ]
    )


def verify_with_key(model: Path, pub: Path, signature: Path) -> None:
    """``model_signing verify key`` (the reference verifier agrees with ours)."""
    _run(["verify", "key", str(model), "--public_key", str(pub), "--signature", str(signature)])
