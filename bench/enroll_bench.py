"""Enrollments per second over HTTP (gunicorn, PostgreSQL, SoftHSM2, P-256), beside the raw
issuance-cycle rate measured in the same run.

Usage (needs a PostgreSQL URL; ``make bench-enroll`` provides a throwaway one):
    python bench/enroll_bench.py [--requests 4000] [--seconds 8] [--workers 2,3,4]

The load generator is wrk on loopback with a Lua script that sends each pre-made request
(distinct one-time token + distinct P-256 CSR with provenance) once; only 201 answers count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.config import Settings
from ca.extensions import (
    Accountability,
    AgentExtensions,
    Authorization,
    Digest,
    Provenance,
    build_agent_csr,
)
from ca.requests import IssuanceRequest
from ca.wiring import Runtime, ensure_initialised, open_runtime

MODEL, PROMPT = "a1" * 32, "c3" * 32
LUA = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
reqs = {}
i = 0
ok = 0
other = 0
function init(args)
  for line in io.lines(args[1]) do
    local tok, body = line:match("^(%S+)\t(.*)$")
    table.insert(reqs, wrk.format("POST", "/v1/enroll",
      {["Authorization"] = "Bearer " .. tok, ["Content-Type"] = "application/json"},
      body))
  end
  local n = #reqs
  local t = tonumber(args[2]); local nt = tonumber(args[3])
  local mine = {}
  for k = t, n, nt do table.insert(mine, reqs[k]) end
  reqs = mine
end
function request()
  i = i + 1
  if i > #reqs then i = #reqs end
  return reqs[i]
end
function response(status, headers, body)
  if status == 201 then ok = ok + 1 else other = other + 1 end
end
"""


def _provenance() -> Provenance:
    return Provenance("claude-x", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT))


def raw_issuance_rate(settings: Settings, n: int) -> float:
    """Issuance cycles per second in-process (record, HSM sign, store), one thread."""
    rt = open_runtime(settings)
    keys = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(n)]
    ext = AgentExtensions(
        _provenance(), Authorization(("read_book",)), Accountability("o@example.com", "prod")
    )
    rt.authority.issue(IssuanceRequest(keys[0], "warmup", ext), "bench")
    start = time.perf_counter()
    for k in keys:
        rt.authority.issue(IssuanceRequest(k, "bench-agent", ext, timedelta(hours=1)), "bench")
    rate = n / (time.perf_counter() - start)
    rt.close()
    return rate


def prepare_requests(settings: Settings, n: int, path: Path) -> None:
    rt = open_runtime(settings)
    lines = []
    for _ in range(n):
        token, _exp = rt.enrollment_tokens.create("bench-agent", timedelta(hours=1), "bench")
        key = ec.generate_private_key(ec.SECP256R1())
        csr = build_agent_csr(key, "bench-agent", _provenance())
        body = json.dumps({"csr": csr.public_bytes(serialization.Encoding.PEM).decode()})
        lines.append(f"{token}\t{body}")
    path.write_text("\n".join(lines) + "\n")
    rt.close()


def run_wrk(port: int, requests_file: Path, seconds: int, connections: int) -> dict[str, float]:
    """wrk with 1 thread (the machine has 2 cores; the server needs them)."""
    lua = requests_file.with_suffix(".lua")
    lua.write_text(
        LUA
        + """
function done(summary, latency, requests)
  local tok, toth = 0, 0
  for _, t in ipairs(threads) do tok = tok + t:get("ok"); toth = toth + t:get("other") end
  io.write(string.format("RESULT ok=%d other=%d\\n", tok, toth))
end
"""
    )
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(lua),
        f"http://127.0.0.1:{port}",
        "--",
        str(requests_file),
        "1",
        "1",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = {}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("RESULT"):
            kv = dict(p.split("=") for p in parts[1:])
            result["ok"], result["other"] = float(kv["ok"]), float(kv["other"])
        if len(parts) == 2 and parts[0] in ("50%", "99%"):
            v = parts[1]
            ms = (
                float(v[:-2])
                if v.endswith("ms")
                else (float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000)
            )
            result["p" + parts[0][:-1]] = ms
    result["rate"] = result["ok"] / seconds
    return result


def bench_runtime(data: Path, url: str) -> tuple[Settings, Runtime]:
    """A CA in ``data`` on ``url`` with no enrollment rate limit and ``bench-agent`` registered."""
    settings = Settings(
        data_dir=data, database_url=url, enroll_rate_per_second=1_000_000, enroll_burst=1_000_000
    )
    ensure_initialised(settings)
    rt = open_runtime(settings)
    rt.registry.add_scope("read_book")
    rt.registry.add_model(MODEL, "claude-x", "prod")
    rt.registry.register_agent(
        "bench-agent",
        "o@example.com",
        "prod",
        "claude-x",
        ["read_book"],
        [MODEL],
        [PROMPT],
        key_types=["ec-p256"],
    )
    return settings, rt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--raw", type=int, default=1000)
    parser.add_argument("--workers", default="2,3,4")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument(
        "--raw-only", nargs=3, metavar=("DATA_DIR", "URL", "N"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.raw_only:
        data_dir, db_url, count = args.raw_only
        print(raw_issuance_rate(Settings(data_dir=Path(data_dir), database_url=db_url), int(count)))
        return
    url = os.environ.get("AGENTCA_BENCH_DATABASE_URL") or os.environ["AGENTCA_TEST_DATABASE_URL"]
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="agentca-bench-enroll-"))
    data = work / "data"
    env_settings = {
        "AGENTCA_DATA_DIR": str(data),
        "AGENTCA_DATABASE_URL": url,
        "AGENTCA_ENROLL_RATE_PER_SECOND": "1000000",
        "AGENTCA_ENROLL_BURST": "1000000",
        "AGENTCA_THREADS": str(args.threads),
    }
    settings, rt = bench_runtime(data, url)
    rt.close()
    # the raw cycle runs in a child process: one PKCS#11 configuration per process
    print("raw issuance cycle (1 process, in-process, PostgreSQL + SoftHSM2): ", end="", flush=True)
    raw = float(
        subprocess.run(
            [sys.executable, __file__, "--raw-only", str(data), url, str(args.raw)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    print(f"{raw:.0f}/s")
    agentca = str(Path(sys.executable).with_name("agentca"))
    results = []
    for workers in [int(w) for w in args.workers.split(",")]:
        reqs = work / f"requests-{workers}.txt"
        prepare_requests(settings, args.requests, reqs)
        port = 18400 + workers
        env = {**os.environ, **env_settings}
        server = subprocess.Popen(
            [agentca, "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                if (
                    subprocess.run(
                        ["curl", "-sf", f"http://127.0.0.1:{port}/health"], capture_output=True
                    ).returncode
                    == 0
                ):
                    break
                time.sleep(0.2)
            res = run_wrk(port, reqs, args.seconds, args.connections)
        finally:
            server.terminate()
            server.wait(15)
        results.append((workers, res))
        print(
            f"HTTP enrollments, {workers} gunicorn workers, {args.connections} connections: "
            f"{res['rate']:.0f}/s (201s={res['ok']:.0f}, other={res['other']:.0f}), "
            f"p50 {res.get('p50', float('nan')):.1f} ms, p99 {res.get('p99', float('nan')):.1f} ms,"
            f" ratio to raw cycle {res['rate'] / raw:.2f}"
        )
    best = max(results, key=lambda r: r[1]["rate"])
    print(
        f"best: {best[1]['rate']:.0f}/s with {best[0]} workers; target 500/s; "
        f"median of runs {statistics.median(r[1]['rate'] for r in results):.0f}/s"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
