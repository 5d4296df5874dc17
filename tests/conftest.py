"""Shared fixtures for the whole test suite.

Databases
    ``db_url``   parametrised over ``sqlite`` (a file in ``tmp_path``) and ``postgresql``
                 (a fresh database per test on the server named by
                 ``AGENTCA_TEST_DATABASE_URL``, dropped afterwards).
    ``pg_url``   the PostgreSQL case only.
    ``pg_server`` handle on the throwaway server started by ``scripts/with-postgres.sh``:
                 ``stop()`` / ``start()`` / ``is_running()`` for outage tests. The server is
                 always running again when the test ends.

Without ``AGENTCA_TEST_DATABASE_URL`` the PostgreSQL cases are skipped locally but FAIL when
``CI`` is set, so CI can never pass without real PostgreSQL. ``make test`` provides the server.

Markers
    Everything under ``tests/integration`` gets the ``integration`` marker.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.support.redis_server import REDIS_SERVER, RedisServer, running_redis

# The SoftHSM2 fixtures (hsm_config, hsm_keystore), for every test directory.
pytest_plugins = ["tests.integration.conftest_hsm"]

# The machine is shared and CI is loaded: example generation that is slow there is not a
# failure of the property under test (the properties themselves run without a deadline).
hypothesis_settings.register_profile(
    "agentca", suppress_health_check=[HealthCheck.too_slow], deadline=None
)
hypothesis_settings.load_profile("agentca")

TESTS_DIR = Path(__file__).resolve().parent
INTEGRATION_DIR = TESTS_DIR / "integration"

DATABASE_URL_ENV = "AGENTCA_TEST_DATABASE_URL"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    """Skip locally; fail under CI so a missing service is never silently ignored."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


# ------------------------------------------------------------------------------ PostgreSQL


def _admin_url() -> str:
    url = os.environ.get(DATABASE_URL_ENV, "")
    if not url:
        skip_or_fail(
            f"{DATABASE_URL_ENV} is not set: run under scripts/with-postgres.sh (make test)"
        )
    return url


def _admin_engine(admin_url: str) -> sa.Engine:
    return sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


@dataclass(frozen=True)
class PgServer:
    """The throwaway server from scripts/with-postgres.sh, for outage tests."""

    url: str
    bindir: Path
    datadir: Path
    runas: str
    logfile: Path

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args]
        if self.runas:
            cmd = ["runuser", "-u", self.runas, "--", *cmd]
        return subprocess.run(
            cmd,
            check=check,
            capture_output=True,
            text=True,
            cwd=self.datadir.parent,
            timeout=60,
        )

    def is_running(self) -> bool:
        # pg_ctl status: 0 running, 3 not running, 4 no data dir.
        return self._pg_ctl("status", check=False).returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` disconnects clients; ``immediate`` is a crash)."""
        if self.is_running():
            self._pg_ctl("-m", mode, "-w", "-t", "30", "stop")

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections."""
        if not self.is_running():
            self._pg_ctl("-l", str(self.logfile), "-w", "-t", str(int(timeout)), "start")
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        engine = _admin_engine(self.url)
        try:
            while True:
                try:
                    with engine.connect() as conn:
                        conn.execute(sa.text("select 1"))
                    return
                except sa.exc.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def _pg_server_session() -> PgServer | None:
    url = os.environ.get(DATABASE_URL_ENV, "")
    bindir = os.environ.get("AGENTCA_TEST_PG_BINDIR", "")
    datadir = os.environ.get("AGENTCA_TEST_PG_DATADIR", "")
    if not (url and bindir and datadir):
        return None
    return PgServer(
        url=url,
        bindir=Path(bindir),
        datadir=Path(datadir),
        runas=os.environ.get("AGENTCA_TEST_PG_RUNAS", ""),
        logfile=Path(
            os.environ.get("AGENTCA_TEST_PG_LOGFILE", str(Path(datadir).parent / "server.log"))
        ),
    )


@pytest.fixture
def pg_server(_pg_server_session: PgServer | None) -> Iterator[PgServer]:
    """Control of the test PostgreSQL server; restarted after the test if it was left down."""
    if _pg_server_session is None:
        skip_or_fail(
            "no controllable PostgreSQL server (AGENTCA_TEST_PG_BINDIR/_DATADIR unset): "
            "run under scripts/with-postgres.sh (make test)"
        )
    assert _pg_server_session is not None
    yield _pg_server_session
    _pg_server_session.start()


@contextmanager
def _fresh_pg_database(server: PgServer | None) -> Iterator[str]:
    """Create an empty database on the test server, yield its URL, drop it afterwards."""
    admin_url = _admin_url()
    name = f"agentca_t_{secrets.token_hex(6)}"
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        # A test may have stopped the server (outage tests): bring it back before dropping.
        if server is not None:
            server.start()
        engine = _admin_engine(admin_url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            engine.dispose()


@pytest.fixture
def pg_url(_pg_server_session: PgServer | None) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database for this test (dropped afterwards)."""
    with _fresh_pg_database(_pg_server_session) as url:
        yield url


@pytest.fixture(scope="module")
def pg_module_url(_pg_server_session: PgServer | None) -> Iterator[str]:
    """Like ``pg_url`` but shared by one test module (for expensive setups such as a CA)."""
    with _fresh_pg_database(_pg_server_session) as url:
        yield url


# ------------------------------------------------------------------------------ both backends


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL, once per backend: ``sqlite`` and ``postgresql``."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/agentca.sqlite3"
    url: str = request.getfixturevalue("pg_url")
    return url


# ------------------------------------------------------------------------------ Redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A throwaway redis-server for this module (tests may stop it; it is restarted here)."""
    if not Path(REDIS_SERVER).exists():
        skip_or_fail("redis-server is not installed (scripts/bootstrap.sh test installs it)")
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server
