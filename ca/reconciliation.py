"""Reconciliation on a schedule in each CA API worker (issue 10, docs 0014).

Every ``Settings.reconcile_interval_seconds`` each worker fails the reservations pending for
longer than ``Settings.pending_reconcile_seconds`` (``CertificateAuthority.reconcile``) and so
releases their enrollment tokens. Workers racing on the same rows are harmless: each row is
failed by compare-and-set, so exactly one worker writes its ledger entry.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

from ca.config import Settings
from ca.schedule import start_every

log = logging.getLogger("agentca.reconciliation")


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
