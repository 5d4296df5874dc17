"""A soak of the CA API under mixed traffic: memory, file descriptors and connections stay flat.

``agentca serve --workers 2`` on real PostgreSQL and SoftHSM2, 40 s (``make faults``: 5 min) of
enrollments, authenticated reads, public reads and health checks from a few threads. After a
warm-up the workers' resident memory, open file descriptors and sockets are sampled; at the
end they must not have grown beyond small bounds, and no answer may be a 500.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.extensions import Digest, Provenance, build_agent_csr
from tests.faults import FULL
from tests.faults.test_crash_enrollment import MODEL, PROMPT, Server, _setup, serving
from tests.integration.conftest import run_cli
from tests.integration.http import call

pytestmark = [pytest.mark.faults, pytest.mark.integration]

SECONDS = 300.0 if FULL else 40.0
WARM_UP = 10.0


def _csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    prov = Provenance("m", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT))
    csr = build_agent_csr(key, "crash-agent", prov)
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _sample(pids: list[int]) -> dict[str, int]:
    """Summed over ``pids``: resident KiB, open file descriptors, open sockets."""
    rss = fds = sockets = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            fds += 1
            with contextlib.suppress(OSError):  # closed meanwhile
                sockets += fd.readlink().name.startswith("socket:")
    return {"rss_kib": rss, "fds": fds, "sockets": sockets}


def test_a_soak_of_mixed_traffic_stays_flat(tmp_path: Path, pg_url: str) -> None:
    with serving(tmp_path, pg_url) as (server, env):
        tokens = _setup(server, env)
        r = run_cli(
            "apitoken", "create", "soak", "--role", "operator", data_dir=server.data, env=env
        )
        assert r.returncode == 0, r.stderr
        op = r.stdout.strip()
        statuses: dict[int, int] = {}
        errors: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def load(paths: list[tuple[str, str | None]]) -> None:
            i = 0
            while not stop.is_set():
                path, token = paths[i % len(paths)]
                i += 1
                try:
                    reply = call(server.base, "GET", path, None, token=token)
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        errors.append(repr(exc)[:200])
                    continue
                with lock:
                    statuses[reply.status] = statuses.get(reply.status, 0) + 1

        def enroll(server: Server) -> None:
            for token in tokens:
                if stop.wait(SECONDS / (len(tokens) + 1)):
                    return
                reply = call(server.base, "POST", "/v1/enroll", {"csr": _csr()}, token=token)
                with lock:
                    statuses[reply.status] = statuses.get(reply.status, 0) + 1

        readers = [
            [("/health", None), ("/ca/chain.pem", None)],
            [("/v1/agents", op), ("/v1/certificates?limit=20", op)],
            [("/ready", None), ("/openapi.json", None)],
        ]
        threads = [threading.Thread(target=load, args=(p,), daemon=True) for p in readers]
        threads.append(threading.Thread(target=enroll, args=(server,), daemon=True))
        for t in threads:
            t.start()
        try:
            time.sleep(WARM_UP)
            workers = server.workers()
            assert len(workers) == 2
            before = _sample(workers)
            time.sleep(SECONDS - WARM_UP)
            after = _sample(workers)
        finally:
            stop.set()
            for t in threads:
                t.join(15)
        assert server.workers() == workers, "a worker died or was replaced during the soak"
    total = sum(statuses.values())
    print(
        f"\n[soak {SECONDS:.0f} s] {total} requests, by status {dict(sorted(statuses.items()))}, "
        f"client errors {len(errors)}; workers before {before}, after {after}"
    )
    assert statuses.get(500, 0) == 0 and not errors, (statuses, errors[:3])
    assert set(statuses) <= {200, 201}, statuses
    assert after["fds"] - before["fds"] <= 8, (before, after)
    assert after["sockets"] - before["sockets"] <= 8, (before, after)
    assert after["rss_kib"] - before["rss_kib"] <= max(16_384, before["rss_kib"] // 5), (
        before,
        after,
    )
