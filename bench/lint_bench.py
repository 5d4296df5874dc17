"""Cost of lint before signing (ca/lint.py) per certificate, next to the plain signature.

    make bench-lint                        # or: .venv/bin/python bench/lint_bench.py --n 2000

For a P-256 and an RSA-2048 issuing key (software keys, so the figure is the lint's own cost,
not an HSM round trip), the same agent-certificate builder is signed ``--n`` times:

* plain  - ``builder.sign(issuer_key, hash)``, what issuance did before;
* issued - ``ca.lint.sign_agent_certificate`` (what issuance calls): builder, lint, real
  signature and the check that it verifies under the issuing CA certificate;
* linted - ``ca.lint.sign_linted``: throwaway-key signature, strict decode and comparison of
           the agent extensions and profile checks, the real signature, the TBS comparison.

The lint cost is the difference of the medians (the real signature is in both). Target: well
under 1 ms per certificate (issue 11, item 8).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca import lint
from ca.extensions import (
    Accountability,
    AgentExtensions,
    Authorization,
    Digest,
    Provenance,
)
from ca.profile import (
    AgentCertificateSpec,
    CertificateUrls,
    agent_certificate_builder,
    build_issuing_certificate,
    build_root_certificate,
    signature_hash,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
EXTENSIONS = AgentExtensions(
    Provenance("claude-3.5-sonnet-v2", Digest(b"\x11" * 32), Digest(b"\x22" * 32)),
    Authorization(("query_anonymized_order_book", "submit_limit_order")),
    Accountability("compliance-officer@enterprise.io", "production-eu-west-1", "Enterprise Inc"),
)

URLS = CertificateUrls("http://127.0.0.1/ocsp", "http://127.0.0.1/ca.der", "http://127.0.0.1/c.crl")


def _median_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(50, n)):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1000


def measure(issuer: str, n: int) -> dict[str, float | str]:
    """Median microseconds of a plain and a linted signature with an ``issuer`` key."""
    key = (
        ec.generate_private_key(ec.SECP256R1())
        if issuer == "p256"
        else rsa.generate_private_key(65537, 2048)
    )
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = build_root_certificate(
        root_key, "Bench Root", "Bench", 1 << 70, NOW - timedelta(days=1), NOW + timedelta(days=30)
    )
    issuing = build_issuing_certificate(
        key.public_key(),
        "Bench Issuing",
        "Bench",
        (1 << 70) + 1,
        NOW - timedelta(days=1),
        NOW + timedelta(days=20),
        root,
        root_key,
        issuer_crl_url="http://127.0.0.1/root.crl",
    )
    spec = AgentCertificateSpec(
        serial=0x1234567890ABCDEF1234,
        agent_name="ExecutionAgent-ETH-01",
        organization="Enterprise Inc",
        trust_domain="agents.enterprise.io",
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        extensions=EXTENSIONS,
        not_before=NOW,
        not_after=NOW + timedelta(hours=12),
    )
    builder = agent_certificate_builder(spec, issuing, URLS)
    alg = signature_hash(key)
    lint.lint_key_for(key)  # the one-off throwaway key generation is not per certificate
    plain = _median_us(lambda: builder.sign(key, alg), n)
    linted = _median_us(lambda: lint.sign_linted(builder, key, alg, spec.extensions), n)
    issued = _median_us(lambda: lint.sign_agent_certificate(spec, issuing, key, URLS), n)
    return {
        "issuer": issuer,
        "plain_us": round(plain, 1),
        "linted_us": round(linted, 1),
        "lint_cost_us": round(linted - plain, 1),
        "issued_us": round(issued, 1),
        "total_cost_us": round(issued - plain, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="signatures per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    rows = [measure(issuer, args.n) for issuer in ("p256", "rsa2048")]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"lint before signing, median of {args.n} per row (microseconds)")
    print(f"{'issuer':<8} {'plain':>9} {'linted':>9} {'lint cost':>10} {'+verify':>9} {'total':>9}")
    for r in rows:
        print(
            f"{r['issuer']:<8} {r['plain_us']:>9} {r['linted_us']:>9} {r['lint_cost_us']:>10} "
            f"{r['issued_us']:>9} {r['total_cost_us']:>9}"
        )


if __name__ == "__main__":
    main()
