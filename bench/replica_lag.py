"""Replica lag: how far a PostgreSQL streaming replica trails the primary, idle and under load.

Usage: scripts/with-postgres.sh python bench/replica_lag.py [--duration 10] [--writers 4] [--json]
(``make bench-replica``).

A hot standby of the throwaway server is made with ``pg_basebackup`` (tests/support/pg_replica).
With the replication heartbeat running (``ca.store.heartbeat``, 4 beats a second), two figures
are sampled every 50 ms, first idle, then while ``--writers`` threads commit small
transactions on the primary as fast as they can:

- **visibility**: a marker row committed on the primary, polled on the replica until it is
  there (the true delay of a revocation reaching a replica responder's database);
- **reported lag**: ``clock_timestamp() - pg_last_xact_replay_timestamp()`` on the replica,
  what the OCSP responder subtracts from its freshness (decision 0029).

Both are compared with the responders' 1 s freshness bound; the reference in the same run is
the same marker read back from the primary itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from ca.store.heartbeat import run_heartbeat  # noqa: E402
from tests.conftest import PgServer  # noqa: E402
from tests.support.pg_replica import on_server, streaming_replica  # noqa: E402

BOUND = 1.0


def _primary() -> PgServer:
    env = os.environ
    url, bindir, datadir = (env.get(k, "") for k in ("AGENTCA_TEST_DATABASE_URL",
                                                     "AGENTCA_TEST_PG_BINDIR",
                                                     "AGENTCA_TEST_PG_DATADIR"))  # fmt: skip
    if not (url and bindir and datadir):
        raise SystemExit("run under scripts/with-postgres.sh (make bench-replica)")
    log = env.get("AGENTCA_TEST_PG_LOGFILE", str(Path(datadir).parent / "server.log"))
    return PgServer(url, Path(bindir), Path(datadir), env.get("AGENTCA_TEST_PG_RUNAS", ""),
                    Path(log))  # fmt: skip


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def _probe(primary: sa.Engine, replica: sa.Engine, seconds: float) -> dict[str, list[float]]:
    """Marker visibility on the replica and on the primary, and reported lag, every 50 ms."""
    seen: dict[str, list[float]] = {"visibility": [], "reference": [], "reported": []}
    end = time.monotonic() + seconds
    with primary.connect() as p, replica.connect() as r:
        while time.monotonic() < end:
            marker = int(time.time_ns())
            with p.begin():
                p.execute(sa.text("INSERT INTO bench_marks (mark) VALUES (:m)"), {"m": marker})
            committed = time.monotonic()
            p.commit()
            found = p.execute(sa.text("SELECT 1 FROM bench_marks WHERE mark = :m"), {"m": marker})
            assert found.first() is not None
            seen["reference"].append(time.monotonic() - committed)
            p.commit()
            while True:
                row = r.execute(
                    sa.text("SELECT 1 FROM bench_marks WHERE mark = :m"), {"m": marker}
                ).first()
                r.commit()
                if row is not None:
                    seen["visibility"].append(time.monotonic() - committed)
                    break
                if time.monotonic() - committed > 30:
                    raise SystemExit("the replica did not replay a marker within 30 s")
            lag = r.execute(
                sa.text(
                    "SELECT EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())"
                )
            ).scalar()
            r.commit()
            seen["reported"].append(max(0.0, float(lag or 0.0)))
            time.sleep(0.05)
    return seen


def _writers(
    url: str, count: int, stop: threading.Event, done: list[int]
) -> list[threading.Thread]:
    def work() -> None:
        engine = sa.create_engine(url, poolclass=NullPool)
        n = 0
        with engine.connect() as conn:
            while not stop.is_set():
                with conn.begin():
                    conn.execute(
                        sa.text("INSERT INTO bench_load (payload) VALUES (:p)"), {"p": "x" * 200}
                    )
                n += 1
        engine.dispose()
        done.append(n)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    return threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    primary = _primary()
    admin = sa.create_engine(primary.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"agentca_bench_{os.getpid()}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    db_url = make_url(primary.url).set(database=name).render_as_string(False)
    result: dict[str, Any] = {"writers": args.writers, "duration_s": args.duration}
    try:
        setup = sa.create_engine(db_url, poolclass=NullPool)
        with setup.begin() as conn:
            conn.execute(sa.text("CREATE TABLE bench_marks (mark bigint PRIMARY KEY)"))
            conn.execute(sa.text("CREATE TABLE bench_load (id bigserial, payload text)"))
        setup.dispose()
        with streaming_replica(primary) as replica:
            p_engine = sa.create_engine(db_url, poolclass=NullPool)
            r_engine = sa.create_engine(on_server(replica.url, db_url), poolclass=NullPool)
            stop_beat = threading.Event()
            beat_engine = sa.create_engine(db_url, poolclass=NullPool)
            beat = threading.Thread(target=run_heartbeat, args=(beat_engine, 0.25, stop_beat))
            beat.start()
            try:
                time.sleep(1.0)  # let the replica connect and catch up
                result["idle"] = {
                    k: _quantiles(v) for k, v in _probe(p_engine, r_engine, args.duration).items()
                }
                stop, counts = threading.Event(), []  # type: ignore[var-annotated]
                threads = _writers(db_url, args.writers, stop, counts)
                started = time.monotonic()
                loaded = _probe(p_engine, r_engine, args.duration)
                stop.set()
                for t in threads:
                    t.join(30)
                elapsed = time.monotonic() - started
                result["load"] = {k: _quantiles(v) for k, v in loaded.items()}
                result["load"]["commits_per_s"] = round(sum(counts) / elapsed)
            finally:
                stop_beat.set()
                beat.join(10)
                for engine in (p_engine, r_engine, beat_engine):
                    engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    worst = max(result["load"]["visibility"]["max_ms"], result["load"]["reported"]["max_ms"])
    result["bound_ms"] = BOUND * 1000
    result["within_bound"] = worst < BOUND * 1000
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return
    print(f"replica lag, {args.writers} writers, {args.duration:g} s per phase (bound {BOUND:g} s)")
    for phase in ("idle", "load"):
        for figure in ("reference", "visibility", "reported"):
            q = result[phase][figure]
            print(f"  {phase:5} {figure:10}  p50 {q['p50_ms']:8.2f} ms  p99 {q['p99_ms']:8.2f} ms"
                  f"  max {q['max_ms']:8.2f} ms  (n={q['n']})")  # fmt: skip
    print(f"  load: {result['load']['commits_per_s']} commits/s on the primary")
    verdict = "within" if result["within_bound"] else "NOT within"
    print(f"  worst under load {worst:.1f} ms: {verdict} the bound")


if __name__ == "__main__":
    main()
