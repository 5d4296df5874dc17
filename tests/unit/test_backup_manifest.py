"""A backup's manifest is untrusted input: verify refuses names outside the backup, symbolic
links and wrong JSON types with one CAError line, and a backup tree is owner-only."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from ca.backup import (
    MANIFEST,
    SQLITE_COPY,
    _owner_only,
    missing_ledger_triggers,
    restore_backup,
    sha256_file,
    verify_backup,
)
from ca.config import Settings
from ca.errors import CAError, ErrorCode


def _entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _backup(root: Path) -> Path:
    out = root / "b"
    out.mkdir()
    conn = sqlite3.connect(out / SQLITE_COPY)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.commit()
    conn.close()
    (out / "token").mkdir()
    (out / "token" / "obj").write_bytes(b"encrypted")
    doc = {
        "format": "agentca-backup",
        "version": 1,
        "created_at": "2026-12-06T00:00:00Z",
        "database": {"backend": "sqlite", "file": SQLITE_COPY},
        "schema_revision": "0011",
        "tables": {"certificates": 0},
        "ledger": {"size": 0},
        "issuers": [{"role": "root", "name": "root", "fingerprint_sha256": "ab"}],
        "token": {"kind": "softhsm2", "dir": "token", "labels": []},
        "files": {SQLITE_COPY: _entry(out / SQLITE_COPY), "token/obj": _entry(out / "token/obj")},
    }
    _write(out, doc)
    return out


def _write(out: Path, doc: dict[str, Any]) -> None:
    (out / MANIFEST).write_text(json.dumps(doc), encoding="utf-8")


def _edit(out: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    change(doc)
    _write(out, doc)


def test_an_untouched_backup_verifies(tmp_path: Path) -> None:
    assert verify_backup(_backup(tmp_path))["schema_revision"] == "0011"


@pytest.mark.parametrize("name", ["../outside", "/etc/hostname", "token/../../outside", "a//b"])
def test_a_listed_file_outside_the_backup_is_refused(tmp_path: Path, name: str) -> None:
    out = _backup(tmp_path)
    outside = tmp_path / "outside"
    outside.write_bytes(b"host file")
    target = Path(name) if name.startswith("/") else outside
    entry = _entry(target) if target.exists() else {"sha256": "00", "bytes": 0}
    _edit(out, lambda d: d["files"].__setitem__(name, entry))
    with pytest.raises(CAError, match="not a file inside the backup"):
        verify_backup(out)


def test_the_database_file_outside_the_backup_is_refused(tmp_path: Path) -> None:
    out = _backup(tmp_path)
    other = tmp_path / "other.sqlite3"
    sqlite3.connect(other).close()
    other.write_bytes((out / SQLITE_COPY).read_bytes())

    def change(d: dict[str, Any]) -> None:
        d["files"]["../other.sqlite3"] = _entry(other)
        d["database"]["file"] = "../other.sqlite3"

    _edit(out, change)
    with pytest.raises(CAError, match="not a file inside the backup"):
        verify_backup(out)


def test_a_symbolic_link_in_the_backup_is_refused(tmp_path: Path) -> None:
    out = _backup(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(b"host secret")
    (out / "token" / "evil").symlink_to(secret)
    _edit(out, lambda d: d["files"].__setitem__("token/evil", _entry(secret)))
    with pytest.raises(CAError, match="token/evil is a symbolic link"):
        verify_backup(out)


def test_a_symlinked_directory_in_the_backup_is_refused(tmp_path: Path) -> None:
    out = _backup(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (out / "token" / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(CAError, match="token/sub is a symbolic link"):
        verify_backup(out)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["files"].__setitem__(SQLITE_COPY, "x"), "no SHA-256 and size"),
        (lambda d: d["files"][SQLITE_COPY].__setitem__("bytes", "12"), "no SHA-256 and size"),
        (lambda d: d["files"][SQLITE_COPY].__setitem__("bytes", True), "no SHA-256 and size"),
        (lambda d: d["database"].__setitem__("file", ["a"]), "names no database file"),
        (lambda d: d.pop("schema_revision"), "not a well-formed"),
        (lambda d: d.__setitem__("tables", []), "not a well-formed"),
        (lambda d: d.__setitem__("token", "softhsm2"), "not a well-formed"),
        (lambda d: d.__setitem__("issuers", [1]), "not a well-formed"),
        (lambda d: d["issuers"][0].pop("fingerprint_sha256"), "not a well-formed"),
        (lambda d: d.pop("created_at"), "not a well-formed"),
    ],
)
def test_wrong_json_types_are_one_clear_refusal(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    out = _backup(tmp_path)
    _edit(out, change)
    with pytest.raises(CAError, match=message):
        verify_backup(out)


def test_a_truncated_manifest_is_refused(tmp_path: Path) -> None:
    out = _backup(tmp_path)
    text = (out / MANIFEST).read_text(encoding="utf-8")
    (out / MANIFEST).write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(CAError, match="is not JSON"):
        verify_backup(out)


def test_a_backup_tree_is_made_owner_only(tmp_path: Path) -> None:
    out = _backup(tmp_path)
    os.chmod(out / "token" / "obj", 0o644)
    os.chmod(out / "token", 0o755)
    _owner_only(out)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert modes["obj"] == 0o600
    assert modes["token"] == 0o700
    assert modes[SQLITE_COPY] == 0o600
    assert modes["b"] == 0o700


def _live_sqlite(root: Path) -> Settings:
    live = root / "live"
    live.mkdir()
    conn = sqlite3.connect(live / "agentca.sqlite3")
    conn.execute("CREATE TABLE kept (x INTEGER)")
    conn.commit()
    conn.close()
    return Settings(
        data_dir=live, database_url=f"sqlite:///{live}/agentca.sqlite3", key_store="software"
    )


def test_restore_over_a_database_needs_force(tmp_path: Path) -> None:
    out = _backup(tmp_path)
    _edit(out, lambda d: d.__setitem__("token", {"kind": "none"}))
    settings = _live_sqlite(tmp_path)
    with pytest.raises(CAError, match=r"not empty .*--force") as err:
        restore_backup(out, settings)
    assert err.value.code is ErrorCode.CONFLICT
    assert not [p for p in settings.data_dir.iterdir() if ".replaced-" in p.name]
    conn = sqlite3.connect(settings.data_dir / "agentca.sqlite3")
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("kept",)]
    conn.close()


def test_a_failed_forced_restore_says_where_the_previous_database_is(tmp_path: Path) -> None:
    out = _backup(tmp_path)  # its database has no agentca schema: the post-restore check fails
    _edit(out, lambda d: d.__setitem__("token", {"kind": "none"}))
    settings = _live_sqlite(tmp_path)
    with pytest.raises(CAError, match=r"the previous state is kept as .*replaced-") as err:
        restore_backup(out, settings, force=True)
    aside = [p for p in settings.data_dir.iterdir() if ".replaced-" in p.name]
    assert len(aside) == 1 and str(aside[0]) in err.value.detail
    conn = sqlite3.connect(aside[0])
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("kept",)]
    conn.close()


def test_a_database_without_the_ledger_triggers_is_named() -> None:
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE ledger_entries (x INTEGER)")
        assert missing_ledger_triggers(conn) == [
            "ledger_entries_no_delete",
            "ledger_entries_no_update",
        ]
        conn.exec_driver_sql(
            "CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries "
            "BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
        assert missing_ledger_triggers(conn) == ["ledger_entries_no_update"]
    engine.dispose()
