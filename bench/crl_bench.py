"""CRL build + sign benchmark: our streamed DER builder vs cryptography's builder, same run.

Usage: python bench/crl_bench.py [--entries 1000000] [--reference-entries 100000]
                                 [--database-url URL] [--skip-e2e]

Every measurement runs in its own process (fresh peak-RSS high-water mark) and signs with the
issuing CA key (EC P-256) in a SoftHSM2 token created in a temporary directory:

- ``cryptography``: ``CertificateRevocationListBuilder`` with --reference-entries entries;
- ``ours (builder)``: :func:`ca.crl.build_crl` fed by a generator, same entries, then with
  --entries entries, written to a file;
- ``ours (PostgreSQL)``: ``CrlPublisher.publish(full)`` end to end: --entries revoked rows
  bulk-inserted into PostgreSQL (``generate_series``), streamed with ``yield_per``, built,
  signed and atomically installed. Needs ``--database-url`` or ``$AGENTCA_TEST_DATABASE_URL``
  (``make bench-crl`` starts a throwaway server).

Peak memory is the process's ``ru_maxrss``; "baseline" is the same figure just before the timed
work (interpreter, libraries, PKCS#11 module), so the difference is what the build needed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.config import Settings
from ca.crl import CrlSpec, RevokedEntry, build_crl
from ca.revocation import RevocationReason

NOW = datetime.now(UTC).replace(microsecond=0)
REASONS = (1, 4, 6, None)  # keyCompromise, superseded, certificateHold, no reasonCode


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def entries(count: int) -> Iterator[RevokedEntry]:
    """``count`` distinct 159-bit serials, revocation times over a day, mixed reasons."""
    base = 1 << 158
    for i in range(count):
        yield RevokedEntry(base + i * 104_729, NOW - timedelta(seconds=i % 86_400), REASONS[i & 3])


# ------------------------------------------------------------------------------ worker side


def _open(settings: Settings) -> tuple[Any, x509.Certificate, Any]:
    from ca.wiring import open_runtime

    rt = open_runtime(settings)
    record = rt.authority.issuer("issuing")
    return rt, record.certificate, rt.keys.get(record.key_label)


def worker(kind: str, settings: Settings, count: int, out_dir: Path) -> dict[str, Any]:
    """One measurement in this process; returns the figures as a dict."""
    rt, cert, key = _open(settings)
    key.sign(b"warm-up", ec.ECDSA(hashes.SHA256()))
    baseline = _maxrss_mb()
    result: dict[str, Any] = {"kind": kind, "entries": count}
    if kind == "cryptography":
        start = time.perf_counter()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(cert.subject)
            .last_update(NOW)
            .next_update(NOW + timedelta(hours=2))
            .add_extension(x509.CRLNumber(1), critical=False)
        )
        for e in entries(count):
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(e.serial)
                .revocation_date(e.revoked_at)
            )
            if e.reason is not None:
                revoked = revoked.add_extension(
                    x509.CRLReason(RevocationReason(e.reason).x509_flag), critical=False
                )
            builder = builder.add_revoked_certificate(revoked.build())
        crl = builder.sign(key, hashes.SHA256())
        result["seconds"] = time.perf_counter() - start
        der = crl.public_bytes(serialization.Encoding.DER)
        result["size"] = len(der)
        path = None
    elif kind == "builder":
        path = out_dir / f"builder-{count}.crl"
        spec = CrlSpec(NOW, NOW + timedelta(hours=2), 1, freshest_url="http://x/issuing-delta.crl")
        start = time.perf_counter()
        with path.open("w+b") as fh:
            built = build_crl(fh, cert, key, spec, entries(count), spool_dir=out_dir)
        result["seconds"] = time.perf_counter() - start
        result["size"] = built.size
    elif kind == "postgres":
        from ca.crl_publisher import CrlPublisher

        publisher = CrlPublisher.from_runtime(rt)
        start = time.perf_counter()
        published = publisher.publish("issuing", "full")
        result["seconds"] = time.perf_counter() - start
        full = published[0]
        result["size"] = full.size
        result["number"] = full.number
        assert full.entries == count, (full.entries, count)
        path = full.path
    else:
        raise SystemExit(f"unknown kind {kind}")
    result["peak_rss_mb"] = _maxrss_mb()
    result["baseline_rss_mb"] = baseline
    if path is not None:  # check outside the timing: parses, right count, signature valid
        from ca.crl import revoked_serials

        data = path.read_bytes()
        parsed = x509.load_der_x509_crl(data)
        result["signature_valid"] = parsed.is_signature_valid(cert.public_key())  # type: ignore[arg-type]
        result["parsed_entries"] = len(revoked_serials(data))
        start = time.perf_counter()
        serials = revoked_serials(data)
        result["lookup_set_seconds"] = time.perf_counter() - start
        assert len(serials) == count
    rt.close()
    return result


# ------------------------------------------------------------------------------ driver side


def _settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url)


def _bulk_insert(settings: Settings, count: int) -> float:
    """Insert ``count`` revoked certificates for the issuing CA with one INSERT ... SELECT."""
    from sqlalchemy import text

    from ca.store.db import make_engine

    engine = make_engine(settings.effective_database_url)
    start = time.perf_counter()
    with engine.begin() as conn:
        issuer_id = conn.execute(text("SELECT id FROM issuers WHERE name = 'issuing'")).scalar_one()
        conn.execute(
            text(
                """
                INSERT INTO certificates (issuer_id, serial_hex, status, agent_name, subject,
                    public_key_sha256, model_type, model_digest, prompt_digest, scopes, officer,
                    environment, not_before, not_after, requested_by, created_at, revoked_at,
                    revocation_reason)
                SELECT :issuer_id,
                    ltrim('4' || substr(md5(g::text) || md5((g * 7)::text), 1, 37), '0'),
                    'revoked', 'bench', 'CN=bench',
                    decode(md5(g::text), 'hex') || decode(md5((g + 1)::text), 'hex'),
                    'm', repeat('0', 64), repeat('0', 64), 's', 'o@example.org', 'e',
                    now() - interval '1 hour', now() + interval '10 hours', 'bench', now(),
                    now() - (g % 86400) * interval '1 second', (ARRAY[1, 4, 6, 0])[1 + g % 4]
                FROM generate_series(1, :n) AS g
                """
            ),
            {"issuer_id": issuer_id, "n": count},
        )
        conn.execute(text("ANALYZE certificates"))
    engine.dispose()
    return time.perf_counter() - start


def _fresh_pg_database(admin_url: str) -> str:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"agentca_crl_bench_{secrets.token_hex(4)}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(admin_url: str, url: str) -> None:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _run_worker(kind: str, data_dir: Path, database_url: str, count: int, out: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--data-dir",
        str(data_dir),
        "--database-url",
        database_url,
        "--count",
        str(count),
        "--out",
        str(out),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.pop("SOFTHSM2_CONF", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _setup_ca(data_dir: Path, database_url: str) -> Settings:
    from ca.wiring import open_runtime

    settings = _settings(data_dir, database_url)
    rt = open_runtime(settings, create=True)
    rt.authority.initialise("ec-p384", "ec-p256")
    rt.close()
    return settings


def _row(label: str, r: dict[str, Any]) -> str:
    rate = r["entries"] / r["seconds"]
    return (
        f"{label:<28} {r['entries']:>9,} {r['seconds']:>8.2f} s {rate:>11,.0f}/s "
        f"{r['peak_rss_mb']:>8.1f} MB {r['baseline_rss_mb']:>8.1f} MB {r['size'] / 1e6:>7.1f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--reference-entries", type=int, default=100_000)
    parser.add_argument("--database-url", default=os.environ.get("AGENTCA_TEST_DATABASE_URL", ""))
    parser.add_argument("--skip-e2e", action="store_true", help="builder-only measurements")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        settings = _settings(Path(args.data_dir), args.database_url)
        print(json.dumps(worker(args.worker, settings, args.count, Path(args.out))))
        return

    with tempfile.TemporaryDirectory(prefix="crl-bench-") as tmp:
        root = Path(tmp)
        out = root / "out"
        out.mkdir()
        sqlite_dir = root / "ca"
        sqlite_url = f"sqlite:///{sqlite_dir / 'agentca.sqlite3'}"
        _setup_ca(sqlite_dir, sqlite_url)
        print(f"CRL benchmark, {os.cpu_count()} CPUs, issuing CA key EC P-256 in SoftHSM2")
        print(
            f"{'measurement':<28} {'entries':>9} {'time':>10} {'rate':>13} "
            f"{'peak RSS':>11} {'baseline':>11} {'size':>10}"
        )
        ref = _run_worker("cryptography", sqlite_dir, sqlite_url, args.reference_entries, out)
        print(_row("cryptography builder", ref), flush=True)
        small = _run_worker("builder", sqlite_dir, sqlite_url, args.reference_entries, out)
        print(_row("ours, builder", small), flush=True)
        big = _run_worker("builder", sqlite_dir, sqlite_url, args.entries, out)
        print(_row("ours, builder", big), flush=True)
        results = {"cryptography": ref, "builder_small": small, "builder": big}
        pg = None
        if args.database_url and not args.skip_e2e:
            url = _fresh_pg_database(args.database_url)
            try:
                pg_settings = _setup_ca(sqlite_dir, url)  # same token: one PKCS#11 config
                inserted = _bulk_insert(pg_settings, args.entries)
                print(f"  (bulk insert of {args.entries:,} revoked rows: {inserted:.1f} s)")
                pg = _run_worker("postgres", sqlite_dir, url, args.entries, out)
                print(_row("ours, PostgreSQL end to end", pg), flush=True)
                results["postgres"] = pg
            finally:
                _drop_pg_database(args.database_url, url)
        elif not args.skip_e2e:
            print("  (no PostgreSQL URL: end-to-end measurement skipped; use make bench-crl)")
        print()
        print(
            f"same {args.reference_entries:,} entries: ours is "
            f"{ref['seconds'] / small['seconds']:.0f}x faster than cryptography's builder"
        )
        print(
            f"{args.entries:,} entries built and signed in {big['seconds']:.2f} s "
            f"(target <= 10 s: {'met' if big['seconds'] <= 10 else 'MISSED'}); "
            f"peak RSS {big['peak_rss_mb']:.0f} MB vs {small['peak_rss_mb']:.0f} MB "
            f"for {args.reference_entries:,} (bounded: the list is streamed)"
        )
        if pg is not None:
            print(
                f"end to end from PostgreSQL: {pg['seconds']:.2f} s "
                f"(target <= 10 s: {'met' if pg['seconds'] <= 10 else 'MISSED'}), "
                f"peak RSS {pg['peak_rss_mb']:.0f} MB"
            )
        print(
            f"verifier lookup set from the 1M CRL: {big['lookup_set_seconds']:.2f} s to load; "
            f"signatures valid: {big['signature_valid']}"
        )
        print(json.dumps(results))


if __name__ == "__main__":
    main()
