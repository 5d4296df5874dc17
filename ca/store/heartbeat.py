"""The replication heartbeat: a tiny committed transaction on the primary, several a second.

A streaming replica knows the primary's commit time of the last transaction it replayed
(``pg_last_xact_replay_timestamp()``); with a commit every ``HEARTBEAT_EVERY`` seconds its age
is how far the replica trails the primary, whatever else the CA is doing. OCSP responders
reading a replica vouch for their answers only as of that point (``ocsp.status.replica_lag``,
decision 0029), so without a heartbeat an idle primary makes them answer tryLater: a safe
failure, which ``agentca run`` avoids by running one. The beat assigns a transaction id and
commits (``pg_current_xact_id()``): a commit record and no table write.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("agentca.heartbeat")

HEARTBEAT_EVERY = 0.25  # seconds; well inside the responders' 1 s freshness bound
_BEAT = text("SELECT pg_current_xact_id()")


def beat(engine: Engine) -> None:
    """Commit one heartbeat transaction on the primary behind ``engine``."""
    with engine.begin() as conn:
        conn.execute(_BEAT)


def run_heartbeat(engine: Engine, every: float, stop: threading.Event) -> None:
    """Beat every ``every`` seconds until ``stop`` is set; a database error is logged once per
    outage and retried at the next beat (never raised)."""
    failing = False
    while not stop.is_set():
        started = time.monotonic()
        try:
            beat(engine)
        except SQLAlchemyError as exc:
            if not failing:
                log.warning("replication heartbeat failed, retrying: %s", exc.__class__.__name__)
            failing = True
        else:
            if failing:
                log.info("replication heartbeat reaching the primary again")
            failing = False
        stop.wait(max(0.0, every - (time.monotonic() - started)))
