"""PostgreSQL stops under a running responder (2 workers). Decision 0012: by default nothing is
vouched for once the last good poll is older than the freshness bound (1 s), so every answer is
tryLater; with ``--serve-stale-for`` cached answers keep being served and uncached ones get
tryLater. Either way no guess is given, and service resumes by itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

from tests.conftest import PgServer
from tests.integration.conftest import run_cli
from tests.integration.test_ocsp_interop import (
    der_request,
    init_ca,
    issue,
    pids_answering,
    post,
    serve,
)


def _statuses(base: str, der: bytes, rounds: int = 24) -> tuple[set[str], set[str]]:
    """(worker pids, answers) over concurrent POSTs; error statuses show by name."""
    pids: set[str] = set()
    answers: set[str] = set()
    for pid, states in pids_answering_any(base, der, rounds).items():
        pids.add(pid)
        answers |= states
    return pids, answers


def pids_answering_any(base: str, der: bytes, rounds: int) -> dict[str, set[str]]:
    import concurrent.futures

    def one(_: int) -> tuple[str, str]:
        response, headers = post(base, der)
        if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            return headers["X-Agentca-Worker"], response.response_status.name
        return headers["X-Agentca-Worker"], response.certificate_status.name

    seen: dict[str, set[str]] = {}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for pid, status in pool.map(one, range(rounds)):
            seen.setdefault(pid, set()).add(status)
    return seen


@pytest.mark.parametrize("stale", [False, True], ids=["default", "serve-stale-for"])
def test_database_outage_and_recovery(
    tmp_path: Path, pg_url: str, pg_server: PgServer, stale: bool
) -> None:
    data_dir, work = tmp_path / "data", tmp_path / "work"
    data_dir.mkdir()
    work.mkdir()
    env = {"AGENTCA_DATABASE_URL": pg_url}
    init_ca(data_dir, env, work)
    cached_pem, _ = issue(data_dir, env, work, "cached")
    uncached_pem, _ = issue(data_dir, env, work, "uncached")
    revoked_pem, revoked_serial = issue(data_dir, env, work, "revoked")
    assert run_cli("revoke", revoked_serial, data_dir=data_dir, env=env).returncode == 0
    issuing = work / "issuing.pem"
    cached = der_request(issuing, cached_pem)
    revoked = der_request(issuing, revoked_pem, hashes.SHA256())
    uncached = der_request(issuing, uncached_pem)
    extra = ("--serve-stale-for", "60") if stale else ()
    with serve(data_dir, env, *extra) as (base, _proc):
        # Warm both workers' caches for two requests.
        deadline = time.monotonic() + 30
        workers: set[str] = set()
        warm_revoked: set[str] = set()
        while (len(workers) < 2 or warm_revoked != workers) and time.monotonic() < deadline:
            workers |= set(pids_answering(base, cached))
            warm_revoked |= set(pids_answering(base, revoked))
        assert len(workers) == 2 and warm_revoked == workers

        pg_server.stop()
        try:
            time.sleep(1.2)  # past the freshness bound (1 s after the last good poll)
            during: set[str] = set()
            for _ in range(3):
                pids, answers = _statuses(base, cached)
                # Pre-signed answers keep being served only when the operator chose so.
                assert answers == ({"GOOD"} if stale else {"TRY_LATER"}), answers
                during |= pids
                pids, answers = _statuses(base, revoked)
                assert answers == ({"REVOKED"} if stale else {"TRY_LATER"}), answers
                pids, answers = _statuses(base, uncached)
                assert answers == {"TRY_LATER"}, answers  # never a guess
                time.sleep(0.3)
            assert during == workers  # every worker kept answering
        finally:
            pg_server.start()

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _, answers = _statuses(base, uncached)
            if answers == {"GOOD"}:
                break
            assert answers <= {"GOOD", "TRY_LATER"}, answers
            time.sleep(0.3)
        assert answers == {"GOOD"}, answers
        assert _statuses(base, cached)[1] == {"GOOD"}
