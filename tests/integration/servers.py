"""Start real HTTP servers (gunicorn via ``agentca serve``) on loopback for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.conftest import AGENTCA


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def agentca_server(
    args: list[str], data_dir: Path, health_path: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run ``agentca <args> --port N`` and yield its base URL once it answers."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    full_env.pop("SOFTHSM2_CONF", None)
    full_env["AGENTCA_DATA_DIR"] = str(data_dir)
    full_env.update(env or {})
    log = open(data_dir.parent / f"server-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [AGENTCA, *args, "--port", str(port)],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(base + health_path)
        except Exception:
            proc.terminate()
            proc.wait(10)
            log.close()
            raise RuntimeError(Path(log.name).read_text()[-3000:]) from None
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()
