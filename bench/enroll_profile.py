"""Where one enrollment's time goes: statements, round trips and a profile, in one process.

Usage (needs a PostgreSQL URL; ``scripts/with-postgres.sh`` provides a throwaway one):
    python bench/enroll_profile.py [--n 500] [--profile out.html]

Runs ``POST /v1/enroll`` sequentially through the Flask app in-process (no HTTP server, no
gunicorn), counts the SQL statements and transactions per enrollment, and reports the time
per enrollment; with ``--profile`` it writes a pyinstrument profile of the timed loop.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import event

from bench.enroll_bench import _provenance, bench_runtime
from ca.extensions import build_agent_csr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--profile", type=Path, help="write a pyinstrument HTML profile here")
    parser.add_argument("--show", action="store_true", help="print one enrollment's statements")
    args = parser.parse_args()
    url = os.environ.get("AGENTCA_BENCH_DATABASE_URL") or os.environ["AGENTCA_TEST_DATABASE_URL"]
    data = Path(tempfile.mkdtemp(prefix="agentca-enroll-profile-")) / "data"
    settings, rt = bench_runtime(data, url)
    bodies = []
    for _ in range(args.n + 1):
        token, _exp = rt.enrollment_tokens.create("bench-agent", timedelta(hours=1), "bench")
        key = ec.generate_private_key(ec.SECP256R1())
        csr = build_agent_csr(key, "bench-agent", _provenance())
        pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        bodies.append((token, json.dumps({"csr": pem})))
    rt.close()

    from ca.api.app import create_app

    app = create_app(settings)
    client = app.test_client()

    def enroll(token: str, body: str) -> None:
        resp = client.post(
            "/v1/enroll",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        if resp.status_code != 201:
            sys.exit(f"enrollment failed: {resp.status_code} {resp.get_data(as_text=True)}")

    enroll(*bodies[0])  # opens the runtime, warms caches
    engine = app.extensions["agentca"].get().engine
    statements: Counter[str] = Counter()
    shown: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*a: Any) -> None:
        sql = " ".join(str(a[2]).split())
        statements[sql.split(" ")[0]] += 1
        if args.show and len(shown) < 60:
            shown.append(sql[:160])

    commits = Counter[str]()
    event.listen(engine, "commit", lambda *_: commits.update(["commit"]))
    event.listen(engine, "begin", lambda *_: commits.update(["begin"]))
    checkouts = Counter[str]()
    event.listen(engine.pool, "checkout", lambda *_: checkouts.update(["checkout"]))

    enroll(*bodies[1])
    one = sum(statements.values())
    print(f"statements per enrollment: {one} {dict(statements)}")
    print(f"transactions: {dict(commits)}, pool checkouts: {dict(checkouts)}")
    for line in shown:
        print("  ", line)
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    dbname = engine.url.database or ""
    start, cpu, pg_cpu = time.perf_counter(), time.process_time(), backend_cpu(dbname)
    for token, body in bodies[2:]:
        enroll(token, body)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    pg_cpu = backend_cpu(dbname) - pg_cpu
    if profiler is not None:
        profiler.stop()
        args.profile.write_text(profiler.output_html())
        print(profiler.output_text(unicode=False, color=False, show_all=False)[:12000])
    n = len(bodies) - 2
    print(
        f"{n} sequential enrollments in-process: {elapsed / n * 1000:.2f} ms each, "
        f"{n / elapsed:.0f}/s; this process's CPU {cpu / n * 1000:.2f} ms each; "
        f"its PostgreSQL backends' CPU {pg_cpu / n * 1000:.2f} ms each"
    )


def backend_cpu(dbname: str) -> float:
    """CPU seconds (user + system) used so far by the PostgreSQL backends serving ``dbname``
    on this machine (their process titles name the database; background processes such as
    the WAL writer are not counted)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if not title.startswith("postgres: ") or f" {dbname} " not in title:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


if __name__ == "__main__":
    main()
