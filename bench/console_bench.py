"""Web console page times with many certificates and ledger entries (issue 19).

A real deployment on loopback (``examples.scenario``: ``agentca serve`` with SoftHSM2 on
PostgreSQL), seeded in bulk with N issued certificates (default 100,000) and M ledger entries
(default 1,000,000, the real entry encoding and leaf hashes, by COPY), then every main console
page fetched R times over HTTP by a signed-in operator: median, p95 and max wall time per page.
The keyset pages are also fetched deep (cursor in the middle of the table), where OFFSET would
be slowest.

Usage: python bench/console_bench.py [--certs 100000] [--ledger 1000000] [--actions 1000000]
       [--repeat 20]
Needs AGENTCA_TEST_DATABASE_URL (``scripts/with-postgres.sh`` starts a throwaway PostgreSQL).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ledger_bench import phase_fill
from examples.scenario import AGENT, Scenario
from tests.browser.plain_http import http_call

BUDGET_MS = 200.0  # the bound for any page


def seed_certificates(url: str, n: int) -> int:
    """Insert ``n`` issued certificates (bulk, no certificate bytes); returns a middle id."""
    import sqlalchemy as sa

    from ca.serials import new_serial
    from ca.store.models import Certificate, Issuer

    engine = sa.create_engine(url)
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        with engine.begin() as conn:
            issuer_id = conn.execute(
                sa.select(Issuer.id).where(Issuer.role == "issuing", Issuer.active)
            ).scalar_one()
            for start in range(0, n, 5000):
                rows = []
                for i in range(start, min(n, start + 5000)):
                    s = new_serial()
                    rows.append(
                        {
                            "issuer_id": issuer_id,
                            "serial_hex": format(s, "x"),
                            "status": "revoked" if i % 10 == 0 else "issued",
                            "agent_name": f"bench-{i % 5000}",
                            "subject": f"CN=bench-{i % 5000}",
                            "public_key_sha256": hashlib.sha256(s.to_bytes(20, "big")).digest(),
                            "model_type": "bench-model",
                            "model_digest": "0" * 64,
                            "prompt_digest": "0" * 64,
                            "scopes": "s",
                            "officer": f"officer{i % 50}@example.org",
                            "environment": "bench",
                            "not_before": now - timedelta(minutes=5),
                            "not_after": now + timedelta(hours=1 + i % 400),
                            "requested_by": "bench",
                            "created_at": now,
                            "issued_at": now - timedelta(minutes=i % 3000),
                        }
                    )
                conn.execute(sa.insert(Certificate.__table__), rows)
            lo, hi = conn.execute(
                sa.select(sa.func.min(Certificate.id), sa.func.max(Certificate.id))
            ).one()
            conn.execute(sa.text("ANALYZE certificates"))
        return int((lo + hi) // 2)
    finally:
        engine.dispose()


ACTION_T0 = datetime(2026, 12, 1, tzinfo=UTC)
ACTION_ROUTES = ("/v1/book/{symbol}", "/v1/orders", "/v1/orders/{id}")


def seed_actions(url: str, n: int, agent: str) -> None:
    """Append ``n`` gateway decisions to the action ledger (two gateways, 1,000 agents plus
    ``agent`` every 1,000th, one in five a denial, one a second), by COPY: the rows
    ``ActionLedger.ingest`` would store, with the real leaves and leaf hashes."""
    import psycopg

    from ca.ledger.actions import _row
    from wire.actions import ActionRecord, record_time

    columns = [
        "seq",
        "gateway",
        "gateway_seq",
        "time",
        "agent",
        "serial",
        "officer",
        "method",
        "route",
        "outcome",
        "scope",
        "failed_check",
        "record",
        "leaf_hash",
    ]
    pg = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(pg) as conn:
        base = conn.execute("SELECT size FROM action_ledger_head").fetchone()[0]  # type: ignore[index]
        sql = f"COPY action_records ({', '.join(columns)}) FROM STDIN"
        with conn.cursor().copy(sql) as copy:
            for i in range(n):
                seq = base + i
                deny = i % 5 == 4
                name = agent if i % 1000 == 999 else f"bench-agent-{i % 1000}"
                rec = ActionRecord(
                    gateway=f"bench-gw-{i % 2}",
                    seq=seq // 2,
                    time=record_time(ACTION_T0 + timedelta(seconds=i)),
                    request_id=f"req-{seq}",
                    outcome="deny" if deny else "allow",
                    method="GET" if i % 2 else "POST",
                    route=ACTION_ROUTES[i % 3],
                    scope="read_book",
                    check="scope" if deny else None,
                    http_status=403 if deny else 200,
                    agent=name,
                    serial=format(seq + 1, "x"),
                    officer=f"officer{i % 50}@example.org",
                )
                row = _row(seq, rec)
                copy.write_row(tuple(row[c] for c in columns))
        conn.execute("UPDATE action_ledger_head SET size = size + %s WHERE id = 1", (n,))
        conn.execute("ANALYZE action_records")
        conn.commit()


def sign_in(base: str, token: str) -> dict[str, str]:
    form = http_call(base, "GET", "/console/sign-in")
    pre = re.search(r'name="signin_token" value="([^"]+)"', form.body)
    assert pre is not None
    answer = http_call(
        base,
        "POST",
        "/console/sign-in",
        {"signin_token": pre.group(1), "token": token, "next": "/console/"},
        {"agentca_console_signin": pre.group(1)},
    )
    for header in answer.headers.get_all("Set-Cookie") or []:
        if header.startswith("agentca_console="):
            return {"agentca_console": header.split(";")[0].split("=", 1)[1]}
    raise RuntimeError(f"sign-in failed: {answer.status}")


def time_page(base: str, path: str, cookie: dict[str, str], repeat: int) -> dict[str, Any]:
    first = None
    times = []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        answer = http_call(base, "GET", path, cookies=cookie)
        ms = (time.perf_counter() - t0) * 1000
        if answer.status != 200:
            raise RuntimeError(f"{path}: HTTP {answer.status}: {answer.body[:300]}")
        if i == 0:
            first = ms
        else:
            times.append(ms)
    times.sort()
    return {
        "path": path,
        "first_ms": round(first or 0.0, 1),
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
        "max_ms": round(times[-1], 1),
    }


def time_verification(base: str, cookie: dict[str, str], ledger: str) -> float:
    """Seconds from the verify button to the verdict on the progress page (polled every
    0.2 s, as a browser would every second); the verdict must be OK."""
    page = http_call(base, "GET", "/console/ledger", cookies=cookie)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.body)
    assert csrf is not None
    form = {"csrf_token": csrf.group(1), **({"ledger": "actions"} if ledger == "actions" else {})}
    t0 = time.perf_counter()
    answer = http_call(base, "POST", "/console/ledger/verify", form, cookie)
    if answer.status != 303:
        raise RuntimeError(f"verify: HTTP {answer.status}: {answer.body[:300]}")
    job = answer.headers["Location"]
    while True:
        shown = http_call(base, "GET", job, cookies=cookie)
        if 'id="verify-result"' in shown.body:
            if 'class="ok"' not in shown.body:
                raise RuntimeError(f"verify {ledger}: {shown.body[-800:]}")
            return round(time.perf_counter() - t0, 1)
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--certs", type=int, default=100_000)
    ap.add_argument("--ledger", type=int, default=1_000_000)
    ap.add_argument("--actions", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json", dest="json_out", default="")
    args = ap.parse_args()
    url = os.environ.get("AGENTCA_TEST_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        sys.exit("console_bench: set AGENTCA_TEST_DATABASE_URL (scripts/with-postgres.sh)")
    work = Path(tempfile.mkdtemp(prefix="console-bench-"))
    s = Scenario.create(work / "work", url)
    s.setup()
    s.new_agent()  # the model files exist; the scenario agent enrolls below
    started = time.monotonic()
    middle_id = seed_certificates(url, args.certs)
    seeded_certs = time.monotonic() - started
    started = time.monotonic()
    phase_fill(url, args.ledger)
    seeded_ledger = time.monotonic() - started
    s.cli("ledger", "checkpoint")
    started = time.monotonic()
    seed_actions(url, args.actions, AGENT)
    seeded_actions = time.monotonic() - started
    s.cli("ledger", "checkpoint", "--actions")
    results: dict[str, Any] = {
        "certs": args.certs,
        "ledger_entries": args.ledger,
        "action_records": args.actions,
        "seed_seconds": {
            "certificates": round(seeded_certs, 1),
            "ledger": round(seeded_ledger, 1),
            "actions": round(seeded_actions, 1),
        },
        "pages": [],
    }
    with s.servers(gateway=False):
        s.new_agent().enroll(s.enrollment_token())
        base = s.ca_url
        cookie = sign_in(base, s.operator_token)
        page = http_call(base, "GET", f"/console/certificates?agent={AGENT}", cookies=cookie)
        serial = re.search(r"/console/certificates/([0-9a-f]+)\"", page.body)
        assert serial is not None
        middle_seq = args.ledger // 2
        paths = [
            "/console/",
            "/console/agents",
            f"/console/agents/{AGENT}",
            "/console/certificates",
            "/console/certificates?status=revoked",
            "/console/certificates?officer=officer7@example.org",
            "/console/certificates?agent=bench-4321",
            f"/console/certificates?before={middle_id}",
            f"/console/certificates/{serial.group(1)}",
            "/console/models",
            "/console/api-tokens",
            "/console/ledger",
            "/console/ledger?event=agent.registered",
            "/console/ledger?agent=agent7",
            f"/console/ledger?before={middle_seq}",
            f"/console/ledger/{middle_seq}",
            f"/console/ledger/{middle_seq}?proof=1",
            "/console/ledger/checkpoints",
            "/console/actions",
            "/console/actions?outcome=deny",
            "/console/actions?agent=bench-agent-7",
            "/console/actions?agent=nobody",
            "/console/actions?route=/v1/orders/%7Bid%7D&outcome=deny",
            "/console/actions?officer=officer7@example.org&gateway=bench-gw-1",
            "/console/actions?since=2026-12-05T00:00:00Z&until=2026-12-05T00:10:00Z",
            f"/console/actions?before={args.actions // 2}",
            f"/console/actions/{args.actions // 2}",
            f"/console/actions/{args.actions // 2}?proof=1",
        ]
        for path in paths:
            results["pages"].append(time_page(base, path, cookie, args.repeat))
        results["verify_seconds"] = {
            ledger: time_verification(base, cookie, ledger) for ledger in ("issuance", "actions")
        }
    slowest = max(p["p95_ms"] for p in results["pages"])
    results["slowest_p95_ms"] = slowest
    results["within_budget"] = slowest <= BUDGET_MS
    print(f"{'page':58} {'first':>8} {'median':>8} {'p95':>8} {'max':>8}  (ms)")
    for p in results["pages"]:
        print(
            f"{p['path'][:58]:58} {p['first_ms']:8.1f} {p['median_ms']:8.1f} "
            f"{p['p95_ms']:8.1f} {p['max_ms']:8.1f}"
        )
    print(json.dumps({k: v for k, v in results.items() if k != "pages"}))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
