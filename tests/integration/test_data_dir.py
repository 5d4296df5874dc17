"""The data directory is owner-only however it was created (issue 9 item 10).

An existing directory kept loose permissions (0755, SQLite 0644): the CA's database, PINs and
token were readable by every local user. Every start now tightens them, leaves published CRLs
and symbolic links alone, and refuses a directory that belongs to someone else.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.integration.conftest import run_cli


def _loose(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
                found.append(f"{path.relative_to(root)} {oct(stat.S_IMODE(st.st_mode))}")
    return found


@pytest.fixture
def loose_data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    assert run_cli("init", data_dir=data).returncode == 0
    for dirpath, dirnames, filenames in os.walk(data):
        for name in dirnames:
            os.chmod(Path(dirpath) / name, 0o755)
        for name in filenames:
            os.chmod(Path(dirpath) / name, 0o644)
    os.chmod(data, 0o755)
    assert (data / "agentca.sqlite3").exists() and _loose(data)
    return data


def test_an_existing_loose_data_dir_is_tightened_on_start(
    loose_data_dir: Path, tmp_path: Path
) -> None:
    data = loose_data_dir
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours to change")
    os.chmod(outside, 0o644)
    (data / "link").symlink_to(outside)
    crl_dir = data / "crl"
    crl_dir.mkdir(exist_ok=True)
    (crl_dir / "issuing.crl").write_bytes(b"public")
    os.chmod(crl_dir, 0o755)
    os.chmod(crl_dir / "issuing.crl", 0o644)
    r = run_cli("scope", "list", data_dir=data)
    assert r.returncode == 0, r.stderr
    assert "tightened the permissions" in r.stderr
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "agentca.sqlite3").stat().st_mode) == 0o600
    assert _loose(data) == ["crl 0o755", "crl/issuing.crl 0o644"]  # public by design
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644  # links are not followed
    again = run_cli("scope", "list", data_dir=data)
    assert again.returncode == 0 and "tightened" not in again.stderr


def test_a_new_data_dir_is_private_from_the_start(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    r = run_cli("init", data_dir=data)
    assert r.returncode == 0, r.stderr
    assert "tightened" not in r.stderr  # created owner-only, nothing to fix
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert _loose(data) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory away")
def test_a_data_dir_owned_by_another_user_is_refused(loose_data_dir: Path) -> None:
    os.chown(loose_data_dir, 65534, 65534)
    r = run_cli("scope", "list", data_dir=loose_data_dir)
    assert r.returncode == 10, r.stderr
    assert "belongs to uid 65534" in r.stderr and r.stderr.count("\n") == 1
    assert stat.S_IMODE(loose_data_dir.stat().st_mode) == 0o755  # untouched


def test_init_warns_when_certificate_urls_point_where_nothing_of_this_ca_listens(
    tmp_path: Path,
) -> None:
    env = {"AGENTCA_LISTEN_PORT": "9400", "AGENTCA_PUBLIC_BASE_URL": "http://127.0.0.1:8400"}
    result = run_cli("init", data_dir=tmp_path / "data", env=env)
    assert result.returncode == 0, result.stderr
    assert "public_base_url http://127.0.0.1:8400 points at 127.0.0.1:8400" in result.stderr
    quiet = run_cli("init", data_dir=tmp_path / "other", env={"AGENTCA_LISTEN_PORT": "9400"})
    assert quiet.returncode == 0 and "points at" not in quiet.stderr
