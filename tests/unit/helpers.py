"""Shared builders for pure unit tests (software keys, fixed clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ec

from ca.extensions import Accountability, AgentExtensions, Authorization, Digest, Provenance
from ca.profile import build_issuing_certificate, build_root_certificate

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
MODEL = "8f39b1a2cf93e8201a756b1f2304918e7e1f4094a9a01f92e8c21a4f028bde44"
PROMPT = "4e1fa0c31ab456de90123f112ab8e89cf12a023b1ab4c089ee21ff34e098df12"


def sample_extensions(
    scopes: tuple[str, ...] = ("query_anonymized_order_book", "submit_limit_order"),
) -> AgentExtensions:
    return AgentExtensions(
        provenance=Provenance(
            model_type="claude-3.5-sonnet-v2",
            model_digest=Digest.sha256_hex(MODEL),
            prompt_digest=Digest.sha256_hex(PROMPT),
        ),
        authorization=Authorization(scopes=scopes),
        accountability=Accountability(
            officer="compliance-officer@enterprise.io",
            environment="production-eu-west-1",
            organization="Enterprise Inc",
        ),
    )


def software_hierarchy() -> tuple:
    """(root_key, root_cert, issuing_key, issuing_cert) with software P-256 keys."""
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = build_root_certificate(
        root_key,
        "Test Root",
        "Test Org",
        1 << 70,
        NOW - timedelta(days=1),
        NOW + timedelta(days=3650),
    )
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    issuing = build_issuing_certificate(
        issuing_key.public_key(),
        "Test Issuing",
        "Test Org",
        (1 << 70) + 1,
        NOW - timedelta(days=1),
        NOW + timedelta(days=365),
        root,
        root_key,
        issuer_crl_url="http://127.0.0.1:8400/crl/root.crl",
    )
    return root_key, root, issuing_key, issuing
