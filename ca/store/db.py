"""Engine and session setup, and schema migration through Alembic."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError

from ca.errors import CAError, ErrorCode

if TYPE_CHECKING:  # the ORM is imported where sessions are made: `agentca list` needs none
    from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys, recursive triggers and a busy timeout.

    ``postgresql://`` URLs are routed to psycopg 3 (the driver we ship and test).
    """
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            # a REPLACE deletes the row it conflicts with; only with recursive triggers on
            # does that fire the append-only tables' DELETE triggers (review: INSERT OR
            # REPLACE re-keyed a gateway, reset the action ledger's head, rewrote records)
            cur.execute("PRAGMA recursive_triggers=ON")
            cur.close()

        return engine
    kwargs.setdefault("pool_size", 5)
    engine = create_engine(parsed, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine)
    return engine


IDLE_PING_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection on checkout only when it sat idle for ``IDLE_PING_SECONDS``.

    ``pool_pre_ping`` cost one round trip per request (6 % of an enrollment's time,
    decision 0039). A connection that was used within the last second is taken as is; if
    the server went away meanwhile, the statement fails, SQLAlchemy invalidates the whole
    pool on that disconnect, and the next request reconnects. A stale idle connection is
    still replaced before it is used.
    """

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["agentca.idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("agentca.idle_since")
        if idle_since is not None and time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("SELECT 1")
            finally:
                cur.close()
            dbapi_conn.rollback()
        except Exception as exc:
            raise DisconnectionError() from exc


def lock_for_write(s: Session) -> None:
    """Make the reads that follow in ``s``'s transaction safe to act on, as ``SELECT ... FOR
    UPDATE`` does on PostgreSQL (call before them; a no-op there).

    SQLite ignores ``FOR UPDATE`` and the driver starts the transaction only at its first
    write, so a read-check-write (revoke a certificate that is issued) could act on a row
    another writer changed in between: two revocations both succeeded and the later reason
    overwrote the earlier (a keyCompromise became affiliationChanged). A write that changes
    nothing takes SQLite's one write lock at once; other writers then wait (busy timeout).
    """
    if s.get_bind().dialect.name == "sqlite":
        s.connection().execute(text("UPDATE certificates SET id = id WHERE 0"))


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay readable after commit."""
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Any:
    """An Alembic ``Config`` pointing at the packaged ``migrations/`` folder."""
    from alembic.config import Config

    # Located, not imported: migrations/ imports the models, so importing it here would make
    # the store and the migrations depend on each other (docs/architecture.md).
    spec = importlib.util.find_spec("migrations")
    if spec is None or not spec.submodule_search_locations:
        raise CAError(ErrorCode.CONFIG, "the packaged migrations folder is missing")
    cfg = Config()
    folder = next(iter(spec.submodule_search_locations))
    cfg.set_main_option("script_location", str(Path(folder)))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: the newest)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def migrate_if_behind(url: str, migration_url: str) -> bool:
    """Migrate the schema at ``url`` to the head through ``migration_url`` unless it is there.

    A process connected as the least-privileged writer role (decision 0028) never runs DDL on
    a schema that is up to date; behind, a role that may not migrate gets one clear error
    naming ``agentca db upgrade`` instead of a driver traceback. Returns whether it migrated.
    """
    engine = make_engine(url)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision(url)
    if current == head:
        return False
    try:
        upgrade(migration_url)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege
            raise
        raise CAError(
            ErrorCode.CONFIG,
            f"the database schema is at {current or 'nothing'}, this release needs {head}, and "
            "the role of migration_database_url (database_url when unset) may not migrate it: "
            "run 'agentca db upgrade' with migration_database_url naming the owner role "
            "(docs/deployment.md, 'Database roles')",
        ) from None
    return True


def head_revision(url: str) -> str:
    """The newest schema revision this release ships."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    if head is None:
        raise CAError(ErrorCode.CONFIG, "the packaged migrations have no head revision")
    return head


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or ``None`` when never migrated.

    Reads Alembic's ``alembic_version`` table directly: importing Alembic costs read-only
    commands about 0.1 s of start-up (docs/performance.md, "CLI start-up").
    """
    from sqlalchemy import inspect, text

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return None if rev is None else str(rev)


def require_database_file(url: str) -> None:
    """For a SQLite URL, fail with NOT_INITIALISED when its file does not exist yet: commands
    that only read must not create an empty database (and its directory) as a side effect."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database
    if database and database != ":memory:" and not Path(database).exists():
        raise CAError(
            ErrorCode.NOT_INITIALISED,
            f"no agentca database at {database}; run 'agentca init' first, or point "
            "AGENTCA_DATA_DIR / database_url at an existing CA",
        )


def require_schema(engine: Engine) -> None:
    """Fail with a clear error when the database was never migrated."""
    if current_revision(engine) is None:
        raise CAError(
            ErrorCode.NOT_INITIALISED,
            "the database has no agentca schema; run 'agentca init' (a new CA) or "
            "'agentca db upgrade' (an existing database)",
        )
