"""Wiring for one responder process: engine, key store, status source, signers, responder."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from ca.clock import utcnow
from ca.clockcheck import SkewMonitor
from ca.config import Settings
from ca.keysetup import guard_signing, token_config
from ca.store.db import make_engine, make_session_factory
from hsm import KeyStore
from ocsp.options import OcspOptions
from ocsp.responder import Responder
from ocsp.rotation import RotationResult, SignerRotator
from ocsp.signers import HsmSigners
from ocsp.status import SqlStatusSource


@dataclass
class ResponderRuntime:
    """Live objects of one responder process."""

    engine: Engine
    keys: KeyStore
    responder: Responder
    clock_check: SkewMonitor | None = None

    def close(self) -> None:
        self.keys.close()
        self.engine.dispose()


def ocsp_engine(settings: Settings, options: OcspOptions) -> Engine:
    """An engine that gives up quickly when PostgreSQL is unreachable (-> tryLater)."""
    url = settings.effective_database_url
    if make_url(url).get_backend_name() == "postgresql":
        return make_engine(
            url, connect_args={"connect_timeout": options.db_connect_timeout}, pool_size=2
        )
    return make_engine(url)


def rotator_for(
    settings: Settings, options: OcspOptions, engine: Engine, keys: KeyStore
) -> SignerRotator:
    return SignerRotator(make_session_factory(engine), keys, options, utcnow)


def open_responder(settings: Settings, options: OcspOptions) -> ResponderRuntime:
    """Build the responder of this process (call after fork: it will use the HSM)."""
    engine = ocsp_engine(settings, options)
    keys = KeyStore(token_config(settings))
    clock_check = guard_signing(keys, engine, settings)
    source = SqlStatusSource(engine)
    signers = HsmSigners(
        source,
        keys,
        rotator_for(settings, options, engine, keys),
        utcnow,
        options.signer_renew_fraction,
    )
    return ResponderRuntime(engine, keys, Responder(source, signers, options), clock_check)


def ensure_signers(
    settings: Settings, options: OcspOptions, force: bool = False
) -> list[RotationResult]:
    """Create (or with ``force`` replace) the delegated signer of every issuer, then close."""
    engine = ocsp_engine(settings, options)
    keys = KeyStore(token_config(settings))
    try:
        return rotator_for(settings, options, engine, keys).ensure_all(force)
    finally:
        keys.close()
        engine.dispose()
