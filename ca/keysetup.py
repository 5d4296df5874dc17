"""Turning configuration into a key store: which token, which PIN, and the clock guard.

Both tiers use it: the CA process (``ca.runtime``) and the OCSP responder (``ocsp``), which
must not import the issuing side.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from ca.clockcheck import SkewMonitor, monitor_for
from ca.config import Settings, read_secret_file
from ca.errors import CAError, ErrorCode
from hsm import KeyManager, KeyStore, TokenConfig, ensure_softhsm_token


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


def open_key_store(settings: Settings, create: bool = False) -> KeyManager:
    """The CA's key store, as configured (``create`` provisions a managed SoftHSM2 token)."""
    return KeyStore(token_config(settings, create=create))


def guard_signing(keys: KeyManager, engine: Engine, settings: Settings) -> SkewMonitor:
    """Measure the clock against the database server's now, and make every signature by
    ``keys`` refuse while it is off by more than ``max_clock_skew_seconds``."""
    monitor = monitor_for(
        engine, settings.max_clock_skew_seconds, settings.clock_check_interval_seconds
    )
    keys.set_guard(monitor.check)
    return monitor
