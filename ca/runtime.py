"""Wiring: build the store, the key store and the CA service from :class:`Settings`.

This is the only place that turns configuration into live objects; the CLI, the CA HTTP app
and the OCSP responder all start here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ca.authority import CertificateAuthority, Clock, utcnow
from ca.config import Settings, read_secret_file
from ca.enrollment import EnrollmentService
from ca.errors import CAError, ErrorCode
from ca.ledger.signer import Auditor
from ca.ledger.store import LedgerStore
from ca.registry import Registry
from ca.store.db import make_engine, make_session_factory, require_schema, upgrade
from hsm import KeyStore, TokenConfig, ensure_softhsm_token


@dataclass
class Runtime:
    """Live objects for one process: engine, sessions, key store and CA service."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keys: KeyStore
    authority: CertificateAuthority
    registry: Registry
    enrollment: EnrollmentService
    ledger: LedgerStore
    auditor: Auditor

    def close(self) -> None:
        self.keys.close()
        self.engine.dispose()


def token_config(settings: Settings, create: bool = False) -> TokenConfig:
    """The PKCS#11 token to use: a managed SoftHSM2 token under the data dir, or an HSM."""
    if settings.pkcs11_module and not settings.manage_softhsm:
        pin = read_secret_file(settings.effective_pin_file, "HSM PIN")
        return TokenConfig(
            module_path=settings.pkcs11_module,
            token_label=settings.token_label,
            user_pin=pin,
            softhsm2_conf=settings.softhsm2_conf or None,
        )
    conf = (
        Path(settings.softhsm2_conf)
        if settings.softhsm2_conf
        else (settings.data_dir / "hsm" / "softhsm2.conf")
    )
    if not create and not conf.exists():
        raise CAError(
            ErrorCode.NOT_INITIALISED,
            f"no SoftHSM2 token under {settings.data_dir}; run 'agentca init' first",
        )
    return ensure_softhsm_token(
        settings.data_dir, settings.token_label, settings.pkcs11_module or None
    )


def open_runtime(settings: Settings, create: bool = False, clock: Clock = utcnow) -> Runtime:
    """Open (and with ``create`` also provision and migrate) everything a process needs."""
    if create:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    if not create:
        try:
            require_schema(engine)
        except CAError:
            engine.dispose()
            raise
    sessions = make_session_factory(engine)
    keys = KeyStore(token_config(settings, create=create))
    authority = CertificateAuthority(settings, sessions, keys, clock)
    registry = Registry(sessions, clock)
    enrollment = EnrollmentService(settings, authority, registry)
    ledger = LedgerStore(sessions)
    return Runtime(
        settings,
        engine,
        sessions,
        keys,
        authority,
        registry,
        enrollment,
        ledger,
        Auditor(authority, ledger),
    )


def ensure_initialised(settings: Settings, actor: str = "system") -> bool:
    """First-run setup used by ``agentca serve`` and ``make run``: token, schema, hierarchy.

    Returns True when it created the hierarchy, False when everything already existed.
    """
    rt = open_runtime(settings, create=True)
    try:
        if rt.authority.is_initialised():
            return False
        rt.authority.initialise(settings.root_key_type, settings.issuing_key_type, actor)
        return True
    finally:
        rt.close()
