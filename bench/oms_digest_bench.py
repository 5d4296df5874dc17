"""OMS model digest throughput: ``wire.oms`` next to ``sha256sum`` on the same files, same run.

    python bench/oms_digest_bench.py [--gib 2] [--files 8] [--generated] [--dir DIR]

Makes a model directory of ``--files`` files totalling ``--gib`` GiB: sparse by default (the
page cache serves zeros, so both tools are measured on hashing, not on the disk), or with
``--generated`` pseudo-random content written once. ``openssl dgst -sha256`` runs too, as a
third column: coreutils' ``sha256sum`` may not use the CPU's SHA instructions, OpenSSL (and so
Python's hashlib) does. Each tool runs in a child process whose own
peak RSS comes from GNU ``time`` (``%M``), so the figure is the child's, not the bench's.
The root digest recomputed from ``sha256sum``'s per-file digests must equal ``wire.oms``'s, or
the run fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys, time
from wire.oms import model_digest
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
d = model_digest(sys.argv[1])
took = time.perf_counter() - t
print(json.dumps({"seconds": took, "root": d.root.hex(), "rss_before_kib": before}))
"""


def make_model(where: Path, total: int, files: int, generated: bool) -> list[Path]:
    where.mkdir(parents=True, exist_ok=True)
    size = total // files
    paths = []
    block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB of non-zero bytes
    for i in range(files):
        p = where / f"shard-{i:03d}.bin"
        with open(p, "wb") as fh:
            if generated:
                for n in range(size // len(block)):
                    fh.write(
                        hashlib.sha256(n.to_bytes(8, "big") + bytes([i])).digest() + block[32:]
                    )
                fh.truncate(size)
            else:
                fh.truncate(size)
        paths.append(p)
    return paths


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[str, float, int]:
    """stdout, wall seconds and the child's own peak RSS in KiB.

    Through GNU ``/usr/bin/time`` when present: ``wait4`` on a child forked from this Python
    would count the forked copy of the bench (about 12 MiB) as the child's peak."""
    start = time.perf_counter()
    with tempfile.NamedTemporaryFile("r") as rss:
        timed = (
            ["/usr/bin/time", "-f", "%M", "-o", rss.name] if Path("/usr/bin/time").exists() else []
        )
        proc = subprocess.Popen([*timed, *args], stdout=subprocess.PIPE, env=env, cwd=REPO)
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{args[0]} failed")
        peak = int(rss.read().strip().splitlines()[-1]) if timed else usage.ru_maxrss
    return out, wall, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--generated", action="store_true", help="real content, not sparse files")
    ap.add_argument("--dir", type=Path, default=None, help="where to make the model")
    ap.add_argument("--json", action="store_true")
    opts = ap.parse_args()
    total = int(opts.gib * (1 << 30))
    base = Path(tempfile.mkdtemp(prefix="oms-bench-", dir=opts.dir))
    try:
        paths = make_model(base / "model", total, opts.files, opts.generated)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        # warm the page cache once so neither tool pays for the first read
        subprocess.run(["cat", *map(str, paths)], stdout=subprocess.DEVNULL, check=True)
        out, oms_wall, oms_rss = run([sys.executable, "-c", CHILD, str(base / "model")], env)
        oms = json.loads(out)
        sums, sha_wall, sha_rss = run(["sha256sum", *map(str, paths)])
        digests = [bytes.fromhex(line.split()[0]) for line in sums.splitlines()]
        root = hashlib.sha256(b"".join(digests)).hexdigest()
        if root != oms["root"]:
            raise SystemExit(f"root digests differ: wire.oms {oms['root']}, sha256sum {root}")
        mb = total / 1e6
        ossl_mb_s = None
        if shutil.which("openssl"):
            _, ossl_wall, _ = run(["openssl", "dgst", "-sha256", *map(str, paths)])
            ossl_mb_s = round(mb / ossl_wall, 1)
        result = {
            "bytes": total,
            "files": opts.files,
            "content": "generated" if opts.generated else "sparse",
            "wire_oms_mb_s": round(mb / oms["seconds"], 1),
            "wire_oms_peak_rss_mib": round(oms_rss / 1024, 1),
            "wire_oms_rss_growth_mib": round((oms_rss - oms["rss_before_kib"]) / 1024, 1),
            "sha256sum_mb_s": round(mb / sha_wall, 1),
            "sha256sum_peak_rss_mib": round(sha_rss / 1024, 1),
            "openssl_dgst_mb_s": ossl_mb_s,
            "python_wall_s": round(oms_wall, 2),
            "root": root,
        }
        if opts.json:
            print(json.dumps(result))
        else:
            for k, v in result.items():
                print(f"{k:26} {v}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
