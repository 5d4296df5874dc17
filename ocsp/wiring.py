"""Wiring for one responder process: engine, responder token, status source, signers.

Everything here reads: the engine may belong to a SELECT-only role
(``ocsp_database_url``) and the key store is the responder's own token, which holds responder
keys only (``ca.responder_token``). Nothing is created or written (decision 0018).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from ca.clock import utcnow
from ca.clockcheck import SkewMonitor
from ca.config import Settings
from ca.keysetup import guard_signing
from ca.responder_token import responder_token_config
from ca.store.db import make_engine
from hsm import KeyStore
from ocsp.answer_map import MapBuilder, build_from_database
from ocsp.loaded_signers import CurrentSigners
from ocsp.options import OcspOptions
from ocsp.responder import Responder
from ocsp.status import SqlStatusSource


@dataclass
class ResponderRuntime:
    """Live objects of one responder process."""

    engine: Engine
    keys: KeyStore
    responder: Responder
    clock_check: SkewMonitor | None = None
    map_builder: MapBuilder | None = None

    def close(self) -> None:
        if self.map_builder is not None:
            self.map_builder.stop()
        self.keys.close()
        self.engine.dispose()


def ocsp_engine(settings: Settings, options: OcspOptions) -> Engine:
    """An engine on ``ocsp_database_url`` that gives up quickly when PostgreSQL is
    unreachable (-> tryLater)."""
    url = settings.effective_ocsp_database_url
    if make_url(url).get_backend_name() == "postgresql":
        return make_engine(
            url, connect_args={"connect_timeout": options.db_connect_timeout}, pool_size=2
        )
    return make_engine(url)


def open_responder(settings: Settings, options: OcspOptions) -> ResponderRuntime:
    """Build the responder of this process (call after fork: it will use the HSM)."""
    engine = ocsp_engine(settings, options)
    keys = KeyStore(responder_token_config(settings))
    clock_check = guard_signing(keys, engine, settings)
    source = SqlStatusSource(engine)
    signers = CurrentSigners(source, keys, utcnow)
    map_path = None
    builder = None
    if options.answer_map_dir:
        directory = Path(options.answer_map_dir)
        builder = MapBuilder(
            lambda path: build_from_database(engine, path), directory, options.answer_map_interval
        )
        builder.start()
        map_path = builder.path
    responder = Responder(source, signers, options, store=source, answer_map=map_path)
    return ResponderRuntime(engine, keys, responder, clock_check, builder)
