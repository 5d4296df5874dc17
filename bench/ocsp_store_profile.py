"""Profile one responder process answering N distinct certificates from the shared store.

    bash scripts/with-postgres.sh .venv/bin/python bench/ocsp_store_profile.py [--certs N]
        [--no-presign] [--profile]

A CA (``agentca init``) on a throwaway PostgreSQL database, N issued certificates
(bench/ocsp_many.seed), the store filled by ``agentca ocsp presign --once``, then one
``Responder`` (the one ``agentca ocsp serve`` builds) answers each certificate once in random
order, in process: no HTTP, so what is left is the responder's own cost per cold request
(parse, hot cache, store query, answer). Prints the median and p99 per request and, with
--profile, pyinstrument's tree of the pass.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _split(blob: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(blob):
        n = blob[i + 1]
        if n < 0x80:
            size, head = n, 2
        else:
            k = n & 0x7F
            size, head = int.from_bytes(blob[i + 2 : i + 2 + k], "big"), 2 + k
        out.append(blob[i : i + head + size])
        i += head + size
    return out


def main() -> None:
    from bench import ocsp_many
    from bench.ocsp_bench import AGENTCA, database_url, drop_database, sh

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--certs", type=int, default=20_000)
    parser.add_argument("--presign", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the lookup")
    parser.add_argument("--cprofile", action="store_true", help="cProfile on CPU time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        url, dbname = database_url(work)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
        env.update({"AGENTCA_DATA_DIR": str(work / "data"), "AGENTCA_DATABASE_URL": url})
        try:
            sh(AGENTCA, "init", env=env)
            chain = sh(AGENTCA, "chain", env=env)
            from cryptography import x509
            from cryptography.hazmat.primitives import serialization

            issuing = x509.load_pem_x509_certificate(chain.encode())
            _, requests, _ = ocsp_many.seed(
                url, issuing.public_bytes(serialization.Encoding.DER), args.certs, work
            )
            if args.presign:
                started = time.monotonic()
                sh(AGENTCA, "ocsp", "presign", "--once", "--rate", "0", "--batch", "2000",
                   env=env)  # fmt: skip
                print(f"presigned {args.certs} in {time.monotonic() - started:.1f} s")
            os.environ.update(env)
            from ca.config import load_settings
            from ocsp.options import OcspOptions
            from ocsp.wiring import open_responder

            rt = open_responder(load_settings(environ=env), OcspOptions(sign_rate_per_client=0))
            ders = _split(requests.read_bytes())
            responder = rt.responder
            responder.respond(ders[0])
            if args.explain:
                import sqlalchemy as sa

                from ocsp.status import _STORED_PG

                engine = sa.create_engine(url)
                with engine.connect() as conn:
                    serial = conn.execute(
                        sa.text("SELECT serial_hex FROM ocsp_responses LIMIT 1")
                    ).scalar_one()
                    raw = conn.connection.driver_connection
                    with raw.cursor() as cur:  # type: ignore[union-attr]
                        cur.execute(
                            "EXPLAIN (ANALYZE, BUFFERS) " + _STORED_PG,
                            (2, [serial], int(time.time())),
                        )
                        print("\n".join(r[0] for r in cur.fetchall()))
                engine.dispose()
            times = []
            profiler = None
            if args.profile:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0005)
                profiler.start()
            cprof = None
            if args.cprofile:
                import cProfile

                cprof = cProfile.Profile(time.process_time)
                cprof.enable()
            cpu = time.process_time()
            for der in ders[1:]:
                t = time.perf_counter()
                answer = responder.respond(der)
                times.append(time.perf_counter() - t)
                assert len(answer.der) > 400, answer.der
            cpu = time.process_time() - cpu
            if cprof is not None:
                import pstats

                cprof.disable()
                pstats.Stats(cprof).sort_stats("tottime").print_stats(18)
            if profiler is not None:
                profiler.stop()
                print(profiler.output_text(unicode=False, color=False, show_all=False))
            times.sort()
            print(
                f"{len(times)} cold requests, one process: median "
                f"{statistics.median(times) * 1e6:.0f} us, p99 "
                f"{times[int(len(times) * 0.99)] * 1e6:.0f} us, "
                f"{len(times) / sum(times):.0f} req/s, responder CPU "
                f"{cpu / len(times) * 1e6:.0f} us per request; tally {responder.tally.take()}"
            )
            rt.close()
        finally:
            if dbname:
                drop_database(dbname)
            subprocess.run(["true"])


if __name__ == "__main__":
    main()
