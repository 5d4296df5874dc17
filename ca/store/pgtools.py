"""Run PostgreSQL's client tools (``pg_dump``, ``pg_restore``) without a password in argv.

A database URL may carry its password (``database_url`` is read from the TOML file or the
environment, never argv). The tools get the connection as libpq keywords without it on their
command line, and the password through a ``PGPASSFILE`` written 0600 into a private temporary
directory that is removed when the tool exits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from ca.errors import CAError, ErrorCode

#: The longest a dump or restore may take before it is abandoned (seconds).
TOOL_TIMEOUT = 3600


def find_tool(name: str) -> str:
    """The path of ``pg_dump`` or ``pg_restore``: on ``PATH``, else the newest Debian one."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if candidates:
        return str(candidates[-1])
    raise CAError(
        ErrorCode.CONFIG,
        f"{name} is not installed: install PostgreSQL's client tools "
        "(apt-get install postgresql-client)",
    )


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def conninfo(url: str | URL) -> str:
    """libpq keyword/value connection string of ``url`` without its password."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() != "postgresql":
        raise CAError(ErrorCode.CONFIG, "not a PostgreSQL database URL")
    pairs: list[tuple[str, str]] = []
    for key, value in (
        ("host", parsed.host),
        ("port", None if parsed.port is None else str(parsed.port)),
        ("dbname", parsed.database),
        ("user", parsed.username),
    ):
        if value:
            pairs.append((key, value))
    for key, raw in parsed.query.items():
        if key == "password":
            continue
        pairs.append((key, raw if isinstance(raw, str) else raw[-1]))
    return " ".join(f"{key}={_quote(value)}" for key, value in pairs)


def _pgpass_field(value: str | None, default: str) -> str:
    return (value or default).replace("\\", "\\\\").replace(":", "\\:")


@contextmanager
def password_env(url: str | URL) -> Iterator[dict[str, str]]:
    """The environment a client tool runs with: ``PGPASSFILE`` holding the URL's password
    (when it has one) in a private directory removed afterwards; no ``PG*`` leaks in."""
    parsed = make_url(url) if isinstance(url, str) else url
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    password = parsed.password or parsed.query.get("password")
    if not password:
        yield env
        return
    secret = password if isinstance(password, str) else password[-1]
    with tempfile.TemporaryDirectory(prefix="agentca-pgpass.") as tmp:
        path = Path(tmp) / "pgpass"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        line = ":".join(
            [
                _pgpass_field(parsed.host, "*"),
                _pgpass_field(None if parsed.port is None else str(parsed.port), "*"),
                _pgpass_field(parsed.database, "*"),
                _pgpass_field(parsed.username, "*"),
                _pgpass_field(secret, ""),
            ]
        )
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(line + "\n")
        yield env | {"PGPASSFILE": str(path)}


def run_tool(
    name: str, url: str | URL, args: Sequence[str], what: str
) -> subprocess.CompletedProcess[str]:
    """Run ``name`` (``pg_dump``/``pg_restore``) against ``url``; a failure is one CAError line
    carrying the tool's last message (never the password, which is not in its argv)."""
    argv = [find_tool(name), *args, "--dbname", conninfo(url)]
    with password_env(url) as env:
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=TOOL_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise CAError(ErrorCode.DB_UNAVAILABLE, f"{what}: {name} timed out") from exc
    if proc.returncode != 0:
        last = next(
            (line for line in reversed(proc.stderr.splitlines()) if line.strip()), "no message"
        )
        raise CAError(ErrorCode.DB_UNAVAILABLE, f"{what}: {name} failed: {last.strip()}")
    return proc
