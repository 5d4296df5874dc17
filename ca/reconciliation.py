"""Failing reservations: one at a time after a failed signing or storing, and in bulk by
reconciliation, once on demand (``agentca reconcile``) or on a schedule in each CA API worker.

A reservation pending for longer than ``Settings.pending_reconcile_seconds`` was abandoned by
a crash or an outage between reserving and storing: no request takes that long, and a
certificate signed for it can no longer be stored (storing is a compare-and-set on
``pending``), so it was never handed to anyone. Failing it releases the enrollment token it
consumed in the same transaction (docs/decisions/0014-crash-safe-enrollment.md). Workers
racing on the same rows are harmless: each row is failed by compare-and-set, so exactly one
of them writes its ledger entry.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock, utcnow
from ca.config import Settings
from ca.journal import Journal
from ca.records import CertStatus
from ca.schedule import start_every
from ca.store.models import Certificate, EnrollmentToken

RECONCILE_BATCH = 500  # reservations failed per reconciliation pass (the next pass goes on)
log = logging.getLogger("agentca.reconciliation")


def fail_reservation(
    s: Session,
    journal: Journal,
    cert_id: int,
    why: str,
    actor: str,
    now: datetime,
    extra: Mapping[str, Any] | None = None,
) -> bool:
    """In ``s``: ``pending`` -> ``failed`` by compare-and-set, its ledger entry, and the
    release of the enrollment token it consumed. False when it was no longer pending
    (issued meanwhile, or failed by someone else: one ledger entry per reservation)."""
    failed = s.execute(
        update(Certificate)
        .where(Certificate.id == cert_id, Certificate.status == CertStatus.PENDING)
        .values(status=CertStatus.FAILED, failure=why)
        .returning(Certificate.serial_hex, Certificate.agent_name, Certificate.enrollment_token_id)
    ).first()
    if failed is None:
        return False
    serial_hex, agent, token_id = failed
    journal.write(
        s,
        actor,
        "certificate.failed",
        {"serial": serial_hex, "agent": agent, "why": why, **(extra or {})},
        now,
    )
    if token_id is not None:
        released = s.execute(
            update(EnrollmentToken)
            .where(EnrollmentToken.id == token_id, EnrollmentToken.used_at.is_not(None))
            .values(used_at=None)
            .returning(EnrollmentToken.token_hash)
        ).first()
        if released is not None:
            journal.write(
                s,
                actor,
                "enrollment_token.released",
                {"agent": agent, "token_sha256": released[0], "serial": serial_hex},
                now,
            )
    return True


class Reconciler:
    """Fails the reservations abandoned for longer than the reconciliation bound."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        journal: Journal,
        bound: timedelta,
        clock: Clock = utcnow,
    ) -> None:
        self.sessions = sessions
        self.journal = journal
        self.bound = bound
        self.clock = clock

    def reconcile(self, older_than: timedelta | None = None, actor: str = "system") -> list[str]:
        """Fail every reservation pending for longer than ``older_than`` (default: the
        bound, ``Settings.pending_reconcile_seconds``); returns their serials. Each row is
        failed in its own short transaction."""
        bound = older_than if older_than is not None else self.bound
        now = self.clock()
        with self.sessions() as s:
            candidates = s.execute(
                select(Certificate.id, Certificate.created_at)
                .where(Certificate.status == CertStatus.PENDING)
                .where(Certificate.created_at < now - bound)
                .order_by(Certificate.id)
                .limit(RECONCILE_BATCH)
            ).all()
        failed: list[str] = []
        for cert_id, created_at in candidates:
            age = int((now - created_at).total_seconds())
            why = f"reconciled: still pending after {age} s (abandoned by a crash or an outage)"
            with self.sessions.begin() as s:
                serial = s.scalar(select(Certificate.serial_hex).where(Certificate.id == cert_id))
                extra = {"reconciled": True, "pending_seconds": age}
                if fail_reservation(s, self.journal, cert_id, why, actor, now, extra):
                    failed.append(str(serial))
        return failed


def start_reconciler(app: Any, settings: Settings) -> threading.Event | None:
    """Start the reconciliation thread for the CA API ``app`` in this (worker) process."""
    holder = getattr(app, "extensions", {}).get("agentca")
    interval = settings.reconcile_interval_seconds
    if holder is None or interval <= 0:
        return None

    def reconcile_once() -> None:
        failed = holder.get().authority.reconcile()
        if failed:
            log.warning(
                "reconciled %d reservation(s) pending for more than %d s: %s",
                len(failed),
                settings.pending_reconcile_seconds,
                " ".join(failed[:10]) + (" ..." if len(failed) > 10 else ""),
            )

    # a random first delay, so that the workers of one master do not scan in step
    return start_every(
        interval, reconcile_once, "reconciliation", first_delay=random.uniform(0.2, 1.0)
    )
