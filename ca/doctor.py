"""``agentca doctor``: what is wrong with this CA, and how to fix it (issue 14 item 4).

Each check is independent: an unreachable HSM does not hide a stale CRL. A finding is ``ok``,
``warn`` (works, but will not for long or is unsafe) or ``fail`` (something operators or
relying parties depend on is broken now), with the one thing to do about it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ca.config import Settings, redacted, url_warnings
from ca.errors import CAError

OK, WARN, FAIL = "ok", "warn", "fail"
SIGNER_RENEW_AHEAD = timedelta(hours=24)  # ResponderCertPolicy renews with half of 48 h left
CEREMONY_AHEAD = timedelta(days=14)  # ca.ceremony.CEREMONY_AHEAD (not imported: no HSM code)
CEREMONY_FIX = (
    "run the root key ceremony: attach the root token, 'agentca ca ceremony' "
    "(docs/operations.md, Root key ceremony)"
)


@dataclass(frozen=True)
class Finding:
    """One check's result."""

    check: str
    status: str
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _guarded(check: str, fn: Callable[[], list[Finding]]) -> list[Finding]:
    try:
        return fn()
    except CAError as exc:
        return [Finding(check, FAIL, exc.detail, _FIX.get(exc.code.slug, ""))]
    except Exception as exc:  # a check must never stop the others
        return [Finding(check, FAIL, f"{type(exc).__name__}: {exc}")]


_FIX = {
    "database-unavailable": "check database_url and that the server is up",
    "not-initialised": "run 'agentca init' (a new CA) or point AGENTCA_DATA_DIR at the CA",
    "hsm-pin": "check hsm_pin_file: it must hold the token's user PIN, mode 0600",
    "hsm-token-missing": "check pkcs11_module, token_label and softhsm2_conf",
    "config": "fix the setting named above (agentca config show lists them with sources)",
}


def check_config(settings: Settings) -> list[Finding]:
    """URLs in certificates that point where nothing of this CA listens."""
    warnings = url_warnings(settings)
    if not warnings:
        return [Finding("config", OK, "settings valid; certificate URLs match the listeners")]
    return [
        Finding("config", WARN, w, "set public_base_url / ocsp_url / crl_base_url")
        for w in warnings
    ]


def check_database(settings: Settings) -> list[Finding]:
    """Reachable, migrated to this release, and (PostgreSQL) not as a superuser."""
    from sqlalchemy import text

    from ca.store.db import current_revision, head_revision, make_engine, require_database_file

    url = settings.effective_database_url
    require_database_file(url)
    engine = make_engine(url)
    out: list[Finding] = []
    try:
        current, head = current_revision(engine), head_revision(url)
        where = redacted("database_url", url)
        if current != head:
            out.append(
                Finding(
                    "database",
                    FAIL,
                    f"schema at {current or 'nothing'}, this release needs {head} ({where})",
                    "run 'agentca db upgrade' as the owner role",
                )
            )
        else:
            out.append(Finding("database", OK, f"schema {head} on {where}"))
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                user, superuser = conn.execute(
                    text("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
                ).one()
            if superuser:
                out.append(
                    Finding(
                        "roles",
                        WARN,
                        f"the CA connects as superuser {user}",
                        "run 'agentca db roles' and connect as "
                        f"{settings.db_writer_role} (docs/deployment.md)",
                    )
                )
            elif user != settings.db_writer_role:
                out.append(
                    Finding(
                        "roles",
                        WARN,
                        f"the CA connects as {user}, not the writer role {settings.db_writer_role}",
                        "set db_writer_role or database_url",
                    )
                )
            else:
                out.append(Finding("roles", OK, f"connected as the writer role {user}"))
    finally:
        engine.dispose()
    return out


def check_hsm_and_clock(settings: Settings) -> list[Finding]:
    """The CA token opens and logs in; this host's clock agrees with the database's."""
    from ca.keysetup import guard_signing, open_key_store
    from ca.store.db import make_engine

    keys = open_key_store(settings)
    engine = make_engine(settings.effective_database_url)
    try:
        status = keys.status()
        hsm = (
            Finding("hsm", OK, status.detail)
            if status.ok
            else Finding("hsm", FAIL, status.detail, _FIX["hsm-token-missing"])
        )
        reading = guard_signing(keys, engine, settings).reading()
        bound = settings.max_clock_skew_seconds
        if reading.offset is None:
            clock = Finding("clock", OK, f"not measured ({reading.source})")
        elif abs(reading.offset) > bound:
            clock = Finding(
                "clock",
                FAIL,
                f"{reading.offset:+.3f} s from the database server's clock "
                f"(bound {bound:g} s): signing is refused",
                "fix NTP on this host or the server",
            )
        else:
            clock = Finding("clock", OK, f"{reading.offset:+.3f} s from the database server")
        return [hsm, clock]
    finally:
        keys.close()
        engine.dispose()


def check_published(settings: Settings, now: datetime) -> list[Finding]:
    """CRL files fresh, OCSP signers valid and not due, ledger checkpointed."""
    from sqlalchemy import func, select

    from ca.crl import read_crl_info
    from ca.store.db import make_engine, make_session_factory
    from ca.store.models import Issuer, LedgerCheckpointRow, LedgerEntryRow, OcspSigner

    engine = make_engine(settings.effective_database_url)
    out: list[Finding] = []
    try:
        with make_session_factory(engine)() as s:
            issuers = list(s.execute(select(Issuer.id, Issuer.name, Issuer.parent_id)).all())
            signers = dict(
                s.execute(
                    select(OcspSigner.issuer_id, func.max(OcspSigner.not_after)).group_by(
                        OcspSigner.issuer_id
                    )
                ).all()
            )
            entries = int(s.scalar(select(func.count()).select_from(LedgerEntryRow)) or 0)
            last = s.execute(
                select(LedgerCheckpointRow.tree_size, LedgerCheckpointRow.timestamp)
                .order_by(LedgerCheckpointRow.id.desc())
                .limit(1)
            ).first()
    finally:
        engine.dispose()
    publish_dir = settings.effective_crl_publish_dir
    for issuer_id, name, parent_id in issuers:
        offline_root = settings.root_offline and parent_id is None
        for suffix in ("", "-delta"):
            path = publish_dir / f"{name}{suffix}.crl"
            check = f"crl {path.name}"
            if not path.exists():
                fix = CEREMONY_FIX if offline_root else "run 'agentca crl publish'"
                out.append(Finding(check, FAIL, f"{path} is missing", fix))
                continue
            with path.open("rb") as fh:
                info = read_crl_info(fh)
            nxt = info.next_update
            if nxt is not None and nxt <= now:
                out.append(
                    Finding(
                        check,
                        FAIL,
                        f"nextUpdate {nxt.isoformat()} has passed: relying parties refuse it",
                        CEREMONY_FIX
                        if offline_root
                        else "run the CRL publisher ('agentca crl publish --loop')",
                    )
                )
            elif offline_root and (nxt is None or nxt - now < CEREMONY_AHEAD):
                out.append(
                    Finding(
                        check,
                        WARN,
                        f"the root CRL's nextUpdate {nxt} is less than 14 days away",
                        CEREMONY_FIX,
                    )
                )
            else:
                out.append(Finding(check, OK, f"CRL #{info.number}, next update {nxt}"))
        not_after = signers.get(issuer_id)
        if offline_root:
            out.append(_root_signer(name, not_after, now))
            continue
        check = f"ocsp signer {name}"
        if not_after is None or _utc(not_after) <= now:
            out.append(
                Finding(
                    check,
                    FAIL,
                    "no valid responder certificate",
                    "run 'agentca ocsp rotate-signer'",
                )
            )
        elif _utc(not_after) - now < SIGNER_RENEW_AHEAD:
            out.append(
                Finding(
                    check,
                    WARN,
                    f"the newest responder certificate expires {not_after}",
                    "is 'agentca ocsp rotate-signer --every 600' running?",
                )
            )
        else:
            out.append(Finding(check, OK, f"valid until {not_after}"))
    every = timedelta(seconds=2 * 300)
    if last is None:
        status = WARN if entries else OK
        out.append(
            Finding(
                "ledger",
                status,
                f"{entries} entries, no checkpoint yet",
                "run 'agentca ledger checkpoint'" if entries else "",
            )
        )
    else:
        size, stamp = last
        age = now - datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        if size < entries and age > every:
            out.append(
                Finding(
                    "ledger",
                    WARN,
                    f"{entries - size} entries since the last checkpoint, "
                    f"{int(age.total_seconds())} s ago",
                    "is 'agentca ledger checkpoint --every 300' running?",
                )
            )
        else:
            out.append(Finding("ledger", OK, f"checkpoint of {size} of {entries} entries"))
    return out


def _root_signer(name: str, not_after: datetime | None, now: datetime) -> Finding:
    """The offline root's responder certificate: renewed at the ceremony only."""
    check = f"ocsp signer {name}"
    if not_after is None or _utc(not_after) <= now:
        return Finding(check, FAIL, "no valid responder certificate", CEREMONY_FIX)
    if _utc(not_after) - now < CEREMONY_AHEAD:
        return Finding(
            check, WARN, f"the root's responder certificate expires {not_after}", CEREMONY_FIX
        )
    return Finding(check, OK, f"valid until {not_after}")


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def diagnose(settings: Settings, now: datetime | None = None) -> list[Finding]:
    """Every check, each on its own."""
    at = now or datetime.now(UTC)
    out = _guarded("config", lambda: check_config(settings))
    out += _guarded("database", lambda: check_database(settings))
    if any(f.check == "database" and f.status == FAIL for f in out):
        return out  # the rest reads the database
    out += _guarded("hsm", lambda: check_hsm_and_clock(settings))
    out += _guarded("published", lambda: check_published(settings, at))
    return out
