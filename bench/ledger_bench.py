"""Ledger costs: issuance rate with and without the ledger (same run), and export and offline
verification of 1,000,000 entries with peak memory.

Usage: python bench/ledger_bench.py [--entries 1000000] [--issuances 400]
Needs AGENTCA_TEST_DATABASE_URL (``make bench-ledger`` starts a throwaway PostgreSQL).
Each measured phase runs in its own child process so peak RSS belongs to that phase alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_issue(data: str, url: str, n: int, ledger: bool) -> dict[str, float]:
    from cryptography.hazmat.primitives.asymmetric import ec

    from ca.config import Settings
    from ca.extensions import Accountability, AgentExtensions, Authorization, Digest, Provenance
    from ca.requests import IssuanceRequest
    from ca.wiring import open_runtime

    rt = open_runtime(Settings(data_dir=Path(data), database_url=url))
    rt.authority.ledger_enabled = ledger
    ext = AgentExtensions(
        Provenance("m", Digest.sha256_hex("a1" * 32), Digest.sha256_hex("c3" * 32)),
        Authorization(("read_book",)),
        Accountability("o@example.com", "p"),
    )
    keys = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(n + 20)]
    for k in keys[:20]:
        rt.authority.issue(IssuanceRequest(k, "warm", ext, timedelta(hours=1)), "bench")
    start = time.perf_counter()
    for k in keys[20:]:
        rt.authority.issue(IssuanceRequest(k, "bench", ext, timedelta(hours=1)), "bench")
    rate = n / (time.perf_counter() - start)
    rt.close()
    return {"rate": rate}


def phase_fill(url: str, n: int) -> dict[str, float]:
    """Append n synthetic entries with the real entry encoding, in bulk (COPY)."""
    import psycopg

    from ca.ledger.entries import LedgerEntry
    from wire.canonical import canonical

    pg = url.replace("postgresql+psycopg://", "postgresql://")
    start = time.perf_counter()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with psycopg.connect(pg) as conn:
        base = conn.execute("SELECT size FROM ledger_head").fetchone()[0]  # type: ignore[index]
        with conn.cursor().copy(
            "COPY ledger_entries (seq, time, actor, event, agent, officer, "
            "body, leaf_hash) FROM STDIN"
        ) as copy:
            for i in range(n):
                seq = base + i
                body = {
                    "agent": f"agent{i % 1000}",
                    "officer": "o@example.com",
                    "serial": format(0x10000000000000000 + seq, "x"),
                    "reason": "superseded",
                }
                e = LedgerEntry(
                    seq,
                    (t0 + timedelta(microseconds=seq)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "bench",
                    "certificate.revoked",
                    body,
                )
                copy.write_row(
                    (
                        seq,
                        e.time,
                        e.actor,
                        e.event,
                        body["agent"],
                        body["officer"],
                        canonical(body).decode(),
                        e.leaf_hash(),
                    )
                )
        conn.execute("UPDATE ledger_head SET size = size + %s", (n,))
    return {"seconds": time.perf_counter() - start}


def phase_export(data: str, url: str, out: str, cert_out: str) -> dict[str, float]:
    from ca.config import Settings
    from ca.ledger.store import ExportFilter
    from ca.wiring import open_runtime

    rt = open_runtime(Settings(data_dir=Path(data), database_url=url))
    start = time.perf_counter()
    cp = rt.checkpoints.checkpoint()
    checkpoint_s = time.perf_counter() - start
    with open(out, "w", encoding="utf-8") as fh:
        n = rt.ledger.export(fh, cp, ExportFilter())
    Path(cert_out).write_text(cp.to_json()["certificate_pem"])
    seconds = time.perf_counter() - start
    rt.close()
    return {
        "entries": n,
        "seconds": seconds,
        "checkpoint_seconds": checkpoint_s,
        "peak_mib": _peak_mib(),
    }


def phase_verify(export: str, cert: str) -> dict[str, float]:
    from cryptography import x509

    from ca.ledger.verify import verify_export

    trusted = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    start = time.perf_counter()
    with open(export, encoding="utf-8") as fh:
        report = verify_export(fh, trusted)
    seconds = time.perf_counter() - start
    if not report.ok:
        raise SystemExit(report.message)
    return {
        "entries": report.entries,
        "seconds": seconds,
        "rate": report.entries / seconds,
        "peak_mib": _peak_mib(),
    }


def child(phase: str, *args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", phase, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--issuances", type=int, default=400)
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.phase:
        fn = {
            "issue": lambda: phase_issue(a.args[0], a.args[1], int(a.args[2]), a.args[3] == "1"),
            "fill": lambda: phase_fill(a.args[0], int(a.args[1])),
            "export": lambda: phase_export(*a.args),
            "verify": lambda: phase_verify(*a.args),
        }[a.phase]
        print(json.dumps(fn()))
        return
    from ca.config import Settings
    from ca.wiring import ensure_initialised

    url = os.environ["AGENTCA_TEST_DATABASE_URL"]
    work = Path(tempfile.mkdtemp(prefix="agentca-bench-ledger-"))
    data = work / "data"
    ensure_initialised(Settings(data_dir=data, database_url=url))
    rates: dict[str, list[float]] = {"with": [], "without": []}
    for _round in range(3):  # interleaved, so machine noise hits both alike
        for mode in ("without", "with"):
            r = child("issue", str(data), url, str(a.issuances), "1" if mode == "with" else "0")
            rates[mode].append(r["rate"])
    med = {k: sorted(v)[1] for k, v in rates.items()}
    per_issue_ms = (1 / med["with"] - 1 / med["without"]) * 1000
    print(
        f"issuance (PostgreSQL + SoftHSM2, 1 process), median of 3 interleaved runs: "
        f"without ledger {med['without']:.0f}/s, with ledger {med['with']:.0f}/s "
        f"(ratio {med['with'] / med['without']:.2f}; ledger adds {per_issue_ms:.2f} ms "
        f"per issuance = 2 entries)"
    )
    fill = child("fill", url, str(a.entries))
    print(f"filled {a.entries} synthetic entries in {fill['seconds']:.1f} s (COPY)")
    export, cert = str(work / "export.jsonl"), str(work / "audit.pem")
    ex = child("export", str(data), url, export, cert)
    size_mib = os.path.getsize(export) / 2**20
    print(
        f"checkpoint over {ex['entries']:.0f} entries: {ex['checkpoint_seconds']:.1f} s; "
        f"export incl. checkpoint: {ex['seconds']:.1f} s "
        f"({ex['entries'] / ex['seconds']:.0f} entries/s, {size_mib:.0f} MiB), "
        f"peak RSS {ex['peak_mib']:.0f} MiB"
    )
    ve = child("verify", export, cert)
    print(
        f"offline verify: {ve['entries']:.0f} entries in {ve['seconds']:.1f} s = "
        f"{ve['rate']:.0f} entries/s (target >= 100000/s), peak RSS {ve['peak_mib']:.0f} MiB"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
