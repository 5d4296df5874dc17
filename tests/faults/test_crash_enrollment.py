"""kill -9 of a CA API worker, and of the whole service, during enrollments (issue 10, 4-5).

``agentca serve --workers 2`` on real PostgreSQL and a managed SoftHSM2 token, a short
reconciliation bound (``AGENTCA_PENDING_RECONCILE_SECONDS``), a few client threads each
enrolling with one token per request and retrying the same token and CSR on any failure
(connection lost, 409 in progress, 503) until it gets a certificate. Then: every certificate a
client received has its issued record, no record stays pending beyond the bound, every token
whose request failed was retried successfully, no token yielded two certificates, no 500, and
the ledger verifies. Figures are printed (``-s``) for docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.extensions import Digest, Provenance, build_agent_csr
from tests.faults import FULL
from tests.integration.conftest import AGENTCA, run_cli
from tests.integration.http import call
from tests.integration.servers import free_port, wait_http

pytestmark = [pytest.mark.faults, pytest.mark.integration]

BOUND = 3  # seconds a reservation may stay pending (the test's reconciliation bound)
MODEL, PROMPT = "a1" * 32, "c3" * 32
THREADS = 6
TOKENS = 160 if FULL else 48


@dataclass
class Stats:
    received: dict[str, list[str]] = field(default_factory=dict)  # token -> serials received
    fingerprints: dict[str, str] = field(default_factory=dict)  # serial -> SHA-256 of its DER
    failed_tokens: set[str] = field(default_factory=set)  # a request with it failed once
    errors: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    unfinished: list[str] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)  # e.g. 401 "already used"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, what: str) -> None:
        with self.lock:
            self.errors[what] = self.errors.get(what, 0) + 1


class Server:
    def __init__(self, data: Path, env: dict[str, str]) -> None:
        self.data, self.env, self.port = data, env, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> float:
        """Start ``agentca serve`` on the fixed port (retrying while orphans hold it)."""
        t0 = time.monotonic()
        while True:
            self.starts += 1
            log = open(self.data.parent / f"serve-{self.starts}.log", "w")  # noqa: SIM115
            self.proc = subprocess.Popen(
                [AGENTCA, "serve", "--workers", "2", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                wait_http(self.base + "/health", timeout=20)
                return time.monotonic() - t0
            except OSError:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait(10)
                if time.monotonic() - t0 > timeout:
                    raise

    def workers(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextmanager
def serving(tmp_path: Path, pg_url: str) -> Iterator[tuple[Server, dict[str, str]]]:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.pop("SOFTHSM2_CONF", None)
    env.update(
        AGENTCA_DATA_DIR=str(data),
        AGENTCA_DATABASE_URL=pg_url,
        AGENTCA_PENDING_RECONCILE_SECONDS=str(BOUND),
        AGENTCA_RECONCILE_INTERVAL_SECONDS="1",
        AGENTCA_ENROLL_RATE_PER_SECOND="1000",
        AGENTCA_ENROLL_BURST="1000",
    )
    server = Server(data, env)
    server.start()
    try:
        yield server, env
    finally:
        server.stop()


def _setup(server: Server, env: dict[str, str]) -> list[str]:
    r = run_cli("apitoken", "create", "ops", "--role", "operator", data_dir=server.data, env=env)
    assert r.returncode == 0, r.stderr
    op = r.stdout.strip()
    b = server.base
    assert call(b, "POST", "/v1/scopes", {"name": "read_book"}, token=op).status == 201
    m = {"digest": MODEL, "model_type": "m", "environment": "prod"}
    assert call(b, "POST", "/v1/models", m, token=op).status == 201
    agent = {
        "name": "crash-agent",
        "officer": "o@example.com",
        "environment": "prod",
        "model_type": "m",
        "scopes": ["read_book"],
        "model_digests": [MODEL],
        "prompt_digests": [PROMPT],
        "key_types": ["ec-p256"],
        "max_validity_seconds": 3600,
    }
    assert call(b, "POST", "/v1/agents", agent, token=op).status == 201
    tokens = []
    for _ in range(TOKENS):
        t = call(b, "POST", "/v1/agents/crash-agent/enrollment-tokens", None, token=op)
        assert t.status == 201, t.body
        tokens.append(str(t.json["token"]))
    return tokens


def _client(server: Server, tokens: list[str], stats: Stats, deadline: float) -> None:
    try:
        _enroll_all(server, tokens, stats, deadline)
    except Exception as exc:  # reported by the test, not lost in the thread
        with stats.lock:
            stats.refused.append((0, repr(exc)[:300]))


def _enroll_all(server: Server, tokens: list[str], stats: Stats, deadline: float) -> None:
    for token in tokens:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = build_agent_csr(
            key, "crash-agent", Provenance("m", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT))
        ).public_bytes(serialization.Encoding.PEM)
        while True:
            if time.monotonic() > deadline:
                with stats.lock:
                    stats.unfinished.append(token)
                break
            try:
                r = call(server.base, "POST", "/v1/enroll", {"csr": csr.decode()}, token=token)
            except (OSError, http.client.HTTPException) as exc:  # refused / cut by the kill
                stats.note(type(exc).__name__)
                with stats.lock:
                    stats.failed_tokens.add(token)
                time.sleep(0.2)
                continue
            with stats.lock:
                stats.statuses[r.status] = stats.statuses.get(r.status, 0) + 1
            if r.status == 201:
                cert = x509.load_pem_x509_certificate(r.json["certificate_pem"].encode())
                assert cert.public_key() == key.public_key()
                serial = format(cert.serial_number, "x")
                der = cert.public_bytes(serialization.Encoding.DER)
                with stats.lock:
                    stats.received.setdefault(token, []).append(serial)
                    stats.fingerprints[serial] = hashlib.sha256(der).hexdigest()
                break
            with stats.lock:
                stats.failed_tokens.add(token)
                if r.status not in (409, 503):  # never 401 "already used", never 500
                    stats.refused.append((r.status, r.body.decode()[:200]))
                    break
            time.sleep(min(1.0, float(r.headers.get("retry-after", "0.3"))))


def _stream(server: Server, tokens: list[str], fault: Any) -> tuple[Stats, dict[str, float]]:
    stats = Stats()
    deadline = time.monotonic() + 90
    chunks = [tokens[i::THREADS] for i in range(THREADS)]
    threads = [threading.Thread(target=_client, args=(server, c, stats, deadline)) for c in chunks]
    for t in threads:
        t.start()
    figures = fault(stats)
    t0 = time.monotonic()
    for t in threads:
        t.join(120)
    figures["drain_s"] = time.monotonic() - t0
    return stats, figures


def _check(server: Server, env: dict[str, str], pg_url: str, stats: Stats, label: str) -> None:
    assert not stats.refused, f"{len(stats.refused)} retries refused: {stats.refused[:3]}"
    assert not stats.unfinished, f"tokens never enrolled: {len(stats.unfinished)}"
    assert stats.statuses.get(500, 0) == 0
    assert all(len(set(v)) == 1 for v in stats.received.values()), "a token yielded two serials"
    assert len(stats.received) == TOKENS  # every token, also those that failed, enrolled
    engine = sa.create_engine(pg_url)
    time.sleep(BOUND + 2.5)  # the bound plus one reconciliation interval and some margin
    with engine.connect() as c:
        rows = c.execute(
            sa.text("SELECT serial_hex, status, enrollment_token_id FROM certificates")
        ).all()
        stored = dict(
            c.execute(sa.text("SELECT serial_hex, fingerprint_sha256 FROM certificates")).all()
        )
        issued_entries = [
            json.loads(body)
            for (body,) in c.execute(
                sa.text("SELECT body FROM ledger_entries WHERE event = 'certificate.issued'")
            )
        ]
        oldest_pending = c.execute(
            sa.text(
                "SELECT EXTRACT(EPOCH FROM now() - min(created_at)) FROM certificates "
                "WHERE status = 'pending'"
            )
        ).scalar()
        released = c.execute(
            sa.text("SELECT count(*) FROM ledger_entries WHERE event = 'enrollment_token.released'")
        ).scalar()
        reconciled = c.execute(
            sa.text(
                "SELECT count(*) FROM ledger_entries WHERE event = 'certificate.failed' "
                "AND body LIKE :pattern"
            ),
            {"pattern": '%"reconciled":true%'},
        ).scalar()
    engine.dispose()
    status = {serial: st for serial, st, _ in rows}
    for serials in stats.received.values():
        assert status.get(serials[0]) == "issued", serials[0]
    # every certificate a client was handed has its record and its ledger entry, for the
    # very certificate the client holds (decision 0039: no answer before both are committed)
    in_ledger = {e["serial"]: e["fingerprint_sha256"] for e in issued_entries}
    for serial, fingerprint in stats.fingerprints.items():
        assert stored.get(serial) == fingerprint, serial
        assert in_ledger.get(serial) == fingerprint, serial
    assert [s for s in status.values() if s == "pending"] == [], oldest_pending
    live = [t for _, st, t in rows if st != "failed"]
    assert len(live) == len(set(live)) == TOKENS
    ledger_ok = _ledger_verifies(server, env)
    print(
        f"\n[{label}] tokens {TOKENS}; requests by status {dict(sorted(stats.statuses.items()))}; "
        f"connection errors {stats.errors}; tokens whose request failed "
        f"{len(stats.failed_tokens)} (all retried successfully); failed reservations "
        f"{sum(1 for s in status.values() if s == 'failed')} (reconciled {reconciled}, tokens "
        f"released {released}); ledger verifies {ledger_ok}"
    )
    assert ledger_ok


def _ledger_verifies(server: Server, env: dict[str, str]) -> bool:
    work = server.data.parent
    audit, export = work / "audit.pem", work / "export.jsonl"
    for args in (
        ("ledger", "checkpoint", "--certificate", str(audit)),
        ("ledger", "export", "--out", str(export)),
    ):
        r = run_cli(*args, data_dir=server.data, env=env)
        assert r.returncode == 0, r.stderr
    r = run_cli("ledger", "verify", str(export), "--trust", str(audit), data_dir=server.data)
    return r.returncode == 0


def _wait_for_certificates(stats: Stats, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(stats.received) < n and time.monotonic() < deadline:
        time.sleep(0.05)


def test_kill_9_of_a_worker_during_enrollments(tmp_path: Path, pg_url: str) -> None:
    with serving(tmp_path, pg_url) as (server, env):
        tokens = _setup(server, env)

        def kill_worker(stats: Stats) -> dict[str, float]:
            _wait_for_certificates(stats, TOKENS // 6)
            victims = server.workers()
            assert victims
            os.kill(victims[0], signal.SIGKILL)
            t0 = time.monotonic()
            _wait_for_certificates(stats, TOKENS // 6 + 8)
            return {"killed_pid": victims[0], "next_8_certificates_s": time.monotonic() - t0}

        stats, figures = _stream(server, tokens, kill_worker)
        print(f"\n[worker kill -9] {json.dumps(figures)}")
        _check(server, env, pg_url, stats, "worker kill -9")


def test_kill_9_of_the_master_and_workers_then_restart(tmp_path: Path, pg_url: str) -> None:
    """The whole service dies at once (kill -9 of the master, then at once of its workers:
    a host crash, the OOM killer, systemd's SIGKILL of the unit), and is started again."""
    with serving(tmp_path, pg_url) as (server, env):
        tokens = _setup(server, env)

        def kill_all(stats: Stats) -> dict[str, float]:
            _wait_for_certificates(stats, TOKENS // 6)
            assert server.proc is not None
            workers = server.workers()
            os.kill(server.proc.pid, signal.SIGKILL)
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            server.proc.wait(10)
            t0 = time.monotonic()
            for pid in workers:  # reaped by init; wait until they are gone
                while time.monotonic() - t0 < 20:
                    try:
                        os.kill(pid, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.05)
            started = server.start(timeout=60)
            down = time.monotonic() - t0
            before = len(stats.received)
            _wait_for_certificates(stats, before + 8)
            return {
                "restart_s": started,
                "serve_starts": server.starts,
                "down_s": down,
                "next_8_certificates_after_restart_s": time.monotonic() - t0 - down,
            }

        stats, figures = _stream(server, tokens, kill_all)
        print(f"\n[master+workers kill -9] {json.dumps(figures)}")
        _check(server, env, pg_url, stats, "master+workers kill -9")
