"""Full disks under the CRL directory and the SQLite database (issue 10 item 7).

Before: ``crl publish --full`` said "an internal error occurred" (exit 1); ``--loop`` printed
``[Errno 28]`` with no path or issuer every 0.5 s and spent a CRL number each time; SQLite's
"database or disk is full" reached clients as 503 "the database cannot be reached".

Each test mounts a small tmpfs (root only; skipped otherwise), fills it and checks: the error
names what is full, the exit code / problem type is ``storage-full``, the loop backs off, no
CRL number is spent, the installed CRL stays intact, and everything works once space is back.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ca.api.app import create_app
from ca.wiring import open_runtime
from hsm import TokenConfig
from tests.integration.conftest import AGENTCA, run_cli, settings_for
from tests.integration.http import call, serve_in_thread

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.fixture
def small_fs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A small tmpfs (512 KiB, or ``@pytest.mark.parametrize("small_fs", ["8m"],
    indirect=True)``), unmounted at teardown."""
    size = getattr(request, "param", "512k")
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); run as root")
    try:
        yield mnt
    finally:
        r = subprocess.run(["umount", str(mnt)], capture_output=True, timeout=10, check=False)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10, check=False)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system says ENOSPC; returns it (delete to free)."""
    filler = directory / ".filler"
    chunk = 64 * 1024
    with filler.open("wb", buffering=0) as fh:
        while chunk:
            try:
                fh.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                chunk //= 2
    return filler


def _number(data: Path, env: dict[str, str], delta: bool = False) -> int:
    args = ["crl", "show", "--issuer", "issuing"] + (["--delta"] if delta else [])
    r = run_cli(*args, data_dir=data, env=env)
    assert r.returncode == 0, r.stderr
    m = re.search(r"^number:\s+(\d+)", r.stdout, re.M)
    assert m, r.stdout
    return int(m.group(1))


def test_crl_directory_full(tmp_path: Path, small_fs: Path) -> None:
    data = tmp_path / "data"
    env = {"AGENTCA_CRL_PUBLISH_DIR": str(small_fs)}
    assert run_cli("init", data_dir=data, env=env).returncode == 0
    ok = run_cli("crl", "publish", "--full", "--issuer", "issuing", data_dir=data, env=env)
    assert ok.returncode == 0, ok.stderr
    full_before, delta_before = _number(data, env), _number(data, env, delta=True)
    installed = (small_fs / "issuing.crl").read_bytes()
    filler = fill(small_fs)

    # one-shot: a clear line naming issuer, file and file system; exit 14 (storage-full)
    r = run_cli("crl", "publish", "--full", "--issuer", "issuing", data_dir=data, env=env)
    assert r.returncode == 14, (r.returncode, r.stderr)
    line = r.stderr.strip()
    assert "internal error" not in line and "[Errno" not in line, line
    assert "[storage-full]" in line and "'issuing'" in line and str(small_fs) in line, line
    assert "No space left on device" in line, line
    assert (small_fs / "issuing.crl").read_bytes() == installed
    assert not [p for p in small_fs.iterdir() if p.name.endswith(".tmp")]

    # loop: backs off (1, 2, 4 ... s after poll 0.5), one line per failure naming the issuer
    log = tmp_path / "loop.log"
    with log.open("w") as out:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
        full_env.pop("SOFTHSM2_CONF", None)
        full_env.update(env, AGENTCA_DATA_DIR=str(data))
        loop = subprocess.Popen(
            [AGENTCA, "crl", "publish", "--loop", "--issuer", "issuing", "--poll", "0.5"],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            time.sleep(6.5)
        finally:
            loop.send_signal(signal.SIGTERM)
            try:
                loop.wait(15)
            except subprocess.TimeoutExpired:
                loop.kill()
                loop.wait(5)
    errors = [ln for ln in log.read_text().splitlines() if ln.startswith("agentca: error:")]
    print(f"loop with the CRL directory full: {len(errors)} error lines in 6.5 s")
    assert 2 <= len(errors) <= 5, errors  # it was 13 (every 0.5 s)
    for ln in errors:
        assert "[storage-full]" in ln and "'issuing'" in ln and str(small_fs) in ln, ln
        assert "retrying in" in ln, ln
    assert (small_fs / "issuing.crl").read_bytes() == installed

    # space back: the next CRL numbers follow on from the last published ones: none was spent
    filler.unlink()
    ok = run_cli("crl", "publish", "--full", "--issuer", "issuing", data_dir=data, env=env)
    assert ok.returncode == 0, ok.stderr
    assert max(full_before, delta_before) == delta_before
    assert _number(data, env) == delta_before + 1
    assert _number(data, env, delta=True) == delta_before + 2


@pytest.mark.parametrize("small_fs", ["8m"], indirect=True)
def test_sqlite_directory_full_is_507_storage_full(
    small_fs: Path,
    hsm_config: TokenConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_for(small_fs, f"sqlite:///{small_fs}/ca.sqlite3", hsm_config)
    rt = open_runtime(settings, create=True)
    try:
        rt.authority.initialise("ec-p384", "ec-p256")
        op = rt.api_tokens.create("ops", "operator")[0]
        app = create_app(settings, runtime_factory=lambda: rt)
        caplog.set_level(logging.INFO, logger="agentca.api")
        with serve_in_thread(app) as base:

            def add_scope() -> tuple[int, dict[str, object]]:
                name = "s" + uuid.uuid4().hex[:12]
                r = call(
                    base, "POST", "/v1/scopes", {"name": name, "description": "x" * 200}, token=op
                )
                return r.status, (r.json if r.body else {})

            assert add_scope()[0] == 201
            filler = fill(small_fs)
            statuses: list[int] = []
            problem: dict[str, object] = {}
            for _ in range(400):  # free pages inside the database file take a few writes
                status, body = add_scope()
                statuses.append(status)
                if status != 201:
                    problem = body
                    break
            print(f"SQLite directory full: {len(statuses) - 1} writes fit, then {statuses[-1]}")
            assert statuses[-1] == 507, statuses[-5:]
            assert problem["type"] == "https://agentca.dev/problems/storage-full", problem
            assert "storage is full" in str(problem["detail"])
            assert 503 not in statuses and 500 not in statuses
            for _ in range(20):
                assert add_scope()[0] == 507
            assert "Traceback" not in caplog.text
            lines = [r for r in caplog.records if "storage-full" in r.getMessage()]
            assert 1 <= len(lines) <= 3 and all(r.exc_info is None for r in lines)
            with contextlib.suppress(FileNotFoundError):
                filler.unlink()
            recovered = None
            for _ in range(50):  # the next write after space is back succeeds
                if add_scope()[0] == 201:
                    recovered = True
                    break
                time.sleep(0.1)
            assert recovered
            print(f"SQLite directory full: writes succeed again {_ + 1} attempt(s) after freeing")
    finally:
        rt.engine.dispose()
