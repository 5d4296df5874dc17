"""Turning configuration into a key store: which token, which PIN, and the clock guard.

Both tiers use it: the CA process (``ca.wiring``) and the OCSP responder (``ocsp``), which
must not import the issuing side. ``key_store = "software"`` (with ``dev_mode``) swaps the
token for ``hsm.SoftKeyStore``: the throwaway dev mode of docs/operators.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine, inspect, select
from sqlalchemy.engine import make_url

from ca.clockcheck import SkewMonitor, monitor_for
from ca.config import Settings, read_secret_file
from ca.errors import CAError, ErrorCode
from ca.store.db import make_engine
from ca.store.models import Issuer
from hsm import (
    HSMUnavailable,
    KeyManager,
    KeyStore,
    SoftKeyStore,
    TokenConfig,
    TokenNotFound,
    ensure_softhsm_token,
    find_pkcs11_module,
)

log = logging.getLogger("agentca.keysetup")

SOFTWARE = "software"
_SOFTWARE_STORES: dict[str, SoftKeyStore] = {}
"""One software store per database this process uses: reopening the runtime (``agentca
serve`` initialises, then its forked workers open again) must find the same keys."""


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
        settings.data_dir, settings.token_label, settings.pkcs11_module or None, create=create
    )


def open_key_store(settings: Settings, create: bool = False) -> KeyManager:
    """The CA's key store, as configured (``create`` provisions a managed SoftHSM2 token)."""
    if settings.key_store == SOFTWARE:
        return software_key_store(settings)
    return KeyStore(token_config(settings, create=create))


def root_not_attached(settings: Settings) -> CAError:
    """The one line every root-signed operation fails with while the root token is away."""
    return CAError(
        ErrorCode.HSM_UNAVAILABLE,
        f"the root key's token (root_token_label={settings.root_token_label}) is not "
        "attached: attach it for the ceremony",
    )


def root_token_config(settings: Settings, create: bool = False) -> TokenConfig:
    """The root key's own token (``root_token_label``, PIN in ``root_pin_file``).

    A managed SoftHSM2 keeps it in the CA token's token directory, under the one SoftHSM2
    configuration a process may load (see ``ca.responder_token``); ``create`` provisions it
    there with PINs of its own.
    """
    from ca.responder_token import provision_softhsm_token

    pin_file = settings.effective_root_pin_file
    if settings.pkcs11_module and not settings.manage_softhsm:
        pin = read_secret_file(pin_file, "root HSM PIN")
        return TokenConfig(
            settings.pkcs11_module, settings.root_token_label, pin, settings.softhsm2_conf or None
        )
    conf = (
        Path(settings.softhsm2_conf)
        if settings.softhsm2_conf
        else (settings.data_dir / "hsm" / "softhsm2.conf")
    )
    module = settings.pkcs11_module or find_pkcs11_module()
    if create:
        if not conf.exists():  # the CA token makes the configuration and directories
            token_config(settings, create=True)
        provision_softhsm_token(module, conf, settings.root_token_label, pin_file)
    elif not conf.exists():
        raise CAError(
            ErrorCode.NOT_INITIALISED,
            f"no SoftHSM2 token under {settings.data_dir}; run 'agentca init' first",
        )
    pin = read_secret_file(pin_file, "root HSM PIN")
    return TokenConfig(module, settings.root_token_label, pin, str(conf))


def open_root_key_store(settings: Settings, create: bool = False) -> KeyManager:
    """The store holding the root key: its own token when ``root_token_label`` is set
    (opened now, so an absent token is :func:`root_not_attached` at once), else the CA's."""
    if not settings.root_offline:
        return open_key_store(settings, create=create)
    if settings.key_store == SOFTWARE:
        raise CAError(
            ErrorCode.CONFIG,
            "root_token_label needs key_store = 'pkcs11': a software key store has no tokens",
        )
    store = KeyStore(root_token_config(settings, create=create))
    try:
        store.labels()  # logs in: the token is there
    except (TokenNotFound, HSMUnavailable):
        store.close()
        raise root_not_attached(settings) from None
    return store


def software_key_store(settings: Settings) -> SoftKeyStore:
    """This process's in-memory key store for the configured database (dev mode only).

    Refused without ``dev_mode``; warns at every start; refused on a database whose CA
    hierarchy was made with keys this process does not hold (an earlier run, another process).
    """
    url = settings.effective_database_url
    if not settings.dev_mode:
        raise CAError(
            ErrorCode.CONFIG,
            "key_store = 'software' keeps the CA's private keys in this process's memory, "
            "unprotected, and they are lost when it stops: it is a throwaway development mode. "
            "Set dev_mode = true (AGENTCA_DEV_MODE=1) as well to accept that, or use "
            "key_store = 'pkcs11'",
        )
    if settings.pkcs11_module and not settings.manage_softhsm:
        raise CAError(
            ErrorCode.CONFIG,
            "key_store = 'software' is refused while a real HSM is configured "
            "(pkcs11_module set and manage_softhsm = false): a production configuration "
            "must not fall back to in-memory keys because of two environment variables",
        )
    log.warning(
        "DEV MODE: the CA keys live in this process's memory (key_store = 'software'); "
        "they vanish when it stops and every certificate it issued becomes unverifiable "
        "against a new hierarchy. Never use this for anything that must last"
    )
    store = _SOFTWARE_STORES.get(url)
    if store is None:
        store = _SOFTWARE_STORES[url] = SoftKeyStore(name="dev-mode")
    _refuse_orphaned_hierarchy(store, url)
    return store


def _refuse_orphaned_hierarchy(store: SoftKeyStore, url: str) -> None:
    """Refuse a database whose CA keys this process's software store does not hold."""
    engine = make_engine(url)
    try:
        if not inspect(engine).has_table(Issuer.__table__.name):
            return  # no schema yet: nothing was issued
        with engine.connect() as conn:
            rows = conn.execute(select(Issuer.name, Issuer.key_label)).all()
    finally:
        engine.dispose()
    missing = [f"{name} (key {label!r})" for name, label in rows if not store.exists(label)]
    if missing:
        raise CAError(
            ErrorCode.HSM_KEY_MISSING,
            f"the database {_safe(url)} already holds a CA hierarchy ({', '.join(missing)}) "
            "whose keys are not in this process's software key store: software keys live "
            "only in the process that made them (an earlier run, or another process such as "
            "those 'agentca run' starts). Start on an empty database (delete the SQLite file "
            "or point database_url elsewhere), or use key_store = 'pkcs11'",
        )


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def guard_signing(keys: KeyManager, engine: Engine, settings: Settings) -> SkewMonitor:
    """Measure the clock against the database server's now, and make every signature by
    ``keys`` refuse while it is off by more than ``max_clock_skew_seconds``."""
    monitor = monitor_for(
        engine, settings.max_clock_skew_seconds, settings.clock_check_interval_seconds
    )
    keys.set_guard(monitor.check)
    return monitor
