"""The dashboard's drift alerts: the open alerts of the drift state file (decision 0057:
``DATA_DIR/drift/alerts.json``, what ``agentca drift run`` writes and ``agentca drift review``
settles) and how many of the certificates they put on hold are on hold still.

The file is read as it is on every dashboard view (it is small: one entry per alert); one
that is too large, unreadable or not an alert state is named on the page, never a 500.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, func, select

from ca.drift.alerts import AlertState, AlertStateError, StoredAlert
from ca.records import CertStatus
from ca.revocation import RevocationReason
from ca.store.tables import certificates

MAX_STATE_BYTES = 4 * 1024 * 1024  # far above any real state file; the bound keeps a page cheap
SHOWN = 20  # open alerts listed (newest first); the count says how many there are
MAX_HELD_CHECKED = 1_000  # held serials looked up in the database per view


def state_path(data_dir: Path) -> Path:
    """Where ``agentca drift run`` keeps its alert state by default (cli/drift_commands.py)."""
    return data_dir / "drift" / "alerts.json"


@dataclass(frozen=True)
class DriftSummary:
    """The open drift alerts at one instant."""

    alerts: list[StoredAlert] = field(default_factory=list)  # newest first, at most SHOWN
    open_count: int = 0
    held: int = 0  # serials the open alerts put on hold
    on_hold_now: int | None = None  # of those (the first MAX_HELD_CHECKED), still on hold
    problem: str | None = None


def drift_summary(path: Path, conn: Connection) -> DriftSummary:
    """The open alerts of the state file at ``path`` (none when it does not exist yet)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return DriftSummary()
    except OSError as exc:
        return DriftSummary(problem=f"the drift state file is unreadable: {exc.strerror}")
    if size > MAX_STATE_BYTES:
        return DriftSummary(problem=f"the drift state file is larger than {MAX_STATE_BYTES} bytes")
    try:
        state = AlertState.load(path)
    except AlertStateError as exc:
        return DriftSummary(problem=str(exc))
    found = sorted(state.open_alerts(), key=lambda a: str(a.raised_at), reverse=True)
    serials = sorted(
        {
            s
            for a in found
            if isinstance(a.held, list)
            for s in a.held
            if isinstance(s, str) and len(s) <= 42
        }
    )
    return DriftSummary(
        alerts=found[:SHOWN],
        open_count=len(found),
        held=len(serials),
        on_hold_now=_on_hold(conn, serials[:MAX_HELD_CHECKED]) if serials else 0,
    )


def _on_hold(conn: Connection, serials: list[str]) -> int:
    c = certificates.c
    query = (
        select(func.count())
        .select_from(certificates)
        .where(
            c.status == CertStatus.REVOKED,
            c.revocation_reason == int(RevocationReason.CERTIFICATE_HOLD),
            c.serial_hex.in_(serials),
        )
    )
    return int(conn.execute(query).scalar_one())
