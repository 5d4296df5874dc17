"""Open drift alerts between ``agentca drift run`` and ``agentca drift review``: a small JSON
state file (no table, no migration: decision 0057). The ledger is the record of what
happened (``drift.alert``, the hold's ``certificate.revoked`` with its evidence, the review);
this file only says which alerts still await an operator.

Writes are atomic (a temporary file in the same directory, then ``os.replace``), so a crash
leaves the old state or the new one, never half of either.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("open", "released", "revoked", "dismissed")


class AlertStateError(ValueError):
    """The state file cannot be read or is not an alert state."""


@dataclass
class StoredAlert:
    """One alert as the state file keeps it."""

    id: str
    agent: str
    environment: str | None
    raised_at: str
    mode: str
    evidence: dict[str, Any]
    held: list[str] = field(default_factory=list)
    status: str = "open"
    reviewed_by: str | None = None
    reviewed_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def alert_id(agent: str, first_window_end: str) -> str:
    """A stable identifier: the same alert found by a second run over the same records is
    the same alert (it is not raised, logged or held twice)."""
    return hashlib.sha256(f"{agent}\n{first_window_end}".encode()).hexdigest()[:16]


class AlertState:
    """The alerts in one state file."""

    def __init__(self, path: Path, alerts: list[StoredAlert]) -> None:
        self.path = path
        self.alerts = alerts

    @classmethod
    def load(cls, path: str | Path) -> AlertState:
        """The file's alerts (none when it does not exist yet)."""
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(p, [])
        except (OSError, ValueError) as exc:
            raise AlertStateError(f"drift state file {p} is unreadable: {exc}") from exc
        try:
            items = raw["alerts"]
            alerts = [StoredAlert(**_checked(a)) for a in items]
        except (KeyError, TypeError, ValueError) as exc:
            raise AlertStateError(f"drift state file {p} is not a drift alert state") from exc
        return cls(p, alerts)

    def save(self) -> None:
        """Write the state atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"alerts": [a.to_json() for a in self.alerts]}, indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".drift-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, alert_id: str) -> StoredAlert | None:
        return next((a for a in self.alerts if a.id == alert_id), None)

    def open_alerts(self) -> list[StoredAlert]:
        return [a for a in self.alerts if a.status == "open"]

    def open_holding(self, serial: str) -> list[StoredAlert]:
        """Open alerts that put ``serial`` on hold."""
        return [a for a in self.open_alerts() if serial in a.held]


def _checked(item: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(item, Mapping) or item.get("status") not in STATUSES:
        raise ValueError("bad alert")
    return dict(item)
