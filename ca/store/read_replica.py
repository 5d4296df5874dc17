"""Reads that a streaming replica may serve, while it is fresh enough (issue 14 item 2).

``ReplicaSessions`` is a ``sessionmaker`` whose plain sessions (``sessions()``, what the
read-only queries open) come from the replica while it trails the primary by at most
``max_lag`` seconds, and from the primary otherwise: a replica that lags, stopped replaying or
is down never serves a model inventory or a certificate status older than the bound.
``begin()`` (writes, and reads that lock) always goes to the primary. The lag is the one the
OCSP responders use (``replica_lag``, decision 0029), checked at most every ``check_every``
seconds per process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("agentca.replica")

_REPLICA_LAG = text(
    "SELECT pg_is_in_recovery(), "
    "EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())"
)


def replica_lag(conn: Connection) -> float | None:
    """Seconds the data on ``conn``'s server may trail the primary: 0 on a primary, the age
    of the last replayed transaction on a streaming replica (never negative: a replica clock
    behind the primary's reads as 0), None when the replica replayed nothing yet."""
    in_recovery, age = conn.execute(_REPLICA_LAG).one()
    if not in_recovery:
        return 0.0
    return None if age is None else max(0.0, float(age))


class ReplicaSessions(sessionmaker[Session]):
    """Read sessions from a replica while it is fresh, else from the primary."""

    def __init__(
        self,
        primary: sessionmaker[Session],
        replica: Engine,
        max_lag: float,
        check_every: float = 0.1,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(bind=replica, expire_on_commit=False)
        self.primary = primary
        self.replica_engine = replica
        self.max_lag = max_lag
        self.check_every = check_every
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._next_check = float("-inf")
        self._use_replica = False
        self.last_lag: float | None = None

    def replica_fresh(self) -> bool:
        """Whether reads go to the replica now (checked at most every ``check_every`` s)."""
        now = self._monotonic()
        if now < self._next_check:
            return self._use_replica
        with self._lock:
            if now < self._next_check:
                return self._use_replica
            started = self._monotonic()
            try:
                with self.replica_engine.connect() as conn:
                    lag = replica_lag(conn)
            except SQLAlchemyError as exc:
                if self._use_replica or self.last_lag is not None:
                    log.warning(
                        "read replica unreachable, reading the primary: %s", type(exc).__name__
                    )
                lag = None
            # what the check read is as old as its lag plus the time until the next check
            fresh = lag is not None and lag + self.check_every <= self.max_lag
            if fresh != self._use_replica and lag is not None:
                log.info(
                    "reads go to the %s (replica lag %.3f s)",
                    "replica" if fresh else "primary",
                    lag,
                )
            self.last_lag = lag
            self._use_replica = fresh
            self._next_check = started + self.check_every
            return fresh

    def __call__(self, **local_kw: Any) -> Session:
        if self.replica_fresh():
            return super().__call__(**local_kw)
        return self.primary(**local_kw)

    def begin(self) -> Any:
        """A transaction on the primary: writes and locking reads never go to a replica."""
        return self.primary.begin()
