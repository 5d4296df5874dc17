"""The many-certificates OCSP scenario of bench/ocsp_bench.py (issue 15, ``--certs N``).

N distinct issued certificates (rows inserted straight into ``certificates`` for the issuing
CA, real 159-bit random serials; no certificate bytes: the responder reads status only), the
same N lines in openssl's ``index.txt``, and N DER OCSP requests (one SHA-1 CertID, no nonce)
in random order in one file that ``bench/many.lua`` splits between wrk's threads.

- cold: every certificate asked once; req/s is N over the time from wrk's first connection to
  the last thread's last answer of its share (wrk is then interrupted; what a finished thread
  repeated meanwhile is not counted), capped at ``--cold-seconds``;
- warm: the same certificates again, in another random order, for ``--duration`` seconds.

Per worker: RSS (``VmRSS``) before the cold pass, after it and after the warm pass, and the
number of answers each worker gave, read from the ``X-Agentca-Worker`` header every answer
of ours carries (decision 0037). Answers under 400 bytes (an error status, e.g. tryLater,
instead of a signed answer) are counted and reported.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

LUA = Path(__file__).with_name("many.lua")


@dataclass
class Pass:
    """One wrk pass of the scenario."""

    rps: float = 0.0  # cold: the requests of the pass over the time until the last answer
    wrk_rps: float = 0.0  # as wrk reports it (a cold pass: with the repeats after each share)
    p50_ms: float | None = None
    p99_ms: float | None = None
    answered: int = 0
    short: int = 0
    seconds: float = 0.0
    complete: bool = True
    workers: dict[str, int] = field(default_factory=dict)
    errors: str = ""
    command: str = ""


def seed(db_url: str, issuing_der: bytes, n: int, work: Path) -> tuple[Path, Path, list[int]]:
    """Insert ``n`` issued certificates; write their index lines and requests (random order).

    Returns (index lines file, requests file, serials)."""
    import sqlalchemy as sa
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp

    from ca.clock import utcnow
    from ca.serials import new_serial
    from ca.store.models import Certificate, Issuer

    issuing = x509.load_der_x509_certificate(issuing_der)
    engine = sa.create_engine(db_url)
    now = utcnow().replace(microsecond=0)
    not_after = now + timedelta(hours=12)
    serials = [new_serial() for _ in range(n)]
    with engine.begin() as conn:
        issuer_id, name_hash, key_hash = conn.execute(
            sa.select(Issuer.id, Issuer.name_hash_sha1, Issuer.key_hash_sha1).where(
                Issuer.certificate_der == issuing_der
            )
        ).one()
        table = Certificate.__table__
        for start in range(0, n, 5000):
            rows = [
                {
                    "issuer_id": issuer_id,
                    "serial_hex": format(s, "x"),
                    "status": "issued",
                    "agent_name": f"many-{start + i}",
                    "subject": f"CN=many-{start + i}",
                    "public_key_sha256": hashlib.sha256(s.to_bytes(20, "big")).digest(),
                    "model_type": "m",
                    "model_digest": "0" * 64,
                    "prompt_digest": "0" * 64,
                    "scopes": "s",
                    "officer": "o@example.org",
                    "environment": "bench",
                    "not_before": now - timedelta(minutes=5),
                    "not_after": not_after,
                    "requested_by": "bench",
                    "created_at": now,
                    "issued_at": now,
                }
                for i, s in enumerate(serials[start : start + 5000])
            ]
            conn.execute(sa.insert(table), rows)
    engine.dispose()
    expiry = not_after.strftime("%y%m%d%H%M%SZ")
    index = work / "many-index.txt"
    with index.open("w") as out:
        for i, s in enumerate(serials):
            hexs = format(s, "X")
            hexs = ("0" if len(hexs) % 2 else "") + hexs
            out.write(f"V\t{expiry}\t\t{hexs}\tunknown\t/CN=many-{i}\n")
    sha1 = hashes.SHA1()
    ders = [
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(name_hash, key_hash, s, sha1)
        .build()
        .public_bytes(serialization.Encoding.DER)
        for s in serials
    ]
    assert issuing.subject is not None
    rng = random.Random(secrets.randbits(64))
    for name in ("many-cold.bin", "many-warm.bin"):
        rng.shuffle(ders)
        (work / name).write_bytes(b"".join(ders))
    return index, work / "many-cold.bin", serials


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def private_kb(pid: int) -> int:
    """``RssAnon`` of ``pid`` in KiB: its own memory, without the file pages (the answer map,
    shared by every worker of the host through the page cache) that ``VmRSS`` also counts."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_for_map(path: Path, seconds: float = 120.0) -> float:
    """Seconds until the answer map at ``path`` exists (a worker builds it at start)."""
    started = time.monotonic()
    while not path.exists():
        if time.monotonic() - started > seconds:
            raise SystemExit(f"no answer map at {path} after {seconds:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def answers_by_cache(metrics_url: str) -> dict[str, float]:
    """``agentca_ocsp_responses_total`` summed per ``cache`` label (hit, map, store, miss,
    none) from the server's /metrics: where the answers of a pass came from."""
    import re
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("agentca_ocsp_responses_total{"):
            found = re.search(r'cache="([^"]*)"', line)
            if found:
                key = found.group(1)
                out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (gunicorn's workers)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return sorted(int(p) for p in text.split())


def wrk_pass(
    url: str,
    requests: Path,
    total: int,
    mode: str,
    threads: int,
    connections: int,
    seconds: int,
    parse: Callable[[str], dict[str, Any]],
) -> Pass:
    """One wrk pass with bench/many.lua; a cold pass ends once every thread has its share."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    cmd += ["-s", str(LUA), url, "--", str(requests), mode, str(threads)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    done = ready = 0
    interrupted = False
    for line in proc.stdout:
        word = line.strip()
        if word == "cold-ready":
            ready += 1
            if ready == threads:
                started = time.monotonic()  # the requests are loaded; connections start now
            continue
        if word == "cold-done":
            done += 1
            if done == threads and not interrupted:
                elapsed = time.monotonic() - started
                proc.send_signal(signal.SIGINT)  # stop the threads repeating their last request
                interrupted = True
            continue
        lines.append(line)
    proc.wait(seconds + 30)
    if not interrupted:
        elapsed = time.monotonic() - started
    text = "".join(lines)
    stats = parse(text)
    result = Pass(
        rps=stats["rps"],
        wrk_rps=stats["rps"],
        p50_ms=stats["p50_ms"],
        p99_ms=stats["p99_ms"],
        seconds=elapsed,
        complete=mode != "cold" or interrupted,
        errors=stats["errors"],
        command=" ".join(cmd),
    )
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "thread" and len(parts) == 3:
            result.answered += int(parts[1])
            result.short += int(parts[2])
        elif parts[0] == "worker" and len(parts) == 3:
            result.workers[parts[1]] = result.workers.get(parts[1], 0) + int(parts[2])
    if mode == "cold" and interrupted:
        result.rps = total / elapsed if elapsed > 0 else 0.0
    return result


def split_text(workers: dict[str, int]) -> str:
    """'pid: n (share)' per worker, largest first."""
    total = sum(workers.values()) or 1
    items = sorted(workers.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{pid}: {n} ({n / total:.0%})" for pid, n in items)


def balance_runs(
    url: str,
    der: bytes,
    work: Path,
    runs: int,
    seconds: int,
    parse: Callable[[str], dict[str, Any]],
) -> list[dict[str, int]]:
    """The per-worker split of ``runs`` fresh wrk runs with 8 keep-alive connections opened
    at once (``-t2 -c8``, one cached request): answers per worker pid in each run."""
    requests = work / "balance.bin"
    requests.write_bytes(der * 2)  # one request for each of wrk's two threads
    return [wrk_pass(url, requests, 2, "warm", 2, 8, seconds, parse).workers for _ in range(runs)]


def shares_text(workers: dict[str, int]) -> str:
    """'61/39' style: each worker's share of the answers, largest first."""
    total = sum(workers.values()) or 1
    return "/".join(f"{100 * n / total:.0f}" for n in sorted(workers.values(), reverse=True))


def wait_for_workers(url: str, der: bytes, workers: int, timeout: float = 60.0) -> set[str]:
    """POST ``der`` on fresh connections until ``workers`` distinct workers have answered
    (``X-Agentca-Worker``), so that a pass does not start while one is still booting."""
    import urllib.request

    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers and time.monotonic() < deadline:
        req = urllib.request.Request(
            url, data=der, headers={"Content-Type": "application/ocsp-request"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            seen.add(resp.headers.get("X-Agentca-Worker", "-"))
        time.sleep(0.01)
    return seen
