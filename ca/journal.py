"""The ledger as the issuance core writes it: one entry per change, in the change's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ca.ledger.store import append


class Journal:
    """Appends ledger entries; ``enabled`` is switched off only by the ledger-cost benchmark."""

    def __init__(self) -> None:
        self.enabled = True

    def write(
        self, s: Session, actor: str, event: str, body: dict[str, Any], now: datetime
    ) -> None:
        """Record ``event`` in the ledger, in the transaction of ``s`` that makes the change."""
        if self.enabled:
            append(s, actor, event, body, now)
