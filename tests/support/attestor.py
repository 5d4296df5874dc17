"""A test orchestrator: the launcher side of runtime attestation (decision 0051).

It holds an attestor key (EC P-256 or Ed25519), writes its public key and an attestors TOML
file for the CA, and signs ``agentca-attestation+jwt`` statements for an agent's public key
and provenance, exactly as a real orchestrator would (joserfc, a maintained JOSE library).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc import jwk, jws

from wire.extensions import Provenance

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def spki_claim(public_key: Any) -> str:
    """``cnf.spki#S256``: base64url SHA-256 of the DER SubjectPublicKeyInfo."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(spki).digest()).rstrip(b"=").decode()


def claims_for(
    attestor: str,
    agent: str,
    environment: str,
    public_key: Any,
    provenance: Provenance,
    lifetime: int = 300,
    now: int | None = None,
) -> dict[str, Any]:
    """The claim set an orchestrator attests for ``agent`` running ``provenance``."""
    iat = int(time.time()) if now is None else now
    return {
        "iss": attestor,
        "sub": agent,
        "iat": iat,
        "exp": iat + lifetime,
        "jti": secrets.token_hex(8),
        "cnf": {"spki#S256": spki_claim(public_key)},
        "environment": environment,
        "model": {
            "digest": "sha256:" + provenance.model_digest.hex,
            "scheme": provenance.model_digest_scheme.label,
        },
        "prompt": "sha256:" + provenance.prompt_digest.hex,
        "config": None
        if provenance.config_digest is None
        else "sha256:" + provenance.config_digest.hex,
    }


@dataclass
class Orchestrator:
    """One attestor key: ``key_id`` in the JWS header, ``attestor`` in ``iss``."""

    attestor: str
    key_id: str
    kind: str = "ec-p256"
    key: PrivateKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = (
            ed25519.Ed25519PrivateKey.generate()
            if self.kind == "ed25519"
            else ec.generate_private_key(ec.SECP256R1())
        )

    @property
    def alg(self) -> str:
        return "Ed25519" if self.kind == "ed25519" else "ES256"

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
        """A compact JWS of ``claims`` (``header`` replaces the default alg/kid/typ)."""
        head = header or {"alg": self.alg, "kid": self.key_id, "typ": "agentca-attestation+jwt"}
        key = (
            jwk.OKPKey.import_key(self.key)
            if isinstance(self.key, ed25519.Ed25519PrivateKey)
            else jwk.ECKey.import_key(self.key)
        )
        payload = json.dumps(claims, separators=(",", ":")).encode()
        return jws.serialize_compact(head, payload, key, algorithms=[head["alg"]])

    def attest(
        self,
        agent: str,
        environment: str,
        public_key: Any,
        provenance: Provenance,
        lifetime: int = 300,
        now: int | None = None,
    ) -> str:
        """A statement that ``public_key`` runs ``provenance`` as ``agent``."""
        return self.sign(
            claims_for(self.attestor, agent, environment, public_key, provenance, lifetime, now)
        )


def write_attestors(
    directory: Path, entries: list[tuple[Orchestrator, list[str]]], **extra: int
) -> Path:
    """The CA's ``attestors_file`` for these orchestrators and their environments."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for orch, envs in entries:
        pem = directory / f"{orch.key_id}.pem"
        pem.write_bytes(orch.public_pem())
        lines += [
            "[[attestor]]",
            f'key_id = "{orch.key_id}"',
            f'attestor = "{orch.attestor}"',
            f"environments = {json.dumps(envs)}",
            f'public_key_file = "{pem}"',
            *(f"{k} = {v}" for k, v in extra.items()),
            "",
        ]
    path = directory / "attestors.toml"
    path.write_text("\n".join(lines))
    return path
