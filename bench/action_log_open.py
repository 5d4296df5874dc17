"""How long a gateway's action log takes to open (verify) and how big it is, by record count.

    PYTHONPATH=$PWD .venv/bin/python bench/action_log_open.py --records 100000 1000000

Each size: a fresh log in a temporary directory filled with short anonymous denials through
the real ``ActionLog`` (its writer thread, fsyncs and checkpoints), closed, then opened again
and timed; the directory is removed afterwards. Figures: docs/performance.md, "Action log
open time".
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from gateway.action_log import RECORDS, ActionLog, keygen
from gateway.httpsig import RequestView
from gateway.problems import Check, Denied
from gateway.verifier import Decision, _LogLine


def _line(n: int) -> _LogLine:
    d = Decision(False, denial=Denied(Check.SCOPE, "no"), scope="s")
    return _LogLine(d, RequestView("GET", "/", "", {"x-request-id": f"r{n}"}), 1e9 + n, 403, "/")


def measure(records: int) -> tuple[float, float, int]:
    """(seconds to write, seconds to open, bytes of actions.log) for ``records`` records."""
    base = Path(tempfile.mkdtemp(prefix="agentca-log-open-"))
    try:
        keygen(base / "k.pem")
        started = time.perf_counter()
        with ActionLog(base / "log", "bench-1", base / "k.pem", max_unshipped_records=1 << 40,
                       max_unshipped_bytes=1 << 50, anonymous_share=0.99) as log:  # fmt: skip
            for n in range(records):
                log.append(_line(n))
                if n % 5000 == 4999:
                    log.flush(60)
            log.flush(120)
            log.checkpoint_now(60)
        wrote = time.perf_counter() - started
        started = time.perf_counter()
        log = ActionLog(base / "log", "bench-1", base / "k.pem", max_unshipped_records=1 << 40,
                        max_unshipped_bytes=1 << 50, anonymous_share=0.99)  # fmt: skip
        opened = time.perf_counter() - started
        assert log.size == records, (log.size, records)
        log.close()
        return wrote, opened, (base / "log" / RECORDS).stat().st_size
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, nargs="+", default=[100_000])
    args = parser.parse_args()
    print("| records | actions.log | write | open | open per record |")
    print("|---:|---:|---:|---:|---:|")
    for n in args.records:
        wrote, opened, size = measure(n)
        print(f"| {n:,} | {size / 1e6:.0f} MB | {wrote:.1f} s | {opened:.1f} s | "
              f"{opened / n * 1e6:.0f} µs |")  # fmt: skip


if __name__ == "__main__":
    main()
