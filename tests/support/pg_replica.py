"""A hot standby of the throwaway PostgreSQL server (scripts/with-postgres.sh), for the
replica tests and ``make bench-replica``: ``pg_basebackup`` through a physical replication
slot, started on its own port, removed afterwards."""

from __future__ import annotations

import secrets
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.conftest import PgServer


def run_as(server: PgServer, *cmd: str) -> None:
    """Run ``cmd`` as the server's operating-system user (bounded; fails loudly)."""
    full = ["runuser", "-u", server.runas, "--", *cmd] if server.runas else list(cmd)
    done = subprocess.run(full, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {done.stderr.strip()}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def streaming_replica(primary: PgServer) -> Iterator[PgServer]:
    """A hot standby of ``primary`` streaming through its own slot; stopped and removed after."""
    datadir = primary.datadir.parent / f"replica-{secrets.token_hex(3)}"
    slot = f"agentca_replica_{secrets.token_hex(3)}"
    port = make_url(primary.url).port
    run_as(primary, "mkdir", "-m", "0700", str(datadir))
    # -c fast: do not wait for a spread checkpoint (minutes on an idle server)
    run_as(
        primary, str(primary.bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(port),
        "-U", "postgres", "-D", str(datadir), "-R", "-X", "stream", "-C", "-S", slot,
        "-c", "fast",
    )  # fmt: skip
    replica_port = _free_port()
    extra = f"port = {replica_port}\nunix_socket_directories = ''\nhot_standby = on\n"
    run_as(primary, "sh", "-c", f"printf '%s' \"{extra}\" >> {datadir / 'postgresql.auto.conf'}")
    url = make_url(primary.url).set(port=replica_port).render_as_string(False)
    server = PgServer(url, primary.bindir, datadir, primary.runas, datadir.parent / "replica.log")
    try:
        server.start()
        yield server
    finally:
        server.stop("immediate")
        engine = sa.create_engine(primary.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_drop_replication_slot(:s)"), {"s": slot})
        finally:
            engine.dispose()
        run_as(primary, "rm", "-rf", str(datadir))


def on_server(server_url: str, database_url: str) -> str:
    """``database_url`` (a database on the primary) on the server at ``server_url``."""
    return make_url(database_url).set(port=make_url(server_url).port).render_as_string(False)
