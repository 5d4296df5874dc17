"""Issue 10 item 1: a revocation committed just before PostgreSQL stops, not yet polled by the
workers, must not be answered "good" beyond the freshness bound (decision 0012).

``agentca ocsp serve`` (2 workers) on the throwaway PostgreSQL of scripts/with-postgres.sh:
warm both workers' caches (pre-signed answer and cached status), go quiet (so no worker polls),
revoke in-process and stop PostgreSQL at once (``immediate``: a crash), then query POST and
POST-with-nonce for a few seconds. Every request sent more than the bound after the commit must
get tryLater, never "good". PostgreSQL is started again and the time until every worker answers
correctly is measured. With ``--serve-stale-for`` the documented trade is checked: last known
answers keep flowing for the grace (the revoked serial included: that is its cost), then
tryLater. Figures are printed as ``FIGURE`` lines (run with ``-s``) for docs/reliability.md.
"""

from __future__ import annotations

import concurrent.futures
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from ca.authority import CertificateAuthority
from ca.config import Settings
from ca.revocation import RevocationReason
from ca.store.db import make_engine, make_session_factory
from tests.conftest import PgServer
from tests.faults import FULL
from tests.integration.test_ocsp_interop import OCSP_REQ, init_ca, issue, serve

pytestmark = [pytest.mark.faults, pytest.mark.integration]

BOUND = 1.0  # OcspOptions.status_freshness (default)
OUTAGE = 20.0 if FULL else 4.0  # seconds of queries while PostgreSQL is down
GRACE = 10.0 if FULL else 2.5  # --serve-stale-for in the availability run
RECOVERY_LIMIT = 30.0


def _request(issuer: Path, cert: Path, nonce: bool) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        x509.load_pem_x509_certificate(cert.read_bytes()),
        x509.load_pem_x509_certificate(issuer.read_bytes()),
        hashes.SHA1(),
    )
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(b"fault-nonce-" + bytes(4)), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _ask(base: str, der: bytes) -> tuple[str, str]:
    """(worker pid, GOOD / REVOKED / TRY_LATER / ...) for one POST on a fresh connection."""
    req = urllib.request.Request(base + "/ocsp", data=der, headers=OCSP_REQ, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        answer = ocsp.load_der_ocsp_response(resp.read())
        pid = resp.headers["X-Agentca-Worker"]
    if answer.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return pid, answer.response_status.name
    return pid, answer.certificate_status.name


@dataclass
class Sample:
    sent: float  # seconds after the revocation committed
    what: str  # victim / victim-nonce / control
    pid: str
    state: str


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    stop_took: float = 0.0
    recovery: float = 0.0
    workers: set[str] = field(default_factory=set)

    def states(self, what: str, after: float, before: float = 1e9) -> list[str]:
        return [s.state for s in self.samples if s.what == what and after < s.sent <= before]

    def wrong(self) -> list[Sample]:
        return [s for s in self.samples if s.what.startswith("victim") and s.state == "GOOD"]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> dict[str, Any]:
    data_dir = tmp_path_factory.mktemp("fault-ca")
    work = tmp_path_factory.mktemp("fault-work")
    env = {"AGENTCA_DATABASE_URL": pg_module_url}
    init_ca(data_dir, env, work)
    certs = {n: issue(data_dir, env, work, n) for n in ("control", "victim-1", "victim-2")}
    return {"data_dir": data_dir, "env": env, "work": work, "certs": certs, "db": pg_module_url}


def _revoke(ca: dict[str, Any], serial: str) -> None:
    engine = make_engine(ca["db"])
    try:
        authority = CertificateAuthority(
            Settings(data_dir=ca["data_dir"]),
            make_session_factory(engine),
            keys=None,  # type: ignore[arg-type]
        )
        authority.revoke(serial, RevocationReason.KEY_COMPROMISE, "fault test")
    finally:
        engine.dispose()


def _outage(
    ca: dict[str, Any], pg_server: PgServer, victim: str, duration: float, *extra: str
) -> Run:
    work = ca["work"]
    issuing = work / "issuing.pem"
    pem, serial = ca["certs"][victim]
    asks = {
        "victim": _request(issuing, pem, nonce=False),
        "victim-nonce": _request(issuing, pem, nonce=True),
        "control": _request(issuing, ca["certs"]["control"][0], nonce=False),
    }
    run = Run()
    with (
        serve(ca["data_dir"], ca["env"], *extra) as (base, _proc),
        concurrent.futures.ThreadPoolExecutor(6) as pool,
    ):
        # Warm both workers: pre-signed answers and cached statuses, all "good".
        deadline = time.monotonic() + 30
        seen: dict[str, set[str]] = {}
        while not (len(seen) == 2 and all(len(v) == 3 for v in seen.values())):
            assert time.monotonic() < deadline, seen
            jobs = [(w, pool.submit(_ask, base, der)) for w, der in asks.items() for _ in range(4)]
            for what, job in jobs:
                pid, state = job.result()
                assert state == "GOOD", (what, state)
                seen.setdefault(pid, set()).add(what)
        run.workers = set(seen)

        # Quiet now: no request, so no worker polls. Commit the revocation, crash PostgreSQL.
        _revoke(ca, serial)
        committed = time.monotonic()
        pg_server.stop("immediate")
        run.stop_took = time.monotonic() - committed

        def one(what: str) -> Sample:
            sent = time.monotonic() - committed
            pid, state = _ask(base, asks[what])
            return Sample(sent, what, pid, state)

        try:
            while time.monotonic() - committed < duration:
                run.samples += pool.map(one, ["victim", "victim", "victim-nonce", "control"] * 2)
                time.sleep(0.02)
        finally:
            pg_server.start()
        restarted = time.monotonic()

        # Recovery: every worker answers the victim "revoked" and the control "good".
        while True:
            elapsed = time.monotonic() - restarted
            assert elapsed < RECOVERY_LIMIT, "answers not correct again after the restart"
            round_ = list(pool.map(one, ["victim", "victim-nonce", "control"] * 8))
            run.samples += round_
            right = {"victim": "REVOKED", "victim-nonce": "REVOKED", "control": "GOOD"}
            if (
                all(s.state == right[s.what] for s in round_)
                and {s.pid for s in round_} >= run.workers
            ):
                run.recovery = elapsed
                break
            assert all(s.state in (right[s.what], "TRY_LATER") for s in round_), round_
            time.sleep(0.05)
    return run


def _report(name: str, run: Run, duration: float) -> None:
    outage = [s for s in run.samples if s.sent <= duration]
    states: dict[str, int] = {}
    for s in outage:
        states[s.state] = states.get(s.state, 0) + 1
    last_wrong = max((s.sent for s in run.wrong()), default=None)
    print(
        f"\nFIGURE {name}: outage {duration:g} s, {len(outage)} requests during it {states}, "
        f"wrong 'good' {len(run.wrong())}"
        + (f" (last sent {last_wrong:.3f} s after the commit)" if last_wrong is not None else "")
        + f", pg stop took {run.stop_took:.3f} s, recovery {run.recovery:.3f} s after restart"
    )


def test_unpolled_revocation_is_try_later_not_good_during_outage(
    ca: dict[str, Any], pg_server: PgServer
) -> None:
    run = _outage(ca, pg_server, "victim-1", OUTAGE)
    _report("strict", run, OUTAGE)
    late = [s for s in run.wrong() if s.sent > BOUND]
    assert not late, f"{len(late)} wrong 'good' more than {BOUND} s after the commit: {late[:5]}"
    for what in ("victim", "victim-nonce", "control"):
        during = run.states(what, BOUND, OUTAGE)
        assert during and set(during) == {"TRY_LATER"}, (what, set(during))
    assert run.recovery < 5.0


def test_serve_stale_for_trades_freshness_for_availability_as_documented(
    ca: dict[str, Any], pg_server: PgServer
) -> None:
    duration = BOUND + GRACE + 2.0
    run = _outage(ca, pg_server, "victim-2", duration, "--serve-stale-for", f"{GRACE:g}")
    _report(f"serve-stale-for {GRACE:g}", run, duration)
    # Available: what was known keeps being answered through the grace (control "good")...
    assert set(run.states("control", 0.0, GRACE)) == {"GOOD"}
    # ...at the documented cost: the unpolled revocation is answered "good" meanwhile...
    assert run.wrong(), "the grace should have served the last known (stale) answer"
    # ...and never after bound + grace: then tryLater, as without the option.
    late = [s for s in run.wrong() if s.sent > BOUND + GRACE]
    assert not late, late[:5]
    for what in ("victim", "victim-nonce", "control"):
        after = run.states(what, BOUND + GRACE, duration)
        assert after and set(after) == {"TRY_LATER"}, (what, set(after))
