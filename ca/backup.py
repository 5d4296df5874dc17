"""Backups of a CA: a consistent database dump, the SoftHSM2 token's own encrypted files, and
a manifest with the SHA-256 of every file (decision 0032).

Layout of a backup directory::

    manifest.json       format, schema revision, rows per table, CA fingerprints, ledger head,
                        token kind, and {path: {sha256, bytes}} of every other file
    database.dump       PostgreSQL: pg_dump --format=custom, from the snapshot the facts are read in
    database.sqlite3    SQLite: an online copy through SQLite's backup API
    token/              SoftHSM2: a copy of the token directory (objects stay encrypted under
                        the token PINs, which a backup never holds)

A hardware HSM's keys are not in a backup: CA keys are generated non-extractable, so they are
backed up (or cloned to a standby HSM) with the vendor's tooling, never exported by agentca.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, inspect
from sqlalchemy.engine import make_url

from ca import dbfacts
from ca.config import Settings
from ca.errors import CAError, ErrorCode
from ca.store.db import make_engine
from ca.store.pgtools import find_tool, run_tool

FORMAT = "agentca-backup"
VERSION = 1
MANIFEST = "manifest.json"
PG_DUMP = "database.dump"
SQLITE_COPY = "database.sqlite3"
TOKEN_DIR = "token"
COPY_ATTEMPTS = 5
NO_SECRETS = (
    "PIN files and database passwords are never in a backup: restore them from your secret "
    "store (the token's objects are encrypted under its PINs)"
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's contents, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tree_digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------ the token
def _tokendir_of(conf: Path) -> Path:
    try:
        lines = conf.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CAError(ErrorCode.CONFIG, f"cannot read {conf}: {exc.strerror}") from exc
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "directories.tokendir" and value.strip():
            return Path(value.strip())
    raise CAError(ErrorCode.CONFIG, f"{conf} names no directories.tokendir")


def token_location(settings: Settings) -> tuple[str, Path | None, Path | None]:
    """Where the CA's keys live: ``("softhsm2", conf, tokendir)``, ``("hsm", None, None)``
    for a PKCS#11 HSM agentca does not manage, or ``("none", None, None)`` (dev mode)."""
    if settings.key_store != "pkcs11":
        return "none", None, None
    managed = not (settings.pkcs11_module and not settings.manage_softhsm)
    if managed:
        conf = settings.data_dir / "hsm" / "softhsm2.conf"
        tokens = _tokendir_of(conf) if conf.exists() else settings.data_dir / "hsm" / "tokens"
        return "softhsm2", conf, tokens
    if settings.softhsm2_conf:
        conf = Path(settings.softhsm2_conf)
        return "softhsm2", conf, _tokendir_of(conf)
    return "hsm", None, None


def copy_token(source: Path, dest: Path) -> None:
    """Copy the SoftHSM2 token directory consistently: the source's digests are taken before
    and after the copy, and the copy is retried while a writer (a key generated or deleted
    meanwhile) changed anything."""
    if not source.is_dir():
        raise CAError(ErrorCode.NOT_INITIALISED, f"no SoftHSM2 token directory at {source}")
    for _attempt in range(COPY_ATTEMPTS):
        before = _tree_digests(source)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(source, dest, copy_function=shutil.copy2)
        if _tree_digests(source) == before == _tree_digests(dest):
            return
    raise CAError(
        ErrorCode.CONFLICT,
        f"the token directory {source} kept changing during {COPY_ATTEMPTS} copies: retry "
        "when no key is being generated",
    )


# ------------------------------------------------------------------------------ create
def _backend(url: str) -> str:
    name = make_url(url).get_backend_name()
    if name not in ("sqlite", "postgresql"):
        raise CAError(ErrorCode.CONFIG, f"cannot back up a {name} database")
    return name


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise CAError(ErrorCode.CONFIG, "an in-memory SQLite database has nothing to back up")
    return Path(database)


def _require_schema(conn: Connection) -> None:
    if dbfacts.revision(conn) is None:
        raise CAError(ErrorCode.NOT_INITIALISED, "the database has no agentca schema to back up")


def _dump_sqlite(url: str, out: Path) -> dict[str, Any]:
    source = _sqlite_path(url)
    if not source.exists():
        raise CAError(ErrorCode.NOT_INITIALISED, f"no agentca database at {source}")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(out / SQLITE_COPY)
    try:
        src.backup(dst)  # SQLite's online backup: one consistent copy, writers may go on
    finally:
        src.close()
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal
        dst.close()
    engine = _read_only_sqlite(out / SQLITE_COPY)
    try:
        with engine.connect() as conn:
            _require_schema(conn)
            return dbfacts.facts(conn)
    finally:
        engine.dispose()


def _read_only_sqlite(path: Path) -> Engine:
    """An engine on a SQLite file that never writes to it (no WAL switch, no -wal file)."""
    return create_engine(
        "sqlite://", creator=lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    )


def _dump_postgres(url: str, out: Path) -> dict[str, Any]:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                snapshot = str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar())
                _require_schema(conn)
                found = dbfacts.facts(conn)
                run_tool(
                    "pg_dump",
                    url,
                    ["--format=custom", f"--snapshot={snapshot}", "--file", str(out / PG_DUMP)],
                    "backup",
                )
            return found
    finally:
        engine.dispose()


def _prepare_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CAError(ErrorCode.CONFLICT, f"{out} exists and is not an empty directory")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out, 0o700)


def _owner_only(root: Path) -> None:
    """Make a backup tree 0700/0600 whatever the umask or the copied files' own modes."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o700)
        for name in filenames:
            os.chmod(Path(dirpath) / name, 0o600)


def create_backup(settings: Settings, out: Path, version: str) -> dict[str, Any]:
    """Write a backup of the CA configured by ``settings`` into the new directory ``out``.

    The database is read through ``migration_database_url`` (the owner role reads every
    table). Returns the manifest (also written as ``out/manifest.json``).
    """
    url = settings.effective_migration_database_url
    backend = _backend(url)
    kind, _conf, tokens = token_location(settings)
    _prepare_out(out)
    try:
        found = _dump_sqlite(url, out) if backend == "sqlite" else _dump_postgres(url, out)
        if kind == "softhsm2":
            assert tokens is not None
            copy_token(tokens, out / TOKEN_DIR)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    _owner_only(out)
    files = {
        rel: {"sha256": digest, "bytes": (out / rel).stat().st_size}
        for rel, digest in _tree_digests(out).items()
    }
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "created_at": _now(),
        "agentca_version": version,
        "database": {
            "backend": backend,
            "file": PG_DUMP if backend == "postgresql" else SQLITE_COPY,
        },
        **found,
        "token": {
            "kind": kind,
            "dir": TOKEN_DIR if kind == "softhsm2" else None,
            "labels": [settings.token_label, settings.ocsp_token_label] if kind != "none" else [],
        },
        "secrets": NO_SECRETS,
        "files": files,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    fd = os.open(out / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return manifest


def manifest_digest(directory: Path) -> str:
    """The SHA-256 of a backup's manifest: record it elsewhere to detect a rewritten backup."""
    return sha256_file(directory / MANIFEST)


# ------------------------------------------------------------------------------ verify
def _bad(directory: Path, message: str) -> CAError:
    return CAError(ErrorCode.BAD_REQUEST, f"backup {directory} refused: {message}")


def _load_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise _bad(directory, f"no {MANIFEST}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(directory, f"{MANIFEST} is not JSON") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _bad(directory, f"{MANIFEST} is not an agentca backup manifest")
    if doc.get("version") != VERSION:
        raise _bad(directory, f"manifest version {doc.get('version')!r} is not {VERSION}")
    files = doc.get("files")
    database = doc.get("database")
    if not isinstance(files, dict) or not isinstance(database, dict):
        raise _bad(directory, f"{MANIFEST} lists no files")
    for rel, want in files.items():
        if not _safe_name(rel):
            raise _bad(directory, f"{MANIFEST} names {rel!r}: not a file inside the backup")
        if not (
            isinstance(want, dict)
            and isinstance(want.get("sha256"), str)
            and type(want.get("bytes")) is int
        ):
            raise _bad(directory, f"{MANIFEST} has no SHA-256 and size for {rel}")
    if database.get("backend") not in ("sqlite", "postgresql") or not (
        isinstance(database.get("file"), str) and database["file"] in files
    ):
        raise _bad(directory, f"{MANIFEST} names no database file")
    _check_facts(directory, doc)
    return doc


def _safe_name(rel: object) -> bool:
    """Whether ``rel`` is a plain relative POSIX path inside a backup (no ``..``, no root)."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return False
    parts = rel.split("/")
    return rel != MANIFEST and all(part not in ("", ".", "..") for part in parts)


def _check_facts(directory: Path, doc: dict[str, Any]) -> None:
    token = doc.get("token", {})
    issuers = doc.get("issuers", [])
    shapes_ok = (
        isinstance(doc.get("schema_revision"), str)
        and isinstance(doc.get("tables"), dict)
        and isinstance(doc.get("ledger"), dict)
        and isinstance(doc.get("created_at"), str)
        and isinstance(token, dict)
        and isinstance(issuers, list)
        and all(
            isinstance(i, dict)
            and all(isinstance(i.get(k), str) for k in ("role", "name", "fingerprint_sha256"))
            for i in issuers
        )
    )
    if not shapes_ok:
        raise _bad(directory, f"{MANIFEST} is not a well-formed agentca backup manifest")


def _check_database_file(directory: Path, doc: dict[str, Any]) -> None:
    path = directory / doc["database"]["file"]
    if doc["database"]["backend"] == "sqlite":
        try:
            conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
            try:
                result = conn.execute("PRAGMA integrity_check").fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise _bad(directory, f"{path.name} is not a SQLite database") from exc
        if not result or result[0] != "ok":
            raise _bad(directory, f"{path.name} fails SQLite's integrity check")
        return
    proc = subprocess.run(
        [find_tool("pg_restore"), "--list", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise _bad(directory, f"{path.name} is not a readable pg_dump archive")


def verify_backup(directory: Path, expect_manifest_sha256: str | None = None) -> dict[str, Any]:
    """Check a backup offline: the manifest (and its digest when given), every listed file's
    size and SHA-256, no unlisted file, and that the dump opens. Returns the manifest."""
    if not directory.is_dir():
        raise _bad(directory, "not a directory")
    if expect_manifest_sha256 is not None:
        if not (directory / MANIFEST).is_file():
            raise _bad(directory, f"no {MANIFEST}")
        if manifest_digest(directory) != expect_manifest_sha256.lower():
            raise _bad(directory, f"{MANIFEST} does not have the expected SHA-256")
    doc = _load_manifest(directory)
    listed: dict[str, Any] = doc["files"]
    present = set(_tree_digests_names(directory)) - {MANIFEST}
    extra = sorted(present - set(listed))
    if extra:
        raise _bad(directory, f"{extra[0]} is not listed in the manifest")
    links = _symlinks(directory)
    if links:
        raise _bad(directory, f"{links[0]} is a symbolic link (a backup holds plain files only)")
    for rel, want in sorted(listed.items()):
        path = directory / rel
        if not path.is_file():
            raise _bad(directory, f"{rel} is missing")
        if path.stat().st_size != want.get("bytes") or sha256_file(path) != want.get("sha256"):
            raise _bad(directory, f"{rel} does not match its SHA-256 in the manifest")
    _check_database_file(directory, doc)
    return doc


def _symlinks(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if path.is_symlink():
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def _tree_digests_names(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]


# ------------------------------------------------------------------------------ restore
def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _database_in_use(url: str) -> bool:
    if make_url(url).get_backend_name() == "sqlite" and not _sqlite_path(url).exists():
        return False
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return bool(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _token_in_use(tokens: Path | None) -> bool:
    return tokens is not None and tokens.is_dir() and any(tokens.iterdir())


def _aside(path: Path, stamp: str) -> Path:
    moved = path.with_name(f"{path.name}.replaced-{stamp}")
    path.rename(moved)
    return moved


def _restore_sqlite(directory: Path, doc: dict[str, Any], url: str, kept: list[str]) -> None:
    target = _sqlite_path(url)
    stamp = _stamp()
    for suffix in ("", "-wal", "-shm"):
        path = target.with_name(target.name + suffix)
        if path.exists():
            kept.append(str(_aside(path, stamp)))
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{directory / doc['database']['file']}?immutable=1", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    os.chmod(target, 0o600)


def _restore_postgres(directory: Path, doc: dict[str, Any], url: str, replace: bool) -> None:
    args = ["--no-owner", "--no-acl", "--exit-on-error", "--single-transaction"]
    if replace:
        args += ["--clean", "--if-exists"]
    run_tool("pg_restore", url, [*args, str(directory / doc["database"]["file"])], "restore")


def _restore_token(
    directory: Path, settings: Settings, conf: Path | None, tokens: Path, kept: list[str]
) -> None:
    if _token_in_use(tokens):
        kept.append(str(_aside(tokens, _stamp())))
    elif tokens.exists():
        tokens.rmdir()
    tokens.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copytree(directory / TOKEN_DIR, tokens, copy_function=shutil.copy2)
    for path in [tokens, *tokens.rglob("*")]:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    if conf is not None and not conf.exists():
        from hsm.softhsm import softhsm_config_text

        conf.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        conf.write_text(softhsm_config_text(tokens), encoding="utf-8")


def _compare(restored: dict[str, Any], doc: dict[str, Any]) -> None:
    for key in ("schema_revision", "tables", "issuers", "ledger"):
        if restored.get(key) != doc.get(key):
            raise CAError(
                ErrorCode.INTERNAL,
                f"the restored database's {key.replace('_', ' ')} differ from the backup's "
                "manifest",
            )


def _restore_and_check(
    directory: Path, doc: dict[str, Any], settings: Settings, busy: list[str], kept: list[str]
) -> dict[str, Any]:
    url = settings.effective_migration_database_url
    if _backend(url) == "sqlite":
        _restore_sqlite(directory, doc, url, kept)
    else:
        _restore_postgres(directory, doc, url, replace=bool(busy))
    if doc["token"].get("kind") == "softhsm2":
        _kind, conf, tokens = token_location(settings)
        assert tokens is not None
        _restore_token(directory, settings, conf, tokens, kept)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            restored = dbfacts.facts(conn)
            problem = dbfacts.ledger_problem(conn)
            unguarded = missing_ledger_triggers(conn)
    finally:
        engine.dispose()
    _compare(restored, doc)
    if problem:
        raise CAError(ErrorCode.INTERNAL, f"the restored ledger does not verify: {problem}")
    if unguarded:
        raise CAError(
            ErrorCode.INTERNAL,
            f"the restored database lacks the ledger's append-only triggers "
            f"({', '.join(unguarded)}): the backup's schema was altered",
        )
    return restored


#: The triggers migration 0003 creates to keep the ledger append-only, per backend.
LEDGER_TRIGGERS = {
    "sqlite": ("ledger_entries_no_delete", "ledger_entries_no_update"),
    "postgresql": ("ledger_entries_no_truncate", "ledger_entries_no_update"),
}


def missing_ledger_triggers(conn: Connection) -> list[str]:
    """The ledger's append-only triggers that ``conn``'s database lacks (a restored dump
    could have dropped them while its rows and hash chain still match)."""
    from ca.store.append_only import trigger_names

    dialect = conn.dialect.name
    if dialect == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    else:
        query = (
            "SELECT tgname FROM pg_trigger WHERE tgrelid IN "
            "(SELECT oid FROM pg_class WHERE relname IN ('ledger_entries', 'action_records'))"
        )
    present = {str(name) for (name,) in conn.exec_driver_sql(query)}
    required = list(LEDGER_TRIGGERS[dialect])
    if inspect(conn).has_table("action_records"):  # the action ledger (0017) is guarded too
        required += trigger_names(dialect, "action_records")
    return [name for name in required if name not in present]


def restore_backup(
    directory: Path,
    settings: Settings,
    force: bool = False,
    expect_manifest_sha256: str | None = None,
) -> dict[str, Any]:
    """Restore the verified backup ``directory`` into the database and token directory that
    ``settings`` name. Both must be empty unless ``force``: then the old SQLite file and token
    directory are renamed aside (``*.replaced-<time>``), and a PostgreSQL database is cleaned
    of the dump's objects first. Returns what was restored."""
    doc = verify_backup(directory, expect_manifest_sha256)
    url = settings.effective_migration_database_url
    backend = _backend(url)
    if backend != doc["database"]["backend"]:
        raise CAError(
            ErrorCode.CONFIG,
            f"this is a {doc['database']['backend']} backup and the target database is "
            f"{backend}: restore into {doc['database']['backend']} (then 'agentca db "
            "migrate-to' moves a SQLite CA to PostgreSQL)",
        )
    kind, _conf, tokens = token_location(settings)
    doc.setdefault("token", {})
    backed_token = doc["token"].get("kind")
    if backed_token == "softhsm2" and kind != "softhsm2":
        raise CAError(
            ErrorCode.CONFIG,
            "the backup holds a SoftHSM2 token and this configuration uses no SoftHSM2 token",
        )
    busy = []
    if _database_in_use(url):
        busy.append("the database has tables")
    if backed_token == "softhsm2" and _token_in_use(tokens):
        busy.append(f"the token directory {tokens} is not empty")
    if busy and not force:
        raise CAError(
            ErrorCode.CONFLICT,
            f"the restore target is not empty ({'; '.join(busy)}): restore into an empty "
            "database and data directory, or pass --force to replace them",
        )
    kept: list[str] = []
    try:
        restored = _restore_and_check(directory, doc, settings, busy, kept)
    except Exception as exc:
        if not kept:
            raise
        code, detail = (
            (exc.code, exc.detail)
            if isinstance(exc, CAError)
            else (ErrorCode.INTERNAL, f"the restore failed ({type(exc).__name__})")
        )
        raise CAError(code, f"{detail}; the previous state is kept as {', '.join(kept)}") from exc
    missing = [
        str(p)
        for p in (settings.effective_pin_file, settings.effective_ocsp_pin_file)
        if backed_token == "softhsm2" and not p.exists()
    ]
    return {
        "backend": backend,
        "schema_revision": restored["schema_revision"],
        "tables": restored["tables"],
        "issuers": restored["issuers"],
        "ledger": restored["ledger"],
        "token": {"kind": backed_token, "dir": str(tokens) if backed_token == "softhsm2" else None},
        "kept_aside": kept,
        "missing_pin_files": missing,
    }
