"""The OCSP responder on a real PostgreSQL streaming replica (issue 14 item 2, decision 0029).

The CA writes to the primary (the throwaway server of scripts/with-postgres.sh); a hot standby
is made from it with ``pg_basebackup`` and started beside it; ``agentca db heartbeat`` commits
on the primary; ``agentca ocsp serve`` (2 workers) reads only the replica. A revocation on the
primary is answered "revoked" by every worker within the 1 s bound; a replica that stops
replaying (``pg_wal_replay_pause``) or stops altogether is answered tryLater past the bound,
never "good" for the revoked certificate; both recover.
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.x509 import ocsp
from sqlalchemy.pool import NullPool

from ca.authority import CertificateAuthority
from ca.config import Settings
from ca.revocation import RevocationReason
from ca.store.db import make_engine, make_session_factory
from tests.conftest import PgServer
from tests.integration.conftest import AGENTCA, REPO_ROOT, run_cli
from tests.integration.http import call
from tests.integration.servers import agentca_server
from tests.integration.test_ocsp_interop import der_request, init_ca, issue, post, serve
from tests.support.pg_replica import on_server, streaming_replica

BOUND = 1.0  # OcspOptions.status_freshness


def _state(response: ocsp.OCSPResponse) -> str:
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return response.response_status.name
    return response.certificate_status.name


@pytest.fixture(scope="module")
def replica(pg_module_url: str, _pg_server_session: PgServer | None) -> Iterator[PgServer]:
    """A hot standby of the test server, streaming through a physical replication slot."""
    if _pg_server_session is None:
        pytest.skip("no controllable PostgreSQL server: run under scripts/with-postgres.sh")
    with streaming_replica(_pg_server_session) as server:
        yield server


@pytest.fixture(scope="module")
def ca(
    tmp_path_factory: pytest.TempPathFactory, pg_module_url: str, replica: PgServer
) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("replica-ca")
    work = tmp_path_factory.mktemp("replica-work")
    primary_env = {"AGENTCA_DATABASE_URL": pg_module_url}
    init_ca(data_dir, primary_env, work)
    certs = {n: issue(data_dir, primary_env, work, n) for n in ("follows", "paused", "stopped")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.update(AGENTCA_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO_ROOT), **primary_env)
    env.pop("SOFTHSM2_CONF", None)
    beat = subprocess.Popen([AGENTCA, "db", "heartbeat"], env=env)
    reader = on_server(replica.url, pg_module_url)
    try:
        responder_env = {"AGENTCA_DATABASE_URL": reader, "AGENTCA_OCSP_DATABASE_URL": reader}
        with serve(data_dir, responder_env) as (base, _proc):
            yield {
                "work": work, "base": base, "certs": certs, "primary": pg_module_url,
                "replica": replica, "reader": reader, "data_dir": data_dir,
            }  # fmt: skip
    finally:
        beat.terminate()
        beat.wait(10)


def _revoke(ca: dict[str, Any], serial: str) -> float:
    """Revoke on the primary (the CA's own path); the monotonic time of the commit."""
    engine = make_engine(ca["primary"])
    try:
        authority = CertificateAuthority(
            Settings(data_dir=ca["data_dir"]),
            make_session_factory(engine),
            keys=None,  # type: ignore[arg-type]
        )
        authority.revoke(serial, RevocationReason.KEY_COMPROMISE, "test")
        return time.monotonic()
    finally:
        engine.dispose()


def _sample(
    ca: dict[str, Any],
    der: bytes,
    committed: float,
    until: Callable[[list[tuple[float, str]]], bool],
) -> list[tuple[float, str]]:
    """(seconds after the commit the request was sent, answer) until ``until`` holds."""
    samples: list[tuple[float, str]] = []

    def one(_: int) -> tuple[float, str]:
        sent = time.monotonic() - committed
        response, _headers = post(ca["base"], der)
        return sent, _state(response)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        while not until(samples):
            samples += pool.map(one, range(8))
            assert time.monotonic() - committed < 40, samples[-8:]
    return samples


def _warm(ca: dict[str, Any], name: str) -> tuple[bytes, str]:
    pem, serial = ca["certs"][name]
    der = der_request(ca["work"] / "issuing.pem", pem)
    deadline = time.monotonic() + 30
    while _state(post(ca["base"], der)[0]) != "GOOD":  # the replica caught up, the heartbeat runs
        assert time.monotonic() < deadline, "the replica responder never answered good"
        time.sleep(0.2)
    return der, serial


def _replica_sql(ca: dict[str, Any], statement: str) -> Any:
    engine = sa.create_engine(ca["replica"].url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(statement)).scalar()
    finally:
        engine.dispose()


def test_revocation_reaches_the_replica_responder_within_the_bound(ca: dict[str, Any]) -> None:
    der, serial = _warm(ca, "follows")
    lags = [
        float(
            _replica_sql(
                ca, "SELECT EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())"
            )
        )
        for _ in range(10)
    ]
    assert max(lags) < BOUND, lags  # the heartbeat keeps the replica's known age small
    committed = _revoke(ca, serial)
    samples = _sample(ca, der, committed, lambda s: bool(s) and s[-1][0] > BOUND + 0.6)
    late = [state for sent, state in samples if sent > BOUND]
    assert late and set(late) == {"REVOKED"}, samples


def test_a_replica_that_stops_replaying_is_try_later_never_good(ca: dict[str, Any]) -> None:
    der, serial = _warm(ca, "paused")
    _replica_sql(ca, "SELECT pg_wal_replay_pause()")
    try:
        committed = _revoke(ca, serial)  # committed on the primary, not replayed
        samples = _sample(ca, der, committed, lambda s: bool(s) and s[-1][0] > BOUND + 1.5)
    finally:
        _replica_sql(ca, "SELECT pg_wal_replay_resume()")
    late = [state for sent, state in samples if sent > BOUND]
    assert late and "GOOD" not in late, samples  # polls succeed, yet nothing stale is vouched for
    assert "TRY_LATER" in late, samples
    recovered = _sample(ca, der, committed, lambda s: bool(s) and s[-1][1] == "REVOKED")
    assert "GOOD" not in [state for sent, state in recovered if sent > BOUND], recovered


def test_a_stopped_replica_is_try_later_then_recovers(ca: dict[str, Any]) -> None:
    der, serial = _warm(ca, "stopped")
    replica: PgServer = ca["replica"]
    replica.stop("immediate")
    try:
        committed = _revoke(ca, serial)
        samples = _sample(ca, der, committed, lambda s: bool(s) and s[-1][0] > BOUND + 1.5)
    finally:
        replica.start()
    late = [state for sent, state in samples if sent > BOUND]
    assert late and set(late) == {"TRY_LATER"}, samples
    recovered = _sample(ca, der, committed, lambda s: bool(s) and s[-1][1] == "REVOKED")
    assert "GOOD" not in [state for sent, state in recovered if sent > BOUND], recovered


def _digests(base: str, token: str) -> set[str]:
    reply = call(base, "GET", "/v1/models", token=token)
    assert reply.status == 200, reply.body
    return {m["digest"] for m in reply.json}


def _add_model(base: str, token: str) -> str:
    digest = secrets.token_hex(32)
    body = {"digest": digest, "model_type": "m", "environment": "replica-test"}
    reply = call(base, "POST", "/v1/models", body, token=token)
    assert reply.status == 201, reply.body
    return digest


def test_api_reads_come_from_a_fresh_replica_else_the_primary(ca: dict[str, Any]) -> None:
    """GET /v1/models reads the replica while it trails by at most read_max_lag_ms, the
    primary when its replay is paused or it is down; writes always go to the primary."""
    made = run_cli(
        "apitoken", "create", "replica-ops", "--role", "operator",
        data_dir=ca["data_dir"], env={"AGENTCA_DATABASE_URL": ca["primary"]},
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    env = {"AGENTCA_DATABASE_URL": ca["primary"], "AGENTCA_READ_DATABASE_URL": ca["reader"]}
    replica: PgServer = ca["replica"]
    with agentca_server(["serve", "--workers", "1"], ca["data_dir"], "/health", env) as (base, _p):
        first = _add_model(base, token)
        deadline = time.monotonic() + 10
        while first not in _digests(base, token):  # replayed within the bound
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # the replica serves reads: a model added while its replay is paused is not there
        # yet (within the first few hundred ms of the pause, while it still counts as fresh)
        for _attempt in range(3):
            _replica_sql(ca, "SELECT pg_wal_replay_pause()")
            paused = time.monotonic()
            try:
                second = _add_model(base, token)
                seen_early = _digests(base, token)
                early = time.monotonic() - paused
                time.sleep(1.3)  # past the bound: the replica is stale now
                seen_late = _digests(base, token)
            finally:
                _replica_sql(ca, "SELECT pg_wal_replay_resume()")
            if early < 0.4:
                break
        assert early < 0.4, "the box was too slow to observe a replica read"
        assert second not in seen_early, "the read did not come from the (paused) replica"
        assert second in seen_late, "a stale replica kept serving reads past the bound"
        # a stopped replica: reads fall back to the primary and lose nothing
        replica.stop("immediate")
        try:
            third = _add_model(base, token)
            assert {first, second, third} <= _digests(base, token)
        finally:
            replica.start()


def test_the_feed_snapshot_is_readable_on_the_replica(ca: dict[str, Any]) -> None:
    """``ocsp.change_feed`` gives up a hole only once its writers have ended, read with
    ``pg_current_snapshot()`` (decision 0047): a responder on a hot standby can read it."""
    from ocsp.status import SqlStatusSource

    engine = sa.create_engine(ca["replica"].url, poolclass=NullPool)
    try:
        assert _replica_sql(ca, "SELECT pg_is_in_recovery()") is True
        snap = SqlStatusSource(engine).snapshot()
        assert snap is not None and 0 < snap.xmin <= snap.xmax
    finally:
        engine.dispose()
